// Package sigv4 verifies AWS Signature Version 4 on requests to nubo's Lambda
// API and presigns the expiring URLs nubo hands out (function code downloads).
//
// It owns the server side of SigV4: parsing the Authorization header or the
// X-Amz-* query parameters, rebuilding the canonical request from what the
// server actually received, and mapping every failure to the error code,
// HTTP status and message AWS sends.
//
// Invariants:
//   - Verify recomputes everything it relies on from the request itself: the
//     body hash, the canonical URI from the raw request path, the canonical
//     query from the raw query, and the headers named in SignedHeaders. A
//     client-supplied X-Amz-Content-Sha256 is only a claim; it must match the
//     body (UNSIGNED-PAYLOAD is accepted for presigned URLs only).
//   - A request is accepted only if host is signed, along with X-Amz-Date (or
//     Date, whichever carries the time), X-Amz-Security-Token and
//     X-Amz-Content-Sha256 when present as headers, and its time is within
//     MaxSkew of the server clock (for presigned URLs: not after
//     X-Amz-Date+X-Amz-Expires).
//   - The canonical URI follows the non-S3 rule: the received, already
//     escaped path is normalised (empty, "." and ".." segments removed, as the
//     AWS test suite and botocore do) and each byte outside A-Za-z0-9-_.~/ is
//     percent-encoded again, so "arn%3Aaws" is signed as "arn%253Aaws".
//     Because "/a//b/./c" and "/a/b/c" share a signature, the API must route
//     on the cleaned path (net/http's ServeMux redirects unclean paths).
//   - The canonical query is built from the decoded pairs of the raw query,
//     re-encoded the AWS way and sorted by key then value. A query Go's own
//     parser would reject or drop (invalid escapes, ';') is refused, so the
//     handler never sees parameters other than those that were signed.
//   - Signatures are compared in constant time. Parsing never panics on any
//     input (fuzzed in the tests).
//
// A Verifier is safe for concurrent use and must not be copied after first
// use: it caches derived signing keys (per access key, day, region and
// service), re-deriving whenever Lookup returns a different secret.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The AWS error codes Verify returns.
const (
	CodeMissingAuthenticationToken = "MissingAuthenticationTokenException"
	CodeUnrecognizedClient         = "UnrecognizedClientException"
	CodeInvalidSignature           = "InvalidSignatureException"
	CodeIncompleteSignature        = "IncompleteSignatureException"
	CodeMalformedQueryString       = "MalformedQueryString"
	CodeContentSHA256Mismatch      = "XAmzContentSHA256Mismatch"
)

