package nsbox

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/seccomp"
)

// loadFilter sets no_new_privs and installs the seccomp filter the host
// compiled, on every thread; it is the last step before the agent runs, as
// the filter forbids much of what came before (mount, pivot_root,
// sethostname). The agent and every process it starts inherit it.
func loadFilter(b []byte) error {
	if len(b) == 0 {
		// This thread: the agent is exec'd from it (see becomeAgent).
		return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	p, err := seccomp.FromBytes(b)
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	if err := seccomp.Load(p); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}
