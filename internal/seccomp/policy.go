//go:build linux

package seccomp

import "golang.org/x/sys/unix"

// The filter's answers. Each errno is the one the kernel itself gives in the
// closest legitimate situation, because that is the path callers already
// handle: EPERM is what an unprivileged process gets from mount, reboot,
// raw sockets and the like; ENOSYS is what an older kernel says about a
// syscall it lacks; EAFNOSUPPORT/EPROTONOSUPPORT are what a kernel built
// without a socket family or netlink protocol says; EINVAL is the answer to
// a prctl option the kernel does not know.
const (
	retAllow           = unix.SECCOMP_RET_ALLOW
	retEPERM           = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS          = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retEINVAL          = unix.SECCOMP_RET_ERRNO | uint32(unix.EINVAL)
	retEAFNOSUPPORT    = unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)
	retEPROTONOSUPPORT = unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)
	retKill            = unix.SECCOMP_RET_KILL_PROCESS
)

// allowed are the syscalls allowed whatever their arguments. Names missing
// on the running architecture (the legacy x86_64 calls on arm64) are skipped.
var allowed = []string{
	// Files and directories, including the legacy non-*at forms x86_64 libcs
	// and static binaries still use.
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
	"preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
	"lseek", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
	"access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents", "getdents64",
	"mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
	"symlink", "symlinkat", "unlink", "unlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
	"chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate", "utime", "utimes",
	"utimensat", "futimesat", "umask", "chdir", "fchdir", "getcwd", "flock", "fcntl",
	"dup", "dup2", "dup3", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
	"fadvise64", "readahead", "fallocate", "copy_file_range", "sendfile", "splice", "tee",
	"vmsplice", "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr",
	"fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat",
	"removexattr", "lremovexattr", "fremovexattr", "removexattrat", "file_getattr",
	"file_setattr", "cachestat", "inotify_init", "inotify_init1", "inotify_add_watch",
	"inotify_rm_watch",

	// Memory. mlock is bounded by RLIMIT_MEMLOCK; the mempolicy calls only
	// place the caller's own pages.
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore",
	"mlock", "mlock2", "munlock", "mlockall", "munlockall", "memfd_create", "membarrier",
	"pkey_alloc", "pkey_free", "pkey_mprotect", "mseal", "map_shadow_stack",
	"get_mempolicy", "set_mempolicy", "mbind", "set_mempolicy_home_node",

	// Processes and threads. clone is conditional (see conditional), clone3
	// answers ENOSYS.
	"fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
	"kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "set_tid_address",
	"set_robust_list", "get_robust_list", "rseq", "rseq_slice_yield", "restart_syscall",
	"getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid", "setsid",
	"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
	"setfsgid", "setgroups", "capget", "capset", "getrlimit", "setrlimit", "prlimit64",
	"getrusage", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
	"sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
	"sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_getattr",
	"sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
	"sched_rr_get_interval", "getcpu", "uname", "sysinfo", "getrandom",
	// x86_64: the Go runtime and glibc set the TLS base with arch_prctl; the
	// other codes (CPUID faulting, AMX permission, shadow stack) only
	// concern the caller.
	"arch_prctl",
	// seccomp lets a program tighten its own sandbox further; landlock the same.
	"seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
	// uprobe and uretprobe are only meaningful when the kernel's probe
	// trampoline calls them; denying them would crash processes the host
	// is profiling.
	"uprobe", "uretprobe",

	// Futexes, signals, timers and event notification.
	"futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
	"rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "pause",
	"alarm", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
	"gettimeofday", "time", "times", "getitimer", "setitimer", "timer_create",
	"timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
	"timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd", "signalfd4",
	"eventfd", "eventfd2", "pipe", "pipe2", "poll", "ppoll", "select", "pselect6",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
	"epoll_pwait2",

	// Sockets. socket and socketpair are conditional.
	"connect", "bind", "listen", "accept", "accept4", "sendto", "recvfrom", "sendmsg",
	"recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockname", "getpeername",
	"getsockopt", "setsockopt",

	// IPC inside the sandbox's own IPC namespace, and Linux AIO (libaio).
	"msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
	"shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
	"mq_timedreceive", "mq_notify", "mq_getsetattr", "io_setup", "io_destroy",
	"io_submit", "io_cancel", "io_getevents", "io_pgetevents",
}

