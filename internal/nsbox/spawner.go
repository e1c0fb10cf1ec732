package nsbox

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The spawner is a small helper process that clones every sandbox's init
// stage on nubo's behalf.
//
// Why: a clone with a new user namespace cannot be a vfork (the child
// waits for its id maps, which the parent writes), so package syscall
// makes it a full fork of the caller. Forking nubo serve copies the page
// tables of a large, busy heap, and every page nubo writes afterwards takes
// a copy-on-write fault: 37% of nubo's CPU during a burst of cold starts
// went there (docs/performance.md, "The spawner"). The spawner is the agent
// executable (or nubo's binary, when it has none embedded) started once,
// with a heap of a few hundred kilobytes, so its forks are cheap.
//
// nubo and the spawner talk over a SOCK_SEQPACKET socket pair: one request
// per message (JSON, with the child's descriptors attached), one reply per
// message (the child's pid, with its pidfd attached). The spawner reaps its
// children; nubo follows each one through its pidfd, which it also signals
// with. The spawner dies with nubo (parent-death signal, tied to a thread
// that stays for the spawner's life) and the sandboxes with the spawner
// (theirs).

// spawnerEnv marks a re-executed nubo (or agent executable) as the spawner.
const spawnerEnv = "NUBO_NSBOX_SPAWNER"

// spawnRequest asks for one sandbox. The descriptors attached are its
// stderr, then its files (the agent's connection, the release, the mount
// trees Init names), then, when Cgroup is set, the cgroup directory it is
// cloned into (cgroup v2). Args and Env are the agent's.
type spawnRequest struct {
	Init   *initConfig `json:"init"`
	Args   []string    `json:"args"`
	Env    []string    `json:"env"`
	Files  int         `json:"files"`
	IDBase int         `json:"idBase"`
	IDSize int         `json:"idSize"`
	Cgroup bool        `json:"cgroup,omitempty"`
}

// spawnReply answers a spawnRequest; on success the child's pidfd is
// attached.
type spawnReply struct {
	Pid int    `json:"pid"`
	Err string `json:"err,omitempty"`
}

// maxSpawnFDs bounds the descriptors of one request.
const maxSpawnFDs = 16

// spawner is nubo's end: the helper process and its socket.
type spawner struct {
	exe *os.File // the agent executable; nil: nubo's own binary
	log *slog.Logger

	mu     sync.Mutex // one request at a time; guards the fields below
	conn   *net.UnixConn
	proc   *os.Process
	done   chan struct{} // closed when the helper has exited
	closed bool
	// late counts replies still owed for requests that timed out: they
	// are read and dropped before the next request's.
	late    int
	timeout time.Duration // spawnTimeout; shorter in tests
}

// spawnTimeout bounds one request. A helper that does not answer in time
// is taken for dead only if it has exited; a slow one (a fork under memory
// pressure) fails the request and stays.
const spawnTimeout = 30 * time.Second

func newSpawner(exe *os.File, log *slog.Logger) (*spawner, error) {
	sp := &spawner{exe: exe, log: log}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err := sp.startLocked(); err != nil {
		return nil, err
	}
	return sp, nil
}

// startLocked starts the helper process.
func (sp *spawner) startLocked() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("spawner socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "spawner")
	theirs := os.NewFile(uintptr(fds[1]), "spawner-child")
	defer theirs.Close()
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return fmt.Errorf("spawner socket: %w", err)
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"nubo-spawner"}
	cmd.Env = []string{spawnerEnv + "=self", "GOMAXPROCS=1"}
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	if sp.exe != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, sp.exe) // fd 4
		cmd.Path = "/proc/self/fd/4"
		cmd.Env[0] = spawnerEnv + "=exe"
	}
	cmd.Stderr = &logWriter{log: sp.log, id: "spawner"}
	// A session of its own: a terminal's ^C or ^\ goes to nubo, which
	// stops the sandboxes in order, not to the spawner, whose end would
	// kill them all at once.
	//
	// A mount namespace of its own (private: Go's unshare makes it so),
	// where it builds the sandboxes' template root and pivots into it
	// (buildTemplate): none of that is seen on the host, and it all goes
	// with the spawner and its sandboxes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// child ends, not the process: this goroutine keeps its thread
		// until the spawner has exited (and ends it then, still locked).
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		c.Close()
		return fmt.Errorf("start spawner: %w", err)
	}
	sp.conn, sp.proc, sp.done = c.(*net.UnixConn), cmd.Process, done
	return nil
}

// spawn starts one sandbox through the helper; it returns its pid and a
// pidfd (non-blocking, in the network poller). A helper found gone (its
// socket broken, or no answer within spawnTimeout) is replaced once; any
// other failure leaves it be: replacing it kills every sandbox it made.
func (sp *spawner) spawn(req spawnRequest, stderr *os.File, files []*os.File, cgroupDir *os.File) (int, *os.File, error) {
	req.Files = len(files)
	req.Cgroup = cgroupDir != nil
	msg, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	var fds []int
	for _, f := range append(append([]*os.File{stderr}, files...), cgroupDir) {
		if f != nil {
			fds = append(fds, int(f.Fd()))
		}
	}
	if len(fds) > maxSpawnFDs {
		return 0, nil, fmt.Errorf("spawner: %d descriptors, at most %d", len(fds), maxSpawnFDs)
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if sp.closed {
			return 0, nil, errors.New("spawner: closed")
		}
		if sp.conn == nil {
			if err := sp.startLocked(); err != nil {
				return 0, nil, err
			}
		}
		pid, pidfd, err := sp.roundTripLocked(msg, fds)
		var gone *goneError
		if err == nil || !errors.As(err, &gone) || attempt > 0 {
			return pid, pidfd, err
		}
		sp.log.Warn("the sandbox spawner is gone; starting a new one", "err", err)
		sp.stopLocked()
	}
}

