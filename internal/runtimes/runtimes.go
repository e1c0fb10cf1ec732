// Package runtimes owns the Lambda runtimes nubo can run: the catalogue of
// runtime identifiers AWS accepts, the detection of the ones a userland can
// actually execute, and nubo's own runtime interface clients (RICs) for
// Python and Node.js, embedded in the binary.
//
// A managed runtime (python3.x, nodejsNN.x) is the userland's interpreter
// running the embedded RIC, which speaks the Runtime API and follows AWS's
// handler conventions, context object and error documents. A provided
// runtime is the function's own bootstrap executable. Invariants:
//
//   - A runtime is offered only when its interpreter exists in the userland,
//     and it is named after the interpreter's real version (a host with
//     Python 3.11 offers python3.11, never python3.12).
//   - The RIC sources are the exact bytes under python/ and node/; the
//     execution environment places them (typically in /var/runtime) and
//     starts them with Command.
//   - Known is AWS's list, independent of the host: a function may name a
//     runtime this host cannot run.
package runtimes

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Runtime families.
const (
	FamilyProvided = "provided"
	FamilyPython   = "python"
	FamilyNodejs   = "nodejs"
)

// Runtime is one runtime this host can run.
type Runtime struct {
	ID           string // "provided.al2023", "provided.al2", "provided", "python3.11", "nodejs20.x"
	Family       string // FamilyProvided, FamilyPython or FamilyNodejs
	Interpreter  string // absolute path in the userland, "" for provided
	ExecutionEnv string // AWS_EXECUTION_ENV, e.g. "AWS_Lambda_python3.11"; "" for provided
	// Compiled names the RIC compiled ahead by Interpreter, in the same
	// directory as the source (see Precompile); "" runs the source.
	Compiled string
}

//go:embed python/bootstrap.py
var pythonRIC []byte

//go:embed node/bootstrap.js
var nodeRIC []byte

//go:embed python/pycompile.py
var pythonCompiler []byte

// Compiler returns the embedded script that compiles a Python function's
// sources ahead (see package pycache) and its file name; like the RICs, it
// is placed in the runtime directory.
func Compiler() (name string, src []byte) {
	return "pycompile.py", bytes.Clone(pythonCompiler)
}

// CacheTag is the tag CPython names its .pyc files with for a Python
// runtime ("cpython-311" for python3.11; sys.implementation.cache_tag), or
// "" for any other runtime.
func CacheTag(rt Runtime) string {
	minor, ok := strings.CutPrefix(rt.ID, "python3.")
	if rt.Family != FamilyPython || !ok || minor == "" || strings.Trim(minor, "0123456789") != "" {
		return ""
	}
	return "cpython-3" + minor
}

// Bootstrap returns the embedded RIC source for a family ("python" →
// bootstrap.py, "nodejs" → bootstrap.js) and its file name. Provided
// runtimes have none.
func Bootstrap(family string) (name string, src []byte, ok bool) {
	switch family {
	case FamilyPython:
		return "bootstrap.py", bytes.Clone(pythonRIC), true
	case FamilyNodejs:
		return "bootstrap.js", bytes.Clone(nodeRIC), true
	}
	return "", nil, false
}

