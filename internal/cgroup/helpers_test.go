//go:build linux

package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary re-executes itself as the processes placed in cgroups
// (the runc integration-test pattern), so the tests need nothing installed.
const roleEnv = "NUBO_CGROUP_TEST_ROLE"

// testPrefix names every tree the tests create; the leak check looks for it.
const testPrefix = "nubocgtest"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		runRole(role)
		os.Exit(0)
	}
	cleanupEarlierRuns()
	os.Exit(m.Run())
}

// cleanupEarlierRuns removes what an earlier run of these tests left when
// it was killed (a timeout, ^C): exactly the daemon-killed-with-SIGKILL
// case CleanupStale exists for, so the leak checks judge this run alone.
func cleanupEarlierRuns() {
	if os.Geteuid() != 0 || !exists("/sys/fs/cgroup/memory/memory.limit_in_bytes") {
		return
	}
	m, err := NewV1("", Options{Prefix: testPrefix})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgroup tests: cleanup of earlier runs:", err)
		return
	}
	if err := m.CleanupStale(); err != nil {
		fmt.Fprintln(os.Stderr, "cgroup tests: cleanup of earlier runs:", err)
	}
	if err := m.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "cgroup tests: cleanup of earlier runs:", err)
	}
}

func runRole(role string) {
	if os.Getenv("NUBO_WAIT_RELEASE") == "1" {
		// The parent writes one byte once the process is in its cgroup,
		// like the sandbox's sync pipe: nothing is charged elsewhere first.
		var b [1]byte
		if _, err := os.Stdin.Read(b[:]); err != nil {
			os.Exit(3)
		}
	}
	switch role {
	case "hog":
		mb, _ := strconv.Atoi(os.Getenv("NUBO_HOG_MB"))
		buf := make([]byte, mb<<20)
		for i := 0; i < len(buf); i += 4096 {
			buf[i] = 1
		}
		fmt.Println("survived")
	case "spin":
		for i := 0; ; i++ {
			_ = i * i
		}
	case "counter":
		f, err := os.Create(os.Getenv("NUBO_COUNTER_FILE"))
		if err != nil {
			os.Exit(4)
		}
		for i := 1; ; i++ {
			_, _ = f.WriteAt([]byte(fmt.Sprintf("%020d\n", i)), 0)
			time.Sleep(5 * time.Millisecond)
		}
	case "forker":
		ok, failed := forkSleepers(100)
		fmt.Printf("forked=%d failed=%d\n", ok, failed)
		time.Sleep(time.Hour)
	case "sleep":
		time.Sleep(time.Hour)
	}
}

// forkSleepers forks n children with a raw clone: each child runs no Go
// code besides a ppoll that never returns, so it needs no thread of its
// own and the parent's runtime never needs a new one. Forks refused by the
// pids controller count as failures.
func forkSleepers(n int) (ok, failed int) {
	for range n {
		pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
		switch {
		case errno != 0:
			failed++
		case pid == 0:
			sleepForever()
		default:
			ok++
		}
	}
	return ok, failed
}

//go:nosplit
func sleepForever() {
	for {
		syscall.RawSyscall6(syscall.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
	}
}

// helper is one re-executed test binary.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error // cmd.Wait's result, valid after done
}

type helperOpt func(*exec.Cmd)

func withEnv(kv ...string) helperOpt {
	return func(c *exec.Cmd) { c.Env = append(c.Env, kv...) }
}

// intoCgroup starts the helper directly inside a v2 cgroup (clone3 with
// CLONE_INTO_CGROUP).
func intoCgroup(f *os.File) helperOpt {
	return func(c *exec.Cmd) {
		c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
}

// startHelper runs role; with wait it blocks until release() before doing
// anything. Cleanup kills it, whatever happened.
func startHelper(t *testing.T, role string, wait bool, opts ...helperOpt) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "GOMAXPROCS=1")
	if wait {
		cmd.Env = append(cmd.Env, "NUBO_WAIT_RELEASE=1")
	}
	for _, o := range opts {
		o(cmd)
	}
	h := &helper{cmd: cmd, done: make(chan struct{})}
	var err error
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", role, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			h.mu.Unlock()
		}
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			// A task in a frozen cgroup holds SIGKILL until thawed.
			t.Errorf("helper %d (%s) does not die: left frozen?", cmd.Process.Pid, role)
		}
	})
	return h
}

func (h *helper) pid() int { return h.cmd.Process.Pid }

func (h *helper) release(t *testing.T) {
	t.Helper()
	if _, err := h.stdin.Write([]byte{1}); err != nil {
		t.Fatalf("release helper: %v", err)
	}
}

// wait returns how the helper ended, failing the test after timeout.
func (h *helper) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(timeout):
		t.Fatalf("helper %d still running after %v", h.pid(), timeout)
		return nil
	}
}

// line waits for an output line starting with prefix.
func (h *helper) line(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, l := range h.lines {
			if strings.HasPrefix(l, prefix) {
				h.mu.Unlock()
				return l
			}
		}
		h.mu.Unlock()
		select {
		case <-h.done:
			t.Fatalf("helper exited (%v) without printing %q", h.err, prefix)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("helper printed no %q within %v", prefix, timeout)
	return ""
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// eventually polls cond for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readCounter(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// checkNoLeaks registers, first so that it runs last, a check that no
// cgroup directory of this package's tests remains in any hierarchy. Other
// nubo trees (of concurrently running daemons or tests of other packages,
// with other prefixes) are only logged.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var leaks, others []string
		_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // cgroups come and go under other processes
			}
			if d.IsDir() && strings.Contains(d.Name(), "nubo") {
				if strings.Contains(d.Name(), testPrefix) {
					leaks = append(leaks, p)
				} else {
					others = append(others, p)
				}
				return fs.SkipDir
			}
			return nil
		})
		if len(leaks) > 0 {
			t.Errorf("cgroups left behind: %v", leaks)
		}
		if len(others) > 0 {
			t.Logf("nubo cgroups of other processes present: %v", others)
		}
	})
}
