//go:build linux && (amd64 || arm64)

package seccomp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// These tests run the compiled program in a small classic-BPF interpreter,
// so every decision can be checked for every syscall number and for inputs
// the kernel cannot be made to produce on this machine (foreign arches).

type seccompData struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

type verdict struct {
	ret uint32
	// readArgs: the path taken loaded a syscall argument, which keeps the
	// kernel's action cache from treating the syscall as always allowed.
	readArgs bool
}

// emulate runs p on d the way the kernel's classic BPF interpreter does,
// for the instructions nubo's compiler emits; anything else is an error.
func emulate(p Program, d seccompData) (verdict, error) {
	var buf [64]byte
	binary.NativeEndian.PutUint32(buf[0:], d.nr)
	binary.NativeEndian.PutUint32(buf[4:], d.arch)
	for i, a := range d.args {
		binary.NativeEndian.PutUint64(buf[16+8*i:], a)
	}
	var acc uint32
	var v verdict
	for pc := 0; pc < len(p); pc++ {
		in := p[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if in.K%4 != 0 || in.K > 60 {
				return v, fmt.Errorf("pc %d: load at %d", pc, in.K)
			}
			if in.K >= 16 {
				v.readArgs = true
			}
			acc = binary.NativeEndian.Uint32(buf[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= in.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			var taken bool
			switch in.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				taken = acc == in.K
			case unix.BPF_JGT:
				taken = acc > in.K
			case unix.BPF_JGE:
				taken = acc >= in.K
			case unix.BPF_JSET:
				taken = acc&in.K != 0
			}
			if taken {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			v.ret = in.K
			return v, nil
		default:
			return v, fmt.Errorf("pc %d: unexpected opcode %#x", pc, in.Code)
		}
	}
	return v, errors.New("ran off the end of the program")
}

func compile(t *testing.T) Program {
	t.Helper()
	p, err := Compile()
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

func decide(t *testing.T, p Program, d seccompData) verdict {
	t.Helper()
	v, err := emulate(p, d)
	if err != nil {
		t.Fatalf("nr %#x arch %#x args %#x: %v", d.nr, d.arch, d.args, err)
	}
	return v
}

func nr(t *testing.T, name string) uint32 {
	t.Helper()
	n, ok := sysnums[name]
	if !ok {
		t.Fatalf("no syscall %q on %s", name, runtime.GOARCH)
	}
	return n
}

func retName(r uint32) string {
	switch r {
	case retAllow:
		return "ALLOW"
	case retKill:
		return "KILL_PROCESS"
	}
	if r&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO {
		return "ERRNO(" + unix.ErrnoName(unix.Errno(r&unix.SECCOMP_RET_DATA)) + ")"
	}
	return fmt.Sprintf("%#x", r)
}

func TestPolicyCoversEverySyscall(t *testing.T) {
	seen := map[string]string{}
	note := func(name, where string) {
		if prev, ok := seen[name]; ok {
			t.Errorf("%s listed twice: %s and %s", name, prev, where)
		}
		seen[name] = where
	}
	for _, n := range allowed {
		note(n, "allowed")
	}
	for n := range conditional {
		note(n, "conditional")
	}
	for _, n := range enosys {
		note(n, "enosys")
	}
	for _, d := range denied {
		for _, n := range d.names {
			note(n, "denied")
		}
	}
	for name := range sysnums {
		if _, ok := seen[name]; !ok {
			t.Errorf("syscall %s has no decision in the policy", name)
		}
	}
	// Every name in the policy is a real syscall; on x86_64 all of them
	// exist, so a typo cannot hide there.
	if runtime.GOARCH == "amd64" {
		for name := range seen {
			if _, ok := sysnums[name]; !ok {
				t.Errorf("policy names %q, which x86_64 does not have", name)
			}
		}
	}
}

func TestCompileDeterministicAndSmall(t *testing.T) {
	a, b := compile(t), compile(t)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two compilations differ")
	}
	if len(a) > maxInsns {
		t.Fatalf("%d instructions", len(a))
	}
	t.Logf("%d instructions", len(a))
}

func TestBytesRoundTrip(t *testing.T) {
	p := compile(t)
	b := p.Bytes()
	if len(b) != len(p)*8 {
		t.Fatalf("Bytes: %d bytes for %d instructions", len(b), len(p))
	}
	q, err := FromBytes(b)
	if err != nil {
		t.Fatalf("FromBytes: %v", err)
	}
	if !slices.Equal(p, q) {
		t.Fatal("round trip changed the program")
	}
	// The wire form is struct sock_filter in host order.
	if got := binary.NativeEndian.Uint32(b[4:8]); got != p[0].K {
		t.Fatalf("first k = %#x, want %#x", got, p[0].K)
	}
	for _, bad := range [][]byte{nil, b[:7], b[:len(b)-1], make([]byte, (maxInsns+1)*8)} {
		if _, err := FromBytes(bad); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("FromBytes(%d bytes) = %v, want ErrInvalidProgram", len(bad), err)
		}
	}
}

func TestNames(t *testing.T) {
	names := Names()
	if !slices.IsSorted(names) {
		t.Fatal("Names not sorted")
	}
	for _, want := range []string{"read", "clone", "socket", "execve", "futex", "epoll_pwait"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names lacks %s", want)
		}
	}
	for _, d := range denied {
		for _, n := range d.names {
			if slices.Contains(names, n) {
				t.Errorf("Names lists denied %s", n)
			}
		}
	}
	if slices.Contains(names, "clone3") {
		t.Error("Names lists clone3")
	}
}

