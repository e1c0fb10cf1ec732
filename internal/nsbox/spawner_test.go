package nsbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// spawnedEnv marks this test binary, started by the spawner in
// TestSpawner, as the child: it waits to be killed.
const spawnedEnv = "NUBO_TEST_SPAWNED"

func init() {
	if os.Getenv(spawnedEnv) == "1" {
		time.Sleep(time.Minute)
		os.Exit(3)
	}
}

// TestSpawner: the spawner clones children in new namespaces with the
// requested id maps, whose init reports the step that failed or drops
// every privilege and execs the agent; it hands back a pidfd that kills
// and waits, is started anew when it has died, and exits when nubo closes
// it.
func TestSpawner(t *testing.T) {
	testutil.RequiresRoot(t)
	sp, err := newSpawner(nil, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	// The spawner's thread, which clones every sandbox, goes under
	// SCHED_BATCH: a sandbox under SCHED_OTHER then shows that its init
	// chose the policy (normalScheduling) rather than inherited it.
	var param int32
	if _, _, e := unix.Syscall(unix.SYS_SCHED_SETSCHEDULER, uintptr(sp.proc.Pid), unix.SCHED_BATCH, uintptr(unsafe.Pointer(&param))); e != 0 {
		t.Fatalf("SCHED_BATCH for the spawner: %v", e)
	}
	const base = 3_900_000
	// The sandbox's home: the last CPU the test may use.
	cpus := AllowedCPUs()
	if len(cpus) == 0 {
		t.Fatal("no CPUs allowed")
	}
	homeCPU := cpus[len(cpus)-1]
	land, err := hostUserland()
	if err != nil {
		t.Fatal(err)
	}
	// spawn starts this test binary as a sandbox's agent: the init builds
	// the root, drops to the sandbox user and execs it.
	spawn := func(hostname string) (int, *os.File, *os.File) {
		t.Helper()
		init := &initConfig{Root: "/tmp", Userland: land, Hostname: hostname, UID: SandboxUID, GID: SandboxGID,
			TimerSlackNs: testSlack, CPUs: []int{homeCPU}, NoIPv6: hostHasIPv6()}
		pid, pidfd, logR, err := spawnReleased(sp, init, base)
		if err != nil {
			t.Fatal(err)
		}
		return pid, pidfd, logR
	}
	// An init that fails says which step, and exits: a host name longer
	// than the kernel's 64 bytes.
	pid, pidfd, logR := spawn(strings.Repeat("x", 65))
	msg, _ := io.ReadAll(logR)
	logR.Close()
	if want := "nubo sandbox init: hostname: EINVAL (errno 22)\n"; string(msg) != want {
		t.Errorf("a failed init wrote %q, want %q", msg, want)
	}
	if err := pidfdWait(pidfd); err != nil {
		t.Fatal(err)
	}
	pidfd.Close()
	_ = pid

	pid, pidfd, logR = spawn("spawned")
	defer logR.Close()
	defer pidfd.Close()
	// Exec'd: its name is the agent's argv[0] no more, but its executable's.
	var status map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		status = procStatus(t, pid)
		if status["Name"] != "nubo-spawner" || time.Now().After(deadline) {
			break
		}
	}
	if uids := strings.Fields(status["Uid"]); len(uids) != 4 || uids[0] != strconv.Itoa(base+SandboxUID) || uids[3] != uids[0] {
		t.Errorf("host uids of the child: %q, want %d (the sandbox user, mapped)", status["Uid"], base+SandboxUID)
	}
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if status[set] != "0000000000000000" {
			t.Errorf("%s = %s, want none", set, status[set])
		}
	}
	if status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q", status["NoNewPrivs"])
	}
	// SCHED_OTHER (0), though the spawner runs under SCHED_BATCH (3).
	if pol := schedPolicy(t, sp.proc.Pid); pol != "3" {
		t.Errorf("the spawner runs under policy %s, not SCHED_BATCH: the test cannot tell whether the init set the child's", pol)
	}
	if got := schedPolicy(t, pid); got != "0" {
		t.Errorf("scheduling policy of the child: %q, want 0 (SCHED_OTHER)", got)
	}
	if got, want := status["Cpus_allowed_list"], strconv.Itoa(homeCPU); got != want {
		t.Errorf("CPUs of the child: %q, want %q", got, want)
	}
	// The timer slack asked for (the test's own is the kernel's default).
	if got := timerSlackOf(t, pid); got != strconv.Itoa(testSlack) && timerSlackSettable() {
		t.Errorf("timer slack of the child: %s ns, want %d", got, testSlack)
	}
	if ns := strings.Fields(status["NSpid"]); len(ns) != 2 || ns[1] != "1" {
		t.Errorf("NSpid %q: want PID 1 of a pid namespace of its own", status["NSpid"])
	}
	for _, ns := range []string{"user", "mnt", "net", "pid", "uts", "ipc"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		its, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + ns)
		if err != nil || its == mine {
			t.Errorf("%s namespace of the child: %q (%v), the test's is %q", ns, its, err, mine)
		}
	}
	checkTemplateRoot(t, pid, sp.proc.Pid)
	if hostHasIPv6() {
		if v := ipv6DefaultIn(t, pid); v != "1" {
			t.Errorf("net.ipv6.conf.default.disable_ipv6 in the child's namespace: %q, want 1", v)
		}
	}
	if !pidfdUnreaped(pidfd) {
		t.Fatal("the child is gone")
	}
	if err := pidfdKill(pidfd); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- pidfdWait(pidfd) }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pidfd wait did not return after the kill")
	}

	// A spawner that died is replaced at the next request.
	spPid := spawnerPid(t, os.Getpid())
	syscall.Kill(spPid, syscall.SIGKILL)
	time.Sleep(100 * time.Millisecond)
	pid2, pidfd2, logR2 := spawn("spawned")
	defer pidfd2.Close()
	defer logR2.Close()
	if got := spawnerPid(t, os.Getpid()); got == spPid {
		t.Fatalf("still the old spawner %d", got)
	}
	// The child of the killed spawner died with it (parent-death signal):
	// gone, or a zombie until its new parent reaps it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if p, ok := testutil.Procs()[pid]; !ok || p.State == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived its spawner", pid)
		}
	}
	pidfdKill(pidfd2)
	pidfdWait(pidfd2)
	_ = pid2

	sp.close()
	if p := spawnerPidOrZero(os.Getpid()); p != 0 {
		t.Errorf("spawner %d still running after close", p)
	}
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func spawnerPid(t *testing.T, parent int) int {
	t.Helper()
	p := spawnerPidOrZero(parent)
	if p == 0 {
		t.Fatal("no spawner process below the test")
	}
	return p
}

