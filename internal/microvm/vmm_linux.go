package microvm

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The VMM is confined before QEMU starts: nubo re-executes itself as a
// short launcher stage in new mount, PID, network, IPC and UTS namespaces.
// The stage waits until the host has put it into the VM's cgroup, builds a
// root holding only the host's /usr (read-only), a few device nodes and
// the VM's own files, pivots into it, drops to the VM's unprivileged user
// and group, and execs QEMU, which then applies its own seccomp filter
// (-sandbox on). QEMU has no network namespace peer: its only channel to
// nubo is the socket passed as fd 3.

const vmmEnv = "NUBO_VMM"

// vmmSpec is what the launcher stage gets, as JSON in its environment.
type vmmSpec struct {
	// Root is an empty directory the stage mounts its tmpfs root on.
	Root string `json:"root"`
	// Files maps a name under /vm inside the root to a host file.
	Files map[string]string `json:"files"`
	// Writable lists the names of Files bound read-write.
	Writable []string `json:"writable"`
	KVM      bool     `json:"kvm"`
	gateFd   int
	UID      int      `json:"uid"`
	GID      int      `json:"gid"`
	Args     []string `json:"args"`
}

func init() {
	raw := os.Getenv(vmmEnv)
	if raw == "" {
		return
	}
	os.Unsetenv(vmmEnv)
	var s vmmSpec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		fmt.Fprintln(os.Stderr, "nubo vmm:", err)
		os.Exit(1)
	}
	err := vmmStage(s)
	fmt.Fprintln(os.Stderr, "nubo vmm:", err)
	os.Exit(1)
}

func vmmStage(s vmmSpec) error {
	// Wait for the host to have placed this process in the VM's cgroup.
	var b [1]byte
	if n, err := unix.Read(4, b[:]); err != nil || n != 1 {
		return fmt.Errorf("gate: %d bytes, %v", n, err)
	}
	s.gateFd = 4 // kept (close-on-exec) to see whether nubo still lives
	unix.CloseOnExec(4)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	root := s.Root
	if err := unix.Mount("vmm", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("root tmpfs: %w", err)
	}
	bind := func(src, dst string, dir, ro bool) error {
		if dir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		} else {
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(dst, nil, 0o600); err != nil {
				return err
			}
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID)
		if ro {
			flags |= unix.MS_RDONLY
		}
		if !dir {
			flags |= unix.MS_NOEXEC | unix.MS_NODEV
		}
		if filepath.Dir(dst) == filepath.Join(root, "dev") {
			flags &^= unix.MS_NODEV
		}
		return unix.Mount("", dst, "", flags, "")
	}
	// The host's system files, read-only; merged-/usr links recreated.
	for _, name := range []string{"usr", "bin", "sbin", "lib", "lib64"} {
		st, err := os.Lstat("/" + name)
		if err != nil {
			continue
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink("/" + name)
			if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
				return err
			}
		} else if err := bind("/"+name, filepath.Join(root, name), true, true); err != nil {
			return err
		}
	}
	devs := []string{"null", "zero", "urandom", "random"}
	if s.KVM {
		devs = append(devs, "kvm")
	}
	for _, d := range devs {
		if err := bind("/dev/"+d, filepath.Join(root, "dev", d), false, false); err != nil {
			return err
		}
	}
	writable := map[string]bool{}
	for _, w := range s.Writable {
		writable[w] = true
	}
	for name, src := range s.Files {
		if err := bind(src, filepath.Join(root, "vm", name), false, !writable[name]); err != nil {
			return err
		}
	}
	// A proc of this PID namespace only: QEMU and nothing else.
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("proc: %w", err)
	}
	os.MkdirAll(filepath.Join(root, "tmp"), 0o777|os.ModeSticky)
	os.MkdirAll(filepath.Join(root, ".old"), 0o700)
	if err := unix.PivotRoot(root, filepath.Join(root, ".old")); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return err
	}
	os.Remove("/.old")
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	// The unprivileged user: no groups but its own (and kvm's for /dev/kvm).
	groups := []int{}
	if s.KVM {
		var st unix.Stat_t
		if unix.Stat("/dev/kvm", &st) == nil {
			groups = append(groups, int(st.Gid))
		}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return err
	}
	if err := syscall.Setresgid(s.GID, s.GID, s.GID); err != nil {
		return err
	}
	if err := syscall.Setresuid(s.UID, s.UID, s.UID); err != nil {
		return err
	}
	// Changing credentials cleared the parent-death signal: set it again.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	// nubo may have died before the signal was set again: then the gate's
	// write end is closed, and QEMU must not start.
	if gone, err := peerGone(s.gateFd); err != nil || gone {
		return fmt.Errorf("nubo is gone")
	}
	// No core dumps (they would hold the tenant's guest memory).
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return err
	}
	qemu, err := exec.LookPath(QEMU)
	if err != nil {
		return err
	}
	return unix.Exec(qemu, append([]string{QEMU}, s.Args...), []string{"PATH=/usr/bin:/bin"})
}

// peerGone reports whether the write end of the pipe fd is closed.
func peerGone(fd int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	if err != nil {
		return false, err
	}
	return n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0, nil
}

// vmmCommand is the launcher stage's command: run it, place its pid in the
// VM's cgroup, then write one byte to the returned gate to let QEMU start.
// QEMU gets sock as fd 3 and, when set, the tap as fd 5.
func vmmCommand(s vmmSpec, sock, tap *os.File) (*exec.Cmd, *os.File, error) {
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, nil, err
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"nubo-vmm"}
	cmd.Env = []string{vmmEnv + "=" + string(raw), "PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
	cmd.ExtraFiles = []*os.File{sock, gateR}
	if tap != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, tap) // fd 5
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
		Setsid:     true,
	}
	return cmd, gateW, nil
}
