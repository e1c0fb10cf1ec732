package runtimeapi

// These tests run real aws-lambda-go functions (testdata/fn) against the
// server, as the agent runs them in an execution environment.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFunctionEcho(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.startFn("echo")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("WaitInit: %v", err)
	}

	big := `"` + strings.Repeat("0123456789abcdef", 5<<20/16) + `"`
	payloads := []string{
		`{"a":1,"b":[true,null,"x"]}`,
		`"\u0000\u0001 bin\\ary \ud83d\ude00 é ÿ <&>"`,
		`12345`,
		`"` + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" + `"`,
		big,
		`[]`,
	}
	for i, p := range payloads {
		id := "req-" + strconv.Itoa(i)
		res, err := e.s.Invoke(ctxTimeout(t, 20*time.Second), newInv(id, p))
		if err != nil {
			t.Fatalf("invoke %d: %v", i, err)
		}
		if res.FunctionError || !bytes.Equal(res.Payload, []byte(p)) {
			t.Fatalf("invoke %d: got error=%v %d bytes %.80q, want %d bytes %.80q", i, res.FunctionError, len(res.Payload), res.Payload, len(p), p)
		}
		if res.ContentType != "application/json" {
			t.Fatalf("invoke %d: content type %q", i, res.ContentType)
		}
		if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatalf("WaitIdle %d: %v", i, err)
		}
	}
}

func TestFunctionError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.startFn("error")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// An error is not fatal: the same process serves the next invocation.
	for i := range 2 {
		res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("err-"+strconv.Itoa(i), `{}`))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"errorMessage":"Error: x","errorType":"errorString"}`
		if !res.FunctionError || string(res.Payload) != want || res.ErrorType != "errorString" {
			t.Fatalf("got %+v %s, want function error %s", res, res.Payload, want)
		}
		if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFunctionPanicThenRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	p := e.startFn("panic")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("p-1", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ErrorMessage string            `json:"errorMessage"`
		ErrorType    string            `json:"errorType"`
		StackTrace   []json.RawMessage `json:"stackTrace"`
	}
	if err := json.Unmarshal(res.Payload, &doc); err != nil {
		t.Fatalf("panic payload %s: %v", res.Payload, err)
	}
	if !res.FunctionError || doc.ErrorMessage != "boom" || doc.ErrorType != "string" || len(doc.StackTrace) == 0 || res.ErrorType != "string" {
		t.Fatalf("panic result %+v payload %s", res, res.Payload)
	}

	// aws-lambda-go exits after reporting a panic: the phase ends with the
	// runtime gone, and the agent starts a new one.
	p.waitExit(t)
	var exitErr *RuntimeExitError
	if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); !errors.As(err, &exitErr) {
		t.Fatalf("WaitIdle after panic: %v, want *RuntimeExitError", err)
	}
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("p-2", `{}`)); !errors.As(err, &exitErr) {
		t.Fatalf("Invoke on exited runtime: %v", err)
	}
	e.s.ResetRuntime()
	e.startFn("echo")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err = e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("p-3", `"again"`))
	if err != nil || string(res.Payload) != `"again"` {
		t.Fatalf("after restart: %v %+v", err, res)
	}
}

func TestFunctionContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.startFn("context")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(42 * time.Second).UnixMilli()
	inv := &Invocation{
		RequestID:          "0b8ff1fb-6c3e-4d5a-9a3e-1f0e2c0b7a11",
		Payload:            []byte(`{}`),
		DeadlineMs:         deadline,
		InvokedFunctionARN: "arn:aws:lambda:us-east-1:123456789012:function:fn:prod",
		TraceID:            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
		// JSON with newlines must still reach the runtime as one header.
		ClientContext:   "{\"client\":{\"app_title\":\"App\"},\n \"custom\":{\"k\":\"v\"},\"env\":{}}",
		CognitoIdentity: `{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}`,
		TenantID:        "tenant-7",
	}
	res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), inv)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		RequestID     string            `json:"requestId"`
		FunctionARN   string            `json:"functionArn"`
		DeadlineMs    int64             `json:"deadlineMs"`
		TraceID       string            `json:"traceId"`
		TenantID      string            `json:"tenantId"`
		ClientApp     string            `json:"clientApp"`
		ClientCustom  map[string]string `json:"clientCustom"`
		CognitoID     string            `json:"cognitoId"`
		CognitoPoolID string            `json:"cognitoPoolId"`
		FunctionName  string            `json:"functionName"`
	}
	if res.FunctionError {
		t.Fatalf("function error: %s", res.Payload)
	}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("%s: %v", res.Payload, err)
	}
	if got.RequestID != inv.RequestID || got.FunctionARN != inv.InvokedFunctionARN || got.DeadlineMs != deadline ||
		got.TraceID != inv.TraceID || got.TenantID != "tenant-7" || got.ClientApp != "App" || got.ClientCustom["k"] != "v" ||
		got.CognitoID != "id-1" || got.CognitoPoolID != "pool-1" || got.FunctionName != "fn" {
		t.Fatalf("context seen by the function: %+v", got)
	}
}

func TestFunctionResponseTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	p := e.startFn("big")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Exactly at the limit passes.
	res, err := e.s.Invoke(ctxTimeout(t, 20*time.Second), newInv("big-1", strconv.Itoa(DefaultMaxResponseBytes)))
	if err != nil {
		t.Fatal(err)
	}
	if res.FunctionError || len(res.Payload) != DefaultMaxResponseBytes || res.ContentType != "application/octet-stream" {
		t.Fatalf("at limit: error=%v len=%d ct=%q", res.FunctionError, len(res.Payload), res.ContentType)
	}
	if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// One byte more is replaced by Lambda's error; aws-lambda-go then exits
	// because its POST was not accepted.
	res, err = e.s.Invoke(ctxTimeout(t, 20*time.Second), newInv("big-2", strconv.Itoa(DefaultMaxResponseBytes+1)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"Function.ResponseSizeTooLarge"}`
	if !res.FunctionError || string(res.Payload) != want || res.ErrorType != "Function.ResponseSizeTooLarge" {
		t.Fatalf("over limit: %+v %s", res, res.Payload)
	}
	p.waitExit(t)
}

func TestFunctionStreamErrorTrailers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.startFn("broken")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("br-1", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"errorMessage":"stream broke","errorType":"errorString"}`
	if !res.FunctionError || string(res.Payload) != want || res.ErrorType != "errorString" {
		t.Fatalf("got %+v %s, want %s", res, res.Payload, want)
	}
	// The failure is not fatal for aws-lambda-go.
	if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestFunctionExitMidInvoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	p := e.startFn("sleep")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ch := e.invokeAsync(ctxTimeout(t, 20*time.Second), newInv("sl-1", `5000`))
	time.Sleep(300 * time.Millisecond)
	p.kill()
	o := waitOutcome(t, ch)
	var exitErr *RuntimeExitError
	if !errors.As(o.err, &exitErr) || exitErr.RequestID != "sl-1" || exitErr.Reason != "signal: killed" {
		t.Fatalf("Invoke: %+v %v", o.res, o.err)
	}
	if got := exitErr.Error(); got != "Runtime exited with error: signal: killed" {
		t.Fatalf("message %q", got)
	}
}

// TestFunctionTimeoutThenReset follows the agent's path after a timeout:
// Invoke returns ctx.Err(), the environment stays busy until the runtime is
// killed and reset, and the new runtime inits and serves again.
func TestFunctionTimeoutThenReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	p := e.startFn("sleep")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := e.s.Invoke(ctx, newInv("to-1", `3000`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Invoke: %v, want deadline exceeded", err)
	}
	if _, err := e.s.Invoke(ctxTimeout(t, time.Second), newInv("to-2", `1`)); !errors.Is(err, ErrBusy) {
		t.Fatalf("Invoke while the timed-out one is held: %v, want ErrBusy", err)
	}
	p.kill()
	e.s.ResetRuntime()
	e.startFn("sleep")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("to-3", `1`))
	if err != nil || string(res.Payload) != `"slept 1"` {
		t.Fatalf("after reset: %v %+v", err, res)
	}
}

// TestFunctionSIGTERMExtension covers aws-lambda-go's internal extension
// (GoLangEnableSIGTERM, registered with no events): it must call event/next
// once for init to complete, and never receives an event.
func TestFunctionSIGTERMExtension(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	p := e.startFn("sigterm")
	if err := e.s.WaitInit(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	e.s.mu.Lock()
	ext := e.s.extByName["GoLangEnableSIGTERM"]
	registered := ext != nil && !ext.external && ext.state == extActive
	e.s.mu.Unlock()
	if !registered {
		t.Fatal("GoLangEnableSIGTERM is not registered and active")
	}
	res, err := e.s.Invoke(ctxTimeout(t, 10*time.Second), newInv("st-1", `{"x":1}`))
	if err != nil || string(res.Payload) != `{"x":1}` {
		t.Fatalf("%v %+v", err, res)
	}
	if err := e.s.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Shutdown(ctxTimeout(t, 5*time.Second), "spindown", time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The internal extension dies with its runtime and frees its name.
	p.kill()
	e.s.ResetRuntime()
	e.s.mu.Lock()
	gone := e.s.extByName["GoLangEnableSIGTERM"] == nil
	e.s.mu.Unlock()
	if !gone {
		t.Fatal("internal extension survived its runtime")
	}
}
