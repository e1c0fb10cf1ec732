//go:build linux

package cgroup

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// fakeKernel emulates the parts of a cgroup v2 filesystem whose rules the
// manager must respect, over a temp dir: mkdir populates interface files
// for the controllers the parent enables; cgroup.subtree_control enforces
// availability, the no-internal-processes rule and "disable only when no
// child has it"; cgroup.procs moves a pid and maintains "populated";
// rmdir refuses a cgroup with processes or children. Freezing is left to
// the test, which flips "frozen" in cgroup.events itself.
type fakeKernel struct {
	t    *testing.T
	root string

	mu     sync.Mutex
	writes []string // "<path relative to root>=<data>", in order
	// autoKill makes a write to cgroup.kill empty the subtree at once.
	autoKill bool
}

// newFakeKernel builds a hierarchy offering ctrls at the root and
// delegating them down to selfRel, where the test process is placed
// together with siblings.
func newFakeKernel(t *testing.T, ctrls []string, selfRel string, siblings ...int) *fakeKernel {
	t.Helper()
	k := &fakeKernel{t: t, root: t.TempDir(), autoKill: true}
	k.put(k.root, "cgroup.controllers", strings.Join(ctrls, " "))
	k.put(k.root, "cgroup.subtree_control", "")
	k.put(k.root, "cgroup.procs", "")
	k.put(k.root, "cpu.stat", "usage_usec 0\n")
	dir := k.root
	for _, part := range strings.Split(strings.Trim(selfRel, "/"), "/") {
		if part == "" {
			continue
		}
		// Delegation down the path: each ancestor enables everything.
		k.put(dir, "cgroup.subtree_control", strings.Join(sorted(ctrls), " "))
		dir = filepath.Join(dir, part)
		if err := k.mkdir(dir); err != nil {
			t.Fatal(err)
		}
	}
	procs := append([]int{os.Getpid()}, siblings...)
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "%d\n", p)
	}
	k.put(dir, "cgroup.procs", b.String())
	k.refreshPopulated()
	return k
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func (k *fakeKernel) sys() *sysfs { return &sysfs{write: k.write, mkdir: k.mkdir, rmdir: k.rmdir} }

func (k *fakeKernel) put(dir, name, data string) {
	k.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

func (k *fakeKernel) get(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

func (k *fakeKernel) log() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.writes)
}

var ctrlFiles = map[string][][2]string{
	"memory": {{"memory.max", "max"}, {"memory.swap.max", "max"}, {"memory.current", "0"},
		{"memory.peak", "0"}, {"memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"}},
	"cpu":  {{"cpu.max", "max 100000"}, {"cpu.weight", "100"}},
	"pids": {{"pids.max", "max"}, {"pids.current", "0"}},
	"io":   {{"io.weight", "default 100"}, {"io.bfq.weight", "100"}},
}

func (k *fakeKernel) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for _, f := range [][2]string{{"cgroup.procs", ""}, {"cgroup.events", "populated 0\nfrozen 0\n"},
		{"cgroup.freeze", "0"}, {"cgroup.kill", ""}, {"cgroup.type", "domain"},
		{"cgroup.subtree_control", ""}, {"cpu.stat", "usage_usec 0\n"}} {
		k.put(dir, f[0], f[1])
	}
	k.setControllers(dir, strings.Fields(k.get(filepath.Dir(dir), "cgroup.subtree_control")))
	return nil
}

// setControllers makes dir offer ctrls, with their interface files.
func (k *fakeKernel) setControllers(dir string, ctrls []string) {
	k.put(dir, "cgroup.controllers", strings.Join(ctrls, " "))
	for c, files := range ctrlFiles {
		for _, f := range files {
			p := filepath.Join(dir, f[0])
			if slices.Contains(ctrls, c) {
				if !exists(p) {
					k.put(dir, f[0], f[1])
				}
			} else {
				os.Remove(p)
			}
		}
	}
}

func busy(op, path string) error {
	return &fs.PathError{Op: op, Path: path, Err: syscall.EBUSY}
}

