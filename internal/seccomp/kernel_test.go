//go:build linux && (amd64 || arm64)

package seccomp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// The kernel tests re-execute the test binary: the child installs the filter
// with Load (as a sandbox's init does, on its one thread) and then either makes
// syscalls itself and prints what came back, or execs a real program, which
// inherits the filter.
const (
	envAction = "NUBO_SECCOMP_TEST"    // what the child does
	envArgv   = "NUBO_SECCOMP_ARGV"    // JSON argv for the exec action
	envThen   = "NUBO_SECCOMP_THEN"    // action for a re-executed test binary
	envDir    = "NUBO_SECCOMP_DIR"     // a scratch directory
	childWait = 30 * time.Second       // per child, generous for a loaded CI box
	resultTag = "NUBO_SECCOMP_RESULT:" // prefixes the child's JSON line
	survived  = "survived the x32 call"
)

func TestMain(m *testing.M) {
	if act := os.Getenv(envAction); act != "" {
		os.Exit(childMain(act))
	}
	os.Exit(m.Run())
}

func childMain(act string) int {
	// A process the filter kills dumps core (SIGSYS), and core_pattern may
	// be a plain file name: keep the working directory clean.
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 2
	}
	load := func() bool {
		p, err := Compile()
		if err == nil {
			err = Load(p)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			return false
		}
		return true
	}
	switch act {
	case "probe-control":
		report(runProbes(true))
	case "probe":
		if !load() {
			return 2
		}
		report(runProbes(false))
	case "allowed":
		// Threads that exist before Load must be filtered too (TSYNC).
		tids, release := lockedThreads(4)
		defer release()
		if !load() {
			return 2
		}
		report(allowedChecks(tids))
	case "exec":
		var argv []string
		if err := json.Unmarshal([]byte(os.Getenv(envArgv)), &argv); err != nil || len(argv) == 0 {
			fmt.Fprintln(os.Stderr, "bad argv:", err)
			return 2
		}
		path, err := exec.LookPath(argv[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		env := make([]string, 0, len(os.Environ()))
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, envAction+"=") && !strings.HasPrefix(kv, envArgv+"=") && !strings.HasPrefix(kv, envThen+"=") {
				env = append(env, kv)
			}
		}
		if then := os.Getenv(envThen); then != "" {
			env = append(env, envAction+"="+then)
		}
		if !load() {
			return 2
		}
		err = unix.Exec(path, argv, env)
		fmt.Fprintln(os.Stderr, "exec:", err)
		return 2
	case "go-http":
		// Started by execve under an inherited filter: the Go runtime's own
		// start-up ran filtered too.
		return goHTTP()
	case "x32":
		if !load() {
			return 2
		}
		fmt.Println("loaded")
		unix.RawSyscall(unix.SYS_GETPID|x32Bit, 0, 0, 0)
		fmt.Println(survived)
	case "load-invalid":
		// A jump past the end: the kernel's verifier must refuse it.
		err := Load(Program{{Code: unix.BPF_JMP | unix.BPF_JA, K: 5}})
		fmt.Println(resultTag, err)
	default:
		fmt.Fprintln(os.Stderr, "unknown action", act)
		return 2
	}
	return 0
}

func report(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(resultTag + string(b))
}

// runChild runs the test binary as a child doing action and returns its
// stdout and exit state.
func runChild(t *testing.T, action string, argv []string, env ...string) (string, *os.ProcessState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), childWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	dir := t.TempDir()
	cmd.Dir = dir
	av, _ := json.Marshal(argv)
	cmd.Env = append(os.Environ(), envAction+"="+action, envArgv+"="+string(av), envDir+"="+dir)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("child %s %q timed out; stderr:\n%s", action, argv, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("child %s: %v", action, err)
	}
	if stderr.Len() > 0 {
		t.Logf("child %s %q stderr:\n%s", action, argv, stderr.String())
	}
	return stdout.String(), cmd.ProcessState
}

