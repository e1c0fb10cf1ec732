package invoke_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
)

// TestGoFunction runs an unmodified aws-lambda-go function through the
// SDK's Invoke against one shared server; each subtest uses functions of
// its own.
func TestGoFunction(t *testing.T) {
	h := newHarness(t)
	t.Run("EchoByteExact", func(t *testing.T) { t.Parallel(); testEcho(t, h) })
	t.Run("Errors", func(t *testing.T) { t.Parallel(); testErrors(t, h) })
	t.Run("TimeoutKeepsEnvironment", func(t *testing.T) { t.Parallel(); testTimeout(t, h) })
	t.Run("TimeoutAfterInit", func(t *testing.T) { t.Parallel(); testTimeoutAfterInit(t, h) })
	t.Run("ExitError", func(t *testing.T) { t.Parallel(); testExit(t, h) })
	t.Run("LogTail", func(t *testing.T) { t.Parallel(); testTail(t, h) })
	t.Run("DryRunAndValidation", func(t *testing.T) { t.Parallel(); testDryRun(t, h) })
	t.Run("RuntimeNotOffered", func(t *testing.T) { t.Parallel(); testRuntimeNotOffered(t, h) })
	t.Run("EnvironmentVariables", func(t *testing.T) { t.Parallel(); testEnvironment(t, h) })
	t.Run("Context", func(t *testing.T) { t.Parallel(); testContext(t, h) })
	t.Run("WarmReuse", func(t *testing.T) { t.Parallel(); testWarmReuse(t, h) })
	t.Run("UpdateCode", func(t *testing.T) { t.Parallel(); testUpdateCode(t, h) })
	t.Run("VersionsAndAliases", func(t *testing.T) { t.Parallel(); testVersions(t, h) })
	t.Run("PayloadLimits", func(t *testing.T) { t.Parallel(); testPayloadLimits(t, h) })
	t.Run("ReservedConcurrency", func(t *testing.T) { t.Parallel(); testReserved(t, h) })
	t.Run("ProvisionedConcurrency", func(t *testing.T) { t.Parallel(); testProvisioned(t, h) })
	t.Run("LogsEndpoint", func(t *testing.T) { t.Parallel(); testLogs(t, h) })
}

func testEcho(t *testing.T, h *harness) {
	h.create(t, "echo", nil)
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = "abcdefghij"[i%10]
	}
	payloads := map[string][]byte{
		"unicode": []byte(`{"op":"echo","s":"héllo wörld ✓ 日本語 😀","esc":"\u00e9\"\\/<&>"}`),
		// Whitespace, key order and number spelling are the caller's.
		"verbatim": []byte("{ \"z\" : 1.50 ,\n\t\"op\":\"echo\", \"a\":[1e2, -0, 0.10] }"),
		"5MB":      append(append([]byte(`{"op":"echo","data":"✓`), big...), `"}`...),
	}
	for name, p := range payloads {
		r := h.invokeOK(t, "echo", p)
		if !bytes.Equal(r.Payload, p) {
			t.Errorf("%s: echo changed the payload (%d bytes in, %d out): %.200q", name, len(p), len(r.Payload), r.Payload)
		}
		if r.StatusCode != 200 || aws.ToString(r.ExecutedVersion) != "$LATEST" {
			t.Errorf("%s: status %d, executed version %q; want 200, $LATEST", name, r.StatusCode, aws.ToString(r.ExecutedVersion))
		}
	}
	// The request id of the answer is the one the function saw.
	r := h.invokeOK(t, "echo", op("context"))
	var c struct{ RequestID string }
	if err := json.Unmarshal(r.Payload, &c); err != nil {
		t.Fatal(err)
	}
	if r.RequestID == "" || c.RequestID != r.RequestID {
		t.Errorf("x-amzn-RequestId %q, function saw %q", r.RequestID, c.RequestID)
	}
}

func testErrors(t *testing.T, h *harness) {
	h.create(t, "errors", nil)
	r := h.invoke(t, "errors", []byte(`{"op":"error","msg":"boom: it \"failed\" ✗"}`))
	if r.StatusCode != 200 || aws.ToString(r.FunctionError) != "Unhandled" {
		t.Errorf("error: status %d, FunctionError %q; want 200 Unhandled", r.StatusCode, aws.ToString(r.FunctionError))
	}
	if want := `{"errorMessage":"boom: it \"failed\" ✗","errorType":"errorString"}`; string(r.Payload) != want {
		t.Errorf("error payload\n got %s\nwant %s", r.Payload, want)
	}
	before := decodeState(t, h.invokeOK(t, "errors", op("count")))

	r = h.invoke(t, "errors", []byte(`{"op":"panic","msg":"kaboom"}`))
	if aws.ToString(r.FunctionError) != "Unhandled" {
		t.Errorf("panic: FunctionError %q, want Unhandled", aws.ToString(r.FunctionError))
	}
	var p struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
		StackTrace   []struct {
			Path  string `json:"path"`
			Line  int    `json:"line"`
			Label string `json:"label"`
		} `json:"stackTrace"`
	}
	if err := json.Unmarshal(r.Payload, &p); err != nil {
		t.Fatalf("panic payload %s: %v", r.Payload, err)
	}
	if p.ErrorMessage != "kaboom" || p.ErrorType != "string" || len(p.StackTrace) == 0 {
		t.Errorf("panic payload %s: want aws-lambda-go's {errorMessage: kaboom, errorType: string, stackTrace: [...]}", r.Payload)
	}
	// aws-lambda-go exits after a panic; the next invocation starts a new
	// runtime process in the same environment.
	after := decodeState(t, h.invokeOK(t, "errors", op("count")))
	if after.Count != 1 || after.Pid == before.Pid || after.Stream != before.Stream {
		t.Errorf("after panic: %+v, before %+v; want a fresh runtime (count 1, new pid) in the same environment", after, before)
	}
}

