package runtimeapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// wireClient is one raw connection to a test server.
type wireClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (e *testEnv) dial() *wireClient {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &wireClient{t: e.t, c: c, br: bufio.NewReader(c)}
}

func (w *wireClient) send(s string) {
	w.t.Helper()
	if _, err := io.WriteString(w.c, s); err != nil {
		w.t.Fatal(err)
	}
}

// read reads one response to a request of method.
func (w *wireClient) read(method string) (*http.Response, string) {
	w.t.Helper()
	resp, err := http.ReadResponse(w.br, &http.Request{Method: method})
	if err != nil {
		w.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed checks that the server ended the connection.
func (w *wireClient) closed() {
	w.t.Helper()
	// A reset is an end too: the server closes with the rest of a refused
	// request unread.
	if n, err := w.br.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		w.t.Fatalf("connection still open: read %d, %v", n, err)
	}
}

const ping = "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n"

// TestWireKeepAlive: requests on one connection are answered in order,
// pipelined ones too, and the connection stays open; an HTTP/1.0 request
// or "Connection: close" ends it after the answer.
func TestWireKeepAlive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	w := e.dial()
	w.send(ping + ping + "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
	for i, want := range []int{200, 200, 404} {
		resp, body := w.read("GET")
		if resp.StatusCode != want || resp.Close {
			t.Fatalf("response %d: %d close=%v %q", i, resp.StatusCode, resp.Close, body)
		}
		if want == 200 && (body != "pong" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8") {
			t.Fatalf("ping: %q %v", body, resp.Header)
		}
	}
	w.send(ping)
	if resp, _ := w.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("after a pause: %d", resp.StatusCode)
	}

	for _, req := range []string{
		"GET /2018-06-01/ping HTTP/1.0\r\n\r\n",
		"GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
	} {
		w := e.dial()
		w.send(req + ping)
		resp, body := w.read("GET")
		if resp.StatusCode != 200 || body != "pong" || !resp.Close {
			t.Fatalf("%q: %d close=%v %q", req, resp.StatusCode, resp.Close, body)
		}
		w.closed()
	}
}

