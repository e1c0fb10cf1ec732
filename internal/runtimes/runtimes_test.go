package runtimes

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// entry is a file of a fake userland.
type entry struct {
	mode    os.FileMode
	content string
}

// userland builds a fake userland of files and symlinks (name → target).
func userland(t *testing.T, files map[string]entry, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, e := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(e.content), e.mode); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range links {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDetectUserland(t *testing.T) {
	says := func(out string) entry { return entry{0o755, "#!/bin/sh\necho " + out + "\n"} }
	never := entry{0o755, "#!/bin/sh\nexit 3\n"} // versioned by name: never run
	root := userland(t, map[string]entry{
		"usr/bin/python3.12":    never,
		"usr/bin/python3.7":     never,                 // too old for the RIC
		"usr/bin/python3.10":    {0o644, ""},           // not executable
		"opt/py/bin/python3.13": never,                 // reached through an absolute link
		"var/lang/bin/python3":  says("Python 3.14.0"), // unversioned: asked
		"usr/bin/node":          says("v22.11.0"),
		"usr/local/bin/node":    says("v16.20.2"), // too old for the RIC
	}, map[string]string{
		"usr/bin/python3":       "python3.12",
		"usr/local/bin/python3": "/opt/py/bin/python3.13",
		// Absolute targets resolve inside the userland, never on the host.
		"usr/local/bin/python3.9": "/usr/bin/python3.11",
		"bin":                     "usr/bin",
	})
	got, err := Detect(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Runtime{
		{ID: "provided.al2023", Family: FamilyProvided},
		{ID: "provided.al2", Family: FamilyProvided},
		{ID: "provided", Family: FamilyProvided},
		{ID: "python3.14", Family: FamilyPython, Interpreter: "/var/lang/bin/python3", ExecutionEnv: "AWS_Lambda_python3.14"},
		{ID: "python3.13", Family: FamilyPython, Interpreter: "/usr/local/bin/python3", ExecutionEnv: "AWS_Lambda_python3.13"},
		{ID: "python3.12", Family: FamilyPython, Interpreter: "/usr/bin/python3", ExecutionEnv: "AWS_Lambda_python3.12"},
		{ID: "nodejs22.x", Family: FamilyNodejs, Interpreter: "/usr/bin/node", ExecutionEnv: "AWS_Lambda_nodejs22.x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Detect:\n got %+v\nwant %+v", got, want)
	}

	if _, err := Detect(filepath.Join(root, "nope")); err == nil {
		t.Error("Detect of a missing root succeeded")
	}
}

func TestResolveInStaysInRoot(t *testing.T) {
	root := userland(t, map[string]entry{"usr/bin/real": {0o755, ""}}, map[string]string{
		"a":          "../../../../usr/bin/real",
		"usr/bin/b":  "/a",
		"loop1":      "loop2",
		"loop2":      "loop1",
		"usr/bin/up": "../../../../..",
	})
	for p, want := range map[string]string{
		"/usr/bin/b":       "/usr/bin/real",
		"/usr/bin/up/a":    "/usr/bin/real",
		"/bin/../usr/bin/": "",
	} {
		got, err := resolveIn(root, p)
		if want == "" {
			if err == nil {
				t.Errorf("resolveIn(%q) = %q, want an error (no /bin here)", p, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("resolveIn(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	if _, err := resolveIn(root, "/loop1"); err == nil {
		t.Error("a symlink loop resolved")
	}
}

// TestDetectHost checks what Detect reports for this machine against the
// interpreters' own answers.
func TestDetectHost(t *testing.T) {
	rts, err := Detect("/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("detected: %+v", rts)
	families := map[string]bool{}
	for _, rt := range rts {
		families[rt.Family] = true
		if rt.Family == FamilyProvided {
			if rt.Interpreter != "" || rt.ExecutionEnv != "" {
				t.Errorf("provided runtime with an interpreter: %+v", rt)
			}
			continue
		}
		out, err := exec.Command(rt.Interpreter, "--version").CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v", rt.Interpreter, err)
			continue
		}
		var id string
		if m := regexp.MustCompile(`^Python (3\.\d+)`).FindStringSubmatch(string(out)); m != nil {
			id = "python" + m[1]
		} else if m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(string(out)); m != nil {
			id = "nodejs" + m[1] + ".x"
		}
		if rt.ID != id || rt.ExecutionEnv != "AWS_Lambda_"+id {
			t.Errorf("%+v, but %s --version says %q", rt, rt.Interpreter, out)
		}
	}
	if !families[FamilyProvided] {
		t.Error("provided runtimes missing")
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil && !families[FamilyPython] {
		t.Error("/usr/bin/python3 exists but no python runtime was detected")
	}
	if _, err := os.Stat("/usr/bin/node"); err == nil && !families[FamilyNodejs] {
		t.Error("/usr/bin/node exists but no nodejs runtime was detected")
	}
}

func TestBootstrap(t *testing.T) {
	for family, file := range map[string]string{FamilyPython: "python/bootstrap.py", FamilyNodejs: "node/bootstrap.js"} {
		name, src, ok := Bootstrap(family)
		disk, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || name != filepath.Base(file) || !bytes.Equal(src, disk) {
			t.Errorf("Bootstrap(%q) = %q, %d bytes, %v; want %s", family, name, len(src), ok, file)
		}
		src[0] ^= 0xff // callers get a copy, never the embedded bytes
		if _, again, _ := Bootstrap(family); !bytes.Equal(again, disk) {
			t.Errorf("Bootstrap(%q) handed out the embedded bytes", family)
		}
	}
	if _, _, ok := Bootstrap(FamilyProvided); ok {
		t.Error("provided runtimes have no RIC")
	}
}

func TestCommand(t *testing.T) {
	py := Runtime{ID: "python3.11", Family: FamilyPython, Interpreter: "/usr/bin/python3"}
	if got := Command(py, "/var/runtime/bootstrap.py", 128); !reflect.DeepEqual(got, []string{"/usr/bin/python3", "-u", "/var/runtime/bootstrap.py"}) {
		t.Errorf("python: %q", got)
	}
	node := Runtime{ID: "nodejs20.x", Family: FamilyNodejs, Interpreter: "/usr/bin/node"}
	if got := Command(node, "/var/runtime/bootstrap.js", 128); !reflect.DeepEqual(got, []string{"/usr/bin/node", "--expose-gc", "--max-http-header-size", "81920",
		"--max-semi-space-size=6", "--max-old-space-size=116", "/var/runtime/bootstrap.js"}) {
		t.Errorf("node: %q", got)
	}
	provided := Runtime{ID: "provided.al2023", Family: FamilyProvided}
	for _, tc := range []struct {
		present []string
		want    string
	}{
		{[]string{"/var/task/bootstrap", "/opt/bootstrap"}, "/var/task/bootstrap"},
		{[]string{"/opt/bootstrap", "/var/runtime/bootstrap"}, "/opt/bootstrap"},
		{[]string{"/var/runtime/bootstrap"}, "/var/runtime/bootstrap"},
		{nil, "/var/task/bootstrap"},
	} {
		exists := func(p string) bool { return strings.Contains(strings.Join(tc.present, " "), p) }
		if got := command(provided, "", 128, exists); !reflect.DeepEqual(got, []string{tc.want}) {
			t.Errorf("provided with %q: %q, want %q", tc.present, got, tc.want)
		}
	}
}

// TestPrecompile: the Python RIC is compiled once per source and
// interpreter, a changed source gets a new file (the old one goes), and
// the command runs the compiled file.
func TestPrecompile(t *testing.T) {
	py := testutil.RequiresBinary(t, "python3")
	dir := t.TempDir()
	write := func(src string) {
		if err := os.WriteFile(filepath.Join(dir, "bootstrap.py"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rts := []Runtime{{ID: "python", Family: FamilyPython, Interpreter: py}, {ID: "provided", Family: FamilyProvided}}
	write("print('one')\n")
	got, err := Precompile(dir, "/var/runtime", rts)
	if err != nil || got[0].Compiled == "" || got[1].Compiled != "" {
		t.Fatalf("Precompile: %+v, %v", got, err)
	}
	first := got[0].Compiled
	argv := Command(got[0], filepath.Join(dir, "bootstrap.py"), 128)
	if out, err := exec.Command(argv[0], argv[1:]...).Output(); err != nil || string(out) != "one\n" {
		t.Fatalf("%v: %q, %v", argv, out, err)
	}
	write("print('two')\n")
	got, err = Precompile(dir, "/var/runtime", rts)
	if err != nil || got[0].Compiled == first {
		t.Fatalf("a changed source kept %s (%v)", got[0].Compiled, err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); err == nil {
		t.Errorf("%s of the old source is still there", first)
	}
	argv = Command(got[0], filepath.Join(dir, "bootstrap.py"), 128)
	if out, err := exec.Command(argv[0], argv[1:]...).Output(); err != nil || string(out) != "two\n" {
		t.Fatalf("%v: %q, %v", argv, out, err)
	}
}
