package agent

import (
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/rawio"
)

// output relays what the runtime and extensions write to their stdout and
// stderr (two pipes every child shares) to the host as Log frames. The
// relays read the pipes' read ends: the agent's own (Run), or, when nubo
// serve supervises, the ones the keeper handed over (Supervise).
type output struct {
	conn *agentproto.Conn
	// mu is held across every read of the pipes and the sending of what
	// was read, so a flush that drains the pipes under it knows nothing
	// read earlier is still unsent (see flush).
	mu    sync.Mutex
	files [2]*os.File // the read ends, stdout then stderr
	fds   [2]int      // their descriptors (non-blocking)
	hdr   [2]*agentproto.Log
	buf   []byte // guarded by mu
	wg    sync.WaitGroup
}

// newOutput starts relaying the pipes' read ends r (stdout, stderr), which
// it then owns, to conn.
func newOutput(conn *agentproto.Conn, r [2]*os.File) (*output, error) {
	o := &output{conn: conn, files: r}
	var rcs [2]syscall.RawConn
	for i, stream := range []string{"stdout", "stderr"} {
		rc, err := r[i].SyscallConn()
		if err != nil {
			return nil, err
		}
		// The descriptor as is (Fd() would make it blocking): the poller
		// waits for it, reads happen under mu.
		if err := rc.Control(func(fd uintptr) { o.fds[i] = int(fd) }); err != nil {
			return nil, err
		}
		o.hdr[i] = &agentproto.Log{Stream: stream}
		rcs[i] = rc
	}
	for i := range rcs {
		o.wg.Add(1)
		go o.relay(rcs[i], i)
	}
	return o, nil
}

// relay forwards one output stream to the host as Log frames. It reads
// only under mu (see flush); between reads it waits in the poller. It
// ends when every write end is closed, or when the read end is.
func (o *output) relay(rc syscall.RawConn, i int) {
	defer o.wg.Done()
	defer runtime.KeepAlive(o.files[i]) // its finalizer would close the fd
	for {
		done := false
		err := rc.Read(func(fd uintptr) bool {
			o.mu.Lock()
			defer o.mu.Unlock()
			n, err := o.readChunk(i)
			switch {
			case err == unix.EAGAIN:
				return false // nothing yet: wait in the poller
			case err != nil || n == 0:
				done = true // the write ends are closed (or broken)
			}
			return true
		})
		if done || err != nil {
			return
		}
	}
}

// readChunk reads once from pipe i and sends what it got; mu held. The
// read is raw (package rawio): the pipe is non-blocking, and its file is
// kept, so the descriptor stays open, until close.
func (o *output) readChunk(i int) (int, error) {
	if o.buf == nil {
		o.buf = make([]byte, 64<<10)
	}
	if o.fds[i] < 0 {
		return 0, unix.EBADF
	}
	n, errno := rawio.Read(o.fds[i], o.buf)
	var err error
	if errno != 0 {
		err = errno
	}
	if n > 0 {
		_ = o.conn.Send(agentproto.TLog, o.hdr[i], o.buf[:n])
	}
	return n, err
}

// flush sends everything the runtime wrote so far, so an invocation's log
// lines precede its Result: output written before the runtime posted its
// response is in the pipe buffers or was read and sent by a relay; under
// mu, the pipes are drained here until they are empty, and no relay can
// hold bytes read but unsent.
func (o *output) flush() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.fds {
		for {
			if n, err := o.readChunk(i); err != nil || n == 0 {
				break
			}
		}
	}
}

// close closes the read ends, which ends the relays, and waits for them.
func (o *output) close() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.fds = [2]int{-1, -1}
	o.mu.Unlock()
	for _, f := range o.files {
		f.Close()
	}
	o.wg.Wait()
}