// TestWireRefusesMalformed: a request the server cannot read gets the
// status net/http gives it, and the connection is closed.
func TestWireRefusesMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"no version", "GET /2018-06-01/ping\r\n\r\n", 400},
		{"bad method", "G(T /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"HTTP/2", "GET /2018-06-01/ping HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"not HTTP", "GET /2018-06-01/ping FTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"control in target", "GET /2018-06-01/p\x01ng HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"no Host", "GET /2018-06-01/ping HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
		{"folded", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"space in name", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n", 400},
		{"no colon", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", 400},
		{"control in value", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"two lengths", "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"signed length", "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", 400},
		{"coding in HTTP/1.0", "POST /2018-06-01/runtime/init/error HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}", 400},
		{"gzip coding", "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"odd expectation", "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417},
		{"huge head", "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431},
	} {
		w := e.dial()
		w.send(tc.req)
		resp, body := w.read("GET")
		if resp.StatusCode != tc.status || !resp.Close {
			t.Errorf("%s: %d close=%v %q, want %d and close", tc.name, resp.StatusCode, resp.Close, body, tc.status)
		}
		w.closed()
	}
	// Blank lines ahead of a request are skipped; a line ending in LF
	// alone is read as one ending in CRLF.
	w := e.dial()
	w.send("\r\n\nGET /2018-06-01/ping HTTP/1.1\nHost: x\n\n")
	if resp, body := w.read("GET"); resp.StatusCode != 200 || body != "pong" {
		t.Fatalf("lenient framing: %d %q", resp.StatusCode, body)
	}
}

// TestWireBodies: chunked bodies with extensions and trailers, a chunked
// body that breaks off, and a body the handler does not read, which is
// drained to keep the connection when small and ends it when large.
func TestWireBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})

	// An init error, chunked with an extension and a trailer the server
	// ignores, then a ping on the same connection.
	w := e.dial()
	w.send("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
		"Lambda-Runtime-Function-Error-Type: Runtime.Chunky\r\n\r\n" +
		"5;ext=1\r\n{\"err\r\n6\r\norMess\r\nC\r\nage\":\"boom\"}\r\n0\r\nX-Trailer: t\r\n\r\n" + ping)
	if resp, body := w.read("POST"); resp.StatusCode != 202 {
		t.Fatalf("chunked init error: %d %q", resp.StatusCode, body)
	}
	if resp, _ := w.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("ping after a chunked body: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ie := asInitError(e.s.WaitInit(ctx))
	if ie == nil || ie.Type != "Runtime.Chunky" || string(ie.Payload) != `{"errorMessage":"boom"}` {
		t.Fatalf("init error: %+v", ie)
	}

	// A chunk size that is not hex: the body is truncated for the handler
	// and the connection cannot be read further.
	e2 := newEnv(t, Options{})
	w = e2.dial()
	w.send("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
	resp, body := w.read("POST")
	wantAPIError(t, "bad chunk", resp.StatusCode, []byte(body), 400, errTypeTruncated, "")
	if !resp.Close {
		t.Fatal("bad chunk: connection kept")
	}
	w.closed()

	// A body streamed a byte at a time passes: its framing is paid for.
	e4 := newEnv(t, Options{})
	w = e4.dial()
	go func() {
		_, _ = io.WriteString(w.c, "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
			strings.Repeat("1\r\nx\r\n", 20000)+"0\r\n\r\n")
	}()
	if resp, body := w.read("POST"); resp.StatusCode != 202 {
		t.Fatalf("one-byte chunks: %d %q", resp.StatusCode, body)
	}

	// A chunked body with a Content-Length beside it is read by its
	// chunks, and the connection is closed after the answer.
	e5 := newEnv(t, Options{})
	w = e5.dial()
	w.send("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
	if resp, body := w.read("POST"); resp.StatusCode != 202 || !resp.Close {
		t.Fatalf("chunked with a length: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	w.closed()

	// Framing far beyond the data (one-byte chunks with long extensions)
	// is refused before the body's own limits would be reached.
	e3 := newEnv(t, Options{})
	w = e3.dial()
	go func() {
		_, _ = io.WriteString(w.c, "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
			strings.Repeat("1;"+strings.Repeat("e", 4000)+"\r\nx\r\n", 20))
	}()
	resp, body = w.read("POST")
	wantAPIError(t, "chunk overhead", resp.StatusCode, []byte(body), 400, errTypeTruncated, "")

	// Unread bodies: 64 KiB is drained, 300 KiB ends the connection.
	for _, tc := range []struct {
		size int
		kept bool
	}{{64 << 10, true}, {300 << 10, false}} {
		w := e.dial()
		go func() {
			// Written concurrently: the server answers before it drains.
			_, _ = io.WriteString(w.c, "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(tc.size)+"\r\n\r\n"+
				strings.Repeat("x", tc.size)+ping)
		}()
		resp, _ := w.read("POST")
		if resp.StatusCode != 404 || resp.Close == tc.kept {
			t.Fatalf("unread %d bytes: %d close=%v", tc.size, resp.StatusCode, resp.Close)
		}
		if tc.kept {
			if resp, _ := w.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("ping after a drained body: %d", resp.StatusCode)
			}
		}
	}
}

// TestWireExpectContinue: the interim 100 Continue goes out when the
// handler reads the body, not before; a handler that does not read it
// gets no 100, and the connection is closed after its answer.
func TestWireExpectContinue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	w := e.dial()
	w.send("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n")
	if resp, _ := w.read("POST"); resp.StatusCode != 100 {
		t.Fatalf("interim: %d", resp.StatusCode)
	}
	w.send("{}")
	if resp, body := w.read("POST"); resp.StatusCode != 202 || resp.Close {
		t.Fatalf("init error after 100: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}

	// An empty expectation is none.
	e2 := newEnv(t, Options{})
	w = e2.dial()
	w.send("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nExpect:\r\nContent-Length: 2\r\n\r\n{}")
	if resp, body := w.read("POST"); resp.StatusCode != 202 {
		t.Fatalf("empty expectation: %d %q", resp.StatusCode, body)
	}

	w = e.dial()
	w.send("POST /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n")
	if resp, _ := w.read("POST"); resp.StatusCode != 404 || !resp.Close {
		t.Fatalf("unread body with expectation: %d close=%v", resp.StatusCode, resp.Close)
	}
	w.closed()
}

// TestWireHead: a HEAD request gets its headers without a body, so the
// next response on the connection is read correctly.
func TestWireHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	w := e.dial()
	w.send("HEAD /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n" + ping)
	if resp, body := w.read("HEAD"); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" || body != "" {
		t.Fatalf("HEAD: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp, body := w.read("GET"); resp.StatusCode != 200 || body != "pong" {
		t.Fatalf("GET after HEAD: %d %q", resp.StatusCode, body)
	}
}

// TestWireLargeEvent: an event larger than what is gathered before a
// write goes out whole, with its declared length, and the answer to it
// comes back whole.
func TestWireLargeEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	payload := `"` + strings.Repeat("e", 1<<20) + `"`
	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("big-1", payload))
	id, h, body := e.fakeNext()
	if id != "big-1" || string(body) != payload || h.Get("Content-Length") != strconv.Itoa(len(payload)) {
		t.Fatalf("/next: id %q, %d bytes, Content-Length %q", id, len(body), h.Get("Content-Length"))
	}
	answer := bytes.Repeat([]byte("a"), 3<<20)
	if st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/big-1/response", nil, string(answer)); st != 202 {
		t.Fatalf("/response: %d %s", st, b)
	}
	o := waitOutcome(t, ch)
	if o.err != nil || !bytes.Equal(o.res.Payload, answer) {
		t.Fatalf("result: %v, %d bytes", o.err, len(o.res.Payload))
	}
}

// TestWireNextEndsOnStop: a /next that waits on a connection where the
// client has since sent more (so the end of its stream is not next) still
// ends when the server stops.
func TestWireNextEndsOnStop(t *testing.T) {
	t.Parallel()
	s := New(Options{FunctionName: "fn"})
	addr, stop := serveLocal(t, s, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET "+pathNext+" HTTP/1.1\r\nHost: x\r\n\r\n")
	waitWaiter(t, s, nil)
	_, _ = io.WriteString(c, ping)
	time.Sleep(50 * time.Millisecond) // the watch has seen the ping
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// Closed with the ping unread: a reset is the end too.
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the connection was not closed: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rtWaiter != nil {
		t.Fatal("the /next is still waiting")
	}
}

// TestWireGoneClientClaimsNothing: a /next whose client has left never
// takes an invocation, whether it was queued before the request was read
// (the check before claiming) or comes while the request waits with bytes
// the client sent after it still unread (the watch).
func TestWireGoneClientClaimsNothing(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	e := newEnvOn(t, Options{}, gated(gate))

	ch := e.invokeAsync(ctxTimeout(t, 10*time.Second), newInv("queued-1", `{}`))
	e.s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) { return e.s.queued != nil, nil })
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The request and the close are both there before the server accepts
	// the connection: it reads a request whose client is gone.
	_, _ = io.WriteString(c, "GET "+pathNext+" HTTP/1.1\r\nHost: x\r\n\r\n")
	finDelivered(t, c.(*net.TCPConn))
	c.Close()
	close(gate)
	time.Sleep(50 * time.Millisecond)
	if id, _, _ := e.fakeNext(); id != "queued-1" {
		t.Fatalf("the live /next got %q", id)
	}
	e.mustDo("POST", "/2018-06-01/runtime/invocation/queued-1/response", nil, `{}`)
	if o := waitOutcome(t, ch); o.err != nil {
		t.Fatal(o.err)
	}

	c, err = net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET "+pathNext+" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
	waitWaiter(t, e.s, nil)
	_, _ = io.WriteString(c, "x") // unread: the handler does not read a /next body
	c.Close()
	if err := e.s.waitFor(ctxTimeout(t, 5*time.Second), func() (bool, error) { return e.s.rtWaiter == nil, nil }); err != nil {
		t.Fatal("the /next of a client gone behind its unread byte is still waiting")
	}
}

