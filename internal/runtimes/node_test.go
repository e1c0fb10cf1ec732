package runtimes

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
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
	cmd := exec.Command(node, "-p", "require('node:v8').cachedDataVersionTag()")
	cmd.Env = hostEnv()
	out, err := cmd.Output()
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
	p := startNode(t, api, root, "index.handler")
	res := api.invoke(t, invocation{id: "id-1", body: `{}`}).json(t)
	// Node writes its warnings through console.error, which the runtime
	// sends to stdout as the function's log lines.
	time.Sleep(100 * time.Millisecond)
	if s := p.stdout.String() + p.stderr.String(); strings.Contains(s, "Warning") {
		t.Errorf("the runtime logged a warning (resetting the flags must not): %s", s)
	}
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

const nodeWorkerApp = `const { Worker } = require('worker_threads');
const wt = require('node:worker_threads');
const v8 = require('node:v8');

const child = "require('node:worker_threads').parentPort.postMessage(require('node:v8').getHeapStatistics().heap_size_limit / 1048576);";

// limitMB starts a worker of class W with options and resolves to the
// heap limit it reports.
exports.limitMB = (W, options) =>
  new Promise((resolve, reject) => {
    const w = new W(child, options);
    w.once('message', resolve);
    w.once('error', reject);
  });

exports.handler = async () => {
  const own = { eval: true, resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 12 } };
  const oldOnly = { eval: true, resourceLimits: { maxOldGenerationSizeMb: 64 } };
  const before = JSON.stringify([own, oldOnly]);
  const esm = await import('./esm.mjs');
  return {
    mainMB: v8.getHeapStatistics().heap_size_limit / 1048576,
    workerMB: await exports.limitMB(Worker, { eval: true }),
    prefixedMB: await exports.limitMB(wt.Worker, { eval: true }),
    esmMB: await esm.limitMB(),
    ownMB: await exports.limitMB(Worker, own),
    oldOnlyMB: await exports.limitMB(Worker, oldOnly),
    optionsKept: JSON.stringify([own, oldOnly]) === before,
  };
};
`

const nodeWorkerESM = `import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';

const { limitMB: start } = createRequire(import.meta.url)('./index.js');
export const limitMB = () => start(Worker, { eval: true });
`

// TestNodeWorkerHeapFollowsMemory: a worker thread's heap is sized from
// the function's memory, as the start flags size it on Lambda, though the
// runtime puts those flags back to V8's defaults at start: it has the
// main thread's heap limit, however the function reaches Worker (require
// with or without node:, or an ES module's import). A worker given its
// own resourceLimits keeps them, and the options passed are not changed.
func TestNodeWorkerHeapFollowsMemory(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": nodeWorkerApp, "esm.mjs": nodeWorkerESM})
	api := newFakeAPI(t)
	startNode(t, api, root, "index.handler")
	got := api.invoke(t, invocation{id: "w-1", body: `{}`})
	var res struct {
		MainMB, WorkerMB, PrefixedMB, ESMMB, OwnMB, OldOnlyMB float64
		OptionsKept                                           bool
	}
	if err := json.Unmarshal(got.body, &res); got.kind != "response" || err != nil {
		t.Fatalf("posted %s %s", got.kind, got.body)
	}
	if res.MainMB < testMemoryMB*0.8 || res.MainMB > testMemoryMB*1.3 {
		t.Errorf("main thread's heap limit %.0f MB for a %d MB function", res.MainMB, testMemoryMB)
	}
	for what, mb := range map[string]float64{
		"require('worker_threads')":         res.WorkerMB,
		"require('node:worker_threads')":    res.PrefixedMB,
		"import from 'node:worker_threads'": res.ESMMB,
	} {
		if mb != res.MainMB {
			t.Errorf("worker from %s: heap limit %.0f MB, want the main thread's %.0f MB", what, mb, res.MainMB)
		}
	}
	// 64 MB old generation and 12 MB young, or V8's 48 MB young (which
	// is also what a 256 MB function's semi-spaces round up to): far below
	// the function's.
	if res.OwnMB < 64 || res.OwnMB > 100 {
		t.Errorf("worker with its own resourceLimits (64 MB old, 12 MB young): heap limit %.0f MB", res.OwnMB)
	}
	if res.OldOnlyMB < 64 || res.OldOnlyMB > 128 {
		t.Errorf("worker with its own old generation limit (64 MB): heap limit %.0f MB", res.OldOnlyMB)
	}
	if !res.OptionsKept {
		t.Error("the options passed to new Worker were changed")
	}
}

