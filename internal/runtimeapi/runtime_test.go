package runtimeapi

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const notAllowed = "State transition is not allowed"

func TestNextDeliversHeadersAndBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	inv := &Invocation{
		RequestID:          "11111111-2222-3333-4444-555555555555",
		Payload:            []byte("\x00\x01raw\xff bytes"),
		DeadlineMs:         1700000000123,
		InvokedFunctionARN: "arn:aws:lambda:eu-west-1:123456789012:function:f:$LATEST",
		TraceID:            "Root=1-65a1b2c3-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0",
		ClientContext:      `{"custom":{"a":"b"}}`,
		CognitoIdentity:    `{"cognitoIdentityId":"i","cognitoIdentityPoolId":"p"}`,
		TenantID:           "t-1",
		ContentType:        "application/octet-stream",
	}
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	id, h, body := e.fakeNext()
	want := map[string]string{
		"Lambda-Runtime-Aws-Request-Id":       inv.RequestID,
		"Lambda-Runtime-Deadline-Ms":          "1700000000123",
		"Lambda-Runtime-Invoked-Function-Arn": inv.InvokedFunctionARN,
		"Lambda-Runtime-Trace-Id":             inv.TraceID,
		"Lambda-Runtime-Client-Context":       inv.ClientContext,
		"Lambda-Runtime-Cognito-Identity":     inv.CognitoIdentity,
		"Lambda-Runtime-Aws-Tenant-Id":        "t-1",
		"Content-Type":                        "application/octet-stream",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if string(body) != string(inv.Payload) {
		t.Fatalf("body %q", body)
	}
	st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", map[string]string{"Content-Type": "text/plain"}, "done")
	if st != http.StatusAccepted || strings.TrimSpace(string(b)) != `{"status":"OK"}` {
		t.Fatalf("response: %d %s", st, b)
	}
	o := waitOutcome(t, ch)
	if o.err != nil || string(o.res.Payload) != "done" || o.res.ContentType != "text/plain" || o.res.FunctionError {
		t.Fatalf("%+v %v", o.res, o.err)
	}

	// Optional headers are absent when unset; the defaults are filled in.
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("r-2", `{}`))
	_, h, _ = e.fakeNext()
	for _, k := range []string{"Lambda-Runtime-Client-Context", "Lambda-Runtime-Cognito-Identity", "Lambda-Runtime-Aws-Tenant-Id"} {
		if _, ok := h[k]; ok {
			t.Errorf("header %s sent although unset", k)
		}
	}
	if h.Get("Content-Type") != "application/json" || !strings.HasPrefix(h.Get("Lambda-Runtime-Trace-Id"), "Root=1-") {
		t.Errorf("defaults: content type %q trace %q", h.Get("Content-Type"), h.Get("Lambda-Runtime-Trace-Id"))
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/r-2/response", nil, "{}")
	waitOutcome(t, ch)
}

func TestInvokeValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ctx := ctxTimeout(t, 5*time.Second)
	bad := []*Invocation{
		nil,
		{RequestID: "", InvokedFunctionARN: "a", DeadlineMs: 1},
		{RequestID: "a/b", InvokedFunctionARN: "a", DeadlineMs: 1},
		{RequestID: "x", DeadlineMs: 1},
		{RequestID: "x", InvokedFunctionARN: "a\r\nX-Evil: 1", DeadlineMs: 1},
		{RequestID: "x", InvokedFunctionARN: "a", DeadlineMs: 1, ClientContext: "not json\n"},
	}
	for i, inv := range bad {
		if _, err := e.s.Invoke(ctx, inv); err == nil {
			t.Errorf("invocation %d accepted", i)
		}
	}
	// No deadline anywhere.
	if _, err := e.s.Invoke(context.Background(), &Invocation{RequestID: "x", InvokedFunctionARN: "a"}); err == nil {
		t.Error("invocation without deadline accepted")
	}
	// The deadline of the context is used when DeadlineMs is zero.
	dctx, cancel := context.WithDeadline(context.Background(), time.UnixMilli(time.Now().Add(time.Hour).UnixMilli()))
	defer cancel()
	want, _ := dctx.Deadline()
	ch := e.invokeAsync(dctx, &Invocation{RequestID: "d-1", InvokedFunctionARN: "a"})
	_, h, _ := e.fakeNext()
	if h.Get("Lambda-Runtime-Deadline-Ms") != strconv.FormatInt(want.UnixMilli(), 10) {
		t.Fatalf("deadline header %q, want %d", h.Get("Lambda-Runtime-Deadline-Ms"), want.UnixMilli())
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/d-1/response", nil, "")
	waitOutcome(t, ch)
}

func TestRuntimeStateErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})

	// Before any /next.
	st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/abc/response", nil, "x")
	wantAPIError(t, "response before next", st, b, 403, "InvalidStateTransition",
		"State transition from Started to InvocationResponse failed for runtime. Error: "+notAllowed)
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/invocation/abc/error", nil, "x")
	wantAPIError(t, "error before next", st, b, 403, "InvalidStateTransition",
		"State transition from Started to InvocationErrorResponse failed for runtime. Error: "+notAllowed)

	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("req-1", `{}`))
	id, _, _ := e.fakeNext()

	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/init/error", nil, "{}")
	wantAPIError(t, "init error after next", st, b, 403, "InvalidStateTransition",
		"State transition from Running to InitError failed for runtime. Error: "+notAllowed)
	st, _, b = e.mustDo("GET", "/2018-06-01/runtime/invocation/next", nil, "")
	wantAPIError(t, "next while running", st, b, 403, "InvalidStateTransition",
		"State transition from Running to Ready failed for runtime. Error: "+notAllowed)
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/invocation/other-id/response", nil, "x")
	wantAPIError(t, "wrong id", st, b, 400, "InvalidRequestID", "Invalid request ID")

	st, _, _ = e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, "ok")
	if st != 202 {
		t.Fatalf("response: %d", st)
	}
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, "again")
	wantAPIError(t, "duplicate response", st, b, 400, "InvalidRequestID", "Invalid request ID")
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/error", nil, "again")
	wantAPIError(t, "error after response", st, b, 400, "InvalidRequestID", "Invalid request ID")
	if o := waitOutcome(t, ch); o.err != nil || string(o.res.Payload) != "ok" {
		t.Fatalf("%+v %v", o.res, o.err)
	}

	// Ready with nothing in flight: a response for anything is 400.
	nctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _, _ = e.do(nctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "")
	}()
	waitState(t, e.s, rtReady)
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, "late")
	wantAPIError(t, "response while ready", st, b, 400, "InvalidRequestID", "")
	cancel()
	<-done
}

// waitState waits until the runtime reaches st.
func waitState(t *testing.T, s *Server, st rtState) {
	t.Helper()
	err := s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) { return s.rt == st, nil })
	if err != nil {
		t.Fatalf("runtime never reached %s", st)
	}
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	for _, c := range []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/2018-06-01/runtime/invocation/"},
		{"POST", "/2018-06-01/runtime/invocation/id/other"},
		{"POST", "/2018-06-01/runtime/invocation//response"},
		{"GET", "/2020-01-01/extension/nope"},
		{"GET", "/2018-06-01/runtime/restore/next"},
	} {
		st, _, b := e.mustDo(c.method, c.path, nil, "")
		wantAPIError(t, c.method+" "+c.path, st, b, 404, "NotFound", "")
	}
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/2018-06-01/runtime/invocation/next", "GET"},
		{"GET", "/2018-06-01/runtime/invocation/x/response", "POST"},
		{"PUT", "/2018-06-01/runtime/init/error", "POST"},
		{"GET", "/2020-01-01/extension/register", "POST"},
		{"POST", "/2020-01-01/extension/event/next", "GET"},
		{"GET", "/2022-07-01/telemetry", "PUT"},
		{"DELETE", "/2020-08-15/logs", "PUT"},
	} {
		st, h, b := e.mustDo(c.method, c.path, nil, "")
		wantAPIError(t, c.method+" "+c.path, st, b, 405, "MethodNotAllowed", "")
		if h.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q", c.method, c.path, h.Get("Allow"))
		}
	}
	st, _, b := e.mustDo("GET", "/2018-06-01/ping", nil, "")
	if st != 200 || string(b) != "pong" {
		t.Errorf("ping: %d %q", st, b)
	}
}

