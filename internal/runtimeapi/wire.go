package runtimeapi

// The HTTP/1.1 server the API is served with. A runtime sends a handful of
// small requests per invocation on one kept-alive connection, and net/http's
// server spent more on each of them (a context per request, a background
// read after every request body, the MIME header parser, the Date header,
// buffered writer pools) than on the reads and writes themselves
// (docs/performance.md, "Where it stands (session 12)"). This server does
// only what the Runtime API's clients need, with the same handlers
// (Server.route), and refuses malformed requests with the statuses net/http
// uses:
//
//   - HTTP/1.1 and HTTP/1.0 requests, kept alive unless the client says
//     "Connection: close" or speaks HTTP/1.0; requests are answered in order.
//     Response header values are kept to one line (CR and LF become spaces).
//   - Bodies framed by Content-Length or chunked transfer coding, trailers
//     included (aws-lambda-go declares error trailers on every response);
//     "Expect: 100-continue" is answered when the handler first reads.
//   - A request head of at most maxHeadBytes (431 beyond); malformed heads
//     get 400 and the connection is closed, as is one whose body was not read
//     to its end within maxDrainBytes.
//   - A handler's request context is cancelled when its client goes away.
//     Only the handlers that wait (/next, event/next) ask for it, and the
//     watch starts when one first waits (clientCtx).
//
// There are no read or write timeouts (net/http's server had a 10 s limit
// on reading a head): /next waits for as long as the environment has no
// work, a thawed environment must find its runtime's kept-alive connection
// open, and a stalled client (only the function can be one) stalls only its
// own connection, whose goroutine ends when Serve stops. A handler that
// panics ends its connection, and Options.OnPanic hears of it: the
// handlers hold the environment's state and its lock, and a half-run one
// could leave it wedged, so the agent ends the environment, which nubo
// replaces. (Before nubo serve served namespace sandboxes' Runtime APIs
// itself, the panic ended the agent; it must not end nubo serve.)

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nubo-dev/nubo/internal/rawio"
)

const (
	// maxHeadBytes bounds a request's line and headers, and a chunked
	// body's trailers (net/http's MaxHeaderBytes as the agent set it).
	maxHeadBytes = 64 << 10
	// maxDrainBytes is how much of a body the handler left unread is read
	// and dropped to keep the connection (net/http's limit).
	maxDrainBytes = 256 << 10
	// directWrite is the body size from which a response whose length is
	// declared is written straight to the connection, not copied.
	directWrite = 32 << 10
	wireBufSize = 4 << 10
)

// Serve serves the API on l until ctx is done or l fails, then closes l
// and every connection (handlers waiting for work see their clients gone)
// and returns when all of them have ended.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   = make(map[net.Conn]struct{})
		stopped = make(chan struct{})
	)
	closeAll := sync.OnceFunc(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		close(stopped)
		for c := range conns {
			_ = c.Close()
		}
	})
	defer wg.Wait()
	defer closeAll()
	defer context.AfterFunc(ctx, closeAll)()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !acceptRetryable(err) {
				return err
			}
			// Out of descriptors or an aborted handshake: try again, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Debug("runtime api accept", "error", err, "retryIn", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		mu.Lock()
		select {
		case <-stopped:
			mu.Unlock()
			_ = c.Close()
			return nil
		default:
		}
		if s.opts.MaxConns > 0 && len(conns) >= s.opts.MaxConns {
			mu.Unlock()
			s.log.Warn("runtime api: too many connections; one refused", "max", s.opts.MaxConns)
			_ = c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
				// A client's bytes must not bring down the process serving
				// them (nubo serve serves every sandbox's): a panic ends
				// only its connection, and OnPanic hears of it.
				if r := recover(); r != nil {
					s.log.Error("runtime api: panic serving a connection", "panic", r, "stack", string(debug.Stack()))
					if s.opts.OnPanic != nil {
						s.opts.OnPanic(r)
					}
				}
			}()
			s.serveConn(c, stopped)
		})
	}
}

