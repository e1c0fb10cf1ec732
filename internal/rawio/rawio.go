// Package rawio reads and writes non-blocking file descriptors (sockets,
// pipes) with raw system calls, waiting in Go's network poller only when a
// call would block.
//
// Why: every ordinary system call enters the Go scheduler (entersyscall),
// and the first one after the process was idle wakes the scheduler's
// monitor thread, which then polls every 20 µs until the process is idle
// again; a call that takes longer than a poll also hands the process's P to
// another thread. On a virtual machine each of those thread switches costs
// more than the read or write itself. The agent and nubo serve relay one
// invocation at a time through a few small reads and writes, so on their
// hot paths the raw calls remove most of the context switches an
// invocation costs (docs/performance.md, "Where it stands (session
// 10)").
//
// A raw call keeps the thread's P for its duration, so it is used only on
// stream sockets and pipes in non-blocking mode and in the poller, checked
// once, when wrapped: whoever wraps a descriptor must not make it blocking
// afterwards. Wrap returns anything else unchanged. Raw calls carry no
// race-detector annotations, so the race detector cannot see a hand-off
// through a wrapped descriptor.
//
// Quiet goes one step further for the socketpair between nubo serve and
// each agent: the socket is not in the poller at all, which waits on an
// epoll instance watching the socket's input only, so that one side's
// reads do not wake the other (see Quiet).
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscallConn is what *os.File, *net.TCPConn and *net.UnixConn offer.
type syscallConn interface {
	SyscallConn() (syscall.RawConn, error)
}

// FD reads and writes one non-blocking descriptor through its RawConn:
// deadlines and Close interrupt a wait as they do for the descriptor's own
// Read and Write.
type FD struct {
	rc syscall.RawConn
	// wrap dresses an error as the wrapped object's own Read or Write
	// would (*net.OpError, *os.PathError), which callers such as net/http
	// tell apart.
	wrap func(op string, err error) error
}

// New returns an FD for c, or ok=false when c has no RawConn, is not a
// stream socket or a pipe, is in blocking mode, or is not in the network
// poller (an *os.File made from a descriptor that was blocking then).
// When it returns ok, c's read deadline is cleared.
func New(c any) (fd *FD, ok bool) {
	sc, isSC := c.(syscallConn)
	if !isSC {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	fit := false
	if err := rc.Control(func(fd uintptr) { fit = streamNonblocking(int(fd)) }); err != nil || !fit {
		return nil, false
	}
	// Only a descriptor in the poller takes deadlines.
	if d, isD := c.(interface{ SetReadDeadline(time.Time) error }); !isD || d.SetReadDeadline(time.Time{}) != nil {
		return nil, false
	}
	f := &FD{rc: rc, wrap: func(op string, err error) error { return err }}
	switch c := c.(type) {
	case net.Conn:
		f.wrap = func(op string, err error) error {
			if oe, isOE := err.(*net.OpError); isOE { // the RawConn's own ("raw-read")
				named := *oe
				named.Op = op
				return &named
			}
			return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
		}
	case interface{ Name() string }:
		f.wrap = func(op string, err error) error {
			if errors.Is(err, errFileClosing()) {
				err = os.ErrClosed
			}
			return &os.PathError{Op: op, Path: c.Name(), Err: err}
		}
	}
	return f, true
}

// errFileClosing is what a RawConn of a closed *os.File reports (poll's
// ErrFileClosing, which os.File itself turns into os.ErrClosed), found
// on the first error rather than at every start of the agent.
var errFileClosing = sync.OnceValue(func() error {
	r, w, err := os.Pipe()
	if err != nil {
		return errors.New("use of closed file")
	}
	w.Close()
	rc, _ := r.SyscallConn()
	r.Close()
	return rc.Control(func(uintptr) {})
})

// streamNonblocking reports whether fd is a non-blocking stream socket or
// pipe: a raw call on it never sleeps, and a read of 0 bytes is its end.
func streamNonblocking(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return true
	case unix.S_IFSOCK:
		t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		return err == nil && t == unix.SOCK_STREAM
	}
	return false
}

