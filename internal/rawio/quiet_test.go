package rawio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bothWays runs test with Quiet as this kernel makes it and as an older
// kernel would (the socket in the poller).
func bothWays(t *testing.T, test func(t *testing.T)) {
	t.Run("quiet", func(t *testing.T) {
		if !nestedEpollSound() {
			t.Skip("this kernel is older than 5.10: Quiet is the socket in the poller")
		}
		test(t)
	})
	t.Run("polled", func(t *testing.T) {
		sound := nestedEpollSound
		nestedEpollSound = func() bool { return false }
		defer func() { nestedEpollSound = sound }()
		test(t)
	})
}

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
	bothWays(t, func(t *testing.T) {
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
		// A Read that waits is woken by what arrives later...
		go func() {
			time.Sleep(20 * time.Millisecond)
			peer.Write([]byte("late"))
		}()
		n, err = q.Read(buf)
		if err != nil || string(buf[:n]) != "late" {
			t.Fatalf("waiting read %q, %v", buf[:n], err)
		}
		// ...and by the peer's close.
		go func() {
			time.Sleep(20 * time.Millisecond)
			peer.Close()
		}()
		if n, err := q.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("read when the peer closed: %d, %v; want io.EOF", n, err)
		}
	})
}

// The point of Quiet: what the peer reads does not reach a poller
// watching it, where it reaches one watching the socket as Go's does.
func TestQuietPeerReadsDoNotSignal(t *testing.T) {
	if !nestedEpollSound() {
		t.Skip("this kernel is older than 5.10: Quiet is the socket in the poller")
	}
	q, peer := quietPair(t)
	var in int
	if err := q.inc.Control(func(fd uintptr) { in = int(fd) }); err != nil {
		t.Fatal(err)
	}
	// Two instances registered as Go's poller registers a descriptor:
	// one over Quiet's watcher, one over the socket itself.
	goLike := func(target int) int {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(ep) })
		ev := &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(target)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, target, ev); err != nil {
			t.Fatal(err)
		}
		return ep
	}
	events := func(ep int) int {
		ev := make([]unix.EpollEvent, 4)
		n, err := unix.EpollWait(ep, ev, 0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	overQuiet, overSocket := goLike(in), goLike(q.fd)
	events(overQuiet) // each registration's first edge
	events(overSocket)
	for i := range 3 {
		if _, err := q.Write(make([]byte, 300)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, make([]byte, 300)); err != nil {
			t.Fatal(err)
		}
		if n := events(overQuiet); n != 0 {
			t.Fatalf("round %d: the peer's read reached a poller watching Quiet (%d events)", i, n)
		}
		if n := events(overSocket); n == 0 {
			t.Fatalf("round %d: the peer's read did not reach one watching the socket; the comparison is void", i)
		}
	}
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := events(overQuiet); n != 1 {
		t.Fatalf("input reached a poller watching Quiet as %d events, want 1", n)
	}
	// And the socket is in no epoll instance of this process but Quiet's
	// watcher (and the comparison's): not in Go's poller.
	for _, ep := range epollInstances(t) {
		if ep != in && ep != overSocket && watches(t, ep, q.fd) {
			t.Fatalf("epoll instance %d watches the socket", ep)
		}
	}
}

// epollInstances lists this process's epoll descriptors.
func epollInstances(t *testing.T) []int {
	t.Helper()
	links, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	var eps []int
	for _, l := range links {
		if dest, err := os.Readlink(l); err == nil && dest == "anon_inode:[eventpoll]" {
			var fd int
			fmt.Sscan(filepath.Base(l), &fd)
			eps = append(eps, fd)
		}
	}
	if len(eps) == 0 {
		t.Fatal("no epoll instance found: the check is void")
	}
	return eps
}

// watches reports whether epoll instance ep has descriptor fd registered.
func watches(t *testing.T, ep, fd int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", ep))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" && f[1] == fmt.Sprint(fd) {
			return true
		}
	}
	return false
}