func timeoutPayload(id string, secs string) string {
	return `{"errorType":"Sandbox.Timedout","errorMessage":"RequestId: ` + id + ` Error: Task timed out after ` + secs + ` seconds"}`
}

// testTimeoutAfterInit: a cold start's timeout starts when init is over,
// as in Lambda: an init longer than the timeout does not time the first
// invocation out, and its deadline lies a timeout beyond the end of init.
// The first invocation travels to the agent with Start (env.StartInvoke)
// unless its payload is large, so both ways are run. Its START line is
// the tail's first, after the init's own output.
func testTimeoutAfterInit(t *testing.T, h *harness) {
	for _, tc := range []struct {
		name string
		pad  int
	}{{"slowinit", 0}, {"slowinit-big", 100 << 10}} {
		h.create(t, tc.name, nil, func(in *lambda.CreateFunctionInput) {
			in.Timeout = aws.Int32(1)
			in.Environment = &types.Environment{Variables: map[string]string{"FN_INIT_SLEEP_MS": "1500"}}
		})
		payload := []byte(`{"op":"context","msg":"` + strings.Repeat("x", tc.pad) + `"}`)
		t0 := time.Now()
		r := h.invokeOK(t, tc.name, payload, tail)
		took := time.Since(t0)
		var c fnContext
		if err := json.Unmarshal(r.Payload, &c); err != nil {
			t.Fatalf("%s: %s: %v", tc.name, r.Payload, err)
		}
		if took < 1500*time.Millisecond {
			t.Errorf("%s: cold start took %v; want the 1.5 s init in it", tc.name, took)
		}
		if earliest := t0.Add(2400 * time.Millisecond).UnixMilli(); c.DeadlineMs < earliest {
			t.Errorf("%s: deadline %d ms, %d ms after the request; want about 2500 (init, then the 1 s timeout)", tc.name, c.DeadlineMs, c.DeadlineMs-t0.UnixMilli())
		}
		b, err := base64.StdEncoding.DecodeString(aws.ToString(r.LogResult))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "START RequestId: "+r.RequestID+" ") || !strings.Contains(string(b), "Init Duration: ") {
			t.Errorf("%s: tail %q; want START first and Init Duration in REPORT", tc.name, b)
		}
	}
}

func testTimeout(t *testing.T, h *harness) {
	h.create(t, "timeout", nil, func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(1) })
	before := decodeState(t, h.invokeOK(t, "timeout", []byte(`{"op":"tmp","write":"written before the timeout"}`)))
	t0 := time.Now()
	r := h.invoke(t, "timeout", []byte(`{"op":"sleep","ms":3000}`))
	took := time.Since(t0)
	if aws.ToString(r.FunctionError) != "Unhandled" || r.StatusCode != 200 {
		t.Errorf("timeout: status %d FunctionError %q; want 200 Unhandled", r.StatusCode, aws.ToString(r.FunctionError))
	}
	if want := timeoutPayload(r.RequestID, "1.00"); string(r.Payload) != want {
		t.Errorf("timeout payload\n got %s\nwant %s", r.Payload, want)
	}
	if took < time.Second || took > 2500*time.Millisecond {
		t.Errorf("timed-out invocation took %v; want about 1 s", took)
	}
	after := decodeState(t, h.invokeOK(t, "timeout", op("tmp")))
	if after.Stream != before.Stream {
		t.Errorf("after the timeout the invocation ran in environment %s, before in %s; want the same", after.Stream, before.Stream)
	}
	if after.Tmp != "written before the timeout" {
		t.Errorf("/tmp after the timeout holds %q; want the file written before", after.Tmp)
	}
	if after.Count != 1 || after.Pid == before.Pid {
		t.Errorf("after the timeout: count %d pid %d (before: pid %d); want a restarted runtime (count 1)", after.Count, after.Pid, before.Pid)
	}
}

func testExit(t *testing.T, h *harness) {
	h.create(t, "exit", nil)
	before := decodeState(t, h.invokeOK(t, "exit", op("count")))
	r := h.invoke(t, "exit", []byte(`{"op":"exit","code":3}`))
	want := `{"errorType":"Runtime.ExitError","errorMessage":"RequestId: ` + r.RequestID + ` Error: Runtime exited with error: exit status 3"}`
	if aws.ToString(r.FunctionError) != "Unhandled" || string(r.Payload) != want {
		t.Errorf("exit: FunctionError %q payload\n got %s\nwant %s", aws.ToString(r.FunctionError), r.Payload, want)
	}
	after := decodeState(t, h.invokeOK(t, "exit", op("count")))
	if after.Count != 1 || after.Stream != before.Stream {
		t.Errorf("after exit: %+v (before %+v); want count 1 in the same environment", after, before)
	}
}