func (k *fakeKernel) write(path, data string) error {
	k.mu.Lock()
	rel, _ := filepath.Rel(k.root, path)
	k.writes = append(k.writes, rel+"="+data)
	k.mu.Unlock()
	dir, base := filepath.Dir(path), filepath.Base(path)
	switch base {
	case "cgroup.subtree_control":
		set := strings.Fields(k.get(dir, base))
		for _, tok := range strings.Fields(data) {
			c := tok[1:]
			if tok[0] == '+' {
				if !slices.Contains(strings.Fields(k.get(dir, "cgroup.controllers")), c) {
					return &fs.PathError{Op: "write", Path: path, Err: syscall.ENOENT}
				}
				if dir != k.root && k.get(dir, "cgroup.procs") != "" {
					return busy("write", path)
				}
				if !slices.Contains(set, c) {
					set = append(set, c)
				}
				continue
			}
			subs, _ := subdirs(dir)
			for _, s := range subs {
				if slices.Contains(strings.Fields(k.get(s, base)), c) {
					return busy("write", path)
				}
			}
			set = slices.DeleteFunc(set, func(x string) bool { return x == c })
		}
		slices.Sort(set)
		k.put(dir, base, strings.Join(set, " "))
		subs, _ := subdirs(dir)
		for _, s := range subs {
			k.setControllers(s, set)
		}
		return nil
	case "cgroup.procs":
		pid, err := strconv.Atoi(strings.TrimSpace(data))
		if err != nil {
			return &fs.PathError{Op: "write", Path: path, Err: syscall.EINVAL}
		}
		if dir != k.root && k.get(dir, "cgroup.subtree_control") != "" {
			return busy("write", path)
		}
		k.removePid(pid)
		k.put(dir, base, k.get(dir, base)+"\n"+strconv.Itoa(pid)+"\n")
		k.refreshPopulated()
		return nil
	case "cgroup.kill":
		if k.autoKill {
			k.clearProcs(dir)
		}
		return nil
	}
	if !exists(path) {
		return &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return os.WriteFile(path, []byte(data), 0)
}

func (k *fakeKernel) walk(fn func(dir string)) {
	_ = filepath.WalkDir(k.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			fn(p)
		}
		return nil
	})
}

func (k *fakeKernel) removePid(pid int) {
	k.walk(func(dir string) {
		pids, _ := readProcs(dir)
		if i := slices.Index(pids, pid); i >= 0 {
			k.writeProcs(dir, slices.Delete(pids, i, i+1))
		}
	})
}

func (k *fakeKernel) writeProcs(dir string, pids []int) {
	var b strings.Builder
	for _, p := range pids {
		fmt.Fprintf(&b, "%d\n", p)
	}
	k.put(dir, "cgroup.procs", b.String())
}

// clearProcs plays the kernel finishing a kill of dir's subtree.
func (k *fakeKernel) clearProcs(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			k.writeProcs(p, nil)
		}
		return nil
	})
	k.refreshPopulated()
}

func (k *fakeKernel) refreshPopulated() {
	k.walk(func(dir string) {
		if dir == k.root {
			return
		}
		pids, _ := treeProcs(dir)
		k.setEvent(dir, "populated", len(pids) > 0)
	})
}

// setEvent rewrites one key of cgroup.events, as the kernel would.
func (k *fakeKernel) setEvent(dir, key string, on bool) {
	v := "0"
	if on {
		v = "1"
	}
	lines := strings.Split(k.get(dir, "cgroup.events"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, key+" ") {
			lines[i] = key + " " + v
		}
	}
	k.put(dir, "cgroup.events", strings.Join(lines, "\n")+"\n")
}

func (k *fakeKernel) rmdir(dir string) error {
	if k.get(dir, "cgroup.procs") != "" {
		return busy("rmdir", dir)
	}
	if subs, _ := subdirs(dir); len(subs) > 0 {
		return busy("rmdir", dir)
	}
	if !exists(dir) {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: syscall.ENOENT}
	}
	return os.RemoveAll(dir)
}
