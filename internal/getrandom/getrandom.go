// Package getrandom fills buffers from the kernel's random source, for the
// ids that code linked into every sandbox's agent makes (extension ids,
// trace ids, shell names): getrandom(2), or /dev/urandom where that system
// call is refused (kernels before 3.17, or a seccomp profile around nubo
// that answers ENOSYS). crypto/rand does the same, but links its FIPS
// machinery and its initialisers into the agent, whose start every
// sandbox pays (docs/performance.md, session 15).
package getrandom

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Read fills b. It panics only when neither source can be read, as
// crypto/rand's Read does.
func Read(b []byte) {
	for len(b) > 0 {
		n, err := unix.Getrandom(b, 0)
		switch err {
		case nil:
			b = b[n:]
		case unix.EINTR:
		case unix.ENOSYS, unix.EPERM:
			urandom(b)
			return
		default:
			panic("getrandom: " + err.Error())
		}
	}
}

func urandom(b []byte) {
	f, err := os.Open("/dev/urandom")
	if err == nil {
		defer f.Close()
		_, err = io.ReadFull(f, b)
	}
	if err != nil {
		panic("getrandom: no getrandom(2), and /dev/urandom: " + err.Error())
	}
}
