package runtimeapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// wireTimeout bounds how long one input may take to be served.
const wireTimeout = 10 * time.Second

// wireMode is the state the server is in while it serves an input. In
// neither does a handler wait for long.
type wireMode int

const (
	// wireExited: the runtime has exited, so /next answers 403 at once,
	// registration is closed and no extension identifier is known.
	wireExited wireMode = iota
	// wireStopping: a fresh server whose Serve is stopping (stopped is
	// closed from the start). /next finds no work and waits on its
	// context, which starts the client watch (PeerGone): the client's
	// next bytes or its half-close end the wait, at once since Serve is
	// stopping, and /next answers 200 with no body.
	wireStopping
)

func (m wireMode) String() string {
	if m == wireExited {
		return "exited"
	}
	return "stopping"
}

// wireStatuses are the statuses the server can answer with: the handlers'
// (200, 202, 400, 403, 404, 405, 413) and the wire layer's (100 before a
// body is read; 400, 417, 431, 501 and 505 for a refused head).
var wireStatuses = []int{100, 200, 202, 400, 403, 404, 405, 413, 417, 431, 501, 505}

// wireSeed is one client's byte stream and what it is answered with.
type wireSeed struct {
	name  string
	input string
	// exited and stopping are the final statuses expected in each mode,
	// in order; continues the 100 Continue responses (in both modes,
	// unless stoppingContinues is set).
	exited, stopping  []int
	continues         int
	stoppingContinues int
}

const (
	seedPing     = "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n"
	seedInitPath = "/2018-06-01/runtime/init/error"
)

var wireSeeds = []wireSeed{
	{name: "ping", input: seedPing, exited: []int{200}, stopping: []int{200}},
	{name: "pipelined", input: seedPing + seedPing, exited: []int{200, 200}, stopping: []int{200, 200}},
	{name: "http1.0", input: "GET /2018-06-01/ping HTTP/1.0\r\n\r\n" + seedPing, exited: []int{200}, stopping: []int{200}},
	{
		name:     "init error",
		input:    "POST " + seedInitPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" + seedPing,
		exited:   []int{403, 200},
		stopping: []int{202, 200},
	},
	{
		name: "init error chunked",
		input: "POST " + seedInitPath + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n" +
			"2;ext=1\r\n{}\r\n0\r\nLambda-Runtime-Function-Error-Type: Runtime.X\r\n\r\n" + seedPing,
		exited:   []int{403, 200},
		stopping: []int{202, 200},
	},
	{
		name:  "bad chunk size",
		input: "POST " + seedInitPath + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n" + seedPing,
		// Unread, the body cannot be drained; read, it is truncated.
		exited:   []int{403},
		stopping: []int{400},
	},
	{
		name:              "expect continue",
		input:             "POST " + seedInitPath + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}" + seedPing,
		exited:            []int{403}, // not read: the client may not send it
		stopping:          []int{202, 200},
		stoppingContinues: 1,
	},
	{name: "obs-fold", input: "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + seedPing, exited: []int{400}, stopping: []int{400}},
	{
		name:     "long header",
		input:    "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("a", 70<<10) + "\r\n\r\n" + seedPing,
		exited:   []int{431},
		stopping: []int{431},
	},
	{name: "head", input: "HEAD /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n" + seedPing, exited: []int{405, 200}, stopping: []int{405, 200}},
	{
		name:     "next",
		input:    "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n" + seedPing,
		exited:   []int{403, 200},
		stopping: []int{200, 200},
	},
	{
		name: "register",
		input: "POST /2020-01-01/extension/register HTTP/1.1\r\nHost: x\r\nLambda-Extension-Name: ext\r\nContent-Length: 21\r\n\r\n" +
			`{"events":["INVOKE"]}` + seedPing,
		exited:   []int{403, 200},
		stopping: []int{200, 200},
	},
	{
		name:     "event next",
		input:    "GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: x\r\nLambda-Extension-Identifier: 6f1c2a4e-3b5d-4c7e-9f00-112233445566\r\n\r\n" + seedPing,
		exited:   []int{403, 200},
		stopping: []int{403, 200},
	},
	{
		name:     "connection close",
		input:    "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + seedPing,
		exited:   []int{200},
		stopping: []int{200},
	},
}

// FuzzWire feeds arbitrary bytes, as one client's byte stream, to
// serveConn over a connected socket pair (so the connection is read and
// written raw, and waiting handlers peek at it), once in each wireMode.
// What the client reads back must be a sequence of well-formed responses
// with statuses the server can give, each body ending where its framing
// says, nothing after a "Connection: close", no 100 Continue the client did
// not ask for, and no more final responses than request lines the input
// could hold; the server must not stall on any input.
func FuzzWire(f *testing.F) {
	for _, s := range wireSeeds {
		f.Add([]byte(s.input))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		checkWire(t, input, wireExited)
		checkWire(t, input, wireStopping)
	})
}

// TestWireSeedsParse runs FuzzWire's check over its seeds and compares
// the statuses with what each seed should get.
func TestWireSeedsParse(t *testing.T) {
	for _, s := range wireSeeds {
		t.Run(s.name, func(t *testing.T) {
			for _, m := range []wireMode{wireExited, wireStopping} {
				got := checkWire(t, []byte(s.input), m)
				want, continues := s.exited, s.continues
				if m == wireStopping {
					want = s.stopping
					if s.stoppingContinues != 0 {
						continues = s.stoppingContinues
					}
				}
				if !slices.Equal(got.statuses, want) || got.continues != continues {
					t.Errorf("%s: statuses %v and %d 100 Continue, want %v and %d", m, got.statuses, got.continues, want, continues)
				}
			}
		})
	}
}