// TestWireCurlRuntime: a custom runtime of sh and curl, as AWS's tutorial
// writes one, echoes two 2 MiB events: curl asks for 100 Continue before
// such a body, and the second answer goes out chunked.
func TestWireCurlRuntime(t *testing.T) {
	t.Parallel()
	curl := testutil.RequiresBinary(t, "curl")
	e := newEnv(t, Options{})
	script := `set -eu
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
n=0
while :; do
	curl -sS -D "$DIR/hdr" -o "$DIR/event" "$api/invocation/next"
	id=$(grep -i '^lambda-runtime-aws-request-id:' "$DIR/hdr" | cut -d: -f2 | tr -d ' \r')
	n=$((n+1))
	if [ $n = 2 ]; then chunked="-H Transfer-Encoding:chunked"; else chunked=; fi
	curl -sS -o /dev/null -X POST $chunked --data-binary "@$DIR/event" "$api/invocation/$id/response"
done`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + e.addr, "DIR=" + t.TempDir(), "PATH=" + filepath.Dir(curl) + ":/usr/bin:/bin"}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // curl dies with sh
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	ctx := ctxTimeout(t, 20*time.Second)
	if err := e.s.WaitInit(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		payload := `"` + strings.Repeat(strconv.Itoa(i), 2<<20) + `"`
		res, err := e.s.Invoke(ctx, newInv("curl-"+strconv.Itoa(i), payload))
		if err != nil || res.FunctionError || string(res.Payload) != payload {
			t.Fatalf("invoke %d: %v %+v (runtime output %q)", i, err, res, out.String())
		}
		if err := e.s.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWireRefusedBodyIsAnswered: a body refused as too large is still
// being sent when the answer goes out; the client gets the 413, not a
// reset of the connection.
func TestWireRefusedBodyIsAnswered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{MaxResponseBytes: 64 << 10})
	body := strings.Repeat("x", 8<<20)
	for i := range 5 {
		st, _, b, err := e.do(ctxTimeout(t, 10*time.Second), "POST", "/2018-06-01/runtime/init/error", nil, body)
		if err != nil || st != http.StatusRequestEntityTooLarge {
			t.Fatalf("attempt %d: %d %q %v", i, st, b, err)
		}
	}
}

// finDelivered shuts c's write side and waits until the peer's kernel has
// taken the FIN (c is in FIN_WAIT2: the peer acknowledged it), so a server
// that has not accepted c yet finds the request and the end behind it both
// queued. On a loaded host loopback packets wait for a softirq, and a FIN
// still in flight lets the server read the request before it can know its
// client is gone.
func finDelivered(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var state uint8
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			var info *unix.TCPInfo
			if info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); ierr == nil {
				state = info.State
			}
		}); err != nil {
			t.Fatal(err)
		}
		if ierr != nil {
			t.Fatal(ierr)
		}
		if state == unix.BPF_TCP_FIN_WAIT2 || state == unix.BPF_TCP_TIME_WAIT || state == unix.BPF_TCP_CLOSE {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the FIN was not acknowledged within 5s (TCP state %d)", state)
		}
		time.Sleep(time.Millisecond)
	}
}