// TestEverySyscallNumber checks the search tree: each number of the table
// gets the decision the policy lists give it, whatever the arguments, and
// the always-allowed ones never read an argument (so the kernel can cache
// them).
func TestEverySyscallNumber(t *testing.T) {
	p := compile(t)
	want := map[uint32]uint32{}
	for _, d := range denied {
		for _, n := range d.names {
			if x, ok := sysnums[n]; ok {
				want[x] = retEPERM
			}
		}
	}
	for _, n := range allowed {
		if x, ok := sysnums[n]; ok {
			want[x] = retAllow
		}
	}
	for _, n := range enosys {
		want[nr(t, n)] = retENOSYS
	}
	rng := rand.New(rand.NewPCG(1, 2))
	maxNr := maxSysnum()
	for x := uint32(0); x <= maxNr+3; x++ {
		w, known := want[x]
		switch {
		case x > maxNr:
			w, known = retENOSYS, true
		case !known && !isConditional(x):
			// A hole in the table (x86_64 has many): refused like any
			// syscall not allowed.
			w, known = retEPERM, true
		}
		if !known {
			continue
		}
		for range 4 {
			d := seccompData{nr: x, arch: auditArch}
			for i := range d.args {
				d.args[i] = rng.Uint64()
			}
			v := decide(t, p, d)
			if v.ret != w {
				t.Errorf("syscall %d: %s, want %s", x, retName(v.ret), retName(w))
				break
			}
			if v.readArgs {
				t.Errorf("syscall %d: unconditional decision read an argument", x)
			}
		}
	}
}

func isConditional(x uint32) bool {
	for n := range conditional {
		if y, ok := sysnums[n]; ok && y == x {
			return true
		}
	}
	return false
}

func TestForeignABIs(t *testing.T) {
	p := compile(t)
	read := nr(t, "read")
	foreign := []uint32{unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_ARM, unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_AARCH64, 0}
	for _, arch := range foreign {
		if arch == auditArch {
			continue
		}
		for _, x := range []uint32{0, read, 3, 11, 0xffffffff} {
			if v := decide(t, p, seccompData{nr: x, arch: arch}); v.ret != retKill {
				t.Errorf("arch %#x nr %d: %s, want KILL_PROCESS", arch, x, retName(v.ret))
			}
		}
	}
	cases := []struct {
		nr   uint32
		want uint32
	}{
		{0xffffffff, retENOSYS}, // syscall(-1)
		{0x80000000, retENOSYS},
		{maxSysnum() + 1, retENOSYS},
		{0x3fffffff, retENOSYS},
	}
	if runtime.GOARCH == "amd64" {
		cases = append(cases,
			struct{ nr, want uint32 }{x32Bit | read, retKill},
			struct{ nr, want uint32 }{x32Bit | nr(t, "execve"), retKill},
			struct{ nr, want uint32 }{x32Bit | 520, retKill}, // x32 execve
			struct{ nr, want uint32 }{0x7fffffff, retKill},
		)
	}
	for _, c := range cases {
		if v := decide(t, p, seccompData{nr: c.nr, arch: auditArch}); v.ret != c.want {
			t.Errorf("nr %#x: %s, want %s", c.nr, retName(v.ret), retName(c.want))
		}
	}
}

