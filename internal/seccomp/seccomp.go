//go:build linux

// Package seccomp owns the seccomp-bpf filter every nubo execution
// environment runs under: the policy (which syscalls a function may make),
// its compilation to a classic BPF program, the program's wire form, and
// installing it.
//
// The host compiles the program once (Compile) and hands its bytes to the
// sandbox's init (Bytes, FromBytes), which sets no_new_privs and installs it
// right before it execs the agent, on its one thread (package nsbox). Load
// does the same for every thread of a Go process. The agent, the runtime and
// everything they start inherit it and can only add stricter filters of
// their own.
//
// # Policy
//
// An allowlist in the spirit of Docker's default profile, tighter. Allowed:
// what ordinary Linux programs, the Go runtime, CPython, Node (libuv, V8)
// and shell tools use — file and directory calls including the *at and
// legacy forms, memory management, threads and processes, futexes, signals,
// timers, epoll and friends, sockets, System V and POSIX IPC, seccomp and
// landlock for self-restriction. Some are allowed only by their arguments:
//
//   - clone: not with a CLONE_NEW* namespace flag. clone3 answers ENOSYS,
//     because its flags are in memory where BPF cannot read them; glibc's
//     posix_spawn and pthread_create then fall back to clone (Go uses
//     clone3 only for CLONE_INTO_CGROUP and CLONE_NEWTIME).
//   - unshare: not with a namespace flag; setns never.
//   - socket: AF_UNIX; AF_INET and AF_INET6 stream and datagram sockets
//     (not SOCK_RAW, not SOCK_PACKET); AF_NETLINK with NETLINK_ROUTE only,
//     because glibc's getaddrinfo (AI_ADDRCONFIG) and getifaddrs read the
//     interface addresses through it. Other families answer EAFNOSUPPORT,
//     other netlink protocols EPROTONOSUPPORT, raw types EPERM.
//   - personality: only the query (0xffffffff), PER_LINUX and PER_LINUX32.
//   - ioctl: not TIOCSTI or TIOCLINUX (terminal input injection).
//   - mknod, mknodat: FIFOs, sockets and regular files, not device nodes.
//   - prctl: options that read or restrict the caller only (EINVAL
//     otherwise, as for an option the kernel does not know).
//
// Denied with EPERM (policy.go lists each with its reason): the mount API,
// chroot and pivot_root, setns, ptrace and the process_vm_* calls, kexec,
// module loading, bpf, perf_event_open, the keyring (keyctl, add_key,
// request_key), userfaultfd, io_uring, reboot, swapon/swapoff, clock and
// time setting, open_by_handle_at, sethostname/setdomainname, and other
// host-wide, obsolete or x86 hardware calls.
//
// # Default action
//
// Anything not allowed answers EPERM, what an unprivileged process gets
// from most of these calls anyway, as in Docker's profile. A syscall number
// above the largest one the policy was reviewed against (the sysnums table)
// answers ENOSYS instead: that is a syscall newer than this policy, and libcs
// probe new syscalls and fall back only on ENOSYS (when glibc 2.33 began
// probing faccessat2, Docker's EPERM for it broke many images). io_uring
// answers EPERM, which is also what the kernel's own io_uring_disabled switch
// answers; libuv (Node) falls back to its thread pool on any failure of
// io_uring_setup.
//
// # Architectures
//
// x86_64 and arm64. The filter first checks seccomp_data.arch and kills the
// process (SECCOMP_RET_KILL_PROCESS) on any other audit arch: on x86_64 that
// is an i386 syscall made through int 0x80 or by a 32-bit binary. Its syscall
// numbers mean different calls, so the allowlist says nothing about it, and
// nothing nubo runs needs it; killing makes a probe or a 32-bit binary fail
// loudly (SIGSYS) instead of running on with errors. x32 syscalls share
// AUDIT_ARCH_X86_64 and are told apart by bit 30 of the number; they are
// killed the same way.
//
// # Shape of the program
//
// It runs on every syscall. After the arch check it loads the syscall number
// and binary-searches it over runs of numbers with the same outcome (on
// x86_64 today: at most seven comparisons, twelve instructions in all);
// only the conditional syscalls go on to read arguments. The prologue and
// the search use only instructions the kernel's seccomp action cache can
// evaluate (Linux 5.11+), so for syscalls that are always allowed the kernel
// does not run the filter at all.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// Program is a compiled filter: the sock_filter instructions.
type Program []unix.SockFilter

// maxInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxInsns = 4096

// Offsets into struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// argLow is the offset of the low 32 bits of argument i. Both supported
// architectures are little-endian, so that is the first word of the u64.
func argLow(i int) uint32 { return offArgs + 8*uint32(i) }

// ErrInvalidProgram reports bytes that are not a serialised Program.
var ErrInvalidProgram = errors.New("seccomp: invalid program")

