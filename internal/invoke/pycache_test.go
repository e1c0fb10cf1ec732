package invoke_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
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
	// gets a copy of its own: nothing is compiled into the shared entry,
	// and what the other account's functions read is never this one's.
	sum := sha256.Sum256(code)
	entry := filepath.Join(h.s.DataDir, "code", "code", hex.EncodeToString(sum[:]))
	tag := cacheTag(t, rt)
	mine := filepath.Join(entry+"@000000000000", "__pycache__", "app."+tag+".pyc")
	if _, err := os.Stat(mine); err != nil {
		t.Fatalf("this account's copy: %v", err)
	}
	a := servertest.Client(h.s.URL, servertest.AccountA.AccessKeys[0].AccessKeyID, servertest.AccountA.AccessKeys[0].SecretAccessKey)
	other := &harness{s: h.s, c: a}
	other.create(t, "py-pyc", code, func(in *lambda.CreateFunctionInput) {
		in.Runtime = types.Runtime(rt)
		in.Handler = aws.String("app.handler")
		in.Role = aws.String("arn:aws:iam::" + servertest.AccountA.AccountID + ":role/r")
	})
	other.invokeOK(t, "py-pyc", []byte(`{}`))
	if _, err := os.Stat(filepath.Join(entry, "__pycache__")); !os.IsNotExist(err) {
		t.Errorf("the shared entry has a __pycache__: %v", err)
	}
	theirs := filepath.Join(entry+"@"+servertest.AccountA.AccountID, "__pycache__", "app."+tag+".pyc")
	if _, err := os.Stat(filepath.Dir(filepath.Dir(theirs))); err != nil {
		t.Errorf("account A's copy: %v", err)
	}
	if a, err := os.Stat(theirs); err == nil {
		if b, _ := os.Stat(mine); os.SameFile(a, b) {
			t.Errorf("account A reads the .pyc compiled for the development account")
		}
	}
}

// TestPythonCompiledAtDeploy: a function left alone after it is deployed
// is compiled before its first cold start, which then imports nothing it
// must compile.
func TestPythonCompiledAtDeploy(t *testing.T) {
	rt := managedRuntime(t, runtimes.FamilyPython, "python3")
	if iso := os.Getenv("NUBO_TEST_ISOLATION"); iso == "microvm" || iso == "process" {
		t.Skip("nothing is compiled ahead under " + iso + " isolation (see TestPythonCompiledAhead)")
	}
	h := newHarness(t)
	code := ziptest.Zip(t,
		ziptest.File{Name: "app.py", Body: []byte(pycHandler + "# deployed\n")},
		ziptest.File{Name: "pkg/__init__.py", Body: []byte("")},
		ziptest.File{Name: "pkg/mod.py", Body: []byte("def f():\n    return 2\n")},
	)
	h.create(t, "py-deployed", code, func(in *lambda.CreateFunctionInput) {
		in.Runtime = types.Runtime(rt)
		in.Handler = aws.String("app.handler")
	})
	// The last file the compiler's answer holds (it walks the tree in
	// order, and Apply writes in the answer's order): once it is there,
	// all are.
	sum := sha256.Sum256(code)
	pyc := filepath.Join(h.s.DataDir, "code", "code", hex.EncodeToString(sum[:])+"@000000000000", "pkg", "__pycache__", "mod."+cacheTag(t, rt)+".pyc")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(pyc); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not compiled a minute after its deployment: %s", pyc)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := h.invokeOK(t, "py-deployed", []byte(`{}`))
	var got map[string]string
	if err := json.Unmarshal(r.Payload, &got); err != nil {
		t.Fatalf("answered %s", r.Payload)
	}
	for _, p := range []string{"app.py", "pkg/mod.py", "pkg/__init__.py"} {
		if got[p] != "ok" {
			t.Errorf("first environment: %s is %q, want ok", p, got[p])
		}
	}
}

// cacheTag is the tag of rt's .pyc files ("cpython-311").
func cacheTag(t *testing.T, rt string) string {
	tag := runtimes.CacheTag(runtimes.Runtime{ID: rt, Family: runtimes.FamilyPython})
	if tag == "" {
		t.Fatalf("no cache tag for %s", rt)
	}
	return tag
}
