package nsbox

import (
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A sandbox's init runs between clone and exec, as a list of system calls.
//
// The child the spawner clones must build the sandbox's root, drop every
// privilege and load the seccomp filter before the agent runs. Go cannot
// run ordinary Go code in a child between fork and exec: only the forking
// thread exists there, so anything that needs the runtime (an allocation,
// a stack growth, a lock another thread held at the fork) can hang or
// crash it. The init used to be a process of its own for that reason: the
// agent executable started a first time, as the "init stage", only to exec
// itself again as the agent. Starting that Go runtime and decoding its
// configuration cost 2.5 ms of CPU per sandbox (docs/performance.md,
// "Where it stands (session 6)").
//
// Now the spawner computes the whole init before the clone, as an initProg:
// every system call with its arguments, every path and buffer they point
// to laid out in the spawner's heap. The child replays it (replayChild)
// with raw system calls from a function that neither allocates nor grows
// its stack, and its last call execs the agent. runc does the same work in C (its
// nsexec) before its Go runtime starts.
type initProg struct {
	calls []sysCall
	res   []uintptr // each call's result, for the calls that refer to it
	// msgs[i] prefixes the message when call i fails: "nubo sandbox init:
	// <what>: ".
	msgs [][]byte
	// errFD is where a failure of the calls appended from now on is
	// written: the sandbox's stderr, under whatever number it has then.
	errFD uintptr
	// keep holds everything an argument points to, so it lives (and the
	// garbage collector, which does not move heap objects, leaves it) until
	// the child has exec'd: a child that shares the spawner's memory
	// (shareMemory) reads it there until then (forkInit keeps p).
	keep []any
	err  error // see fail

	// What the clone needs, in the heap with the rest (see cloneReplay).
	clone          cloneArgs
	pidfd          int32
	sigAll, sigOld uint64
	// errno is errnoText(), for the child's failure message.
	errno [][]byte
}

// sysCall is one system call of an initProg.
type sysCall struct {
	nr   uintptr
	args [6]uintptr
	// refs has bit i set when args[i] is the index of an earlier call,
	// whose result is the argument (a descriptor made in the child).
	refs uint8
	// ok are errnos that count as success (EEXIST for a directory that
	// may exist); 0 for none.
	ok [2]syscall.Errno
	// want is the result the call must return (a read of one byte), or -1.
	want  int
	errFD uintptr // see initProg.errFD
}

// result names an earlier call's result as an argument (see sysCall.refs).
type result int

// call appends a system call. Arguments are integers, strings
// (passed as NUL-terminated copies), byte slices, pointers kept alive by the
// program, nil (NULL), or a result of an earlier call. It returns the
// call's result for later calls.
func (p *initProg) call(what string, nr uintptr, args ...any) result {
	c := sysCall{nr: nr, want: -1, errFD: p.errFD}
	if len(args) > 6 {
		p.fail(fmt.Errorf("%s: %d system call arguments", what, len(args)))
	}
	for i, a := range args[:min(len(args), 6)] {
		switch v := a.(type) {
		case nil:
		case result:
			if int(v) < 0 || int(v) >= len(p.calls) {
				p.fail(fmt.Errorf("%s: the result of no earlier call", what))
			}
			c.args[i] = uintptr(v)
			c.refs |= 1 << i
		case string:
			if strings.IndexByte(v, 0) >= 0 {
				p.fail(fmt.Errorf("%s: a NUL in %q", what, v))
			}
			b := append([]byte(v), 0)
			p.keep = append(p.keep, b)
			c.args[i] = uintptr(unsafe.Pointer(&b[0]))
		case []byte:
			if len(v) > 0 {
				p.keep = append(p.keep, v)
				c.args[i] = uintptr(unsafe.Pointer(&v[0]))
			}
		case unsafe.Pointer:
			p.keep = append(p.keep, v)
			c.args[i] = uintptr(v)
		default:
			switch r := reflect.ValueOf(a); {
			case r.CanInt():
				c.args[i] = uintptr(r.Int())
			case r.CanUint():
				c.args[i] = uintptr(r.Uint())
			default:
				p.fail(fmt.Errorf("%s: a system call argument of type %T", what, a))
			}
		}
	}
	p.calls = append(p.calls, c)
	p.msgs = append(p.msgs, []byte("nubo sandbox init: "+what+": "))
	return result(len(p.calls) - 1)
}

// fail records the first mistake in building p; forkInit refuses p then.
func (p *initProg) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// allow makes up to two errnos count as success for the call just appended
// (its result is then -1: no later call may take it as an argument).
func (p *initProg) allow(errnos ...syscall.Errno) {
	if len(errnos) > len(sysCall{}.ok) {
		p.fail(fmt.Errorf("%d errnos allowed", len(errnos)))
		return
	}
	copy(p.calls[len(p.calls)-1].ok[:], errnos)
}

// want makes the call just appended fail unless it returns n.
func (p *initProg) want(n int) { p.calls[len(p.calls)-1].want = n }

// cloneArgs is the kernel's struct clone_args (clone3, up to the cgroup
// field of Linux 5.7).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// forkInit clones a child with flags (namespaces; CLONE_INTO_CGROUP with
// cgroupFD when that is not -1) that replays p; it returns the child's pid
// and pidfd. The calling goroutine stays on its thread for the call: the
// child's parent-death signal follows that thread.
//
// Where the child shares the spawner's memory (shareMemory), it runs on a
// stack from childStacks, and p and that stack stay untouched until the
// child has exec'd or died: a pipe whose only write end the child holds,
// close-on-exec, reads end of file then.
func forkInit(p *initProg, flags uint64, cgroupFD int) (pid, pidfd int, err error) {
	if p.err != nil {
		return 0, -1, p.err
	}
	if len(p.calls) == 0 {
		return 0, -1, fmt.Errorf("nsbox: empty init program")
	}
	p.res = make([]uintptr, len(p.calls))
	p.errno = errnoText()
	// Handlers back to the default in the child: none of the spawner's
	// runtime may run there (the child also starts with every signal
	// blocked, and unblocks them just before its exec).
	p.clone = cloneArgs{flags: flags | unix.CLONE_PIDFD | unix.CLONE_CLEAR_SIGHAND, exitSignal: uint64(unix.SIGCHLD)}
	if cgroupFD >= 0 {
		p.clone.flags |= unix.CLONE_INTO_CGROUP
		p.clone.cgroup = uint64(cgroupFD)
	}
	p.pidfd, p.sigAll, p.sigOld = -1, ^uint64(0), 0
	var watch *os.File
	var stack *[]byte
	if shareMemory {
		var w int
		if watch, w, err = execWatch(); err != nil {
			return 0, -1, err
		}
		stack = childStacks.Get().(*[]byte)
		p.clone.flags |= unix.CLONE_VM | unix.CLONE_SETTLS
		p.clone.stack = uint64(uintptr(unsafe.Pointer(&(*stack)[0])))
		p.clone.stackSize = uint64(len(*stack))
		// The child gets a thread pointer of its own, just above a zero
		// word at the bottom of its stack, where Go's code looks for the
		// running goroutine (-8 from it on amd64). Inheriting the
		// spawner's thread pointer, it would find the spawner thread's
		// goroutine there: a path into the runtime that should never be
		// taken (a bounds check's panic, say) would then run on the
		// spawner's goroutine and thread state while the spawner runs
		// them too. With none, it faults, and only the child dies.
		clear((*stack)[:childTLS])
		p.clone.tls = uint64(uintptr(unsafe.Pointer(&(*stack)[childTLS])))
		defer func() {
			unix.Close(w)
			go func() {
				var b [1]byte
				watch.Read(b[:]) // end of file: exec'd or gone (or never cloned)
				watch.Close()
				runtime.KeepAlive(p)
				childStacks.Put(stack)
			}()
		}()
	}
	runtime.LockOSThread()
	r, errno := cloneReplay(p)
	runtime.UnlockOSThread()
	if errno != 0 {
		return 0, -1, fmt.Errorf("clone: %w", errno)
	}
	return int(r), int(p.pidfd), nil
}

// childStacks holds the stacks of children that share the spawner's
// memory. The child's init is a few nosplit frames (see replayChild),
// which use a few hundred bytes at the top of the 16 KiB; the bottom
// childTLS bytes are its thread-local storage (see forkInit).
var childStacks = sync.Pool{New: func() any {
	s := make([]byte, 16<<10)
	return &s
}}

const childTLS = 64

// execWatch makes a pipe whose write end, close-on-exec and numbered 10
// or above (the init moves descriptors onto 0-3 only: agentFDs), the child
// alone will hold. Its read end is non-blocking, for the runtime's poller.
func execWatch() (*os.File, int, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, -1, err
	}
	w, err := unix.FcntlInt(uintptr(fds[1]), unix.F_DUPFD_CLOEXEC, 10)
	unix.Close(fds[1])
	if err != nil {
		unix.Close(fds[0])
		return nil, -1, err
	}
	return os.NewFile(uintptr(fds[0]), "exec watch"), w, nil
}