func acceptRetryable(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// peerWatcher is a connection that can wait for its peer to go away
// without reading (*rawio.Conn).
type peerWatcher interface {
	PeerGone(wait bool) (bool, error)
}

// wireConn is one client connection.
type wireConn struct {
	s       *Server
	c       net.Conn
	watch   peerWatcher     // nil: a client going away is not noticed
	stopped <-chan struct{} // closed when Serve stops
	br      *bufio.Reader
	line    []byte // a head line longer than br's buffer
	head    int    // bytes of the current head (or trailers) read so far
	out     []byte // the response being written
	body    []byte // a response body being gathered
	hdr     header // the request's, reused
	rhdr    header // the response's, reused
}

func (s *Server) serveConn(c net.Conn, stopped <-chan struct{}) {
	if _, ok := c.(*rawio.Conn); !ok {
		c = rawio.Wrap(c)
	}
	wc := &wireConn{s: s, c: c, stopped: stopped, hdr: make(header, 8), rhdr: make(header, 8)}
	if w, ok := c.(peerWatcher); ok {
		wc.watch = w
	}
	wc.br = bufio.NewReaderSize(c, wireBufSize)
	wc.out = make([]byte, 0, wireBufSize)
	for {
		switch wc.serveOne() {
		case connKeep:
			continue
		case connLinger:
			wc.linger()
		}
		return
	}
}

// connNext is what serveOne leaves the connection to.
type connNext int

const (
	connKeep   connNext = iota // read the next request
	connLinger                 // close it after a last answer; input may be left
	connClose                  // close it: the client left or the connection failed
)

// linger closes the connection's write side and reads what the client
// still sends until it closes too, for at most lingerTime, so that the
// answer just written is not lost to a reset: closing a TCP socket with
// input unread resets it, and a client still writing a body the server
// refused (413 on an oversized response) would see the reset, not the
// answer. net/http waits the same time after its FIN.
func (wc *wireConn) linger() {
	if cw, ok := wc.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = wc.c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, wc.c)
}

const lingerTime = 500 * time.Millisecond

// serveOne reads one request, answers it, and says what comes next.
func (wc *wireConn) serveOne() connNext {
	clear(wc.hdr)
	req, keep, err := wc.readRequest()
	if err != nil {
		var we *wireError
		if errors.As(err, &we) {
			wc.writeFailure(we)
			return connLinger
		}
		return connClose
	}
	w := &wireResponse{wc: wc, header: wc.rhdr, body: wc.body[:0], close: !keep, head: req.Method == methodHead}
	clear(w.header)
	var cc *clientCtx
	if req.Method == methodGet && (req.URL.Path == pathNext || req.URL.Path == pathExtNext) {
		cc = &clientCtx{wc: wc, done: make(chan struct{})}
		req.ctx = cc
	}
	wc.s.route(w, req)
	if cc != nil {
		cc.stop()
	}
	b := req.Body.(wireBody)
	if !b.atEOF() {
		// Keep the connection only if what is left is soon read, and
		// the client was not still waiting for a 100 Continue.
		if b.expecting() || b.left() > maxDrainBytes {
			w.close = true
		} else if n, err := io.CopyN(io.Discard, b, maxDrainBytes+1); n > maxDrainBytes || (err != nil && !errors.Is(err, io.EOF)) {
			w.close = true
		}
	}
	err = w.finish()
	if cap(w.body) <= 4*wireBufSize {
		wc.body = w.body[:0]
	}
	switch {
	case err != nil:
		return connClose
	case w.close || b.broken():
		return connLinger
	}
	return connKeep
}

const (
	pathNext    = "/2018-06-01/runtime/invocation/next"
	pathExtNext = "/2020-01-01/extension/event/next"
)

// wireError is a request the server refuses before any handler sees it.
type wireError struct {
	status int
	msg    string
}

func (e *wireError) Error() string { return strconv.Itoa(e.status) + " " + e.msg }

func badRequest(msg string) error { return &wireError{statusBadRequest, msg} }

// writeFailure answers a refused request and ends the connection, as
// net/http does: a plain-text status line for a body.
func (wc *wireConn) writeFailure(e *wireError) {
	text := strconv.Itoa(e.status) + " " + statusText(e.status)
	if e.msg != "" {
		text += ": " + e.msg
	}
	out := append(wc.out[:0], "HTTP/1.1 "...)
	out = append(out, strconv.Itoa(e.status)...)
	out = append(out, ' ')
	out = append(out, statusText(e.status)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(text)), 10)
	out = append(out, "\r\n\r\n"...)
	out = append(out, text...)
	_, _ = wc.c.Write(out)
}

