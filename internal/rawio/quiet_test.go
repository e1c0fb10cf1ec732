package rawio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// quietPair returns a Quiet end of a socketpair and its peer, a plain
// *os.File in blocking mode.
func quietPair(t *testing.T) (*Quiet, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	q, err := NewQuiet(fds[0], "quiet")
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() { q.Close(); peer.Close() })
	return q, peer
}

func TestQuietRoundTrip(t *testing.T) {
	q, peer := quietPair(t)
	if _, err := peer.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := q.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := q.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if _, err := q.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	// A Read that waits is woken by what arrives later.
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("late"))
	}()
	n, err = q.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("waiting read %q, %v", buf[:n], err)
	}
	// So is one by the peer's close.
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Close()
	}()
	if n, err := q.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read when the peer closed: %d, %v; want io.EOF", n, err)
	}
}

// The point of Quiet: what the peer reads does not make its watcher
// ready, where a watch for output (the poller's) would be.
func TestQuietPeerReadsDoNotSignal(t *testing.T) {
	q, peer := quietPair(t)
	var in int
	if err := q.inc.Control(func(fd uintptr) { in = int(fd) }); err != nil {
		t.Fatal(err)
	}
	ready := func() int {
		ev := make([]unix.EpollEvent, 4)
		n, err := unix.EpollWait(in, ev, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// A second instance watching as the poller does, for comparison.
	both, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(both)
	if err := q.call(func(fd int) syscall.Errno {
		ev := &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(both, unix.EPOLL_CTL_ADD, fd, ev); err != nil {
			t.Fatal(err)
		}
		return 0
	}); err != 0 {
		t.Fatal(err)
	}
	drainBoth := func() int {
		ev := make([]unix.EpollEvent, 4)
		n, err := unix.EpollWait(both, ev, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	drainBoth() // the edge of its registration
	for i := range 3 {
		if _, err := q.Write(make([]byte, 300)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, make([]byte, 300)); err != nil {
			t.Fatal(err)
		}
		if n := ready(); n != 0 {
			t.Fatalf("round %d: the peer's read made the input watcher ready (%d events)", i, n)
		}
		if n := drainBoth(); n == 0 {
			t.Fatalf("round %d: a watch for output saw nothing; the comparison is void", i)
		}
	}
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := ready(); n != 1 {
		t.Fatalf("input made %d events ready, want 1", n)
	}
}

// A write larger than the socket's buffer waits for room, as often as it
// must, and the next one does too.
func TestQuietLargeWrites(t *testing.T) {
	q, peer := quietPair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB
	for round := range 2 {
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(big))
			// Slowly at first, so that the writer waits.
			time.Sleep(20 * time.Millisecond)
			_, err := io.ReadFull(peer, b)
			if err != nil {
				b = nil
			}
			got <- b
		}()
		n, err := q.Write(big)
		if err != nil || n != len(big) {
			t.Fatalf("round %d: wrote %d of %d: %v", round, n, len(big), err)
		}
		if b := <-got; !bytes.Equal(b, big) {
			t.Fatalf("round %d: the peer read other bytes", round)
		}
	}
}

// Reads and writes run at once from two goroutines, as an environment's
// reader and its invocations do.
func TestQuietConcurrentReadWrite(t *testing.T) {
	q, peer := quietPair(t)
	go func() { _, _ = io.Copy(peer, peer) }() // echo
	const rounds = 200
	msg := bytes.Repeat([]byte("m"), 1000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range rounds {
			if _, err := q.Write(msg); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	buf := make([]byte, rounds*len(msg))
	if _, err := io.ReadFull(q, buf); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(buf, bytes.Repeat(msg, rounds)) {
		t.Fatal("echoed bytes differ")
	}
}

func TestQuietCloseEndsWaits(t *testing.T) {
	q, peer := quietPair(t)
	_ = peer
	errs := make(chan error, 2)
	go func() {
		_, err := q.Read(make([]byte, 8))
		errs <- err
	}()
	go func() {
		// Fills the socket and waits for room the peer never makes.
		_, err := q.Write(make([]byte, 16<<20))
		errs <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, os.ErrClosed) {
				t.Fatalf("a wait ended with %v, want os.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end a wait")
		}
	}
	if err := q.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Close: %v, want os.ErrClosed", err)
	}
	if _, err := q.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := q.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
	}
}

func TestQuietWaitInput(t *testing.T) {
	q, peer := quietPair(t)
	start := time.Now()
	if _, err := q.WaitInput(start.Add(30 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait with nothing to read: %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("the wait ended after %s, before its deadline", d)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("ready"))
	}()
	data, err := q.WaitInput(time.Now().Add(5 * time.Second))
	if err != nil || !data {
		t.Fatalf("wait for input: %v, %v", data, err)
	}
	// The input is left for Read, and the deadline is gone.
	buf := make([]byte, 8)
	if n, err := q.Read(buf); err != nil || string(buf[:n]) != "ready" {
		t.Fatalf("read after the wait: %q, %v", buf[:n], err)
	}
	peer.Close()
	if data, err := q.WaitInput(time.Now().Add(5 * time.Second)); err != nil || data {
		t.Fatalf("wait after the peer closed: %v, %v; want false, nil", data, err)
	}
}

func TestNewQuietRefusesOtherDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := NewQuiet(int(r.Fd()), "pipe"); err == nil {
		t.Fatal("NewQuiet took a pipe")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := NewQuiet(fds[0], "dgram"); err == nil {
		t.Fatal("NewQuiet took a datagram socket")
	}
}
