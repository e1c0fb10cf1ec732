// Command probe is the hostile function of the isolation suite: an
// unmodified aws-lambda-go function that, asked {"op": ...}, tries what a
// malicious tenant would try from inside its execution environment and
// answers with a JSON report of what worked. It never decides whether the
// sandbox is right; the test does, from the report.
//
// Errors are reported by errno name ("EPERM"); "" means the attempt
// succeeded.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/aws/aws-lambda-go/lambda"
	"golang.org/x/sys/unix"
)

type event struct {
	Op      string   `json:"op"`
	Ms      int      `json:"ms"`
	MB      int      `json:"mb"`
	N       int      `json:"n"`
	Port    int      `json:"port"`
	Name    string   `json:"name"`
	Targets []string `json:"targets"`
}

// token names this runtime process, so the test can tell environments apart.
// inheritedFDs lists the descriptors beyond 0-2 this process held when it
// started, before it opened anything itself: whatever the agent (or
// anyone above it) let through exec. Read at package initialisation.
var inheritedFDs = func() string {
	// Raw system calls: os.Open would register the directory with Go's
	// poller, creating descriptors of this process's own first.
	d, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "error: " + err.Error()
	}
	defer syscall.Close(d)
	buf := make([]byte, 8192)
	n, err := syscall.ReadDirent(d, buf)
	if err != nil {
		return "error: " + err.Error()
	}
	_, _, names := syscall.ParseDirent(buf[:n], -1, nil)
	var out []string
	for _, name := range names {
		if name == "0" || name == "1" || name == "2" || name == strconv.Itoa(d) {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + name)
		out = append(out, name+"->"+target)
	}
	return strings.Join(out, ",")
}()

var token = func() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

// listener is kept open across invocations by the "listen" op.
var listener net.Listener

func errName(err error) string {
	if err == nil {
		return ""
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
		return "errno " + strconv.Itoa(int(en))
	}
	return err.Error()
}

func handle(ctx context.Context, ev event) (map[string]any, error) {
	switch ev.Op {
	case "status":
		return status(), nil
	case "writes":
		return map[string]any{"writes": writes()}, nil
	case "syscalls":
		return map[string]any{"syscalls": syscalls()}, nil
	case "agent":
		return map[string]any{"agent": agent()}, nil
	case "devices":
		return devices(), nil
	case "tunables":
		return tunables(), nil
	case "secrets":
		return secrets(), nil
	case "sleep":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
		return map[string]any{"token": token, "pid": os.Getpid()}, nil
	case "net":
		return netinfo(), nil
	case "connect":
		return map[string]any{"connect": connect(ev.Targets), "token": token}, nil
	case "listen":
		return listen(ev.Port)
	case "tmpwrite":
		err := os.WriteFile(filepath.Join("/tmp", ev.Name), []byte(token), 0o644)
		return map[string]any{"token": token, "err": errName(err)}, nil
	case "tmpcheck":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
		_, err := os.Stat(filepath.Join("/tmp", ev.Name))
		return map[string]any{"token": token, "exists": err == nil, "err": errName(err)}, nil
	case "fill":
		return fill(ev.MB), nil
	case "burn":
		return burn(ev.Ms), nil
	case "hog":
		return hog(ev.MB), nil
	case "forkbomb":
		return forkbomb(ev.N), nil
	}
	return nil, fmt.Errorf("unknown op %q", ev.Op)
}

func main() { lambda.Start(handle) }

type proc struct {
	Pid     int    `json:"pid"`
	PPid    int    `json:"ppid"`
	Uid     string `json:"uid"`
	Cmdline string `json:"cmdline"`
}

func readProc(pid string) (proc, bool) {
	var p proc
	p.Pid, _ = strconv.Atoi(pid)
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return p, false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
		if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
			p.PPid, _ = strconv.Atoi(f[1])
		}
	}
	cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
	p.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	p.Uid = statusField(pid, "Uid")
	return p, true
}

