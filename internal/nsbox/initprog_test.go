//go:build linux

package nsbox

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runProg forks a child of this (multi-threaded) test process that replays
// p, and returns its exit status and what it wrote to stderr.
func runProg(t *testing.T, build func(p *initProg)) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &initProg{errFD: w.Fd()}
	build(p)
	pid, pidfd, err := forkInit(p, 0, -1)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(pidfd)
	out, _ := io.ReadAll(r)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return ws.ExitStatus(), string(out)
}

// execTrue appends an exec of /bin/true.
func execTrue(p *initProg) {
	argv, _ := syscall.SlicePtrFromStrings([]string{"true"})
	envp, _ := syscall.SlicePtrFromStrings(nil)
	p.keep = append(p.keep, argv, envp)
	p.call("exec", unix.SYS_EXECVEAT, unix.AT_FDCWD, "/bin/true", unsafe.Pointer(&argv[0]), unsafe.Pointer(&envp[0]), 0)
}

// TestInitProg: a child replays the calls in order, passes results on as
// arguments, allows the errno it was told to, execs at the end, and on the
// first failure names the step and its errno, or the unexpected result,
// and exits 1.
func TestInitProg(t *testing.T) {
	if _, err := os.Stat("/bin/true"); err != nil {
		t.Skip("no /bin/true")
	}
	dir := t.TempDir()
	sub := filepath.Join(dir, "a")
	status, out := runProg(t, func(p *initProg) {
		p.call("mkdir", unix.SYS_MKDIRAT, unix.AT_FDCWD, sub, 0o755)
		p.call("mkdir again", unix.SYS_MKDIRAT, unix.AT_FDCWD, sub, 0o755)
		p.allow(unix.EEXIST)
		fd := p.call("create", unix.SYS_OPENAT, unix.AT_FDCWD, filepath.Join(sub, "f"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		p.call("write", unix.SYS_WRITE, fd, []byte("hello"), 5)
		p.want(5)
		execTrue(p)
	})
	if status != 0 || out != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", status, out)
	}
	if b, err := os.ReadFile(filepath.Join(sub, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("the file written through a passed-on descriptor: %q, %v", b, err)
	}

	status, out = runProg(t, func(p *initProg) {
		p.call("mkdir deep", unix.SYS_MKDIRAT, unix.AT_FDCWD, filepath.Join(dir, "x", "y"), 0o755)
		execTrue(p)
	})
	if want := "nubo sandbox init: mkdir deep: ENOENT (errno 2)\n"; status != 1 || out != want {
		t.Errorf("a failed call: exit %d, stderr %q; want 1 and %q", status, out, want)
	}

	r, w, _ := os.Pipe()
	w.Close()
	defer r.Close()
	status, out = runProg(t, func(p *initProg) {
		p.call("read a byte", unix.SYS_READ, r.Fd(), make([]byte, 1), 1)
		p.want(1)
		execTrue(p)
	})
	if want := "nubo sandbox init: read a byte: end of file\n"; status != 1 || out != want {
		t.Errorf("an unexpected result: exit %d, stderr %q; want 1 and %q", status, out, want)
	}

	// A failure goes to the descriptor in force when its call was
	// appended: the init moves the sandbox's stderr to fd 2 on its way.
	r2, w2, _ := os.Pipe()
	defer r2.Close()
	status, out = runProg(t, func(p *initProg) {
		p.call("fine", unix.SYS_GETPID)
		p.errFD = w2.Fd()
		p.call("exec", unix.SYS_EXECVEAT, unix.AT_FDCWD, filepath.Join(dir, "none"), nil, nil, 0)
	})
	w2.Close()
	moved, _ := io.ReadAll(r2)
	if status != 1 || out != "" || string(moved) != "nubo sandbox init: exec: ENOENT (errno 2)\n" {
		t.Errorf("a failure after the move: exit %d, first stderr %q, second %q", status, out, moved)
	}

	status, out = runProg(t, func(p *initProg) {
		p.call("exec", unix.SYS_EXECVEAT, unix.AT_FDCWD, filepath.Join(dir, "none"), nil, nil, 0)
	})
	if want := "nubo sandbox init: exec: ENOENT (errno 2)\n"; status != 1 || out != want {
		t.Errorf("a failed exec: exit %d, stderr %q; want 1 and %q", status, out, want)
	}
}

// TestInitProgMistakes: a program built wrong is refused before any clone.
func TestInitProgMistakes(t *testing.T) {
	for name, build := range map[string]func(p *initProg){
		"argument type":   func(p *initProg) { p.call("x", unix.SYS_GETPID, 1.5) },
		"later result":    func(p *initProg) { p.call("x", unix.SYS_CLOSE, result(0)) },
		"seven arguments": func(p *initProg) { p.call("x", unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7) },
		"empty":           func(p *initProg) {},
	} {
		p := &initProg{errFD: 2}
		build(p)
		if _, _, err := forkInit(p, 0, -1); err == nil {
			t.Errorf("%s: forkInit accepted the program", name)
		}
	}
}

// TestInitProgSharesMemory: where the init is cloned with CLONE_VM
// (shareMemory), what the child writes lands in the spawner's memory, and
// nothing else of it breaks; where it is forked, the child writes its own
// copy.
func TestInitProgSharesMemory(t *testing.T) {
	if _, err := os.Stat("/bin/true"); err != nil {
		t.Skip("no /bin/true")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	buf := make([]byte, 5)
	for round := 0; round < 3; round++ { // the second and third may reuse a stack
		status, out := runProg(t, func(p *initProg) {
			p.call("read", unix.SYS_READ, r.Fd(), buf, len(buf))
			execTrue(p)
		})
		if status != 0 || out != "" {
			t.Fatalf("exit %d, stderr %q; want 0 and nothing", status, out)
		}
	}
	if got, want := string(buf) == "hello", shareMemory; got != want {
		t.Errorf("the child's read seen by the parent: %v (%q), want %v", got, buf, want)
	}
}

// TestInitProgOutlivesGC: a child that waits before its exec still finds
// its program and stack whole after the parent has dropped them, collected
// garbage and allocated over and over, and started another child meanwhile
// (forkInit keeps both until the exec: a stack handed back early would go
// to that child).
func TestInitProgOutlivesGC(t *testing.T) {
	if _, err := os.Stat("/bin/true"); err != nil {
		t.Skip("no /bin/true")
	}
	gate, open, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	defer open.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &initProg{errFD: w.Fd()}
	p.call("wait at the gate", unix.SYS_READ, gate.Fd(), make([]byte, 1), 1)
	p.want(1)
	p.call("getpid", unix.SYS_GETPID)
	execTrue(p)
	pid, pidfd, err := forkInit(p, 0, -1)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped { // the test failed before the gate opened
			unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			unix.Wait4(pid, nil, 0, nil)
		}
		unix.Close(pidfd)
	}()
	p = nil
	if status, out := runProg(t, execTrue); status != 0 || out != "" {
		t.Fatalf("a second child meanwhile: exit %d, stderr %q", status, out)
	}
	var junk [][]byte
	for i := 0; i < 20; i++ {
		runtime.GC()
		for j := 0; j < 1000; j++ {
			junk = append(junk, make([]byte, 64+j%512), make([]byte, 16<<10))
		}
		junk = junk[:0]
	}
	if _, err := open.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	var ws unix.WaitStatus
	_, err = unix.Wait4(pid, &ws, 0, nil)
	reaped = true
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 || len(out) != 0 {
		t.Fatalf("the child: %v, stderr %q; want exit 0 and nothing", ws, out)
	}
}
