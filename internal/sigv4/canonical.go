package sigv4

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// scratch holds the per-request buffers of Verify, pooled so that verifying
// a typical request allocates almost nothing.
type scratch struct {
	enc   []byte  // query keys and values, decoded then AWS-encoded
	pairs []qpair // one per query parameter, indexing enc
	canon []byte  // the canonical request
	sts   []byte  // the string to sign
}

// qpair is one query parameter: its AWS-encoded key and value as ranges of
// scratch.enc, and the raw value as received.
type qpair struct {
	k0, k1, v0, v1 int
	raw            string
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// putScratch returns s to the pool unless a huge request inflated it.
func putScratch(s *scratch) {
	const maxKeep = 64 << 10
	if cap(s.enc) > maxKeep || cap(s.canon) > maxKeep || cap(s.pairs) > 1024 {
		return
	}
	s.enc, s.pairs, s.canon, s.sts = s.enc[:0], s.pairs[:0], s.canon[:0], s.sts[:0]
	scratchPool.Put(s)
}

func (s *scratch) key(p qpair) []byte { return s.enc[p.k0:p.k1] }

// value returns the decoded value of the parameter named name and how many
// times it occurs.
func (s *scratch) value(name string) (string, int) {
	var v string
	n := 0
	for _, p := range s.pairs {
		if string(s.key(p)) == name {
			n++
			// Values of the auth parameters are few and short; decoding
			// allocates only for presigned requests.
			v, _ = url.QueryUnescape(p.raw)
		}
	}
	return v, n
}

// find reports whether a parameter whose decoded key is name is present.
// name must consist of unreserved characters only, so its encoded form is itself.
func (s *scratch) find(name string) bool {
	for _, p := range s.pairs {
		if string(s.key(p)) == name {
			return true
		}
	}
	return false
}

// parseQuery splits the raw query into pairs, decoding each key and value
// (with '+' as space, as Go's url.ParseQuery and the Go SDK's signer do) and
// re-encoding it the AWS way. It refuses what url.ParseQuery would drop: a
// pair with ';' or an invalid escape would be signed but invisible to the
// handler.
func (s *scratch) parseQuery(raw string) *Error {
	s.enc, s.pairs = s.enc[:0], s.pairs[:0]
	for raw != "" {
		var piece string
		piece, raw, _ = strings.Cut(raw, "&")
		if piece == "" {
			continue // "a&&b": url.ParseQuery skips empty pieces, and so do the SDKs' signers
		}
		if strings.IndexByte(piece, ';') >= 0 {
			return newError(http.StatusBadRequest, CodeMalformedQueryString, "Query string parameters must not contain ';'.")
		}
		k, v, _ := strings.Cut(piece, "=")
		var p qpair
		var ok bool
		p.k0 = len(s.enc)
		if s.enc, ok = appendReencoded(s.enc, k); !ok {
			return malformedEscape()
		}
		p.k1, p.v0 = len(s.enc), len(s.enc)
		if s.enc, ok = appendReencoded(s.enc, v); !ok {
			return malformedEscape()
		}
		p.v1, p.raw = len(s.enc), v
		s.pairs = append(s.pairs, p)
	}
	return nil
}

func malformedEscape() *Error {
	return newError(http.StatusBadRequest, CodeMalformedQueryString, "Illegal hex character in escape % pattern.")
}

// appendReencoded decodes one query component and appends its AWS encoding.
func appendReencoded(dst []byte, raw string) ([]byte, bool) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return dst, false
			}
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		dst = appendEncoded(dst, c)
	}
	return dst, true
}