func TestLogsAndTelemetryStubs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	st, _, b := e.mustDo("PUT", "/2022-07-01/telemetry", nil, `{"schemaVersion":"2022-12-13"}`)
	wantAPIError(t, "telemetry", st, b, 202, "Telemetry.NotSupported", "Telemetry API is not supported")
	st, _, b = e.mustDo("PUT", "/2020-08-15/logs", nil, `{}`)
	wantAPIError(t, "logs", st, b, 202, "Logs.NotSupported", "Logs API is not supported")
}

func TestErrorEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	cases := []struct {
		name, header, ctype, body string
		wantType, wantBody        string
		wantCT                    string
	}{
		{"valid header", "Function.MyError", "application/json", `{"errorMessage":"m","errorType":"Other"}`, "Function.MyError", "", "application/json"},
		{"invalid header, payload type", "my type", "application/json", `{"errorMessage":"m","errorType":"ValueError"}`, "ValueError", "", "application/json"},
		{"runtime header", "Runtime.ExitError", "", `not json`, "Runtime.ExitError", "", ""},
		{"invalid function header", "Function.lower", "", `[]`, "Function.Unknown", "", ""},
		{"nothing", "", "text/plain", `oops`, "Runtime.Unknown", "", "text/plain"},
		{"error cause stripped", "", "application/vnd.aws.lambda.error.cause+json",
			`{"errorMessage":"m","errorType":"T","stackTrace":["a"],"errorCause":{"paths":[]}}`,
			"T", `{"errorMessage":"m","errorType":"T","stackTrace":["a"]}`, "application/json"},
		{"error cause unparseable", "", "application/vnd.aws.lambda.error.cause+json", `{`,
			"Runtime.Unknown", `"Invalid error body"`, "application/octet-stream"},
	}
	for i, c := range cases {
		id := "e-" + strconv.Itoa(i)
		ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv(id, `{}`))
		e.fakeNext()
		hdr := map[string]string{}
		if c.header != "" {
			hdr["Lambda-Runtime-Function-Error-Type"] = c.header
		}
		if c.ctype != "" {
			hdr["Content-Type"] = c.ctype
		}
		st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/error", hdr, c.body)
		if st != 202 || strings.TrimSpace(string(b)) != `{"status":"OK"}` {
			t.Fatalf("%s: %d %s", c.name, st, b)
		}
		o := waitOutcome(t, ch)
		wantBody := c.wantBody
		if wantBody == "" {
			wantBody = c.body
		}
		if o.err != nil || !o.res.FunctionError || o.res.ErrorType != c.wantType || string(o.res.Payload) != wantBody || o.res.ContentType != c.wantCT {
			t.Fatalf("%s: %+v (%s) %v", c.name, o.res, o.res.Payload, o.err)
		}
	}
}

func TestResponseMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("m-1", `{}`))
	e.fakeNext()
	st, _, _ := e.mustDo("POST", "/2018-06-01/runtime/invocation/m-1/response",
		map[string]string{"Lambda-Runtime-Function-Response-Mode": "streaming"}, "streamed")
	if o := waitOutcome(t, ch); st != 202 || o.err != nil || string(o.res.Payload) != "streamed" {
		t.Fatalf("streaming: %d %+v %v", st, o.res, o.err)
	}

	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("m-2", `{}`))
	e.fakeNext()
	st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/m-2/response",
		map[string]string{"Lambda-Runtime-Function-Response-Mode": "bogus"}, "x")
	wantAPIError(t, "bad mode", st, b, 400, "InvalidFunctionResponseMode", "Invalid function response mode")
	o := waitOutcome(t, ch)
	if o.err != nil || !o.res.FunctionError || o.res.ErrorType != "Runtime.InvalidResponseModeHeader" {
		t.Fatalf("bad mode result: %+v %v", o.res, o.err)
	}
	// The runtime may carry on with the next invocation.
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("m-3", `{}`))
	e.fakeNext()
	e.mustDo("POST", "/2018-06-01/runtime/invocation/m-3/response", nil, "fine")
	if o := waitOutcome(t, ch); o.err != nil || string(o.res.Payload) != "fine" {
		t.Fatalf("after bad mode: %+v %v", o.res, o.err)
	}
}

