package rawio

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQuietReceiveRights: descriptors sent with a byte arrive with it,
// open and close-on-exec; more than asked for is an error.
func TestQuietReceiveRights(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		q, peer := quietPair(t)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		pfd := int(peer.Fd())
		if err := unix.Sendmsg(pfd, []byte("H"), unix.UnixRights(int(r.Fd()), int(w.Fd())), nil, 0); err != nil {
			t.Fatal(err)
		}
		if data, err := q.WaitInput(time.Now().Add(5 * time.Second)); err != nil || !data {
			t.Fatalf("WaitInput: %v %v", data, err)
		}
		b := make([]byte, 1)
		n, fds, err := q.ReceiveRights(b, 2)
		if err != nil || n != 1 || b[0] != 'H' || len(fds) != 2 {
			t.Fatalf("ReceiveRights: %d %q %v %v", n, b, fds, err)
		}
		for _, fd := range fds {
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("descriptor %d: flags %#x, %v (want close-on-exec)", fd, flags, err)
			}
		}
		// The received write end writes to the original read end.
		if _, err := unix.Write(fds[1], []byte("through")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 7)
		if _, err := r.Read(got); err != nil || string(got) != "through" {
			t.Fatalf("read %q, %v", got, err)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}

		if err := unix.Sendmsg(pfd, []byte("H"), unix.UnixRights(int(r.Fd()), int(w.Fd())), nil, 0); err != nil {
			t.Fatal(err)
		}
		q.WaitInput(time.Now().Add(5 * time.Second))
		if _, fds, err := q.ReceiveRights(b, 1); err == nil {
			t.Fatalf("two descriptors taken where one was asked for: %v", fds)
		}
	})
}
