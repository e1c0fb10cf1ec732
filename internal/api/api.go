// Package api is nubo's HTTP edge: it serves the AWS Lambda REST API
// (rest-json, dated paths such as /2015-03-31/functions), authenticates every
// request with SigV4 against the account registry, decodes bodies, calls the
// control plane or the invoker, and encodes results exactly as AWS does.
//
// This is the one place where domain errors (package errdefs) become AWS
// error codes and HTTP statuses (see errors.go). Handlers stay thin: parse,
// call, encode.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/invoke"
	"github.com/nubo-dev/nubo/internal/logs"
	"github.com/nubo-dev/nubo/internal/procs"
	"github.com/nubo-dev/nubo/internal/sigv4"
)

// Invoker runs functions; implemented by package invoke.
type Invoker interface {
	Invoke(ctx context.Context, in *invoke.Input) (*invoke.Output, error)
}

// CodeFetcher is the part of the store the download handler needs.
type CodeFetcher interface {
	GetCode(ctx context.Context, sha string) ([]byte, error)
}

// LogReader reads function logs (package logs).
type LogReader interface {
	Read(ctx context.Context, q logs.Query, fn func(logs.Event) error) error
	GroupExists(ctx context.Context, acct, group string) (bool, error)
}

// Config wires the API to the rest of nubo.
type Config struct {
	Control  *control.Service
	Accounts *account.Registry
	Invoker  Invoker
	// Code serves zips for the download URLs.
	Code CodeFetcher
	// Logs reads function logs for `nubo logs`.
	Logs LogReader
	// Events is the async queue, for `nubo events`.
	Events Events
	// URLKey signs code download URLs (GetFunction's Code.Location).
	URLKey []byte
	// Procs is raised while a request with a large body is served (bulk
	// work, see package procs); nil leaves GOMAXPROCS alone.
	Procs  *procs.Governor
	Logger *slog.Logger
	Now    func() time.Time
}

// API is the Lambda API handler.
type API struct {
	cfg      Config
	ctl      *control.Service
	verifier *sigv4.Verifier
	mux      *http.ServeMux
	log      *slog.Logger
}

// maxBody is the largest request any operation accepts (CreateFunction's
// limit); each operation checks its own smaller limit.
const maxBody = 70167211

// bulkBody is the request body beyond which serving a request is bulk
// work (package procs): decoding, hashing and storing a zip of that size
// takes milliseconds of CPU. A chunked body, of unknown length, counts
// as bulk once more than bulkBody of it has been read. An invocation's
// bulk work ends when the invocation starts (endBulk).
const bulkBody = 256 << 10

type ctxKey int

const (
	ctxAccount ctxKey = iota
	ctxRequestID
	ctxBody
	ctxBulk
)

// New builds the handler.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &API{cfg: cfg, ctl: cfg.Control, log: cfg.Logger, mux: http.NewServeMux()}
	a.verifier = &sigv4.Verifier{Service: "lambda", Lookup: cfg.Accounts.Secret, Now: cfg.Now}
	a.routeFunctions()
	a.routeLayers()
	a.routeSettings()
	a.routeInvoke()
	a.routeURLs()
	a.routeLogs()
	a.routeEvents()
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, &apiError{status: http.StatusNotFound, code: "UnknownOperationException", message: "Unknown operation " + r.Method + " " + r.URL.Path})
	})
	return a
}