func appendEncoded(dst []byte, c byte) []byte {
	if isUnreserved(c) {
		return append(dst, c)
	}
	const hexUpper = "0123456789ABCDEF"
	return append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// appendCanonicalRequest appends the canonical request: method, URI, query,
// headers, signed header list and payload hash, separated by newlines.
func (s *scratch) appendCanonicalRequest(b []byte, r *http.Request, path, signedHeaders string, payload []byte, presigned bool) []byte {
	method := r.Method
	if method == "" {
		method = http.MethodGet // Go's client-side convention for an unset method
	}
	b = append(b, method...)
	b = append(b, '\n')
	b = appendCanonicalURI(b, path)
	b = append(b, '\n')
	b = s.appendCanonicalQuery(b, presigned)
	b = append(b, '\n')
	for rest := signedHeaders; rest != ""; {
		var name string
		name, rest, _ = strings.Cut(rest, ";")
		b = append(b, name...)
		b = append(b, ':')
		b = appendHeaderValues(b, r, name)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	b = append(b, signedHeaders...)
	b = append(b, '\n')
	return append(b, payload...)
}

// appendCanonicalURI appends the normalised path with every byte outside the
// unreserved set and '/' percent-encoded. The path is the escaped form the
// client sent, so an escape such as %3A is encoded again (%253A): the non-S3
// rule every SDK follows.
func appendCanonicalURI(b []byte, path string) []byte {
	path = normalizePath(path)
	for i := 0; i < len(path); i++ {
		if c := path[i]; c == '/' {
			b = append(b, c)
		} else {
			b = appendEncoded(b, c)
		}
	}
	return b
}

// normalizePath removes empty, "." and ".." segments like botocore does (and
// the AWS SigV4 test suite expects); a trailing slash survives unless the
// result is the root. Paths needing no change are returned as they are.
func normalizePath(p string) string {
	if p == "" {
		return "/"
	}
	if !needsNormalizing(p) {
		return p
	}
	var out []string
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	var sb strings.Builder
	if p[0] == '/' {
		sb.WriteByte('/')
	}
	sb.WriteString(strings.Join(out, "/"))
	if p[len(p)-1] == '/' && len(out) > 0 {
		sb.WriteByte('/')
	}
	return sb.String()
}

func needsNormalizing(p string) bool {
	if strings.Contains(p, "//") {
		return true
	}
	for rest := p; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// appendCanonicalQuery appends the encoded pairs sorted by key, then value.
// A presigned request's own X-Amz-Signature is left out.
func (s *scratch) appendCanonicalQuery(b []byte, presigned bool) []byte {
	slices.SortFunc(s.pairs, func(x, y qpair) int {
		if c := bytes.Compare(s.enc[x.k0:x.k1], s.enc[y.k0:y.k1]); c != 0 {
			return c
		}
		return bytes.Compare(s.enc[x.v0:x.v1], s.enc[y.v0:y.v1])
	})
	first := true
	for _, p := range s.pairs {
		if presigned && string(s.key(p)) == "X-Amz-Signature" {
			continue
		}
		if !first {
			b = append(b, '&')
		}
		first = false
		b = append(b, s.enc[p.k0:p.k1]...)
		b = append(b, '=')
		b = append(b, s.enc[p.v0:p.v1]...)
	}
	return b
}

// appendHeaderValues appends the canonical value of one signed header: each
// value trimmed with inner runs of spaces collapsed, values joined by ','.
func appendHeaderValues(b []byte, r *http.Request, name string) []byte {
	if name == "host" {
		// Go's server moves Host out of the header map into r.Host.
		host := r.Host
		if host == "" && r.URL != nil {
			host = r.URL.Host
		}
		return appendCollapsed(b, host)
	}
	values := headerValues(r.Header, name)
	if values == nil {
		// Go's server keeps these out of the header map; a client-side
		// request has no Content-Length header before it is sent.
		switch name {
		case "content-length":
			if r.ContentLength >= 0 {
				return strconv.AppendInt(b, r.ContentLength, 10)
			}
		case "transfer-encoding":
			return appendCollapsed(b, strings.Join(r.TransferEncoding, ","))
		}
		return b
	}
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCollapsed(b, v)
	}
	return b
}

// appendCollapsed appends v trimmed, with each run of spaces made one space.
func appendCollapsed(b []byte, v string) []byte {
	v = trimOWS(v)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' && i > 0 && v[i-1] == ' ' {
			continue
		}
		b = append(b, c)
	}
	return b
}

// headerValues looks up a lowercase header name. The canonical key is built
// on the stack; a map lookup with string(bytes) does not allocate.
func headerValues(h http.Header, lower string) []string {
	var buf [64]byte
	if len(lower) <= len(buf) {
		k := buf[:len(lower)]
		upper := true
		for i := 0; i < len(lower); i++ {
			c := lower[i]
			if upper && 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			k[i] = c
			upper = c == '-'
		}
		if v, ok := h[string(k)]; ok {
			return v
		}
	}
	// Keys Go does not canonicalise (or set directly on a client request).
	for k, v := range h {
		if strings.EqualFold(k, lower) {
			return v
		}
	}
	return nil
}
