package nsbox

import (
	"fmt"
	"reflect"
	"runtime"
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
// to laid out in the spawner's heap. The child replays it (replay) with raw
// system calls from functions that neither allocate nor grow their stack,
// and its last call execs the agent. runc does the same work in C (its
// nsexec) before its Go runtime starts.
type initProg struct {
	calls []sysCall
	res   []uintptr // each call's result, for the calls that refer to it
	// msgs[i] prefixes the message when call i fails: "nubo sandbox init:
	// <what>: ".
	msgs  [][]byte
	errFD uintptr // where a failure is written (the sandbox's stderr)
	// keep holds everything an argument points to, so it lives (and the
	// garbage collector, which does not move heap objects, leaves it) until
	// the clone has copied it.
	keep []any
	num  [24]byte // scratch for an errno's digits
	err  error    // see fail
}

// sysCall is one system call of an initProg.
type sysCall struct {
	nr   uintptr
	args [6]uintptr
	// refs has bit i set when args[i] is the index of an earlier call,
	// whose result is the argument (a descriptor made in the child).
	refs uint8
	// okErr is an errno that counts as success (EEXIST for a directory
	// that may exist); 0 for none.
	okErr syscall.Errno
	// want is the result the call must return (a read of one byte), or -1.
	want int
}

// result names an earlier call's result as an argument (see sysCall.refs).
type result int

// call appends a system call. Arguments are integers, strings
// (passed as NUL-terminated copies), byte slices, pointers kept alive by the
// program, nil (NULL), or a result of an earlier call. It returns the
// call's result for later calls.
func (p *initProg) call(what string, nr uintptr, args ...any) result {
	c := sysCall{nr: nr, want: -1}
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

// allow makes errno count as success for the call just appended.
func (p *initProg) allow(errno syscall.Errno) { p.calls[len(p.calls)-1].okErr = errno }

// want makes the call just appended fail unless it returns n.
func (p *initProg) want(n int) { p.calls[len(p.calls)-1].want = n }

// cloneArgs is the kernel's struct clone_args (clone3, up to the cgroup
// field of Linux 5.7).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// forkInit clones a child with flags (namespaces, CLONE_INTO_CGROUP with
// cgroupFD when that is not -1) that replays p; it returns the child's pid
// and pidfd. The calling goroutine stays on its thread for the call: the
// child's parent-death signal follows that thread.
func forkInit(p *initProg, flags uint64, cgroupFD int) (pid, pidfd int, err error) {
	if p.err != nil {
		return 0, -1, p.err
	}
	if len(p.calls) == 0 {
		return 0, -1, fmt.Errorf("nsbox: empty init program")
	}
	p.res = make([]uintptr, len(p.calls))
	var fd int32 = -1
	args := &cloneArgs{flags: flags | unix.CLONE_PIDFD, pidfd: uint64(uintptr(unsafe.Pointer(&fd))),
		exitSignal: uint64(unix.SIGCHLD)}
	if cgroupFD >= 0 {
		args.flags |= unix.CLONE_INTO_CGROUP
		args.cgroup = uint64(cgroupFD)
	}
	var all, old uint64 = ^uint64(0), 0
	runtime.LockOSThread()
	r, errno := cloneReplay(args, p, &all, &old)
	runtime.UnlockOSThread()
	runtime.KeepAlive(p)
	runtime.KeepAlive(&fd)
	if errno != 0 {
		return 0, -1, fmt.Errorf("clone3: %w", errno)
	}
	return int(r), int(fd), nil
}

// cloneReplay blocks every signal on this thread, clones, and restores the
// signal mask in the parent; the child replays p and never returns. The
// child must not run a signal handler of the spawner's runtime before its
// exec: it inherits the blocked mask, and p clears every handler before it
// unblocks them (see finishProg).
//
// Nothing here or in what it calls may allocate, grow the stack (hence
// nosplit), or be instrumented by the race detector.
//
//go:nosplit
//go:norace
func cloneReplay(args *cloneArgs, p *initProg, all, old *uint64) (uintptr, syscall.Errno) {
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(all)),
		uintptr(unsafe.Pointer(old)), 8, 0, 0)
	r, _, errno := syscall.RawSyscall6(unix.SYS_CLONE3, uintptr(unsafe.Pointer(args)), unsafe.Sizeof(*args), 0, 0, 0, 0)
	if errno != 0 || r != 0 {
		syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(old)), 0, 8, 0, 0)
		return r, errno
	}
	replay(p)
	return 0, 0 // not reached: replay exits or execs
}

// replay runs p in the child; see cloneReplay for what it must not do.
//
//go:nosplit
//go:norace
func replay(p *initProg) {
	for i := 0; i < len(p.calls); i++ {
		c := &p.calls[i]
		a := c.args
		for j := 0; j < 6; j++ {
			if c.refs&(1<<j) != 0 {
				a[j] = p.res[a[j]]
			}
		}
		r, _, errno := syscall.RawSyscall6(c.nr, a[0], a[1], a[2], a[3], a[4], a[5])
		if errno != 0 && errno != c.okErr {
			initFailed(p, i, uintptr(errno))
		}
		if c.want >= 0 && errno == 0 && r != uintptr(c.want) {
			initFailed(p, i, 0)
		}
		p.res[i] = r
	}
	// The last call execs the agent: returning from it is a failure.
	initFailed(p, len(p.calls)-1, 0)
}

// initFailed writes what failed to the sandbox's stderr and exits: "nubo
// sandbox init: <what>: errno N", or "unexpected result" when errno is 0.
//
//go:nosplit
//go:norace
func initFailed(p *initProg, i int, errno uintptr) {
	m := p.msgs[i]
	syscall.RawSyscall6(unix.SYS_WRITE, p.errFD, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), 0, 0, 0)
	b := &p.num
	n := len(b)
	n--
	b[n] = '\n'
	if errno == 0 {
		msg := "unexpected result"
		for k := len(msg) - 1; k >= 0; k-- {
			n--
			b[n] = msg[k]
		}
	} else {
		for {
			n--
			b[n] = byte('0' + errno%10)
			errno /= 10
			if errno == 0 {
				break
			}
		}
		n--
		b[n] = ' '
		n -= 5
		b[n], b[n+1], b[n+2], b[n+3], b[n+4] = 'e', 'r', 'r', 'n', 'o'
	}
	syscall.RawSyscall6(unix.SYS_WRITE, p.errFD, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n), 0, 0, 0)
	for {
		syscall.RawSyscall6(unix.SYS_EXIT_GROUP, 1, 0, 0, 0, 0, 0)
	}
}
