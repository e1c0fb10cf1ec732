package runtimeapi

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/textproto"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/getrandom"
)

// The request and response types the handlers see. They are the wire
// server's own, not net/http's: the agent runs this package in every
// sandbox, and linking net/http (with crypto/tls, x509, compress and their
// initialisers) made each agent's start about 2 ms dearer on a host where
// a page's first touch is expensive (docs/performance.md, session 15).

// request is one Runtime API request as the wire server parsed it.
type request struct {
	Method string
	URL    *url.URL // the target's path and query
	Proto  string   // "HTTP/1.1" or "HTTP/1.0"
	Header header
	// Trailer holds a chunked body's trailer fields once the body has been
	// read to its end; nil until then, and for other bodies.
	Trailer header
	Body    io.Reader
	ctx     context.Context
}

// Context is the request's context: for the requests that wait (/next,
// event/next) it is cancelled when the client goes away (see clientCtx).
func (r *request) Context() context.Context {
	if r.ctx != nil {
		return r.ctx
	}
	return context.Background()
}

// responseWriter is what a handler answers through (wireResponse).
type responseWriter interface {
	Header() header
	// WriteHeader sends the status; a Write without it sends 200.
	WriteHeader(status int)
	Write(p []byte) (int, error)
}

// header holds header fields by canonical name ("Content-Type").
type header map[string][]string

func (h header) Get(name string) string {
	if vs := h[canonicalName(name)]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (h header) Set(name, value string) { h[canonicalName(name)] = []string{value} }

// canonicalName is the canonical form of a header name. The names this
// package uses are written canonically already, and cost nothing.
func canonicalName(name string) string {
	for i := 0; i < len(name); i++ {
		c := name[i]
		upper := i == 0 || name[i-1] == '-'
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(name)
		}
	}
	return name
}

// The HTTP methods and statuses the server uses.
const (
	methodGet  = "GET"
	methodHead = "HEAD"
	methodPost = "POST"
	methodPut  = "PUT"

	statusContinue                    = 100
	statusOK                          = 200
	statusAccepted                    = 202
	statusBadRequest                  = 400
	statusForbidden                   = 403
	statusNotFound                    = 404
	statusMethodNotAllowed            = 405
	statusRequestEntityTooLarge       = 413
	statusExpectationFailed           = 417
	statusRequestHeaderFieldsTooLarge = 431
	statusNotImplemented              = 501
	statusHTTPVersionNotSupported     = 505
)

// statusText is the reason phrase of a status the server sends.
func statusText(status int) string {
	switch status {
	case statusContinue:
		return "Continue"
	case statusOK:
		return "OK"
	case statusAccepted:
		return "Accepted"
	case statusBadRequest:
		return "Bad Request"
	case statusForbidden:
		return "Forbidden"
	case statusNotFound:
		return "Not Found"
	case statusMethodNotAllowed:
		return "Method Not Allowed"
	case statusRequestEntityTooLarge:
		return "Request Entity Too Large"
	case statusExpectationFailed:
		return "Expectation Failed"
	case statusRequestHeaderFieldsTooLarge:
		return "Request Header Fields Too Large"
	case statusNotImplemented:
		return "Not Implemented"
	case statusHTTPVersionNotSupported:
		return "HTTP Version Not Supported"
	}
	return ""
}

// errContentLength is a Write past the Content-Length a handler declared.
var errContentLength = errors.New("runtimeapi: wrote more than the declared Content-Length")

// detectContentType names a body a handler sent without a Content-Type:
// UTF-8 text (JSON included) without control characters is text/plain,
// anything else octet-stream. This is not net/http's sniffing (which also
// names HTML, images, archives, UTF-16 after a byte-order mark, and calls
// invalid UTF-8 text): only the ping route's "pong" reaches it, every other
// handler sets its type.
func detectContentType(body []byte) string {
	if n := len(body); n > 512 {
		// Cut at a rune's start, so no rune is cut in two.
		for n = 512; n > 512-utf8.UTFMax && !utf8.RuneStart(body[n]); n-- {
		}
		body = body[:n]
	}
	if !utf8.Valid(body) {
		return "application/octet-stream"
	}
	for _, c := range body {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
			return "application/octet-stream"
		}
	}
	return "text/plain; charset=utf-8"
}

// isHTTPVersion reports whether v is a well-formed "HTTP/D.D" (one digit
// each, as net/http's ParseHTTPVersion takes it): another version of HTTP,
// answered 505, rather than a malformed request line, answered 400.
func isHTTPVersion(v string) bool {
	digit := func(c byte) bool { return '0' <= c && c <= '9' }
	return len(v) == len("HTTP/D.D") && strings.HasPrefix(v, "HTTP/") && digit(v[5]) && v[6] == '.' && digit(v[7])
}

// newUUID is a random (version 4) UUID in its canonical form.
func newUUID() string {
	var b [16]byte
	getrandom.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	hex.Encode(out[9:13], b[4:6])
	hex.Encode(out[14:18], b[6:8])
	hex.Encode(out[19:23], b[8:10])
	hex.Encode(out[24:], b[10:])
	out[8], out[13], out[18], out[23] = '-', '-', '-', '-'
	return string(out[:])
}

// parseUUID accepts a UUID as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, in
// braces, after "urn:uuid:", or as 32 bare hex digits, and returns its
// canonical (lower-case, dashed) form.
func parseUUID(s string) (string, bool) {
	switch {
	case len(s) == 45 && strings.EqualFold(s[:9], "urn:uuid:"):
		s = s[9:]
	case len(s) == 38 && s[0] == '{' && s[37] == '}':
		s = s[1:37]
	}
	var digits string
	switch len(s) {
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return "", false
		}
		digits = s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	case 32:
		digits = s
	default:
		return "", false
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(digits)); err != nil {
		return "", false
	}
	return formatUUID(b), true
}
