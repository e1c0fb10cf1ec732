package invoke_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// managedRuntime returns the id nubo offers for a family on this host
// (python3.N, nodejsNN.x), the way the server detects it; it skips (fails
// in CI) when the interpreter is missing.
func managedRuntime(t *testing.T, family, binary string) string {
	t.Helper()
	testutil.RequiresBinary(t, binary)
	rts, err := runtimes.Detect("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range rts {
		if rt.Family == family {
			return rt.ID
		}
	}
	t.Fatalf("%s is on PATH but nubo offers no %s runtime", binary, family)
	return ""
}

// dirZip zips the files of a testdata directory.
func dirZip(t *testing.T, dir string) []byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []ziptest.File
	for _, e := range ents {
		if e.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, ziptest.File{Name: e.Name(), Body: b})
		}
	}
	return ziptest.Zip(t, files...)
}

// managedError is the error document of nubo's runtime clients.
type managedError struct {
	ErrorType    string   `json:"errorType"`
	ErrorMessage string   `json:"errorMessage"`
	StackTrace   []string `json:"stackTrace"`
	Trace        []string `json:"trace"`
	RequestID    string   `json:"requestId"`
}

func decodeError(t *testing.T, r *result) managedError {
	t.Helper()
	if aws.ToString(r.FunctionError) != "Unhandled" || r.StatusCode != 200 {
		t.Errorf("status %d FunctionError %q; want 200 Unhandled (payload %s)", r.StatusCode, aws.ToString(r.FunctionError), r.Payload)
	}
	var e managedError
	if err := json.Unmarshal(r.Payload, &e); err != nil {
		t.Fatalf("error payload %s: %v", r.Payload, err)
	}
	return e
}

// managedCase is what the Python and Node suites have in common: handler
// names per behaviour and the errors their runtime words.
type managedCase struct {
	prefix, runtime string
	zip             []byte
	handlers        map[string]string // behaviour → handler
	importMsgPrefix string
	notFoundMsg     string
}

// TestManagedRuntimes runs Python and Node.js handlers through nubo's own
// runtime interface clients.
func TestManagedRuntimes(t *testing.T) {
	h := newHarness(t)
	t.Run("Python", func(t *testing.T) {
		t.Parallel()
		rt := managedRuntime(t, runtimes.FamilyPython, "python3")
		testManaged(t, h, managedCase{
			prefix: "py", runtime: rt, zip: dirZip(t, "testdata/python"),
			handlers: map[string]string{
				"echo": "app.echo", "fail": "app.fail", "sleep": "app.sleep", "ctx": "app.ctx",
				"import": "broken.handler", "notfound": "app.nope",
			},
			importMsgPrefix: "Unable to import module 'broken': No module named 'nubo_no_such_module'",
			notFoundMsg:     "Handler 'nope' missing on module 'app'",
		})
		// Lambda's Python runtimes include boto3: a function imports it
		// without bundling it.
		h.create(t, "py-sdk", dirZip(t, "testdata/python"), func(in *lambda.CreateFunctionInput) {
			in.Runtime = types.Runtime(rt)
			in.Handler = aws.String("app.sdk")
			// boto3 is imported in the handler, after init, so under the
			// memory size's CPU quota: at 128 MB (7 % of a core) its
			// 0.5-0.7 s of CPU (import and client, measured outside nubo) came
			// near the 5 s timeout on a busy machine.
			in.MemorySize, in.Timeout = aws.Int32(1769), aws.Int32(30)
		})
		var sdk struct {
			Missing          bool
			Version, Service string
		}
		if r := h.invokeOK(t, "py-sdk", []byte(`{}`)); json.Unmarshal(r.Payload, &sdk) != nil {
			t.Fatalf("sdk answered %s", r.Payload)
		}
		testutil.Requires(t, !sdk.Missing, "boto3 for the python runtime (scripts/deps.sh --test installs python3-boto3)")
		if sdk.Version == "" || sdk.Service != "lambda" {
			t.Errorf("boto3 in a Python function: %+v", sdk)
		}
	})
	t.Run("Node", func(t *testing.T) {
		t.Parallel()
		rt := managedRuntime(t, runtimes.FamilyNodejs, "node")
		c := managedCase{
			prefix: "node", runtime: rt, zip: dirZip(t, "testdata/node"),
			handlers: map[string]string{
				"echo": "index.asyncHandler", "fail": "index.fail", "sleep": "index.sleep", "ctx": "index.ctx",
				"import": "broken.handler", "notfound": "index.nope",
			},
			importMsgPrefix: "Error: Cannot find module 'nubo-no-such-module'",
			notFoundMsg:     "index.nope is undefined or not exported",
		}
		testManaged(t, h, c)
		h.create(t, "node-callback", c.zip, managedFn(c, "index.callbackHandler"))
		r := h.invokeOK(t, "node-callback", []byte(`{"via":"callback"}`))
		if want := `{"callback":{"via":"callback"},"id":"` + r.RequestID + `"}`; string(r.Payload) != want {
			t.Errorf("callback handler answered %s; want %s", r.Payload, want)
		}
	})
}