func statusField(pid, key string) string {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

func status() map[string]any {
	var procs []proc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			if p, ok := readProc(e.Name()); ok {
				procs = append(procs, p)
			}
		}
	}
	host, _ := os.Hostname()
	uidMap, _ := os.ReadFile("/proc/self/uid_map")
	out := map[string]any{
		"token": token, "pid": os.Getpid(), "ppid": os.Getppid(),
		"uid": os.Getuid(), "euid": os.Geteuid(), "gid": os.Getgid(), "egid": os.Getegid(),
		"hostname": host, "procs": procs, "uidMap": strings.TrimSpace(string(uidMap)),
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Groups"} {
		out[k] = statusField("self", k)
	}
	return out
}

// writes tries to create a file in each directory that must be read-only,
// and in /tmp, which must not.
func writes() map[string]string {
	out := map[string]string{}
	for _, dir := range []string{"/", "/var/task", "/opt", "/etc", "/usr", "/usr/bin", "/var/runtime", "/var", "/bin", "/lib", "/proc", "/dev", "/tmp"} {
		p := filepath.Join(dir, ".probe-"+token)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
			os.Remove(p)
		}
		out[dir] = errName(err)
	}
	// Changing an existing file needs no new directory entry.
	for _, p := range []string{"/etc/passwd", "/var/task/bootstrap", "/usr/bin/sh"} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			f.Close()
		}
		out[p] = errName(err)
	}
	return out
}

// forked runs /bin/true in a child with attr and reports whether the child
// got as far as exec: the errno is the first failing step of the child's
// setup (unshare, ptrace, ...), reported back by Go's ForkExec.
func forked(attr *syscall.SysProcAttr) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{Sys: attr})
	if err != nil {
		return errName(err)
	}
	if attr.Ptrace {
		// The child sits in a ptrace stop at its exec.
		syscall.Kill(pid, syscall.SIGKILL)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	return ""
}

