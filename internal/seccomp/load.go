//go:build linux

package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Load sets no_new_privs and installs p on every thread of the calling
// process; from then on the process and all it starts run under p. (A
// sandbox's init, single-threaded, installs the same program with a raw
// seccomp(2): package nsbox.)
func Load(p Program) error {
	if len(p) == 0 || len(p) > maxInsns {
		return fmt.Errorf("%w: %d instructions", ErrInvalidProgram, len(p))
	}
	// no_new_privs is per thread, and an unprivileged seccomp(2) checks it
	// on the calling thread: both calls must run on the same OS thread. TSYNC
	// then copies no_new_privs along with the filter to the other threads.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: set no_new_privs: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	// TSYNC: a Go process has several threads, and a filter set on one
	// thread only would leave the others unfiltered until exec. The kernel
	// applies the filter to all of them atomically or to none; on failure it
	// returns the id of a thread it could not synchronise (one that already
	// has an unrelated filter) instead of an errno.
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(p)
	if errno != 0 {
		return fmt.Errorf("seccomp: install filter: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("seccomp: install filter: thread %d cannot be synchronised", r)
	}
	return nil
}
