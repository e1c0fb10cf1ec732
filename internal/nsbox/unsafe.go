package nsbox

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

// nameThread sets the calling thread's name; on the main thread it is the
// name ps and top show for the process.
func nameThread(name string) {
	p, err := unix.BytePtrFromString(name)
	if err == nil {
		unix.Prctl(unix.PR_SET_NAME, uintptr(unsafePointer(p)), 0, 0, 0)
	}
}
