package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/invoke"
)

// urlPath prefixes function URLs on nubo's listener: /lambda-url/<id>/...
// reaches URL <id> with the path after the id.
const urlPath = "/lambda-url/"

// urlTarget says whether r is for a function URL: by path (urlPath), or
// by a Host of AWS's form, <id>.lambda-url.<region>.<domain>. It returns
// the URL's id and the path the function sees, as sent (escaped).
func urlTarget(r *http.Request) (id, rawPath string, ok bool) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	escaped := r.URL.EscapedPath()
	if label, rest, found := strings.Cut(host, "."); found && strings.HasPrefix(rest, "lambda-url.") && control.ValidURLID(label) {
		return label, escaped, true
	}
	if rest, found := strings.CutPrefix(escaped, urlPath); found {
		id, p, _ := strings.Cut(rest, "/")
		return id, "/" + p, true
	}
	return "", "", false
}

// urlError answers a function URL request as Lambda's URL front end does:
// a status and {"Message": ...}.
func urlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"Message": msg})
}

// serveURL serves a request to a function URL: it authorises it (AuthType
// NONE needs a policy that lets anyone invoke the URL; AWS_IAM a SigV4
// signature by the function's account), answers CORS preflights from the
// URL's configuration, hands the function an HTTP event of payload format
// 2.0, and turns its answer into the HTTP response.
func (a *API) serveURL(w http.ResponseWriter, r *http.Request, id, path string) {
	if a.cfg.Invoker == nil {
		urlError(w, http.StatusServiceUnavailable, "This nubo server runs no execution environments")
		return
	}
	u, err := a.ctl.ResolveURL(r.Context(), id)
	if err != nil {
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			urlError(w, http.StatusNotFound, "Not Found")
		} else {
			urlError(w, http.StatusInternalServerError, "Internal Server Error")
		}
		return
	}
	if r.ContentLength > invoke.MaxSyncPayload {
		urlError(w, http.StatusRequestEntityTooLarge, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, invoke.MaxSyncPayload+1))
	if err != nil {
		urlError(w, http.StatusBadRequest, "Could not read the request body")
		return
	}
	if len(body) > invoke.MaxSyncPayload {
		urlError(w, http.StatusRequestEntityTooLarge, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
		return
	}
	cors := u.Config.Cors
	if r.Method == http.MethodOptions && cors != nil && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		preflight(w, r, cors)
		return
	}
	caller := map[string]any(nil)
	callerAccount := "anonymous"
	switch u.Config.AuthType {
	case control.URLAuthIAM:
		ident, err := a.verifier.Verify(r, body)
		if err != nil {
			urlError(w, http.StatusForbidden, "Forbidden")
			return
		}
		acct, ok := a.cfg.Accounts.ByAccessKey(ident.AccessKeyID)
		if !ok || acct.AccountID != u.Account {
			urlError(w, http.StatusForbidden, "Forbidden")
			return
		}
		callerAccount = acct.AccountID
		caller = map[string]any{"iam": map[string]any{
			"accessKey": ident.AccessKeyID, "accountId": acct.AccountID, "callerId": ident.AccessKeyID,
			"cognitoIdentity": nil, "principalOrgId": nil,
			"userArn": "arn:aws:iam::" + acct.AccountID + ":root", "userId": acct.AccountID,
		}}
	default:
		if !u.Public {
			urlError(w, http.StatusForbidden, "Forbidden")
			return
		}
	}
	ev := urlEvent(r, id, path, body, callerAccount, caller, RequestID(r), a.cfg.Now())
	payload, _ := json.Marshal(ev)
	in := &invoke.Input{Account: u.Account, FunctionName: u.Function, Qualifier: u.Qualifier,
		Payload: payload, RequestID: RequestID(r)}
	if cors != nil {
		corsHeaders(w, r, cors)
	}
	var sw *urlStreamWriter
	if u.Config.InvokeMode == control.URLResponseStream {
		sw = &urlStreamWriter{w: w, rc: http.NewResponseController(w)}
		defer sw.rc.SetWriteDeadline(time.Time{})
		in.Stream = sw.part
	}
	endBulk(r)
	out, err := a.cfg.Invoker.Invoke(r.Context(), in)
	switch {
	case sw != nil && sw.started:
		sw.finish() // what was streamed stands, whatever followed
	case err != nil:
		status, msg := statusOf(err)
		if status >= 500 {
			if !errors.Is(err, context.Canceled) {
				a.log.Error("function URL invoke", "url", id, "request_id", RequestID(r), "err", err)
			}
			msg = "Internal Server Error"
		}
		urlError(w, status, msg)
	case out.FunctionError != "":
		urlError(w, http.StatusBadGateway, "Internal Server Error")
	case sw != nil && isIntegrationResponse(out.ContentType):
		sw.part("", out.ContentType, out.Payload)
		sw.finish()
	default:
		writeURLResponse(w, out.Payload)
	}
}