const (
	algorithm       = "AWS4-HMAC-SHA256"
	terminator      = "aws4_request"
	isoFormat       = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"

	// DefaultMaxSkew is the clock skew AWS tolerates.
	DefaultMaxSkew = 5 * time.Minute
	// MaxPresignExpiry is the longest X-Amz-Expires AWS accepts (one week).
	MaxPresignExpiry = 7 * 24 * time.Hour

	msgMismatch = "The request signature we calculated does not match the signature you provided. " +
		"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// SecretLookup returns the secret key for an access key id; ok=false for an unknown key.
type SecretLookup func(accessKeyID string) (secret string, ok bool)

// Verifier checks SigV4 signatures for one service.
type Verifier struct {
	// Service is the signing name the credential scope must carry; "" means "lambda".
	Service string
	// Lookup resolves access key ids; nil knows no keys.
	Lookup SecretLookup
	// MaxSkew is the tolerated difference between the request time and Now;
	// zero or negative means DefaultMaxSkew.
	MaxSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	keys keyCache
}

// Identity is what a verified request proves.
type Identity struct {
	AccessKeyID  string
	Region       string
	Service      string
	Date         time.Time // the signed request time, UTC
	SessionToken string    // X-Amz-Security-Token, covered by the signature; "" if none
}

// Error is an authentication failure; Code is the AWS error code, Status the HTTP status.
type Error struct {
	Code    string
	Message string
	Status  int

	// Set on a signature mismatch so tests can show what the server signed.
	// Deliberately unexported: a canonical request can carry a session token
	// and must not end up in logs or responses.
	canonicalRequest string
	stringToSign     string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, msg string) *Error {
	return &Error{Code: code, Message: msg, Status: status}
}

func incomplete(msg string) *Error {
	return newError(http.StatusBadRequest, CodeIncompleteSignature, msg)
}

func invalidSignature(msg string) *Error {
	return newError(http.StatusForbidden, CodeInvalidSignature, msg)
}

func (v *Verifier) service() string {
	if v.Service == "" {
		return "lambda"
	}
	return v.Service
}

func (v *Verifier) maxSkew() time.Duration {
	if v.MaxSkew <= 0 {
		return DefaultMaxSkew
	}
	return v.MaxSkew
}

func (v *Verifier) now() time.Time {
	if v.Now == nil {
		return time.Now().UTC()
	}
	return v.Now().UTC()
}

// authParams is what either form of authentication provides.
type authParams struct {
	credential    string // AKID/date/region/service/term as sent
	signedHeaders string
	signature     string
	amzDate       string    // the request time as it enters the string to sign
	date          time.Time // amzDate parsed
	dateHeader    string    // lowercase header the time came from; "" for presigned
	sessionToken  string
	payloadClaim  string        // X-Amz-Content-Sha256 as sent, "" if absent
	presigned     bool          // query-string authentication
	expires       time.Duration // presigned validity; 0 when X-Amz-Expires is absent
}

// Verify checks r's signature. body is the full request body (already read by
// the caller, who resets r.Body). The returned error is always an *Error.
func (v *Verifier) Verify(r *http.Request, body []byte) (*Identity, error) {
	id, err := v.verify(r, body)
	if err != nil {
		return nil, err
	}
	return id, nil
}

func (v *Verifier) verify(r *http.Request, body []byte) (*Identity, *Error) {
	s := getScratch()
	defer putScratch(s)

	path, rawQuery := requestTarget(r)
	if e := s.parseQuery(rawQuery); e != nil {
		return nil, e
	}
	authz := r.Header["Authorization"]
	if len(authz) == 1 && trimOWS(authz[0]) == "" {
		authz = nil
	}
	presigned := s.find("X-Amz-Algorithm")

	var a authParams
	var e *Error
	switch {
	case len(authz) > 0 && presigned:
		return nil, invalidSignature("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified.")
	case len(authz) > 1:
		return nil, incomplete("Only one Authorization header is allowed.")
	case len(authz) == 1:
		a, e = fromHeader(r, authz[0])
	case presigned:
		a, e = s.fromQuery(r)
	default:
		return nil, newError(http.StatusForbidden, CodeMissingAuthenticationToken, "Missing Authentication Token")
	}
	if e != nil {
		return nil, e
	}
	if e := checkSignedHeaders(r, &a); e != nil {
		return nil, e
	}
	if e := v.checkTime(&a); e != nil {
		return nil, e
	}
	akid, scopeDate, region, service, scope, e := v.checkScope(&a)
	if e != nil {
		return nil, e
	}

	var secret string
	ok := false
	if v.Lookup != nil && akid != "" {
		secret, ok = v.Lookup(akid)
	}
	if !ok {
		return nil, newError(http.StatusForbidden, CodeUnrecognizedClient, "The security token included in the request is invalid.")
	}

	// The payload hash that enters the canonical request, and whether the
	// body must be checked against a client claim once the signature holds.
	var bodyHex [64]byte
	var payload []byte
	checkClaim := false
	switch claim := a.payloadClaim; {
	case claim == unsignedPayload && !a.presigned:
		return nil, invalidSignature("UNSIGNED-PAYLOAD is only accepted with query-string authentication; sign the payload.")
	case claim == unsignedPayload:
		payload = append(bodyHex[:0], unsignedPayload...)
	default:
		sum := sha256.Sum256(body)
		hex.Encode(bodyHex[:], sum[:])
		payload = bodyHex[:]
		if claim != "" {
			payload, checkClaim = []byte(claim), true
		}
	}

	s.canon = s.appendCanonicalRequest(s.canon[:0], r, path, a.signedHeaders, payload, a.presigned)
	canonSum := sha256.Sum256(s.canon)
	sts := append(s.sts[:0], algorithm+"\n"...)
	sts = append(sts, a.amzDate...)
	sts = append(sts, '\n')
	sts = append(sts, scope...)
	sts = append(sts, '\n')
	sts = hex.AppendEncode(sts, canonSum[:])
	s.sts = sts

	key := v.signingKey(akid, secret, scopeDate, region, service)
	mac := hmac.New(sha256.New, key[:])
	mac.Write(sts)
	var want [sha256.Size]byte
	mac.Sum(want[:0])
	var got [sha256.Size]byte
	if !decodeLowerHex(got[:], a.signature) || !hmac.Equal(got[:], want[:]) {
		err := invalidSignature(msgMismatch)
		err.canonicalRequest = string(s.canon)
		err.stringToSign = string(sts)
		return nil, err
	}
	if checkClaim && a.payloadClaim != string(bodyHex[:]) {
		return nil, newError(http.StatusBadRequest, CodeContentSHA256Mismatch, "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	return &Identity{
		AccessKeyID:  akid,
		Region:       region,
		Service:      service,
		Date:         a.date,
		SessionToken: a.sessionToken,
	}, nil
}

// requestTarget returns the raw (still escaped) path and query the client
// sent. For server requests that is the request line itself: r.URL may have
// been rewritten by middleware, and r.URL.EscapedPath re-encodes paths whose
// raw form Go considers non-canonical, which would break a signature made
// over the bytes on the wire.
func requestTarget(r *http.Request) (path, query string) {
	if u := r.RequestURI; u != "" && u[0] == '/' {
		path, query, _ = strings.Cut(u, "?")
		return path, query
	}
	if r.URL == nil {
		return "/", ""
	}
	return r.URL.EscapedPath(), r.URL.RawQuery
}

// fromHeader reads header authentication: the Authorization header plus the
// request time from X-Amz-Date or, failing that, Date.
func fromHeader(r *http.Request, authz string) (authParams, *Error) {
	var a authParams
	dateValue, dateHeader := firstHeader(r.Header, "X-Amz-Date"), "x-amz-date"
	if dateValue == "" {
		dateValue, dateHeader = firstHeader(r.Header, "Date"), "date"
	}
	h, e := parseAuthorization(authz, dateValue != "")
	if e != nil {
		return a, e
	}
	a.credential, a.signedHeaders, a.signature = h.credential, h.signedHeaders, h.signature
	a.dateHeader = dateHeader
	a.sessionToken = firstHeader(r.Header, "X-Amz-Security-Token")
	a.payloadClaim = firstHeader(r.Header, "X-Amz-Content-Sha256")

	t, ok := parseAmzDate(dateValue)
	if ok {
		a.amzDate = dateValue
	} else if dateHeader == "date" {
		// AWS accepts an HTTP Date header and signs its ISO-8601 form.
		if t2, err := http.ParseTime(dateValue); err == nil {
			t, ok = t2.UTC(), true
			a.amzDate = t.Format(isoFormat)
		}
	}
	if !ok {
		return a, badDate(dateValue)
	}
	a.date = t
	return a, nil
}

func badDate(v string) *Error {
	return incomplete("Date must be in ISO-8601 'basic format'. Got '" + v + "'. See http://en.wikipedia.org/wiki/ISO_8601")
}

// fromQuery reads presigned (query-string) authentication.
func (s *scratch) fromQuery(r *http.Request) (authParams, *Error) {
	var a authParams
	a.presigned = true
	get := func(name string) (string, bool, *Error) {
		v, n := s.value(name)
		if n > 1 {
			return "", false, incomplete("'" + name + "' must appear only once in the query string. Re-examine the query-string parameters.")
		}
		return v, n == 1, nil
	}
	alg, _, e := get("X-Amz-Algorithm")
	if e != nil {
		return a, e
	}
	if alg != algorithm {
		return a, newError(http.StatusForbidden, CodeMissingAuthenticationToken, "Missing Authentication Token")
	}
	var missing []string
	var ok bool
	for _, p := range []struct {
		name string
		dst  *string
	}{
		{"X-Amz-Credential", &a.credential},
		{"X-Amz-Signature", &a.signature},
		{"X-Amz-SignedHeaders", &a.signedHeaders},
		{"X-Amz-Date", &a.amzDate},
	} {
		if *p.dst, ok, e = get(p.name); e != nil {
			return a, e
		}
		if !ok {
			missing = append(missing, "AWS query-string parameters must include '"+p.name+"'.")
		}
	}
	if len(missing) > 0 {
		return a, incomplete(strings.Join(missing, " ") + " Re-examine the query-string parameters.")
	}
	if a.date, ok = parseAmzDate(a.amzDate); !ok {
		return a, badDate(a.amzDate)
	}
	exp, ok, e := get("X-Amz-Expires")
	if e != nil {
		return a, e
	}
	if ok {
		// ParseInt saturates on overflow, so a huge value reads as too long.
		n, err := strconv.ParseInt(exp, 10, 64)
		switch max := int64(MaxPresignExpiry / time.Second); {
		case n > max:
			return a, incomplete("X-Amz-Expires must be less than a week (in seconds) that is 604800")
		case err != nil || n <= 0:
			return a, incomplete("X-Amz-Expires should be a number greater than 0. Re-examine the query-string parameters.")
		}
		a.expires = time.Duration(n) * time.Second
	}
	if a.sessionToken, ok, e = get("X-Amz-Security-Token"); e != nil {
		return a, e
	}
	if !ok {
		a.sessionToken = firstHeader(r.Header, "X-Amz-Security-Token")
	}
	if a.payloadClaim, ok, e = get("X-Amz-Content-Sha256"); e != nil {
		return a, e
	}
	if !ok {
		a.payloadClaim = firstHeader(r.Header, "X-Amz-Content-Sha256")
	}
	return a, nil
}

// checkSignedHeaders enforces the form of SignedHeaders (lowercase, sorted,
// unique tokens: the canonical request uses the list verbatim, so anything
// else could not have been signed by a conforming client) and that the
// headers this verifier relies on are covered by the signature.
func checkSignedHeaders(r *http.Request, a *authParams) *Error {
	sh := a.signedHeaders
	if !validSignedHeaders(sh) {
		return invalidSignature("SignedHeaders must be a ';'-separated list of unique lowercase header names in sorted order, got '" + sh + "'.")
	}
	if !hasSignedHeader(sh, "host") {
		return invalidSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	if a.dateHeader != "" && !hasSignedHeader(sh, a.dateHeader) {
		name := "X-Amz-Date"
		if a.dateHeader == "date" {
			name = "Date"
		}
		return invalidSignature("'" + name + "' must be a 'SignedHeader' in the AWS Authorization.")
	}
	for _, name := range [...]string{"X-Amz-Security-Token", "X-Amz-Content-Sha256"} {
		if len(r.Header[name]) > 0 && !hasSignedHeader(sh, strings.ToLower(name)) {
			return invalidSignature("'" + name + "' must be a 'SignedHeader' in the AWS Authorization.")
		}
	}
	return nil
}

// checkTime enforces the skew window, or a presigned URL's validity.
func (v *Verifier) checkTime(a *authParams) *Error {
	now := v.now()
	skew := v.maxSkew()
	if later := now.Add(skew); a.date.After(later) {
		return invalidSignature("Signature not yet current: " + a.amzDate + " is still later than " +
			later.Format(isoFormat) + " (" + now.Format(isoFormat) + " + " + window(skew) + ")")
	}
	validity := skew
	if a.presigned && a.expires > 0 {
		validity = a.expires
	}
	if earliest := now.Add(-validity); a.date.Before(earliest) {
		return invalidSignature("Signature expired: " + a.amzDate + " is now earlier than " +
			earliest.Format(isoFormat) + " (" + now.Format(isoFormat) + " - " + window(validity) + ")")
	}
	return nil
}

// window formats a duration the way AWS prints it in expiry messages.
func window(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + " min."
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + " sec."
}

// checkScope splits the credential and checks its scope against the request
// time and this verifier's service. scope is the credential without the key id.
func (v *Verifier) checkScope(a *authParams) (akid, date, region, service, scope string, e *Error) {
	parts, ok := splitCredential(a.credential)
	if !ok {
		return "", "", "", "", "", incomplete("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '" + a.credential + "'")
	}
	akid, date, region, service = parts[0], parts[1], parts[2], parts[3]
	term := parts[4]
	var msg strings.Builder
	if !validRegion(region) {
		msg.WriteString("Credential should be scoped to a valid region, not '" + region + "'. ")
	}
	if service != v.service() {
		msg.WriteString("Credential should be scoped to correct service: '" + v.service() + "'. ")
	}
	if term != terminator {
		msg.WriteString("Credential should be scoped with a valid terminator: 'aws4_request', not '" + term + "'. ")
	}
	if day := a.amzDate[:8]; date != day {
		msg.WriteString("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" +
			date + "' != '" + day + "', from '" + a.amzDate + "'.")
	}
	if msg.Len() > 0 {
		return "", "", "", "", "", invalidSignature(msg.String())
	}
	return akid, date, region, service, a.credential[len(akid)+1:], nil
}

// keyCache holds derived signing keys. Deriving one costs four HMACs; a
// client reuses the same key for a whole day.
type keyCache struct {
	mu sync.Mutex
	m  map[scopeKey]cachedKey
}

type scopeKey struct{ akid, date, region, service string }

type cachedKey struct {
	secret string
	key    [sha256.Size]byte
}

// maxCachedKeys bounds the cache; it is simply emptied when full, since
// refilling costs only a few HMACs per key.
const maxCachedKeys = 4096

func (v *Verifier) signingKey(akid, secret, date, region, service string) [sha256.Size]byte {
	k := scopeKey{akid, date, region, service}
	v.keys.mu.Lock()
	c, ok := v.keys.m[k]
	v.keys.mu.Unlock()
	// Comparing secrets here leaks nothing to a client: both come from the
	// server's own key store.
	if ok && c.secret == secret {
		return c.key
	}
	key := deriveKey(secret, date, region, service)
	k = scopeKey{strings.Clone(akid), strings.Clone(date), strings.Clone(region), strings.Clone(service)}
	v.keys.mu.Lock()
	if v.keys.m == nil || len(v.keys.m) >= maxCachedKeys {
		v.keys.m = make(map[scopeKey]cachedKey)
	}
	v.keys.m[k] = cachedKey{secret: strings.Clone(secret), key: key}
	v.keys.mu.Unlock()
	return key
}

// deriveKey computes the signing key "AWS4"+secret → date → region → service → "aws4_request".
func deriveKey(secret, date, region, service string) [sha256.Size]byte {
	var key [sha256.Size]byte
	k := hmacSum(key[:0], []byte("AWS4"+secret), date)
	k = hmacSum(k[:0], k, region)
	k = hmacSum(k[:0], k, service)
	hmacSum(k[:0], k, terminator)
	return key
}

func hmacSum(dst, key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(dst)
}

// decodeLowerHex decodes a 64-digit lowercase hex signature. AWS compares the
// hex strings, so uppercase digits do not match.
func decodeLowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// firstHeader is r.Header.Get without canonicalising a key that already is canonical.
func firstHeader(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}
