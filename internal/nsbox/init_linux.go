package nsbox

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// initEnv marks a re-executed nubo as a sandbox's init stage.
const initEnv = "NUBO_NSBOX_INIT"

// File descriptors the host hands the init stage.
const (
	fdAgentConn = 3 // kept open for the agent
	fdConfig    = 4 // configuration; its arrival is the go signal
)

func init() {
	if os.Getenv(initEnv) != "1" {
		return
	}
	if err := initStage(); err != nil {
		fmt.Fprintf(os.Stderr, "nubo sandbox init: %v\n", err)
		os.Exit(1)
	}
	// initStage execs the agent; reaching here is a bug.
	os.Exit(2)
}

func initStage() error {
	// Opened before pivot_root: the agent is this very binary, which the
	// sandbox's root does not contain.
	self, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open self: %w", err)
	}
	f := os.NewFile(fdConfig, "config")
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg initConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// The host has now placed us in our cgroup: root the cgroup namespace
	// there, so /proc/self/cgroup shows "/" and no host path.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("unshare cgroup: %w", err)
	}
	if err := buildRoot(&cfg); err != nil {
		return err
	}
	// The inherited directory fds are not needed past the mounts.
	for _, p := range []string{cfg.Etc, cfg.Certs, cfg.Task, cfg.Opt, cfg.Runtime, cfg.Tmp} {
		if n, ok := strings.CutPrefix(p, "/proc/self/fd/"); ok {
			if fd, err := strconv.Atoi(n); err == nil && fd > fdConfig {
				unix.Close(fd)
			}
		}
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if cfg.Deferred {
		// A shell: everything that does not depend on the function is
		// ready. Wait for the function's code, then go on.
		if err := receiveCode(); err != nil {
			return err
		}
	}
	if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
		return err
	}
	if err := loadFilter(cfg.Seccomp); err != nil {
		return err
	}
	env := []string{"NUBO_AGENT=1", "PATH=/usr/local/bin:/usr/bin:/bin"}
	if os.Getenv("NUBO_AGENT_DEBUG") != "" {
		env = append(env, "NUBO_AGENT_DEBUG=1")
	}
	argv0, _ := unix.BytePtrFromString("nubo-agent")
	empty, _ := unix.BytePtrFromString("")
	argv := []*byte{argv0, nil}
	envp := make([]*byte, 0, len(env)+1)
	for _, e := range env {
		p, _ := unix.BytePtrFromString(e)
		envp = append(envp, p)
	}
	envp = append(envp, nil)
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(self), uintptr(unsafePointer(empty)),
		uintptr(unsafePointer(&argv[0])), uintptr(unsafePointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return fmt.Errorf("exec agent: %w", errno)
}

// receiveCode reads the assignment from the agent connection and moves the
// function's code (and layers) into place. The root is already pivoted and
// read-only; mounting on its directories does not write to it.
func receiveCode() error {
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(2*4))
	n, oobn, _, _, err := unix.Recvmsg(fdAgentConn, buf, oob, 0)
	if err != nil {
		return fmt.Errorf("wait for code: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("wait for code: connection closed")
	}
	// One length byte, then JSON; a short read continues plainly.
	want := int(buf[0]) + 1
	for n < want {
		m, err := unix.Read(fdAgentConn, buf[n:want])
		if err != nil || m == 0 {
			return fmt.Errorf("wait for code: short assignment")
		}
		n += m
	}
	var a assignment
	if err := json.Unmarshal(buf[1:want], &a); err != nil {
		return fmt.Errorf("assignment: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("assignment: no file descriptors")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return fmt.Errorf("assignment: %w", err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	wantFds := 1
	if a.Opt {
		wantFds = 2
	}
	if len(fds) != wantFds {
		return fmt.Errorf("assignment: %d file descriptors, want %d", len(fds), wantFds)
	}
	targets := []string{"/var/task", "/opt"}
	for i, fd := range fds {
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, targets[i], unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount %s: %w", targets[i], err)
		}
	}
	return nil
}

// dropPrivileges leaves the init stage's root (in the user namespace) for
// the sandbox user: the bounding set is emptied first (that needs
// CAP_SETPCAP, gone after setuid), then groups, gid and uid change; a
// setuid away from 0 clears the permitted and effective sets.
func dropPrivileges(uid, gid int) error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := unix.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := unix.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	// A credential change clears the parent-death signal; the sandbox must
	// still die with nubo.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("pdeathsig: %w", err)
	}
	return nil
}

// loopbackUp brings up lo: the Runtime API listens on 127.0.0.1 inside.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