const nodeStreamPendingApp = `exports.handler = awslambda.streamifyResponse(async (event, stream) => {
  if (event.pending) return new Promise(() => {});
  const timers = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  stream.end(String(timers));
});
`

// TestNodeStreamPending: a streaming handler whose promise never settles,
// and that has written nothing, leaves the runtime waiting (until the
// invocation times out, as on Lambda), not exiting at once; and what
// keeps it up during a streaming invocation goes with the invocation:
// the timers active in one are as many as in the one before.
func TestNodeStreamPending(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": nodeStreamPendingApp})
	api := newFakeAPI(t)
	p := startNode(t, api, root, "index.handler")
	var timers []string
	for i := range 3 {
		got := api.invoke(t, invocation{id: fmt.Sprintf("sp-%d", i), body: `{}`})
		if got.kind != "response" {
			t.Fatalf("posted %s %s", got.kind, got.body)
		}
		timers = append(timers, string(got.body))
	}
	if timers[0] != timers[1] || timers[1] != timers[2] {
		t.Errorf("active timers in three streaming invocations: %v; each left one behind", timers)
	}

	api.queue <- invocation{id: "sp-pending", body: `{"pending":true}`}
	select {
	case <-p.done:
		t.Errorf("runtime exited (%v) while the invocation was pending", p.err)
	case got := <-api.posts:
		t.Errorf("runtime posted %s %s for a pending invocation", got.kind, got.body)
	case <-time.After(time.Second):
	}
}

const nodeClosingConnApp = `const net = require('node:net');

// The runtime's latest connection to the Runtime API, reached through
// net.connect, which the runtime calls after this module has loaded.
let latest;
const connect = net.connect;
net.connect = function () {
  latest = connect.apply(this, arguments);
  return latest;
};

exports.handler = awslambda.streamifyResponse(async (event, stream) => {
  if (event.close === 'destroy') latest.destroy();
  if (event.close === 'end') latest.end();
  if (event.close === 'fin' && !latest.readableEnded) await new Promise((resolve) => latest.once('end', resolve));
  stream.write('after ' + event.close);
  stream.end();
});
`

// TestNodeKeptConnectionClosing: a kept connection that is closing when a
// request starts is not used: the request goes on a new connection. The
// handler writes its streamed response (which is not sent again, so using
// that connection would fail it) just after the kept connection was
// destroyed, or ended by the runtime's side, or by the server's: the
// moment its FIN has been read, before the connection has closed.
func TestNodeKeptConnectionClosing(t *testing.T) {
	root := writeFiles(t, map[string]string{"index.js": nodeClosingConnApp})
	for _, how := range []string{"destroy", "end", "fin"} {
		t.Run(how, func(t *testing.T) {
			a := newRawAPI(t, nil)
			startNode(t, a.shim, root, "index.handler")
			event := `{"close":"` + how + `"}`
			ans := rawAnswer{pieces: []string{rawHead("cc-1", fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event}, close: how == "fin"}
			if got := a.invoke(t, "cc-1", ans); string(got.body) != "after "+how {
				t.Errorf("posted %q", got.body)
			}
			if got, want := a.requests(), []string{"GET 1.1", "POST 2.1"}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests (method conn.nth) %v, want %v", got, want)
			}
		})
	}
}

