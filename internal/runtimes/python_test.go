package runtimes

import (
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

const pyApp = `import logging
import os

count = 0


def fail():
    raise ValueError("x")


def handler(event, context):
    global count
    count += 1
    action = event.get("action") if isinstance(event, dict) else None
    if action == "raise":
        return fail()
    if action == "set":
        return {1, 2}
    if action == "none":
        return None
    if action == "bytes":
        return b"raw\xffbytes"
    if action == "decimal":
        import decimal
        return {"i": decimal.Decimal("12"), "f": decimal.Decimal("1.5")}
    print("print from", context.aws_request_id)
    logging.getLogger().warning("warned %d", count)
    cc = context.client_context
    return {
        "count": count,
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "cognito_identity_id": context.identity.cognito_identity_id,
        "cognito_identity_pool_id": context.identity.cognito_identity_pool_id,
        "client_context": None if cc is None else {
            "custom": cc.custom,
            "env": cc.env,
            "installation_id": cc.client.installation_id,
        },
        "remaining": context.get_remaining_time_in_millis(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }
`

// lineOf returns the 1-based line of src that contains s.
func lineOf(t *testing.T, src, s string) int {
	t.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in source", s)
	return 0
}

func TestPythonInvocations(t *testing.T) {
	root := writeFiles(t, map[string]string{"app.py": pyApp})
	api := newFakeAPI(t)
	p := startPython(t, api, root, "app.handler")

	// A result and the whole context, from headers and environment.
	got := api.invoke(t, invocation{
		id:            "id-1",
		body:          `{"k":"v"}`,
		trace:         "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
		clientContext: `{"client":{"installation_id":"inst-1","app_title":"t"},"custom":{"a":"b"},"env":{"platform":"p"}}`,
		cognito:       `{"cognitoIdentityId":"cid","cognitoIdentityPoolId":"pool"}`,
		deadline:      time.Now().Add(20 * time.Second),
	})
	if got.kind != "response" {
		t.Fatalf("posted %s %s, want a response", got.kind, got.body)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	res := got.json(t)
	remaining, _ := res["remaining"].(float64)
	if remaining <= 10000 || remaining > 20000 {
		t.Errorf("get_remaining_time_in_millis() = %v, want about 20000", res["remaining"])
	}
	delete(res, "remaining")
	want := map[string]any{
		"count":                    1.0,
		"event":                    map[string]any{"k": "v"},
		"function_name":            "fn",
		"function_version":         "$LATEST",
		"memory_limit_in_mb":       "256",
		"invoked_function_arn":     functionARN,
		"aws_request_id":           "id-1",
		"log_group_name":           "/aws/lambda/fn",
		"log_stream_name":          "2024/01/01/[$LATEST]0123456789abcdef",
		"cognito_identity_id":      "cid",
		"cognito_identity_pool_id": "pool",
		"client_context": map[string]any{
			"custom":          map[string]any{"a": "b"},
			"env":             map[string]any{"platform": "p"},
			"installation_id": "inst-1",
		},
		"trace": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("first result:\n got %v\nwant %v", res, want)
	}

	// The same process serves the next one: globals persist, and what the
	// next invocation lacks is absent rather than left over.
	res = api.invoke(t, invocation{id: "id-2", body: `[1,2]`}).json(t)
	if res["count"] != 2.0 {
		t.Errorf("count = %v, want 2 (globals must persist)", res["count"])
	}
	if res["trace"] != nil || res["client_context"] != nil || res["cognito_identity_id"] != nil {
		t.Errorf("second invocation kept the first one's trace, client context or identity: %v", res)
	}
	if !reflect.DeepEqual(res["event"], []any{1.0, 2.0}) {
		t.Errorf("event = %v", res["event"])
	}

	// An event too large for one buffer arrives chunked from this server
	// (no Content-Length), and a large result goes back whole.
	big := strings.Repeat("x", 300<<10)
	res = api.invoke(t, invocation{id: "id-2b", body: `{"big":"` + big + `"}`}).json(t)
	if ev, _ := res["event"].(map[string]any); ev["big"] != big {
		t.Errorf("a 300 KiB event came back as %d bytes", len(fmt.Sprint(ev["big"])))
	}

	// None is null; bytes go out raw.
	if got := api.invoke(t, invocation{id: "id-3", body: `{"action":"none"}`}); got.kind != "response" || string(got.body) != "null" {
		t.Errorf("None: posted %s %q, want response null", got.kind, got.body)
	}
	got = api.invoke(t, invocation{id: "id-4", body: `{"action":"bytes"}`})
	if got.kind != "response" || string(got.body) != "raw\xffbytes" || got.header.Get("Content-Type") != "application/unknown" {
		t.Errorf("bytes: posted %s %q (%s)", got.kind, got.body, got.header.Get("Content-Type"))
	}

	// Decimal (DynamoDB's numbers): integral values as integers, the
	// others as floats, though the runtime itself never imports decimal.
	got = api.invoke(t, invocation{id: "id-4b", body: `{"action":"decimal"}`})
	if res := got.json(t); got.kind != "response" || res["i"] != 12.0 || res["f"] != 1.5 || strings.Contains(string(got.body), "12.0") {
		t.Errorf("Decimal: posted %s %s", got.kind, got.body)
	}

	// An exception: AWS's exact document, frames from the function only.
	got = api.invoke(t, invocation{id: "id-5", body: `{"action":"raise"}`})
	if got.kind != "error" {
		t.Fatalf("raise: posted %s %s", got.kind, got.body)
	}
	if h, ok := got.header["Lambda-Runtime-Function-Error-Type"]; ok {
		t.Errorf("invocation error with an error type header %q; AWS's runtime sends none", h)
	}
	doc := got.json(t)
	if k := keys(doc); k != "errorMessage,errorType,requestId,stackTrace" {
		t.Errorf("error keys = %s", k)
	}
	file := filepath.Join(root, "app.py")
	wantTrace := []any{
		fmt.Sprintf("  File \"%s\", line %d, in handler\n    return fail()\n", file, lineOf(t, pyApp, "return fail()")),
		fmt.Sprintf("  File \"%s\", line %d, in fail\n    raise ValueError(\"x\")\n", file, lineOf(t, pyApp, `raise ValueError("x")`)),
	}
	if doc["errorMessage"] != "x" || doc["errorType"] != "ValueError" || doc["requestId"] != "id-5" ||
		!reflect.DeepEqual(doc["stackTrace"], wantTrace) {
		t.Errorf("error document = %q\nwant trace %q", doc, wantTrace)
	}

	// What cannot be marshalled or unmarshalled fails the invocation only.
	doc = api.invoke(t, invocation{id: "id-6", body: `{"action":"set"}`}).json(t)
	if doc["errorType"] != "Runtime.MarshalError" ||
		doc["errorMessage"] != "Unable to marshal response: Object of type set is not JSON serializable" ||
		doc["requestId"] != "id-6" {
		t.Errorf("non-serialisable result: %v", doc)
	}
	got = api.invoke(t, invocation{id: "id-7", body: `not json`})
	doc = got.json(t)
	if got.kind != "error" || doc["errorType"] != "Runtime.UnmarshalError" ||
		doc["errorMessage"] != "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)" {
		t.Errorf("non-JSON payload: %s %v", got.kind, doc)
	}
	// The handler ran for every invocation but id-7, whose event never parsed.
	if res := api.invoke(t, invocation{id: "id-8", body: `{}`}).json(t); res["count"] != 9.0 {
		t.Errorf("after failures count = %v, want 9 (the process must survive them)", res["count"])
	}

	// Logs: print as is, logging with AWS's prefix, errors as one event.
	p.eventually(t, "print output", func(s string) bool { return strings.Contains(s, "print from id-1\n") })
	logLine := regexp.MustCompile(`\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\tid-2\twarned 2\n`)
	p.eventually(t, "a logging line", logLine.MatchString)
	errLog := fmt.Sprintf("[ERROR] ValueError: x\rTraceback (most recent call last):\r\u00a0\u00a0File \"%s\", line %d, in handler\r\u00a0\u00a0\u00a0\u00a0return fail()\r",
		file, lineOf(t, pyApp, "return fail()"))
	p.eventually(t, "the error report", func(s string) bool { return strings.Contains(s, errLog) })
}

func TestPythonInitErrors(t *testing.T) {
	cases := []struct {
		name        string
		files       map[string]string
		handler     string
		wantType    string
		wantMessage *regexp.Regexp
		wantTrace   string // prefix of stackTrace[0]; "" wants an empty trace
	}{
		{
			name:        "missing dependency",
			files:       map[string]string{"app.py": "import not_a_module_xyz\n\ndef handler(e, c):\n    return 1\n"},
			handler:     "app.handler",
			wantType:    "Runtime.ImportModuleError",
			wantMessage: regexp.MustCompile(`^Unable to import module 'app': No module named 'not_a_module_xyz'$`),
		},
		{
			name:        "missing module",
			files:       map[string]string{"app.py": ""},
			handler:     "nothere.handler",
			wantType:    "Runtime.ImportModuleError",
			wantMessage: regexp.MustCompile(`^Unable to import module 'nothere': No module named 'nothere'$`),
		},
		{
			name:        "handler not found",
			files:       map[string]string{"app.py": "def handler(e, c):\n    return 1\n"},
			handler:     "app.nope",
			wantType:    "Runtime.HandlerNotFound",
			wantMessage: regexp.MustCompile(`^Handler 'nope' missing on module 'app'$`),
		},
		{
			name:        "syntax error",
			files:       map[string]string{"app.py": "def handler(e, c)\n    return 1\n"},
			handler:     "app.handler",
			wantType:    "Runtime.UserCodeSyntaxError",
			wantMessage: regexp.MustCompile(`^Syntax error in module 'app': .+ \(app\.py, line 1\)$`),
			wantTrace:   `  File "{root}/app.py" Line 1` + "\n    def handler(e, c)",
		},
		{
			name:        "malformed handler",
			files:       map[string]string{"app.py": ""},
			handler:     "app",
			wantType:    "Runtime.MalformedHandlerName",
			wantMessage: regexp.MustCompile(`^Bad handler 'app': not enough values to unpack`),
		},
		{
			name:        "exception at import",
			files:       map[string]string{"app.py": "raise KeyError('boom')\n"},
			handler:     "app.handler",
			wantType:    "KeyError",
			wantMessage: regexp.MustCompile(`^'boom'$`),
			wantTrace:   `  File "{root}/app.py", line 1, in <module>`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := writeFiles(t, tc.files)
			api := newFakeAPI(t)
			p := startPython(t, api, root, tc.handler)
			got := api.await(t)
			if got.kind != "init" {
				t.Fatalf("posted %s %s, want an init error", got.kind, got.body)
			}
			doc := got.json(t)
			if k := keys(doc); k != "errorMessage,errorType,requestId,stackTrace" {
				t.Errorf("keys = %s", k)
			}
			msg, _ := doc["errorMessage"].(string)
			if doc["errorType"] != tc.wantType || !tc.wantMessage.MatchString(msg) || doc["requestId"] != "" {
				t.Errorf("init error = %v, want type %s, message %s", doc, tc.wantType, tc.wantMessage)
			}
			if h := got.header.Get("Lambda-Runtime-Function-Error-Type"); h != tc.wantType {
				t.Errorf("error type header = %q, want %q", h, tc.wantType)
			}
			trace, _ := doc["stackTrace"].([]any)
			if tc.wantTrace == "" {
				if len(trace) != 0 {
					t.Errorf("stackTrace = %q, want []", trace)
				}
			} else {
				prefix := strings.ReplaceAll(tc.wantTrace, "{root}", root)
				if len(trace) == 0 || !strings.HasPrefix(fmt.Sprint(trace[len(trace)-1]), prefix) {
					t.Errorf("stackTrace = %q, want its last frame to start with %q", trace, prefix)
				}
			}
			if code := p.waitExit(t); code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			logHead := "[ERROR] " + tc.wantType + ": " + msg + "\rTraceback (most recent call last):"
			if !strings.Contains(p.stdout.String(), logHead) {
				t.Errorf("stdout lacks %q:\n%q", logHead, p.stdout.String())
			}
		})
	}
}

// TestPythonConnections: see testConnections.
func TestPythonConnections(t *testing.T) {
	root := writeFiles(t, map[string]string{"app.py": "def handler(e, c):\n    return e\n"})
	testConnections(t, func(api *fakeAPI) { startPython(t, api, root, "app.handler") },
		func(id string) string { return `{"id": "` + id + `"}` })
}

func TestPythonNestedModules(t *testing.T) {
	root := writeFiles(t, map[string]string{
		"pkg/sub/mod.py": "def handler(e, c):\n    return __name__\n",
		// A function module may share the runtime file's name.
		"bootstrap.py": "def handler(e, c):\n    return __file__\n",
	})
	for handler, want := range map[string]string{
		"pkg/sub/mod.handler": `"pkg.sub.mod"`,
		"pkg.sub.mod.handler": `"pkg.sub.mod"`,
		"bootstrap.handler":   fmt.Sprintf("%q", filepath.Join(root, "bootstrap.py")),
	} {
		t.Run(handler, func(t *testing.T) {
			api := newFakeAPI(t)
			startPython(t, api, root, handler)
			got := api.invoke(t, invocation{id: "n-1", body: `{}`})
			if got.kind != "response" || string(got.body) != want {
				t.Errorf("posted %s %s, want response %s", got.kind, got.body, want)
			}
		})
	}
}

func TestPythonJSONLogs(t *testing.T) {
	root := writeFiles(t, map[string]string{"app.py": "import logging\n\ndef handler(e, c):\n    logging.getLogger('mine').info('hi %s', 'there')\n    return 1\n"})
	api := newFakeAPI(t)
	p := startPython(t, api, root, "app.handler", "AWS_LAMBDA_LOG_FORMAT=JSON", "AWS_LAMBDA_LOG_LEVEL=INFO")
	if got := api.invoke(t, invocation{id: "j-1", body: `{}`}); string(got.body) != "1" {
		t.Fatalf("posted %s %s", got.kind, got.body)
	}
	line := regexp.MustCompile(`\{"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "level": "INFO", "message": "hi there", "logger": "mine", "requestId": "j-1"\}\n`)
	p.eventually(t, "a JSON log line", line.MatchString)
}

// TestPythonJSONLogsException: logger.exception in JSON logs carries the
// error's type, message, stack and where it was logged.
func TestPythonJSONLogsException(t *testing.T) {
	root := writeFiles(t, map[string]string{"app.py": `import logging


def handler(e, c):
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("mine").exception("caught")
    return 1
`})
	api := newFakeAPI(t)
	p := startPython(t, api, root, "app.handler", "AWS_LAMBDA_LOG_FORMAT=JSON")
	if got := api.invoke(t, invocation{id: "x-1", body: `{}`}); string(got.body) != "1" {
		t.Fatalf("posted %s %s", got.kind, got.body)
	}
	line := regexp.MustCompile(`"level": "ERROR", "message": "caught", "logger": "mine", "requestId": "x-1", "errorType": "ValueError", "errorMessage": "bad", "stackTrace": \["  File \\".*app.py\\", line 6, in handler\\n    raise ValueError\(\\"bad\\"\)\\n"\], "location": ".*app.py:handler:8"\}\n`)
	p.eventually(t, "a JSON log line with the exception", line.MatchString)
}

// TestPythonLoggingSetUpOnImport: the runtime does not import logging
// itself (a sixth of its start); whoever first imports it, the function
// during init or an invocation, a library, or something before the
// runtime started, finds the root logger with Lambda's handler, once, and
// the module as the import system made it.
func TestPythonLoggingSetUpOnImport(t *testing.T) {
	const app = `import sys

loaded_at_init = "logging" in sys.modules


def handler(event, context):
    before = "logging" in sys.modules
    if event.get("via") == "library":
        import concurrent.futures  # imports logging itself

        assert "logging" in sys.modules
    if event.get("via") == "find_spec":
        import importlib.util

        importlib.util.find_spec("logging")  # found, not run
    import logging
    logging.getLogger("mine").warning("late %s", "line")
    loader = logging.__loader__
    return {
        "loaded_at_init": loaded_at_init,
        "loaded_before_handler": before,
        "handlers": len(logging.getLogger().handlers),
        "loader": type(loader).__name__,
        "spec_loader_is_loader": logging.__spec__.loader is loader,
    }
`
	want := regexp.MustCompile(`\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\tq-1\tlate line\n`)
	t.Run("by the function", func(t *testing.T) {
		root := writeFiles(t, map[string]string{"app.py": app})
		api := newFakeAPI(t)
		p := startPython(t, api, root, "app.handler")
		doc := api.invoke(t, invocation{id: "q-1", body: `{}`}).json(t)
		if doc["loaded_at_init"] != false || doc["loaded_before_handler"] != false {
			t.Errorf("logging was imported before the function imported it: %v", doc)
		}
		if doc["handlers"] != float64(1) || doc["loader"] != "SourceFileLoader" || doc["spec_loader_is_loader"] != true {
			t.Errorf("logging as the function sees it: %v, want one root handler and the import system's own loader", doc)
		}
		p.eventually(t, "a Lambda log line", want.MatchString)
	})
	// A library importing logging, and a find_spec that finds it without
	// running it first.
	for _, via := range []string{"library", "find_spec"} {
		t.Run("via "+via, func(t *testing.T) {
			root := writeFiles(t, map[string]string{"app.py": app})
			api := newFakeAPI(t)
			p := startPython(t, api, root, "app.handler")
			doc := api.invoke(t, invocation{id: "q-1", body: `{"via": "` + via + `"}`}).json(t)
			if doc["handlers"] != float64(1) {
				t.Errorf("root handlers = %v, want 1", doc["handlers"])
			}
			p.eventually(t, "a Lambda log line", want.MatchString)
		})
	}
	t.Run("before the runtime", func(t *testing.T) {
		// sitecustomize runs while the interpreter starts, before the
		// runtime's own code.
		site := writeFiles(t, map[string]string{"sitecustomize.py": "import logging\n"})
		root := writeFiles(t, map[string]string{"app.py": app})
		api := newFakeAPI(t)
		p := startPython(t, api, root, "app.handler", "PYTHONPATH="+site)
		doc := api.invoke(t, invocation{id: "q-1", body: `{}`}).json(t)
		if doc["loaded_at_init"] != true || doc["handlers"] != float64(1) {
			t.Errorf("logging imported before the runtime: %v, want it loaded at init with one root handler", doc)
		}
		p.eventually(t, "a Lambda log line", want.MatchString)
	})
}

// TestPythonStdlibNotShadowed: Lambda's runtime imports logging and
// traceback before the function's directory goes first on sys.path, so a
// function module named like one of them, or like a module they import,
// never replaces the standard library's there; nor does it here, though
// the runtime imports them only when needed. And an error is reported
// even when a directory the function adds later hides what traceback
// needs.
func TestPythonStdlibNotShadowed(t *testing.T) {
	const app = `import os
import sys


def handler(event, context):
    if event.get("hide"):
        d = "/tmp/hide-%d" % os.getpid()
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "linecache.py"), "w") as f:
            f.write("raise ImportError('not the standard library')\n")
        sys.path.insert(0, d)
    if event.get("raise"):
        raise ValueError("bad")
    import logging
    import string

    logging.getLogger().warning("stdlib %s", "logging")
    return {"logging": logging.__file__, "string": string.__file__, "handlers": len(logging.getLogger().handlers)}
`
	for _, shadow := range []string{"logging.py", "token.py", "string.py"} {
		t.Run(shadow, func(t *testing.T) {
			root := writeFiles(t, map[string]string{"app.py": app, shadow: "raise ImportError('a function module')\n"})
			api := newFakeAPI(t)
			p := startPython(t, api, root, "app.handler")
			got := api.invoke(t, invocation{id: "s-1", body: `{}`})
			doc := got.json(t)
			if got.kind != "response" || strings.HasPrefix(fmt.Sprint(doc["logging"]), root) || strings.HasPrefix(fmt.Sprint(doc["string"]), root) || doc["handlers"] != float64(1) {
				t.Errorf("with %s in the task root: posted %s %v, want the standard library's modules and one root handler", shadow, got.kind, doc)
			}
			p.eventually(t, "a Lambda log line", regexp.MustCompile(`\[WARNING\]\t[^\t]+\ts-1\tstdlib logging\n`).MatchString)
			got = api.invoke(t, invocation{id: "s-2", body: `{"raise": true}`})
			if doc := got.json(t); got.kind != "error" || doc["errorType"] != "ValueError" {
				t.Errorf("with %s in the task root, an exception: posted %s %v", shadow, got.kind, doc)
			}
		})
	}
	t.Run("hidden later", func(t *testing.T) {
		root := writeFiles(t, map[string]string{"app.py": app})
		api := newFakeAPI(t)
		startPython(t, api, root, "app.handler")
		got := api.invoke(t, invocation{id: "s-3", body: `{"hide": true, "raise": true}`})
		doc := got.json(t)
		trace, _ := doc["stackTrace"].([]any)
		if got.kind != "error" || doc["errorType"] != "ValueError" || len(trace) != 1 || !strings.Contains(fmt.Sprint(trace[0]), "in handler") {
			t.Errorf("an exception with traceback's imports hidden: posted %s %v", got.kind, doc)
		}
	})
}
