package runtimeapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/getrandom"
)

// DefaultMaxResponseBytes is Lambda's limit on a synchronous response:
// 6 MiB plus 100 bytes.
const DefaultMaxResponseBytes = 6*1024*1024 + 100

// maxExtensions is Lambda's limit on registered extensions.
const maxExtensions = 10

// Options configures a Server.
type Options struct {
	// FunctionName, FunctionVersion, Handler and AccountID are returned to
	// extensions on registration (AccountID only to those that ask for it).
	FunctionName, FunctionVersion, Handler, AccountID string
	// Extensions lists the names (file names under /opt/extensions) of the
	// external extensions the agent launches. Each must register before the
	// runtime first calls /next; see WaitExtensionsRegistered.
	Extensions []string
	// Logger receives diagnostics about misbehaving clients; nil discards.
	Logger *slog.Logger
	// MaxResponseBytes caps response and error bodies; 0 means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int
	// MaxConns bounds the connections served at once; one more is closed
	// as it is accepted. 0: no bound. nubo serve serves every namespace
	// sandbox's Runtime API, and a function must not be able to take
	// its descriptors and goroutines without bound.
	MaxConns int
	// OnPanic, when set, hears of a panic serving a connection (which
	// ends that connection), after it is logged.
	OnPanic func(v any)
}

// Invocation is one event handed to the runtime.
type Invocation struct {
	RequestID string
	Payload   []byte
	// DeadlineMs is the epoch-millisecond deadline; when zero, the deadline of
	// Invoke's context is used.
	DeadlineMs         int64
	InvokedFunctionARN string
	// TraceID is the X-Ray header value (Root=…;Parent=…;Sampled=…); one is
	// generated when empty, because runtimes expect the header on every event.
	TraceID         string
	ClientContext   string // JSON, already base64-decoded; omitted when empty
	CognitoIdentity string // JSON; omitted when empty
	TenantID        string // omitted when empty
	ContentType     string // default application/json
	// Stream, when set, receives a response the runtime streams
	// (Lambda-Runtime-Function-Response-Mode: streaming) as it arrives, in
	// order, up to StreamLimit bytes; the Result then carries no payload,
	// only the outcome. Unset, a streamed response is read whole, within
	// the server's body limit. The function's content type comes with
	// every part. An error from Stream (the caller went away) stops the
	// reading; the invocation ends with what was sent.
	Stream func(contentType string, part []byte) error
	// StreamLimit bounds a streamed response (MaxStreamedResponse when 0).
	StreamLimit int
}

// MaxStreamedResponse is Lambda's limit on a streamed response.
const MaxStreamedResponse = 200 << 20

// Result is the runtime's answer to one invocation.
type Result struct {
	Payload     []byte
	ContentType string
	// FunctionError is set when the runtime posted /error, or the platform
	// replaced the response with an error payload (oversized, truncated,
	// invalid response mode, error trailers).
	FunctionError bool
	// ErrorType is the error's type when FunctionError is set.
	ErrorType string
}

type rtState int

const (
	rtStarted   rtState = iota // process started, /next not called yet
	rtInitError                // posted /runtime/init/error
	rtReady                    // called /next, no invocation delivered
	rtRunning                  // invocation delivered, no answer yet
	rtAnswering                // /response or /error body being read
	rtResponded                // answered, /next not called again yet
	rtExited                   // process died
)

func (s rtState) String() string {
	switch s {
	case rtStarted:
		return "Started"
	case rtInitError:
		return "InitError"
	case rtReady:
		return "Ready"
	case rtRunning:
		return "Running"
	case rtAnswering:
		return "InvocationResponse"
	case rtResponded:
		return "RuntimeResponseSentState"
	default:
		return "Exited"
	}
}

// call is one invocation from Invoke to its outcome.
type call struct {
	inv      *Invocation   // a copy, with defaults filled in
	done     chan struct{} // closed by finish
	finished bool
	res      *Result
	err      error
	events   []*extEvent // INVOKE events sent to extensions for this call
}