// rawAPI is a Runtime API written at the byte level, for the answers
// net/http's server never gives: cut into pieces at any byte, chunked,
// delimited by closing the connection, malformed, or none at all on a
// kept connection. It answers /next with the rawAnswers queued, and every
// POST with 202.
type rawAPI struct {
	// shim is what start needs of a Runtime API: its address, and where
	// to signal that the runtime exited.
	shim    *fakeAPI
	answers chan rawAnswer
	posts   chan rawRequest
	closed  chan struct{}
	// drop, if set, says for a request whether to close its connection
	// instead of answering it, and whether with a reset (RST) rather than
	// a FIN.
	drop func(r rawRequest) (drop, reset bool)

	mu    sync.Mutex
	conns int
	// log holds the requests answered, in the order read, and any read
	// on a connection after the server closed it (afterClose).
	log []rawRequest
}

// rawRequest is a request the runtime made, with the connection it came
// on (numbered from 1 in the order accepted) and its place there (from 1).
type rawRequest struct {
	conn, nth       int
	method, path    string
	header, trailer http.Header
	chunked         bool
	body            []byte
	afterClose      bool
}

// rawAnswer is an answer to /next. Its pieces are written one at a time,
// a millisecond apart, so that each reaches the runtime in a read of its
// own; with close set, the server closes the connection after them, linger
// later. It closes only its side (a FIN), and reads on: a request the
// runtime still sends there is recorded, where a full close would have the
// kernel refuse it unseen and the runtime send it again on a new
// connection.
type rawAnswer struct {
	pieces []string
	close  bool
	linger time.Duration
}

func newRawAPI(t *testing.T, drop func(rawRequest) (bool, bool)) *rawAPI {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawAPI{
		shim:    &fakeAPI{srv: &httptest.Server{Listener: l}},
		answers: make(chan rawAnswer, 16),
		posts:   make(chan rawRequest, 16),
		closed:  make(chan struct{}),
		drop:    drop,
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns++
			n := a.conns
			a.mu.Unlock()
			go a.serve(c.(*net.TCPConn), n)
		}
	}()
	t.Cleanup(func() {
		close(a.closed)
		l.Close()
	})
	return a
}

func (a *rawAPI) serve(c *net.TCPConn, conn int) {
	defer c.Close()
	br := bufio.NewReader(c)
	for nth := 1; ; nth++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		r := rawRequest{
			conn: conn, nth: nth, method: req.Method, path: req.URL.Path,
			header: req.Header, trailer: req.Trailer, chunked: slices.Equal(req.TransferEncoding, []string{"chunked"}), body: body,
		}
		if a.drop != nil {
			if drop, reset := a.drop(r); drop {
				if reset {
					c.SetLinger(0)
				}
				return
			}
		}
		if req.Method != http.MethodGet {
			a.record(r)
			a.posts <- r
			io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}")
			continue
		}
		var ans rawAnswer
		select {
		case ans = <-a.answers:
		case <-a.closed:
			return
		}
		a.record(r)
		for i, p := range ans.pieces {
			if i > 0 {
				time.Sleep(time.Millisecond)
			}
			if _, err := io.WriteString(c, p); err != nil {
				return
			}
		}
		if ans.close {
			time.Sleep(ans.linger)
			c.CloseWrite()
			for nth++; ; nth++ {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				a.record(rawRequest{conn: conn, nth: nth, method: req.Method, path: req.URL.Path, afterClose: true})
			}
		}
	}
}

// record logs r as answered, or as read after close.
func (a *rawAPI) record(r rawRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = append(a.log, r)
}

// requests returns the requests answered so far as "METHOD conn.nth", and
// those read after the server closed their connection as
// "METHOD conn.nth after close".
func (a *rawAPI) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.log {
		s := fmt.Sprintf("%s %d.%d", r.method, r.conn, r.nth)
		if r.afterClose {
			s += " after close"
		}
		out = append(out, s)
	}
	return out
}