// reportRE is AWS's REPORT line; Init Duration only on a cold start.
func reportRE(id string, cold bool) *regexp.Regexp {
	init := ""
	if cold {
		init = `Init Duration: \d+\.\d\d ms\t`
	}
	return regexp.MustCompile(`(?m)^REPORT RequestId: ` + regexp.QuoteMeta(id) +
		`\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\tMax Memory Used: \d+ MB\t` + init + `$`)
}

func decodeTail(t testing.TB, r *result) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(aws.ToString(r.LogResult))
	if err != nil {
		t.Fatalf("LogResult %q: %v", aws.ToString(r.LogResult), err)
	}
	if len(b) > 4096 {
		t.Errorf("log tail is %d bytes; AWS sends at most 4096", len(b))
	}
	return string(b)
}

func testTail(t *testing.T, h *harness) {
	h.create(t, "tail", nil)
	for i, cold := range []bool{true, false} {
		msg := fmt.Sprintf("hello from invocation %d", i)
		r := h.invokeOK(t, "tail", []byte(`{"op":"print","msg":"`+msg+`"}`), tail)
		log := decodeTail(t, r)
		for _, want := range []string{
			"START RequestId: " + r.RequestID + " Version: $LATEST\n",
			"fn v0 op=print request=" + r.RequestID + "\n",
			"\n" + msg + "\n",
			"\nEND RequestId: " + r.RequestID + "\n",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("invocation %d: tail lacks %q:\n%s", i, want, log)
			}
		}
		if !reportRE(r.RequestID, cold).MatchString(log) {
			t.Errorf("invocation %d (cold %v): no REPORT line in AWS's format:\n%q", i, cold, log)
		}
		if strings.Index(log, "START") > strings.Index(log, msg) || strings.Index(log, msg) > strings.Index(log, "END RequestId") {
			t.Errorf("invocation %d: lines out of order:\n%s", i, log)
		}
	}
	// Without Tail there is no log result.
	if r := h.invokeOK(t, "tail", op("count")); r.LogResult != nil {
		t.Errorf("LogResult %q without LogType Tail", aws.ToString(r.LogResult))
	}
	// A long log keeps its last 4 KB: the end of the output and the REPORT.
	long := strings.Repeat("x", 10000) + "THE-END"
	r := h.invokeOK(t, "tail", []byte(`{"op":"print","msg":"`+long+`"}`), tail)
	log := decodeTail(t, r)
	if len(log) != 4096 || !strings.Contains(log, "THE-END\nEND RequestId: "+r.RequestID) || !reportRE(r.RequestID, false).MatchString(log) {
		t.Errorf("long tail: %d bytes, want the last 4096 with the output's end and REPORT:\n%q", len(log), log)
	}
}

// apiError returns the AWS error code and HTTP status of an SDK error.
func apiError(t testing.TB, err error) (string, int) {
	t.Helper()
	if err == nil {
		t.Fatal("call succeeded; want an error")
	}
	var ae smithy.APIError
	var re *awshttp.ResponseError
	if !errors.As(err, &ae) || !errors.As(err, &re) {
		t.Fatalf("error %v is not an AWS API error", err)
	}
	return ae.ErrorCode(), re.HTTPStatusCode()
}

// testRuntimeNotOffered: a runtime AWS has but this node does not run
// (nubo runs no Java) is refused when a function is created with it or
// switched to it, as AWS refuses a runtime it no longer supports; it
// used to be accepted, become Active and fail every invoke.
func testRuntimeNotOffered(t *testing.T, h *harness) {
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String("java"), Role: aws.String(role), Runtime: types.RuntimeJava21,
		Handler: aws.String("example.Handler::handleRequest"), Code: &types.FunctionCode{ZipFile: fnZip(t, "v0")},
	}
	_, err := h.c.CreateFunction(ctx(t), in)
	if code, status := apiError(t, err); code != "InvalidParameterValueException" || status != 400 ||
		!strings.Contains(err.Error(), "The runtime parameter of java21 is not supported on this nubo node; it offers: provided") {
		t.Errorf("create with java21: %s %d (%v); want InvalidParameterValueException 400 naming the runtimes offered", code, status, err)
	}
	if _, err := h.c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("java")}); err == nil {
		t.Error("the refused function exists")
	}
	h.create(t, "to-java", nil)
	_, err = h.c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String("to-java"), Runtime: types.RuntimeJava21})
	if code, status := apiError(t, err); code != "InvalidParameterValueException" || status != 400 {
		t.Errorf("update to java21: %s %d (%v); want InvalidParameterValueException 400", code, status, err)
	}
	// An update that leaves the runtime alone is not refused for it.
	if _, err := h.c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String("to-java"), Description: aws.String("still Go")}); err != nil {
		t.Fatal(err)
	}
	h.waitUpdated(t, "to-java")
	if s := decodeState(t, h.invokeOK(t, "to-java", op("count"))); s.Count != 1 {
		t.Errorf("after the refused update the function counted %d invocations; want 1", s.Count)
	}
}

