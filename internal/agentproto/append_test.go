package agentproto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
)

// checkAppend fails t unless h's appended JSON is json.Marshal's, or it
// declines; wantFast says it must not decline.
func checkAppend(t *testing.T, h appender, wantFast bool) {
	t.Helper()
	want, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := h.appendJSON(nil)
	if !ok {
		if wantFast {
			t.Fatalf("%+v: declined, want %s", h, want)
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v:\nappended %s\nmarshal  %s", h, got, want)
	}
}

func TestAppendMatchesMarshal(t *testing.T) {
	for _, inv := range []*Invoke{
		{},
		{RequestID: "0f6f4585-3b1e-4c52-9d7a-2b64f1e0c9aa", DeadlineMs: 1764270000123,
			InvokedFunctionARN: "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST",
			TraceID:            "Root=1-65a1b2c3-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0",
			TenantID:           "t-1", TimeoutMs: 3000, Stream: true},
		{RequestID: "r", DeadlineMs: -1, CognitoIdentity: "id", TimeoutMs: 1},
	} {
		checkAppend(t, inv, true)
	}
	for _, res := range []*Result{
		{},
		{RequestID: "r1", FunctionError: true, ErrorType: "Runtime.ExitError", ContentType: "application/json", Reset: true},
		{RequestID: "r2", ContentType: "text/plain"},
	} {
		checkAppend(t, res, true)
	}
	// What needs escaping, or a float, goes to json.Marshal.
	for _, h := range []appender{
		&Invoke{RequestID: "r", ClientContext: `{"custom":{"a":"b"}}`},
		&Invoke{RequestID: "a<b"},
		&Invoke{RequestID: "é"},
		&Result{RequestID: "r", ErrorType: "x\ny"},
		&Result{RequestID: "r", InitDurationMs: 12.5},
	} {
		if _, ok := h.appendJSON(nil); ok {
			t.Errorf("%+v: appended, want json.Marshal", h)
		}
	}
}

// TestSendAppendsHeader: Send writes the appended header when there is
// one, json.Marshal's otherwise, and either decodes to what was sent.
func TestSendAppendsHeader(t *testing.T) {
	for _, tc := range []struct {
		inv  *Invoke
		fast bool
	}{
		{&Invoke{RequestID: "r1", DeadlineMs: 42, InvokedFunctionARN: "arn", TimeoutMs: 7}, true},
		{&Invoke{RequestID: "r2", ClientContext: `{"k":"<v>"}`}, false},
	} {
		want, _ := json.Marshal(tc.inv)
		if appended, ok := tc.inv.appendJSON(nil); ok != tc.fast || ok && !bytes.Equal(appended, want) {
			t.Fatalf("%+v: appended %s (%v), want %s (%v)", tc.inv, appended, ok, want, tc.fast)
		}
		var buf bytes.Buffer
		if err := (&Conn{w: &buf}).Send(TInvoke, tc.inv, []byte("p")); err != nil {
			t.Fatal(err)
		}
		f, err := (&Conn{r: bufio.NewReader(&buf)}).Receive()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Header, want) {
			t.Fatalf("header %s, want %s", f.Header, want)
		}
		var got Invoke
		if err := f.Decode(&got); err != nil || got != *tc.inv || string(f.Body) != "p" {
			t.Fatalf("got %+v %q %v, want %+v", got, f.Body, err, *tc.inv)
		}
	}
}

func FuzzAppendMatchesMarshal(f *testing.F) {
	f.Add("r1", int64(42), "arn:aws:lambda:us-east-1:0:function:f", "Root=1-a", "", "", "t", int64(3), true, "Runtime.ExitError", "application/json")
	f.Add("a\"b", int64(-1), "<&>", "\x00", "{}", "é", "\x7f", int64(0), false, "\\", "")
	f.Fuzz(func(t *testing.T, id string, deadline int64, arn, trace, cc, cog, tenant string, timeout int64, flag bool, errType, ct string) {
		checkAppend(t, &Invoke{RequestID: id, DeadlineMs: deadline, InvokedFunctionARN: arn, TraceID: trace,
			ClientContext: cc, CognitoIdentity: cog, TenantID: tenant, TimeoutMs: timeout, Stream: flag}, false)
		checkAppend(t, &Result{RequestID: id, FunctionError: flag, ErrorType: errType, ContentType: ct, Reset: !flag}, false)
	})
}
