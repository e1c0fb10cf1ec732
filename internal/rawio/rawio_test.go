package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		server, err = l.Accept()
	}()
	client, cerr := net.Dial("tcp", ln.Addr().String())
	<-done
	if cerr != nil || err != nil {
		t.Fatal(cerr, err)
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
