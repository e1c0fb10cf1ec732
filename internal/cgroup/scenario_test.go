//go:build linux

package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Scenarios shared by the real v1 and v2 tests: each drives a Manager on
// the live kernel and checks what the kernel did, not what was written.

// placeAndRun starts role, places it in cg and releases it.
func placeAndRun(t *testing.T, cg Cgroup, role string, opts ...helperOpt) *helper {
	t.Helper()
	h := startHelper(t, role, true, opts...)
	if err := cg.AddProc(h.pid()); err != nil {
		t.Fatal(err)
	}
	h.release(t)
	return h
}

func mustCreate(t *testing.T, m Manager, name string, r Resources) Cgroup {
	t.Helper()
	cg, err := m.Create(name, r)
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	t.Cleanup(func() {
		_ = cg.Kill()
		_ = cg.Delete()
	})
	return cg
}

func killAndDelete(t *testing.T, cg Cgroup) {
	t.Helper()
	if err := cg.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if p, err := cg.Procs(); err != nil || len(p) != 0 {
		t.Fatalf("after Kill: procs %v, %v", p, err)
	}
	paths := cg.Paths()
	if err := cg.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Delete (%v)", p, err)
		}
	}
}

// scenarioOOM: a process allocating 200 MB in a 64 MB cgroup is OOM-killed;
// the kill is counted and the peak sits just under the limit; ResetPeak
// brings the peak down to the (now small) current usage.
func scenarioOOM(t *testing.T, m Manager) {
	const limit = 64 << 20
	cg := mustCreate(t, m, "oom", Resources{MemoryBytes: limit, PidsMax: 64})
	// Memory keeps its files open: a read before the hog and one after
	// must both be current.
	peak0, oom0, err := cg.Memory()
	if err != nil || oom0 != 0 {
		t.Fatalf("Memory before: peak %d, oom kills %d, %v", peak0, oom0, err)
	}
	h := placeAndRun(t, cg, "hog", withEnv("NUBO_HOG_MB=200"))
	err = h.wait(t, 20*time.Second)
	if !killedBySIGKILL(err) {
		t.Fatalf("hog ended with %v (output %v), want SIGKILL by the OOM killer", err, h.lines)
	}
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after OOM kill: %+v", st)
	if peak1, oom1, err := cg.Memory(); err != nil || oom1 != st.OOMKills || peak1 != st.MemoryPeak || peak1 <= peak0 {
		t.Errorf("Memory after: peak %d (before %d), oom kills %d, %v; want the fresh figures %d, %d", peak1, peak0, oom1, err, st.MemoryPeak, st.OOMKills)
	}
	if peak, err := cg.MemoryPeak(); err != nil || peak != st.MemoryPeak {
		t.Errorf("MemoryPeak after: %d, %v; want the fresh %d", peak, err, st.MemoryPeak)
	}
	if st.OOMKills < 1 {
		t.Errorf("OOMKills = %d, want >= 1", st.OOMKills)
	}
	// The watermark can overshoot the limit by a few pages charged in
	// batches before the limit check.
	if st.MemoryPeak < limit*3/4 || st.MemoryPeak > limit+1<<20 {
		t.Errorf("MemoryPeak = %d MiB, want close to the %d MiB limit", st.MemoryPeak>>20, limit>>20)
	}
	switch err := cg.ResetPeak(); {
	case errors.Is(err, errors.ErrUnsupported):
		t.Logf("ResetPeak unsupported here: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		st2, err := cg.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st2.MemoryPeak >= limit/2 {
			t.Errorf("MemoryPeak after ResetPeak = %d MiB, want the small current usage (%d B)", st2.MemoryPeak>>20, st2.MemoryCurrent)
		}
	}
	killAndDelete(t, cg)
}

// scenarioPids: with pids.max 16 a fork loop of 100 sees fork failures, and
// the cgroup never holds more than 16 tasks.
func scenarioPids(t *testing.T, m Manager) {
	cg := mustCreate(t, m, "pids", Resources{MemoryBytes: 128 << 20, PidsMax: 16})
	h := placeAndRun(t, cg, "forker")
	line := h.line(t, "forked=", 10*time.Second)
	var ok, failed int
	if _, err := fmt.Sscanf(line, "forked=%d failed=%d", &ok, &failed); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	t.Logf("fork loop under pids.max 16: %s", line)
	if failed == 0 || ok+failed != 100 || ok >= 16 {
		t.Errorf("fork loop: %d forked, %d failed; want failures and < 16 forks", ok, failed)
	}
	st, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids == 0 || st.Pids > 16 {
		t.Errorf("Pids = %d, want 1..16", st.Pids)
	}
	procs, err := cg.Procs()
	if err != nil || len(procs) != ok+1 {
		t.Errorf("Procs = %v (%v), want the forker and its %d children", procs, err, ok)
	}
	killAndDelete(t, cg)
	if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("forker ended with %v, want SIGKILL", err)
	}
}