// enosys answers ENOSYS. clone3 passes its flags in memory, out of reach of
// a BPF filter, so its namespace flags cannot be checked; ENOSYS (what Docker
// answers too) makes glibc fall back to clone, whose flags the filter does
// check. EPERM would not: glibc takes it as the final answer.
var enosys = []string{"clone3"}

// denied records, with the reason, every syscall refused with EPERM. The
// filter would refuse them anyway (anything not allowed is refused); the list
// is the written decision, and a test checks that every syscall the
// architecture has is either allowed, conditional, ENOSYS or listed here.
var denied = []struct {
	why   string
	names []string
}{
	{"mounts and the mount API: the sandbox's file system layout is fixed by nubo",
		[]string{"mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
			"open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
			"statmount", "listmount"}},
	{"namespaces: entering or listing them (unshare is conditional)",
		[]string{"setns", "listns"}},
	{"debugging and reading other processes",
		[]string{"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
			"process_madvise", "process_mrelease", "move_pages", "migrate_pages"}},
	{"kernel code and kernel attack surface",
		[]string{"kexec_load", "kexec_file_load", "init_module", "finit_module",
			"delete_module", "bpf", "perf_event_open", "userfaultfd",
			"io_uring_setup", "io_uring_enter", "io_uring_register",
			"lookup_dcookie", "fanotify_init", "fanotify_mark"}},
	{"the kernel keyring is not namespaced",
		[]string{"keyctl", "add_key", "request_key"}},
	{"host-wide state: clock, power, swap, host name, accounting, quotas, kernel log",
		[]string{"reboot", "swapon", "swapoff", "settimeofday", "clock_settime",
			"clock_adjtime", "adjtimex", "sethostname", "setdomainname", "acct",
			"quotactl", "quotactl_fd", "syslog", "vhangup"}},
	{"file handles bypass the path walk (the shocker container escape)",
		[]string{"open_by_handle_at", "name_to_handle_at"}},
	{"x86 hardware and segment access",
		[]string{"iopl", "ioperm", "modify_ldt", "get_thread_area", "set_thread_area"}},
	{"memory hidden from the kernel's own inspection",
		[]string{"memfd_secret"}},
	{"obsolete or never implemented",
		[]string{"_sysctl", "sysfs", "ustat", "uselib", "create_module", "get_kernel_syms",
			"query_module", "nfsservctl", "remap_file_pages", "afs_syscall", "tuxcall",
			"security", "vserver", "getpmsg", "putpmsg", "epoll_ctl_old", "epoll_wait_old"}},
	{"LSM attributes: nothing in a function needs them",
		[]string{"lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"}},
}

// Namespace flags refused in clone and unshare. CLONE_NEWTIME (0x80) is
// refused only in unshare: in clone's flags word those bits are CSIGNAL, the
// exit signal, and the kernel only honours CLONE_NEWTIME from unshare and
// clone3.
const (
	cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
		unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	unshareNamespaces = cloneNamespaces | unix.CLONE_NEWTIME
)

// Every argument checked below is one the kernel reads as a 32-bit value
// (int, unsigned int, umode_t, or clone's flags, which sys_clone truncates
// with lower_32_bits) or, for unshare, refuses with EINVAL when any higher
// bit is set, so the checks read only the low word. Comparing all 64
// bits would be wrong the other way round: a caller could set high bits to
// dodge an equality test while the kernel still sees the denied value (the
// classic TIOCSTI bypass).

// Personalities from <linux/personality.h>.
const (
	perLinux   = 0x0000
	perLinux32 = 0x0008
)

