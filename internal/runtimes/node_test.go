package runtimes

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

const nodeApp = `let count = 0;

function fail() {
  throw new Error('x');
}

exports.handler = async (event, context) => {
  count++;
  const action = event && event.action;
  if (action === 'throw') fail();
  if (action === 'throwString') throw 'boom';
  if (action === 'circular') { const o = {}; o.self = o; return o; }
  if (action === 'undefined') return undefined;
  console.log('log from', context.awsRequestId, { a: 1 });
  console.error('multi\nline');
  console.warn('warned');
  return {
    count,
    event,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    memoryLimitInMB: context.memoryLimitInMB,
    invokedFunctionArn: context.invokedFunctionArn,
    awsRequestId: context.awsRequestId,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    identity: context.identity === undefined ? 'undefined' : context.identity,
    clientContext: context.clientContext === undefined ? 'undefined' : context.clientContext,
    remaining: context.getRemainingTimeInMillis(),
    waits: context.callbackWaitsForEmptyEventLoop,
    trace: process.env._X_AMZN_TRACE_ID === undefined ? 'undefined' : process.env._X_AMZN_TRACE_ID,
  };
};
`

var isoTime = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`

func TestNodeInvocations(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": nodeApp})
	api := newFakeAPI(t)
	p := startNode(t, api, root, "index.handler")

	got := api.invoke(t, invocation{
		id:            "id-1",
		body:          `{"k":"v"}`,
		trace:         "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
		clientContext: `{"client":{"installation_id":"inst-1"},"custom":{"a":"b"},"env":{"platform":"p"}}`,
		cognito:       `{"cognitoIdentityId":"cid","cognitoIdentityPoolId":"pool"}`,
		deadline:      time.Now().Add(20 * time.Second),
	})
	if got.kind != "response" {
		t.Fatalf("posted %s %s, want a response", got.kind, got.body)
	}
	res := got.json(t)
	remaining, _ := res["remaining"].(float64)
	if remaining <= 10000 || remaining > 20000 {
		t.Errorf("getRemainingTimeInMillis() = %v, want about 20000", res["remaining"])
	}
	delete(res, "remaining")
	want := map[string]any{
		"count":              1.0,
		"event":              map[string]any{"k": "v"},
		"functionName":       "fn",
		"functionVersion":    "$LATEST",
		"memoryLimitInMB":    "256",
		"invokedFunctionArn": functionARN,
		"awsRequestId":       "id-1",
		"logGroupName":       "/aws/lambda/fn",
		"logStreamName":      "2024/01/01/[$LATEST]0123456789abcdef",
		"identity":           map[string]any{"cognitoIdentityId": "cid", "cognitoIdentityPoolId": "pool"},
		"clientContext": map[string]any{
			"client": map[string]any{"installation_id": "inst-1"},
			"custom": map[string]any{"a": "b"},
			"env":    map[string]any{"platform": "p"},
		},
		"waits": true,
		"trace": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("first result:\n got %v\nwant %v", res, want)
	}

	res = api.invoke(t, invocation{id: "id-2", body: `"str"`}).json(t)
	if res["count"] != 2.0 || res["event"] != "str" {
		t.Errorf("second result count=%v event=%v, want 2 and the string event", res["count"], res["event"])
	}
	if res["trace"] != "undefined" || res["identity"] != "undefined" || res["clientContext"] != "undefined" {
		t.Errorf("second invocation kept the first one's trace, identity or client context: %v", res)
	}

	if got := api.invoke(t, invocation{id: "id-3", body: `{"action":"undefined"}`}); got.kind != "response" || string(got.body) != "null" {
		t.Errorf("undefined: posted %s %q, want response null", got.kind, got.body)
	}

	// A thrown Error: Node's shape uses "trace", not "stackTrace".
	got = api.invoke(t, invocation{id: "id-4", body: `{"action":"throw"}`})
	if got.kind != "error" {
		t.Fatalf("throw: posted %s %s", got.kind, got.body)
	}
	doc := got.json(t)
	if k := keys(doc); k != "errorMessage,errorType,trace" {
		t.Errorf("error keys = %s", k)
	}
	trace, _ := doc["trace"].([]any)
	frame := fmt.Sprintf("    at fail (%s:%d:", filepath.Join(root, "index.js"), lineOf(t, nodeApp, "throw new Error('x')"))
	if doc["errorType"] != "Error" || doc["errorMessage"] != "x" || len(trace) < 2 ||
		trace[0] != "Error: x" || !strings.HasPrefix(fmt.Sprint(trace[1]), frame) {
		t.Errorf("error document = %q, want trace starting %q, %q", doc, "Error: x", frame)
	}
	if h, ok := got.header["Lambda-Runtime-Function-Error-Type"]; ok {
		t.Errorf("invocation error with an error type header %q; AWS's runtime sends none", h)
	}

	// Anything else thrown is reported by its type.
	doc = api.invoke(t, invocation{id: "id-5", body: `{"action":"throwString"}`}).json(t)
	if !reflect.DeepEqual(doc, map[string]any{"errorType": "string", "errorMessage": "boom", "trace": []any{}}) {
		t.Errorf("thrown string: %v", doc)
	}
	doc = api.invoke(t, invocation{id: "id-6", body: `{"action":"circular"}`}).json(t)
	if doc["errorType"] != "Error" || doc["errorMessage"] != "Unable to stringify response body" {
		t.Errorf("circular result: %v", doc)
	}
	got = api.invoke(t, invocation{id: "id-7", body: `not json`})
	if doc := got.json(t); got.kind != "error" || doc["errorType"] != "SyntaxError" {
		t.Errorf("non-JSON payload: %s %v", got.kind, doc)
	}
	// The handler ran for every invocation but id-7.
	if res := api.invoke(t, invocation{id: "id-8", body: `{}`}).json(t); res["count"] != 7.0 {
		t.Errorf("after failures count = %v, want 7 (the process must survive them)", res["count"])
	}

	for what, re := range map[string]string{
		"console.log":         `(?m)^` + isoTime + `\tid-1\tINFO\tlog from id-1 \{ a: 1 \}$`,
		"console.error":       `(?m)^` + isoTime + `\tid-1\tERROR\tmulti\rline$`,
		"console.warn":        `(?m)^` + isoTime + `\tid-2\tWARN\twarned$`,
		"the invoke error":    `(?m)^` + isoTime + `\tid-4\tERROR\tInvoke Error \t\{"errorType":"Error","errorMessage":"x","stack":\["Error: x","    at fail `,
		"a non-error's error": `(?m)^` + isoTime + `\tid-5\tERROR\tInvoke Error \t\{"errorType":"Error","errorMessage":"boom"`,
	} {
		p.eventually(t, what, regexp.MustCompile(re).MatchString)
	}
}

