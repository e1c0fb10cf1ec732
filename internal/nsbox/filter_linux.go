package nsbox

import (
	"errors"

	"golang.org/x/sys/unix"
)

// loadFilter sets no_new_privs and installs the seccomp filter; it is the
// last step before exec, as the filter forbids much of what came before.
func loadFilter(b []byte) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	if len(b) > 0 {
		return errors.New("seccomp: filter support not linked")
	}
	return nil
}