func syscalls() map[string]string {
	out := map[string]string{}

	os.MkdirAll("/tmp/x", 0o755)
	err := unix.Mount("tmpfs", "/tmp/x", "tmpfs", 0, "size=1m")
	if err == nil {
		unix.Unmount("/tmp/x", unix.MNT_DETACH)
	}
	out["mount"] = errName(err)

	// A multithreaded process cannot unshare a user namespace at all
	// (EINVAL): try it in a single-threaded child so the answer is the
	// policy's, not Go's.
	out["unshare_user"] = forked(&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWUSER})
	out["unshare_mnt"] = forked(&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS})
	out["clone_newuser"] = forked(&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER})
	out["ptrace_traceme"] = forked(&syscall.SysProcAttr{Ptrace: true})

	// PTRACE_SEIZE does not stop the agent; the thread that made it exits
	// (LockOSThread without unlock), which detaches it again.
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, 1, 0, 0, 0, 0)
		if e != 0 {
			res <- e
			return
		}
		res <- nil
	}()
	out["ptrace_attach_pid1"] = errName(<-res)

	// The agent (pid 1) holds nubo's connection to the host. Reaching into
	// it is as bad as a ptrace attach.
	if pfd, err := unix.PidfdOpen(1, 0); err != nil {
		out["pidfd_getfd_agent"] = "pidfd_open: " + errName(err)
	} else {
		fd, err := unix.PidfdGetfd(pfd, 3, 0)
		if err == nil {
			unix.Close(fd)
		}
		unix.Close(pfd)
		out["pidfd_getfd_agent"] = errName(err)
	}
	{
		buf := make([]byte, 8)
		local := []unix.Iovec{{Base: &buf[0], Len: 8}}
		// Any readable address of the agent would do; the agent is the
		// same binary family, but its layout is unknown, so a failure
		// with EFAULT still proves the permission check passed.
		remote := []unix.RemoteIovec{{Base: 0x400000, Len: 8}}
		_, err := unix.ProcessVMReadv(1, local, remote, 0)
		out["process_vm_readv_agent"] = errName(err)
	}

	out["init_module"] = errName(unix.InitModule([]byte("\x7fELF-not-a-module"), ""))
	_, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)
	out["kexec_load"] = errnoName(e)

	// An array map is what any unprivileged BPF user would start with.
	attr := [48]byte{}
	*(*uint32)(unsafe.Pointer(&attr[0])) = 2  // BPF_MAP_TYPE_ARRAY
	*(*uint32)(unsafe.Pointer(&attr[4])) = 4  // key size
	*(*uint32)(unsafe.Pointer(&attr[8])) = 4  // value size
	*(*uint32)(unsafe.Pointer(&attr[12])) = 1 // max entries
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if e == 0 {
		unix.Close(int(fd))
	}
	out["bpf"] = errnoName(e)

	// User-space-only counting of one's own process is what
	// perf_event_paranoid 2 still lets anyone do: only a filter stops it.
	pa := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Bits: unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv}
	pa.Size = uint32(unsafe.Sizeof(pa))
	if pfd, err := unix.PerfEventOpen(&pa, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC); err == nil {
		unix.Close(pfd)
		out["perf_event_open"] = ""
	} else {
		out["perf_event_open"] = errName(err)
	}

	_, err = unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_USER_KEYRING, 1, 0, 0)
	out["keyctl"] = errName(err)

	for name, args := range map[string][3]int{
		"socket_raw":    {unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP},
		"socket_packet": {unix.AF_PACKET, unix.SOCK_RAW, 0x0300}, // ETH_P_ALL, network order
	} {
		fd, err := unix.Socket(args[0], args[1], args[2])
		if err == nil {
			unix.Close(fd)
		}
		out[name] = errName(err)
	}

	// CAD_ON is the harmless reboot command; it is checked for
	// CAP_SYS_BOOT like the others.
	out["reboot"] = errName(unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_ON))

	err = unix.Mknod("/tmp/probe-mem", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1)))
	if err == nil {
		os.Remove("/tmp/probe-mem")
	}
	out["mknod_char"] = errName(err)

	host, _ := os.Hostname()
	err = unix.Sethostname([]byte(host))
	out["sethostname"] = errName(err)

	// chroot("/") changes nothing if allowed, so the probe stays usable.
	out["chroot"] = errName(unix.Chroot("/"))

	h, mountID, err := unix.NameToHandleAt(unix.AT_FDCWD, "/var/task", 0)
	if err != nil {
		// A denied name_to_handle_at still leaves open_by_handle_at to try.
		h = unix.NewFileHandle(1, make([]byte, 8))
	}
	_ = mountID
	dir, derr := unix.Open("/var/task", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if derr != nil {
		dir = unix.AT_FDCWD
	}
	if fd, err := unix.OpenByHandleAt(dir, h, unix.O_RDONLY); err == nil {
		unix.Close(fd)
		out["open_by_handle_at"] = ""
	} else {
		out["open_by_handle_at"] = errName(err)
	}
	if derr == nil {
		unix.Close(dir)
	}

	_, _, e = unix.Syscall(unix.SYS_SETNS, 0, 0, 0)
	out["setns"] = errnoName(e)
	return out
}

