package runtimeapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
)

// extClient is a Go test client of the Extensions API.
type extClient struct {
	e    *testEnv
	id   string
	name string
}

func (e *testEnv) register(name, events string, hdr map[string]string) (*extClient, int, http.Header, []byte) {
	e.t.Helper()
	h := map[string]string{"Lambda-Extension-Name": name}
	for k, v := range hdr {
		h[k] = v
	}
	st, rh, b := e.mustDo("POST", "/2020-01-01/extension/register", h, events)
	return &extClient{e: e, id: rh.Get("Lambda-Extension-Identifier"), name: name}, st, rh, b
}

func (e *testEnv) mustRegister(name, events string) *extClient {
	e.t.Helper()
	c, st, _, b := e.register(name, events, nil)
	if st != 200 {
		e.t.Fatalf("register %s: %d %s", name, st, b)
	}
	return c
}

type extReply struct {
	st      int
	h       http.Header
	body    []byte
	err     error
	eventID string
	event   map[string]any
}

// nextAsync calls event/next in the background.
func (c *extClient) nextAsync(ctx context.Context) <-chan extReply {
	ch := make(chan extReply, 1)
	go func() {
		st, h, b, err := c.e.do(ctx, "GET", "/2020-01-01/extension/event/next", map[string]string{"Lambda-Extension-Identifier": c.id}, "")
		r := extReply{st: st, h: h, body: b, err: err}
		if err == nil {
			r.eventID = h.Get("Lambda-Extension-Event-Identifier")
			_ = json.Unmarshal(b, &r.event)
		}
		ch <- r
	}()
	return ch
}

func recvExt(t *testing.T, ch <-chan extReply) extReply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("event/next did not return")
		return extReply{}
	}
}

// waitExtWaiting waits until c is blocked in event/next.
func waitExtWaiting(t *testing.T, s *Server, c *extClient) {
	t.Helper()
	err := s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) {
		e := s.exts[c.id]
		return e != nil && e.waiter != nil, nil
	})
	if err != nil {
		t.Fatalf("extension %s is not waiting", c.name)
	}
}

func notDone(t *testing.T, what string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := f(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: %v, want it still waiting", what, err)
	}
}

func TestExtensionLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{FunctionName: "fn", FunctionVersion: "$LATEST", Handler: "bootstrap", AccountID: "123456789012", Extensions: []string{"ext1"}})

	notDone(t, "WaitExtensionsRegistered", e.s.WaitExtensionsRegistered)
	ext, st, h, b := e.register("ext1", `{"events":["INVOKE","SHUTDOWN"]}`, map[string]string{"Lambda-Extension-Accept-Feature": "accountId"})
	if st != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("register: %d %s", st, b)
	}
	if _, err := uuid.Parse(ext.id); err != nil {
		t.Fatalf("identifier %q: %v", ext.id, err)
	}
	var reg map[string]string
	if err := json.Unmarshal(b, &reg); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"functionName": "fn", "functionVersion": "$LATEST", "handler": "bootstrap", "accountId": "123456789012"}; len(reg) != 4 ||
		reg["functionName"] != want["functionName"] || reg["functionVersion"] != want["functionVersion"] || reg["handler"] != want["handler"] || reg["accountId"] != want["accountId"] {
		t.Fatalf("register body %s", b)
	}
	if err := e.s.WaitExtensionsRegistered(ctxTimeout(t, time.Second)); err != nil {
		t.Fatal(err)
	}
	internal, _, _, b := e.register("int1", `{"events":["INVOKE"]}`, nil)
	var reg2 map[string]string
	if json.Unmarshal(b, &reg2) != nil || len(reg2) != 3 {
		t.Fatalf("accountId sent unasked: %s", b)
	}

	// Init needs the runtime and both extensions to call next.
	nctx, ncancel := context.WithCancel(context.Background())
	defer ncancel()
	rtNext := make(chan struct{})
	go func() {
		defer close(rtNext)
		_, _, _, _ = e.do(nctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "")
	}()
	waitState(t, e.s, rtReady)
	notDone(t, "WaitInit before extensions call next", e.s.WaitInit)
	extNext := ext.nextAsync(ctxTimeout(t, 10*time.Second))
	waitExtWaiting(t, e.s, ext)
	notDone(t, "WaitInit before the internal extension calls next", e.s.WaitInit)
	intNext := internal.nextAsync(ctxTimeout(t, 10*time.Second))
	if err := e.s.WaitInit(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitInit: %v", err)
	}
	ncancel()
	<-rtNext

	// Registration closed with the runtime's first /next.
	_, st, _, b = e.register("late", `{"events":[]}`, nil)
	wantAPIError(t, "late register", st, b, 403, "Extension.RegistrationClosed", "Extension registration closed already")

	// INVOKE reaches both subscribers.
	deadline := time.Now().Add(time.Minute).UnixMilli()
	inv := newInv("inv-1", `{}`)
	inv.DeadlineMs = deadline
	inv.TraceID = "Root=1-00000000-000000000000000000000001;Parent=0000000000000001;Sampled=1"
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	for _, r := range []extReply{recvExt(t, extNext), recvExt(t, intNext)} {
		if r.st != 200 || r.eventID == "" || r.h.Get("Content-Type") != "application/json" {
			t.Fatalf("INVOKE event: %d %s", r.st, r.body)
		}
		tracing, _ := r.event["tracing"].(map[string]any)
		if r.event["eventType"] != "INVOKE" || r.event["requestId"] != "inv-1" || r.event["deadlineMs"] != float64(deadline) ||
			r.event["invokedFunctionArn"] != inv.InvokedFunctionARN || tracing["type"] != "X-Amzn-Trace-Id" || tracing["value"] != inv.TraceID {
			t.Fatalf("INVOKE event body %s", r.body)
		}
	}
	id, _, _ := e.fakeNext()
	e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, `"r"`)
	// The caller has its result although the extensions are still busy.
	if o := waitOutcome(t, ch); o.err != nil || string(o.res.Payload) != `"r"` {
		t.Fatalf("%+v %v", o.res, o.err)
	}
	rtNext2 := make(chan struct{})
	nctx2, ncancel2 := context.WithCancel(context.Background())
	defer ncancel2()
	go func() {
		defer close(rtNext2)
		_, _, _, _ = e.do(nctx2, "GET", "/2018-06-01/runtime/invocation/next", nil, "")
	}()
	notDone(t, "WaitIdle with both extensions busy", e.s.WaitIdle)
	extNext = ext.nextAsync(ctxTimeout(t, 10*time.Second))
	waitExtWaiting(t, e.s, ext)
	notDone(t, "WaitIdle with the internal extension busy", e.s.WaitIdle)
	intNext = internal.nextAsync(ctxTimeout(t, 10*time.Second))
	if err := e.s.WaitIdle(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}
	ncancel2()
	<-rtNext2

	// SHUTDOWN reaches only the external extension.
	sdDeadline := time.Now().Add(2 * time.Second)
	sdDone := make(chan error, 1)
	go func() { sdDone <- e.s.Shutdown(ctxTimeout(t, 10*time.Second), "spindown", sdDeadline) }()
	r := recvExt(t, extNext)
	if r.st != 200 || r.event["eventType"] != "SHUTDOWN" || r.event["shutdownReason"] != "spindown" || r.event["deadlineMs"] != float64(sdDeadline.UnixMilli()) || r.eventID == "" {
		t.Fatalf("SHUTDOWN event: %d %s", r.st, r.body)
	}
	select {
	case err := <-sdDone:
		t.Fatalf("Shutdown returned before the extension finished: %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	ext.nextAsync(ctxTimeout(t, 10*time.Second))
	if err := <-sdDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case r := <-intNext:
		t.Fatalf("internal extension got an event at shutdown: %s", r.body)
	default:
	}
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("after", `{}`)); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Invoke after Shutdown: %v", err)
	}
}

func TestExtensionRequestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{Extensions: []string{"ext1"}})
	next := func(id string) (int, []byte) {
		hdr := map[string]string{}
		if id != "" {
			hdr["Lambda-Extension-Identifier"] = id
		}
		st, _, b := e.mustDo("GET", "/2020-01-01/extension/event/next", hdr, "")
		return st, b
	}
	st, b := next("")
	wantAPIError(t, "missing id", st, b, 403, "Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header")
	st, b = next("not-a-uuid")
	wantAPIError(t, "invalid id", st, b, 403, "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier")
	unknown := uuid.NewString()
	st, b = next(unknown)
	wantAPIError(t, "unknown id", st, b, 403, "Extension.UnknownExtensionIdentifier", "Unknown extension "+unknown)

	_, st, _, b = e.register("", `{"events":[]}`, nil)
	wantAPIError(t, "empty name", st, b, 403, "Extension.InvalidExtensionName", "Empty extension name")
	_, st, _, b = e.register("x", `{"events":["BOGUS"]}`, nil)
	wantAPIError(t, "bad event", st, b, 403, "Extension.InvalidEventType", "BOGUS: ErrorInvalidEventType")
	_, st, _, b = e.register("x", `{"events":["SHUTDOWN"]}`, nil)
	wantAPIError(t, "internal shutdown", st, b, 403, "Extension.InvalidEventType", "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension")
	_, st, _, b = e.register("x", `{"events":`, nil)
	wantAPIError(t, "bad json", st, b, 403, "InvalidRequestFormat", "")
	_, st, _, b = e.register("x", `{"events":[],"configurationKeys":["k"]}`, nil)
	wantAPIError(t, "configurationKeys", st, b, 403, "InvalidRequestFormat", "configurationKeys are deprecated; use environment variables instead")

	ext1 := e.mustRegister("ext1", `{"events":["SHUTDOWN"]}`)
	_, st, _, b = e.register("ext1", `{"events":[]}`, nil)
	wantAPIError(t, "external twice", st, b, 403, "Extension.InvalidExtensionState",
		"State transition from Registered to Registered failed for extension ext1. Error: "+notAllowed)
	e.mustRegister("dup", `{"events":null}`)
	_, st, _, b = e.register("dup", `{}`, nil)
	wantAPIError(t, "internal twice", st, b, 403, "Extension.InvalidExtensionState", "Extension with this name already registered")
	for i := range 8 {
		e.mustRegister("many-"+strconv.Itoa(i), `{"events":[]}`)
	}
	_, st, _, b = e.register("eleventh", `{"events":[]}`, nil)
	wantAPIError(t, "too many", st, b, 403, "Extension.TooManyExtensions", "Extension limit (10) reached")

	errPost := func(path, id, errType string) (int, []byte) {
		hdr := map[string]string{"Lambda-Extension-Identifier": id}
		if errType != "" {
			hdr["Lambda-Extension-Function-Error-Type"] = errType
		}
		st, _, b := e.mustDo("POST", path, hdr, `{"errorMessage":"m","errorType":"E"}`)
		return st, b
	}
	st, b = errPost("/2020-01-01/extension/init/error", ext1.id, "")
	wantAPIError(t, "missing error type", st, b, 403, "Extension.MissingHeader", "Lambda-Extension-Function-Error-Type not found")
	st, b = errPost("/2020-01-01/extension/init/error", unknown, "Extension.Boom")
	wantAPIError(t, "unknown id", st, b, 403, "Extension.UnknownExtensionIdentifier", "Unknown Lambda-Extension-Identifier")
	st, b = errPost("/2020-01-01/extension/init/error", "", "Extension.Boom")
	wantAPIError(t, "missing id", st, b, 403, "Extension.MissingExtensionIdentifier", "")

	st, b = errPost("/2020-01-01/extension/init/error", ext1.id, "Extension.Boom")
	if st != 202 {
		t.Fatalf("init/error: %d %s", st, b)
	}
	ie := asInitError(e.s.WaitInit(ctxTimeout(t, time.Second)))
	if ie == nil || ie.Type != "Extension.InitError" || ie.Extension != "ext1" || ie.ExtensionErrorType != "Extension.Boom" || string(ie.Payload) != `{"errorMessage":"m","errorType":"E"}` {
		t.Fatalf("WaitInit: %#v", ie)
	}
	// Repeating it is accepted; calling next afterwards is not.
	if st, b = errPost("/2020-01-01/extension/init/error", ext1.id, "Extension.Boom"); st != 202 {
		t.Fatalf("second init/error: %d %s", st, b)
	}
	st, b = next(ext1.id)
	wantAPIError(t, "next after init error", st, b, 403, "Extension.InvalidExtensionState",
		"State transition from InitError to Ready failed for extension "+ext1.id+". Error: "+notAllowed)
	st, b = errPost("/2020-01-01/extension/exit/error", ext1.id, "Extension.Boom")
	wantAPIError(t, "exit after init error", st, b, 403, "Extension.InvalidExtensionState", "")
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("x", `{}`)); asInitError(err) != ie {
		t.Fatalf("Invoke after extension init error: %v", err)
	}
}

func TestExtensionInitErrorAfterNextRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	c := e.mustRegister("i", `{"events":["INVOKE"]}`)
	r := c.nextAsync(ctxTimeout(t, 10*time.Second))
	waitExtWaiting(t, e.s, c)
	st, _, b := e.mustDo("POST", "/2020-01-01/extension/init/error",
		map[string]string{"Lambda-Extension-Identifier": c.id, "Lambda-Extension-Function-Error-Type": "Extension.X"}, "")
	wantAPIError(t, "init error after next", st, b, 403, "Extension.InvalidExtensionState",
		"State transition from Ready to InitError failed for extension "+c.id+". Error: "+notAllowed)

	// exit/error is allowed at any time; the waiting next is released.
	st, _, b = e.mustDo("POST", "/2020-01-01/extension/exit/error",
		map[string]string{"Lambda-Extension-Identifier": c.id, "Lambda-Extension-Function-Error-Type": "Extension.X"}, "")
	if st != 202 {
		t.Fatalf("exit/error: %d %s", st, b)
	}
	if got := recvExt(t, r); got.st != 403 {
		t.Fatalf("waiting next after exit/error: %d %s", got.st, got.body)
	}
	// An extension that left after its init does not fail the init.
	nctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _, _, _ = e.do(nctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "") }()
	if err := e.s.WaitInit(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitInit: %v", err)
	}
}

func TestExtensionExited(t *testing.T) {
	t.Parallel()
	// An expected extension dying before it registers fails the init.
	e := newEnv(t, Options{Extensions: []string{"ext1", "ext2"}})
	e.mustRegister("ext1", `{"events":["INVOKE"]}`)
	e.s.ExtensionExited("ext2", "exit status 1")
	ie := asInitError(e.s.WaitExtensionsRegistered(ctxTimeout(t, time.Second)))
	if ie == nil || ie.Type != "Extension.Crash" || ie.Extension != "ext2" {
		t.Fatalf("%#v", ie)
	}
	var doc errorResponse
	if json.Unmarshal(ie.Payload, &doc) != nil || doc.ErrorType != "Extension.Crash" || doc.ErrorMessage == "" {
		t.Fatalf("crash payload %s", ie.Payload)
	}

	// After init, a dead extension is no longer waited for.
	e = newEnv(t, Options{Extensions: []string{"ext1"}})
	ext := e.mustRegister("ext1", `{"events":["INVOKE","SHUTDOWN"]}`)
	first := ext.nextAsync(ctxTimeout(t, 10*time.Second))
	waitExtWaiting(t, e.s, ext)
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("x-1", `{}`))
	if r := recvExt(t, first); r.event["eventType"] != "INVOKE" {
		t.Fatalf("%s", r.body)
	}
	e.fakeNext()
	e.mustDo("POST", "/2018-06-01/runtime/invocation/x-1/response", nil, "")
	waitOutcome(t, ch)
	nctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _, _, _ = e.do(nctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "") }()
	notDone(t, "WaitIdle with the extension busy", e.s.WaitIdle)
	e.s.ExtensionExited("ext1", "signal: killed")
	if err := e.s.WaitIdle(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}
	if err := e.s.Shutdown(ctxTimeout(t, 5*time.Second), "timeout", time.Now()); err != nil {
		t.Fatalf("Shutdown with no live extension: %v", err)
	}
	if err := e.s.Shutdown(ctxTimeout(t, 5*time.Second), "later", time.Now()); err == nil {
		t.Fatal("invalid shutdown reason accepted")
	}
}

func TestShutdownTimesOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{Extensions: []string{"slow"}})
	e.mustRegister("slow", `{"events":["SHUTDOWN"]}`)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.s.Shutdown(ctx, "failure", time.Now().Add(50*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	_, st, _, b := e.register("new", `{"events":[]}`, nil)
	wantAPIError(t, "register after shutdown", st, b, 403, "Extension.RegistrationClosed", "")
}

func TestInternalExtensionsDroppedOnRuntimeExit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{Extensions: []string{"ext"}})
	extc := e.mustRegister("ext", `{"events":["INVOKE"]}`)
	internal := e.mustRegister("helper", `{"events":["INVOKE"]}`)
	waiting := internal.nextAsync(ctxTimeout(t, 10*time.Second))
	waitExtWaiting(t, e.s, internal)
	e.s.RuntimeExited("exit status 1")
	if r := recvExt(t, waiting); r.st != 403 {
		t.Fatalf("internal next after runtime exit: %d %s", r.st, r.body)
	}
	e.s.ResetRuntime()
	// The new runtime process registers its helper again; the external one
	// keeps its identity.
	e.mustRegister("helper", `{"events":[]}`)
	_, st, _, _ := e.register("ext", `{"events":[]}`, nil)
	if st != 403 {
		t.Fatalf("external re-register: %d", st)
	}
	e.s.mu.Lock()
	same := e.s.exts[extc.id] != nil
	e.s.mu.Unlock()
	if !same {
		t.Fatal("external extension lost its registration")
	}
}
