package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// A Python function with a package of its own, as most real ones are: its
// cold start imports code shipped without .pyc files, which CPython
// compiles unless nubo has compiled it ahead (package pycache). The
// package is generated here, so that every run imports the same code
// without fetching any: pkgModules modules of pkgFuncs functions and
// pkgClasses classes each, about 60 KB of source per module.
const (
	pkgName    = "benchpkg"
	pkgModules = 40
	pkgFuncs   = 30
	pkgClasses = 4
)

// pkgSources returns the package's files by path ("benchpkg/mod0.py"), and
// the handler that imports it and echoes its event.
func pkgSources() map[string][]byte {
	files := map[string][]byte{}
	var init strings.Builder
	for m := 0; m < pkgModules; m++ {
		fmt.Fprintf(&init, "from . import mod%d\n", m)
		var b strings.Builder
		fmt.Fprintf(&b, "\"\"\"Module %d of a package nubo-bench generates.\"\"\"\nimport json\n", m)
		for c := 0; c < pkgClasses; c++ {
			fmt.Fprintf(&b, `

class Record%[1]d:
    """A record with a few fields."""

    def __init__(self, name, size=%[1]d, tags=None):
        self.name = name
        self.size = size
        self.tags = list(tags or [])

    def to_dict(self):
        return {"name": self.name, "size": self.size, "tags": [t.upper() for t in self.tags if t]}

    def render(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)
`, c)
		}
		for f := 0; f < pkgFuncs; f++ {
			fmt.Fprintf(&b, `

def handle_%[1]d(event, limit=%[2]d):
    out = []
    for key, value in sorted(event.items()):
        if isinstance(value, (int, float)) and value > limit:
            out.append(f"{key}={value:.2f}")
        elif isinstance(value, str):
            out.append(key + ":" + value.strip().lower())
        elif isinstance(value, dict):
            out.extend(handle_%[1]d(value, limit + 1).split(", "))
        else:
            out.append(repr(value))
    seen = {}
    for item in out:
        seen[item] = seen.get(item, 0) + 1
    return ", ".join(k for k, n in seen.items() if n) or None
`, f, f*3+1)
		}
		files[fmt.Sprintf("%s/mod%d.py", pkgName, m)] = []byte(b.String())
	}
	files[pkgName+"/__init__.py"] = []byte(init.String())
	files["lambda_function.py"] = []byte("import " + pkgName + "\n\n\ndef lambda_handler(event, context):\n    return event\n")
	return files
}

// pkgFloorDirs writes the package twice under dir: as shipped (src) and
// with the .pyc files python compiles for it (compiled), for the floors
// that import it with and without them.
func pkgFloorDirs(python, dir string) (src, compiled string, err error) {
	src, compiled = filepath.Join(dir, "pkg-src"), filepath.Join(dir, "pkg-compiled")
	for _, root := range []string{src, compiled} {
		for name, body := range pkgSources() {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", "", err
			}
			if err := os.WriteFile(p, body, 0o644); err != nil {
				return "", "", err
			}
		}
	}
	if out, err := exec.Command(python, "-m", "compileall", "-q", compiled).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("compileall: %v: %s", err, out)
	}
	return src, compiled, nil
}

// pkgImport is the floor's script: import the package from dir.
func pkgImport(dir string) string {
	return "import sys; sys.path.insert(0, " + fmt.Sprintf("%q", dir) + "); import " + pkgName
}

// pkgJobs are figure 5's series for the function with a package: its cold
// starts, and python importing the package with the .pyc files CPython
// would write (the floor) and without them, compiling (what a cold start
// pays where nothing compiled the package ahead).
func (b *bench) pkgJobs(n *nuboServer) []*job {
	jobs := []*job{b.coldJob(n, b.res.series("nubo-cold-python-pkg",
		fmt.Sprintf("nubo cold (Python, a %d-module package)", pkgModules), "cold"), "cold-pypkg", b.pyPkg, b.cfg.cold)}
	py := interpreter("python3")
	if py == "" {
		return jobs
	}
	floor := b.res.series("floor-python-pkg", py+" imports the package, .pyc cached (floor)", "cold")
	compiling := b.res.series("floor-python-pkg-compile", py+" -B imports the package, compiling", "cold")
	src, compiled, err := pkgFloorDirs(py, b.tmp)
	if err != nil {
		floor.Err, compiling.Err = err.Error(), err.Error()
		return append(jobs, &job{series: floor, want: b.cfg.cold, failed: true}, &job{series: compiling, want: b.cfg.cold, failed: true})
	}
	return append(jobs, execJob(floor, b.cfg.cold, true, py, "-c", pkgImport(compiled)),
		execJob(compiling, b.cfg.cold, true, py, "-B", "-c", pkgImport(src)))
}