const nodeCallbackApp = `exports.handler = (event, context, callback) => {
  const r = { waited: false };
  setTimeout(() => { r.waited = true; }, 100);
  if (event.noWait) context.callbackWaitsForEmptyEventLoop = false;
  switch (event.style) {
    case 'callback': return callback(null, r);
    case 'callbackError': return callback(new Error('cb failed'));
    case 'succeed': return context.succeed(r);
    case 'fail': return context.fail(new Error('failed'));
    case 'done': return context.done(null, r);
    case 'twice': callback(null, 1); callback(null, 2); return;
    case 'nothing': return 'ignored';
  }
};
`

// TestNodeConnections: see testConnections.
func TestNodeConnections(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": "exports.handler = async (e) => e;\n"})
	testConnections(t, func(api *fakeAPI) { startNode(t, api, root, "index.handler") },
		func(id string) string { return `{"id":"` + id + `"}` })
}

func TestNodeCallbackHandler(t *testing.T) {
	root := writeFiles(t, map[string]string{"cb.js": nodeCallbackApp})
	api := newFakeAPI(t)
	startNode(t, api, root, "cb.handler")
	cases := []struct {
		event    string
		kind     string
		wantBody string // for responses
		wantMsg  string // for errors
	}{
		// callbackWaitsForEmptyEventLoop: the result leaves only once the
		// timer has run, so it shows the timer's change.
		{`{"style":"callback"}`, "response", `{"waited":true}`, ""},
		{`{"style":"callback","noWait":true}`, "response", `{"waited":false}`, ""},
		{`{"style":"callbackError"}`, "error", "", "cb failed"},
		{`{"style":"succeed"}`, "response", `{"waited":false}`, ""},
		{`{"style":"done"}`, "response", `{"waited":false}`, ""},
		{`{"style":"fail"}`, "error", "", "failed"},
		{`{"style":"twice","noWait":true}`, "response", `1`, ""},
		// A sync handler that never calls back answers null once the
		// event loop has drained; its return value is ignored.
		{`{"style":"nothing"}`, "response", `null`, ""},
	}
	for i, tc := range cases {
		id := fmt.Sprintf("cb-%d", i)
		got := api.invoke(t, invocation{id: id, body: tc.event})
		if got.kind != tc.kind {
			t.Errorf("%s: posted %s %s, want %s", tc.event, got.kind, got.body, tc.kind)
			continue
		}
		if tc.kind == "response" && string(got.body) != tc.wantBody {
			t.Errorf("%s: response %s, want %s", tc.event, got.body, tc.wantBody)
		}
		if tc.kind == "error" {
			if doc := got.json(t); doc["errorType"] != "Error" || doc["errorMessage"] != tc.wantMsg {
				t.Errorf("%s: error %v, want Error %q", tc.event, doc, tc.wantMsg)
			}
		}
	}
}

