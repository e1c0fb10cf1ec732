package nsbox

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/seccomp"
)

func init() {
	if v := os.Getenv(spawnerEnv); v == "self" || v == "exe" {
		runSpawner() // does not return
	}
}

// initFDs are the spawner's descriptors a sandbox's init uses.
type initFDs struct {
	stderr int // the sandbox's stderr: the host logs it
	// conn is the agent's connection to the host (fd 3 of the agent); the
	// init writes netReadyByte on it first.
	conn int
	// release is the host's go signal: one byte once it has placed the
	// child in its cgroup and wired its network; end of file means stop.
	release int
	// trees maps initConfig's mount indices to detached mount trees.
	trees map[int]int
	// The spawner's own: its executable (the agent's) and /dev/null.
	exe, devNull int
	// sync is the pipe on which the spawner says the child's id maps are
	// written; the child closes syncW, its copy of the write end.
	syncR, syncW int
}

// buildInit computes the init of one sandbox (see initProg): the child,
// just cloned into its namespaces, waits for its id maps and becomes the
// user namespace's root, makes its /proc and turns IPv6 off through it
// (earlyProc), tells the host its network may be wired (netReadyByte),
// waits for the host's release, adds its own mounts to the spawner's
// template root it was cloned with (mountSandbox), brings up lo, sets the
// hostname, drops every privilege, loads the seccomp filter and execs the
// agent (argv, env) as PID 1 of its pid namespace, with the connection to
// the host on fd 3.
func buildInit(cfg *initConfig, fds initFDs, argv, env []string) (*initProg, error) {
	p := &initProg{errFD: uintptr(fds.stderr)}
	one := make([]byte, 1)
	p.call("close the spawner's end", unix.SYS_CLOSE, fds.syncW)
	// The sandbox dies with the spawner, as the spawner dies with nubo. A
	// spawner gone before this ends the read below with end of file.
	p.call("parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, unix.SIGKILL)
	p.call("wait for the id maps", unix.SYS_READ, fds.syncR, one, 1)
	p.want(1)
	// Root of the user namespace (host id IDBase): the unmapped host root
	// would be "nobody" without capabilities inside.
	p.call("setgroups", unix.SYS_SETGROUPS, 0, nil)
	p.call("setgid 0", unix.SYS_SETRESGID, 0, 0, 0)
	p.call("setuid 0", unix.SYS_SETRESUID, 0, 0, 0)
	// A credential change clears the parent-death signal.
	p.call("parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, unix.SIGKILL)
	proc := earlyProc(p, cfg.NoIPv6)
	// The one byte the host waits for before it wires the network (see
	// box.start); the agent's frames follow it on the same connection.
	p.call("say the network may be wired", unix.SYS_WRITE, fds.conn, []byte{netReadyByte}, 1)
	p.want(1)
	p.call("wait for release", unix.SYS_READ, fds.release, one, 1)
	p.want(1)
	// The host has placed us in our cgroup: root the cgroup namespace
	// there, so /proc/self/cgroup shows "/" and no host path.
	p.call("unshare cgroup", unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP)
	if err := mountSandbox(p, cfg, fds.trees, proc); err != nil {
		return nil, err
	}
	loopbackUp(p)
	p.call("hostname", unix.SYS_SETHOSTNAME, cfg.Hostname, len(cfg.Hostname))
	normalScheduling(p)
	timerSlack(p, cfg.TimerSlackNs)
	cpuAffinity(p, cfg.CPUs)
	dropPrivileges(p, cfg.UID, cfg.GID)
	agentFDs(p, fds)
	// Every signal has been blocked since the clone, its handler the
	// default one (CLONE_CLEAR_SIGHAND); exec keeps the mask.
	var none uint64
	p.call("unblock signals", unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, unsafe.Pointer(&none), nil, 8)
	// The filter forbids much of what came before (mount, pivot_root,
	// sethostname); the agent and everything it starts inherit it.
	p.call("no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	if len(cfg.Seccomp) > 0 {
		f, err := seccomp.FromBytes(cfg.Seccomp)
		if err != nil {
			return nil, err
		}
		prog := &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
		p.keep = append(p.keep, f)
		p.call("seccomp filter", unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, unsafe.Pointer(prog))
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return nil, err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return nil, err
	}
	p.keep = append(p.keep, argvp, envp)
	p.call("exec the agent", unix.SYS_EXECVEAT, fds.exe, "", unsafe.Pointer(&argvp[0]), unsafe.Pointer(&envp[0]), unix.AT_EMPTY_PATH)
	return p, nil
}

// netReadyByte is what the init writes on the agent's connection once
// the host may wire its network namespace.
const netReadyByte = 'N'

// earlyProc appends making the sandbox's /proc, detached (mountProc
// attaches it), and, when noIPv6, turning IPv6 off through it for every
// device the network namespace gets from then on: the environment's end
// of its veth, which the host makes there next (see netenv), is then born
// without it. The namespace's own /proc is the cheap way to its sysctls.
// The kernel looks a /proc/sys path up among the entries of every network
// namespace seen through the same proc instance, so through the host's
// /proc the lookup grows with the environments alive: 0.15 ms of nubo
// serve's CPU per environment with 400 of them (docs/performance.md,
// session 26); here it meets one.
//
// A new proc instance may be made in a user namespace only where a proc
// is fully visible already: the template's, of an empty pid namespace
// (see buildTemplate), which this one then covers.
func earlyProc(p *initProg, noIPv6 bool) result {
	fs := p.call("proc: fsopen", unix.SYS_FSOPEN, "proc", unix.FSOPEN_CLOEXEC)
	p.call("proc: create", unix.SYS_FSCONFIG, fs, unix.FSCONFIG_CMD_CREATE, nil, nil, 0)
	proc := p.call("proc: fsmount", unix.SYS_FSMOUNT, fs, unix.FSMOUNT_CLOEXEC,
		unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	p.call("proc: close the context", unix.SYS_CLOSE, fs)
	if noIPv6 {
		f := p.call("open disable_ipv6", unix.SYS_OPENAT, proc, "sys/net/ipv6/conf/default/disable_ipv6", unix.O_WRONLY|unix.O_CLOEXEC)
		p.call("disable IPv6", unix.SYS_WRITE, f, []byte("1"), 1)
		p.want(1)
		p.call("close disable_ipv6", unix.SYS_CLOSE, f)
	}
	return proc
}

// loopbackUp appends bringing up lo: the Runtime API listens on 127.0.0.1
// inside. Only IFF_UP among the flags set here is one SIOCSIFFLAGS changes
// on lo; the others are the device's own.
func loopbackUp(p *initProg) {
	ifr, _ := unix.NewIfreq("lo")
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	s := p.call("lo: socket", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	p.call("lo: up", unix.SYS_IOCTL, s, unix.SIOCSIFFLAGS, unsafe.Pointer(ifr))
	p.call("lo: close", unix.SYS_CLOSE, s)
}

// capLastCap is the kernel's highest capability number.
var capLastCap = sync.OnceValue(func() int {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return 40
})

// normalScheduling appends putting the sandbox under SCHED_OTHER, which
// the agent and everything it starts inherit, from the policy the spawner
// runs under (a real-time one, or SCHED_BATCH; SCHED_IDLE, below, stays).
//
// Sessions 13 to 24 put sandboxes under SCHED_BATCH, whose wake-ups preempt
// no running task: on the machine of session 13 that cut a warm runtime's
// context switches per request from 13.9 to 8.9 and raised throughput at
// concurrency 1 from 1.08x to 1.27x the emulator's. Since then the agent
// has left the invocation's path (session 22), and on the machine of
// session 25 the batch policy cost a warm invocation about 0.03x the
// emulator's p50, and cold starts, concurrency 4 and environments per
// second did not move beyond their spread (docs/performance.md, session
// 25). SCHED_BATCH also weakens one tenant's protection from another: since
// Linux 6.12 a task may ask for a slice of up to 100 ms (sched_setattr, no
// privilege, and functions may call it), and a SCHED_OTHER wakee preempts
// such a neighbour on its CPU where a SCHED_BATCH wakee waits out the
// slice.
//
// Leaving SCHED_IDLE takes CAP_SYS_NICE in the initial user namespace
// (or an RLIMIT_NICE of 20), which the init, in a user namespace of its
// own, lacks even under a root nubo (EPERM); and some kernels (gVisor) may
// refuse the call (EINVAL): the sandbox then keeps the policy it has.
// Either way it keeps the spawner's nice value.
func normalScheduling(p *initProg) {
	var param int32 // struct sched_param: priority 0, as SCHED_OTHER (SCHED_NORMAL) requires
	p.call("normal scheduling", unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_NORMAL, unsafe.Pointer(&param))
	p.allow(unix.EPERM, unix.EINVAL)
}

// timerSlack appends setting the sandbox's timer slack to ns (nothing when
// ns is 0); the agent and everything it starts inherit it. The kernel may
// then fire a timer of theirs up to ns late, together with others, rather
// than wake a CPU for each. What that saves is the Go runtime's: its
// system monitor sleeps 20 µs at a time while its process is busy and for
// a while after, so a Go runtime (and the agent, also Go) that serves
// hundreds of invocations a second is woken thousands of times a second
// for nothing but that. With the default 50 µs slack an aws-lambda-go echo
// runtime made 16.4 context switches per invocation at concurrency 4 on a
// 2-core host; with 500 µs, 11.2, and its CPU per invocation fell by a
// third (docs/performance.md, session 14). The price: a function's own
// sleeps and timeouts may end up to ns late (a 1 ms sleep can take 1.5
// ms); waiting for input, the path of an invocation, is not a timer and
// is not delayed.
func timerSlack(p *initProg, ns int64) {
	if ns <= 0 {
		return
	}
	p.call("timer slack", unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, ns, 0, 0, 0)
	p.allow(unix.EINVAL) // gVisor implements no PR_SET_TIMERSLACK
}

// cpuAffinity appends running the sandbox on cpus (nothing when empty),
// its home (see placer); the agent and everything it starts inherit it. A
// CPU that went offline meanwhile (EINVAL) leaves the affinity as it is.
func cpuAffinity(p *initProg, cpus []int) {
	if len(cpus) == 0 {
		return
	}
	set := new(unix.CPUSet)
	for _, c := range cpus {
		set.Set(c)
	}
	p.call("cpu affinity", unix.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(*set), unsafe.Pointer(set))
	p.allow(unix.EINVAL)
}

// dropPrivileges appends leaving the user namespace's root for the sandbox
// user: the bounding set is emptied first (that needs CAP_SETPCAP, gone
// after setuid), then groups, gid and uid change; a setuid away from 0
// clears the permitted and effective sets.
func dropPrivileges(p *initProg, uid, gid int) {
	for c := 0; c <= capLastCap(); c++ {
		p.call("drop capability "+strconv.Itoa(c), unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c)
		p.allow(unix.EINVAL)
	}
	p.call("clear ambient capabilities", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	p.allow(unix.EINVAL)
	groups := []uint32{uint32(gid)}
	p.call("setgroups", unix.SYS_SETGROUPS, 1, unsafe.Pointer(&groups[0]))
	p.keep = append(p.keep, groups)
	p.call("setgid", unix.SYS_SETRESGID, gid, gid, gid)
	p.call("setuid", unix.SYS_SETRESUID, uid, uid, uid)
	p.call("parent-death signal", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, unix.SIGKILL)
}

// agentFDs appends the agent's descriptors: /dev/null as stdin and
// stdout, the sandbox's stderr, the connection to the host as fd 3, and
// nothing else of the spawner's past the exec. Each goes through a copy
// above them all first: a source may itself be one of 0–3.
func agentFDs(p *initProg, fds initFDs) {
	var tmp [4]result
	for i, src := range []int{fds.devNull, fds.devNull, fds.stderr, fds.conn} {
		tmp[i] = p.call("copy descriptor", unix.SYS_FCNTL, src, unix.F_DUPFD_CLOEXEC, 10)
	}
	for i := range tmp {
		p.call("descriptor "+strconv.Itoa(i), unix.SYS_DUP3, tmp[i], i, 0)
	}
	// From here on a failure goes to the stderr's new number: the old one
	// may now be the agent's connection.
	p.errFD = 2
	p.call("close-on-exec for the rest", unix.SYS_CLOSE_RANGE, 4, uintptr(^uint32(0)), unix.CLOSE_RANGE_CLOEXEC)
}