// result parses the child's tagged JSON line into v.
func result(t *testing.T, out string, v any) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, resultTag); ok {
			if err := json.Unmarshal([]byte(s), v); err != nil {
				t.Fatalf("child result %q: %v", s, err)
			}
			return
		}
	}
	t.Fatalf("no result from child; stdout:\n%s", out)
}

func exitedOK(t *testing.T, st *os.ProcessState, out string) {
	t.Helper()
	if !st.Success() {
		t.Fatalf("child: %v; stdout:\n%s", st, out)
	}
}

// A probe makes one syscall that the filter must refuse with want.
// control: the same call made without the filter (as root) must not give
// want, so the answer under the filter is the filter's, not the kernel's.
// Arguments are chosen so the unfiltered call fails harmlessly or has no
// effect outside the throw-away child.
type probe struct {
	name    string
	want    unix.Errno
	control bool
	call    func() unix.Errno
}

var keep [][]byte // buffers handed to the kernel by address

func str(s string) uintptr {
	b := append([]byte(s), 0)
	keep = append(keep, b)
	return uintptr(unsafe.Pointer(&b[0]))
}

func buf(n int) uintptr {
	b := make([]byte, n)
	keep = append(keep, b)
	return uintptr(unsafe.Pointer(&b[0]))
}

func sys(nr uintptr, args ...uintptr) unix.Errno {
	var a [6]uintptr
	copy(a[:], args)
	_, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	return e
}

// neg is a negative int argument (a bad fd, AT_FDCWD) in register form.
func neg(v int) uintptr { return uintptr(v) }

// rawClone calls clone and, in a child it should not have been able to
// create, exits at once: a forked copy of a Go process may not run Go code.
//
//go:nosplit
//go:norace
func rawClone(flags uintptr) (uintptr, unix.Errno) {
	r, _, e := unix.RawSyscall6(unix.SYS_CLONE, flags, 0, 0, 0, 0, 0)
	if e == 0 && r == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return r, e
}

func cloneProbe(flags uintptr) func() unix.Errno {
	return func() unix.Errno {
		pid, e := rawClone(flags | uintptr(unix.SIGCHLD))
		if e == 0 {
			var ws unix.WaitStatus
			unix.Wait4(int(pid), &ws, 0, nil)
		}
		return e
	}
}