// Precompile compiles the Python RIC (bootstrap.py in dir, the runtime
// directory on the host) with the interpreter of every Python runtime, into
// a .pyc beside it named with the interpreter's cache tag, and returns rts
// with Compiled set where that worked, with the errors of the others.
// sandboxDir is where sandboxes see dir: tracebacks name the source there.
//
// Why: Python never caches the script it is started with; compiling the
// RIC at every cold start took 5.8 ms (docs/performance.md, "Session 3").
// A .pyc given as the script runs as is.
func Precompile(dir, sandboxDir string, rts []Runtime) ([]Runtime, error) {
	src, err := os.ReadFile(filepath.Join(dir, "bootstrap.py"))
	if err != nil {
		return rts, err
	}
	// Named after the source's digest: a .pyc run as the script is never
	// checked against its source, and the directory outlives upgrades.
	sum := sha256.Sum256(src)
	prefix := "bootstrap." + hex.EncodeToString(sum[:6]) + "."
	const script = `import os, py_compile, sys
name = sys.argv[4] + sys.implementation.cache_tag + ".pyc"
py_compile.compile(sys.argv[1], cfile=os.path.join(sys.argv[2], name), dfile=sys.argv[3], doraise=True,
    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print(name)
`
	out := slices.Clone(rts)
	var errs []error
	for i, rt := range out {
		if rt.Family != FamilyPython || rt.Interpreter == "" {
			continue
		}
		// What an earlier start compiled from the same source.
		if tag := CacheTag(rt); tag != "" {
			name := prefix + tag + ".pyc"
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				out[i].Compiled = name
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		// -I -S: no environment, user site or .pth file of the host runs here.
		cmd := exec.CommandContext(ctx, rt.Interpreter, "-I", "-S", "-c", script,
			filepath.Join(dir, "bootstrap.py"), dir, path.Join(sandboxDir, "bootstrap.py"), prefix)
		b, err := cmd.Output()
		cancel()
		name := strings.TrimSpace(string(b))
		if err != nil || !strings.HasPrefix(name, prefix) || strings.ContainsAny(name, "/\\") {
			errs = append(errs, fmt.Errorf("%s: compile the runtime client: %v", rt.ID, err))
			continue
		}
		out[i].Compiled = name
	}
	// Those of an earlier source.
	if old, err := filepath.Glob(filepath.Join(dir, "bootstrap.*.pyc")); err == nil {
		for _, p := range old {
			if !strings.HasPrefix(filepath.Base(p), prefix) {
				os.Remove(p)
			}
		}
	}
	return out, errors.Join(errs...)
}

// ProvidedBootstraps are the entry points of a provided runtime, in the
// order Lambda tries them: the function's own, a layer's, then the image's.
var ProvidedBootstraps = []string{"/var/task/bootstrap", "/opt/bootstrap", "/var/runtime/bootstrap"}

// Command returns the argv that starts rt inside the execution environment
// of a function with memoryMB, given where the RIC file was placed there
// (e.g. /var/runtime/bootstrap.py). For a provided runtime it is the first
// existing of ProvidedBootstraps as seen by the caller, which must
// therefore run inside the environment's mount namespace; when none
// exists it is the first, so that the exec failure names the path Lambda
// would have used.
func Command(rt Runtime, ricPath string, memoryMB int) []string {
	return command(rt, ricPath, memoryMB, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
}

func command(rt Runtime, ricPath string, memoryMB int, exists func(string) bool) []string {
	switch rt.Family {
	case FamilyPython:
		// -u: stdout and stderr are the function's logs; an unflushed
		// buffer would lose lines when the environment is frozen or killed.
		if rt.Compiled != "" {
			ricPath = path.Join(path.Dir(ricPath), rt.Compiled)
		}
		return []string{rt.Interpreter, "-u", ricPath}
	case FamilyNodejs:
		// As Lambda's Node.js runtimes start node: V8's heap sized from the
		// function's memory (a tenth for the young generation, the rest for
		// the old), or V8 sizes it from the host's memory and lets garbage
		// grow far past the function's limit before collecting it: the
		// cgroup kills the runtime instead (measured: a 128 MB function
		// keeping two 100,000-object arrays alive peaked at 295 MB RSS with
		// V8's defaults, 136 MB with these).
		argv := []string{rt.Interpreter, "--expose-gc", "--max-http-header-size", "81920"}
		if memoryMB > 0 {
			young := memoryMB / 10
			argv = append(argv, "--max-semi-space-size="+strconv.Itoa(young/2), "--max-old-space-size="+strconv.Itoa(memoryMB-young))
		}
		return append(argv, ricPath)
	}
	for _, p := range ProvidedBootstraps {
		if exists(p) {
			return []string{p}
		}
	}
	return []string{ProvidedBootstraps[0]}
}

// Oldest interpreter versions the embedded RICs support.
const (
	minPythonMinor = 8
	minNodeMajor   = 18
)

var (
	pythonBinDirs  = []string{"/var/lang/bin", "/usr/local/bin", "/usr/bin", "/bin"}
	nodeCandidates = []string{"/var/lang/bin/node", "/usr/local/bin/node", "/usr/bin/node", "/usr/bin/nodejs", "/bin/node"}

	pythonName    = regexp.MustCompile(`^python3(?:\.(\d+))?$`)
	pythonVersion = regexp.MustCompile(`^Python 3\.(\d+)\b`)
	nodeVersion   = regexp.MustCompile(`^v(\d+)\.`)
)

// versionTimeout bounds one `--version` run; a wedged interpreter must not
// hold up the daemon's start.
const versionTimeout = 10 * time.Second

// Detect inspects the userland rooted at root ("/" for the host userland)
// and returns the runtimes it can run: the provided runtimes always, and a
// python3.N or nodejsNN.x runtime per interpreter version found in the
// usual bin directories. Python's version is read from the interpreter's
// file name where it carries one, otherwise both interpreters are run with
// --version. It runs a few processes at most: call it once at start.
func Detect(root string) ([]Runtime, error) {
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("userland %q: %w", root, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("userland %q: not a directory", root)
	}
	out := []Runtime{
		{ID: "provided.al2023", Family: FamilyProvided},
		{ID: "provided.al2", Family: FamilyProvided},
		{ID: "provided", Family: FamilyProvided},
	}
	seen := map[string]bool{}
	add := func(id, family, interp string) {
		if seen[id] {
			return
		}
		seen[id] = true
		out = append(out, Runtime{ID: id, Family: family, Interpreter: interp, ExecutionEnv: "AWS_Lambda_" + id})
	}

	for _, dir := range pythonBinDirs {
		for _, interp := range pythonInterpreters(root, dir) {
			if minor, ok := pythonMinor(root, interp); ok && minor >= minPythonMinor {
				add("python3."+strconv.Itoa(minor), FamilyPython, interp)
			}
		}
	}

	for _, interp := range nodeCandidates {
		host, ok := executableIn(root, interp)
		if !ok {
			continue
		}
		m := nodeVersion.FindStringSubmatch(runVersion(host))
		if m == nil {
			continue
		}
		major, _ := strconv.Atoi(m[1])
		if major >= minNodeMajor {
			add("nodejs"+m[1]+".x", FamilyNodejs, interp)
		}
	}
	return out, nil
}

// pythonInterpreters lists the executables named python3 or python3.N in
// dir of the userland, python3 first so that the plain name is preferred.
func pythonInterpreters(root, dir string) []string {
	entries, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if pythonName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		p := path.Join(dir, n)
		if _, ok := executableIn(root, p); ok {
			out = append(out, p)
		}
	}
	return out
}

// pythonMinor returns N of the Python 3.N at interp (a path in the userland).
func pythonMinor(root, interp string) (int, bool) {
	// python3 is usually a symlink chain ending at python3.N.
	if real, err := resolveIn(root, interp); err == nil {
		if m := pythonName.FindStringSubmatch(path.Base(real)); m != nil && m[1] != "" {
			n, err := strconv.Atoi(m[1])
			return n, err == nil
		}
	}
	host, ok := executableIn(root, interp)
	if !ok {
		return 0, false
	}
	m := pythonVersion.FindStringSubmatch(runVersion(host))
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

// runVersion runs `bin --version` with an empty environment (NODE_OPTIONS
// or PYTHONSTARTUP of the daemon must not leak in) and returns its first
// line of output, or "" on failure.
func runVersion(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	outb, err := cmd.CombinedOutput()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(outb)), "\n")
	return strings.TrimSpace(line)
}

// executableIn reports whether p (a path in the userland at root) resolves
// to an executable regular file, and returns that file's path on the host.
func executableIn(root, p string) (string, bool) {
	real, err := resolveIn(root, p)
	if err != nil {
		return "", false
	}
	host := filepath.Join(root, real)
	fi, err := os.Stat(host)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", false
	}
	return host, true
}

const maxSymlinks = 40

var errTooManyLinks = errors.New("too many levels of symbolic links")

// resolveIn resolves every symlink of p as the userland rooted at root
// would see it: an absolute link target is relative to root, and ".."
// never climbs above it. Plain filepath.EvalSymlinks would follow an
// absolute link to the host's file of the same name. It returns the
// resolved path within root.
func resolveIn(root, p string) (string, error) {
	resolved := "/"
	rest := strings.Split(p, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		host := filepath.Join(root, next)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxSymlinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: errTooManyLinks}
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}