// conditional are the syscalls allowed or refused by their arguments.
var conditional = map[string]*argCheck{
	// Threads and fork-like clones are fine; new namespaces are not.
	"clone": {arg: 0, anySet: cloneNamespaces, onSet: ret(retEPERM), other: ret(retAllow)},

	// unshare without namespace flags (CLONE_FILES, CLONE_FS, CLONE_SYSVSEM)
	// only detaches state the caller already owns.
	"unshare": {arg: 0, anySet: unshareNamespaces, onSet: ret(retEPERM), other: ret(retAllow)},

	// Only the personality query and plain Linux (64 or 32 bit): the other
	// flags change exec semantics (ADDR_NO_RANDOMIZE turns ASLR off for the
	// next program, READ_IMPLIES_EXEC makes data executable).
	"personality": {arg: 0, eq: []match{
		{0xffffffff, ret(retAllow)},
		{perLinux, ret(retAllow)},
		{perLinux32, ret(retAllow)},
	}, other: ret(retEPERM)},

	// TIOCSTI pushes bytes into a terminal's input queue and TIOCLINUX can
	// paste the console selection: either lets a sandboxed process type
	// commands into a terminal it shares with something outside the sandbox.
	// Every other ioctl acts on the caller's own descriptor.
	"ioctl": {arg: 1, eq: []match{
		{unix.TIOCSTI, ret(retEPERM)},
		{unix.TIOCLINUX, ret(retEPERM)},
	}, other: ret(retAllow)},

	// mkfifo is mknod(S_IFIFO), and regular files and socket nodes are as
	// harmless; device nodes are not for the sandbox (it has no CAP_MKNOD either: this is belt and braces).
	"mknod":   {arg: 1, and: unix.S_IFMT, eq: mknodDevices, other: ret(retAllow)},
	"mknodat": {arg: 2, and: unix.S_IFMT, eq: mknodDevices, other: ret(retAllow)},

	"prctl": {arg: 0, eq: prctlAllowed(), other: ret(retEINVAL)},

	"socket": {arg: 0, eq: []match{
		{unix.AF_UNIX, ret(retAllow)},
		{unix.AF_INET, &outcome{next: inetType}},
		{unix.AF_INET6, &outcome{next: inetType}},
		// AF_NETLINK stays for one reason: glibc's getaddrinfo with
		// AI_ADDRCONFIG (the default for most resolvers, Python's
		// socket.getaddrinfo and Node's dns.lookup included) and
		// getifaddrs (Go's net.Interfaces, libuv's
		// uv_interface_addresses) ask the kernel for the interface
		// addresses over NETLINK_ROUTE. Without it name resolution
		// degrades or fails. Route sockets are per network namespace and
		// changing anything through them needs CAP_NET_ADMIN, which the
		// sandbox lacks. Every other netlink protocol (audit, uevent,
		// netfilter, xfrm, ...) reaches host-wide kernel state and is
		// refused as if the kernel did not have it.
		{unix.AF_NETLINK, &outcome{next: &argCheck{arg: 2, eq: []match{
			{unix.NETLINK_ROUTE, ret(retAllow)},
		}, other: ret(retEPROTONOSUPPORT)}}},
	}, other: ret(retEAFNOSUPPORT)},

	"socketpair": {arg: 0, eq: []match{{unix.AF_UNIX, ret(retAllow)}}, other: ret(retEAFNOSUPPORT)},
}

// inetType allows TCP and UDP (ICMP echo sockets are SOCK_DGRAM too) and
// refuses SOCK_RAW and SOCK_PACKET — the latter because the kernel quietly
// turns socket(AF_INET, SOCK_PACKET) into an AF_PACKET socket. The type
// argument carries SOCK_NONBLOCK and SOCK_CLOEXEC; the kernel compares
// type & SOCK_TYPE_MASK (0xf), and so does the filter.
var inetType = &argCheck{arg: 1, and: 0xf, eq: []match{
	{unix.SOCK_STREAM, ret(retAllow)},
	{unix.SOCK_DGRAM, ret(retAllow)},
}, other: ret(retEPERM)}