func probes() []probe {
	at := neg(unix.AT_FDCWD)
	nowhere := "/nonexistent/nubo-seccomp-test"
	ps := []probe{
		{"mount", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_MOUNT, str("none"), str(nowhere), str("tmpfs"), 0, 0)
		}},
		{"umount2", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_UMOUNT2, str(nowhere), 0) }},
		{"pivot_root", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_PIVOT_ROOT, str(nowhere), str(nowhere)) }},
		{"chroot", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_CHROOT, str(nowhere)) }},
		{"fsopen", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_FSOPEN, str("nubo-no-such-fs"), 0) }},
		{"fsmount", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_FSMOUNT, neg(-1), 0, 0) }},
		{"fspick", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_FSPICK, at, str(nowhere), 0) }},
		{"open_tree", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_OPEN_TREE, at, str(nowhere), 0) }},
		{"move_mount", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_MOVE_MOUNT, neg(-1), str(""), neg(-1), str(""), 0)
		}},
		{"unshare(CLONE_NEWUSER)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_UNSHARE, unix.CLONE_NEWUSER) }},
		{"unshare(CLONE_NEWNS)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_UNSHARE, unix.CLONE_NEWNS) }},
		{"unshare(CLONE_NEWNET)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_UNSHARE, unix.CLONE_NEWNET) }},
		{"setns", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SETNS, neg(-1), 0) }},
		{"clone(CLONE_NEWUSER)", unix.EPERM, true, cloneProbe(unix.CLONE_NEWUSER)},
		{"clone(CLONE_NEWPID)", unix.EPERM, true, cloneProbe(unix.CLONE_NEWPID)},
		{"clone3", unix.ENOSYS, true, func() unix.Errno { return sys(unix.SYS_CLONE3, 0, 0) }},
		// PTRACE_TRACEME would really attach the control child to its
		// parent, so it runs filtered only; ATTACH to no process is safe.
		{"ptrace(PTRACE_TRACEME)", unix.EPERM, false, func() unix.Errno { return sys(unix.SYS_PTRACE, unix.PTRACE_TRACEME) }},
		{"ptrace(PTRACE_ATTACH)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_PTRACE, unix.PTRACE_ATTACH, 0x3ffffff0) }},
		{"process_vm_readv", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_PROCESS_VM_READV, uintptr(os.Getpid()), 0, 0, 0, 0, 0)
		}},
		{"process_vm_writev", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_PROCESS_VM_WRITEV, uintptr(os.Getpid()), 0, 0, 0, 0, 0)
		}},
		{"kcmp", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(os.Getpid()), 0, 0, 0)
		}},
		{"init_module", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_INIT_MODULE, 0, 0, str("")) }},
		{"finit_module", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_FINIT_MODULE, neg(-1), str(""), 0) }},
		{"delete_module", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_DELETE_MODULE, str("nubo_no_such_module"), 0) }},
		// Flag 0x80 is unknown: the unfiltered call fails before it could
		// unload a loaded crash kernel (what nr_segments 0 means).
		{"kexec_load", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0x80) }},
		{"kexec_file_load", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_KEXEC_FILE_LOAD, neg(-1), neg(-1), 0, 0, 0x80)
		}},
		{"bpf", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_BPF, 0xffff, 0, 0) }},
		{"perf_event_open", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_PERF_EVENT_OPEN, 0, 0, neg(-1), neg(-1), 0)
		}},
		{"keyctl", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_KEYCTL, 0xdead) }},
		{"add_key", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_ADD_KEY, 0, 0, 0, 0, 0) }},
		{"request_key", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_REQUEST_KEY, 0, 0, 0, 0) }},
		{"userfaultfd", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_USERFAULTFD, 0x7fff0000) }},
		// Unfiltered, io_uring_setup's answer depends on the host's
		// kernel.io_uring_disabled, so no control for it.
		{"io_uring_setup", unix.EPERM, false, func() unix.Errno { return sys(unix.SYS_IO_URING_SETUP, 1, buf(120)) }},
		{"io_uring_enter", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_IO_URING_ENTER, neg(-1), 0, 0, 0, 0, 0) }},
		{"io_uring_register", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_IO_URING_REGISTER, neg(-1), 0, 0, 0) }},
		{"personality(PER_BSD)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_PERSONALITY, 6) }},
		{"personality(ADDR_NO_RANDOMIZE)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_PERSONALITY, 0x0040000) }},
		// Bad magic: the unfiltered call fails before doing anything.
		{"reboot", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_REBOOT, 0, 0, 0, 0) }},
		{"swapon", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SWAPON, str(nowhere), 0) }},
		{"swapoff", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SWAPOFF, str(nowhere)) }},
		// Both pointers nil: a no-op without the filter.
		{"settimeofday", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SETTIMEOFDAY, 0, 0) }},
		{"clock_settime", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_CLOCK_SETTIME, unix.CLOCK_MONOTONIC, buf(16))
		}},
		{"clock_adjtime", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_CLOCK_ADJTIME, unix.CLOCK_REALTIME, 0) }},
		{"adjtimex", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_ADJTIMEX, 0) }},
		{"open_by_handle_at", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_OPEN_BY_HANDLE_AT, neg(-1), 0, 0) }},
		{"name_to_handle_at", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_NAME_TO_HANDLE_AT, at, str(nowhere), 0, 0, 0)
		}},
		// Longer than a host name may be: EINVAL without the filter.
		{"sethostname", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SETHOSTNAME, buf(1000), 1000) }},
		{"setdomainname", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SETDOMAINNAME, buf(1000), 1000) }},
		{"acct", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_ACCT, str(nowhere)) }},
		{"quotactl", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_QUOTACTL, 0xdead, 0, 0, 0) }},
		{"syslog", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_SYSLOG, 10, 0, 0) }},
		{"pidfd_getfd", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_PIDFD_GETFD, neg(-1), 0, 0) }},
		{"fanotify_init", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_FANOTIFY_INIT, 0xffffffff, 0) }},
		{"socket(AF_PACKET)", unix.EAFNOSUPPORT, true, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0x0300)
		}},
		{"socket(AF_INET, SOCK_RAW)", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		}},
		{"socket(AF_INET6, SOCK_RAW)", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}},
		{"socket(AF_INET, SOCK_PACKET)", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_PACKET|unix.SOCK_CLOEXEC, 0x0300)
		}},
		// Without the filter the answer depends on CONFIG_AUDIT.
		{"socket(AF_NETLINK, NETLINK_AUDIT)", unix.EPROTONOSUPPORT, false, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
		}},
		{"socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)", unix.EPROTONOSUPPORT, true, func() unix.Errno {
			return sys(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
		}},
		{"socketpair(AF_INET)", unix.EAFNOSUPPORT, true, func() unix.Errno {
			return sys(unix.SYS_SOCKETPAIR, unix.AF_INET, unix.SOCK_STREAM, 0, buf(8))
		}},
		// fd -1: the filter looks at the command before the kernel looks at
		// the descriptor, which answers EBADF without the filter.
		{"ioctl(TIOCSTI)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_IOCTL, neg(-1), unix.TIOCSTI, buf(1)) }},
		{"ioctl(TIOCSTI with high bits)", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_IOCTL, neg(-1), 0xdeadbeef<<32|unix.TIOCSTI, buf(1))
		}},
		{"ioctl(TIOCLINUX)", unix.EPERM, true, func() unix.Errno { return sys(unix.SYS_IOCTL, neg(-1), unix.TIOCLINUX, buf(1)) }},
		{"mknodat(S_IFCHR)", unix.EPERM, true, func() unix.Errno {
			return sys(unix.SYS_MKNODAT, at, str(nowhere), unix.S_IFCHR|0o600, uintptr(unix.Mkdev(1, 3)))
		}},
		{"prctl(PR_SET_MM)", unix.EINVAL, true, func() unix.Errno {
			return sys(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, buf(4), 0, 0)
		}},
	}
	ps = append(ps, archProbes()...)
	return ps
}

