package microvm

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// frameGuard sits under the host's yamux session and watches what the
// guest sends. A guest agent that behaves never pings (keep-alives are
// off), never opens a stream (only the host does: odd ids) and never sets
// SYN. A compromised guest could do all three to make the host start a
// goroutine per ping or buffer streams nobody accepts; the guard ends the
// session at the first such frame, and violation kills the VM.
type frameGuard struct {
	net.Conn
	violation func(why string)

	hdr  [12]byte
	hn   int    // header bytes collected
	skip uint32 // data payload bytes still to pass
	once sync.Once
	err  error
}

// yamux framing: version, type, flags, stream id, length.
const (
	yamuxData   = 0
	yamuxPing   = 2
	yamuxSYN    = 1
	yamuxHeader = 12
)

var errGuestProtocol = errors.New("microvm: the guest broke the host protocol")

func (f *frameGuard) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.Conn.Read(p)
	if why := f.inspect(p[:n]); why != "" {
		f.err = errGuestProtocol
		f.once.Do(func() { f.violation(why) })
		return 0, f.err
	}
	return n, err
}

// inspect follows the frame boundaries through b and returns why a frame
// is refused, or "".
func (f *frameGuard) inspect(b []byte) string {
	for len(b) > 0 {
		if f.skip > 0 {
			n := min(uint32(len(b)), f.skip)
			f.skip -= n
			b = b[n:]
			continue
		}
		c := copy(f.hdr[f.hn:], b)
		f.hn += c
		b = b[c:]
		if f.hn < yamuxHeader {
			continue
		}
		f.hn = 0
		typ := f.hdr[1]
		flags := binary.BigEndian.Uint16(f.hdr[2:4])
		id := binary.BigEndian.Uint32(f.hdr[4:8])
		length := binary.BigEndian.Uint32(f.hdr[8:12])
		switch {
		case typ == yamuxPing:
			return "ping"
		case flags&yamuxSYN != 0:
			return "stream opened by the guest"
		case id != 0 && id%2 == 0:
			return "frame on a stream the host did not open"
		case typ > 3:
			return "unknown frame type"
		}
		if typ == yamuxData {
			f.skip = length
		}
	}
	return ""
}
