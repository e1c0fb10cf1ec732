package runtimes

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nubo-dev/nubo/internal/pycache"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// startCompiler runs the embedded compiler as nubo does (see package
// worker's compile), against the fake Runtime API, for taskRoot and opt.
func startCompiler(t *testing.T, api *fakeAPI, taskRoot, opt string, limit int) *exec.Cmd {
	t.Helper()
	py := testutil.RequiresBinary(t, "python3")
	name, src := Compiler()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-I", "-S", filepath.Join(dir, name))
	cmd.Dir = taskRoot
	cmd.Env = append(hostEnv(), "AWS_LAMBDA_RUNTIME_API="+api.addr(), "LAMBDA_TASK_ROOT="+taskRoot,
		"NUBO_OPT_DIR="+opt, "NUBO_PYC_LIMIT="+strconv.Itoa(limit), "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	api.exited = done
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("compiler stderr:\n%s", stderr.String())
		}
	})
	return cmd
}

func cacheTag(t *testing.T) string {
	out, err := exec.Command(testutil.RequiresBinary(t, "python3"), "-c", "import sys; print(sys.implementation.cache_tag)").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func zipNames(t *testing.T, b []byte) []string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("the answer is not a zip: %v", err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return names
}

// TestCompiler: the compiler answers its invocation with the .pyc files of
// every source of the code and layers that compiles and has none yet, and
// package pycache takes every one of them.
func TestCompiler(t *testing.T) {
	tag := cacheTag(t)
	task := writeFiles(t, map[string]string{
		"app.py":             "import pkg.mod\n",
		"pkg/__init__.py":    "",
		"pkg/mod.py":         "def f():\n    return 1\n",
		"bad.py":             "def (:\n",
		"shipped.py":         "x = 1\n",
		"notes.txt":          "not python\n",
		"pkg/data/schema.py": "SCHEMA = {}\n",
	})
	if err := os.MkdirAll(filepath.Join(task, "__pycache__"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(task, "__pycache__", "shipped."+tag+".pyc"), []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("pkg", filepath.Join(task, "link")); err != nil {
		t.Fatal(err)
	}
	opt := writeFiles(t, map[string]string{"python/layermod.py": "VALUE = 1\n"})
	api := newFakeAPI(t)
	startCompiler(t, api, task, opt, 6_000_000)
	p := api.invoke(t, invocation{id: "compile-1", body: "{}"})
	if p.kind != "response" {
		t.Fatalf("compiler posted %s: %s", p.kind, p.body)
	}
	want := []string{
		"opt/python/__pycache__/layermod." + tag + ".pyc",
		"task/__pycache__/app." + tag + ".pyc",
		"task/pkg/__pycache__/__init__." + tag + ".pyc",
		"task/pkg/__pycache__/mod." + tag + ".pyc",
		"task/pkg/data/__pycache__/schema." + tag + ".pyc",
	}
	if got := zipNames(t, p.body); !slices.Equal(got, want) {
		t.Fatalf("archive:\n got %q\nwant %q", got, want)
	}
	if pycache.Partial(p.body) {
		t.Error("a whole run says it is partial")
	}
	n, err := pycache.Apply(context.Background(), p.body, tag, map[string]string{"task": task, "opt": opt})
	if err != nil || n != len(want) {
		t.Fatalf("applied %d of %d: %v", n, len(want), err)
	}
	// CPython takes them: an import that may write its cache replaces
	// none of them (it would, through a new file, one it found stale).
	inodes := func() []uint64 {
		var ids []uint64
		for _, w := range want {
			top, rel, _ := strings.Cut(w, "/")
			dir := map[string]string{"task": task, "opt": opt}[top]
			fi, err := os.Stat(filepath.Join(dir, rel))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, fi.Sys().(*syscall.Stat_t).Ino)
		}
		return ids
	}
	before := inodes()
	py := testutil.RequiresBinary(t, "python3")
	cmd := exec.Command(py, "-I", "-S", "-c", "import sys; sys.path[:0] = ['"+task+"', '"+opt+"/python']; "+
		"import app, layermod, pkg.data.schema")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if after := inodes(); !slices.Equal(before, after) {
		t.Errorf("CPython rewrote .pyc files nubo wrote: inodes %v, then %v", before, after)
	}
}

// TestCompilerLimit: an answer stays within the limit, a valid zip of the
// files that fit.
func TestCompilerLimit(t *testing.T) {
	files := map[string]string{}
	for i := 0; i < 40; i++ {
		files["m"+strconv.Itoa(i)+".py"] = strings.Repeat("def f"+strconv.Itoa(i)+"(x):\n    return [x * k for k in range(10)]\n", 40)
	}
	// Sorted first, and alone larger than the limit: left out, not the end.
	files["a_big.py"] = strings.Repeat("def g(x):\n    return {'k': [x, x + 1, x * 2]}\n", 2000)
	task := writeFiles(t, files)
	const limit = 12_000
	api := newFakeAPI(t)
	startCompiler(t, api, task, "", limit)
	p := api.invoke(t, invocation{id: "compile-2", body: "{}"})
	if p.kind != "response" {
		t.Fatalf("compiler posted %s: %s", p.kind, p.body)
	}
	names := zipNames(t, p.body)
	if slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "a_big") }) {
		t.Errorf("a file larger than the limit is in the answer: %q", names)
	}
	if len(p.body) > limit || len(names) == 0 || len(names) == len(files) || !pycache.Partial(p.body) {
		t.Errorf("answer of %d bytes (limit %d) with %d of %d files, partial %v", len(p.body), limit, len(names), len(files), pycache.Partial(p.body))
	}
}
