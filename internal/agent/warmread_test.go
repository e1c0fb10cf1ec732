package agent

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadWarmResponse(t *testing.T) {
	for _, c := range []struct {
		in, id, rest string
		ok           bool
	}{
		{"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: abc\r\nContent-Length: 3\r\n\r\nxyzNEXT", "abc", "NEXT", true},
		{"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nlambda-runtime-aws-request-id:  d \r\n\r\n{}NEXT", "d", "NEXT", true},
		{"HTTP/1.1 200 OK\r\n\r\nNEXT", "", "NEXT", true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n", "", "", false},
		{"HTTP/1.0 200 OK\r\n\r\n", "", "", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "", "", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "", "", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", "", "", false},
		{"", "", "", false},
	} {
		r := bufio.NewReader(strings.NewReader(c.in))
		id, err := readWarmResponse(r)
		if (err == nil) != c.ok || id != c.id && c.ok {
			t.Errorf("readWarmResponse(%q) = %q, %v; want %q, ok %v", c.in, id, err, c.id, c.ok)
			continue
		}
		if c.ok {
			rest, _ := r.ReadString(0)
			if rest != c.rest {
				t.Errorf("readWarmResponse(%q) left %q, want %q", c.in, rest, c.rest)
			}
		}
	}
}
