package nsbox

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
)

// initEnv marks a re-executed nubo as a sandbox's init stage.
const initEnv = "NUBO_NSBOX_INIT"

// File descriptors the host hands the init stage.
const (
	fdAgentConn = 3 // the agent's connection to the host
	fdConfig    = 4 // configuration; its arrival is the go signal
)

func init() {
	if v := os.Getenv(spawnerEnv); v == "self" || v == "exe" {
		runSpawner() // does not return
	}
	if os.Getenv(initEnv) != "1" {
		return
	}
	if err := initStage(); err != nil {
		fmt.Fprintf(os.Stderr, "nubo sandbox init: %v\n", err)
		os.Exit(1)
	}
	// initStage becomes the agent; reaching here is a bug.
	os.Exit(2)
}

// initStage builds the sandbox and then becomes its agent, PID 1 of the
// pid namespace, which waits for the host's Start. The function's code is
// not needed for any of this: the host moves it onto /var/task and /opt
// when a function gets the sandbox, before it sends Start.
func initStage() error {
	// Started from a descriptor (Config.Agent), the process would be
	// called "5" in ps and top; this runs on the main thread, whose name
	// is the process's.
	nameThread("nubo-agent")
	// Opened before pivot_root: the agent may have to be exec'd from this
	// very binary (see becomeAgent), which the sandbox's root does not
	// contain.
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
	for _, p := range []string{cfg.Etc, cfg.Certs, cfg.Runtime, cfg.Tmp} {
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
	return becomeAgent(self, &cfg)
}

// becomeAgent drops every privilege of the init stage, on all of its
// threads, loads the seccomp filter, and runs the agent in this very
// process: no second start of a Go program (several ms of CPU each). A binary built with cgo cannot change all of its
// threads' credentials itself (AllThreadsSyscall refuses); it execs itself
// as the agent instead, which leaves one thread, as before.
func becomeAgent(self int, cfg *initConfig) error {
	inProcess := true
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS, 0, 0); errno == unix.ENOTSUP {
		inProcess = false
	}
	if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
		return err
	}
	if err := loadFilter(cfg.Seccomp); err != nil {
		return err
	}
	debug := os.Getenv("NUBO_AGENT_DEBUG") != ""
	if inProcess {
		unix.Close(self)
		os.Clearenv()
		os.Setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if debug {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		// In the network poller, as the host's end (see box.start).
		if err := syscall.SetNonblock(fdAgentConn, true); err != nil {
			return err
		}
		// Not on this goroutine: package initialisation, where this runs,
		// keeps it locked to the main thread, so every hand-off between it
		// and the agent's other goroutines would be a switch of threads.
		// It parks here for good, its thread asleep.
		go func() {
			if err := agent.Run(os.NewFile(fdAgentConn, "agent-conn"), log); err != nil {
				fmt.Fprintln(os.Stderr, "nubo agent:", err)
				os.Exit(1)
			}
			os.Exit(0)
		}()
		select {}
	}
	env := []string{"NUBO_AGENT=1", "PATH=/usr/local/bin:/usr/bin:/bin"}
	if debug {
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
	// The bounding and ambient sets are per thread: every thread of this
	// Go process is cleared (the agent runs in it, and any of its threads
	// may fork the runtime). Without cgo AllThreadsSyscall does that; with
	// cgo it refuses and becomeAgent execs, which leaves only this thread.
	prctl := func(op, arg uintptr) error {
		_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, op, arg, 0)
		if errno == unix.ENOTSUP {
			_, _, errno = unix.RawSyscall(unix.SYS_PRCTL, op, arg, 0)
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
	for c := 0; c <= last; c++ {
		if err := prctl(unix.PR_CAPBSET_DROP, uintptr(c)); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// package syscall's set*id calls change every thread (x/sys/unix's
	// Setgroups only the calling one).
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	// A credential change clears the parent-death signal; the sandbox must
	// still die with nubo. It is a property of the thread the host cloned,
	// the main thread, on which package initialisation (and so this) runs.
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