// waiter is one blocked /next request. wake is signalled (never closed) when
// something it may claim is available or it has been superseded.
type waiter struct {
	wake       chan struct{}
	superseded string // non-empty: give up and answer 403 with this reason
}

func newWaiter() *waiter { return &waiter{wake: make(chan struct{}, 1)} }

func (w *waiter) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Server implements the Runtime and Extensions APIs of one execution
// environment. All state is guarded by mu; changed is closed and replaced on
// every state change so that the agent-side methods can wait without polling.
type Server struct {
	opts     Options
	log      *slog.Logger
	maxBody  int
	expected map[string]bool
	// bigBodies holds a token per body larger than smallBody being read
	// (readBody).
	bigBodies chan struct{}

	mu      sync.Mutex
	changed chan struct{}

	gen        uint64 // runtime generation, bumped by ResetRuntime
	rt         rtState
	rtNexted   bool // the current runtime has called /next at least once
	rtWaiter   *waiter
	rtInitErr  *InitError
	exitReason string

	queued   *call // waiting for the runtime's /next
	current  *call // delivered, not answered
	invoking *call // an Invoke call is running
	lastCall *call // most recent call, for WaitIdle

	exts       map[string]*extension // by identifier
	extByName  map[string]*extension
	extInitErr *InitError

	shutdown       bool
	shutdownEvents []*extEvent
}

// New returns a Server with no runtime connected yet (state Started).
func New(opts Options) *Server {
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		maxBody:   opts.MaxResponseBytes,
		expected:  make(map[string]bool, len(opts.Extensions)),
		changed:   make(chan struct{}),
		exts:      make(map[string]*extension),
		extByName: make(map[string]*extension),
		bigBodies: make(chan struct{}, bigBodies),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxResponseBytes
	}
	for _, n := range opts.Extensions {
		s.expected[n] = true
	}
	return s
}