func TestNodeModuleKinds(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"app.mjs":                 "let n = 0;\nexport const handler = async () => ({ kind: 'mjs', n: ++n, esm: typeof require === 'undefined' });\n",
		"esm/package.json":        `{"type":"module"}`,
		"esm/h.js":                "export async function handler() { return { kind: 'type-module', esm: typeof require === 'undefined' }; }\n",
		"c.cjs":                   "exports.handler = async () => ({ kind: 'cjs' });\n",
		"dir/file.js":             "exports.nested = { export: async () => ({ kind: 'nested' }) };\n",
		"node_modules/m/index.js": "exports.handler = async () => ({ kind: 'node_modules' });\n",
	})
	for handler, want := range map[string]string{
		"app.handler":            `{"kind":"mjs","n":1,"esm":true}`,
		"esm/h.handler":          `{"kind":"type-module","esm":true}`,
		"c.handler":              `{"kind":"cjs"}`,
		"dir/file.nested.export": `{"kind":"nested"}`,
		"m.handler":              `{"kind":"node_modules"}`,
	} {
		t.Run(handler, func(t *testing.T) {
			api := newFakeAPI(t)
			startNode(t, api, root, handler)
			got := api.invoke(t, invocation{id: "m-1", body: `{}`})
			if got.kind != "response" || string(got.body) != want {
				t.Errorf("posted %s %s, want response %s", got.kind, got.body, want)
			}
		})
	}
}

