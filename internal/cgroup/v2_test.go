//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

func eventsFrozen(t *testing.T) func(cg Cgroup) bool {
	return func(cg Cgroup) bool {
		v, _, err := readKeyed(filepath.Join(cg.Paths()[""], "cgroup.events"), "frozen")
		if err != nil {
			t.Fatal(err)
		}
		return v == 1
	}
}

// newUnifiedCore returns a v2 Manager on a hybrid host's unified hierarchy,
// which carries no controllers but all of cgroup v2's core: cgroup.procs,
// cgroup.freeze, cgroup.kill, cgroup.events, cpu.stat, and clone3 into a
// cgroup. It drives those for real on the v1 machines nubo's CI has.
func newUnifiedCore(t *testing.T) *v2Manager {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCgroupV1(t)
	const unified = "/sys/fs/cgroup/unified"
	if !exists(filepath.Join(unified, "cgroup.procs")) {
		if testutil.InCI() {
			t.Fatalf("hybrid CI host without %s", unified)
		}
		t.Skip("no unified hierarchy beside v1")
	}
	checkNoLeaks(t)
	pc, err := readProcCgroup()
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewV2(unified, Options{Prefix: testPrefix, Self: pc.unified, controllers: []string{}, FreezeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("NewV2 on %s: %v", unified, err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m.(*v2Manager)
}

// TestV2CoreCloneInto starts a child directly inside the cgroup through
// OpenDir and clone3's CLONE_INTO_CGROUP.
func TestV2CoreCloneInto(t *testing.T) {
	m := newUnifiedCore(t)
	cg := mustCreate(t, m, "clone", Resources{MemoryBytes: 64 << 20})
	f, err := cg.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := startHelper(t, "counter", false, intoCgroup(f), withEnv("NUBO_COUNTER_FILE="+filepath.Join(t.TempDir(), "c")))
	procs, err := cg.Procs()
	if err != nil || !slices.Equal(procs, []int{h.pid()}) {
		t.Fatalf("right after start Procs = %v (%v), want [%d]", procs, err, h.pid())
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", h.pid()))
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(cg.Paths()[""], "/sys/fs/cgroup/unified")
	if !strings.Contains(string(b), "0::"+rel+"\n") {
		t.Errorf("/proc/%d/cgroup = %q, want 0::%s", h.pid(), b, rel)
	}
	eventually(t, 5*time.Second, "CPU time to be charged", func() bool {
		st, err := cg.Stats()
		return err == nil && st.CPUUsageNanos > 0
	})
	killAndDelete(t, cg)
	if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("child ended with %v, want SIGKILL", err)
	}
}

func TestV2CoreFreezeThaw(t *testing.T) {
	scenarioFreeze(t, newUnifiedCore(t), eventsFrozen(t))
}

func TestV2CoreKill(t *testing.T) { scenarioKill(t, newUnifiedCore(t)) }

// TestV2CoreKillLoop drives the freeze-kill-thaw loop used where
// cgroup.kill is missing (Linux < 5.14) against the real v2 freezer.
func TestV2CoreKillLoop(t *testing.T) {
	m := newUnifiedCore(t)
	cg := mustCreate(t, m, "loop", Resources{})
	dir := cg.Paths()[""]
	a := placeAndRun(t, cg, "sleep")
	forker := placeAndRun(t, cg, "forker")
	forker.line(t, "forked=", 10*time.Second)
	err := killAll(5*time.Second,
		func() ([]int, error) { return treeProcs(dir) },
		func() error { return v2Freeze(m.sys, dir, time.Second) },
		func() error { return v2Thaw(m.sys, dir) })
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*helper{a, forker} {
		if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
			t.Errorf("helper ended with %v, want SIGKILL", err)
		}
	}
	if v, _, _ := readKeyed(filepath.Join(dir, "cgroup.events"), "frozen"); v != 0 {
		t.Error("the loop left the cgroup frozen")
	}
	killAndDelete(t, cg)
}

func TestV2CoreClose(t *testing.T) {
	m := newUnifiedCore(t)
	scenarioClose(t, m, []string{m.root})
}

// newRealV2 needs a cgroup v2 host with memory, cpu and pids delegated.
// MoveSiblings lets it run from a shell's or the go command's cgroup; Close
// moves those processes back.
func newRealV2(t *testing.T) *v2Manager {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCgroupV2(t)
	checkNoLeaks(t)
	m, err := New(Options{Prefix: testPrefix, MoveSiblings: true, FreezeTimeout: 2 * time.Second})
	if errors.Is(err, ErrNotDelegated) {
		t.Skipf("cgroup v2 host without delegated controllers: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if m.Version() != 2 {
		t.Fatalf("New on a v2 host: version %d", m.Version())
	}
	return m.(*v2Manager)
}

func TestV2OOMKill(t *testing.T) { scenarioOOM(t, newRealV2(t)) }

func TestV2PidsLimit(t *testing.T) { scenarioPids(t, newRealV2(t)) }

func TestV2CPUQuota(t *testing.T) {
	scenarioCPU(t, newRealV2(t), func(cg Cgroup, want string) {
		if want == "unlimited" {
			want = "max"
		}
		want += " 100000"
		if got := readFileT(t, filepath.Join(cg.Paths()[""], "cpu.max")); got != want {
			t.Errorf("cpu.max = %q, want %q", got, want)
		}
	})
}

func TestV2FreezeThaw(t *testing.T) { scenarioFreeze(t, newRealV2(t), eventsFrozen(t)) }

func TestV2KillAndDelete(t *testing.T) { scenarioKill(t, newRealV2(t)) }

func TestV2CloseKillsWhatRemains(t *testing.T) {
	m := newRealV2(t)
	scenarioClose(t, m, []string{m.root})
}

func TestV2Limits(t *testing.T) {
	m := newRealV2(t)
	cg := mustCreate(t, m, "limits", Resources{MemoryBytes: 64 << 20, PidsMax: 16})
	dir := cg.Paths()[""]
	for f, want := range map[string]string{"memory.max": "67108864", "pids.max": "16", "cpu.max": "max 100000"} {
		if got := readFileT(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if p := filepath.Join(dir, "memory.swap.max"); exists(p) {
		if got := readFileT(t, p); got != "0" {
			t.Errorf("memory.swap.max = %q, want 0", got)
		}
	}
	killAndDelete(t, cg)
}
