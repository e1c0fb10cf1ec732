package invoke_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"github.com/nubo-dev/nubo/internal/server"
	"net/http"
	"strings"
	"testing"
	"time"
)

// validHeaderValue reports whether Go's HTTP client can send v (field
// content: no control characters but tab); other values never reach a
// server through HTTP/1.1.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzInvokeHeaders sends arbitrary X-Amz-Invocation-Type, X-Amz-Log-Type,
// X-Amz-Client-Context and payload bytes through the real HTTP edge, the
// invoker and an environment running the Go test function. The answer must
// be an AWS-shaped error or a well-formed invocation result, never a
// server fault, and an echo must come back byte-exact.
func FuzzInvokeHeaders(f *testing.F) {
	cc := base64.StdEncoding.EncodeToString([]byte(`{"client":{"app_title":"x"},"custom":{"a":"b"}}`))
	for _, s := range []struct{ invType, logType, clientContext, payload string }{
		{"", "", "", `{"op":"echo"}`},
		{"RequestResponse", "Tail", cc, `{"op":"echo","s":"✓ \u0000"}`},
		{"RequestResponse", "None", "", `{"op":"error","msg":"x"}`},
		{"DryRun", "None", "", ``},
		{"Event", "", "", `{"op":"echo"}`},
		{"event", "", "", `{}`},
		{"Sometimes", "Tail", "", `{}`},
		{"RequestResponse", "tail", "", `{}`},
		{"", "", "!!!not base64", `{}`},
		{"", "", base64.StdEncoding.EncodeToString([]byte("not json")), `{}`},
		{"", "", strings.Repeat("A", 3584), `{}`},
		{"", "", "", `{"op":`},
		{"", "", "", `[1,2,3]`},
		{"", "", "", `"just a string"`},
		{"", "", "", `null`},
		{"", "", "", "\xff\xfe"},
		{"", "", "", ""},
	} {
		f.Add(s.invType, s.logType, s.clientContext, []byte(s.payload))
	}
	// The process backend: fuzz workers are killed when the fuzzing time
	// is up, with no test cleanup, so they must hold nothing (mounts,
	// links, cgroups) that only a cleanup would release.
	h := newHarness(f, func(c *server.Config) { c.Isolation = "process" })
	h.create(f, "fuzz", nil)
	f.Fuzz(func(t *testing.T, invType, logType, clientContext string, payload []byte) {
		if !validHeaderValue(invType) || !validHeaderValue(logType) || !validHeaderValue(clientContext) {
			t.Skip("not sendable as an HTTP header")
		}
		// The function must not sleep, exit or answer megabytes: only its
		// echo and error operations (or none) are exercised. The test
		// decodes the op exactly as the function does.
		var ev struct{ Op string }
		_ = json.Unmarshal(payload, &ev)
		if ev.Op != "" && ev.Op != "echo" && ev.Op != "error" {
			t.Skip("operation not exercised by the fuzzer")
		}
		hdr := map[string]string{}
		for k, v := range map[string]string{"X-Amz-Invocation-Type": invType, "X-Amz-Log-Type": logType, "X-Amz-Client-Context": clientContext} {
			if v != "" {
				hdr[k] = v
			}
		}
		type answer struct {
			raw *rawResponse
			err error
		}
		done := make(chan answer, 1)
		go func() {
			raw, err := h.signedRequest(t, "POST", invokePath("fuzz"), payload, nil, hdr)
			done <- answer{raw, err}
		}()
		var raw *rawResponse
		select {
		case a := <-done:
			if a.err != nil {
				t.Fatalf("request: %v", a.err)
			}
			raw = a.raw
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer within 10 s for type %q log %q context %q payload %q", invType, logType, clientContext, payload)
		}
		typ := strings.TrimSpace(invType)
		switch {
		case raw.Status == http.StatusOK:
			if typ != "" && typ != "RequestResponse" {
				t.Fatalf("200 for invocation type %q", invType)
			}
			if raw.Header.Get("X-Amz-Executed-Version") != "$LATEST" {
				t.Fatalf("200 without X-Amz-Executed-Version: %v", raw.Header)
			}
			fe := raw.Header.Get("X-Amz-Function-Error")
			if fe != "" && fe != "Unhandled" {
				t.Fatalf("X-Amz-Function-Error %q", fe)
			}
			if ev.Op == "echo" && (fe != "" || !bytes.Equal(raw.Body, payload)) {
				t.Fatalf("echo of %q answered %q (function error %q)", payload, raw.Body, fe)
			}
			if ev.Op != "echo" && fe != "Unhandled" {
				t.Fatalf("op %q succeeded: %q", ev.Op, raw.Body)
			}
			if lr, ok := raw.Header["X-Amz-Log-Result"]; ok {
				b, err := base64.StdEncoding.DecodeString(lr[0])
				if err != nil || len(b) > 4096 || strings.TrimSpace(logType) != "Tail" {
					t.Fatalf("X-Amz-Log-Result %q for log type %q", lr[0], logType)
				}
			}
		case raw.Status == http.StatusNoContent && typ == "DryRun",
			raw.Status == http.StatusAccepted && typ == "Event":
			if len(raw.Body) != 0 {
				t.Fatalf("%d with a body %q", raw.Status, raw.Body)
			}
		case raw.Status >= 400 && raw.Status < 500,
			// Event invocations need the asynchronous queue; a server
			// without one says so with an AWS-shaped 503.
			raw.Status == http.StatusServiceUnavailable && typ == "Event":
			var e struct {
				Message  string `json:"message"`
				MessageU string `json:"Message"`
			}
			if raw.Header.Get("X-Amzn-Errortype") == "" || json.Unmarshal(raw.Body, &e) != nil || e.Message+e.MessageU == "" {
				t.Fatalf("%d is not an AWS-shaped error: %v %q", raw.Status, raw.Header, raw.Body)
			}
		default:
			t.Fatalf("status %d for type %q log %q context %q payload %q: %q", raw.Status, invType, logType, clientContext, payload, raw.Body)
		}
	})
}
