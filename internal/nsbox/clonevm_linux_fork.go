//go:build linux && (!amd64 || race)

package nsbox

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// shareMemory: without an assembly stub to move a child onto a stack of
// its own (clonevm_linux_amd64.s), the init is forked. So it is under the
// race detector too, which instruments the call into replayChild from
// assembly: its bookkeeping would run in the child, on the spawner's
// memory.
const shareMemory = false

// cloneVM forks (args carries no CLONE_VM here); the child replays p.
//
//go:nosplit
//go:norace
func cloneVM(args *cloneArgs, size uintptr, p *initProg) (uintptr, syscall.Errno) {
	r, _, errno := syscall.RawSyscall6(unix.SYS_CLONE3, uintptr(unsafe.Pointer(args)), size, 0, 0, 0, 0)
	if errno == 0 && r == 0 {
		replayChild(p)
	}
	return r, errno
}