// agent tries to reach into the agent (pid 1) through its /proc files:
// they are guarded by the same access check as ptrace (same uid and a
// dumpable process pass it), but they are opened with open(2), which no
// seccomp filter can tell from any other open.
func agent() map[string]string {
	out := map[string]string{}
	// Reading a few bytes of the agent's first mapping shows the access
	// is real; nothing is written.
	if f, err := os.OpenFile("/proc/1/mem", os.O_RDWR, 0); err != nil {
		out["proc1_mem_rw"] = errName(err)
	} else {
		out["proc1_mem_rw"] = ""
		out["proc1_mem_read"] = "no mapping"
		if maps, err := os.ReadFile("/proc/1/maps"); err == nil {
			start, _, _ := strings.Cut(string(maps), "-")
			if addr, err := strconv.ParseUint(start, 16, 64); err == nil {
				b := make([]byte, 4)
				_, err := f.ReadAt(b, int64(addr))
				out["proc1_mem_read"] = errName(err)
				if err == nil {
					out["proc1_mem_read"] = fmt.Sprintf("read %q at %#x", b, addr)
				}
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/1/environ"); err != nil {
		out["proc1_environ"] = errName(err)
	} else {
		out["proc1_environ"] = fmt.Sprintf("read %d bytes", len(b))
	}
	out["inherited_fds"] = inheritedFDs
	if ents, err := os.ReadDir("/proc/1/fd"); err != nil {
		out["proc1_fd"] = errName(err)
	} else {
		out["proc1_fd"] = fmt.Sprintf("listed %d fds", len(ents))
	}
	return out
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return ""
	}
	return errName(e)
}

func devices() map[string]any {
	var entries, blocks []string
	filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err != nil || p == "/dev" {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		entries = append(entries, p+" "+info.Mode().String())
		if info.Mode()&os.ModeDevice != 0 && info.Mode()&os.ModeCharDevice == 0 {
			blocks = append(blocks, p)
		}
		return nil
	})
	present := map[string]bool{}
	for _, p := range []string{"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/loop-control", "/dev/fuse", "/dev/net/tun"} {
		_, err := os.Lstat(p)
		present[p] = err == nil
	}
	var sysBlock []string
	_, sysErr := os.Stat("/sys")
	if ents, err := os.ReadDir("/sys/dev/block"); err == nil {
		for _, e := range ents {
			sysBlock = append(sysBlock, e.Name())
		}
	}
	// /proc/kcore is the size of the kernel's address space: read a page
	// at most. Masked, it is /dev/null and reads nothing.
	kcoreBytes := 0
	if f, err := os.Open("/proc/kcore"); err == nil {
		b := make([]byte, 4096)
		kcoreBytes, _ = f.Read(b)
		f.Close()
	}
	return map[string]any{"entries": entries, "blocks": blocks, "present": present,
		"sys": sysErr == nil, "sysBlock": sysBlock, "kcoreBytes": kcoreBytes}
}

// tunables tries to change host kernel settings; modes tells a file that
// was masked (/dev/null bound over it, a character device) from the real
// /proc entry.
func tunables() map[string]any {
	out := map[string]string{}
	modes := map[string]string{}
	for p, v := range map[string]string{
		"/proc/sys/kernel/hostname":     "pwned",
		"/proc/sys/vm/drop_caches":      "3",
		"/proc/sysrq-trigger":           "h",
		"/proc/sys/kernel/core_pattern": "|/tmp/x",
		"/proc/sys/net/ipv4/ip_forward": "1",
	} {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(v)
			f.Close()
		}
		out[p] = errName(err)
		if st, err := os.Stat(p); err == nil {
			modes[p] = st.Mode().String()
		}
	}
	return map[string]any{"tunables": out, "modes": modes}
}

func secrets() map[string]any {
	out := map[string]any{}
	_, err := os.ReadFile("/etc/shadow")
	out["shadow"] = errName(err)
	_, err = os.ReadFile("/etc/gshadow")
	out["gshadow"] = errName(err)
	_, err = os.ReadDir("/root")
	out["root"] = errName(err)
	ents, err := os.ReadDir("/home")
	var home []string
	for _, e := range ents {
		home = append(home, e.Name())
	}
	out["home"] = errName(err)
	out["homeEntries"] = home
	var etc []string
	ents, _ = os.ReadDir("/etc")
	for _, e := range ents {
		etc = append(etc, e.Name())
	}
	out["etc"] = etc
	var top []string
	ents, _ = os.ReadDir("/")
	for _, e := range ents {
		top = append(top, e.Name())
	}
	out["top"] = top
	paths := map[string]string{}
	for _, p := range []string{"/etc/ssh", "/var/lib", "/run", "/var/run/docker.sock", "/run/containerd"} {
		_, err := os.Stat(p)
		paths[p] = errName(err)
	}
	out["paths"] = paths
	return out
}