// goneError is a failure of the helper itself: its end of the socket is
// closed, or it exited.
type goneError struct{ err error }

func (e *goneError) Error() string { return "spawner gone: " + e.err.Error() }
func (e *goneError) Unwrap() error { return e.err }

// transportError classifies a socket error: only a closed peer, or a
// helper that has exited, means the helper is gone. Anything else (nubo
// out of memory or descriptors, a slow helper) fails the one request.
func (sp *spawner) transportError(err error) error {
	select {
	case <-sp.done:
		return &goneError{err}
	default:
	}
	if errors.Is(err, io.EOF) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return &goneError{err}
	}
	return fmt.Errorf("spawner: %w", err)
}

func (sp *spawner) roundTripLocked(msg []byte, fds []int) (int, *os.File, error) {
	sp.conn.SetDeadline(time.Now().Add(cmp.Or(sp.timeout, spawnTimeout)))
	defer sp.conn.SetDeadline(time.Time{})
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for sp.late > 0 {
		// The child of a timed-out request was never released: it ends
		// when its release pipe closes (see box.start).
		_, oobn, _, _, err := sp.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return 0, nil, sp.transportError(err)
		}
		if got, err := parseRights(oob[:oobn]); err == nil {
			closeAll(got)
		}
		sp.late--
	}
	if _, _, err := sp.conn.WriteMsgUnix(msg, unix.UnixRights(fds...), nil); err != nil {
		return 0, nil, sp.transportError(err)
	}
	n, oobn, flags, _, err := sp.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		err = sp.transportError(err)
		if !errors.As(err, new(*goneError)) {
			sp.late++ // its answer may still come
		}
		return 0, nil, err
	}
	if n == 0 {
		return 0, nil, &goneError{errors.New("socket closed")}
	}
	got, err := parseRights(oob[:oobn])
	if err != nil {
		return 0, nil, err
	}
	if flags&unix.MSG_CTRUNC != 0 {
		// nubo is out of descriptors: the child's pidfd was dropped. The
		// child, never released, ends when start closes its release pipe.
		closeAll(got)
		return 0, nil, errors.New("spawner reply: descriptors dropped (out of descriptors?)")
	}
	var rep spawnReply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		closeAll(got)
		return 0, nil, fmt.Errorf("spawner reply: %w", err)
	}
	if rep.Err != "" {
		closeAll(got)
		return 0, nil, errors.New("spawner: " + rep.Err)
	}
	if len(got) != 1 || rep.Pid <= 0 {
		closeAll(got)
		return 0, nil, fmt.Errorf("spawner reply: pid %d with %d descriptors", rep.Pid, len(got))
	}
	// Non-blocking, so that os.NewFile puts it in the network poller:
	// waiting for a sandbox's end then holds no thread.
	if err := unix.SetNonblock(got[0], true); err != nil {
		unix.Close(got[0])
		return 0, nil, err
	}
	return rep.Pid, os.NewFile(uintptr(got[0]), fmt.Sprintf("pidfd:%d", rep.Pid)), nil
}

func (sp *spawner) stopLocked() {
	if sp.conn == nil {
		return
	}
	sp.conn.Close() // the helper exits at end of file
	select {
	case <-sp.done:
	case <-time.After(5 * time.Second):
		sp.log.Warn("the sandbox spawner did not exit; killing it")
		sp.proc.Kill()
		select {
		case <-sp.done:
		case <-time.After(5 * time.Second):
			sp.log.Warn("the sandbox spawner survives SIGKILL (uninterruptible?); leaving it")
		}
	}
	sp.conn, sp.proc = nil, nil
}

// close stops the helper for good: a later spawn fails.
func (sp *spawner) close() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.closed = true
	sp.stopLocked()
}

// parseRights returns the descriptors of SCM_RIGHTS messages in oob.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// pidfdWait blocks until the process of pidfd has exited.
func pidfdWait(pidfd *os.File) error {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		return err != unix.EINTR && (err != nil || n > 0)
	})
}

// pidfdKill sends SIGKILL to the process of pidfd; one already gone is no
// error.
func pidfdKill(pidfd *os.File) error {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var kerr error
	if err := rc.Control(func(fd uintptr) {
		kerr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return err
	}
	if kerr == unix.ESRCH {
		return nil
	}
	return kerr
}

// pidfdUnreaped reports whether the process of pidfd has not been reaped
// yet (it may have exited): while it has not, its pid names no other
// process. (Signal 0 reaches a zombie too.)
func pidfdUnreaped(pidfd *os.File) bool {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	rc.Control(func(fd uintptr) {
		alive = unix.PidfdSendSignal(int(fd), 0, nil, 0) == nil
	})
	return alive
}