// rawPost writes a hand-made request over a TCP connection and returns the
// status and body of the reply. The request is written concurrently with
// reading, as a server may answer before the body is complete.
func rawPost(t *testing.T, addr, request string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.WriteString(conn, request) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestChunkedBodyWithTrailers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})

	// Chunked, trailers declared but empty (what aws-lambda-go sends on
	// success): the chunks are the response.
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("c-1", `{}`))
	e.fakeNext()
	st, body := rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/c-1/response HTTP/1.1\r\n"+
		"Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"+
		"Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"+
		"3\r\n{\"a\r\n5\r\n\":12}\r\n0\r\n\r\n")
	o := waitOutcome(t, ch)
	if st != 202 || o.err != nil || o.res.FunctionError || string(o.res.Payload) != `{"a":12}` {
		t.Fatalf("chunked: %d %s %+v %v", st, body, o.res, o.err)
	}

	// Trailers carrying an error replace the partial body.
	errBody := `{"errorMessage":"reader failed","errorType":"ReadError"}`
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("c-2", `{}`))
	e.fakeNext()
	st, body = rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/c-2/response HTTP/1.1\r\n"+
		"Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n"+
		"Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"+
		"7\r\npartial\r\n0\r\n"+
		"Lambda-Runtime-Function-Error-Type: ReadError\r\n"+
		"Lambda-Runtime-Function-Error-Body: "+base64.StdEncoding.EncodeToString([]byte(errBody))+"\r\n\r\n")
	o = waitOutcome(t, ch)
	if st != 202 || o.err != nil || !o.res.FunctionError || o.res.ErrorType != "ReadError" || string(o.res.Payload) != errBody {
		t.Fatalf("trailers: %d %s %+v %v", st, body, o.res, o.err)
	}

	// An undecodable error body still yields a well-formed error.
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("c-3", `{}`))
	e.fakeNext()
	st, _ = rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/c-3/response HTTP/1.1\r\n"+
		"Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"+
		"0\r\nLambda-Runtime-Function-Error-Type: Oops\r\nLambda-Runtime-Function-Error-Body: !!notbase64\r\n\r\n")
	o = waitOutcome(t, ch)
	if st != 202 || o.err != nil || !o.res.FunctionError || string(o.res.Payload) != `{"errorMessage":"Invalid error body","errorType":"Oops"}` {
		t.Fatalf("bad trailer body: %d %+v %v", st, o.res, o.err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MaxResponseBytes: 1000})
	for i, ep := range []string{"response", "error"} {
		id := fmt.Sprintf("big-%d", i)
		ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv(id, `{}`))
		e.fakeNext()
		// Chunked and unbounded as far as the server can tell: it must stop
		// reading at the limit.
		chunk := strings.Repeat("x", 4096)
		req := "POST /2018-06-01/runtime/invocation/" + id + "/" + ep + " HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 64) + "0\r\n\r\n"
		st, body := rawPost(t, e.addr, req)
		wantAPIError(t, ep, st, []byte(body), 413, "RequestEntityTooLarge", "Exceeded maximum allowed payload size (1000 bytes).")
		o := waitOutcome(t, ch)
		want := `{"errorMessage":"Response payload size exceeded maximum allowed payload size (1000 bytes).","errorType":"Function.ResponseSizeTooLarge"}`
		if o.err != nil || !o.res.FunctionError || string(o.res.Payload) != want {
			t.Fatalf("%s: %+v %v", ep, o.res, o.err)
		}
	}
	// Exactly at the limit is accepted.
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("ok", `{}`))
	e.fakeNext()
	st, _, _ := e.mustDo("POST", "/2018-06-01/runtime/invocation/ok/response", nil, strings.Repeat("y", 1000))
	if o := waitOutcome(t, ch); st != 202 || o.err != nil || len(o.res.Payload) != 1000 {
		t.Fatalf("at limit: %d %v", st, o.err)
	}
}

func TestTruncatedResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("tr", `{}`))
	e.fakeNext()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "POST /2018-06-01/runtime/invocation/tr/response HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly part")
	conn.Close()
	o := waitOutcome(t, ch)
	if o.err != nil || !o.res.FunctionError || o.res.ErrorType != "Runtime.TruncatedResponse" {
		t.Fatalf("%+v %v", o.res, o.err)
	}
}