// wireResult is what a client made of the server's output.
type wireResult struct {
	statuses  []int // of the final responses, in order
	continues int   // interim 100 Continue responses
}

// checkWire serves input in mode m and checks the output.
func checkWire(t testing.TB, input []byte, m wireMode) wireResult {
	t.Helper()
	out := serveWire(t, input, m)

	// All of out is buffered at once, so what is left can be peeked at.
	br := bufio.NewReaderSize(bytes.NewReader(out), len(out)+16)
	heads := bytes.Count(input, []byte("HEAD"))
	expects := bytes.Count(bytes.ToLower(input), []byte("100-continue"))
	var res wireResult
	closed := false
	for {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			break
		}
		if closed {
			wireFatalf(t, m, input, out, "bytes after a response with Connection: close")
		}
		rest, _ := br.Peek(br.Buffered())
		// A HEAD request's response has no Content-Length; every other
		// response has one. Which request this response answers is told
		// by that, so read its head alone first.
		head, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(rest)), &http.Request{Method: http.MethodHead})
		if err != nil {
			wireFatalf(t, m, input, out, "response %d: %v", len(res.statuses)+res.continues+1, err)
		}
		method := http.MethodGet
		if head.StatusCode >= 200 && head.Header.Get("Content-Length") == "" {
			if heads == 0 {
				wireFatalf(t, m, input, out, "response %d (%d) has no Content-Length, and no HEAD request was sent", len(res.statuses)+1, head.StatusCode)
			}
			heads--
			method = http.MethodHead
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			wireFatalf(t, m, input, out, "response %d: %v", len(res.statuses)+res.continues+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			wireFatalf(t, m, input, out, "response %d (%d): body: %v", len(res.statuses)+res.continues+1, resp.StatusCode, err)
		}
		if !slices.Contains(wireStatuses, resp.StatusCode) {
			wireFatalf(t, m, input, out, "response %d: status %d", len(res.statuses)+res.continues+1, resp.StatusCode)
		}
		if resp.StatusCode == http.StatusContinue {
			res.continues++
			if res.continues > expects {
				wireFatalf(t, m, input, out, "%d 100 Continue for %d requests that could expect one", res.continues, expects)
			}
			continue
		}
		res.statuses = append(res.statuses, resp.StatusCode)
		if method == http.MethodGet && resp.Header.Get("Content-Type") == "application/json" && !json.Valid(body) {
			wireFatalf(t, m, input, out, "response %d (%d): JSON body %q is not valid", len(res.statuses), resp.StatusCode, body)
		}
		closed = resp.Close
	}
	if lines := bytes.Count(input, []byte("\n")) + 1; len(res.statuses) > lines {
		wireFatalf(t, m, input, out, "%d final responses for at most %d request lines", len(res.statuses), lines)
	}
	return res
}

func wireFatalf(t testing.TB, m wireMode, input, out []byte, format string, args ...any) {
	t.Helper()
	const show = 2000
	in := input
	if len(in) > show {
		in = in[:show]
	}
	o := out
	if len(o) > show {
		o = o[:show]
	}
	args = append(args, m, len(input), in, len(out), o)
	t.Fatalf(format+"\nmode %s; input (%d bytes): %q\noutput (%d bytes): %q", args...)
}

// serveWire runs serveConn on one end of a socket pair and returns all the
// client end reads after sending input and half-closing.
func serveWire(t testing.TB, input []byte, m wireMode) []byte {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	server, err := unixFileConn(fds[0], "wire-server")
	if err != nil {
		_ = syscall.Close(fds[1])
		t.Fatal(err)
	}
	client, err := unixFileConn(fds[1], "wire-client")
	if err != nil {
		_ = server.Close()
		t.Fatal(err)
	}
	defer client.Close()

	s := New(Options{FunctionName: "fn", MaxResponseBytes: 1 << 16})
	stopped := make(chan struct{})
	switch m {
	case wireExited:
		s.RuntimeExited("fuzz")
	case wireStopping:
		close(stopped)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.serveConn(server, stopped)
		// As Serve does: the connection ends with serveConn.
		_ = server.Close()
	}()

	_ = client.SetDeadline(time.Now().Add(wireTimeout))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// The server stops reading early when it refuses a request or
		// cannot drain a body; the write then fails, as it may.
		_, _ = client.Write(input)
		_ = client.CloseWrite()
	}()
	// Read while writing: the server answers pipelined requests as it
	// reads them and would block on a full socket otherwise.
	out, err := io.ReadAll(client)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		// ECONNRESET, after all the server wrote: it closed with some of
		// the input unread.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			wireFatalf(t, m, input, out, "the server's output did not end within %v", wireTimeout)
		}
		wireFatalf(t, m, input, out, "read: %v", err)
	}
	<-wrote
	if m != wireStopping {
		close(stopped)
	}
	select {
	case <-served:
	case <-time.After(wireTimeout):
		wireFatalf(t, m, input, out, "serveConn did not return within %v", wireTimeout)
	}
	return out
}

// unixFileConn makes a *net.UnixConn of a socket descriptor, which it takes.
func unixFileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		_ = c.Close()
		return nil, errors.New("socketpair end is not a *net.UnixConn")
	}
	return uc, nil
}