// hi puts junk in the upper half of an argument: the kernel ignores it for
// every argument the filter checks, so the filter must too.
const hi = 0xdead_beef_0000_0000

// atFdcwd is AT_FDCWD as the kernel receives it in a 64-bit register.
const atFdcwd = 1<<64 - 100

func TestArgumentRules(t *testing.T) {
	p := compile(t)
	const sigchld = uint64(unix.SIGCHLD)
	type c struct {
		name string
		args [6]uint64
		want uint32
	}
	cases := []c{
		{"clone", [6]uint64{sigchld}, retAllow},
		{"clone", [6]uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID}, retAllow},
		{"clone", [6]uint64{unix.CLONE_VFORK | unix.CLONE_VM | unix.CLONE_PIDFD | sigchld}, retAllow},
		{"clone", [6]uint64{hi | sigchld}, retAllow},
		{"clone", [6]uint64{0x80 | sigchld}, retAllow}, // CSIGNAL bits, not CLONE_NEWTIME
		{"unshare", [6]uint64{unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SYSVSEM}, retAllow},
		{"unshare", [6]uint64{unix.CLONE_NEWTIME}, retEPERM},
		{"personality", [6]uint64{0xffffffff}, retAllow},
		{"personality", [6]uint64{hi | 0xffffffff}, retAllow},
		{"personality", [6]uint64{0}, retAllow},
		{"personality", [6]uint64{8}, retAllow},
		{"personality", [6]uint64{6}, retEPERM},         // PER_BSD
		{"personality", [6]uint64{0x0040000}, retEPERM}, // ADDR_NO_RANDOMIZE
		{"personality", [6]uint64{0x0400000}, retEPERM}, // READ_IMPLIES_EXEC
		{"personality", [6]uint64{0x0020000}, retEPERM}, // UNAME26
		{"ioctl", [6]uint64{0, unix.TIOCSTI}, retEPERM},
		{"ioctl", [6]uint64{0, hi | unix.TIOCSTI}, retEPERM}, // the kernel reads cmd as 32 bits
		{"ioctl", [6]uint64{0, unix.TIOCLINUX}, retEPERM},
		{"ioctl", [6]uint64{unix.TIOCSTI, unix.TCGETS}, retAllow},
		{"ioctl", [6]uint64{0, unix.TIOCINQ}, retAllow},
		{"socket", [6]uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		{"socket", [6]uint64{unix.AF_UNIX, unix.SOCK_DGRAM}, retAllow},
		{"socket", [6]uint64{unix.AF_UNIX, unix.SOCK_SEQPACKET}, retAllow},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK}, retAllow},
		{"socket", [6]uint64{unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP}, retAllow},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP}, retAllow},
		{"socket", [6]uint64{hi | unix.AF_INET, hi | unix.SOCK_STREAM}, retAllow},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP}, retEPERM},
		{"socket", [6]uint64{unix.AF_INET6, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.IPPROTO_RAW}, retEPERM},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_PACKET}, retEPERM},
		{"socket", [6]uint64{unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP}, retEPERM},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE}, retAllow},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_DGRAM, hi | unix.NETLINK_ROUTE}, retAllow},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}, retEPROTONOSUPPORT},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT}, retEPROTONOSUPPORT},
		{"socket", [6]uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER}, retEPROTONOSUPPORT},
		{"socket", [6]uint64{unix.AF_PACKET, unix.SOCK_RAW}, retEAFNOSUPPORT},
		{"socket", [6]uint64{unix.AF_PACKET, unix.SOCK_DGRAM}, retEAFNOSUPPORT},
		{"socket", [6]uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, retEAFNOSUPPORT},
		{"socket", [6]uint64{unix.AF_ALG, unix.SOCK_SEQPACKET}, retEAFNOSUPPORT},
		{"socket", [6]uint64{unix.AF_KEY, unix.SOCK_RAW}, retEAFNOSUPPORT},
		{"socketpair", [6]uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		{"socketpair", [6]uint64{unix.AF_INET, unix.SOCK_STREAM}, retEAFNOSUPPORT},
		{"mknodat", [6]uint64{atFdcwd, 0, unix.S_IFIFO | 0o644}, retAllow},
		{"mknodat", [6]uint64{atFdcwd, 0, unix.S_IFSOCK | 0o644}, retAllow},
		{"mknodat", [6]uint64{atFdcwd, 0, 0o644}, retAllow},
		{"mknodat", [6]uint64{atFdcwd, 0, unix.S_IFCHR | 0o666, 0x103}, retEPERM},
		{"mknodat", [6]uint64{atFdcwd, 0, unix.S_IFBLK | 0o600}, retEPERM},
		{"prctl", [6]uint64{unix.PR_SET_NAME}, retAllow},
		{"prctl", [6]uint64{unix.PR_SET_PDEATHSIG, 9}, retAllow},
		{"prctl", [6]uint64{unix.PR_SET_NO_NEW_PRIVS, 1}, retAllow},
		{"prctl", [6]uint64{unix.PR_CAPBSET_READ}, retAllow},
		{"prctl", [6]uint64{unix.PR_SET_VMA}, retAllow},
		{"prctl", [6]uint64{unix.PR_GET_DUMPABLE}, retAllow},
		{"prctl", [6]uint64{unix.PR_SET_MM, unix.PR_SET_MM_START_CODE}, retEINVAL},
		{"prctl", [6]uint64{unix.PR_SET_SYSCALL_USER_DISPATCH}, retEINVAL},
		{"prctl", [6]uint64{unix.PR_SCHED_CORE}, retEINVAL},
		{"prctl", [6]uint64{0}, retEINVAL},
		{"prctl", [6]uint64{1000}, retEINVAL},
	}
	if runtime.GOARCH == "amd64" {
		cases = append(cases,
			c{"mknod", [6]uint64{0, unix.S_IFIFO | 0o600}, retAllow},
			c{"mknod", [6]uint64{0, hi | unix.S_IFCHR | 0o600}, retEPERM},
		)
	}
	ns := []uint64{unix.CLONE_NEWNS, unix.CLONE_NEWCGROUP, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC,
		unix.CLONE_NEWUSER, unix.CLONE_NEWPID, unix.CLONE_NEWNET}
	for _, f := range ns {
		cases = append(cases,
			c{"clone", [6]uint64{f | sigchld}, retEPERM},
			c{"clone", [6]uint64{hi | f | unix.CLONE_VM}, retEPERM},
			c{"unshare", [6]uint64{f}, retEPERM},
		)
	}
	for _, tc := range cases {
		v := decide(t, p, seccompData{nr: nr(t, tc.name), arch: auditArch, args: tc.args})
		if v.ret != tc.want {
			t.Errorf("%s(%#x): %s, want %s", tc.name, tc.args[:3], retName(v.ret), retName(tc.want))
		}
	}
}