// spawnerPidOrZero finds the live child of parent named nubo-spawner.
func spawnerPidOrZero(parent int) int {
	for pid, p := range testutil.Procs() {
		if p.PPID == parent && p.State != "Z" && p.Comm == "nubo-spawner" {
			return pid
		}
	}
	return 0
}

// TestSpawnerProtocol: a helper that answers late fails one request but is
// kept (replacing it would kill every sandbox it made), and its late answer
// is dropped before the next request's; a helper whose socket closed is
// gone. The helper here is the test, at the other end of the socket.
func TestSpawnerProtocol(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(fds[0]), "ours")
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	helper := os.NewFile(uintptr(fds[1]), "helper")
	hc, err := net.FileConn(helper)
	helper.Close()
	if err != nil {
		t.Fatal(err)
	}
	sp := &spawner{conn: c.(*net.UnixConn), done: make(chan struct{}), log: slog.New(slog.DiscardHandler),
		timeout: 100 * time.Millisecond}
	h := hc.(*net.UnixConn)
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	reply := func(pid int) {
		t.Helper()
		pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			t.Skipf("pidfd_open: %v", err)
		}
		defer unix.Close(pidfd)
		msg, _ := json.Marshal(spawnReply{Pid: pid})
		if _, _, err := h.WriteMsgUnix(msg, unix.UnixRights(pidfd), nil); err != nil {
			t.Fatal(err)
		}
	}
	readRequest := func() {
		t.Helper()
		buf, oob := make([]byte, 4096), make([]byte, 256)
		_, oobn, _, _, err := h.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := parseRights(oob[:oobn])
		closeAll(got)
	}

	sp.mu.Lock()
	defer sp.mu.Unlock()
	// No answer in time: an error, but not a gone helper.
	_, _, err = sp.roundTripLocked([]byte(`{}`), []int{int(devnull.Fd())})
	readRequest()
	if err == nil || errors.As(err, new(*goneError)) || sp.late != 1 {
		t.Fatalf("a late helper: err %v, late %d; want a plain error and one late answer", err, sp.late)
	}
	// The late answer comes, then the next request's: the next request
	// gets its own.
	reply(111)
	go func() {
		readRequest()
		reply(222)
	}()
	pid, pidfd, err := sp.roundTripLocked([]byte(`{}`), []int{int(devnull.Fd())})
	if err != nil || pid != 222 {
		t.Fatalf("after a late answer: pid %d, %v; want 222", pid, err)
	}
	pidfd.Close()
	if sp.late != 0 {
		t.Errorf("late = %d after draining", sp.late)
	}
	// The helper's end closed: gone.
	h.Close()
	if _, _, err := sp.roundTripLocked([]byte(`{}`), []int{int(devnull.Fd())}); !errors.As(err, new(*goneError)) {
		t.Fatalf("closed helper: %v, want a gone error", err)
	}
}

