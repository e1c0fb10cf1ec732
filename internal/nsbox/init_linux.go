package nsbox

import (
	"encoding/json"
	"fmt"
	"io"
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

// becomeAgent drops every privilege of the init stage and loads the
// seccomp filter, on this thread alone, and then executes this binary
// again as the agent: exec leaves this one thread, and every thread the
// agent starts later inherits its credentials and filter.
//
// Changing the credentials of every thread of the running Go process
// instead (AllThreadsSyscall, once per capability in the bounding set)
// stops the world and waits for each thread to answer a signal, 44 times
// over. On a loaded 2-core host that wait was 10 % of all CPU while
// environments were created (perf during figure 4 with 400 environments:
// about 4 ms per sandbox), more than a second start of the small agent
// costs (docs/performance.md, "Session 5").
func becomeAgent(self int, cfg *initConfig) error {
	if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
		return err
	}
	if err := loadFilter(cfg.Seccomp); err != nil {
		return err
	}
	// In the agent's network poller, as the host's end (see box.start):
	// the flag belongs to the open file, so it survives the exec.
	if err := syscall.SetNonblock(fdAgentConn, true); err != nil {
		return err
	}
	env := []string{"NUBO_AGENT=1", "GOMAXPROCS=1", "PATH=/usr/local/bin:/usr/bin:/bin",
		agent.RuntimeAPIEnv + "=" + runtimeAPIAddr}
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

// dropPrivileges leaves the init stage's root (in the user namespace) for
// the sandbox user, on the calling thread (see becomeAgent): the bounding
// set is emptied first (that needs CAP_SETPCAP, gone after setuid), then
// groups, gid and uid change; a setuid away from 0 clears the permitted
// and effective sets. Raw system calls: package syscall's set*id would
// change every thread.
func dropPrivileges(uid, gid int) error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if _, _, errno := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); errno != 0 && errno != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, errno)
		}
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); errno != 0 && errno != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", errno)
	}
	groups := []uint32{uint32(gid)}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, 1, uintptr(unsafePointer(&groups[0])), 0); errno != 0 {
		return fmt.Errorf("setgroups: %w", errno)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); errno != 0 {
		return fmt.Errorf("setgid: %w", errno)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); errno != 0 {
		return fmt.Errorf("setuid: %w", errno)
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