// urlEvent is the function's event for an HTTP request to its URL
// (payload format 2.0).
func urlEvent(r *http.Request, id, path string, body []byte, account string, authorizer map[string]any,
	requestID string, now time.Time) map[string]any {
	headers := map[string]string{}
	var cookies []string
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "cookie" {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						cookies = append(cookies, c)
					}
				}
			}
			continue
		}
		headers[lk] = strings.Join(vs, ",")
	}
	headers["host"] = r.Host
	if r.ContentLength > 0 {
		headers["content-length"] = strconv.FormatInt(r.ContentLength, 10)
	}
	decoded, err := url.PathUnescape(path)
	if err != nil {
		decoded = path
	}
	ev := map[string]any{
		"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": r.URL.RawQuery,
		"headers": headers, "isBase64Encoded": false, "pathParameters": nil, "stageVariables": nil,
		"requestContext": map[string]any{
			"accountId": account, "apiId": id, "authentication": nil, "authorizer": authorizer,
			"domainName": r.Host, "domainPrefix": id,
			"http": map[string]any{
				"method": r.Method, "path": decoded, "protocol": r.Proto,
				"sourceIp": sourceIP(r), "userAgent": r.UserAgent(),
			},
			"requestId": requestID, "routeKey": "$default", "stage": "$default",
			"time": now.UTC().Format("02/Jan/2006:15:04:05 -0700"), "timeEpoch": now.UnixMilli(),
		},
	}
	if authorizer == nil {
		delete(ev["requestContext"].(map[string]any), "authorizer")
	}
	if len(cookies) > 0 {
		ev["cookies"] = cookies
	}
	// What parses of a query with a bad escape in it is kept.
	if q, _ := url.ParseQuery(r.URL.RawQuery); len(q) > 0 {
		params := map[string]string{}
		for k, vs := range q {
			params[k] = strings.Join(vs, ",")
		}
		ev["queryStringParameters"] = params
	}
	if len(body) > 0 {
		if textual(r.Header.Get("Content-Type"), body) {
			ev["body"] = string(body)
		} else {
			ev["body"] = base64.StdEncoding.EncodeToString(body)
			ev["isBase64Encoded"] = true
		}
	}
	return ev
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// textual says whether a body goes to the function as text rather than
// base64: a text content type, or none, and UTF-8 (JSON would mangle
// anything else).
func textual(contentType string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		mt == "application/json", mt == "application/xml", mt == "application/javascript",
		mt == "application/x-www-form-urlencoded", mt == "application/graphql",
		strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	return false
}