func TestConcurrentNextSupersedes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	type reply struct {
		st   int
		h    http.Header
		body []byte
	}
	first := make(chan reply, 1)
	go func() {
		st, h, b, _ := e.do(ctxTimeout(t, 10*time.Second), "GET", "/2018-06-01/runtime/invocation/next", nil, "")
		first <- reply{st, h, b}
	}()
	waitWaiter(t, e.s, nil)
	e.s.mu.Lock()
	w1 := e.s.rtWaiter
	e.s.mu.Unlock()
	second := make(chan reply, 1)
	go func() {
		st, h, b, _ := e.do(ctxTimeout(t, 10*time.Second), "GET", "/2018-06-01/runtime/invocation/next", nil, "")
		second <- reply{st, h, b}
	}()
	r1 := <-first
	wantAPIError(t, "superseded /next", r1.st, r1.body, 403, "InvalidStateTransition", "")
	waitWaiter(t, e.s, w1)
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("s-1", `"one"`))
	r2 := <-second
	if r2.st != 200 || r2.h.Get("Lambda-Runtime-Aws-Request-Id") != "s-1" || string(r2.body) != `"one"` {
		t.Fatalf("second /next: %d %s", r2.st, r2.body)
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/s-1/response", nil, "r")
	if o := waitOutcome(t, ch); o.err != nil || string(o.res.Payload) != "r" {
		t.Fatalf("%+v %v", o.res, o.err)
	}
}

// waitWaiter waits until a runtime /next other than old is blocked.
func waitWaiter(t *testing.T, s *Server, old *waiter) {
	t.Helper()
	err := s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) {
		return s.rtWaiter != nil && s.rtWaiter != old, nil
	})
	if err == nil {
		return
	}
	t.Fatal("no /next waiting")
}

func TestNextClientGoneDoesNotLoseInvocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, _, err := e.do(ctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "")
		done <- err
	}()
	waitWaiter(t, e.s, nil)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled /next returned normally")
	}
	// The server notices the disconnect and releases the slot.
	err := e.s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) { return e.s.rtWaiter == nil, nil })
	if err != nil {
		t.Fatal("waiting slot not released")
	}
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("g-1", `"kept"`))
	id, _, body := e.fakeNext()
	if id != "g-1" || string(body) != `"kept"` {
		t.Fatalf("next after disconnect: %q %q", id, body)
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/g-1/response", nil, "ok")
	waitOutcome(t, ch)
}

func TestInvokeTimeoutBeforeDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.s.Invoke(ctx, newInv("late", `{}`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v", err)
	}
	// The withdrawn invocation must never reach the runtime.
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("fresh", `{}`))
	id, _, _ := e.fakeNext()
	if id != "fresh" {
		t.Fatalf("runtime got %q", id)
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/fresh/response", nil, "")
	waitOutcome(t, ch)
}

func TestRuntimeInitError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	payload := `{"errorMessage":"cannot import module","errorType":"Runtime.ImportModuleError"}`
	waitErr := make(chan error, 1)
	go func() { waitErr <- e.s.WaitInit(ctxTimeout(t, 10*time.Second)) }()
	st, _, b := e.mustDo("POST", "/2018-06-01/runtime/init/error",
		map[string]string{"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}, payload)
	if st != 202 || strings.TrimSpace(string(b)) != `{"status":"OK"}` {
		t.Fatalf("init/error: %d %s", st, b)
	}
	ie := asInitError(<-waitErr)
	if ie == nil || ie.Type != "Runtime.ImportModuleError" || string(ie.Payload) != payload || ie.ContentType != "application/json" || ie.Extension != "" {
		t.Fatalf("WaitInit: %#v", ie)
	}
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("x", `{}`)); asInitError(err) != ie {
		t.Fatalf("Invoke after init error: %v", err)
	}
	st, _, b = e.mustDo("POST", "/2018-06-01/runtime/init/error", nil, payload)
	wantAPIError(t, "second init error", st, b, 403, "InvalidStateTransition",
		"State transition from InitError to InitError failed for runtime. Error: "+notAllowed)
	st, _, b = e.mustDo("GET", "/2018-06-01/runtime/invocation/next", nil, "")
	wantAPIError(t, "next after init error", st, b, 403, "InvalidStateTransition",
		"State transition from InitError to Ready failed for runtime. Error: "+notAllowed)

	// A new runtime process starts clean; the type falls back to the payload.
	e.s.ResetRuntime()
	e.mustDo("POST", "/2018-06-01/runtime/init/error", nil, `{"errorMessage":"m","errorType":"KeyError"}`)
	if ie := asInitError(e.s.WaitInit(ctxTimeout(t, 5*time.Second))); ie == nil || ie.Type != "KeyError" {
		t.Fatalf("type from payload: %#v", ie)
	}
}

func TestInitErrorFailsQueuedInvoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("q", `{}`))
	err := e.s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) { return e.s.queued != nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	e.mustDo("POST", "/2018-06-01/runtime/init/error", nil, `oops`)
	o := waitOutcome(t, ch)
	if ie := asInitError(o.err); ie == nil || ie.Type != "Runtime.Unknown" || ie.ContentType != "application/octet-stream" {
		t.Fatalf("%+v %v", o.res, o.err)
	}
}

func TestWaitInitTimeoutAndRuntimeExit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := e.s.WaitInit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitInit: %v", err)
	}
	e.s.RuntimeExited("exit status 127")
	var exitErr *RuntimeExitError
	if err := e.s.WaitInit(ctxTimeout(t, time.Second)); !errors.As(err, &exitErr) || exitErr.Reason != "exit status 127" {
		t.Fatalf("WaitInit after exit: %v", err)
	}
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("x", `{}`)); !errors.As(err, &exitErr) || exitErr.RequestID != "x" {
		t.Fatalf("Invoke after exit: %v", err)
	}
	if (&RuntimeExitError{}).Error() != "Runtime exited without providing a reason" {
		t.Fatal("empty reason message")
	}
	st, _, b := e.mustDo("GET", "/2018-06-01/runtime/invocation/next", nil, "")
	wantAPIError(t, "next after exit", st, b, 403, "InvalidStateTransition", "")
}

func TestResetRuntimeEndsDeliveredInvocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("rs", `{}`))
	e.fakeNext()
	e.s.ResetRuntime()
	if o := waitOutcome(t, ch); !errors.Is(o.err, ErrRuntimeReset) {
		t.Fatalf("%v", o.err)
	}
	st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/rs/response", nil, "late")
	wantAPIError(t, "late response after reset", st, b, 403, "InvalidStateTransition", "")
}

func TestWaitIdleWaitsForRuntimeNext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("wi", `{}`))
	e.fakeNext()
	e.mustDo("POST", "/2018-06-01/runtime/invocation/wi/response", nil, "")
	waitOutcome(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := e.s.WaitIdle(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle before the runtime's /next: %v", err)
	}
	nctx, ncancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _, _ = e.do(nctx, "GET", "/2018-06-01/runtime/invocation/next", nil, "")
	}()
	if err := e.s.WaitIdle(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}
	ncancel()
	<-done
}

func TestServe(t *testing.T) {
	t.Parallel()
	s := New(Options{})
	addr, stop := serveLocal(t, s, nil)

	// A /next blocked in the server does not keep it from stopping.
	nextDone := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/2018-06-01/runtime/invocation/next")
		if err == nil {
			resp.Body.Close()
		}
		nextDone <- err
	}()
	waitWaiter(t, s, nil)

	// Oversized headers are refused by the HTTP layer.
	st, _ := rawPost(t, addr, "GET /2018-06-01/ping HTTP/1.1\r\nHost: h\r\nX-Big: "+strings.Repeat("a", 100<<10)+"\r\n\r\n")
	if st != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge header: %d", st)
	}

	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := <-nextDone; err == nil {
		t.Fatal("blocked /next completed normally after the server stopped")
	}
}