// cloneReplay blocks every signal on this thread, clones (cloneVM), and
// restores the signal mask in the parent; the child replays p
// (replayChild).
//
//go:nosplit
//go:norace
//go:noinline
func cloneReplay(p *initProg) (uintptr, syscall.Errno) {
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&p.sigAll)),
		uintptr(unsafe.Pointer(&p.sigOld)), 8, 0, 0)
	p.clone.pidfd = uint64(uintptr(unsafe.Pointer(&p.pidfd)))
	r, errno := cloneVM(&p.clone, unsafe.Sizeof(p.clone), p)
	if errno == unix.ENOSYS && p.clone.flags&unix.CLONE_INTO_CGROUP == 0 {
		// No clone3 (a seccomp profile of a container runtime refuses
		// it): clone(2) returns the pidfd through its parent_tid
		// argument, the third on every architecture. The child is forked
		// then, on a copy of this stack, with this thread's pointer.
		r, _, errno = syscall.RawSyscall6(unix.SYS_CLONE, uintptr(p.clone.flags&^(unix.CLONE_VM|unix.CLONE_SETTLS))|uintptr(unix.SIGCHLD), 0,
			uintptr(unsafe.Pointer(&p.pidfd)), 0, 0, 0)
		if errno == 0 && r == 0 {
			replayChild(p)
		}
	}
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&p.sigOld)), 0, 8, 0, 0)
	return r, errno
}

