package agent

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// initReaper is a reaper as PID 1 has it (routing statuses it reaps with
// wait4(-1)), with PID 1's loop until the test ends; the test binary has
// no other children while it runs.
func initReaper(t *testing.T) *reaper {
	r := &reaper{byPid: map[int]*proc{}, initPid: true, forked: make(chan struct{}, 1)}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r.reapNext(stop) {
		}
	}()
	t.Cleanup(func() {
		close(stop)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the reaper's loop did not end: a child of the test is still alive")
		}
	})
	return r
}

func waitDone(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s (pid %d): no exit status routed", p.name, p.pid)
	}
}

// TestReaperRoutes: a child the reaper started gets its own status, even
// one that exits at once, beside a child it did not start (an orphan, as
// PID 1 sees them), and nothing is left waiting. (That a stranger's status
// is not kept: TestReaperDropsStrangers.)
func TestReaperRoutes(t *testing.T) {
	r := initReaper(t)
	stranger := exec.Command("/bin/sh", "-c", "exit 9")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		p, err := r.start(procSpec{name: "child", argv: []string{"/bin/sh", "-c", "exit 7"}, dir: "/"})
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, p)
		if p.reason != "exit status 7" {
			t.Fatalf("child %d: reason %q, want exit status 7", i, p.reason)
		}
	}
	r.mu.Lock()
	left := len(r.byPid)
	r.mu.Unlock()
	if left != 0 {
		t.Fatalf("reaper still waits for %d processes", left)
	}
	// The stranger is reaped too (by the loop, or here): no zombie is left
	// for the next test's count of children.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(stranger.Process.Pid, &ws, syscall.WNOHANG, nil); errors.Is(err, syscall.ECHILD) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stranger was never reaped")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReaperDropsStrangers: the status of a process the reaper did not
// start does not pass for a later child that gets the same pid.
func TestReaperDropsStrangers(t *testing.T) {
	r := &reaper{byPid: map[int]*proc{}, initPid: true}
	const pid = 4242
	r.route(pid, syscall.WaitStatus(1<<8)) // an orphan's exit status 1
	p := &proc{name: "runtime", pid: pid, done: make(chan struct{})}
	r.mu.Lock()
	r.register(p)
	r.mu.Unlock()
	select {
	case <-p.done:
		t.Fatalf("an orphan's status passed for the new process: %q", p.reason)
	default:
	}
	r.route(pid, syscall.WaitStatus(3<<8))
	waitDone(t, p)
	if p.reason != "exit status 3" {
		t.Fatalf("reason %q, want exit status 3", p.reason)
	}
}

// TestReaperWarm: the warm-up's exec fails as planned and leaves no
// process behind, whoever reaps it.
func TestReaperWarm(t *testing.T) {
	// Go's own wait for the failed child first, then PID 1's loop; the
	// loop starts only after the first case.
	for _, mk := range []func() *reaper{newReaper, func() *reaper { return initReaper(t) }} {
		r := mk()
		if err := r.warm(); err != nil {
			t.Fatalf("warm (initPid %v): %v", r.initPid, err)
		}
		var ws syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
			t.Fatalf("after warm: wait4 gave pid %d, %v; want no child at all", pid, err)
		}
	}
}