// ServeHTTP authenticates, reads the body and dispatches.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := uuid.NewString()
	w.Header().Set("x-amzn-RequestId", rid)
	ctx := context.WithValue(r.Context(), ctxRequestID, rid)
	r = r.WithContext(ctx)
	if r.ContentLength > bulkBody || r.ContentLength < 0 {
		// Until answered, or until an invocation starts (endBulk): the
		// function's run is not the server's bulk work.
		bw := &bulkWork{gov: a.cfg.Procs}
		defer bw.end()
		if r.ContentLength > 0 {
			bw.start()
		} else {
			// Of unknown length: bulk once more than bulkBody has come, so
			// that a small or slow chunked body, read before the sender is
			// known, does not hold GOMAXPROCS wide.
			r.Body = &bulkCounter{r: r.Body, bw: bw}
		}
		ctx = context.WithValue(ctx, ctxBulk, bw)
		r = r.WithContext(ctx)
	}

	if strings.HasPrefix(r.URL.Path, codePath) {
		a.serveCode(w, r)
		return
	}
	if id, path, ok := urlTarget(r); ok {
		a.serveURL(w, r, id, path)
		return
	}
	body, err := readBody(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id, err := a.verifier.Verify(r, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	acct, ok := a.cfg.Accounts.ByAccessKey(id.AccessKeyID)
	if !ok { // the verifier found the key, so this cannot happen; fail closed
		a.writeError(w, r, &apiError{status: 403, code: "UnrecognizedClientException", message: "The security token included in the request is invalid."})
		return
	}
	ctx = context.WithValue(ctx, ctxAccount, acct.AccountID)
	ctx = context.WithValue(ctx, ctxBody, body)
	r = r.WithContext(ctx)
	// Routing ignores one trailing slash: SDKs differ on it (InvokeAsync's
	// model path ends in '/'), and the signature was checked on the raw path.
	if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
		r.URL.Path = strings.TrimSuffix(p, "/")
		r.URL.RawPath = strings.TrimSuffix(r.URL.RawPath, "/")
	}
	a.mux.ServeHTTP(w, r)
}

func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBody {
		return nil, errdefs.TooLarge("Request must be smaller than %d bytes for the CreateFunction operation", maxBody)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, errdefs.InvalidContent("Could not read request body: %v", err)
	}
	if len(body) > maxBody {
		return nil, errdefs.TooLarge("Request must be smaller than %d bytes for the CreateFunction operation", maxBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// endBulk ends the bulk work of serving a large request (see bulkBody),
// if it is one: the handler's CPU-heavy part is over.
func endBulk(r *http.Request) {
	if bw, ok := r.Context().Value(ctxBulk).(*bulkWork); ok {
		bw.end()
	}
}

// bulkWork is one request's bulk work (see bulkBody): started at most
// once, ended at most once, and never started after its end.
type bulkWork struct {
	gov  *procs.Governor
	mu   sync.Mutex
	done func() // set while started
	over bool
}

func (bw *bulkWork) start() {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	if bw.done == nil && !bw.over {
		bw.done = bw.gov.Bulk()
	}
}

func (bw *bulkWork) end() {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	bw.over = true
	if bw.done != nil {
		bw.done()
		bw.done = nil
	}
}

// bulkCounter starts its request's bulk work once more than bulkBody
// bytes of the body have been read.
type bulkCounter struct {
	r  io.ReadCloser
	bw *bulkWork
	n  int64
}

func (c *bulkCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n <= bulkBody && c.n+int64(n) > bulkBody {
		c.bw.start()
	}
	c.n += int64(n)
	return n, err
}

func (c *bulkCounter) Close() error { return c.r.Close() }

func accountOf(r *http.Request) string { return r.Context().Value(ctxAccount).(string) }

func bodyOf(r *http.Request) []byte { b, _ := r.Context().Value(ctxBody).([]byte); return b }

// RequestID returns the id of the API request being served.
func RequestID(r *http.Request) string { s, _ := r.Context().Value(ctxRequestID).(string); return s }

// decode parses a JSON body into v; an empty body is an empty object.
func decode(r *http.Request, v any) error {
	body := bytes.TrimSpace(bodyOf(r))
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errdefs.InvalidContent("Could not parse request body into json: Could not parse payload into json: Unexpected value for field '%s'", te.Field)
		}
		return errdefs.InvalidContent("Could not parse request body into json: %v", err)
	}
	return nil
}

// writeJSON encodes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func noContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// maxItems parses ?MaxItems= within [1, hi]; 0 means "not given".
func maxItems(r *http.Request, hi int) (int, error) {
	s := r.URL.Query().Get("MaxItems")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errdefs.InvalidParameter("Invalid MaxItems: %s", s)
	}
	if n < 1 {
		return 0, errdefs.Validation("1 validation error detected: Value '%d' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1", n)
	}
	if n > hi {
		return 0, errdefs.Validation("1 validation error detected: Value '%d' at 'maxItems' failed to satisfy constraint: Member must have value less than or equal to %d", n, hi)
	}
	return n, nil
}

// page is the common shape of list responses.
func page(key string, items any, next string) map[string]any {
	out := map[string]any{key: items}
	if next != "" {
		out["NextMarker"] = next
	}
	return out
}
