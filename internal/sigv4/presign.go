package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Credentials are the keys Presign signs with.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// emptySHA256 is the hex SHA-256 of an empty payload.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Presign returns a copy of u that carries query-string SigV4 authentication
// for method, valid from signTime for expires (at most MaxPresignExpiry). It
// is meant for URLs nubo hands out, such as GetFunction's Code.Location: only
// host is signed and the payload is the empty one, which fits GET and HEAD.
// A Verifier whose Lookup knows creds accepts the URL.
//
// u.Host must be the Host clients will send; a default port (:80 for http,
// :443 for https) is dropped because clients omit it.
func Presign(method string, u *url.URL, creds Credentials, region, service string, signTime time.Time, expires time.Duration) (*url.URL, error) {
	switch {
	case u == nil || u.Host == "" || u.Opaque != "":
		return nil, errors.New("sigv4: presign: URL needs a host and a path")
	case creds.AccessKeyID == "" || creds.SecretAccessKey == "":
		return nil, errors.New("sigv4: presign: missing credentials")
	case !validRegion(region) || service == "" || strings.IndexByte(service, '/') >= 0:
		return nil, errors.New("sigv4: presign: invalid region or service")
	case expires < time.Second || expires > MaxPresignExpiry || expires%time.Second != 0:
		return nil, errors.New("sigv4: presign: expiry must be whole seconds between 1s and 7 days")
	}
	out := *u
	out.User, out.Fragment, out.RawFragment = nil, "", ""
	out.Host = stripDefaultPort(out.Scheme, out.Host)

	s := getScratch()
	defer putScratch(s)
	if e := s.parseQuery(out.RawQuery); e != nil {
		return nil, errors.New("sigv4: presign: " + e.Message)
	}
	for _, p := range [...]string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
		"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"} {
		if s.find(p) {
			return nil, errors.New("sigv4: presign: URL already has " + p)
		}
	}

	t := signTime.UTC()
	amzDate := t.Format(isoFormat)
	scope := amzDate[:8] + "/" + region + "/" + service + "/" + terminator
	q := out.RawQuery
	add := func(k, v string) {
		if q != "" {
			q += "&"
		}
		q += k + "=" + url.QueryEscape(v)
	}
	add("X-Amz-Algorithm", algorithm)
	add("X-Amz-Credential", creds.AccessKeyID+"/"+scope)
	add("X-Amz-Date", amzDate)
	add("X-Amz-Expires", strconv.FormatInt(int64(expires/time.Second), 10))
	add("X-Amz-SignedHeaders", "host")
	if creds.SessionToken != "" {
		add("X-Amz-Security-Token", creds.SessionToken)
	}
	out.RawQuery = q
	out.ForceQuery = false

	// Build the canonical request with the very code Verify uses.
	if e := s.parseQuery(q); e != nil {
		return nil, errors.New("sigv4: presign: " + e.Message)
	}
	req := &http.Request{Method: method, URL: &out, Host: out.Host}
	s.canon = s.appendCanonicalRequest(s.canon[:0], req, out.EscapedPath(), "host", []byte(emptySHA256), true)
	sum := sha256.Sum256(s.canon)
	sts := algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])

	key := deriveKey(creds.SecretAccessKey, amzDate[:8], region, service)
	mac := hmac.New(sha256.New, key[:])
	mac.Write([]byte(sts))
	out.RawQuery += "&X-Amz-Signature=" + hex.EncodeToString(mac.Sum(nil))
	return &out, nil
}

func stripDefaultPort(scheme, host string) string {
	h, port, ok := strings.Cut(host, ":")
	if strings.HasPrefix(host, "[") { // IPv6 literal
		i := strings.LastIndex(host, "]:")
		if i < 0 {
			return host
		}
		h, port, ok = host[:i+1], host[i+2:], true
	}
	if ok && (port == "80" && strings.EqualFold(scheme, "http") || port == "443" && strings.EqualFold(scheme, "https")) {
		return h
	}
	return host
}