// scenarioCPU: 0.2 vCPU, set after the process runs unthrottled, holds a
// busy loop to roughly 20% of one CPU.
func scenarioCPU(t *testing.T, m Manager, checkQuota func(cg Cgroup, want string)) {
	cg := mustCreate(t, m, "cpu", Resources{MemoryBytes: 128 << 20})
	checkQuota(cg, "unlimited")
	placeAndRun(t, cg, "spin")
	if err := cg.Set(Resources{MemoryBytes: 128 << 20, CPUMilli: 200}); err != nil {
		t.Fatal(err)
	}
	checkQuota(cg, "20000")
	s0, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(time.Second)
	s1, err := cg.Stats()
	if err != nil {
		t.Fatal(err)
	}
	frac := float64(s1.CPUUsageNanos-s0.CPUUsageNanos) / float64(time.Since(t0).Nanoseconds())
	t.Logf("busy loop used %.0f%% of a CPU under a 20%% quota", frac*100)
	if frac < 0.03 || frac > 0.32 {
		t.Errorf("CPU use %.2f of a CPU, want about 0.20", frac)
	}
	killAndDelete(t, cg)
}

// scenarioFreeze: a frozen process stops advancing its counter; thawed, it
// resumes.
func scenarioFreeze(t *testing.T, m Manager, isFrozen func(cg Cgroup) bool) {
	cg := mustCreate(t, m, "freeze", Resources{MemoryBytes: 128 << 20})
	file := filepath.Join(t.TempDir(), "counter")
	h := placeAndRun(t, cg, "counter", withEnv("NUBO_COUNTER_FILE="+file))
	eventually(t, 5*time.Second, "counter to start", func() bool { return readCounter(t, file) > 0 })
	if err := cg.Freeze(); err != nil {
		t.Fatal(err)
	}
	if !isFrozen(cg) {
		t.Error("kernel does not report the cgroup frozen after Freeze")
	}
	a := readCounter(t, file)
	time.Sleep(200 * time.Millisecond)
	if b := readCounter(t, file); b != a {
		t.Errorf("counter advanced from %d to %d while frozen", a, b)
	}
	if err := cg.Thaw(); err != nil {
		t.Fatal(err)
	}
	if isFrozen(cg) {
		t.Error("kernel still reports the cgroup frozen after Thaw")
	}
	eventually(t, 5*time.Second, "counter to resume", func() bool { return readCounter(t, file) > a })
	killAndDelete(t, cg)
	if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("counter ended with %v, want SIGKILL", err)
	}
}

// scenarioKill: Kill empties a cgroup holding several processes, including
// children whose parent dies with them, and a frozen one.
func scenarioKill(t *testing.T, m Manager) {
	cg := mustCreate(t, m, "kill", Resources{MemoryBytes: 128 << 20})
	var hs []*helper
	for range 3 {
		hs = append(hs, placeAndRun(t, cg, "sleep"))
	}
	forker := placeAndRun(t, cg, "forker")
	forker.line(t, "forked=", 10*time.Second)
	hs = append(hs, forker)
	procs, err := cg.Procs()
	starts := map[int]uint64{}
	for _, p := range procs {
		starts[p], _ = procStartTime(p)
	}
	if err != nil || len(procs) < 4+10 {
		t.Fatalf("Procs = %v (%v), want the 4 helpers and the forker's children", procs, err)
	}
	for _, h := range hs {
		if !slices.Contains(procs, h.pid()) {
			t.Errorf("Procs lacks helper %d", h.pid())
		}
	}
	if err := cg.Freeze(); err != nil {
		t.Fatal(err)
	}
	killAndDelete(t, cg)
	for _, h := range hs {
		if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
			t.Errorf("helper %d ended with %v, want SIGKILL", h.pid(), err)
		}
	}
	for _, p := range procs {
		// Gone, a zombie awaiting its reaper, or the pid already reused.
		if ownerAlive(p, starts[p]) && !isZombie(p) {
			t.Errorf("process %d survived Kill", p)
		}
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// scenarioClose: Close kills what environments still run, frozen ones
// included, and removes the whole tree.
func scenarioClose(t *testing.T, m Manager, roots []string) {
	cg, err := m.Create("left", Resources{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h := placeAndRun(t, cg, "sleep")
	// Idle environments are frozen between invocations; Close must still
	// get them killed.
	if err := cg.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := h.wait(t, 5*time.Second); !killedBySIGKILL(err) {
		t.Errorf("helper ended with %v, want SIGKILL", err)
	}
	for _, r := range roots {
		if _, err := os.Stat(r); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("root %s remains after Close (%v)", r, err)
		}
	}
	if _, err := m.Create("late", Resources{}); err == nil {
		t.Error("Create after Close succeeded")
	}
}