// readLine returns the next line of a head without its line ending,
// counting it against maxHeadBytes. The slice is valid until the next read.
func (wc *wireConn) readLine() ([]byte, error) {
	wc.line = wc.line[:0]
	for {
		frag, err := wc.br.ReadSlice('\n')
		wc.head += len(frag)
		if wc.head > maxHeadBytes {
			return nil, &wireError{statusRequestHeaderFieldsTooLarge, ""}
		}
		switch {
		case err == nil:
			line := frag
			if len(wc.line) > 0 {
				wc.line = append(wc.line, frag...)
				line = wc.line
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			wc.line = append(wc.line, frag...)
		case errors.Is(err, io.EOF) && (len(frag) > 0 || len(wc.line) > 0):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// readRequest reads a request's head and prepares its body. keep reports
// whether the connection may serve another request after it.
func (wc *wireConn) readRequest() (req *request, keep bool, err error) {
	wc.head = 0
	var line []byte
	for {
		// Empty lines ahead of a request line are skipped (RFC 9112 2.2).
		if line, err = wc.readLine(); err != nil {
			return nil, false, err
		}
		if len(line) > 0 {
			break
		}
	}
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !isToken(method) || len(target) == 0 {
		return nil, false, badRequest("malformed request line")
	}
	req = &request{Method: string(method), Header: wc.hdr}
	switch string(proto) {
	case "HTTP/1.1":
		req.Proto = "HTTP/1.1"
	case "HTTP/1.0":
		req.Proto = "HTTP/1.0"
	default:
		if isHTTPVersion(string(proto)) {
			return nil, false, &wireError{statusHTTPVersionNotSupported, ""}
		}
		return nil, false, badRequest("malformed HTTP version")
	}
	if req.URL, err = parseTarget(string(target)); err != nil {
		return nil, false, badRequest("malformed request target")
	}

	for {
		line, err := wc.readLine()
		if err != nil {
			return nil, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitField(line)
		if err != nil {
			return nil, false, err
		}
		wc.hdr[name] = append(wc.hdr[name], value)
	}

	if h, ok := wc.hdr["Host"]; req.Proto == "HTTP/1.1" && (!ok || len(h) != 1) {
		return nil, false, badRequest("missing or repeated Host header")
	}
	keep = req.Proto == "HTTP/1.1" && !hasToken(wc.hdr["Connection"], "close")

	// Only 100-continue is an expectation this server meets; empty values
	// are none, as net/http reads them.
	expect := false
	for _, v := range wc.hdr["Expect"] {
		for e := range strings.SplitSeq(v, ",") {
			switch e = strings.TrimSpace(e); {
			case e == "":
			case strings.EqualFold(e, "100-continue"):
				// An HTTP/1.0 client does not wait for the interim response.
				expect = req.Proto == "HTTP/1.1"
			default:
				return nil, false, &wireError{statusExpectationFailed, ""}
			}
		}
	}

	if te, ok := wc.hdr["Transfer-Encoding"]; ok {
		if req.Proto == "HTTP/1.0" {
			// HTTP/1.0 has no transfer codings: the framing is faulty
			// (RFC 9112 6.1).
			return nil, false, badRequest("transfer coding in HTTP/1.0")
		}
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return nil, false, &wireError{statusNotImplemented, "unsupported transfer encoding"}
		}
		// The coding frames the body; a Content-Length beside it is
		// dropped, and the connection closed after the answer (RFC 9112
		// 6.1, 6.3).
		if _, both := wc.hdr["Content-Length"]; both {
			delete(wc.hdr, "Content-Length")
			keep = false
		}
		req.Body = &chunkedBody{wc: wc, req: req, expect: expect}
		return req, keep, nil
	}
	n, err := contentLength(wc.hdr["Content-Length"])
	if err != nil {
		return nil, false, err
	}
	if n == 0 {
		req.Body = emptyBody{}
		return req, keep, nil
	}
	req.Body = &lengthBody{wc: wc, remaining: n, expect: expect}
	return req, keep, nil
}

// parseTarget reads a request target: the origin form ("/path?query")
// directly, anything else through net/url as net/http does.
func parseTarget(t string) (*url.URL, error) {
	if t[0] == '/' && !strings.ContainsAny(t, "%#") {
		path, query, _ := strings.Cut(t, "?")
		for i := 0; i < len(t); i++ {
			if t[i] <= ' ' || t[i] == 0x7f {
				return nil, errors.New("control character in target")
			}
		}
		return &url.URL{Path: path, RawQuery: query}, nil
	}
	return url.ParseRequestURI(t)
}

// splitField parses one "Name: value" header line into the canonical
// name and the value without surrounding blanks.
func splitField(line []byte) (string, string, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", badRequest("obsolete line folding")
	}
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok || !isToken(name) {
		return "", "", badRequest("malformed header line")
	}
	value = bytes.Trim(value, " \t")
	if !headerSafe(value) {
		return "", "", badRequest("control character in header value")
	}
	return headerName(name), string(value), nil
}

// headerName is the canonical form of name; the names runtimes send on
// every request come without an allocation.
func headerName(name []byte) string {
	switch string(name) {
	case "Host", "host":
		return "Host"
	case "User-Agent", "user-agent":
		return "User-Agent"
	case "Content-Type", "content-type":
		return "Content-Type"
	case "Content-Length", "content-length":
		return "Content-Length"
	case "Transfer-Encoding", "transfer-encoding":
		return "Transfer-Encoding"
	case "Accept-Encoding", "accept-encoding":
		return "Accept-Encoding"
	case "Accept", "accept":
		return "Accept"
	case "Connection", "connection":
		return "Connection"
	case "Trailer", "trailer":
		return "Trailer"
	case hdrErrorType, "lambda-runtime-function-error-type":
		return hdrErrorType
	case hdrErrorBody, "lambda-runtime-function-error-body":
		return hdrErrorBody
	case hdrResponseMode, "lambda-runtime-function-response-mode":
		return hdrResponseMode
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// hasToken reports whether any comma-separated element of values is tok.
// (x/net's httpguts has one, but would bring IDNA tables into the agent.)
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for e := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(e), tok) {
				return true
			}
		}
	}
	return false
}

// contentLength reads the Content-Length header: absent is 0, repeats must
// agree, anything but digits is refused.
func contentLength(values []string) (int64, error) {
	if len(values) == 0 {
		return 0, nil
	}
	v := strings.TrimSpace(values[0])
	for _, o := range values[1:] {
		if strings.TrimSpace(o) != v {
			return 0, badRequest("conflicting Content-Length headers")
		}
	}
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, badRequest("malformed Content-Length")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest("malformed Content-Length")
	}
	return n, nil
}