// Read reads once: up to len(p) bytes, io.EOF at the end.
func (f *FD) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := f.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = Read(int(fd), p)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, f.wrap("read", err)
	case errno != 0:
		return 0, f.wrap("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting for room as often as it must.
func (f *FD) Write(p []byte) (int, error) {
	written := 0
	var (
		errno syscall.Errno
		short bool
	)
	err := f.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			var n int
			n, errno = Write(int(fd), p[written:])
			switch {
			case errno == unix.EINTR:
				continue
			case errno == unix.EAGAIN:
				return false
			case errno != 0:
				return true
			case n == 0: // never for a socket or pipe; do not spin on it
				short = true
				return true
			}
			written += n
		}
		return true
	})
	switch {
	case err != nil:
		return written, f.wrap("write", err)
	case errno != 0:
		return written, f.wrap("write", os.NewSyscallError("write", errno))
	case short:
		return written, f.wrap("write", io.ErrUnexpectedEOF)
	}
	return written, nil
}

// PeerGone reports whether a socket's peer has closed or reset its end.
// It reads nothing: a peek finds the end of the stream or an error, and
// behind data that is still unread, poll's POLLRDHUP finds the peer's
// close. With wait it first waits until that happens (a deadline or Close
// ends the wait with an error); without, it answers at once. A pipe cannot
// be peeked at and is reported gone.
func (f *FD) PeerGone(wait bool) (bool, error) {
	gone := false
	var err error
	if wait {
		err = f.rc.Read(func(fd uintptr) bool {
			gone = peerEnded(fd)
			return gone
		})
	} else {
		// Control, not Read: a waiting PeerGone holds the read lock.
		err = f.rc.Control(func(fd uintptr) { gone = peerEnded(fd) })
	}
	if err != nil {
		return false, f.wrap("read", err)
	}
	return gone, nil
}

// peerEnded peeks at fd: true at the end of the stream or on an error, or
// when the peer has shut its side behind unread data (poll's POLLRDHUP).
func peerEnded(fd uintptr) bool {
	for {
		data, errno := peekByte(int(fd))
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return false
		case data:
			return pollNow(int(fd), unix.POLLRDHUP)
		}
		return true // the end, or an error
	}
}

// Read is read(2) as a raw system call; fd must be non-blocking.
func Read(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	r, _, errno := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// Write is write(2) as a raw system call; fd must be non-blocking.
func Write(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	r, _, errno := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// Conn is a net.Conn whose Read and Write are raw system calls; the rest
// (deadlines, Close, addresses) is the wrapped connection's.
type Conn struct {
	net.Conn
	fd *FD
}

// Wrap returns c with raw reads and writes, or c itself when its
// descriptor cannot take them.
func Wrap(c net.Conn) net.Conn {
	fd, ok := New(c)
	if !ok {
		return c
	}
	return &Conn{Conn: c, fd: fd}
}

// Read reads once with a raw read(2) (see FD.Read).
func (c *Conn) Read(p []byte) (int, error) { return c.fd.Read(p) }

// Write writes all of p with raw write(2)s (see FD.Write).
func (c *Conn) Write(p []byte) (int, error) { return c.fd.Write(p) }

// PeerGone reports whether the peer has closed or reset its end, waiting
// first for something to read when wait is set (see FD.PeerGone).
func (c *Conn) PeerGone(wait bool) (bool, error) { return c.fd.PeerGone(wait) }

// CloseWrite shuts the write side where the connection has one (net/http
// uses it to close a connection gracefully).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Listener wraps every connection it accepts (see Wrap).
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// File is an *os.File (or any ReadWriteCloser) with raw reads and writes
// when its descriptor can take them.
type File struct {
	io.ReadWriteCloser
	fd *FD
}

// WrapFile returns f with raw reads and writes, or f itself.
func WrapFile(f io.ReadWriteCloser) io.ReadWriteCloser {
	fd, ok := New(f)
	if !ok {
		return f
	}
	return &File{ReadWriteCloser: f, fd: fd}
}

// Read reads once with a raw read(2) (see FD.Read).
func (f *File) Read(p []byte) (int, error) { return f.fd.Read(p) }

// Write writes all of p with raw write(2)s (see FD.Write).
func (f *File) Write(p []byte) (int, error) { return f.fd.Write(p) }