func TestNodeInitErrors(t *testing.T) {
	cases := []struct {
		name        string
		files       map[string]string
		handler     string
		wantType    string
		wantMessage string // a regexp; {root} stands for the task root
	}{
		{
			name:        "missing module",
			files:       map[string]string{"index.js": ""},
			handler:     "nothere.handler",
			wantType:    "Runtime.ImportModuleError",
			wantMessage: `^Error: Cannot find module 'nothere'\nRequire stack:\n- .*/bootstrap\.js$`,
		},
		{
			name:        "missing dependency",
			files:       map[string]string{"index.js": "require('not-a-module-xyz');\nexports.handler = async () => 1;\n"},
			handler:     "index.handler",
			wantType:    "Runtime.ImportModuleError",
			wantMessage: `^Error: Cannot find module 'not-a-module-xyz'\nRequire stack:\n- {root}/index\.js\n- .*/bootstrap\.js$`,
		},
		{
			name:        "handler not found",
			files:       map[string]string{"index.js": "exports.handler = async () => 1;\n"},
			handler:     "index.nope",
			wantType:    "Runtime.HandlerNotFound",
			wantMessage: `^index\.nope is undefined or not exported$`,
		},
		{
			name:        "not a function",
			files:       map[string]string{"index.js": "exports.val = 3;\n"},
			handler:     "index.val",
			wantType:    "Runtime.HandlerNotFound",
			wantMessage: `^index\.val is not a function$`,
		},
		{
			name:        "syntax error",
			files:       map[string]string{"index.js": "exports.handler = async (e) => {\n"},
			handler:     "index.handler",
			wantType:    "Runtime.UserCodeSyntaxError",
			wantMessage: `^SyntaxError: `,
		},
		{
			name:        "malformed handler",
			files:       map[string]string{"index.js": ""},
			handler:     "index",
			wantType:    "Runtime.MalformedHandlerName",
			wantMessage: `^Bad handler$`,
		},
		{
			name:        "exception at load",
			files:       map[string]string{"index.js": "throw new TypeError('at load');\n"},
			handler:     "index.handler",
			wantType:    "TypeError",
			wantMessage: `^at load$`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := writeFiles(t, tc.files)
			api := newFakeAPI(t)
			p := startNode(t, api, root, tc.handler)
			got := api.await(t)
			if got.kind != "init" {
				t.Fatalf("posted %s %s, want an init error", got.kind, got.body)
			}
			doc := got.json(t)
			if k := keys(doc); k != "errorMessage,errorType,trace" {
				t.Errorf("keys = %s", k)
			}
			re := regexp.MustCompile(strings.ReplaceAll(tc.wantMessage, "{root}", regexp.QuoteMeta(root)))
			msg, _ := doc["errorMessage"].(string)
			if doc["errorType"] != tc.wantType || !re.MatchString(msg) {
				t.Errorf("init error = %q, want type %s, message %s", doc, tc.wantType, re)
			}
			// A syntax error keeps the parser's stack, which starts at the
			// offending line; the others start with "<type>: <message>".
			trace, _ := doc["trace"].([]any)
			if len(trace) == 0 || tc.wantType != "Runtime.UserCodeSyntaxError" && trace[0] != tc.wantType+": "+msg[:strings.IndexByte(msg+"\n", '\n')] {
				t.Errorf("trace = %q", trace)
			}
			if h := got.header.Get("Lambda-Runtime-Function-Error-Type"); h != tc.wantType {
				t.Errorf("error type header = %q, want %q", h, tc.wantType)
			}
			if code := p.waitExit(t); code != 129 {
				t.Errorf("exit code = %d, want 129", code)
			}
			logHead := "\tundefined\tERROR\tUncaught Exception \t{\"errorType\":\"" + tc.wantType + "\""
			if !strings.Contains(p.stdout.String(), logHead) {
				t.Errorf("stdout lacks %q:\n%q", logHead, p.stdout.String())
			}
		})
	}
}

const nodeFatalApp = `exports.handler = async (event) => {
  switch (event.action) {
    case 'hang':
      return new Promise(() => {});
    case 'uncaught':
      setTimeout(() => { throw new Error('late'); }, 10);
      return new Promise(() => {});
    case 'reject':
      setTimeout(() => {}, 1000);
      Promise.reject(new Error('rejected'));
      return new Promise(() => {});
  }
  return 'ok';
};
`