// broadcastLocked wakes everything waiting in waitFor.
func (s *Server) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor blocks until cond reports done or an error, re-evaluating it under
// mu after every state change, or until ctx is done.
func (s *Server) waitFor(ctx context.Context, cond func() (bool, error)) error {
	for {
		s.mu.Lock()
		done, err := cond()
		ch := s.changed
		s.mu.Unlock()
		if err != nil || done {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// route serves every path of the API (Serve's wire server calls it).
func (s *Server) route(w responseWriter, r *request) {
	p := r.URL.Path
	var allow string
	var h func()
	switch {
	case p == "/2018-06-01/runtime/invocation/next":
		allow, h = methodGet, func() { s.runtimeNext(w, r) }
	case strings.HasPrefix(p, "/2018-06-01/runtime/invocation/"):
		rest := strings.TrimPrefix(p, "/2018-06-01/runtime/invocation/")
		id, verb, ok := strings.Cut(rest, "/")
		if !ok || id == "" || (verb != "response" && verb != "error") {
			break
		}
		allow, h = methodPost, func() { s.runtimeAnswer(w, r, id, verb == "error") }
	case p == "/2018-06-01/runtime/init/error":
		allow, h = methodPost, func() { s.runtimeInitError(w, r) }
	case p == "/2018-06-01/ping":
		// The RIE keeps this for clients that still probe it.
		allow, h = methodGet, func() { _, _ = w.Write([]byte("pong")) }
	case p == "/2020-01-01/extension/register":
		allow, h = methodPost, func() { s.extRegister(w, r) }
	case p == "/2020-01-01/extension/event/next":
		allow, h = methodGet, func() { s.extNext(w, r) }
	case p == "/2020-01-01/extension/init/error":
		allow, h = methodPost, func() { s.extError(w, r, true) }
	case p == "/2020-01-01/extension/exit/error":
		allow, h = methodPost, func() { s.extError(w, r, false) }
	case p == "/2020-08-15/logs":
		// Stubbed as in the RIE: 202 with an error body, so that extensions
		// which subscribe keep running instead of exiting on a 4xx.
		allow, h = methodPut, func() {
			renderError(w, statusAccepted, "Logs.NotSupported", "Logs API is not supported")
		}
	case p == "/2022-07-01/telemetry":
		allow, h = methodPut, func() {
			renderError(w, statusAccepted, "Telemetry.NotSupported", "Telemetry API is not supported")
		}
	}
	switch {
	case h == nil:
		renderError(w, statusNotFound, "NotFound", "Not Found: %s %s", r.Method, p)
	case r.Method != allow:
		w.Header().Set("Allow", allow)
		renderError(w, statusMethodNotAllowed, "MethodNotAllowed", "Method Not Allowed: %s %s", r.Method, p)
	default:
		h()
	}
}

// WaitExtensionsRegistered blocks until every extension named in
// Options.Extensions has registered, so that the agent starts the runtime
// only then (registration closes when the runtime first calls /next). It
// returns an *InitError if one of them failed first.
func (s *Server) WaitExtensionsRegistered(ctx context.Context) error {
	return s.waitFor(ctx, func() (bool, error) {
		if s.extInitErr != nil {
			return false, s.extInitErr
		}
		for name := range s.expected {
			if s.extByName[name] == nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// WaitInit blocks until init is complete: the runtime has called /next and
// every registered extension has called event/next once. It returns an
// *InitError when the runtime or an extension reported an init failure, a
// *RuntimeExitError when the runtime died first, or ctx.Err(); the caller
// enforces Lambda's 10 s init limit through ctx.
func (s *Server) WaitInit(ctx context.Context) error {
	return s.waitFor(ctx, s.initDoneLocked)
}

func (s *Server) initDoneLocked() (bool, error) {
	if s.extInitErr != nil {
		return false, s.extInitErr
	}
	if s.rtInitErr != nil {
		return false, s.rtInitErr
	}
	if s.rt == rtExited {
		return false, &RuntimeExitError{Reason: s.exitReason}
	}
	if !s.rtNexted {
		return false, nil
	}
	for name := range s.expected {
		if s.extByName[name] == nil {
			return false, nil
		}
	}
	for _, e := range s.exts {
		if e.state == extRegistered {
			return false, nil
		}
	}
	return true, nil
}

// Invoke hands inv to the runtime's pending (or next) /invocation/next call,
// sends INVOKE to the extensions subscribed to it, and returns the runtime's
// answer as soon as it is posted. It returns ctx.Err() when ctx ends first
// (ctx carries the function timeout; the agent then kills the runtime, calls
// RuntimeExited and ResetRuntime), a *RuntimeExitError when the runtime dies,
// an *InitError when the runtime failed its init, ErrBusy while another
// invocation is in flight and ErrShutdown after Shutdown. Call WaitIdle
// afterwards to wait for the end of the invoke phase.
func (s *Server) Invoke(ctx context.Context, inv *Invocation) (*Result, error) {
	c, err := newCall(ctx, inv)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	switch {
	case s.shutdown:
		s.mu.Unlock()
		return nil, ErrShutdown
	case s.invoking != nil || s.current != nil || s.queued != nil:
		s.mu.Unlock()
		return nil, ErrBusy
	case s.extInitErr != nil:
		s.mu.Unlock()
		return nil, s.extInitErr
	case s.rtInitErr != nil:
		s.mu.Unlock()
		return nil, s.rtInitErr
	case s.rt == rtExited:
		s.mu.Unlock()
		return nil, &RuntimeExitError{RequestID: inv.RequestID, Reason: s.exitReason}
	}
	s.invoking, s.queued, s.lastCall = c, c, c
	if s.rtWaiter != nil {
		s.rtWaiter.notify()
	}
	c.events = s.sendInvokeEventLocked(c)
	s.broadcastLocked()
	s.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.invoking = nil
	s.broadcastLocked()
	if c.finished {
		return c.res, c.err
	}
	if s.queued == c {
		// Never delivered: withdraw it so that a later /next cannot get it.
		s.queued = nil
	}
	// If it was delivered, it stays current: a late answer is accepted and
	// discarded, and Invoke reports ErrBusy until the runtime answers or the
	// agent resets it.
	return nil, ctx.Err()
}

func newCall(ctx context.Context, in *Invocation) (*call, error) {
	if in == nil {
		return nil, errdefs.InvalidParameter("invocation is nil")
	}
	inv := *in
	if inv.RequestID == "" || !headerSafe(inv.RequestID) || strings.ContainsAny(inv.RequestID, "/?#% ") {
		return nil, errdefs.InvalidParameter("invalid request id %q", inv.RequestID)
	}
	if inv.InvokedFunctionARN == "" {
		return nil, errdefs.InvalidParameter("invoked function ARN is required")
	}
	if inv.DeadlineMs == 0 {
		d, ok := ctx.Deadline()
		if !ok {
			return nil, errdefs.InvalidParameter("invocation has no deadline")
		}
		inv.DeadlineMs = d.UnixMilli()
	}
	if inv.TraceID == "" {
		inv.TraceID = newTraceID()
	}
	if inv.ContentType == "" {
		inv.ContentType = "application/json"
	}
	for _, f := range []*string{&inv.ClientContext, &inv.CognitoIdentity} {
		if headerSafe(*f) {
			continue
		}
		// Valid JSON may hold newlines between tokens; compacting removes
		// them without changing its meaning.
		compact, err := compactJSON(*f)
		if err != nil || !headerSafe(compact) {
			return nil, errdefs.InvalidParameter("client context and cognito identity must be JSON")
		}
		*f = compact
	}
	for _, v := range []string{inv.InvokedFunctionARN, inv.TraceID, inv.TenantID, inv.ContentType} {
		if !headerSafe(v) {
			return nil, errdefs.InvalidParameter("invocation field contains control characters: %q", v)
		}
	}
	return &call{inv: &inv, done: make(chan struct{})}, nil
}

func compactJSON(v string) (string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(v)); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// newTraceID returns an X-Ray trace header for an unsampled request.
func newTraceID() string {
	var b [20]byte
	getrandom.Read(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0",
		time.Now().Unix(), hex.EncodeToString(b[:12]), hex.EncodeToString(b[12:]))
}

// finishLocked records the outcome of c once; later outcomes are ignored.
func (s *Server) finishLocked(c *call, res *Result, err error) {
	if c.finished {
		return
	}
	c.finished, c.res, c.err = true, res, err
	close(c.done)
}

// WaitIdle blocks until the invoke phase has ended: the runtime has called
// /next again after answering and every extension sent the last INVOKE event
// has called event/next again (or died). It returns a *RuntimeExitError when
// the runtime died instead (an aws-lambda-go function exits after reporting a
// panic), or ctx.Err().
func (s *Server) WaitIdle(ctx context.Context) error {
	return s.waitFor(ctx, func() (bool, error) {
		if c := s.lastCall; c != nil {
			for _, ev := range c.events {
				if !ev.doneLocked() {
					return false, nil
				}
			}
		}
		switch {
		case s.rt == rtExited:
			return false, &RuntimeExitError{Reason: s.exitReason}
		case s.rtInitErr != nil:
			return false, s.rtInitErr
		}
		return s.rt == rtReady && s.invoking == nil && s.queued == nil, nil
	})
}

// Shutdown sends SHUTDOWN with reason ("spindown", "timeout" or "failure")
// and deadline to the extensions subscribed to it, and waits until each has
// called event/next again or died, or ctx is done. Invoke and extension
// registration are refused from then on.
func (s *Server) Shutdown(ctx context.Context, reason string, deadline time.Time) error {
	switch reason {
	case "spindown", "timeout", "failure":
	default:
		return errdefs.InvalidParameter("invalid shutdown reason %q", reason)
	}
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		body, _ := json.Marshal(struct {
			EventType      string `json:"eventType"`
			DeadlineMs     int64  `json:"deadlineMs"`
			ShutdownReason string `json:"shutdownReason"`
		}{"SHUTDOWN", deadline.UnixMilli(), reason})
		for _, e := range s.exts {
			if e.subShutdown && e.alive() {
				s.shutdownEvents = append(s.shutdownEvents, e.enqueueLocked(body))
			}
		}
		s.broadcastLocked()
	}
	events := s.shutdownEvents
	s.mu.Unlock()
	return s.waitFor(ctx, func() (bool, error) {
		for _, ev := range events {
			if !ev.doneLocked() {
				return false, nil
			}
		}
		return true, nil
	})
}

// RuntimeExited tells the server that the runtime process died; reason is
// the exit status or signal ("exit status 2", "signal: killed"). A pending
// Invoke returns a *RuntimeExitError, and the runtime's internal extensions
// are dropped. Call ResetRuntime before starting a new runtime process.
func (s *Server) RuntimeExited(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rt == rtExited {
		return
	}
	s.log.Debug("runtime exited", "reason", reason, "state", s.rt.String())
	s.rt, s.exitReason = rtExited, reason
	s.supersedeRuntimeLocked("runtime exited")
	for _, c := range []*call{s.queued, s.current} {
		if c != nil {
			s.finishLocked(c, nil, &RuntimeExitError{RequestID: c.inv.RequestID, Reason: reason})
		}
	}
	s.queued, s.current = nil, nil
	s.dropInternalExtensionsLocked()
	s.broadcastLocked()
}

// ResetRuntime prepares for a new runtime process after a timeout or crash:
// the runtime must init again (WaitInit), extensions launched by the agent
// keep their registration, and an invocation that was delivered to the old
// process ends with ErrRuntimeReset. One that was still waiting for /next
// stays queued for the new process.
func (s *Server) ResetRuntime() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.rt, s.rtNexted, s.rtInitErr, s.exitReason = rtStarted, false, nil, ""
	s.supersedeRuntimeLocked("runtime reset")
	if s.current != nil {
		s.finishLocked(s.current, nil, ErrRuntimeReset)
		s.current = nil
	}
	s.dropInternalExtensionsLocked()
	s.broadcastLocked()
}

func (s *Server) supersedeRuntimeLocked(why string) {
	if s.rtWaiter != nil {
		s.rtWaiter.superseded = why
		s.rtWaiter.notify()
		s.rtWaiter = nil
	}
}

// ExtensionExited tells the server that the process of the named extension
// died. It is no longer waited for; if it had not finished its init
// (registered and called event/next), init fails with Extension.Crash.
func (s *Server) ExtensionExited(name, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.extByName[name]
	switch {
	case e == nil && s.expected[name]:
		s.failInitLocked(crashError(name, reason))
	case e == nil:
		return
	case e.state == extRegistered:
		s.failInitLocked(crashError(name, reason))
		fallthrough
	default:
		s.removeExtensionLocked(e, extGone)
	}
	s.broadcastLocked()
}

func crashError(name, reason string) *InitError {
	msg := "Extension " + name + " exited before completing its init"
	if reason != "" {
		msg += ": " + reason
	}
	return &InitError{Type: typeExtCrash, Extension: name, Payload: platformError(typeExtCrash, msg), ContentType: "application/json"}
}

// writeInvocation renders c as the reply to /invocation/next.
func writeInvocation(w responseWriter, c *call) {
	h := w.Header()
	inv := c.inv
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.RequestID)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.DeadlineMs, 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", inv.InvokedFunctionARN)
	h.Set("Lambda-Runtime-Trace-Id", inv.TraceID)
	if inv.ClientContext != "" {
		h.Set("Lambda-Runtime-Client-Context", inv.ClientContext)
	}
	if inv.CognitoIdentity != "" {
		h.Set("Lambda-Runtime-Cognito-Identity", inv.CognitoIdentity)
	}
	if inv.TenantID != "" {
		h.Set("Lambda-Runtime-Aws-Tenant-Id", inv.TenantID)
	}
	h.Set("Content-Type", inv.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(inv.Payload)))
	w.WriteHeader(statusOK)
	_, _ = w.Write(inv.Payload)
}