// urlResponse is the structured answer a function may give its URL.
type urlResponse struct {
	StatusCode      *int              `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Cookies         []string          `json:"cookies"`
	Body            *string           `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

// headersTo sets the answer's headers and cookies on h, and contentType
// when it names none.
func (r *urlResponse) headersTo(h http.Header, contentType string) {
	for k, v := range r.Headers {
		h.Set(k, v)
	}
	for _, c := range r.Cookies {
		h.Add("Set-Cookie", c)
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", contentType)
	}
}

// writeURLResponse turns a function's answer into the HTTP response: a JSON
// object with a statusCode is a structured response (status, headers,
// cookies, body, base64 or not); anything else is a 200 whose body is the
// answer itself, as JSON.
func writeURLResponse(w http.ResponseWriter, payload []byte) {
	var resp urlResponse
	if trimmed := bytes.TrimSpace(payload); len(trimmed) > 0 && trimmed[0] == '{' &&
		json.Unmarshal(payload, &resp) == nil && resp.StatusCode != nil {
		h := w.Header()
		resp.headersTo(h, "application/json")
		var body []byte
		if resp.Body != nil {
			body = []byte(*resp.Body)
			if resp.IsBase64Encoded {
				var err error
				if body, err = base64.StdEncoding.DecodeString(*resp.Body); err != nil {
					h.Del("Content-Type")
					urlError(w, http.StatusBadGateway, "Internal Server Error")
					return
				}
			}
		}
		// 1xx is not a final answer: net/http would send it as an
		// informational response and then a 200 of its own.
		status := *resp.StatusCode
		if status < 200 || status > 599 {
			h.Del("Content-Type")
			urlError(w, http.StatusBadGateway, "Internal Server Error")
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
	w.WriteHeader(http.StatusOK)
	w.Write(payload)
}

// corsAllows says whether origin is one of the configuration's.
func corsAllows(c *control.Cors, origin string) bool {
	return slices.Contains(c.AllowOrigins, "*") || slices.ContainsFunc(c.AllowOrigins, func(o string) bool {
		return strings.EqualFold(o, origin)
	})
}

// corsHeaders adds the CORS headers of an actual request from an allowed
// origin.
func corsHeaders(w http.ResponseWriter, r *http.Request, c *control.Cors) {
	origin := r.Header.Get("Origin")
	if origin == "" || !corsAllows(c, origin) {
		return
	}
	h := w.Header()
	allowed := allowedOrigin(c, origin)
	h.Set("Access-Control-Allow-Origin", allowed)
	if credentials(c, allowed) {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if len(c.ExposeHeaders) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(c.ExposeHeaders, ","))
	}
	h.Add("Vary", "Origin")
}

// allowedOrigin is Access-Control-Allow-Origin for an allowed origin: the
// origin itself when the configuration names it, "*" when it allows any.
func allowedOrigin(c *control.Cors, origin string) string {
	if slices.ContainsFunc(c.AllowOrigins, func(o string) bool { return strings.EqualFold(o, origin) }) {
		return origin
	}
	return "*"
}

// credentials says whether to allow credentials: never to any origin
// ("*"), which browsers refuse anyway; echoing the origin instead would
// let every site read answers made with the visitor's cookies.
func credentials(c *control.Cors, allowedOrigin string) bool {
	return c.AllowCredentials != nil && *c.AllowCredentials && allowedOrigin != "*"
}

// preflight answers a CORS preflight request from the configuration,
// without invoking the function.
func preflight(w http.ResponseWriter, r *http.Request, c *control.Cors) {
	origin := r.Header.Get("Origin")
	method := r.Header.Get("Access-Control-Request-Method")
	h := w.Header()
	if corsAllows(c, origin) && (slices.Contains(c.AllowMethods, "*") || slices.ContainsFunc(c.AllowMethods, func(m string) bool {
		return strings.EqualFold(m, method)
	})) {
		allowed := allowedOrigin(c, origin)
		h.Set("Access-Control-Allow-Origin", allowed)
		h.Set("Access-Control-Allow-Methods", strings.Join(c.AllowMethods, ","))
		if len(c.AllowHeaders) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(c.AllowHeaders, ","))
		}
		if credentials(c, allowed) {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if c.MaxAge != nil {
			h.Set("Access-Control-Max-Age", strconv.Itoa(*c.MaxAge))
		}
	}
	h.Add("Vary", "Origin")
	w.WriteHeader(http.StatusOK)
}

// isIntegrationResponse says whether a streamed answer starts with an HTTP
// prelude (awslambda.HttpResponseStream.from).
func isIntegrationResponse(contentType string) bool {
	return contentType == "application/vnd.awslambda.http-integration-response"
}

// urlStreamWriter passes a RESPONSE_STREAM function's answer on as it is
// written. An answer that starts with an HTTP prelude (JSON, then eight
// zero bytes) sets the status, headers and cookies; any other is a 200 of
// the function's content type.
type urlStreamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	prelude []byte // the prelude read so far, while it is incomplete
	inPre   bool
	failed  error
}

var preludeEnd = make([]byte, 8)

func (s *urlStreamWriter) part(_, contentType string, p []byte) error {
	if s.failed != nil {
		return s.failed
	}
	if !s.started {
		s.started = true
		if isIntegrationResponse(contentType) {
			s.inPre = true
		} else {
			s.w.Header().Set("Content-Type", contentType)
			s.w.WriteHeader(http.StatusOK)
		}
	}
	if s.inPre {
		s.prelude = append(s.prelude, p...)
		i := bytes.Index(s.prelude, preludeEnd)
		if i < 0 {
			if len(s.prelude) > 1<<20 {
				s.failed = errors.New("function URL prelude over 1 MB")
			}
			return s.failed
		}
		s.inPre = false
		s.writePrelude(s.prelude[:i])
		p, s.prelude = s.prelude[i+len(preludeEnd):], nil
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if len(p) > 0 {
		if _, err := s.w.Write(p); err != nil {
			s.failed = err
			return err
		}
	}
	if err := s.rc.Flush(); err != nil {
		s.failed = err
	}
	return s.failed
}

func (s *urlStreamWriter) writePrelude(b []byte) {
	var pre urlResponse
	_ = json.Unmarshal(b, &pre)
	pre.headersTo(s.w.Header(), "application/octet-stream")
	status := http.StatusOK
	if pre.StatusCode != nil && *pre.StatusCode >= 200 && *pre.StatusCode <= 599 {
		status = *pre.StatusCode
	}
	s.w.WriteHeader(status)
}

// finish ends an answer whose prelude never completed: what came is the
// prelude's, so the response is an empty 200.
func (s *urlStreamWriter) finish() {
	if s.inPre {
		s.inPre = false
		s.writePrelude(s.prelude)
	}
}