// invoke queues ans and returns the runtime's next post, which must be
// the response of invocation id.
func (a *rawAPI) invoke(t *testing.T, id string, ans rawAnswer) rawRequest {
	t.Helper()
	a.answers <- ans
	select {
	case r := <-a.posts:
		if want := "/2018-06-01/runtime/invocation/" + id + "/response"; r.path != want {
			t.Fatalf("runtime posted %s %s, want %s", r.path, r.body, want)
		}
		return r
	case <-a.shim.exited:
		t.Fatal("runtime exited without posting")
	case <-time.After(waitFor):
		t.Fatal("runtime posted nothing")
	}
	return rawRequest{}
}

// rawHead is the head of a /next answer for invocation id, with more
// header lines (each ending in CRLF) before its end.
func rawHead(id string, more ...string) string {
	return "HTTP/1.1 200 OK\r\n" +
		"Lambda-Runtime-Aws-Request-Id: " + id + "\r\n" +
		fmt.Sprintf("Lambda-Runtime-Deadline-Ms: %d\r\n", time.Now().Add(30*time.Second).UnixMilli()) +
		"Lambda-Runtime-Invoked-Function-Arn: " + functionARN + "\r\n" +
		"Content-Type: application/json\r\n" +
		strings.Join(more, "") + "\r\n"
}

// bytewise cuts s into one piece per byte.
func bytewise(s string) []string {
	out := make([]string, len(s))
	for i := range len(s) {
		out[i] = s[i : i+1]
	}
	return out
}

// rawEchoApp answers what the runtime made of the /next answer: the
// request id, function ARN, time left and trace id from its headers, and
// the event (a large one by its length and end).
const rawEchoApp = `exports.handler = async (event, context) => {
  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, event.sleep));
  return {
    id: context.awsRequestId,
    arn: context.invokedFunctionArn,
    remaining: context.getRemainingTimeInMillis(),
    trace: process.env._X_AMZN_TRACE_ID || '',
    event: event.big ? { length: event.big.length, end: event.big.slice(-8) } : event,
  };
};
`

// startRawEcho starts rawEchoApp against a.
func startRawEcho(t *testing.T, a *rawAPI) *proc {
	t.Helper()
	root := writeFiles(t, map[string]string{"index.js": rawEchoApp})
	return startNode(t, a.shim, root, "index.handler")
}

// checkEcho checks rawEchoApp's answer to invocation id: its event
// (as JSON) and trace id.
func checkEcho(t *testing.T, got rawRequest, id, event, trace string) {
	t.Helper()
	var res struct {
		ID, ARN, Trace string
		Remaining      float64
		Event          json.RawMessage
	}
	if err := json.Unmarshal(got.body, &res); err != nil {
		t.Fatalf("%s: response %q: %v", id, got.body, err)
	}
	var gotEvent, wantEvent any
	json.Unmarshal(res.Event, &gotEvent)
	json.Unmarshal([]byte(event), &wantEvent)
	if res.ID != id || res.ARN != functionARN || res.Trace != trace ||
		res.Remaining <= 0 || res.Remaining > 30000 || !reflect.DeepEqual(gotEvent, wantEvent) {
		t.Errorf("%s: runtime read the answer as %s; want id %s, ARN %s, trace %q, up to 30 s left, event %s",
			id, got.body, id, functionARN, trace, event)
	}
}