func netinfo() map[string]any {
	var addrs []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		as, _ := i.Addrs()
		for _, a := range as {
			addrs = append(addrs, i.Name+" "+a.String())
		}
	}
	gw := ""
	if b, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 2 && f[1] == "00000000" {
				if v, err := strconv.ParseUint(f[2], 16, 32); err == nil {
					gw = net.IPv4(byte(v), byte(v>>8), byte(v>>16), byte(v>>24)).String()
				}
			}
		}
	}
	// IPv6 on each interface: disable_ipv6 as the sandbox sees it ("" for
	// none, as on a kernel without IPv6).
	v6 := map[string]string{}
	for _, i := range ifs {
		b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/" + i.Name + "/disable_ipv6")
		v6[i.Name] = strings.TrimSpace(string(b))
	}
	return map[string]any{"addrs": addrs, "gateway": gw, "ipv6Off": v6, "token": token}
}

// connect tries every target at once, each for at most 1.5 s.
func connect(targets []string) map[string]string {
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", tg, 1500*time.Millisecond)
			res := "connected"
			if err == nil {
				c.Close()
			} else {
				res = err.Error()
			}
			mu.Lock()
			out[tg] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func listen(port int) (map[string]any, error) {
	if listener == nil {
		ln, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(port))
		if err != nil {
			return nil, err
		}
		listener = ln
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	info := netinfo()
	info["port"] = listener.Addr().(*net.TCPAddr).Port
	return info, nil
}

// fill writes up to mb MB into /tmp in 1 MB chunks and reports where it
// stopped; the file is removed again so the environment stays usable.
func fill(mb int) map[string]any {
	p := "/tmp/fill-" + token
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return map[string]any{"err": errName(err)}
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	written := 0
	for i := 0; i < mb && err == nil; i++ {
		var n int
		n, err = f.Write(chunk)
		written += n
	}
	// No fsync: ext4 reserves blocks at write time (delayed allocation
	// included), so ENOSPC comes from write itself, and the file is
	// removed before its pages would reach the disk.
	f.Close()
	var st unix.Statfs_t
	unix.Statfs("/tmp", &st)
	os.Remove(p)
	return map[string]any{"writtenMB": float64(written) / (1 << 20), "err": errName(err),
		"sizeMB": float64(st.Blocks*uint64(st.Bsize)) / (1 << 20)}
}

// burn spins for ms of wall time and reports the CPU time this thread got.
func burn(ms int) map[string]any {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var t0, t1 unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
	start := time.Now()
	x := uint64(1)
	for time.Since(start) < time.Duration(ms)*time.Millisecond {
		for i := 0; i < 10000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1)
	wall := time.Since(start)
	cpu := time.Duration(t1.Nano() - t0.Nano())
	return map[string]any{"cpuMs": cpu.Milliseconds(), "wallMs": wall.Milliseconds(), "x": x & 1}
}

// hog allocates and touches mb MB; it only returns if nothing stopped it.
func hog(mb int) map[string]any {
	var keep [][]byte
	for i := 0; i < mb; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
	}
	return map[string]any{"allocatedMB": len(keep)}
}

// forkbomb starts up to n sleeping children, each in a session of its own
// (out of reach of a kill of the runtime's process group), and leaves them
// running: the platform has to contain them and later reap them. Nothing
// waits for them: a goroutine blocked in wait4 per child would cost an OS
// thread each, and the runtime would die of the very limit it probes.
func forkbomb(n int) map[string]any {
	started := 0
	var last error
	start := time.Now()
	for i := 0; i < n; i++ {
		cmd := exec.Command("/bin/sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			last = err
			break
		}
		started++
	}
	pids := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			pids++
		}
	}
	return map[string]any{"started": started, "err": errName(last), "ms": time.Since(start).Milliseconds(),
		"threads": statusField("self", "Threads"), "visiblePids": pids}
}
