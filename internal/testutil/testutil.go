// Package testutil holds the capability gates shared by nubo's tests, a
// reading of the host's process table (Procs), which the benchmark
// (bench/cmd/nubo-bench) uses too, a TCP server for tests (Serve), and
// host-wide slots for what parallel test processes must not share (Slot).
//
// A gate skips a test on a machine that cannot run it (a laptop without root,
// a host without cgroup v2) but fails it when CI=true and this kind of machine
// is expected to have the capability, so a missing feature in CI is never
// mistaken for a pass.
package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run under CI (CI=true), where every gate
// that this machine kind satisfies must pass rather than skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test, or fails it when CI expects the capability.
func skipOrFail(t testing.TB, expectedInCI bool, why string) {
	t.Helper()
	if InCI() && expectedInCI {
		t.Fatalf("required in CI but unavailable: %s", why)
	}
	t.Skip(why)
}

// RequiresRoot skips unless the test runs as root (CI always does).
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, true, "needs root")
	}
}

// RequiresCgroupV1 skips unless v1 controllers are mounted (CI machines are hybrid v1).
func RequiresCgroupV1(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		skipOrFail(t, true, "needs cgroup v1 memory controller")
	}
}

// RequiresCgroupV2 skips unless the unified hierarchy with controllers is mounted.
// CI machines of this kind have none, so this never fails in CI.
func RequiresCgroupV2(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		skipOrFail(t, false, "needs a cgroup v2 host")
	}
}

// RequiresBinary skips unless name is on PATH; CI installs every binary the
// tests use, so there it fails instead.
func RequiresBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, true, "needs "+name+" on PATH")
	}
	return p
}

// Requires skips unless ok; CI provides everything the tests need
// (scripts/deps.sh --test), so there it fails instead. why names what is
// missing and what provides it.
func Requires(t testing.TB, ok bool, why string) {
	t.Helper()
	if !ok {
		skipOrFail(t, true, why)
	}
}

// Proc is one process as /proc/<pid>/stat shows it.
type Proc struct {
	PPID  int
	State string // R, S, Z, …
	Comm  string
}

// Procs reads every process of the host's process table (the caller's pid
// namespace) from /proc; processes that end while it reads are left out.
func Procs() map[int]Proc {
	m := map[int]Proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may hold spaces and parentheses: the fields after it start
		// after the last ')'.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		m[pid] = Proc{PPID: ppid, State: f[0], Comm: string(b[open+1 : end])}
	}
	return m
}

// Serve answers every connection ln accepts with handle, then closes the
// connection, until ln is closed (at the end of the test).
func Serve(t testing.TB, ln net.Listener, handle func(c net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
			c.Close()
		}
	}()
}

// Slot claims one of n slots of kind for the rest of the test: no other
// test on this host, in this process or another, holds the same one until
// the test ends. Servers of parallel test processes derive their bridge
// names, subnets and id ranges from it. A slot is an flock on a file under
// the temp directory, so one held by a test process that died is free.
func Slot(t testing.TB, kind string, n int) int {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "nubo-test-slots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	start := os.Getpid() % n
	for i := range n {
		slot := (start + i) % n
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d", kind, slot)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		// A lock belongs to the open file, so a second claim in this
		// process is refused as one in another process is.
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			t.Cleanup(func() { f.Close() })
			return slot
		}
		f.Close()
	}
	t.Fatalf("testutil: all %d %s slots are taken", n, kind)
	return 0
}
