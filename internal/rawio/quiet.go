package rawio

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/kernel"
)

// Quiet is one end of a local stream socket (a socketpair's) read and
// written with raw system calls, whose waits go through an epoll instance
// of its own that watches the socket's input only.
//
// Why: Go's network poller watches every descriptor for input and output
// at once, and a Unix socket signals room to write each time its peer
// reads anything, full or not. So each frame the agent reads wakes nubo
// serve's poller, and each frame nubo serve reads wakes the agent's: a
// sleeping thread woken for nothing, the wake-up paid for by the reader
// inside its read (perf, at concurrency 1: 5-8 % of either process's
// samples under unix_write_space). A Quiet socket is never in the poller
// itself: the poller watches its epoll instance, which becomes readable
// only when the socket does. A write that finds the socket full watches it
// for room in a second instance until the write is done.
// bench/cmd/wakecost measures the difference.
//
// Nested epoll passes readiness on soundly in Linux 5.10, the first
// long-term kernel after two fixes: before 5.5 the kernel woke the outer
// instance again after each look at an inner one with something ready (a
// busy loop while input waits unread), and 5.5-5.6 could lose a nested
// wake-up. On older kernels a Quiet is the socket in the poller, read and
// written as FD does.
type Quiet struct {
	name string
	// mu guards fd: raw calls hold it for reading, Close for writing, so
	// that no call ever runs on a number closed and reused.
	mu sync.RWMutex
	fd int // -1 once closed
	// in is the epoll instance watching fd's input, in the poller.
	in  *os.File
	inc syscall.RawConn
	// wmu orders writes; out, made on the first write that waits, watches
	// fd for room while one does.
	wmu  sync.Mutex
	out  *os.File
	outc syscall.RawConn
	// polled is the socket itself in the poller, on kernels older than
	// nested epoll needs (then nothing above is used but name).
	polled *os.File
	pfd    *FD
}

// NewQuiet takes fd, a stream socket, and makes it non-blocking: the
// Quiet owns it from then on, and nothing may make it blocking again (a
// raw read would then hold the thread's P until input came). On error fd
// is left open, possibly non-blocking.
func NewQuiet(fd int, name string) (*Quiet, error) {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt", err)
	}
	if t != unix.SOCK_STREAM {
		return nil, errors.New("rawio: not a stream socket")
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	if !nestedEpollSound() {
		// A copy, so that fd stays the caller's on error: an *os.File
		// closes its descriptor when collected.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("fcntl", err)
		}
		f := os.NewFile(uintptr(dup), name) // non-blocking: in the poller
		pfd, ok := New(f)
		if !ok {
			f.Close()
			return nil, errors.New("rawio: the socket is not in the poller")
		}
		unix.Close(fd)
		return &Quiet{name: name, fd: -1, polled: f, pfd: pfd}, nil
	}
	in, inc, err := watcher(fd, unix.EPOLLIN|unix.EPOLLRDHUP, name)
	if err != nil {
		return nil, err
	}
	return &Quiet{name: name, fd: fd, in: in, inc: inc}, nil
}

// nestedEpollSound reports whether the kernel is 5.10 or later (see
// Quiet). A test sets it to false to try the other way.
var nestedEpollSound = sync.OnceValue(func() bool { return kernel.AtLeast(5, 10) })

// watcher returns a new epoll instance in the poller, watching fd for
// events (level-triggered) unless they are none.
func watcher(fd int, events uint32, name string) (*os.File, syscall.RawConn, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	if events != 0 {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
			unix.Close(ep)
			return nil, nil, os.NewSyscallError("epoll_ctl", err)
		}
	}
	// Non-blocking, so that os.NewFile puts it in the poller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(ep), name+" (epoll)")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}

// call runs op on fd and returns its error, unless the socket is closed
// (EBADF then, op not run).
func (q *Quiet) call(op func(fd int) syscall.Errno) syscall.Errno {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.fd < 0 {
		return unix.EBADF
	}
	for {
		if errno := op(q.fd); errno != unix.EINTR {
			return errno
		}
	}
}

// fail dresses err as an *os.File's would be: a closed socket's is
// os.ErrClosed, a bare errno becomes op's.
func (q *Quiet) fail(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok && errno != unix.EBADF {
		err = os.NewSyscallError(op, errno)
	} else if errors.Is(err, unix.EBADF) || errors.Is(err, os.ErrClosed) || errors.Is(err, errFileClosing()) {
		err = os.ErrClosed
	}
	return &os.PathError{Op: op, Path: q.name, Err: err}
}