func runProbes(control bool) map[string]int {
	out := map[string]int{}
	for _, p := range probes() {
		if control && !p.control {
			continue
		}
		out[p.name] = int(p.call())
	}
	return out
}

func TestDeniedSyscalls(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	var filtered, control map[string]int
	out, st := runChild(t, "probe", nil)
	exitedOK(t, st, out)
	result(t, out, &filtered)
	out, st = runChild(t, "probe-control", nil)
	exitedOK(t, st, out)
	result(t, out, &control)
	for _, p := range probes() {
		got, ok := filtered[p.name]
		if !ok {
			t.Errorf("%s: no result", p.name)
			continue
		}
		if unix.Errno(got) != p.want {
			t.Errorf("%s under the filter: %v (%d), want %v", p.name, unix.Errno(got), got, p.want)
		}
		if p.control {
			if c := unix.Errno(control[p.name]); c == p.want {
				t.Errorf("%s without the filter also gives %v: the probe does not show the filter's work", p.name, c)
			}
		}
	}
}

// lockedThreads starts n OS threads that stay alive until release, and
// returns their thread ids.
func lockedThreads(n int) ([]int, func()) {
	done := make(chan struct{})
	ids := make(chan int)
	for range n {
		go func() {
			runtime.LockOSThread()
			ids <- unix.Gettid()
			<-done
		}()
	}
	tids := make([]int, n)
	for i := range tids {
		tids[i] = <-ids
	}
	return tids, func() { close(done) }
}

