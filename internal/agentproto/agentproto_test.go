package agentproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 6<<20/4)
	go func() {
		ca.Send(TInvoke, &Invoke{RequestID: "r1", DeadlineMs: 42}, []byte("payload"))
		ca.Send(TResult, &Result{RequestID: "r1", FunctionError: true}, big)
		ca.Send(TReady, nil, nil)
	}()
	f, err := cb.Receive()
	if err != nil || f.Type != TInvoke {
		t.Fatalf("frame %v %v", f, err)
	}
	var inv Invoke
	if err := f.Decode(&inv); err != nil || inv.RequestID != "r1" || inv.DeadlineMs != 42 || string(f.Body) != "payload" {
		t.Fatalf("invoke %+v body %q err %v", inv, f.Body, err)
	}
	f, err = cb.Receive()
	if err != nil || f.Type != TResult || !bytes.Equal(f.Body, big) {
		t.Fatalf("big frame: %v len %d", err, len(f.Body))
	}
	f, err = cb.Receive()
	if err != nil || f.Type != TReady || len(f.Body) != 0 {
		t.Fatalf("ready: %v %v", f, err)
	}
}

func TestOversizedAndTruncated(t *testing.T) {
	c := NewConn(nopRWC{bytes.NewReader([]byte{byte(TLog), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})})
	if _, err := c.Receive(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("want ErrFrameTooLarge, got %v", err)
	}
	c = NewConn(nopRWC{bytes.NewReader([]byte{byte(TLog), 0, 0, 0, 2, 0, 0, 0, 5, '{', '}', 'a'})})
	if _, err := c.Receive(); err == nil || errors.Is(err, io.EOF) && err.Error() == "EOF" {
		t.Fatalf("want truncated error, got %v", err)
	}
	if err := NewConn(nopRWC{}).Send(TLog, nil, make([]byte, MaxBody+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("send oversized: %v", err)
	}
}

func FuzzReceive(f *testing.F) {
	f.Add([]byte{byte(TInvoke), 0, 0, 0, 2, 0, 0, 0, 1, '{', '}', 'x'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewConn(nopRWC{bytes.NewReader(b)})
		for {
			fr, err := c.Receive()
			if err != nil {
				return
			}
			var inv Invoke
			_ = fr.Decode(&inv)
		}
	})
}

type nopRWC struct{ r io.Reader }

func (n nopRWC) Read(p []byte) (int, error) {
	if n.r == nil {
		return 0, io.EOF
	}
	return n.r.Read(p)
}
func (nopRWC) Write(p []byte) (int, error) { return len(p), nil }
func (nopRWC) Close() error                { return nil }
