package nsbox

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
// requested id maps, hands back a pidfd that kills and waits, is started
// anew when it has died, and exits when nubo closes it.
func TestSpawner(t *testing.T) {
	testutil.RequiresRoot(t)
	sp, err := newSpawner(nil, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	const base = 3_900_000
	spawn := func() (int, *os.File) {
		t.Helper()
		devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		defer devnull.Close()
		pid, pidfd, err := sp.spawn(spawnRequest{Args: []string{"spawned"}, Env: []string{spawnedEnv + "=1"},
			IDBase: base, IDSize: idRange}, devnull, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pid, pidfd
	}
	pid, pidfd := spawn()
	defer pidfd.Close()
	status := procStatus(t, pid)
	if uids := strings.Fields(status["Uid"]); len(uids) == 0 || uids[0] != strconv.Itoa(base) {
		t.Errorf("host uid of the child: %q, want %d (its root, mapped)", status["Uid"], base)
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
	pid2, pidfd2 := spawn()
	defer pidfd2.Close()
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
