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
)

// Quiet is one end of a local stream socket (a socketpair's) read and
// written with raw system calls, whose waits go through an epoll instance
// of its own that watches the socket's input only.
//
// Why: Go's network poller watches every descriptor for input and output
// at once, and a Unix socket signals room to write each time its peer
// reads anything, full or not. So each frame the agent reads wakes nubo
// serve's poller, and each frame nubo serve reads wakes the agent's: a
// sleeping thread woken for nothing, paid for by the reader inside its
// read (perf, at concurrency 1: 5-8 % of either process's samples, in
// unix_write_space). A Quiet socket is never in the poller itself: the
// poller watches its epoll instance, which becomes readable only when the
// socket does. A write that finds the socket full watches it for room in
// a second instance until the write is done. bench/cmd/wakecost measures
// the difference.
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
}

// NewQuiet takes fd, a stream socket, and makes it non-blocking. On error
// fd is left open.
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
	in, inc, err := watcher(fd, unix.EPOLLIN|unix.EPOLLRDHUP, name)
	if err != nil {
		return nil, err
	}
	return &Quiet{name: name, fd: fd, in: in, inc: inc}, nil
}

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

// call runs op on fd unless the socket is closed (EBADF then).
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

// fail dresses err as an *os.File's would be.
func (q *Quiet) fail(op string, err error) error {
	if err == unix.EBADF || errors.Is(err, errFileClosing()) {
		err = os.ErrClosed
	} else if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &os.PathError{Op: op, Path: q.name, Err: err}
}

// Read reads once: up to len(p) bytes, io.EOF at the end.
func (q *Quiet) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	read := func(fd int) syscall.Errno { n, errno = Read(fd, p); return errno }
	err := q.inc.Read(func(uintptr) bool {
		return q.call(read) != unix.EAGAIN
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
	q.wmu.Lock()
	defer q.wmu.Unlock()
	written, watching := 0, false
	defer func() {
		if watching {
			_ = q.watchRoom(unix.EPOLL_CTL_DEL)
		}
	}()
	for written < len(p) {
		var n int
		errno := q.call(func(fd int) syscall.Errno {
			var e syscall.Errno
			n, e = Write(fd, p[written:])
			return e
		})
		switch {
		case errno == unix.EAGAIN:
			if err := q.waitRoom(&watching); err != nil {
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

// waitRoom waits until the socket has room to write, watching it for room
// from the first wait of a write on (*watching).
func (q *Quiet) waitRoom(watching *bool) error {
	if q.out == nil {
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
	if !*watching {
		if err := q.watchRoom(unix.EPOLL_CTL_ADD); err != nil {
			return err
		}
		*watching = true
	}
	return q.outc.Read(func(uintptr) bool {
		ready := false
		q.call(func(fd int) syscall.Errno { ready = pollNow(fd, unix.POLLOUT|unix.POLLERR|unix.POLLHUP); return 0 })
		return ready
	})
}

// watchRoom adds the socket to out's watch for room, or deletes it (op).
func (q *Quiet) watchRoom(op int) error {
	var errno syscall.Errno
	err := q.outc.Control(func(ep uintptr) {
		errno = q.call(func(fd int) syscall.Errno {
			ev := &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}
			var errno syscall.Errno
			if err := unix.EpollCtl(int(ep), op, fd, ev); !errors.As(err, &errno) && err != nil {
				errno = unix.EINVAL
			}
			return errno
		})
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return os.NewSyscallError("epoll_ctl", errno)
	}
	return nil
}

// pollNow reports whether fd has any of events now.
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

// WaitInput waits until the socket has something to read, and reports
// whether it has (false: the peer closed its end first). The input is
// left unread. It gives up with an error at deadline (none when zero)
// or when the socket is closed.
func (q *Quiet) WaitInput(deadline time.Time) (bool, error) {
	if err := q.in.SetReadDeadline(deadline); err != nil {
		return false, q.fail("read", err)
	}
	defer q.in.SetReadDeadline(time.Time{})
	data := false
	var errno syscall.Errno
	err := q.inc.Read(func(uintptr) bool {
		errno = q.call(func(fd int) syscall.Errno {
			var b [1]byte
			n, _, e := syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
				unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
			data = e == 0 && n == 1
			return e
		})
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

// Close closes the socket; a Read or Write waiting on it returns an
// error.
func (q *Quiet) Close() error {
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
