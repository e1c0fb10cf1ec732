//go:build linux && amd64

package seccomp

import "golang.org/x/sys/unix"

// archProbes are the x86-only denied syscalls; arguments are invalid so
// the unfiltered control call fails harmlessly.
func archProbes() []probe {
	return []probe{
		{"iopl", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_IOPL, 4) }},
		{"modify_ldt", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_MODIFY_LDT, 0xff, 0, 0) }},
	}
}
