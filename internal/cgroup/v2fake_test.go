//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var allV2 = []string{"cpu", "io", "memory", "pids"}

func newFakeV2(t *testing.T, k *fakeKernel, self string, mod func(*Options)) (*v2Manager, error) {
	t.Helper()
	o := Options{Prefix: testPrefix, Self: self, sys: k.sys(), FreezeTimeout: time.Second, KillTimeout: time.Second}
	if mod != nil {
		mod(&o)
	}
	m, err := NewV2(k.root, o)
	if err != nil {
		return nil, err
	}
	return m.(*v2Manager), nil
}

func procsOf(t *testing.T, dir string) []int {
	t.Helper()
	p, err := readProcs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// indexOf returns the position of the first logged write with prefix.
func indexOf(log []string, prefix string) int {
	return slices.IndexFunc(log, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func TestV2DelegationDance(t *testing.T) {
	k := newFakeKernel(t, allV2, "/app.slice/nubo.service")
	self := filepath.Join(k.root, "app.slice/nubo.service")
	m, err := newFakeV2(t, k, "/app.slice/nubo.service", nil)
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	leaf := filepath.Join(m.root, "daemon")
	if filepath.Dir(m.root) != self || !strings.HasPrefix(filepath.Base(m.root), testPrefix+"-"+strconv.Itoa(me)+"-") {
		t.Fatalf("root %s is not <self>/%s-<pid>-<start>", m.root, testPrefix)
	}
	if got := procsOf(t, leaf); !slices.Equal(got, []int{me}) {
		t.Errorf("daemon leaf holds %v, want [%d]", got, me)
	}
	if got := procsOf(t, self); len(got) != 0 {
		t.Errorf("self still holds %v", got)
	}
	for _, d := range []string{self, m.root} {
		if got := k.get(d, "cgroup.subtree_control"); got != "cpu io memory pids" {
			t.Errorf("%s subtree_control = %q", d, got)
		}
	}
	log := k.log()
	move := indexOf(log, "app.slice/nubo.service/"+filepath.Base(m.root)+"/daemon/cgroup.procs=")
	enable := indexOf(log, "app.slice/nubo.service/cgroup.subtree_control=+")
	if move < 0 || enable < 0 || move > enable {
		t.Errorf("daemon must move (write %d) before controllers are enabled (write %d): %v", move, enable, log)
	}

	cg, err := m.Create("a", Resources{MemoryBytes: 128 << 20, IOWeight: 500})
	if err != nil {
		t.Fatal(err)
	}
	env := cg.Paths()[""]
	want := map[string]string{
		"memory.max": strconv.Itoa(128 << 20), "memory.swap.max": "0", "cpu.max": "max 100000",
		"pids.max": "1024", "io.weight": "default 500", "io.bfq.weight": "50",
	}
	for f, v := range want {
		if got := k.get(env, f); got != v {
			t.Errorf("%s = %q, want %q", f, got, v)
		}
	}
	// After init: the quota proportional to memory, then again, smaller.
	for _, c := range []struct {
		milli int
		want  string
	}{{CPUMilliForMemory(128, 0), "7200 100000"}, {5, "1000 100000"}, {0, "max 100000"}} {
		if err := cg.Set(Resources{MemoryBytes: 128 << 20, CPUMilli: c.milli, PidsMax: 16}); err != nil {
			t.Fatal(err)
		}
		if got := k.get(env, "cpu.max"); got != c.want {
			t.Errorf("CPUMilli %d: cpu.max = %q, want %q", c.milli, got, c.want)
		}
	}
	if got := k.get(env, "pids.max"); got != "16" {
		t.Errorf("pids.max = %q, want 16", got)
	}
	if err := cg.Set(Resources{IOWeight: 20000}); err == nil {
		t.Error("Set accepted io weight 20000")
	}
	for _, c := range []struct {
		weight int
		want   string
	}{{1, "1"}, {0, "1"}, {100, "100"}} {
		if err := cg.Set(Resources{CPUWeight: c.weight}); err != nil {
			t.Fatal(err)
		}
		if got := k.get(env, "cpu.weight"); got != c.want {
			t.Errorf("CPUWeight %d: cpu.weight = %q, want %q", c.weight, got, c.want)
		}
	}

	const fakePid = 4194000 // above pid_max: never a real process
	if err := cg.AddProc(fakePid); err != nil {
		t.Fatal(err)
	}
	if got, _ := cg.Procs(); !slices.Equal(got, []int{fakePid}) {
		t.Errorf("Procs = %v", got)
	}
	if err := cg.Kill(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(k.log(), filepath.Join(strings.TrimPrefix(env, k.root+"/"), "cgroup.kill")+"=1") {
		t.Error("Kill did not write cgroup.kill")
	}
	if err := cg.Delete(); err != nil {
		t.Fatal(err)
	}
	if exists(env) {
		t.Error("env dir remains after Delete")
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := k.get(self, "cgroup.subtree_control"); got != "" {
		t.Errorf("self subtree_control after Close = %q, want it restored to empty", got)
	}
	if got := procsOf(t, self); !slices.Equal(got, []int{me}) {
		t.Errorf("self holds %v after Close, want the daemon back", got)
	}
	if subs, _ := subdirs(self); len(subs) != 0 {
		t.Errorf("left behind: %v", subs)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestV2SiblingsBlockDelegation(t *testing.T) {
	const sibling = 4194001
	k := newFakeKernel(t, allV2, "/session.scope", sibling)
	self := filepath.Join(k.root, "session.scope")
	_, err := newFakeV2(t, k, "/session.scope", nil)
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), strconv.Itoa(sibling)) {
		t.Fatalf("NewV2 with a sibling process: %v, want ErrNotDelegated naming %d", err, sibling)
	}
	if got := procsOf(t, self); !slices.Equal(got, []int{os.Getpid(), sibling}) && !slices.Equal(got, []int{sibling, os.Getpid()}) {
		t.Errorf("after the failure self holds %v, want the daemon back beside its sibling", got)
	}
	if subs, _ := subdirs(self); len(subs) != 0 || k.get(self, "cgroup.subtree_control") != "" {
		t.Errorf("failure left %v, subtree_control %q", subs, k.get(self, "cgroup.subtree_control"))
	}

	m, err := newFakeV2(t, k, "/session.scope", func(o *Options) { o.MoveSiblings = true })
	if err != nil {
		t.Fatalf("NewV2 with MoveSiblings: %v", err)
	}
	leaf := filepath.Join(m.root, "daemon")
	if got := procsOf(t, leaf); !slices.Contains(got, sibling) || !slices.Contains(got, os.Getpid()) {
		t.Errorf("leaf holds %v, want daemon and sibling", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := procsOf(t, self); len(got) != 2 {
		t.Errorf("after Close self holds %v, want both back", got)
	}
}

func TestV2MissingControllers(t *testing.T) {
	k := newFakeKernel(t, []string{"cpu", "memory"}, "/svc")
	_, err := newFakeV2(t, k, "/svc", nil)
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "pids") {
		t.Fatalf("NewV2 without pids: %v, want ErrNotDelegated naming pids", err)
	}
	if subs, _ := subdirs(filepath.Join(k.root, "svc")); len(subs) != 0 {
		t.Errorf("left behind: %v", subs)
	}
}

// TestV2RootCgroup: in the hierarchy's true root (no cgroup.type) the
// daemon stays put; only the controllers are enabled.
func TestV2RootCgroup(t *testing.T) {
	k := newFakeKernel(t, []string{"cpu", "memory", "pids"}, "/")
	m, err := newFakeV2(t, k, "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.leaf != "" || exists(filepath.Join(m.root, "daemon")) {
		t.Error("daemon moved into a leaf from the root cgroup")
	}
	if got := procsOf(t, k.root); !slices.Contains(got, os.Getpid()) {
		t.Errorf("root procs %v lost the daemon", got)
	}
	if got := k.get(k.root, "cgroup.subtree_control"); got != "cpu memory pids" {
		t.Errorf("root subtree_control = %q", got)
	}
	cg, err := m.Create("r", Resources{MemoryBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(cg.Paths()[""], "io.weight")) {
		t.Error("io files present although io is not offered")
	}
	if err := cg.Set(Resources{IOWeight: 300}); err != nil {
		t.Errorf("Set with io weight but no io controller: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(m.root) {
		t.Error("root remains after Close")
	}
}

func TestV2FreezeWaitsForKernel(t *testing.T) {
	k := newFakeKernel(t, allV2, "/svc")
	m, err := newFakeV2(t, k, "/svc", func(o *Options) { o.FreezeTimeout = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cg, err := m.Create("f", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	env := cg.Paths()[""]

	done := make(chan error, 1)
	go func() { done <- cg.Freeze() }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Freeze returned (%v) before the kernel reported frozen", err)
	default:
	}
	if got := k.get(env, "cgroup.freeze"); got != "1" {
		t.Errorf("cgroup.freeze = %q, want 1", got)
	}
	k.setEvent(env, "frozen", true)
	if err := <-done; err != nil {
		t.Fatalf("Freeze: %v", err)
	}

	go func() { done <- cg.Thaw() }()
	time.Sleep(50 * time.Millisecond)
	if got := k.get(env, "cgroup.freeze"); got != "0" {
		t.Errorf("cgroup.freeze = %q after Thaw, want 0", got)
	}
	k.setEvent(env, "frozen", false)
	if err := <-done; err != nil {
		t.Fatalf("Thaw: %v", err)
	}

	// A freeze the kernel never completes times out and is undone.
	start := time.Now()
	if err := cg.Freeze(); err == nil {
		t.Fatal("Freeze succeeded although the kernel never reported frozen")
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("Freeze gave up after %v, want about the 300ms timeout", d)
	}
	if got := k.get(env, "cgroup.freeze"); got != "0" {
		t.Errorf("cgroup.freeze = %q after a failed Freeze, want 0", got)
	}
	if err := cg.Delete(); err != nil {
		t.Fatal(err)
	}
}

func TestV2KillWaitsForEmpty(t *testing.T) {
	k := newFakeKernel(t, allV2, "/svc")
	m, err := newFakeV2(t, k, "/svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cg, err := m.Create("k", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	env := cg.Paths()[""]
	if err := cg.AddProc(4194002); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := readKeyed(filepath.Join(env, "cgroup.events"), "populated"); v != 1 {
		t.Fatal("fake kernel did not mark the cgroup populated")
	}
	k.autoKill = false
	done := make(chan error, 1)
	go func() { done <- cg.Kill() }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Kill returned (%v) while the cgroup was still populated", err)
	default:
	}
	k.clearProcs(env)
	if err := <-done; err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// The kernel never empties it: Kill must fail, not hang.
	if err := cg.AddProc(4194003); err != nil {
		t.Fatal(err)
	}
	if err := cg.Kill(); err == nil || !strings.Contains(err.Error(), "4194003") {
		t.Errorf("Kill of an unkillable cgroup: %v, want an error naming the survivor", err)
	}
	k.clearProcs(env)
}

func TestV2StatsAndPeak(t *testing.T) {
	k := newFakeKernel(t, allV2, "/svc")
	m, err := newFakeV2(t, k, "/svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cg, err := m.Create("s", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	env := cg.Paths()[""]
	k.put(env, "memory.current", "1000\n")
	k.put(env, "memory.peak", "5000\n")
	k.put(env, "memory.events", "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n")
	k.put(env, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
	k.put(env, "pids.current", "3\n")
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{MemoryCurrent: 1000, MemoryPeak: 5000, OOMKills: 2, CPUUsageNanos: 1500000, Pids: 3}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}

	// Linux 6.12+: the reset goes through a descriptor kept open, and the
	// peak is read back through that same descriptor.
	if err := cg.ResetPeak(); err != nil {
		t.Fatal(err)
	}
	if got := k.get(env, "memory.peak"); got != "reset" {
		t.Errorf("memory.peak got %q, want the reset write", got)
	}
	k.put(env, "memory.peak", "777\n")
	if st, _ := cg.Stats(); st.MemoryPeak != 777 {
		t.Errorf("MemoryPeak through the reset descriptor = %d, want 777", st.MemoryPeak)
	}

	// Before 6.12 memory.peak is read-only: no reset, lifetime peak.
	cg2, err := m.Create("s2", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	env2 := cg2.Paths()[""]
	k.put(env2, "memory.peak", "9000\n")
	if err := os.Chmod(filepath.Join(env2, "memory.peak"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := cg2.ResetPeak(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ResetPeak on read-only memory.peak: %v, want ErrUnsupported", err)
	}
	if got := k.get(env2, "memory.peak"); got != "9000" {
		t.Errorf("memory.peak was written: %q", got)
	}

	// Before 5.19 there is no memory.peak: the peak is tracked from samples.
	cg3, err := m.Create("s3", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	env3 := cg3.Paths()[""]
	os.Remove(filepath.Join(env3, "memory.peak"))
	for _, c := range []struct{ cur, peak uint64 }{{1000, 1000}, {3000, 3000}, {2000, 3000}} {
		k.put(env3, "memory.current", fmt.Sprint(c.cur))
		if st, _ := cg3.Stats(); st.MemoryPeak != c.peak {
			t.Errorf("tracked peak after current %d = %d, want %d", c.cur, st.MemoryPeak, c.peak)
		}
	}
	if err := cg3.ResetPeak(); err != nil {
		t.Fatal(err)
	}
	k.put(env3, "memory.current", "1500")
	if st, _ := cg3.Stats(); st.MemoryPeak != 2000 {
		t.Errorf("tracked peak after reset = %d, want 2000", st.MemoryPeak)
	}
}

func TestV2CleanupStale(t *testing.T) {
	k := newFakeKernel(t, allV2, "/svc")
	self := filepath.Join(k.root, "svc")
	m, err := newFakeV2(t, k, "/svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start1, err := procStartTime(1)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(self, fmt.Sprintf("%s-%d-1", testPrefix, os.Getpid()))
	live := filepath.Join(self, fmt.Sprintf("%s-1-%d", testPrefix, start1))
	other := filepath.Join(self, "nubo-1-1") // another prefix's tree
	for _, d := range []string{stale, filepath.Join(stale, "env-x"), live, other} {
		if err := k.mkdir(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.write(filepath.Join(stale, "env-x", "cgroup.procs"), "4194004"); err != nil {
		t.Fatal(err)
	}
	if err := m.CleanupStale(); err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Error("stale tree remains")
	}
	for _, d := range []string{live, other, m.root} {
		if !exists(d) {
			t.Errorf("CleanupStale removed %s", d)
		}
	}
	for _, d := range []string{live, other} {
		if err := k.rmdir(d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestV2OpenDir(t *testing.T) {
	k := newFakeKernel(t, allV2, "/svc")
	m, err := newFakeV2(t, k, "/svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cg, err := m.Create("d", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := cg.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var a, b syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(cg.Paths()[""], &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Mode&syscall.S_IFDIR == 0 {
		t.Error("OpenDir did not open the cgroup directory")
	}
}

// TestV2SetWritesOnlyChanges: a Set writes only the files whose settings
// differ from what the last Set left (a pooled sandbox's assign changes
// the memory limit and the CPU weight, nothing else); weights a Set leaves
// alone (0) count as kept.
func TestV2SetWritesOnlyChanges(t *testing.T) {
	k := newFakeKernel(t, allV2, "/app.slice/nubo.service")
	m, err := newFakeV2(t, k, "/app.slice/nubo.service", nil)
	if err != nil {
		t.Fatal(err)
	}
	shell := Resources{PidsMax: MaxPids, IOWeight: 100, CPUWeight: 1}
	cg, err := m.Create("pooled", shell)
	if err != nil {
		t.Fatal(err)
	}
	env := cg.Paths()[""]
	rel, _ := filepath.Rel(k.root, env)
	setWrites := func(r Resources) []string {
		t.Helper()
		before := len(k.log())
		if err := cg.Set(r); err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, w := range k.log()[before:] {
			if f, ok := strings.CutPrefix(w, rel+"/"); ok {
				files = append(files, f[:strings.IndexByte(f, '=')])
			}
		}
		return files
	}
	assigned := shell
	assigned.MemoryBytes, assigned.CPUWeight = 128<<20, 100
	if got := setWrites(assigned); !slices.Equal(got, []string{"memory.max", "memory.swap.max", "cpu.weight"}) {
		t.Errorf("assign wrote %v; want the memory limit and the CPU weight only", got)
	}
	if got := setWrites(assigned); len(got) != 0 {
		t.Errorf("the same Set again wrote %v; want nothing", got)
	}
	if got := setWrites(Resources{MemoryBytes: 128 << 20, PidsMax: MaxPids}); len(got) != 0 {
		t.Errorf("a Set leaving the weights alone wrote %v; want nothing", got)
	}
	if got := setWrites(Resources{MemoryBytes: 128 << 20, PidsMax: 16, CPUMilli: 500}); !slices.Equal(got, []string{"cpu.max", "pids.max"}) {
		t.Errorf("quota and pids change wrote %v; want cpu.max and pids.max", got)
	}
	for f, want := range map[string]string{"memory.max": strconv.Itoa(128 << 20), "cpu.weight": "100", "pids.max": "16",
		"cpu.max": "50000 100000", "io.weight": "default 100"} {
		if got := k.get(env, f); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
}