func testDryRun(t *testing.T, h *harness) {
	h.create(t, "dryrun", nil)
	r := h.invoke(t, "dryrun", op("count"), func(in *lambda.InvokeInput) { in.InvocationType = types.InvocationTypeDryRun })
	if r.StatusCode != 204 || len(r.Payload) != 0 || r.FunctionError != nil {
		t.Errorf("DryRun: status %d payload %q; want 204 and nothing", r.StatusCode, r.Payload)
	}
	// A DryRun runs nothing: the first real invocation is the first one.
	if s := decodeState(t, h.invokeOK(t, "dryrun", op("count"))); s.Count != 1 {
		t.Errorf("after DryRun the function counted %d invocations; want 1", s.Count)
	}
	_, err := h.invokeErr(t, "dryrun", op("count"), func(in *lambda.InvokeInput) { in.InvocationType = "Sometimes" })
	if code, status := apiError(t, err); code != "ValidationException" || status != 400 {
		t.Errorf("invalid invocation type: %s %d; want ValidationException 400", code, status)
	}
	_, err = h.invokeErr(t, "dryrun", op("count"), func(in *lambda.InvokeInput) { in.LogType = "Everything" })
	if code, status := apiError(t, err); code != "ValidationException" || status != 400 {
		t.Errorf("invalid log type: %s %d; want ValidationException 400", code, status)
	}
	_, err = h.invokeErr(t, "dryrun", []byte(`{"op":`))
	if code, status := apiError(t, err); code != "InvalidRequestContentException" || status != 400 {
		t.Errorf("invalid JSON: %s %d; want InvalidRequestContentException 400", code, status)
	}
	_, err = h.invokeErr(t, "no-such-function", op("count"))
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
		t.Errorf("unknown function: %s %d; want ResourceNotFoundException 404", code, status)
	}
	// Named as the caller qualified it.
	_, err = h.invokeErr(t, "no-such-function", op("count"), qualifier("live"))
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 ||
		!strings.HasSuffix(err.Error(), "Function not found: arn:aws:lambda:us-east-1:000000000000:function:no-such-function:live") {
		t.Errorf("unknown function, qualified: %s %d (%v); want ResourceNotFoundException 404 naming no-such-function:live", code, status, err)
	}
}