func statusHas(path string, lines ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if !strings.Contains(string(b), "\n"+l+"\n") {
			return fmt.Errorf("%s lacks %q", path, l)
		}
	}
	return nil
}

// allowedChecks runs in the filtered child; each entry is "" or an error.
func allowedChecks(preTids []int) map[string]string {
	dir := os.Getenv(envDir)
	checks := []struct {
		name string
		fn   func() error
	}{
		{"status", func() error { return statusHas("/proc/self/status", "Seccomp:\t2", "NoNewPrivs:\t1") }},
		{"tsync", func() error {
			// Threads started before Load carry the filter and no_new_privs.
			for _, tid := range preTids {
				p := "/proc/self/task/" + strconv.Itoa(tid) + "/status"
				if err := statusHas(p, "Seccomp:\t2", "NoNewPrivs:\t1"); err != nil {
					return err
				}
			}
			return nil
		}},
		{"netlink route", func() error {
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
			if err != nil {
				return err
			}
			unix.Close(fd)
			// Go's net.Interfaces dumps links and addresses over it.
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				if i.Flags&net.FlagLoopback != 0 {
					if _, err := i.Addrs(); err != nil {
						return err
					}
					return nil
				}
			}
			return errors.New("no loopback interface listed")
		}},
		{"tcp 127.0.0.1", func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer l.Close()
			go func() {
				if c, err := l.Accept(); err == nil {
					c.Write([]byte("pong"))
					c.Close()
				}
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "pong" {
				return fmt.Errorf("read %q, %v", b, err)
			}
			return nil
		}},
		{"udp 127.0.0.1", func() error {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = c.ReadFrom(make([]byte, 8))
			return err
		}},
		{"socketpair AF_UNIX", func() error {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil
		}},
		{"clone+exec /bin/true", func() error { return exec.Command("/bin/true").Run() }},
		{"goroutines on new threads", func() error {
			tids, release := lockedThreads(4)
			defer release()
			for _, tid := range tids {
				if err := statusHas("/proc/self/task/"+strconv.Itoa(tid)+"/status", "Seccomp:\t2"); err != nil {
					return err
				}
			}
			return nil
		}},
		{"pipe+epoll", func() error {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				return err
			}
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				return err
			}
			defer unix.Close(ep)
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p[0])}); err != nil {
				return err
			}
			if _, err := unix.Write(p[1], []byte("x")); err != nil {
				return err
			}
			ev := make([]unix.EpollEvent, 1)
			n, err := unix.EpollWait(ep, ev, 5000)
			if err != nil || n != 1 || int(ev[0].Fd) != p[0] {
				return fmt.Errorf("epoll_wait: %d %v", n, err)
			}
			return nil
		}},
		{"eventfd+timerfd", func() error {
			efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				return err
			}
			unix.Close(efd)
			tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
			if err != nil {
				return err
			}
			unix.Close(tfd)
			return nil
		}},
		{"getrandom", func() error {
			_, err := unix.Getrandom(make([]byte, 16), 0)
			return err
		}},
		{"memfd_create", func() error {
			fd, err := unix.MemfdCreate("nubo", unix.MFD_CLOEXEC)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Ftruncate(fd, 4096)
		}},
		{"personality query", func() error {
			_, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
			return errnoErr(e)
		}},
		{"mkfifo", func() error {
			p := filepath.Join(dir, "fifo")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				return err
			}
			return os.Remove(p)
		}},
		{"prctl PR_SET_NAME", func() error {
			return unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&[]byte("nubo-test\x00")[0])), 0, 0, 0)
		}},
		{"ioctl TCGETS", func() error {
			// /dev/null is no terminal: ENOTTY means the call reached the kernel.
			f, err := os.Open("/dev/null")
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != unix.ENOTTY {
				return fmt.Errorf("TCGETS: %v, want ENOTTY", err)
			}
			return nil
		}},
		{"statx+openat2", func() error {
			var st unix.Statx_t
			if err := unix.Statx(unix.AT_FDCWD, "/", 0, unix.STATX_BASIC_STATS, &st); err != nil {
				return err
			}
			fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC})
			if err != nil {
				return err
			}
			return unix.Close(fd)
		}},
		{"uname+sysinfo", func() error {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return err
			}
			var si unix.Sysinfo_t
			return unix.Sysinfo(&si)
		}},
	}
	out := map[string]string{}
	for _, c := range checks {
		if err := c.fn(); err != nil {
			out[c.name] = err.Error()
		} else {
			out[c.name] = ""
		}
	}
	return out
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func TestAllowedSyscalls(t *testing.T) {
	t.Parallel()
	out, st := runChild(t, "allowed", nil)
	exitedOK(t, st, out)
	var res map[string]string
	result(t, out, &res)
	if len(res) == 0 {
		t.Fatal("no checks ran")
	}
	for name, err := range res {
		if err != "" {
			t.Errorf("%s: %s", name, err)
		}
	}
}