// testSlack is the timer slack TestSpawner asks for: neither the kernel's
// default nor one the test could have inherited by chance.
const testSlack = 654_321

// timerSlackSettable reports whether the kernel lets a thread set its
// timer slack (gVisor does not: the init then keeps the one it has).
func timerSlackSettable() bool {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return false
	}
	return unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(cur), 0, 0, 0) == nil
}

// timerSlackOf is pid's timer slack in nanoseconds.
func timerSlackOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// schedPolicy is pid's scheduling policy: field 41 of /proc/PID/stat.
func schedPolicy(t *testing.T, pid int) string {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 39 {
		t.Fatalf("/proc/%d/stat has %d fields after the command", pid, len(f))
	}
	return f[38]
}

// ipv6DefaultIn reads net.ipv6.conf.default.disable_ipv6 in the network
// namespace of pid: /proc/sys/net answers for the reading thread's.
func ipv6DefaultIn(t *testing.T, pid int) string {
	t.Helper()
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	out := make(chan string, 1)
	go func() {
		// The thread ends with the goroutine, still locked: it never
		// goes back to the host's namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			out <- err.Error()
			return
		}
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6")
		if err != nil {
			out <- err.Error()
			return
		}
		out <- strings.TrimSpace(string(b))
	}()
	return <-out
}

// checkTemplateRoot: the root of pid is the spawner's (spawner), its
// template: a read-only tmpfs, the same file system for every sandbox; and
// the host's root file system is in its mount namespace only in parts (the
// userland's binds), never whole: the spawner detached it before cloning
// any sandbox.
func checkTemplateRoot(t *testing.T, pid, spawner int) {
	t.Helper()
	mounts := func(pid string) [][]string {
		b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		var out [][]string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(l)
			// The fields after the separator: type, source, options.
			if i := slices.Index(f, "-"); i >= 6 && len(f) > i+1 {
				out = append(out, append(f[:6:6], f[i+1:]...))
			}
		}
		return out
	}
	// The host's root: its device and the path of its file system that
	// is mounted (not always "/": a btrfs subvolume, say).
	var hostRoot [2]string
	self := mounts("self")
	for _, m := range self {
		if m[4] == "/" {
			hostRoot = [2]string{m[2], m[3]}
		}
	}
	var template string
	for _, m := range mounts(strconv.Itoa(spawner)) {
		if m[4] == "/" {
			template = m[2]
		}
	}
	sawRoot := false
	for _, m := range mounts(strconv.Itoa(pid)) {
		if m[4] == "/" {
			sawRoot = true
			if m[2] != template {
				t.Errorf("the child's root is file system %s, the spawner's %s; want the spawner's template", m[2], template)
			}
			if m[6] != "tmpfs" || !slices.Contains(strings.Split(m[5], ","), "ro") {
				t.Errorf("the child's root is %s mounted %s; want the template, a read-only tmpfs", m[6], m[5])
			}
		}
		if m[2] == hostRoot[0] && m[3] == hostRoot[1] {
			t.Errorf("the host's root file system is mounted whole in the child's namespace, at %s", m[4])
		}
	}
	if !sawRoot {
		t.Error("no root in the child's mountinfo")
	}
	// The template is the spawner's alone: the host (this test) does not
	// see it, and the spawner does not see a sandbox's own mounts.
	for _, m := range self {
		if m[2] == template {
			t.Errorf("the spawner's template (%s) is mounted in the host's namespace, at %s", template, m[4])
		}
	}
	// Every mount of the child is private: none propagates to or from the
	// spawner or another sandbox.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err != nil {
		t.Fatal(err)
	} else {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if opt, _, _ := strings.Cut(l, " - "); strings.Contains(opt, " shared:") || strings.Contains(opt, " master:") {
				t.Errorf("a mount of the child propagates: %s", l)
			}
		}
	}
	procs := 0
	for _, m := range mounts(strconv.Itoa(spawner)) {
		switch m[6] {
		case "proc":
			procs++
		case "devpts", "ext4":
			if m[4] != "/usr" && !strings.HasPrefix(m[4], "/usr/") && !strings.HasPrefix(m[4], "/lib") && !strings.HasPrefix(m[4], "/bin") && !strings.HasPrefix(m[4], "/sbin") {
				t.Errorf("a sandbox's %s on %s shows in the spawner's namespace", m[6], m[4])
			}
		}
	}
	if procs != 1 {
		t.Errorf("%d procs in the spawner's namespace; want the template's alone", procs)
	}
}

