package agentproto

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// TestPipeCarriesFrames: frames of every size cross a Pipe in order, both
// ways, and a write larger than the pipe's buffer waits for the reader.
func TestPipeCarriesFrames(t *testing.T) {
	a, b := Pipe()
	ca, cb := NewConn(a), NewConn(b)
	big := bytes.Repeat([]byte("x"), 3*pipeBuffer+17)
	sent := make(chan error, 1)
	go func() {
		for _, body := range [][]byte{[]byte("small"), big, nil} {
			if err := ca.Send(TLog, &Log{Stream: "stdout"}, body); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for _, want := range [][]byte{[]byte("small"), big, {}} {
		f, err := cb.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != TLog || !bytes.Equal(f.Body, want) {
			t.Fatalf("got %s with %d bytes, want Log with %d", f.Type, len(f.Body), len(want))
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := cb.Send(TReady, nil, nil); err != nil {
		t.Fatal(err)
	}
	if f, err := ca.Receive(); err != nil || f.Type != TReady {
		t.Fatalf("the other way: %v %v", f, err)
	}
}

// TestPipeClose: what was written before a close is still read, then the
// reader sees io.EOF; writes to a closed end's peer fail, and so does a
// write waiting for room when the reader goes.
func TestPipeClose(t *testing.T) {
	a, b := Pipe()
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write to a closed peer: %v", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("read of a closed end: %v", err)
	}

	c, d := Pipe()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 2*pipeBuffer))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a write twice the buffer returned with nothing read: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	d.Close()
	select {
	case err := <-wrote:
		if !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("waiting write after the reader closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting write did not end when the reader closed")
	}
}

// TestPipeBufferBounded: behind a reader that takes a little at a time
// and never empties the pipe, the buffer stays near pipeBuffer instead of
// growing by all that passed through.
func TestPipeBufferBounded(t *testing.T) {
	a, b := Pipe()
	if _, err := a.Write(make([]byte, pipeBuffer)); err != nil {
		t.Fatal(err)
	}
	h := b.(*pipeEnd).r
	p := make([]byte, 4<<10)
	for range 16 * pipeBuffer / len(p) {
		if _, err := io.ReadFull(b, p); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write(p); err != nil { // there is room: no wait
			t.Fatal(err)
		}
		h.mu.Lock()
		size := cap(h.buf)
		h.mu.Unlock()
		if size > 4*pipeBuffer {
			t.Fatalf("the buffer grew to %d bytes (pipeBuffer %d)", size, pipeBuffer)
		}
	}
}