// Input left unread costs no CPU: a process asleep in the poller, which
// watches Quiet's watcher, is not woken over and over for it (as it was
// with nested epoll before Linux 5.5).
func TestQuietUnreadInputIdle(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		if _, err := peer.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		if data, err := q.WaitInput(time.Now().Add(time.Second)); err != nil || !data {
			t.Fatalf("the input did not arrive: %v, %v", data, err)
		}
		cpu := func() time.Duration {
			var ru unix.Rusage
			if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
				t.Fatal(err)
			}
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		before := cpu()
		time.Sleep(300 * time.Millisecond)
		if used := cpu() - before; used > 100*time.Millisecond {
			t.Fatalf("the process used %s of CPU in 300 ms of waiting behind unread input", used)
		}
	})
}

// A write larger than the socket's buffer waits for room, as often as it
// must, and the next one does too.
func TestQuietLargeWrites(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB
		for round := range 2 {
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, len(big))
				// Slowly at first, so that the writer waits.
				time.Sleep(20 * time.Millisecond)
				if _, err := io.ReadFull(peer, b); err != nil {
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
	})
}

// Reads and writes run at once from two goroutines, as an environment's
// reader and its invocations do.
func TestQuietConcurrentReadWrite(t *testing.T) {
	bothWays(t, func(t *testing.T) {
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
	})
}

// unreadBy returns how many bytes wait unread in peer's socket.
func unreadBy(t *testing.T, peer *os.File) int {
	t.Helper()
	rc, err := peer.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return n
}

// fillWrite starts a write of more than the socket holds and returns once
// it waits for room (the peer's socket stops filling), with a channel for
// its outcome.
func fillWrite(t *testing.T, q *Quiet, peer *os.File) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := q.Write(make([]byte, 16<<20))
		done <- err
	}()
	last := -1
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := unreadBy(t, peer)
		if n > 0 && n == last {
			return done
		}
		last = n
	}
	t.Fatal("the write never filled the socket")
	return nil
}

func TestQuietCloseEndsWaits(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		reading := make(chan error, 1)
		go func() {
			_, err := q.Read(make([]byte, 8))
			reading <- err
		}()
		writing := fillWrite(t, q, peer)
		select {
		case err := <-reading:
			t.Fatalf("the read ended before Close: %v", err)
		default:
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		for _, wait := range []<-chan error{reading, writing} {
			select {
			case err := <-wait:
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
		if _, err := q.WaitInput(time.Now().Add(time.Second)); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("WaitInput after Close: %v, want os.ErrClosed", err)
		}
	})
}

// A write waiting for room ends with the peer's close.
func TestQuietWriteEndsWhenPeerCloses(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		writing := fillWrite(t, q, peer)
		peer.Close()
		select {
		case err := <-writing:
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the write ended with %v, want EPIPE or ECONNRESET", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the peer's close did not end a waiting write")
		}
	})
}

func TestQuietWaitInput(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		start := time.Now()
		if _, err := q.WaitInput(start.Add(30 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("wait with nothing to read: %v, want os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d < 25*time.Millisecond {
			t.Fatalf("the wait ended after %s, before its deadline", d)
		}
		// The deadline is gone with the wait: a Read may wait longer.
		go func() {
			time.Sleep(60 * time.Millisecond)
			peer.Write([]byte("late"))
		}()
		buf := make([]byte, 8)
		if n, err := q.Read(buf); err != nil || string(buf[:n]) != "late" {
			t.Fatalf("read after an expired wait: %q, %v", buf[:n], err)
		}
		go func() {
			time.Sleep(20 * time.Millisecond)
			peer.Write([]byte("ready"))
		}()
		data, err := q.WaitInput(time.Now().Add(5 * time.Second))
		if err != nil || !data {
			t.Fatalf("wait for input: %v, %v", data, err)
		}
		// The input is left for Read.
		if n, err := q.Read(buf); err != nil || string(buf[:n]) != "ready" {
			t.Fatalf("read after the wait: %q, %v", buf[:n], err)
		}
		peer.Close()
		if data, err := q.WaitInput(time.Now().Add(5 * time.Second)); err != nil || data {
			t.Fatalf("wait after the peer closed: %v, %v; want false, nil", data, err)
		}
	})
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