// wireBody is a request body as the connection loop sees it.
type wireBody interface {
	io.ReadCloser
	atEOF() bool     // read to its end
	expecting() bool // the client still waits for 100 Continue
	broken() bool    // its framing failed: the connection is unusable
	left() int64     // bytes known to be unread (0 when not known)
}

type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }
func (emptyBody) atEOF() bool              { return true }
func (emptyBody) expecting() bool          { return false }
func (emptyBody) broken() bool             { return false }
func (emptyBody) left() int64              { return 0 }

// continueOnce sends the interim 100 Continue a client that sent
// "Expect: 100-continue" waits for, before its body is first read.
func (wc *wireConn) continueOnce(expect *bool) error {
	if !*expect {
		return nil
	}
	*expect = false
	_, err := wc.c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	return err
}

// lengthBody is a body of Content-Length bytes.
type lengthBody struct {
	wc        *wireConn
	remaining int64
	expect    bool
	err       error
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remaining == 0 {
		return 0, io.EOF
	}
	if err := b.wc.continueOnce(&b.expect); err != nil {
		b.err = err
		return 0, err
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.wc.br.Read(p)
	b.remaining -= int64(n)
	if err != nil && b.remaining > 0 {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return n, err
	}
	return n, nil
}

func (b *lengthBody) Close() error    { return nil }
func (b *lengthBody) atEOF() bool     { return b.remaining == 0 }
func (b *lengthBody) expecting() bool { return b.expect }
func (b *lengthBody) broken() bool    { return b.err != nil }
func (b *lengthBody) left() int64     { return b.remaining }

// chunkedBody is a body in the chunked transfer coding; its trailers go to
// the request's Trailer when its end is read.
type chunkedBody struct {
	wc        *wireConn
	req       *request
	expect    bool
	remaining uint64 // of the current chunk
	inData    bool   // a chunk's data has begun (its CRLF is still due)
	excess    int64  // framing not yet paid for by data (see nextChunk)
	eof       bool
	err       error
}

var errChunked = errors.New("malformed chunked encoding")

const (
	// maxChunkLine bounds a chunk's size line with its extensions.
	maxChunkLine = 4 << 10
	// maxChunkExcess bounds the framing a body may carry beyond what its
	// data pays for (nextChunk).
	maxChunkExcess = 16 << 10
)

func (b *chunkedBody) Read(p []byte) (int, error) {
	switch {
	case b.err != nil:
		return 0, b.err
	case b.eof:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if err := b.wc.continueOnce(&b.expect); err != nil {
		return 0, b.fail(err)
	}
	if b.remaining == 0 {
		if err := b.nextChunk(); err != nil {
			return 0, b.fail(err)
		}
		if b.eof {
			return 0, io.EOF
		}
	}
	if uint64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.wc.br.Read(p)
	b.remaining -= uint64(n)
	if err != nil && b.remaining > 0 {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, b.fail(err)
	}
	return n, nil
}

// nextChunk ends the current chunk and reads the next one's size line, or
// the last chunk's trailers.
func (b *chunkedBody) nextChunk() error {
	br := b.wc.br
	if b.inData {
		crlf, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if string(crlf) != "\r\n" && string(crlf) != "\n" {
			return errChunked
		}
	}
	b.wc.head = maxHeadBytes - maxChunkLine
	line, err := b.wc.readLine()
	if err != nil {
		return err
	}
	framing := int64(len(line)) + 2              // the size line and the CRLF after the data
	if i := bytes.IndexByte(line, ';'); i >= 0 { // chunk extensions: ignored
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 16 {
		return errChunked
	}
	size, err := strconv.ParseUint(string(line), 16, 64)
	if err != nil {
		return errChunked
	}
	// Framing is paid for by data: each chunk may carry 16 bytes and
	// twice its size of it, so a stream of tiny chunks (a response
	// streamed a token at a time) passes, while long extensions on tiny
	// chunks, which would make the body's limits bound only the data, do
	// not. net/http counts the same way.
	b.excess = max(b.excess+framing-16-2*int64(min(size, 1<<40)), 0)
	if b.excess > maxChunkExcess {
		return errChunked
	}
	if size > 0 {
		b.remaining, b.inData = size, true
		return nil
	}
	// The last chunk: trailers up to an empty line.
	b.wc.head = 0
	for {
		line, err := b.wc.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitField(line)
		if err != nil {
			return errChunked
		}
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			return errChunked
		}
		if b.req.Trailer == nil {
			b.req.Trailer = make(header)
		}
		b.req.Trailer[name] = append(b.req.Trailer[name], value)
	}
	b.eof = true
	return nil
}

func (b *chunkedBody) fail(err error) error {
	var we *wireError
	if errors.Is(err, io.EOF) || errors.As(err, &we) {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return err
}

func (b *chunkedBody) Close() error    { return nil }
func (b *chunkedBody) atEOF() bool     { return b.eof }
func (b *chunkedBody) expecting() bool { return b.expect }
func (b *chunkedBody) broken() bool    { return b.err != nil }
func (b *chunkedBody) left() int64     { return int64(min(b.remaining, 1<<62)) }

// wireResponse is the responseWriter handlers write to. Small bodies
// are gathered and go out with the head in one write.
type wireResponse struct {
	wc          *wireConn
	header      header
	status      int
	wroteHeader bool
	headSent    bool
	declared    int64 // Content-Length the handler set, or -1
	written     int64
	body        []byte
	close       bool
	head        bool // a HEAD request: no body goes out
	err         error
}

func (w *wireResponse) Header() header { return w.header }

func (w *wireResponse) WriteHeader(status int) {
	if w.wroteHeader || status < 200 || status > 999 {
		return
	}
	w.wroteHeader, w.status = true, status
	w.declared = -1
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.declared = n
		}
	}
}

func (w *wireResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(statusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.head {
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, errContentLength
	}
	w.written += int64(len(p))
	if w.declared < 0 || len(w.body)+len(p) < directWrite {
		w.body = append(w.body, p...)
		return len(p), nil
	}
	// A large body of declared length: the head and what is gathered go
	// first, then p without a copy.
	if err := w.flush(); err != nil {
		return 0, err
	}
	if _, err := w.wc.c.Write(p); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

// flush writes the head, if not yet sent, and the gathered body.
func (w *wireResponse) flush() error {
	out := w.wc.out[:0]
	if !w.headSent {
		out = w.appendHead(out)
		w.headSent = true
	}
	out = append(out, w.body...)
	w.body = w.body[:0]
	if cap(out) <= 4*wireBufSize {
		w.wc.out = out[:0]
	}
	if len(out) == 0 {
		return nil
	}
	if _, err := w.wc.c.Write(out); err != nil {
		w.err = err
		return err
	}
	return nil
}

// finish completes the response after the handler returned.
func (w *wireResponse) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(statusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.declared >= 0 && w.written != w.declared && !w.head {
		// The framing promised is not what was written: the client
		// cannot tell where this response ends.
		w.close = true
	}
	if err := w.flush(); err != nil {
		return err
	}
	if w.declared >= 0 && w.written < w.declared && !w.head {
		return io.ErrShortWrite
	}
	return nil
}

func (w *wireResponse) appendHead(out []byte) []byte {
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(w.status), 10)
	out = append(out, ' ')
	out = append(out, statusText(w.status)...)
	out = append(out, "\r\n"...)
	if w.header.Get("Content-Type") == "" && len(w.body) > 0 {
		w.header.Set("Content-Type", detectContentType(w.body))
	}
	if w.declared < 0 {
		w.header["Content-Length"] = []string{strconv.Itoa(len(w.body))}
		if w.head {
			delete(w.header, "Content-Length")
		}
	}
	delete(w.header, "Connection")
	delete(w.header, "Transfer-Encoding")
	for k, vs := range w.header {
		for _, v := range vs {
			out = append(out, k...)
			out = append(out, ": "...)
			start := len(out)
			out = append(out, v...)
			for i := start; i < len(out); i++ {
				if out[i] == '\r' || out[i] == '\n' {
					out[i] = ' '
				}
			}
			out = append(out, "\r\n"...)
		}
	}
	if w.close {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, "\r\n"...)
}

// clientCtx is the context of a request that may wait: it is cancelled when
// the client goes away (its connection ends) or the server stops. Err peeks
// at the connection, so a request whose client is already gone never claims
// work; the watch that closes Done starts the first time Done is called, so
// a request answered at once never pays for it.
type clientCtx struct {
	wc        *wireConn
	once      sync.Once
	done      chan struct{}
	closeDone sync.Once
	quit      chan struct{} // closed by stop
	watched   chan struct{} // closed when the watch has ended
}

func (c *clientCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *clientCtx) Value(any) any               { return nil }

func (c *clientCtx) cancel() { c.closeDone.Do(func() { close(c.done) }) }

func (c *clientCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
	}
	if w := c.wc.watch; w != nil {
		if gone, err := w.PeerGone(false); gone || err != nil {
			c.cancel()
			return context.Canceled
		}
	}
	return nil
}

func (c *clientCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.quit, c.watched = make(chan struct{}), make(chan struct{})
		go c.watch()
	})
	return c.done
}

func (c *clientCtx) watch() {
	defer close(c.watched)
	if w := c.wc.watch; w != nil {
		// Ends when the client leaves (also behind bytes it sent early),
		// when Serve closes the connection, or at stop's deadline.
		if _, err := w.PeerGone(true); !errors.Is(err, os.ErrDeadlineExceeded) {
			c.cancel()
		}
		return
	}
	// A connection that cannot be watched: only Serve's stop is noticed,
	// and a client gone before it still claims work.
	select {
	case <-c.wc.stopped:
		c.cancel()
	case <-c.quit:
	}
}

// stop ends the watch, if one started, before the connection is read
// again, and cancels the context.
func (c *clientCtx) stop() {
	defer c.cancel()     // the request is over, as net/http cancels its context
	c.once.Do(func() {}) // no watch may start from here on
	if c.watched == nil {
		return
	}
	close(c.quit)
	if c.wc.watch == nil {
		<-c.watched
		return
	}
	// A deadline in the past ends a wait in PeerGone at once.
	_ = c.wc.c.SetReadDeadline(time.Unix(1, 0))
	<-c.watched
	_ = c.wc.c.SetReadDeadline(time.Time{})
}