func managedFn(c managedCase, handler string) func(*lambda.CreateFunctionInput) {
	return func(in *lambda.CreateFunctionInput) {
		in.Runtime = types.Runtime(c.runtime)
		in.Handler = aws.String(handler)
	}
}

func testManaged(t *testing.T, h *harness, c managedCase) {
	name := func(b string) string { return c.prefix + "-" + b }
	for _, b := range []string{"echo", "fail", "ctx", "import", "notfound"} {
		h.create(t, name(b), c.zip, managedFn(c, c.handlers[b]))
	}
	h.create(t, name("sleep"), c.zip, managedFn(c, c.handlers["sleep"]), func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(1) })

	// Sync (Python) or async (Node) handler; globals persist while warm.
	for i, want := range []string{`{"event":{"k":"v ✓"},"count":1}`, `{"event":{"k":"v ✓"},"count":2}`} {
		r := h.invokeOK(t, name("echo"), []byte(`{"k":"v ✓"}`), tail)
		var got, exp any
		_ = json.Unmarshal(r.Payload, &got)
		_ = json.Unmarshal([]byte(want), &exp)
		if !jsonEqual(got, exp) {
			t.Errorf("echo %d answered %s; want %s", i, r.Payload, want)
		}
		if log := decodeTail(t, r); !strings.Contains(log, c.prefix+" ") || !strings.Contains(log, r.RequestID) ||
			!reportRE(r.RequestID, i == 0).MatchString(log) {
			t.Errorf("echo %d tail lacks the handler's line or REPORT:\n%s", i, log)
		}
	}

	r := h.invoke(t, name("fail"), []byte(`{"msg":"x"}`))
	e := decodeError(t, r)
	wantType, wantMsg := "ValueError", "bad value: x"
	trace := e.StackTrace
	if c.prefix == "node" {
		wantType, wantMsg, trace = "TypeError", "bad type: x", e.Trace
	}
	if e.ErrorType != wantType || e.ErrorMessage != wantMsg || len(trace) == 0 {
		t.Errorf("exception: %s; want errorType %s, errorMessage %q and a stack trace", r.Payload, wantType, wantMsg)
	}
	if c.prefix == "py" && (e.RequestID != r.RequestID || !strings.Contains(strings.Join(trace, ""), "app.py")) {
		t.Errorf("python exception: %s; want requestId %s and app.py in stackTrace", r.Payload, r.RequestID)
	}
	if c.prefix == "node" && trace[0] != "TypeError: bad type: x" {
		t.Errorf("node exception trace starts %q", trace[0])
	}

	for _, b := range []string{"import", "notfound"} {
		// The init failure is reported on every invocation (init reruns).
		for i := range 2 {
			r := h.invoke(t, name(b), []byte(`{}`))
			e := decodeError(t, r)
			wantType := map[string]string{"import": "Runtime.ImportModuleError", "notfound": "Runtime.HandlerNotFound"}[b]
			wantMsg := map[string]string{"import": c.importMsgPrefix, "notfound": c.notFoundMsg}[b]
			if e.ErrorType != wantType || !strings.HasPrefix(e.ErrorMessage, wantMsg) {
				t.Errorf("%s, invocation %d: %s; want %s %q", b, i, r.Payload, wantType, wantMsg)
			}
		}
	}

	t0 := time.Now()
	r = h.invoke(t, name("sleep"), []byte(`{}`))
	if aws.ToString(r.FunctionError) != "Unhandled" || string(r.Payload) != timeoutPayload(r.RequestID, "1.00") || time.Since(t0) > 2500*time.Millisecond {
		t.Errorf("timeout after %v: %q %s", time.Since(t0), aws.ToString(r.FunctionError), r.Payload)
	}

	var ctxOut map[string]any
	r = h.invokeOK(t, name("ctx"), []byte(`{}`))
	if err := json.Unmarshal(r.Payload, &ctxOut); err != nil {
		t.Fatal(err)
	}
	keys := map[string][2]string{ // behaviour → python key, node key
		"name": {"function_name", "functionName"}, "version": {"function_version", "functionVersion"},
		"id": {"aws_request_id", "awsRequestId"}, "arn": {"invoked_function_arn", "invokedFunctionArn"},
		"memory": {"memory_limit_in_mb", "memoryLimitInMB"}, "remaining": {"remaining", "remaining"},
		"execenv": {"execution_env", "executionEnv"}, "handler": {"handler", "handler"},
	}
	get := func(k string) any {
		if c.prefix == "py" {
			return ctxOut[keys[k][0]]
		}
		return ctxOut[keys[k][1]]
	}
	want := map[string]any{
		"name": name("ctx"), "version": "$LATEST", "id": r.RequestID,
		"arn": "arn:aws:lambda:" + region + ":" + devAcct + ":function:" + name("ctx"), "memory": "128",
		"execenv": "AWS_Lambda_" + c.runtime, "handler": c.handlers["ctx"],
	}
	for k, w := range want {
		if got := get(k); got != w {
			t.Errorf("context %s = %v; want %v", k, got, w)
		}
	}
	if rem, ok := get("remaining").(float64); !ok || rem <= 4000 || rem > 5000 {
		t.Errorf("remaining time %v ms at the start of a 5 s invocation", get("remaining"))
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