// Read reads once: up to len(p) bytes, io.EOF at the end.
func (q *Quiet) Read(p []byte) (int, error) {
	if q.polled != nil {
		return q.pfd.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := q.inc.Read(func(uintptr) bool {
		errno = q.call(func(fd int) syscall.Errno { // does not escape: no allocation
			var e syscall.Errno
			n, e = Read(fd, p)
			return e
		})
		return errno != unix.EAGAIN
	})
	switch {
	case err != nil:
		return 0, q.fail("read", err)
	case errno != 0:
		return 0, q.fail("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting for room as often as it must.
func (q *Quiet) Write(p []byte) (int, error) {
	if q.polled != nil {
		return q.pfd.Write(p)
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	written, watching := 0, false
	for written < len(p) {
		var n int
		errno := q.call(func(fd int) syscall.Errno {
			var e syscall.Errno
			n, e = Write(fd, p[written:])
			return e
		})
		switch {
		case errno == unix.EAGAIN:
			if !watching {
				if err := q.watchRoom(unix.EPOLL_CTL_ADD); err != nil {
					return written, q.fail("write", err)
				}
				watching = true
				defer q.watchRoom(unix.EPOLL_CTL_DEL)
			}
			if err := q.waitRoom(); err != nil {
				return written, q.fail("write", err)
			}
			continue
		case errno != 0:
			return written, q.fail("write", errno)
		case n == 0: // never for a socket; do not spin on it
			return written, q.fail("write", io.ErrUnexpectedEOF)
		}
		written += n
	}
	return written, nil
}

// watchRoom adds the socket to out's watch for room (op EPOLL_CTL_ADD),
// making out on first use, or takes it off (EPOLL_CTL_DEL).
func (q *Quiet) watchRoom(op int) error {
	if q.out == nil { // only writes, which wmu orders, set it
		out, outc, err := watcher(-1, 0, q.name)
		if err != nil {
			return err
		}
		q.mu.Lock()
		closed := q.fd < 0
		if !closed {
			q.out, q.outc = out, outc
		}
		q.mu.Unlock()
		if closed {
			out.Close()
			return unix.EBADF
		}
	}
	var errno syscall.Errno
	err := q.outc.Control(func(ep uintptr) {
		errno = q.call(func(fd int) syscall.Errno {
			err := unix.EpollCtl(int(ep), op, fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)})
			e, _ := err.(syscall.Errno) // EpollCtl returns nothing else
			return e
		})
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// waitRoom waits until the socket, watched for room, has some or is
// closed (the next write then says which).
func (q *Quiet) waitRoom() error {
	return q.outc.Read(func(uintptr) bool {
		ready := false
		if q.call(func(fd int) syscall.Errno {
			ready = pollNow(fd, unix.POLLOUT)
			return 0
		}) != 0 {
			return true
		}
		return ready
	})
}

// WaitInput waits until the socket has something to read, and reports
// whether it has (false: the peer closed its end first). The input is
// left unread. It gives up with an error at deadline (none when zero)
// or when the socket is closed. It must not run alongside Read, whose
// waits would take its deadline.
func (q *Quiet) WaitInput(deadline time.Time) (bool, error) {
	f, rc := q.in, q.inc
	if q.polled != nil {
		f, rc = q.polled, q.pfd.rc
	}
	if err := f.SetReadDeadline(deadline); err != nil {
		return false, q.fail("read", err)
	}
	defer f.SetReadDeadline(time.Time{})
	data := false
	var errno syscall.Errno
	peek := func(fd int) syscall.Errno {
		var e syscall.Errno
		data, e = peekByte(fd)
		return e
	}
	err := rc.Read(func(fd uintptr) bool {
		if q.polled != nil {
			for errno = peek(int(fd)); errno == unix.EINTR; errno = peek(int(fd)) {
			}
		} else {
			errno = q.call(peek)
		}
		return errno != unix.EAGAIN
	})
	switch {
	case err != nil:
		return false, q.fail("read", err)
	case errno != 0:
		return false, q.fail("read", errno)
	}
	return data, nil
}

// ReceiveRights takes, without waiting, up to len(p) bytes and the
// descriptors (at most max) sent with them (SCM_RIGHTS), close-on-exec:
// for input the caller has seen come (WaitInput). Descriptors beyond max
// are an error (and closed by the kernel).
func (q *Quiet) ReceiveRights(p []byte, max int) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(4*max))
	var (
		n, oobn, flags int
		errno          syscall.Errno
	)
	recv := func(fd int) syscall.Errno {
		var err error
		n, oobn, flags, _, err = unix.Recvmsg(fd, p, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if e, ok := err.(syscall.Errno); ok {
			return e
		} else if err != nil {
			return unix.EINVAL
		}
		return 0
	}
	if q.polled != nil {
		if err := q.pfd.rc.Control(func(fd uintptr) {
			for errno = recv(int(fd)); errno == unix.EINTR; errno = recv(int(fd)) {
			}
		}); err != nil {
			return 0, nil, q.fail("recvmsg", err)
		}
	} else {
		errno = q.call(recv)
	}
	if errno != 0 {
		return 0, nil, q.fail("recvmsg", errno)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err == nil {
		for i := range msgs {
			if msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_RIGHTS {
				got, perr := unix.ParseUnixRights(&msgs[i])
				if perr != nil {
					err = perr
				}
				fds = append(fds, got...)
			}
		}
	}
	if err == nil && (flags&unix.MSG_CTRUNC != 0 || len(fds) > max) {
		err = errors.New("rawio: more descriptors than asked for")
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, nil, q.fail("recvmsg", err)
	}
	return n, fds, nil
}

// Close closes the socket; a Read or Write waiting on it returns an
// error.
func (q *Quiet) Close() error {
	if q.polled != nil {
		if err := q.polled.Close(); err != nil {
			return q.fail("close", err)
		}
		return nil
	}
	q.mu.Lock()
	fd, out := q.fd, q.out
	q.fd = -1
	q.mu.Unlock()
	if fd < 0 {
		return q.fail("close", os.ErrClosed)
	}
	q.in.Close()
	if out != nil {
		out.Close()
	}
	if err := unix.Close(fd); err != nil {
		return q.fail("close", err)
	}
	return nil
}

// peekByte looks at fd's next byte without taking it: true if there is
// one; false with no error at the end of the stream.
func peekByte(fd int) (bool, syscall.Errno) {
	var b [1]byte
	n, _, errno := syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return errno == 0 && n == 1, errno
}

// pollNow reports whether fd has any of events now (or POLLERR, POLLHUP
// or POLLNVAL, which poll always reports). ppoll, not poll: arm64 has only
// the former. The zero timeout (never a nil one, which would block
// holding the thread's P) makes it a check.
func pollNow(fd int, events int16) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
	var zero unix.Timespec
	for {
		_, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1,
			uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		return errno != 0 || pfd[0].Revents != 0
	}
}
