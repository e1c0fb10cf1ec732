package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := Listener{Listener: ln}
	client, cerr := net.Dial("tcp", ln.Addr().String())
	if cerr != nil {
		t.Fatal(cerr)
	}
	if server, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	if _, ok := server.(*Conn); !ok {
		t.Fatalf("accepted %T, want *rawio.Conn", server)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestConnRoundTrip(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := server.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := server.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	n, err = io.ReadFull(client, buf[:4])
	if err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	// The write side closes alone; the peer sees the end.
	if err := server.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("client after CloseWrite: %v, want EOF", err)
	}
	client.Close()
	if _, err := server.Read(buf); err != io.EOF {
		t.Fatalf("server after the peer closed: %v, want EOF", err)
	}
	// Errors look like the connection's own: net/http tells a read error
	// of a dead connection by *net.OpError with Op "read".
	server.Close()
	_, err = server.Read(buf)
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %#v, want a *net.OpError read wrapping net.ErrClosed", err)
	}
	if _, err = server.Write(buf); !errors.As(err, &oe) || oe.Op != "write" || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %#v, want a *net.OpError write wrapping net.ErrClosed", err)
	}
}

// A peer that resets the connection: the error is a *net.OpError read
// wrapping the errno, as net/http expects of a connection gone bad.
func TestConnReset(t *testing.T) {
	client, server := tcpPair(t)
	client.(*net.TCPConn).SetLinger(0)
	client.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := server.Read(make([]byte, 1))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %#v, want a *net.OpError read wrapping ECONNRESET", err)
	}
}

// net/http serves through the Listener: kept-alive requests on one
// connection, bodies both ways, and its background read aborted with a
// deadline in the past at the end of every request.
func TestHTTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.Map
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(bytes.ToUpper(b))
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				_, raw := c.(*Conn)
				conns.Store(c, raw)
			}
		},
	}
	go srv.Serve(Listener{Listener: ln})
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for i := range 50 {
		body := bytes.Repeat([]byte("x"), 1+i*997)
		resp, err := c.Post("http://"+ln.Addr().String(), "text/plain", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, bytes.ToUpper(body)) {
			t.Fatalf("request %d: %d bytes back (%v), want %d", i, len(got), err, len(body))
		}
	}
	n := 0
	conns.Range(func(_, raw any) bool {
		n++
		if !raw.(bool) {
			t.Errorf("the server's connection is not a *rawio.Conn")
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d connections for 50 kept-alive requests, want 1", n)
	}
}

// A write larger than the socket's buffers waits for the reader instead of
// failing or spinning, and every byte arrives in order.
func TestConnLargeWrite(t *testing.T) {
	client, server := tcpPair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	var (
		got []byte
		err error
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(50 * time.Millisecond) // let the writer fill the buffers
		got, err = io.ReadAll(client)
	}()
	n, werr := server.Write(want)
	if werr != nil || n != len(want) {
		t.Fatalf("write: %d, %v", n, werr)
	}
	server.Close()
	wg.Wait()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), want %d equal", len(got), err, len(want))
	}
}

// Deadlines and Close interrupt a read that waits, as net/http relies on
// (it aborts its background read with a deadline in the past).
func TestConnDeadlineAndClose(t *testing.T) {
	_, server := tcpPair(t)
	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := server.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	server.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	server.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read interrupted by Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the read")
	}
}

