package invoke_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

// pycHandler reports, for each of its modules, whether CPython's cache
// holds a .pyc it would use: present, timestamp-checked, naming the
// source's modification time and size (PEP 552), and whether the function
// can write there.
const pycHandler = `import importlib.util, os, struct
import pkg.mod
try:
    import layermod  # /opt/python is on the path, as on Lambda
except ImportError:
    layermod = None

def state(path):
    cached = importlib.util.cache_from_source(path)
    try:
        with open(cached, "rb") as f:
            head = f.read(16)
    except OSError:
        return "missing"
    st = os.stat(path)
    flags, mtime, size = struct.unpack("<III", head[4:16])
    if head[:4] != importlib.util.MAGIC_NUMBER or flags or mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
        return "stale"
    try:
        open(cached, "ab").close()
        return "writable"
    except OSError:
        return "ok"

def handler(event, context):
    root = os.environ["LAMBDA_TASK_ROOT"]
    out = {name: state(os.path.join(root, name)) for name in ["app.py", "pkg/mod.py", "pkg/__init__.py", "bad.py"]}
    if layermod:
        out["layer"] = state(layermod.__file__)
    return out
`

// TestPythonCompiledAhead: nubo compiles a Python function's code and
// layers once, in a sandbox of its own, and the function's environments
// find valid, read-only .pyc files beside the sources; a file that does not
// compile is left out, the rest are not.
func TestPythonCompiledAhead(t *testing.T) {
	rt := managedRuntime(t, runtimes.FamilyPython, "python3")
	switch os.Getenv("NUBO_TEST_ISOLATION") {
	case "microvm":
		t.Skip("the microVM tier copies the code into its guests: nothing is compiled ahead there")
	case "process":
		t.Skip("process isolation: the function runs as nubo's user, its code is writable, and it writes its own .pyc files")
	}
	h := newHarness(t)
	layer, err := h.c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{
		LayerName: aws.String("py-pyc-layer"),
		Content: &types.LayerVersionContentInput{ZipFile: ziptest.Zip(t,
			ziptest.File{Name: "python/layermod.py", Body: []byte("VALUE = 1\n")})},
	})
	if err != nil {
		t.Fatal(err)
	}
	code := ziptest.Zip(t,
		ziptest.File{Name: "app.py", Body: []byte(pycHandler)},
		ziptest.File{Name: "pkg/__init__.py", Body: []byte("")},
		ziptest.File{Name: "pkg/mod.py", Body: []byte("def f():\n    return 1\n")},
		ziptest.File{Name: "bad.py", Body: []byte("def (:\n")},
	)
	h.create(t, "py-pyc", code, func(in *lambda.CreateFunctionInput) {
		in.Runtime = types.Runtime(rt)
		in.Handler = aws.String("app.handler")
		in.Layers = []string{aws.ToString(layer.LayerVersionArn)}
	})
	want := map[string]string{"app.py": "ok", "pkg/mod.py": "ok", "pkg/__init__.py": "ok", "layer": "ok", "bad.py": "missing"}
	var got map[string]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := h.invokeOK(t, "py-pyc", []byte(`{}`))
		got = nil
		if err := json.Unmarshal(r.Payload, &got); err != nil {
			t.Fatalf("answered %s", r.Payload)
		}
		done := true
		for p, s := range got {
			if s != want[p] {
				done = false
			}
		}
		if done && len(got) == len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for p, s := range want {
		if got[p] != s {
			t.Errorf("%s: %q, want %q", p, got[p], s)
		}
	}

	// Another account deploying the same zip (so the same unpacked code)
	// does not find what was compiled for this one: its first environment
	// runs before its own compilation, from its own copy.
	a := servertest.Client(h.s.URL, servertest.AccountA.AccessKeys[0].AccessKeyID, servertest.AccountA.AccessKeys[0].SecretAccessKey)
	other := &harness{s: h.s, c: a}
	other.create(t, "py-pyc", code, func(in *lambda.CreateFunctionInput) {
		in.Runtime = types.Runtime(rt)
		in.Handler = aws.String("app.handler")
		in.Role = aws.String("arn:aws:iam::" + servertest.AccountA.AccountID + ":role/r")
	})
	r := other.invokeOK(t, "py-pyc", []byte(`{}`))
	got = nil
	if err := json.Unmarshal(r.Payload, &got); err != nil {
		t.Fatalf("account A's function answered %s", r.Payload)
	}
	for _, p := range []string{"app.py", "pkg/mod.py", "pkg/__init__.py"} {
		if got[p] != "missing" {
			t.Errorf("account A's first environment: %s is %q, want missing (compiled for another account)", p, got[p])
		}
	}
}