// TestPendingFunction: invoking a function that is not Active yet is a
// conflict, as on AWS.
func TestPendingFunction(t *testing.T) {
	h := newHarness(t, func(c *serverConfig) { c.TransitionDelay = 3 * time.Second })
	binaries(t)
	_, err := h.c.CreateFunction(ctx(t), &lambda.CreateFunctionInput{
		FunctionName: aws.String("pending"), Role: aws.String(role), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fnZip(t, "v0")},
		Environment: &types.Environment{Variables: map[string]string{runTagVar: runTag}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.invokeErr(t, "pending", op("count"))
	var rc *types.ResourceConflictException
	if !errors.As(err, &rc) {
		t.Fatalf("invoke of a Pending function: %v; want ResourceConflictException", err)
	}
	if _, status := apiError(t, err); status != 409 {
		t.Errorf("status %d, want 409", status)
	}
	if want := "The operation cannot be performed at this time. The function is currently in the following state: Pending"; aws.ToString(rc.Message) != want {
		t.Errorf("message %q, want %q", aws.ToString(rc.Message), want)
	}
}

var logStreamRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$`)

func testEnvironment(t *testing.T, h *harness) {
	h.create(t, "envfn", nil, func(in *lambda.CreateFunctionInput) {
		in.MemorySize = aws.Int32(256)
		in.Environment.Variables["MY_VAR"] = "my value"
		in.Environment.Variables["WITH_EQUALS"] = "a=b=c"
	})
	var env map[string]string
	if err := json.Unmarshal(h.invokeOK(t, "envfn", op("env")).Payload, &env); err != nil {
		t.Fatal(err)
	}
	exact := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        "envfn",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/envfn",
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      region,
		"AWS_DEFAULT_REGION":              region,
		"_HANDLER":                        "bootstrap",
		"TZ":                              ":UTC",
		"LANG":                            "en_US.UTF-8",
		"MY_VAR":                          "my value",
		"WITH_EQUALS":                     "a=b=c",
	}
	for k, want := range exact {
		if got, ok := env[k]; !ok || got != want {
			t.Errorf("%s = %q (set %v); want %q", k, got, ok, want)
		}
	}
	if s := env["AWS_LAMBDA_LOG_STREAM_NAME"]; !logStreamRE.MatchString(s) || !strings.HasPrefix(s, time.Now().UTC().Format("2006/01/02")) {
		t.Errorf("AWS_LAMBDA_LOG_STREAM_NAME = %q; want YYYY/MM/DD/[$LATEST]<32 hex> of today", s)
	}
	if a := env["AWS_LAMBDA_RUNTIME_API"]; !regexp.MustCompile(`^127\.\d+\.\d+\.\d+:\d+$|^169\.254\.\d+\.\d+:\d+$`).MatchString(a) {
		t.Errorf("AWS_LAMBDA_RUNTIME_API = %q; want a host:port", a)
	}
	if !strings.HasPrefix(env["PATH"], "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:") || !strings.HasSuffix(env["PATH"], "/bin") {
		t.Errorf("PATH = %q; want Lambda's, ending in the layers' bin", env["PATH"])
	}
	task, rtDir := env["LAMBDA_TASK_ROOT"], env["LAMBDA_RUNTIME_DIR"]
	if !strings.HasPrefix(task, "/") || !strings.HasPrefix(rtDir, "/") {
		t.Errorf("LAMBDA_TASK_ROOT %q, LAMBDA_RUNTIME_DIR %q; want absolute paths", task, rtDir)
	}
	if ld := env["LD_LIBRARY_PATH"]; !strings.Contains(ld, ":"+task+":") || !strings.Contains(ld, rtDir) || !strings.HasSuffix(ld, "/lib") {
		t.Errorf("LD_LIBRARY_PATH = %q; want Lambda's, with the task root and runtime dir", ld)
	}
	if !isProcessBackend(env) && (task != "/var/task" || rtDir != "/var/runtime") {
		t.Errorf("in a sandbox LAMBDA_TASK_ROOT is %q and LAMBDA_RUNTIME_DIR %q; want /var/task and /var/runtime", task, rtDir)
	}
	for _, k := range []string{"AWS_EXECUTION_ENV", "NUBO_AGENT", "NUBO_AGENT_DEBUG"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s = %q is set for a provided runtime; want it absent", k, v)
		}
	}
	// Nothing of the host's environment leaks in.
	for k := range env {
		if os.Getenv(k) != "" && os.Getenv(k) == env[k] && k != "PATH" && k != "TZ" && k != "LANG" && k != runTagVar && k != "AWS_REGION" && k != "AWS_DEFAULT_REGION" {
			t.Errorf("host variable %s=%q leaked into the function", k, env[k])
		}
	}
}

// isProcessBackend tells, from a function's environment, whether it runs in
// the development process backend: there /tmp is a per-environment host
// directory given by TMPDIR; in a sandbox TMPDIR is unset and /tmp private.
func isProcessBackend(env map[string]string) bool {
	d, ok := env["TMPDIR"]
	return ok && d != "/tmp"
}

type fnContext struct {
	RequestID       string `json:"requestId"`
	InvokedArn      string `json:"invokedArn"`
	DeadlineMs      int64  `json:"deadlineMs"`
	FunctionName    string `json:"functionName"`
	FunctionVersion string `json:"functionVersion"`
	Memory          int    `json:"memory"`
	LogGroup        string `json:"logGroup"`
	LogStream       string `json:"logStream"`
	TraceID         string `json:"traceId"`
	ClientContext   struct {
		Client struct {
			InstallationID string `json:"installation_id"`
			AppTitle       string `json:"app_title"`
			AppVersionCode string `json:"app_version_code"`
			AppPackageName string `json:"app_package_name"`
		}
		Env    map[string]string `json:"env"`
		Custom map[string]string `json:"custom"`
	} `json:"clientContext"`
}

var traceRE = regexp.MustCompile(`^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$`)

func testContext(t *testing.T, h *harness) {
	h.create(t, "ctx", nil, func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(7) })
	v := h.publish(t, "ctx")
	if _, err := h.c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("ctx"), Name: aws.String("live"), FunctionVersion: aws.String(v)}); err != nil {
		t.Fatal(err)
	}
	base := "arn:aws:lambda:" + region + ":" + devAcct + ":function:ctx"
	cc := `{"client":{"installation_id":"inst-1","app_title":"nubo tests","app_version_code":"7","app_package_name":"dev.nubo.test"},"custom":{"k":"v"},"env":{"platform":"linux"}}`
	for _, tc := range []struct {
		name, qualifier, arn, version string
	}{
		{"unqualified", "", base, "$LATEST"},
		{"$LATEST", "$LATEST", base + ":$LATEST", "$LATEST"},
		{"alias", "live", base + ":live", "1"},
		{"version", "1", base + ":1", "1"},
		{"arn", "", base, "$LATEST"},
	} {
		name := "ctx"
		if tc.name == "arn" {
			name = base
		}
		before := time.Now()
		r := h.invokeOK(t, name, op("context"), func(in *lambda.InvokeInput) {
			if tc.qualifier != "" {
				in.Qualifier = aws.String(tc.qualifier)
			}
			in.ClientContext = aws.String(base64.StdEncoding.EncodeToString([]byte(cc)))
		})
		after := time.Now()
		var c fnContext
		if err := json.Unmarshal(r.Payload, &c); err != nil {
			t.Fatalf("%s: %s: %v", tc.name, r.Payload, err)
		}
		if c.RequestID != r.RequestID || c.InvokedArn != tc.arn {
			t.Errorf("%s: request id %q (answer %q), invoked ARN %q; want %q", tc.name, c.RequestID, r.RequestID, c.InvokedArn, tc.arn)
		}
		if c.FunctionName != "ctx" || c.FunctionVersion != tc.version || c.Memory != 128 || aws.ToString(r.ExecutedVersion) != tc.version {
			t.Errorf("%s: function %q version %q memory %d, executed %q; want ctx %s 128", tc.name, c.FunctionName, c.FunctionVersion, c.Memory, aws.ToString(r.ExecutedVersion), tc.version)
		}
		if c.LogGroup != "/aws/lambda/ctx" || !strings.Contains(c.LogStream, "/["+tc.version+"]") {
			t.Errorf("%s: log group %q stream %q", tc.name, c.LogGroup, c.LogStream)
		}
		lo, hi := before.Add(7*time.Second).UnixMilli()-50, after.Add(7*time.Second).UnixMilli()+50
		if c.DeadlineMs < lo || c.DeadlineMs > hi {
			t.Errorf("%s: deadline %d; want now+7s, in [%d, %d]", tc.name, c.DeadlineMs, lo, hi)
		}
		cl := c.ClientContext
		if cl.Client.InstallationID != "inst-1" || cl.Client.AppTitle != "nubo tests" || cl.Client.AppVersionCode != "7" ||
			cl.Client.AppPackageName != "dev.nubo.test" || cl.Custom["k"] != "v" || cl.Env["platform"] != "linux" {
			t.Errorf("%s: client context %+v; want %s", tc.name, cl, cc)
		}
		if !traceRE.MatchString(c.TraceID) {
			t.Errorf("%s: _X_AMZN_TRACE_ID %q", tc.name, c.TraceID)
		}
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("not json"))} {
		_, err := h.invokeErr(t, "ctx", op("context"), func(in *lambda.InvokeInput) { in.ClientContext = aws.String(bad) })
		if code, status := apiError(t, err); code != "InvalidParameterValueException" || status != 400 {
			t.Errorf("client context %q: %s %d; want InvalidParameterValueException 400", bad, code, status)
		}
	}
}

func testWarmReuse(t *testing.T, h *harness) {
	h.create(t, "warm", nil)
	first := decodeState(t, h.invokeOK(t, "warm", []byte(`{"op":"tmp","write":"kept"}`)))
	second := decodeState(t, h.invokeOK(t, "warm", op("count")))
	if first.Count != 1 || second.Count != 2 || second.Stream != first.Stream || second.Pid != first.Pid || second.Tmp != "kept" {
		t.Errorf("sequential invocations: %+v then %+v; want counts 1, 2 in one process, /tmp kept", first, second)
	}

	h.create(t, "concurrent", nil)
	const n = 4
	var wg sync.WaitGroup
	states := make([]fnState, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.invokeErr(t, "concurrent", []byte(`{"op":"sleep","ms":300}`))
			if err == nil && r.FunctionError != nil {
				err = fmt.Errorf("function error: %s", r.Payload)
			}
			if err == nil {
				err = json.Unmarshal(r.Payload, &states[i])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	streams := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("concurrent invocation %d: %v", i, errs[i])
			continue
		}
		streams[states[i].Stream] = true
	}
	if len(streams) != n {
		t.Errorf("%d concurrent invocations ran in %d environments (%v); want one each", n, len(streams), streams)
	}
}

func testUpdateCode(t *testing.T, h *harness) {
	h.create(t, "upd", fnZip(t, "A"))
	var env map[string]string
	if err := json.Unmarshal(h.invokeOK(t, "upd", op("env")).Payload, &env); err != nil {
		t.Fatal(err)
	}
	old := decodeState(t, h.invokeOK(t, "upd", op("count")))
	if old.Version != "A" {
		t.Fatalf("first deployment reports %q", old.Version)
	}
	h.updateCode(t, "upd", fnZip(t, "B"))
	cur := decodeState(t, h.invokeOK(t, "upd", op("count")))
	if cur.Version != "B" || cur.Stream == old.Stream || cur.Count != 1 {
		t.Errorf("after UpdateFunctionCode: %+v (before %+v); want code B in a new environment", cur, old)
	}
	// A configuration change retires environments too.
	if _, err := h.c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String("upd"),
		Environment:  &types.Environment{Variables: map[string]string{runTagVar: runTag, "ADDED": "later"}},
	}); err != nil {
		t.Fatal(err)
	}
	h.waitUpdated(t, "upd")
	var env2 map[string]string
	if err := json.Unmarshal(h.invokeOK(t, "upd", op("env")).Payload, &env2); err != nil {
		t.Fatal(err)
	}
	if env2["ADDED"] != "later" || env2["AWS_LAMBDA_LOG_STREAM_NAME"] == cur.Stream {
		t.Errorf("after UpdateFunctionConfiguration: ADDED=%q in stream %s (before: %s); want the new variable in a new environment",
			env2["ADDED"], env2["AWS_LAMBDA_LOG_STREAM_NAME"], cur.Stream)
	}
	// The old environment retires; on the process backend its runtime is a
	// host process we can watch go away.
	if isProcessBackend(env) {
		deadline := time.Now().Add(5 * time.Second)
		for processAlive(old.Pid) {
			if time.Now().After(deadline) {
				t.Errorf("runtime pid %d of the replaced code still runs 5 s after the update", old.Pid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return err == nil && bytes.Contains(b, []byte(runTagVar+"="+runTag))
}

func testVersions(t *testing.T, h *harness) {
	h.create(t, "ver", fnZip(t, "one"))
	v1 := h.publish(t, "ver")
	h.updateCode(t, "ver", fnZip(t, "two"))
	v2 := h.publish(t, "ver")
	if v1 != "1" || v2 != "2" {
		t.Fatalf("published %q and %q; want 1 and 2", v1, v2)
	}
	_, err := h.c.CreateAlias(ctx(t), &lambda.CreateAliasInput{
		FunctionName: aws.String("ver"), Name: aws.String("split"), FunctionVersion: aws.String("1"),
		RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.5}},
	})
	if err != nil {
		t.Fatal(err)
	}
	code := map[string]string{"1": "one", "2": "two", "$LATEST": "two"}
	for _, q := range []string{"1", "2", "$LATEST"} {
		r := h.invokeOK(t, "ver", op("count"), qualifier(q))
		if s := decodeState(t, r); aws.ToString(r.ExecutedVersion) != q || s.Version != code[q] {
			t.Errorf("qualifier %s: executed %q running code %q; want %s, %s", q, aws.ToString(r.ExecutedVersion), s.Version, q, code[q])
		}
	}
	seen := map[string]int{}
	const n = 60
	for range n {
		r := h.invokeOK(t, "ver", op("count"), qualifier("split"))
		ev := aws.ToString(r.ExecutedVersion)
		if s := decodeState(t, r); code[ev] != s.Version {
			t.Fatalf("executed version %q but code %q ran", ev, s.Version)
		}
		seen[ev]++
	}
	// Binomial(60, 0.5): fewer than 12 of either happens with p < 1e-5.
	if seen["1"]+seen["2"] != n || seen["1"] < 12 || seen["2"] < 12 {
		t.Errorf("alias with 50%% to version 2 ran %v over %d invocations; want both about half", seen, n)
	}
	for _, q := range []string{"9", "nope"} {
		_, err := h.invokeErr(t, "ver", op("count"), qualifier(q))
		if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
			t.Errorf("qualifier %s: %s %d; want ResourceNotFoundException 404", q, code, status)
		}
	}
}

func testPayloadLimits(t *testing.T, h *harness) {
	h.create(t, "limits", nil)
	const limit = 6291456
	mk := func(size int) []byte {
		head, tailS := `{"op":"echo","d":"`, `"}`
		return []byte(head + strings.Repeat("p", size-len(head)-len(tailS)) + tailS)
	}
	if r := h.invokeOK(t, "limits", mk(limit)); len(r.Payload) != limit {
		t.Errorf("a payload of exactly %d bytes came back as %d bytes", limit, len(r.Payload))
	}
	_, err := h.invokeErr(t, "limits", mk(limit+1))
	if code, status := apiError(t, err); code != "RequestEntityTooLargeException" || status != 413 {
		t.Errorf("payload of %d bytes: %s %d; want RequestEntityTooLargeException 413", limit+1, code, status)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorMessage() != "Request must be smaller than 6291456 bytes for the InvokeFunction operation" {
		t.Errorf("413 message %q", ae.ErrorMessage())
	}
	r := h.invoke(t, "limits", []byte(`{"op":"big","n":6291556}`))
	want := `{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"Function.ResponseSizeTooLarge"}`
	if aws.ToString(r.FunctionError) != "Unhandled" || string(r.Payload) != want {
		t.Errorf("oversized response: FunctionError %q payload %.300s; want Unhandled %s", aws.ToString(r.FunctionError), r.Payload, want)
	}
	// The largest allowed response passes (6 MiB + 100 bytes).
	if r := h.invokeOK(t, "limits", []byte(`{"op":"big","n":6291554}`)); len(r.Payload) != 6291556 {
		t.Errorf("response of 6291556 bytes came back as %d", len(r.Payload))
	}
}

func testReserved(t *testing.T, h *harness) {
	h.create(t, "res0", nil)
	if _, err := h.c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("res0"), ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := h.invokeErr(t, "res0", op("count"))
		var tm *types.TooManyRequestsException
		if !errors.As(err, &tm) || tm.Reason != types.ThrottleReasonReservedFunctionConcurrentInvocationLimitExceeded {
			t.Fatalf("reserved 0: %v; want TooManyRequestsException ReservedFunctionConcurrentInvocationLimitExceeded", err)
		}
		if _, status := apiError(t, err); status != 429 {
			t.Errorf("reserved 0: status %d, want 429", status)
		}
	}
	raw, err := h.signedRequest(t, "POST", invokePath("res0"), op("count"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var body awsError
	if err := json.Unmarshal(raw.Body, &body); err != nil || raw.Status != 429 ||
		raw.Header.Get("X-Amzn-Errortype") != "TooManyRequestsException" ||
		body.Reason != "ReservedFunctionConcurrentInvocationLimitExceeded" || body.Type != "User" || body.Message != "Rate Exceeded." {
		t.Errorf("raw throttle answer: %d %s %s", raw.Status, raw.Header.Get("X-Amzn-Errortype"), raw.Body)
	}

	if _, err := h.c.DeleteFunctionConcurrency(ctx(t), &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("res0")}); err != nil {
		t.Fatal(err)
	}
	h.invokeOK(t, "res0", op("count"))

	h.create(t, "res1", nil)
	if _, err := h.c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("res1"), ReservedConcurrentExecutions: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.invokeErr(t, "res1", []byte(`{"op":"sleep","ms":500}`))
			if err == nil && r.FunctionError != nil {
				err = fmt.Errorf("function error %s", r.Payload)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	ok, throttled := 0, 0
	for _, err := range errs {
		var tm *types.TooManyRequestsException
		switch {
		case err == nil:
			ok++
		case errors.As(err, &tm) && tm.Reason == types.ThrottleReasonReservedFunctionConcurrentInvocationLimitExceeded:
			throttled++
		default:
			t.Errorf("reserved 1: %v", err)
		}
	}
	if ok != 1 || throttled != 1 {
		t.Errorf("reserved 1, two concurrent invocations: %d succeeded, %d throttled; want 1 and 1", ok, throttled)
	}
	// Once the first is done, the slot is free again.
	h.invokeOK(t, "res1", op("count"))
}

func testProvisioned(t *testing.T, h *harness) {
	h.create(t, "prov", nil)
	v := h.publish(t, "prov")
	out, err := h.c.PutProvisionedConcurrencyConfig(ctx(t), &lambda.PutProvisionedConcurrencyConfigInput{
		FunctionName: aws.String("prov"), Qualifier: aws.String(v), ProvisionedConcurrentExecutions: aws.Int32(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(out.RequestedProvisionedConcurrentExecutions) != 1 {
		t.Errorf("requested %d", aws.ToInt32(out.RequestedProvisionedConcurrentExecutions))
	}
	// The provisioner reconciles at once and then every 5 s; on a loaded
	// machine (every package's tests at once) one round can take seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := h.c.GetProvisionedConcurrencyConfig(ctx(t), &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("prov"), Qualifier: aws.String(v)})
		if err != nil {
			t.Fatal(err)
		}
		if g.Status == types.ProvisionedConcurrencyStatusEnumReady {
			if aws.ToInt32(g.AllocatedProvisionedConcurrentExecutions) != 1 || aws.ToInt32(g.AvailableProvisionedConcurrentExecutions) != 1 {
				t.Errorf("READY with allocated %d available %d; want 1 and 1",
					aws.ToInt32(g.AllocatedProvisionedConcurrentExecutions), aws.ToInt32(g.AvailableProvisionedConcurrentExecutions))
			}
			break
		}
		if g.Status == types.ProvisionedConcurrencyStatusEnumFailed || time.Now().After(deadline) {
			t.Fatalf("provisioned concurrency status %s (%s)", g.Status, aws.ToString(g.StatusReason))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The first invocation finds an environment initialised ahead of it.
	r := h.invokeOK(t, "prov", op("env"), qualifier(v), tail)
	log := decodeTail(t, r)
	if !reportRE(r.RequestID, false).MatchString(log) {
		t.Errorf("first invocation of a provisioned version was a cold start:\n%s", log)
	}
	var env map[string]string
	if err := json.Unmarshal(r.Payload, &env); err != nil {
		t.Fatal(err)
	}
	if env["AWS_LAMBDA_INITIALIZATION_TYPE"] != "provisioned-concurrency" {
		t.Errorf("AWS_LAMBDA_INITIALIZATION_TYPE = %q in a provisioned environment", env["AWS_LAMBDA_INITIALIZATION_TYPE"])
	}
}

func testLogs(t *testing.T, h *harness) {
	h.create(t, "logfn", nil)
	// No invocation yet, so no log group: 404, as CloudWatch Logs answers.
	raw, err := h.signedRequest(t, "GET", "/nubo/v1/logs?function=logfn", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Status != http.StatusNotFound || !strings.Contains(string(raw.Body), "The specified log group does not exist.") {
		t.Errorf("logs of a function never run: %d %s; want 404 and the group named missing", raw.Status, raw.Body)
	}
	var ids []string
	for i := range 2 {
		r := h.invokeOK(t, "logfn", []byte(fmt.Sprintf(`{"op":"print","msg":"log line %d of %s"}`, i, runTag)))
		ids = append(ids, r.RequestID)
	}
	var want []string
	for i, id := range ids {
		want = append(want, "\tSTART RequestId: "+id+" Version: $LATEST\n", fmt.Sprintf("\tlog line %d of %s\n", i, runTag),
			"\tEND RequestId: "+id+"\n", "\tREPORT RequestId: "+id+"\tDuration: ")
	}
	body := h.waitLog(t, "logfn", want...)
	lineRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}\t`)
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if !lineRE.MatchString(l) {
			t.Errorf("log line %q is not <time>\\t<stream>\\t<message>", l)
		}
	}
}

// waitLog reads a function's logs through nubo's signed logs endpoint (what
// `nubo logs` does) until they contain every want, and returns them.
func (h *harness) waitLog(t testing.TB, fn string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		raw, err := h.signedRequest(t, "GET", "/nubo/v1/logs?function="+fn+"&since=10m&follow=false", nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch raw.Status {
		case http.StatusOK:
		case http.StatusNotFound:
			raw.Body = nil // no event stored yet: no log group yet
		default:
			t.Fatalf("GET logs: %d %s", raw.Status, raw.Body)
		}
		var missing []string
		for _, w := range want {
			if !strings.Contains(string(raw.Body), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return string(raw.Body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs of %s lack %q:\n%s", fn, missing, raw.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