func killedBySIGSYS(st *os.ProcessState) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGSYS
}

func TestX32SyscallKills(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x32 is an x86_64 ABI")
	}
	t.Parallel()
	out, st := runChild(t, "x32", nil)
	if !strings.Contains(out, "loaded") {
		t.Fatalf("filter not loaded: %v\n%s", st, out)
	}
	if !killedBySIGSYS(st) || strings.Contains(out, survived) {
		t.Fatalf("x32 syscall: child %v, stdout:\n%s", st, out)
	}
}

// i386ProbeELF is a static x86_64 program that makes one i386 syscall
// (getpid through int 0x80) and then exits 0 through the native exit.
func i386ProbeELF() []byte {
	const base = 0x400000
	code := []byte{
		0xb8, 0x14, 0x00, 0x00, 0x00, // mov eax, 20 (i386 getpid)
		0xcd, 0x80, // int 0x80
		0x31, 0xff, // xor edi, edi
		0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (x86_64 exit)
		0x0f, 0x05, // syscall
	}
	const ehdr, phdr = 64, 56
	size := uint64(ehdr + phdr + len(code))
	le := binary.LittleEndian
	b := []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b = le.AppendUint16(b, 2)              // ET_EXEC
	b = le.AppendUint16(b, 0x3e)           // EM_X86_64
	b = le.AppendUint32(b, 1)              // EV_CURRENT
	b = le.AppendUint64(b, base+ehdr+phdr) // entry
	b = le.AppendUint64(b, ehdr)           // phoff
	b = le.AppendUint64(b, 0)              // shoff
	b = le.AppendUint32(b, 0)              // flags
	b = le.AppendUint16(b, ehdr)
	b = le.AppendUint16(b, phdr)
	b = le.AppendUint16(b, 1) // phnum
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 1) // PT_LOAD
	b = le.AppendUint32(b, 5) // R+X
	b = le.AppendUint64(b, 0)
	b = le.AppendUint64(b, base)
	b = le.AppendUint64(b, base)
	b = le.AppendUint64(b, size)
	b = le.AppendUint64(b, size)
	b = le.AppendUint64(b, 0x1000)
	return append(b, code...)
}

func TestI386SyscallKills(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("int 0x80 is x86")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "i386probe")
	if err := os.WriteFile(path, i386ProbeELF(), 0o755); err != nil {
		t.Fatal(err)
	}
	// Unfiltered it must work, or this kernel has no i386 emulation and the
	// question does not arise (the emulator tests still cover the filter).
	if err := exec.Command(path).Run(); err != nil {
		t.Skipf("kernel without i386 syscall emulation: %v", err)
	}
	out, st := runChild(t, "exec", []string{path})
	if !killedBySIGSYS(st) {
		t.Fatalf("i386 syscall under the filter: %v\n%s", st, out)
	}
}