// The agent's connection to the host: an *os.File of a non-blocking
// socketpair end.
func TestFileSocketpair(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	defer a.Close()
	defer b.Close()
	ra := WrapFile(a)
	if _, ok := ra.(*File); !ok {
		t.Fatalf("WrapFile gave %T, want *rawio.File", ra)
	}
	go func() {
		time.Sleep(20 * time.Millisecond) // the read waits in the poller
		b.Write([]byte("frame"))
		b.Close()
	}()
	got, err := io.ReadAll(ra)
	if err != nil || string(got) != "frame" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// Closing the file interrupts a read that waits (the host destroys an
// environment so), and the error is the one os.File gives.
func TestFileCloseInterrupts(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetNonblock(fds[0], true)
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	defer b.Close()
	ra := WrapFile(a)
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		_, err := ra.Read(make([]byte, 1))
		errc <- err
	}()
	<-started
	time.Sleep(50 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		var pe *os.PathError
		if !errors.As(err, &pe) || !errors.Is(err, os.ErrClosed) {
			t.Fatalf("read interrupted by Close: %#v, want a *os.PathError wrapping os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the read")
	}
}

// Descriptors a raw call could block on, or that are not in the poller,
// are left as they are.
func TestWrapRefuses(t *testing.T) {
	pipe := func(flags int) (*os.File, *os.File) {
		var p [2]int
		if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|flags); err != nil {
			t.Fatal(err)
		}
		r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
		t.Cleanup(func() { r.Close(); w.Close() })
		return r, w
	}
	// Blocking when made into a file: not in the poller.
	r, _ := pipe(0)
	if got := WrapFile(r); got != io.ReadWriteCloser(r) {
		t.Errorf("WrapFile(blocking pipe) = %T, want it unchanged", got)
	}
	// In the poller, but made blocking since.
	r, _ = pipe(syscall.O_NONBLOCK)
	if got := WrapFile(r); got == io.ReadWriteCloser(r) {
		t.Fatalf("WrapFile(non-blocking pipe) left it unchanged")
	}
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), false) })
	if got := WrapFile(r); got != io.ReadWriteCloser(r) {
		t.Errorf("WrapFile(pipe made blocking) = %T, want it unchanged", got)
	}
	// A datagram socket: a read of 0 bytes is not its end.
	dg, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := os.NewFile(uintptr(dg[0]), "dgram")
	defer d.Close()
	syscall.Close(dg[1])
	if got := WrapFile(d); got != io.ReadWriteCloser(d) {
		t.Errorf("WrapFile(datagram socket) = %T, want it unchanged", got)
	}
	var rw io.ReadWriteCloser = nopRWC{}
	if got := WrapFile(rw); got != rw {
		t.Errorf("WrapFile(no descriptor) = %T, want it unchanged", got)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if got := Wrap(c1); got != c1 {
		t.Errorf("Wrap(net.Pipe) = %T, want it unchanged", got)
	}
}

type nopRWC struct{}

func (nopRWC) Read([]byte) (int, error)  { return 0, io.EOF }
func (nopRWC) Write([]byte) (int, error) { return 0, nil }
func (nopRWC) Close() error              { return nil }

func TestRawReadWriteEmpty(t *testing.T) {
	if n, e := Read(-1, nil); n != 0 || e != 0 {
		t.Fatalf("Read(nil) = %d, %v", n, e)
	}
	if n, e := Write(-1, nil); n != 0 || e != 0 {
		t.Fatalf("Write(nil) = %d, %v", n, e)
	}
	if _, e := Read(-1, make([]byte, 1)); e != syscall.EBADF {
		t.Fatalf("Read(-1) errno %v, want EBADF", e)
	}
}

// TestPeerGone: data is not the end and is left unread; a wait ends on
// the peer's close, also one behind unread data or one that came before
// the call, on a reset, and on a deadline, which is an error.
func TestPeerGone(t *testing.T) {
	client, server := tcpPair(t)
	rc := server.(*Conn)
	if gone, err := rc.PeerGone(false); gone || err != nil {
		t.Fatalf("nothing sent: %v %v", gone, err)
	}
	_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if gone, err := rc.PeerGone(true); gone || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait with nothing sent: %v %v", gone, err)
	}
	_ = server.SetReadDeadline(time.Time{})
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if gone, err := rc.PeerGone(false); gone || err != nil {
		t.Fatalf("data: %v %v", gone, err)
	}
	_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if gone, err := rc.PeerGone(true); gone || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait with data: %v %v", gone, err)
	}
	_ = server.SetReadDeadline(time.Time{})

	// A close behind the unread byte ends a wait already under way, and
	// the byte is still there to read.
	go func() {
		time.Sleep(20 * time.Millisecond)
		client.Close()
	}()
	if gone, err := rc.PeerGone(true); !gone || err != nil {
		t.Fatalf("close behind data: %v %v", gone, err)
	}
	buf := make([]byte, 4)
	if n, err := server.Read(buf); n != 1 || err != nil {
		t.Fatalf("the data was consumed by a peek: %d %v", n, err)
	}
	for _, wait := range []bool{false, true} {
		if gone, err := rc.PeerGone(wait); !gone || err != nil {
			t.Fatalf("closed peer, wait %v: %v %v", wait, gone, err)
		}
	}
	server.Close()
	if _, err := rc.PeerGone(true); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed connection: %v", err)
	}

	// A reset (a close with SO_LINGER 0) is an end too.
	client, server = tcpPair(t)
	if err := client.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	client.Close()
	if gone, err := server.(*Conn).PeerGone(true); !gone || err != nil {
		t.Fatalf("reset peer: %v %v", gone, err)
	}
}
