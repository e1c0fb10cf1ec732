package runtimeapi

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// FuzzValidErrorType holds the hand-written check to the rule it replaced,
// `^(Runtime|Function)\.[A-Z][a-zA-Z]+$`.
func FuzzValidErrorType(f *testing.F) {
	re := regexp.MustCompile(`^(Runtime|Function)\.[A-Z][a-zA-Z]+$`)
	for _, s := range []string{"Runtime.Foo", "Function.X", "Function.Xy", "Runtime.", "runtime.Foo", "Runtime.foo",
		"Runtime.Foo1", "x Runtime.Foo", "Runtime.Foo\n", "Function.ÄBC", "Runtime.FooBar", "Function.Ab-c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validErrorType(s), re.MatchString(s); got != want {
			t.Errorf("validErrorType(%q) = %v, the regexp says %v", s, got, want)
		}
	})
}

// FuzzParseUUID holds parseUUID to github.com/google/uuid's Parse, which
// it replaced: the same strings accepted, the same canonical form, except
// that parseUUID wants the braces of the 38-character form to be braces
// (Parse skips whatever the first and last characters are).
func FuzzParseUUID(f *testing.F) {
	for _, s := range []string{"6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
		"{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
		"URN:UUID:6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b8109dad11d180b400c04fd430c8",
		"6ba7b810-9dad-11d1-80b4-00c04fd430c", "6ba7b810x9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430cg",
		"{6ba7b810-9dad-11d1-80b4-00c04fd430c8", "", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUUID(s)
		if len(s) == 38 && (s[0] != '{' || s[37] != '}') {
			if ok {
				t.Errorf("parseUUID(%q) accepted a 38-character form without braces", s)
			}
			return
		}
		u, err := uuid.Parse(s)
		if ok != (err == nil) {
			t.Fatalf("parseUUID(%q) ok = %v, uuid.Parse: %v", s, ok, err)
		}
		if ok && got != u.String() {
			t.Errorf("parseUUID(%q) = %q, uuid.Parse: %q", s, got, u.String())
		}
	})
}

func TestNewUUID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		s := newUUID()
		u, err := uuid.Parse(s)
		if err != nil || u.String() != s {
			t.Fatalf("newUUID() = %q: %v", s, err)
		}
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("newUUID() = %q: version %d, variant %v", s, u.Version(), u.Variant())
		}
		if seen[s] {
			t.Fatalf("newUUID() repeated %q", s)
		}
		seen[s] = true
	}
}

func TestHeaderNames(t *testing.T) {
	h := header{}
	h.Set("lambda-runtime-aws-request-id", "a")
	h.Set("LAMBDA-RUNTIME-AWS-REQUEST-ID", "b")
	if got := h["Lambda-Runtime-Aws-Request-Id"]; len(h) != 1 || len(got) != 1 || got[0] != "b" {
		t.Errorf("two Sets under one canonical name left %v", h)
	}
	if h.Get("lambda-runtime-aws-request-id") != "b" {
		t.Errorf("Get with a lower-case name: %q", h.Get("lambda-runtime-aws-request-id"))
	}
	for _, name := range []string{"content-type", "X-Amz-Date", "x-amz-date", "Lambda-Extension-Name", "a_b", "ÄB"} {
		if got, want := canonicalName(name), http.CanonicalHeaderKey(name); got != want {
			t.Errorf("canonicalName(%q) = %q, net/http says %q", name, got, want)
		}
	}
}

func TestDetectContentType(t *testing.T) {
	for body, want := range map[string]string{
		`{"a":1}`:   "text/plain; charset=utf-8",
		"pong":      "text/plain; charset=utf-8",
		"\x00\x01":  "application/octet-stream",
		"\xff\xfe":  "application/octet-stream",
		"héllo\n\t": "text/plain; charset=utf-8",
		// Judged by the first 512 bytes only.
		strings.Repeat("a", 512) + "\xff": "text/plain; charset=utf-8",
		strings.Repeat("a", 500) + "\x00": "application/octet-stream",
		// A rune cut by the 512-byte limit is not a reason for binary.
		strings.Repeat("a", 511) + "é": "text/plain; charset=utf-8",
	} {
		if got := detectContentType([]byte(body)); got != want {
			t.Errorf("detectContentType(%.20q) = %q, want %q", body, got, want)
		}
	}
}

func TestStatusTexts(t *testing.T) {
	for _, s := range []int{statusContinue, statusOK, statusAccepted, statusBadRequest, statusForbidden, statusNotFound,
		statusMethodNotAllowed, statusRequestEntityTooLarge, statusExpectationFailed, statusRequestHeaderFieldsTooLarge,
		statusNotImplemented, statusHTTPVersionNotSupported} {
		if got, want := statusText(s), http.StatusText(s); got != want {
			t.Errorf("statusText(%d) = %q, net/http says %q", s, got, want)
		}
	}
	for _, v := range []string{"HTTP/1.1", "HTTP/2.0", "HTTP/1", "HTTP/x.1", "http/1.1", "HTTP/1.1 ", "HTTP/1000.0",
		"HTTP/1.10", "HTTP/10.0", "HTTP/01.1", "HTTP/+.1", "HTTP/1,1", ""} {
		_, _, want := http.ParseHTTPVersion(v)
		if got := isHTTPVersion(v); got != want {
			t.Errorf("isHTTPVersion(%q) = %v, net/http says %v", v, got, want)
		}
	}
}