// Compile builds nubo's filter for the running architecture. The result is
// the same on every call.
func Compile() (Program, error) {
	if len(sysnums) == 0 {
		return nil, fmt.Errorf("seccomp: no syscall table for %s", runtime.GOARCH)
	}
	a := newAssembler()
	kill := a.retLabel(retKill)
	enosysRet := a.retLabel(retENOSYS)

	a.load(offArch)
	a.jump(unix.BPF_JEQ, auditArch, noLabel, kill)
	a.load(offNr)
	high := a.newLabel()
	maxNr := maxSysnum()
	a.jump(unix.BPF_JGT, maxNr, high, noLabel)

	blocks := map[string]label{}
	targets := make([]label, maxNr+1)
	for i := range targets {
		targets[i] = a.retLabel(retEPERM)
	}
	for _, n := range allowed {
		if nr, ok := sysnums[n]; ok {
			targets[nr] = a.retLabel(retAllow)
		}
	}
	for _, n := range enosys {
		if nr, ok := sysnums[n]; ok {
			targets[nr] = enosysRet
		}
	}
	for _, n := range sortedKeys(conditional) {
		if nr, ok := sysnums[n]; ok {
			blocks[n] = a.newLabel()
			targets[nr] = blocks[n]
		}
	}
	a.search(ranges(targets))

	// Above the table: negative numbers (syscall(-1)) and future syscalls
	// get ENOSYS as from the kernel; x32 numbers are a foreign ABI.
	a.place(high)
	a.jump(unix.BPF_JGE, 0x80000000, enosysRet, noLabel)
	if x32Bit != 0 {
		a.jump(unix.BPF_JGE, x32Bit, kill, noLabel)
	}
	a.goTo(enosysRet)

	for _, n := range sortedKeys(blocks) {
		a.place(blocks[n])
		a.check(conditional[n])
	}
	return a.assemble()
}

// span is a run of syscall numbers [lo, hi] with one destination.
type span struct {
	lo, hi uint32
	to     label
}

func ranges(targets []label) []span {
	var out []span
	for nr, l := range targets {
		if len(out) > 0 && out[len(out)-1].to == l {
			out[len(out)-1].hi = uint32(nr)
			continue
		}
		out = append(out, span{lo: uint32(nr), hi: uint32(nr), to: l})
	}
	return out
}

// search emits a binary search of A over spans, which cover a contiguous
// range A is known to lie in; each node needs one JGE.
func (a *assembler) search(spans []span) {
	if len(spans) == 1 {
		a.goTo(spans[0].to)
		return
	}
	a.node(spans)
}

func (a *assembler) node(spans []span) label {
	if len(spans) == 1 {
		return spans[0].to
	}
	l := a.newLabel()
	a.place(l)
	mid := len(spans) / 2
	j := a.jump(unix.BPF_JGE, spans[mid].lo, noLabel, noLabel)
	lower := a.node(spans[:mid])
	upper := a.node(spans[mid:])
	a.items[j].jt, a.items[j].jf = upper, lower
	return l
}

// check emits an argument check; nested checks follow it.
func (a *assembler) check(c *argCheck) {
	type pending struct {
		l label
		c *argCheck
	}
	var later []pending
	dest := func(o *outcome) label {
		if o.next == nil {
			return a.retLabel(o.ret)
		}
		for _, p := range later {
			if p.c == o.next {
				return p.l
			}
		}
		l := a.newLabel()
		later = append(later, pending{l, o.next})
		return l
	}
	a.load(argLow(c.arg))
	if c.and != 0 {
		a.and(c.and)
	}
	if c.anySet != 0 {
		a.jump(unix.BPF_JSET, c.anySet, dest(c.onSet), noLabel)
	}
	for _, m := range c.eq {
		a.jump(unix.BPF_JEQ, m.val, dest(m.out), noLabel)
	}
	a.goTo(dest(c.other))
	for _, p := range later {
		a.place(p.l)
		a.check(p.c)
	}
}

func maxSysnum() uint32 {
	var m uint32
	for _, nr := range sysnums {
		m = max(m, nr)
	}
	return m
}

func sortedKeys[K interface{ ~string | ~uint32 }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Names lists the syscalls the filter allows on the running architecture,
// sorted; those allowed only for some arguments are included.
func Names() []string {
	var out []string
	for _, n := range allowed {
		if _, ok := sysnums[n]; ok {
			out = append(out, n)
		}
	}
	for n := range conditional {
		if _, ok := sysnums[n]; ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Bytes serialises p in host byte order, the layout of struct sock_filter.
func (p Program) Bytes() []byte {
	b := make([]byte, 0, len(p)*unix.SizeofSockFilter)
	for _, f := range p {
		b = binary.NativeEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.NativeEndian.AppendUint32(b, f.K)
	}
	return b
}

// FromBytes parses what Bytes produced. It checks the size only; the kernel
// verifies the program itself when Load installs it.
func FromBytes(b []byte) (Program, error) {
	if len(b) == 0 || len(b)%unix.SizeofSockFilter != 0 || len(b)/unix.SizeofSockFilter > maxInsns {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidProgram, len(b))
	}
	p := make(Program, len(b)/unix.SizeofSockFilter)
	for i := range p {
		r := b[i*unix.SizeofSockFilter:]
		p[i] = unix.SockFilter{
			Code: binary.NativeEndian.Uint16(r),
			Jt:   r[2],
			Jf:   r[3],
			K:    binary.NativeEndian.Uint32(r[4:]),
		}
	}
	return p, nil
}