// TestLongJumps exercises the assembler's trampolines, which the policy
// may or may not need today.
func TestLongJumps(t *testing.T) {
	a := newAssembler()
	far, farFalse := a.newLabel(), a.newLabel()
	a.load(offNr)
	a.jump(unix.BPF_JEQ, 1, far, noLabel)
	a.jump(unix.BPF_JEQ, 2, farFalse, noLabel)
	a.jump(unix.BPF_JGE, 3, far, farFalse) // both branches far
	for range 300 {
		a.and(0xffffffff)
	}
	a.items = append(a.items, item{code: unix.BPF_RET | unix.BPF_K, k: 7, jt: noLabel, jf: noLabel, ja: noLabel})
	a.place(far)
	a.items = append(a.items, item{code: unix.BPF_RET | unix.BPF_K, k: 8, jt: noLabel, jf: noLabel, ja: noLabel})
	a.place(farFalse)
	a.items = append(a.items, item{code: unix.BPF_RET | unix.BPF_K, k: 9, jt: noLabel, jf: noLabel, ja: noLabel})
	p, err := a.assemble()
	if err != nil {
		t.Fatal(err)
	}
	// 1 → far (8) by the first jump, 2 → farFalse (9) by the second, then
	// the third splits: below 3 → farFalse, from 3 → far.
	for nr, want := range map[uint32]uint32{0: 9, 1: 8, 2: 9, 3: 8, 100: 8} {
		v, err := emulate(p, seccompData{nr: nr})
		if err != nil {
			t.Fatal(err)
		}
		if v.ret != want {
			t.Errorf("nr %d: got %d, want %d", nr, v.ret, want)
		}
	}
}

func TestBackwardJumpRejected(t *testing.T) {
	a := newAssembler()
	back := a.newLabel()
	a.place(back)
	a.load(offNr)
	a.goTo(back)
	if _, err := a.assemble(); err == nil {
		t.Fatal("a backward jump assembled")
	}
}
