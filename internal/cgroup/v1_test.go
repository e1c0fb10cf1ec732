//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// newRealV1 gates on root and v1, arms the leak check and returns a v1
// Manager on the live hierarchies, closed at cleanup.
func newRealV1(t *testing.T) *v1Manager {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCgroupV1(t)
	checkNoLeaks(t)
	m, err := NewV1("", Options{Prefix: testPrefix, FreezeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("NewV1: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m.(*v1Manager)
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	s, err := readString(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestV1Layout checks the tree sits under the cgroup the test process runs
// in, per controller, never at a hierarchy root, and what Create and Set
// leave in the kernel's files.
func TestV1Layout(t *testing.T) {
	m := newRealV1(t)
	pc, err := readProcCgroup()
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	mm := v1Mounts(mounts)
	for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
		want := filepath.Join(mm[c].point, relToMount(pc.v1[c], mm[c].root), m.rootName)
		if m.root[c] != want {
			t.Errorf("%s root = %s, want %s", c, m.root[c], want)
		}
		if _, err := os.Stat(want); err != nil {
			t.Errorf("%s root missing: %v", c, err)
		}
	}
	if !strings.HasPrefix(m.rootName, testPrefix+"-"+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("root name %q does not carry the owner pid", m.rootName)
	}

	cg := mustCreate(t, m, "layout", Resources{MemoryBytes: 64 << 20, PidsMax: 16, IOWeight: 500})
	p := cg.Paths()
	check := func(ctrl, file, want string) {
		t.Helper()
		if got := readFileT(t, filepath.Join(p[ctrl], file)); got != want {
			t.Errorf("%s/%s = %q, want %q", ctrl, file, got, want)
		}
	}
	if filepath.Base(p["memory"]) != "env-layout" || filepath.Dir(p["memory"]) != m.root["memory"] {
		t.Errorf("memory path %s not <root>/env-layout", p["memory"])
	}
	check("memory", "memory.limit_in_bytes", strconv.Itoa(64<<20))
	if exists(filepath.Join(p["memory"], "memory.memsw.limit_in_bytes")) {
		check("memory", "memory.memsw.limit_in_bytes", strconv.Itoa(64<<20))
	}
	check("cpu", "cpu.cfs_quota_us", "-1")
	check("cpu", "cpu.cfs_period_us", "100000")
	check("pids", "pids.max", "16")
	if exists(filepath.Join(p["blkio"], "blkio.bfq.weight")) {
		check("blkio", "blkio.bfq.weight", strconv.Itoa(scaleWeight(500, 1, 1000)))
	}

	// Growing then shrinking the limit needs memsw and limit written in
	// opposite orders; the kernel rejects the wrong one with EINVAL.
	if err := cg.Set(Resources{MemoryBytes: 256 << 20, CPUMilli: 72, PidsMax: 2000}); err != nil {
		t.Fatalf("Set grow: %v", err)
	}
	check("memory", "memory.limit_in_bytes", strconv.Itoa(256<<20))
	check("cpu", "cpu.cfs_quota_us", "7200")
	check("pids", "pids.max", strconv.Itoa(MaxPids))
	if err := cg.Set(Resources{MemoryBytes: 32 << 20, CPUMilli: 1}); err != nil {
		t.Fatalf("Set shrink: %v", err)
	}
	check("memory", "memory.limit_in_bytes", strconv.Itoa(32<<20))
	check("cpu", "cpu.cfs_quota_us", "1000")
	if err := cg.Set(Resources{}); err != nil {
		t.Fatalf("Set unlimited: %v", err)
	}
	check("cpu", "cpu.cfs_quota_us", "-1")
	if v, _ := readInt(filepath.Join(p["memory"], "memory.limit_in_bytes")); v < 1<<60 {
		t.Errorf("memory limit %d after Set(Resources{}), want unlimited", v)
	}
	// CPU weight: v2's scale onto cpu.shares; 0 leaves it as it was.
	check("cpu", "cpu.shares", "1024")
	for _, c := range []struct {
		weight int
		want   string
	}{{1, "10"}, {0, "10"}, {100, "1024"}, {10000, "102400"}} {
		if err := cg.Set(Resources{CPUWeight: c.weight}); err != nil {
			t.Fatalf("Set CPUWeight %d: %v", c.weight, err)
		}
		check("cpu", "cpu.shares", c.want)
	}
	if err := cg.Set(Resources{CPUWeight: 10001}); err == nil {
		t.Error("Set accepted cpu weight 10001")
	}
	if v, _ := readInt(filepath.Join(p["memory"], "memory.limit_in_bytes")); v < 1<<60 {
		t.Errorf("memory limit %d after Set(Resources{}), want unlimited", v)
	}

	if _, err := m.Create("layout", Resources{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("duplicate Create: %v, want ErrExist", err)
	}
	if _, err := m.Create("../escape", Resources{}); err == nil {
		t.Error("Create accepted a name with a slash")
	}
	if _, err := cg.OpenDir(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("OpenDir on v1: %v, want ErrUnsupported", err)
	}
	killAndDelete(t, cg)
}

func TestV1OOMKill(t *testing.T) { scenarioOOM(t, newRealV1(t)) }

func TestV1PidsLimit(t *testing.T) { scenarioPids(t, newRealV1(t)) }

func TestV1CPUQuota(t *testing.T) {
	scenarioCPU(t, newRealV1(t), func(cg Cgroup, want string) {
		if want == "unlimited" {
			want = "-1"
		}
		if got := readFileT(t, filepath.Join(cg.Paths()["cpu"], "cpu.cfs_quota_us")); got != want {
			t.Errorf("cpu.cfs_quota_us = %s, want %s", got, want)
		}
	})
}

func TestV1FreezeThaw(t *testing.T) {
	scenarioFreeze(t, newRealV1(t), func(cg Cgroup) bool {
		return readFileT(t, filepath.Join(cg.Paths()["freezer"], "freezer.state")) == "FROZEN"
	})
}

func TestV1KillAndDelete(t *testing.T) { scenarioKill(t, newRealV1(t)) }

func TestV1CloseKillsWhatRemains(t *testing.T) {
	m := newRealV1(t)
	scenarioClose(t, m, uniqueDirs(m.root))
}

// TestV1CleanupStale plants the tree of a dead daemon (right pid, wrong
// start time: a reused pid) holding a live, frozen process, the tree of a live
// daemon (pid 1) and an unrelated directory; only the first must go.
func TestV1CleanupStale(t *testing.T) {
	m := newRealV1(t)
	start1, err := procStartTime(1)
	if err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s-%d-%d", testPrefix, os.Getpid(), 1)
	live := fmt.Sprintf("%s-1-%d", testPrefix, start1)
	other := testPrefix + "-unrelated"
	var keep []string
	t.Cleanup(func() {
		for _, d := range keep {
			_ = realSys.removeTree(d)
		}
	})
	for _, self := range uniqueDirs(m.self) {
		for _, d := range []string{filepath.Join(self, stale), filepath.Join(self, stale, "env-x"),
			filepath.Join(self, live), filepath.Join(self, other)} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		keep = append(keep, filepath.Join(self, live), filepath.Join(self, other), filepath.Join(self, stale))
	}
	h := startHelper(t, "sleep", false)
	for _, self := range uniqueDirs(m.self) {
		if err := os.WriteFile(filepath.Join(self, stale, "env-x", "cgroup.procs"), []byte(strconv.Itoa(h.pid())), 0); err != nil {
			t.Fatal(err)
		}
	}

	// The dead daemon had frozen its idle environment.
	fz := filepath.Join(m.self["freezer"], stale, "env-x")
	if err := v1Freeze(realSys, fz, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.CleanupStale(); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("process in the stale tree ended with %v, want SIGKILL", err)
	}
	for _, self := range uniqueDirs(m.self) {
		if exists(filepath.Join(self, stale)) {
			t.Errorf("stale tree remains in %s", self)
		}
		for _, d := range []string{live, other, m.rootName} {
			if !exists(filepath.Join(self, d)) {
				t.Errorf("CleanupStale removed %s in %s", d, self)
			}
		}
	}
}

// TestNewPicksHostLayout checks Detect and New against this host.
func TestNewPicksHostLayout(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCgroupV1(t)
	checkNoLeaks(t)
	mode, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	if mode != ModeV1 && mode != ModeHybrid {
		t.Fatalf("Detect = %v on a host with v1 memory controller", mode)
	}
	m, err := New(Options{Prefix: testPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Version() != 1 {
		t.Errorf("Version = %d, want 1 on %v", m.Version(), mode)
	}
	pc, err := readProcCgroup()
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	mnt := v1Mounts(mounts)["memory"]
	own := filepath.Join(mnt.point, relToMount(pc.v1["memory"], mnt.root))
	cg, err := m.Create("auto", Resources{MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// <own>/<root>/env-auto: two levels below the process's own cgroup.
	if got := cg.Paths()["memory"]; filepath.Dir(filepath.Dir(got)) != own {
		t.Errorf("memory cgroup %s is not in a tree under the process's own %s", got, own)
	}
	if err := cg.Delete(); err != nil {
		t.Fatal(err)
	}
}