// TestStreamedResponse: with Invocation.Stream, a streamed /response goes
// to it part by part and the Result has no payload; the stream limit
// (StreamLimit) ends it with Function.ResponseSizeTooLarge and a 413 to
// the runtime; a Stream that fails gets nothing more, and the runtime's
// answer is still taken; without the streaming mode header the response
// is read whole.
func TestStreamedResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var mu sync.Mutex
	var parts []string
	var types []string
	inv := newInv("s-1", `{}`)
	inv.Stream = func(ct string, p []byte) error {
		mu.Lock()
		defer mu.Unlock()
		parts, types = append(parts, string(p)), append(types, ct)
		return nil
	}
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	e.fakeNext()
	st, body := rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/s-1/response HTTP/1.1\r\n"+
		"Host: h\r\nTransfer-Encoding: chunked\r\nContent-Type: text/csv\r\n"+
		"Lambda-Runtime-Function-Response-Mode: streaming\r\n\r\n"+
		"4\r\na,b\n\r\n4\r\n1,2\n\r\n0\r\n\r\n")
	o := waitOutcome(t, ch)
	mu.Lock()
	got := strings.Join(parts, "")
	mu.Unlock()
	if st != 202 || o.err != nil || o.res.FunctionError || len(o.res.Payload) != 0 || got != "a,b\n1,2\n" ||
		types[0] != "text/csv" || o.res.ContentType != "text/csv" {
		t.Fatalf("streamed: %d %s, result %+v %v, parts %q %q", st, body, o.res, o.err, parts, types)
	}

	// Past the stream limit.
	inv = newInv("s-2", `{}`)
	inv.StreamLimit = 1000
	sent := 0
	inv.Stream = func(_ string, p []byte) error { sent += len(p); return nil }
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	e.fakeNext()
	chunk := strings.Repeat("x", 400)
	st, body = rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/s-2/response HTTP/1.1\r\nHost: h\r\n"+
		"Transfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n\r\n"+
		strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 8)+"0\r\n\r\n")
	wantAPIError(t, "over the stream limit", st, []byte(body), 413, "RequestEntityTooLarge", "Exceeded maximum allowed payload size (1000 bytes).")
	if o := waitOutcome(t, ch); o.err != nil || o.res.ErrorType != "Function.ResponseSizeTooLarge" || sent > 1000 {
		t.Fatalf("over the limit: %+v %v, %d bytes passed on", o.res, o.err, sent)
	}

	// The caller went away after the first part.
	inv = newInv("s-3", `{}`)
	calls := 0
	inv.Stream = func(string, []byte) error { calls++; return errors.New("gone") }
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	e.fakeNext()
	st, _ = rawPost(t, e.addr, "POST /2018-06-01/runtime/invocation/s-3/response HTTP/1.1\r\nHost: h\r\n"+
		"Transfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n\r\n"+
		strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 8)+"0\r\n\r\n")
	if o := waitOutcome(t, ch); st != 202 || o.err != nil || o.res.FunctionError || calls != 1 {
		t.Fatalf("caller gone: %d, %+v %v, Stream called %d times; want 202 and one call", st, o.res, o.err, calls)
	}

	// No streaming mode header: whole, as always.
	inv = newInv("s-4", `{}`)
	inv.Stream = func(string, []byte) error { t.Error("Stream called for a buffered response"); return nil }
	ch = e.invokeAsync(ctxTimeout(t, 10*time.Second), inv)
	e.fakeNext()
	e.mustDo("POST", "/2018-06-01/runtime/invocation/s-4/response", nil, "whole")
	if o := waitOutcome(t, ch); o.err != nil || string(o.res.Payload) != "whole" {
		t.Fatalf("buffered: %+v %v", o.res, o.err)
	}
}

// A runtime that takes an event and stops reading it must not stall the
// server: the write of a large event waits in the poller, not in a system
// call holding the process's only P (the agent runs with GOMAXPROCS 1 and
// raw writes, package rawio), so the invocation's deadline and other
// connections are still served.
func TestRuntimeNotReadingEvent(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	e := newEnv(t, Options{})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := c.Write([]byte("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: rt\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	payload := `"` + strings.Repeat("x", 6<<20-2) + `"`
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := e.s.Invoke(ctx, newInv("req-big", payload))
		done <- err
	}()
	// The event is on its way once its status line arrives; its 6 MB are
	// more than the socket buffers hold (4 MiB of send buffer at most
	// here, tcp_wmem), so its write now waits for a reader that never
	// comes. Meanwhile another connection is answered.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReaderSize(c, 16).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("the event's status line: %q, %v", line, err)
	}
	time.Sleep(50 * time.Millisecond)
	pingCtx, pingCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer pingCancel()
	if status, _, body, err := e.do(pingCtx, http.MethodGet, "/2018-06-01/ping", nil, ""); err != nil || status != http.StatusOK || string(body) != "pong" {
		t.Fatalf("ping while an event is stuck: %d %q %v", status, body, err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Invoke: %v, want its deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Invoke did not return at its deadline")
	}
}