func TestLoadRejects(t *testing.T) {
	if err := Load(nil); !errors.Is(err, ErrInvalidProgram) {
		t.Errorf("Load(nil) = %v", err)
	}
	out, st := runChild(t, "load-invalid", nil)
	exitedOK(t, st, out)
	if !strings.Contains(out, resultTag+" seccomp: install filter: invalid argument") {
		t.Fatalf("loading a broken program: %s", out)
	}
}

// goHTTP serves and fetches one page over 127.0.0.1 and runs a child.
func goHTTP() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from nubo")
	})}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		fmt.Fprintln(os.Stderr, "exec:", err)
		return 1
	}
	status := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil && strings.Contains(string(b), "\nSeccomp:\t2\n") {
		status = "filtered"
	}
	fmt.Printf("%s %s\n", body, status)
	return 0
}

// lines splits output into trimmed, non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestRealPrograms(t *testing.T) {
	t.Parallel()
	hostname := "/etc/hostname"
	if _, err := os.Stat(hostname); err != nil {
		hostname = "/etc/passwd"
	}
	nodeScript := `const fs = require("fs");
fs.readFileSync(` + strconv.Quote(hostname) + `);
require("http").createServer(() => {}).listen(0, "127.0.0.1", function () { console.log("ok"); this.close(); });
new Promise(r => setTimeout(r, 10)).then(() => console.log("timer"));
fs.promises.readFile(process.argv[1], "utf8").then(s => console.log("read " + s.trim()));
require("child_process").execFile("true", (err) => console.log("child " + (err ? err.message : "ok")));`

	cases := []struct {
		name  string
		bin   string
		argv  func(dir string) []string
		env   []string
		want  []string
		order bool // want in exactly this order
	}{
		{"sh", "sh", func(dir string) []string {
			return []string{"sh", "-c", `echo a | cat | wc -c; ls / >/dev/null; mkdir -p "$1/x" && rm -r "$1/x"; mkfifo "$1/f" && rm "$1/f"; echo done`, "sh", dir}
		}, nil, []string{"2", "done"}, true},
		{"busybox", "busybox", func(dir string) []string {
			return []string{"busybox", "sh", "-c", `echo a | busybox cat | busybox wc -c; busybox ls / >/dev/null; busybox mkdir -p "$1/x" && busybox rm -r "$1/x"; busybox ps >/dev/null; echo done`, "sh", dir}
		}, nil, []string{"2", "done"}, true},
		{"python3", "python3", func(string) []string {
			return []string{"python3", "-c", `import socket, threading, json, ssl, subprocess
socket.getaddrinfo("localhost", 80)
socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(json.dumps({"ssl": bool(ssl.create_default_context())}))
print(subprocess.run(["true"]).returncode)`}
		}, nil, []string{`{"ssl": true}`, "0"}, true},
		{"node", "node", func(dir string) []string {
			return []string{"node", "-e", nodeScript, filepath.Join(dir, "data.txt")}
		}, nil, []string{"ok", "timer", "read nubo-data", "child ok"}, false},
		// libuv tries io_uring only when asked; the filter refuses it and
		// libuv must fall back to its thread pool for the fs.promises read.
		{"node io_uring fallback", "node", func(dir string) []string {
			return []string{"node", "-e", nodeScript, filepath.Join(dir, "data.txt")}
		}, []string{"UV_USE_IO_URING=1"}, []string{"ok", "timer", "read nubo-data", "child ok"}, false},
		{"go", "", func(string) []string { return []string{os.Args[0]} },
			[]string{envThen + "=go-http"}, []string{"hello from nubo filtered"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bin != "" {
				testutil.RequiresBinary(t, tc.bin)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("nubo-data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, st := runChild(t, "exec", tc.argv(dir), tc.env...)
			exitedOK(t, st, out)
			got := lines(out)
			if tc.order {
				if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Fatalf("output %q, want %q", got, tc.want)
				}
				return
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("output %q lacks %q", got, w)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("output %q, want the lines %q", got, tc.want)
			}
		})
	}
}