// TestNodeAnswerInPieces: the runtime reads an answer to /next that
// arrives a byte at a time, so that the status line, each header line
// (names in any case), the head's end and the body (a UTF-8 character
// among them) are cut at every byte; and keeps the connection for the
// next one.
func TestNodeAnswerInPieces(t *testing.T) {
	a := newRawAPI(t, nil)
	startRawEcho(t, a)

	event := `{"k":"vé","n":[1,2,3]}`
	head := "HTTP/1.1 200 OK\r\n" +
		"lambda-runtime-aws-request-id: p-1\r\n" +
		fmt.Sprintf("Lambda-Runtime-Deadline-Ms: %d\r\n", time.Now().Add(30*time.Second).UnixMilli()) +
		"LAMBDA-RUNTIME-INVOKED-FUNCTION-ARN: " + functionARN + "\r\n" +
		"Lambda-Runtime-Trace-Id:  Root=1-abc;Sampled=1 \r\n" +
		"Content-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(event))
	checkEcho(t, a.invoke(t, "p-1", rawAnswer{pieces: bytewise(head + event)}), "p-1", event, "Root=1-abc;Sampled=1")

	// Then in one piece, on the same connection.
	event = `{"second":true}`
	whole := rawHead("p-2", fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event
	checkEcho(t, a.invoke(t, "p-2", rawAnswer{pieces: []string{whole}}), "p-2", event, "")
	if want := []string{"GET 1.1", "POST 1.2", "GET 1.3", "POST 1.4"}; !reflect.DeepEqual(a.requests(), want) {
		t.Errorf("requests (method conn.nth) %v, want %v on one kept connection", a.requests(), want)
	}
}

// TestNodeChunkedAnswer: the runtime reads a chunked answer to /next,
// cut inside chunk sizes and line ends, with chunk extensions and
// trailers, and a 6 MB one in large chunks; and keeps the connection.
func TestNodeChunkedAnswer(t *testing.T) {
	a := newRawAPI(t, nil)
	startRawEcho(t, a)

	te := "Transfer-Encoding: chunked\r\n"
	// {"a":"chunked","b":[true]} in three chunks: 11, 13 and 2 bytes.
	pieces := []string{
		rawHead("c-1", te) + "b", "\r\n{\"a\":\"ch", "unk\r", "\n0", "D;ext=\"x\"\r\ned\",\"b\":[true", "\r\n", "2\r\n]",
		"}\r", "\n0\r\nX-Trailer: t\r", "\n\r", "\n",
	}
	checkEcho(t, a.invoke(t, "c-1", rawAnswer{pieces: pieces}), "c-1", `{"a":"chunked","b":[true]}`, "")

	big := strings.Repeat("0123456789abcdef", 6<<20/16) + "-the-end"
	event := `{"big":"` + big + `"}`
	var chunked strings.Builder
	for rest := event; rest != ""; {
		n := min(len(rest), 2<<20+3)
		fmt.Fprintf(&chunked, "%X\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	chunked.WriteString("0\r\n\r\n")
	got := a.invoke(t, "c-2", rawAnswer{pieces: []string{rawHead("c-2", te), chunked.String()}})
	checkEcho(t, got, "c-2", fmt.Sprintf(`{"length":%d,"end":"-the-end"}`, len(big)), "")

	if want := []string{"GET 1.1", "POST 1.2", "GET 1.3", "POST 1.4"}; !reflect.DeepEqual(a.requests(), want) {
		t.Errorf("requests (method conn.nth) %v, want %v on one kept connection", a.requests(), want)
	}
}

// TestNodeConnectionClose: after an answer with Connection: close, the
// runtime's next request goes on a new connection, even if the server
// left the old one open; an answer with neither Content-Length nor
// Transfer-Encoding ends when the server closes the connection, and the
// next request also goes on a new one.
func TestNodeConnectionClose(t *testing.T) {
	a := newRawAPI(t, nil)
	startRawEcho(t, a)

	event := `{"close":1}`
	ans := rawAnswer{pieces: []string{rawHead("cl-1", "Connection: close\r\n", fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event}}
	checkEcho(t, a.invoke(t, "cl-1", ans), "cl-1", event, "")

	event = `{"untilClose":2}`
	ans = rawAnswer{pieces: []string{rawHead("cl-2"), event[:5], event[5:]}, close: true}
	checkEcho(t, a.invoke(t, "cl-2", ans), "cl-2", event, "")

	event = `{"kept":3}`
	ans = rawAnswer{pieces: []string{rawHead("cl-3", fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event}}
	checkEcho(t, a.invoke(t, "cl-3", ans), "cl-3", event, "")

	want := []string{"GET 1.1", "POST 2.1", "GET 2.2", "POST 3.1", "GET 3.2", "POST 3.3"}
	if got := a.requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests (method conn.nth) %v, want %v", got, want)
	}
}

// TestNodeKeptConnectionClosed: when the server closes the kept
// connection, the runtime goes on over a new one: if it closed it while
// idle (during the handler), the next request goes on a new connection,
// and nothing more is sent on the closed one (the server reads on after
// its FIN); if it closed it on a request without answering, with a FIN or
// a reset, the request goes once more on a new connection.
func TestNodeKeptConnectionClosed(t *testing.T) {
	answer := func(id, event string) rawAnswer {
		return rawAnswer{pieces: []string{rawHead(id, fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event}}
	}

	t.Run("while idle", func(t *testing.T) {
		a := newRawAPI(t, nil)
		startRawEcho(t, a)
		for i := range 3 {
			id, event := fmt.Sprintf("i-%d", i), `{"sleep":100}`
			// Closed 20 ms after the answer, while the handler sleeps.
			ans := answer(id, event)
			ans.close, ans.linger = true, 20*time.Millisecond
			checkEcho(t, a.invoke(t, id, ans), id, event, "")
		}
		want := []string{"GET 1.1", "POST 2.1", "GET 2.2", "POST 3.1", "GET 3.2", "POST 4.1"}
		if got := a.requests(); !reflect.DeepEqual(got, want) {
			t.Errorf("requests (method conn.nth) %v, want %v", got, want)
		}
	})

	for _, reset := range []bool{false, true} {
		name := map[bool]string{false: "FIN", true: "RST"}[reset]
		t.Run("on a request, "+name, func(t *testing.T) {
			// Every second request on a connection is read and left
			// unanswered: each but the first goes once more on a new one.
			a := newRawAPI(t, func(r rawRequest) (bool, bool) { return r.nth == 2, reset })
			startRawEcho(t, a)
			for i := range 3 {
				id := fmt.Sprintf("r-%d", i)
				checkEcho(t, a.invoke(t, id, answer(id, `{"i":`+fmt.Sprint(i)+`}`)), id, `{"i":`+fmt.Sprint(i)+`}`, "")
			}
			want := []string{"GET 1.1", "POST 2.1", "GET 3.1", "POST 4.1", "GET 5.1", "POST 6.1"}
			if got := a.requests(); !reflect.DeepEqual(got, want) {
				t.Errorf("requests answered (method conn.nth) %v, want %v", got, want)
			}
		})
	}
}

// TestNodeMalformedAnswer: an answer that is not HTTP/1.1 makes the
// runtime fail with an error that says so, and exit (the host restarts
// it); a head that never ends is refused once past 1 MiB, not buffered
// without end.
func TestNodeMalformedAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"status line", "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", `bad status line: "HTTP/1.1 2OO OK"`},
		{"header line", "HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n", `bad header line: "no colon"`},
		{"chunk size", rawHead("m-1", "Transfer-Encoding: chunked\r\n") + "2\r\n{}\r\nzz\r\n", `bad chunk size: "zz"`},
		{"content length", rawHead("m-1", "Content-Length: 2\r\n", "Content-Length: 3\r\n") + "{}", `bad Content-Length: "2, 3"`},
		{"head size", rawHead("m-1", "X-Long: ") + strings.Repeat("x", 1<<20), "head or line longer than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newRawAPI(t, nil)
			p := startRawEcho(t, a)
			a.answers <- rawAnswer{pieces: []string{tc.answer}}
			if code := p.waitExit(t); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if want := "Error: Runtime API answer is malformed: " + tc.want + "\n"; !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr %q, want it to say %q", p.stderr.String(), want)
			}
		})
	}
}

