package agentproto

import (
	"io"
	"sync"
)

// Pipe returns the two ends of an in-process byte stream: what is written
// to one end is read from the other, in order. It carries the protocol
// between package env and an agent that runs in nubo serve itself (package
// agent's Supervise), where a socket would cost system calls and the
// wake-ups of the poller for nothing.
//
// Unlike net.Pipe's, a write does not wait for the peer's read: it waits
// only while pipeBuffer bytes lie unread, as a socket's does when its
// buffer is full. Closing an end ends the peer's reads (io.EOF, once what
// was written before is read) and fails its writes (io.ErrClosedPipe).
func Pipe() (io.ReadWriteCloser, io.ReadWriteCloser) {
	ab, ba := newPipeHalf(), newPipeHalf()
	return &pipeEnd{r: ba, w: ab}, &pipeEnd{r: ab, w: ba}
}

// pipeBuffer is how much a pipe's direction holds unread before a write
// waits.
const pipeBuffer = 1 << 20

// pipeHalf is one direction of a pipe.
type pipeHalf struct {
	wmu sync.Mutex // one write at a time, so that writes do not interleave
	mu  sync.Mutex
	buf []byte
	off int // buf[off:] is unread
	// readerGone fails writes; writerGone ends reads once buf is read.
	readerGone, writerGone bool
	// readable and writable are signalled (never closed) after a write,
	// a read and a close.
	readable, writable chan struct{}
}

func newPipeHalf() *pipeHalf {
	return &pipeHalf{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (h *pipeHalf) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		h.mu.Lock()
		switch {
		case h.readerGone:
			h.mu.Unlock()
			return 0, io.ErrClosedPipe
		case h.off < len(h.buf):
			n := copy(p, h.buf[h.off:])
			h.off += n
			if h.off == len(h.buf) {
				// Empty: start over at the front, and give a large
				// buffer back (a 6 MB payload passed through).
				h.buf, h.off = h.buf[:0], 0
				if cap(h.buf) > 64<<10 {
					h.buf = nil
				}
			}
			h.mu.Unlock()
			signal(h.writable)
			return n, nil
		case h.writerGone:
			h.mu.Unlock()
			return 0, io.EOF
		}
		h.mu.Unlock()
		<-h.readable
	}
}

func (h *pipeHalf) write(p []byte) (int, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		h.mu.Lock()
		if h.readerGone || h.writerGone {
			h.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		if h.off > 0 && h.off >= len(h.buf)/2 {
			// What was read goes: behind a reader that never quite
			// catches up, the buffer would otherwise grow by all that
			// passes through it.
			h.buf, h.off = h.buf[:copy(h.buf, h.buf[h.off:])], 0
		}
		if room := pipeBuffer - (len(h.buf) - h.off); room > 0 {
			take := min(room, len(p))
			h.buf = append(h.buf, p[:take]...)
			p = p[take:]
			n += take
			h.mu.Unlock()
			signal(h.readable)
			continue
		}
		h.mu.Unlock()
		<-h.writable
	}
	return n, nil
}

// pipeEnd reads r and writes w.
type pipeEnd struct {
	r, w *pipeHalf
}

func (e *pipeEnd) Read(p []byte) (int, error)  { return e.r.read(p) }
func (e *pipeEnd) Write(p []byte) (int, error) { return e.w.write(p) }

// Close ends both directions at this end.
func (e *pipeEnd) Close() error {
	e.r.mu.Lock()
	e.r.readerGone = true
	e.r.mu.Unlock()
	e.w.mu.Lock()
	e.w.writerGone = true
	e.w.mu.Unlock()
	for _, h := range []*pipeHalf{e.r, e.w} {
		signal(h.readable)
		signal(h.writable)
	}
	return nil
}
