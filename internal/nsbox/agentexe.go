package nsbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Why a second executable (Config.Agent): every sandbox's PID 1 is a Go
// process that runs for the sandbox's whole life. Started from nubo's own
// binary it carries all of nubo: the package initialisers of the embedded
// NATS server, the metrics client, the AWS protocol code and the rest run
// first (155 packages, 400 KB of heap before the agent gets control)
// and stay resident. cmd/nubo-agent links only this package and the agent
// (89 packages, 66 KB), so each idle environment holds about 1 MB less
// anonymous memory and every sandbox starts faster. See docs/performance.md,
// "Session 3".

// BuildStamp is set, by scripts/build.sh, to one random value in both nubo
// and the agent executable it embeds; nubo uses the embedded agent only if
// it carries nubo's own value (see cmd/nubo/agent.go).
var BuildStamp string

// sealedExecutable puts an executable image into an anonymous memory file
// (memfd) sealed against every change, so that what runs is exactly what
// nubo was built with: no file on disk to be replaced, no directory the
// sandbox's unprivileged host id would need to traverse. The pages are
// shared by all sandboxes that run it.
func sealedExecutable(name string, image []byte) (*os.File, error) {
	// MFD_EXEC: where vm.memfd_noexec is 1, a memfd is otherwise made
	// without execute permission, for good. Kernels before 6.3 know no
	// such flag (EINVAL) and make every memfd executable.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if _, err := f.Write(image); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Chmod(0o555); err != nil {
		f.Close()
		return nil, err
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	// F_SEAL_EXEC (6.3) also freezes the mode; older kernels refuse the
	// unknown bit.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals|unix.F_SEAL_EXEC); err != nil {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
			f.Close()
			return nil, fmt.Errorf("seal: %w", err)
		}
	}
	return f, nil
}