const nodeStreamApp = `const write = (stream, data) => new Promise((resolve, reject) => stream.write(data, (err) => (err ? reject(err) : resolve())));

exports.handler = awslambda.streamifyResponse(async (event, stream) => {
  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, event.sleep));
  if (event.type) stream.setContentType(event.type);
  await write(stream, 'part-1 ');
  await write(stream, '');
  if (event.big) await write(stream, Buffer.alloc(event.big, 'x'));
  stream.write('part-2');
  if (event.fail) throw new RangeError('broke mid-stream');
  stream.end();
});
`

// TestNodeResponseStream: a streamifyResponse handler's writes are posted
// as a chunked body (an empty write adding nothing, a large one paced by
// the socket), in streaming mode, with the content type it set before
// writing (or application/octet-stream; one a header cannot hold fails
// the handler); a rejection ends the body with the error trailers. The
// connection is kept throughout, and a new one made for the post if the
// server closed the kept one while the handler ran.
func TestNodeResponseStream(t *testing.T) {
	a := newRawAPI(t, nil)
	root := writeFiles(t, map[string]string{"index.js": nodeStreamApp})
	startNode(t, a.shim, root, "index.handler")
	answer := func(id, event string) rawAnswer {
		return rawAnswer{pieces: []string{rawHead(id, fmt.Sprintf("Content-Length: %d\r\n", len(event))) + event}}
	}
	big := 8 << 20
	for _, tc := range []struct {
		event, body, contentType, errorType, errorMessage string
	}{
		{event: `{"type":"text/plain"}`, body: "part-1 part-2", contentType: "text/plain"},
		{event: `{}`, body: "part-1 part-2", contentType: "application/octet-stream"},
		{event: fmt.Sprintf(`{"big":%d}`, big), body: "part-1 " + strings.Repeat("x", big) + "part-2", contentType: "application/octet-stream"},
		{event: `{"fail":true}`, body: "part-1 part-2", contentType: "application/octet-stream", errorType: "RangeError", errorMessage: "broke mid-stream"},
		{event: `{"type":"a\r\nX-Injected: 1"}`, contentType: "application/octet-stream", errorType: "TypeError", errorMessage: `Invalid Content-Type "a\r\nX-Injected: 1"`},
	} {
		got := a.invoke(t, "s-1", answer("s-1", tc.event))
		h := got.header
		if !got.chunked || h.Get("Content-Length") != "" || h.Get("Content-Type") != tc.contentType ||
			h.Get("Lambda-Runtime-Function-Response-Mode") != "streaming" ||
			h.Get("X-Injected") != "" || len(got.trailer) != 2 {
			// net/http takes the Trailer header into the request's Trailer.
			t.Errorf("%s: posted with chunked=%v, header %v and trailers declared %v", tc.event, got.chunked, h, got.trailer)
		}
		if string(got.body) != tc.body {
			t.Errorf("%s: posted %d bytes %.40q, want %d bytes %.40q", tc.event, len(got.body), got.body, len(tc.body), tc.body)
		}
		doc, _ := base64.StdEncoding.DecodeString(got.trailer.Get("Lambda-Runtime-Function-Error-Body"))
		var e struct{ ErrorType, ErrorMessage string }
		json.Unmarshal(doc, &e)
		if got.trailer.Get("Lambda-Runtime-Function-Error-Type") != tc.errorType || e.ErrorType != tc.errorType || e.ErrorMessage != tc.errorMessage {
			t.Errorf("%s: trailers %v (body %s), want error %s %q", tc.event, got.trailer, doc, tc.errorType, tc.errorMessage)
		}
	}
	if got := a.requests(); len(got) != 10 || got[9] != "POST 1.10" {
		t.Errorf("requests (method conn.nth) %v, want 10 on one kept connection", got)
	}

	// Closed 20 ms after the answer, while the handler sleeps.
	ans := answer("s-2", `{"sleep":100}`)
	ans.close, ans.linger = true, 20*time.Millisecond
	if got := a.invoke(t, "s-2", ans); string(got.body) != "part-1 part-2" || got.conn != 2 {
		t.Errorf("after the server closed the kept connection: posted %q on connection %d, want part-1 part-2 on a new one (2)", got.body, got.conn)
	}
}