func TestNodeFatalErrors(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": nodeFatalApp})

	t.Run("uncaught exception", func(t *testing.T) {
		api := newFakeAPI(t)
		p := startNode(t, api, root, "index.handler")
		// A promise that never settles on a drained loop fails the
		// invocation; the process goes on.
		doc := api.invoke(t, invocation{id: "f-1", body: `{"action":"hang"}`}).json(t)
		if doc["errorType"] != "Runtime.NodeJsExit" {
			t.Errorf("never-settled promise: %v", doc)
		}
		if got := api.invoke(t, invocation{id: "f-2", body: `{}`}); string(got.body) != `"ok"` {
			t.Errorf("after a hang: posted %s %s", got.kind, got.body)
		}
		got := api.invoke(t, invocation{id: "f-3", body: `{"action":"uncaught"}`})
		if doc := got.json(t); got.kind != "error" || doc["errorType"] != "Error" || doc["errorMessage"] != "late" {
			t.Errorf("uncaught exception: posted %s %v", got.kind, doc)
		}
		if code := p.waitExit(t); code != 129 {
			t.Errorf("exit code = %d, want 129", code)
		}
	})

	t.Run("unhandled rejection", func(t *testing.T) {
		api := newFakeAPI(t)
		p := startNode(t, api, root, "index.handler")
		got := api.invoke(t, invocation{id: "r-1", body: `{"action":"reject"}`})
		doc := got.json(t)
		if got.kind != "error" || doc["errorType"] != "Runtime.UnhandledPromiseRejection" || doc["errorMessage"] != "Error: rejected" {
			t.Errorf("unhandled rejection: posted %s %v", got.kind, doc)
		}
		if code := p.waitExit(t); code != 128 {
			t.Errorf("exit code = %d, want 128", code)
		}
	})
}

func TestNodeLogLevelAndJSON(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": "exports.handler = async () => { console.debug('hidden'); console.info('shown', 1); return 1; };\n"})
	api := newFakeAPI(t)
	p := startNode(t, api, root, "index.handler", "AWS_LAMBDA_LOG_FORMAT=JSON", "AWS_LAMBDA_LOG_LEVEL=INFO")
	if got := api.invoke(t, invocation{id: "l-1", body: `{}`}); string(got.body) != "1" {
		t.Fatalf("posted %s %s", got.kind, got.body)
	}
	line := regexp.MustCompile(`(?m)^\{"timestamp":"` + isoTime + `","level":"INFO","requestId":"l-1","message":"shown 1"\}$`)
	p.eventually(t, "a JSON log line", line.MatchString)
	if strings.Contains(p.stdout.String(), "hidden") {
		t.Errorf("console.debug printed below AWS_LAMBDA_LOG_LEVEL=INFO:\n%s", p.stdout.String())
	}
}

// TestNodeHeapFollowsMemory: node starts as Lambda starts it, with V8's
// heap sized from the function's memory (not from the host's), so garbage
// is collected before the function's cgroup limit is reached; and with
// global.gc exposed. Those flags are then put back to V8's defaults, so
// that node's built-in modules load from the code cache it ships, which
// V8 keys by the flags: the function sees the flag-free cache tag.
func TestNodeHeapFollowsMemory(t *testing.T) {
	node := testutil.RequiresBinary(t, "node")
	out, err := exec.Command(node, "-p", "require('node:v8').cachedDataVersionTag()").Output()
	if err != nil {
		t.Fatal(err)
	}
	flagFree := strings.TrimSpace(string(out))
	root := writeFiles(t, map[string]string{"index.js": `
const v8 = require('node:v8');
exports.handler = async () => ({
  limitMB: v8.getHeapStatistics().heap_size_limit / 1048576,
  gc: typeof global.gc,
  argv: process.execArgv,
  cacheTag: String(v8.cachedDataVersionTag()),
});`})
	api := newFakeAPI(t)
	startNode(t, api, root, "index.handler")
	res := api.invoke(t, invocation{id: "id-1", body: `{}`}).json(t)
	limit, _ := res["limitMB"].(float64)
	// old space (memory minus a tenth) plus the young generation's
	// semi-spaces: about the function's memory, never the host's.
	if limit < testMemoryMB*0.8 || limit > testMemoryMB*1.3 {
		t.Errorf("V8 heap limit %.0f MB for a %d MB function (argv %v)", limit, testMemoryMB, res["argv"])
	}
	if res["gc"] != "function" {
		t.Errorf("global.gc is %v, want a function (--expose-gc)", res["gc"])
	}
	if res["cacheTag"] != flagFree {
		t.Errorf("code cache tag %v, want node's flag-free %s: the start flags (argv %v) are still set and node compiles its built-in modules from source", res["cacheTag"], flagFree, res["argv"])
	}
}