var mknodDevices = []match{
	{unix.S_IFCHR, ret(retEPERM)},
	{unix.S_IFBLK, ret(retEPERM)},
}

// prctlAllowed lists the prctl options a function may use: each reads or
// restricts only the calling process. The rest answer EINVAL, as from a
// kernel that lacks the option, which callers of any recent option handle.
// Refused on purpose: PR_SET_MM (rewrites the memory map descriptors),
// PR_SET_SYSCALL_USER_DISPATCH, PR_SET_IO_FLUSHER, PR_SET_MEMORY_MERGE,
// PR_SCHED_CORE (shares core-scheduling cookies with other processes),
// PR_SET_SECUREBITS, PR_SET_TSC, PR_MCE_KILL, PR_TIMER_CREATE_RESTORE_IDS and
// the perf-event toggles.
func prctlAllowed() []match {
	opts := []uint32{
		unix.PR_SET_PDEATHSIG, unix.PR_GET_PDEATHSIG,
		unix.PR_GET_DUMPABLE, unix.PR_SET_DUMPABLE,
		unix.PR_GET_KEEPCAPS, unix.PR_SET_KEEPCAPS,
		unix.PR_SET_NAME, unix.PR_GET_NAME,
		unix.PR_GET_SECCOMP, unix.PR_SET_SECCOMP,
		unix.PR_CAPBSET_READ, unix.PR_CAPBSET_DROP,
		unix.PR_GET_TSC, unix.PR_GET_SECUREBITS,
		unix.PR_SET_TIMERSLACK, unix.PR_GET_TIMERSLACK,
		unix.PR_SET_CHILD_SUBREAPER, unix.PR_GET_CHILD_SUBREAPER,
		unix.PR_SET_NO_NEW_PRIVS, unix.PR_GET_NO_NEW_PRIVS,
		unix.PR_GET_TID_ADDRESS,
		unix.PR_SET_THP_DISABLE, unix.PR_GET_THP_DISABLE,
		unix.PR_CAP_AMBIENT,
		unix.PR_GET_SPECULATION_CTRL, unix.PR_SET_SPECULATION_CTRL,
		unix.PR_SET_MDWE, unix.PR_GET_MDWE,
		unix.PR_GET_SHADOW_STACK_STATUS, unix.PR_SET_SHADOW_STACK_STATUS,
		unix.PR_LOCK_SHADOW_STACK_STATUS,
		unix.PR_FUTEX_HASH,
		// arm64 vector lengths, pointer authentication and tagged addresses.
		unix.PR_SVE_SET_VL, unix.PR_SVE_GET_VL, unix.PR_SME_SET_VL, unix.PR_SME_GET_VL,
		unix.PR_PAC_RESET_KEYS, unix.PR_PAC_SET_ENABLED_KEYS, unix.PR_PAC_GET_ENABLED_KEYS,
		unix.PR_SET_TAGGED_ADDR_CTRL, unix.PR_GET_TAGGED_ADDR_CTRL,
		// Names anonymous mappings (glibc, V8, jemalloc).
		unix.PR_SET_VMA,
		// Yama: names who may ptrace the caller; ptrace is refused inside
		// the sandbox anyway, and crash handlers call it unconditionally.
		unix.PR_SET_PTRACER,
	}
	m := make([]match, len(opts))
	for i, o := range opts {
		m[i] = match{o, ret(retAllow)}
	}
	return m
}

// argCheck tests the low 32 bits of one syscall argument: optionally masks
// them, then tries anySet (any of those bits set), then each eq value in
// order, else other.
type argCheck struct {
	arg    int
	and    uint32
	anySet uint32
	onSet  *outcome
	eq     []match
	other  *outcome
}

type match struct {
	val uint32
	out *outcome
}

// outcome is a return value or a further check.
type outcome struct {
	ret  uint32
	next *argCheck
}

func ret(r uint32) *outcome { return &outcome{ret: r} }