// replayChild is the child: it replays p and never returns. Its last call
// execs; on the first failure it writes what failed and exits 1.
//
// Nothing here may allocate, grow the stack (hence nosplit, and one
// function: the nosplit limit counts every frame), be instrumented by the
// race detector, or fail a bounds check (call validated every index). It
// may run beside the spawner in the spawner's memory (shareMemory): it
// writes nothing but p.res and its own stack, and it has no goroutine
// (forkInit), so a call into the runtime would fault in the child alone.
//
//go:nosplit
//go:norace
//go:noinline
func replayChild(p *initProg) {
	var why []byte
	i := 0
	for ; i < len(p.calls); i++ {
		c := &p.calls[i]
		a := c.args
		for j := 0; j < 6; j++ {
			if c.refs&(1<<j) != 0 {
				a[j] = p.res[a[j]]
			}
		}
		r, _, errno := syscall.RawSyscall6(c.nr, a[0], a[1], a[2], a[3], a[4], a[5])
		if errno != 0 && errno != c.ok[0] && errno != c.ok[1] {
			why = p.errno[0]
			if int(errno) < len(p.errno) {
				why = p.errno[errno]
			}
			break
		}
		if c.want >= 0 && errno == 0 && r != uintptr(c.want) {
			why = textEOF
			if r != 0 {
				why = textUnexpected
			}
			break
		}
		p.res[i] = r
	}
	if i == len(p.calls) {
		// The last call execs: returning from it is a failure too.
		i--
		why = textUnexpected
	}
	c := &p.calls[i]
	m := p.msgs[i]
	syscall.RawSyscall6(unix.SYS_WRITE, c.errFD, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), 0, 0, 0)
	syscall.RawSyscall6(unix.SYS_WRITE, c.errFD, uintptr(unsafe.Pointer(&why[0])), uintptr(len(why)), 0, 0, 0)
	for {
		syscall.RawSyscall6(unix.SYS_EXIT_GROUP, 1, 0, 0, 0, 0, 0)
	}
}

// What a failed call's message ends with: errnoText()[e] for errno e
// ("ENOENT (errno 2)"; [0] for one past the table), or one of the texts
// for a call that returned what it must not. The table is made on the
// spawner's first clone, not at package initialisation: every keeper runs
// the same executable, and formatting 256 texts cost each of them about 0.07
// ms of CPU (docs/performance.md, session 26).
var (
	errnoText      = sync.OnceValue(errnoTexts)
	textEOF        = []byte("end of file\n")
	textUnexpected = []byte("unexpected result\n")
)

func errnoTexts() [][]byte {
	t := make([][]byte, 256)
	t[0] = []byte("unknown errno\n")
	for e := 1; e < len(t); e++ {
		name := unix.ErrnoName(syscall.Errno(e))
		if name == "" {
			name = "unknown"
		}
		t[e] = []byte(fmt.Sprintf("%s (errno %d)\n", name, e))
	}
	return t
}

// runHere runs p in the calling process, as the child would (see
// replayChild), and stops at its first failure with the call's message:
// for work the spawner does once for itself, such as its template root
// (see buildTemplate). p must not end in an exec.
func (p *initProg) runHere() error {
	if p.err != nil {
		return p.err
	}
	p.res = make([]uintptr, len(p.calls))
	for i := range p.calls {
		c := &p.calls[i]
		a := c.args
		for j := 0; j < 6; j++ {
			if c.refs&(1<<j) != 0 {
				a[j] = p.res[a[j]]
			}
		}
		r, _, errno := unix.Syscall6(c.nr, a[0], a[1], a[2], a[3], a[4], a[5])
		msg := strings.TrimSuffix(strings.TrimPrefix(string(p.msgs[i]), "nubo sandbox init: "), ": ")
		if errno != 0 && errno != c.ok[0] && errno != c.ok[1] {
			return fmt.Errorf("%s: %w", msg, errno)
		}
		if c.want >= 0 && errno == 0 && r != uintptr(c.want) {
			return fmt.Errorf("%s: returned %d, want %d", msg, r, c.want)
		}
		p.res[i] = r
	}
	runtime.KeepAlive(p)
	return nil
}