// TestSpawnerTemplateFails: a spawner that cannot build its template root
// answers so and exits, rather than clone from a namespace half built; the
// next request starts a new spawner, whose template is built anew.
func TestSpawnerTemplateFails(t *testing.T) {
	testutil.RequiresRoot(t)
	sp, land := newTestSpawner(t)
	spawn := func(root string) (int, *os.File, error) {
		t.Helper()
		init := &initConfig{Root: root, Userland: land, Hostname: "spawned", UID: SandboxUID, GID: SandboxGID}
		pid, pidfd, logR, err := spawnReleased(sp, init, 3_910_000)
		if logR != nil {
			logR.Close()
		}
		return pid, pidfd, err
	}
	if _, _, err := spawn("/nonexistent-nubo-root"); err == nil || !strings.Contains(err.Error(), "template") {
		t.Fatalf("a template on a missing root: %v; want the template's error", err)
	}
	first := sp.proc.Pid
	deadline := time.Now().Add(5 * time.Second)
	for unix.Kill(first, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the spawner lives on after its template failed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, pidfd, err := spawn("/tmp")
	if err != nil {
		t.Fatalf("the next request: %v", err)
	}
	defer pidfd.Close()
	if sp.proc.Pid == first {
		t.Error("the next request went to the spawner whose template failed")
	}
	pidfdKill(pidfd)
	pidfdWait(pidfd)
}

// TestTemplateBindsReadOnly: a userland directory is bound read-only with
// the mounts below it, not only its own: a separate file system mounted
// inside it (a /usr/local of its own) is read-only in a sandbox too.
func TestTemplateBindsReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	// In the host's mount namespace until the test ends: the spawner's,
	// a copy made when it starts, has it too.
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	sp, land := newTestSpawner(t)
	land = append(land, userlandEntry{Name: "nested", Bind: dir})
	// Not on /tmp, where the template would hide the directory.
	init := &initConfig{Root: t.TempDir(), Userland: land, Hostname: "spawned", UID: SandboxUID, GID: SandboxGID}
	pid, pidfd, logR, err := spawnReleased(sp, init, 3_920_000)
	if err != nil {
		t.Fatal(err)
	}
	defer logR.Close()
	defer pidfd.Close()
	defer pidfdKill(pidfd)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && (f[4] == "/nested" || f[4] == "/nested/sub") {
			found = found || f[4] == "/nested/sub"
			for _, o := range []string{"ro", "nosuid", "nodev"} {
				if !slices.Contains(strings.Split(f[5], ","), o) {
					t.Errorf("%s is mounted %s in the sandbox; want %s", f[4], f[5], o)
				}
			}
		}
	}
	if !found {
		t.Errorf("no /nested/sub in the sandbox's mounts:\n%s", b)
	}
}

// spawnReleased asks sp for a sandbox that runs this test binary as its
// agent ("spawned": it sleeps), with ids from base, and releases it at
// once; it returns the init's pid, pidfd and stderr (nil on an error).
func spawnReleased(sp *spawner, init *initConfig, base int) (int, *os.File, *os.File, error) {
	logR, logW, _ := os.Pipe()
	defer logW.Close()
	// The init writes its network-ready byte there.
	conn, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer conn.Close()
	relR, relW, _ := os.Pipe()
	defer relR.Close()
	defer relW.Close()
	pid, pidfd, err := sp.spawn(spawnRequest{Init: init, Args: []string{"spawned"}, Env: []string{spawnedEnv + "=1"},
		IDBase: base, IDSize: idRange}, logW, []*os.File{conn, relR}, nil)
	if err != nil {
		logR.Close()
		return 0, nil, nil, err
	}
	relW.Write([]byte{1})
	return pid, pidfd, logR, nil
}

// newTestSpawner starts a spawner, closed when the test ends, and lists
// the host's userland for its sandboxes.
func newTestSpawner(t *testing.T) (*spawner, []userlandEntry) {
	t.Helper()
	sp, err := newSpawner(nil, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.close)
	land, err := hostUserland()
	if err != nil {
		t.Fatal(err)
	}
	return sp, land
}
