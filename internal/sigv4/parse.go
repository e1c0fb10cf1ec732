package sigv4

import (
	"strings"
	"time"
)

// authHeader holds the parts of an Authorization header, as substrings of it.
type authHeader struct {
	credential    string
	signedHeaders string
	signature     string
}

// parseAuthorization parses "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
// Signature=...". haveDate reports whether the request carries X-Amz-Date or
// Date; its absence is reported together with missing parameters, as AWS does.
//
// Parameters are separated by commas and/or whitespace: AWS tokenises that
// way (a stray space inside "Credential= AKID/..." yields AWS's "not a valid
// key=value pair" error). Unknown parameters are ignored; a repeated one is
// refused rather than resolved, so no two readers of the header can disagree
// on which value was meant.
func parseAuthorization(h string, haveDate bool) (authHeader, *Error) {
	var a authHeader
	h = trimOWS(h)
	alg, rest := h, ""
	if i := strings.IndexAny(h, " \t"); i >= 0 {
		alg, rest = h[:i], h[i+1:]
	}
	if alg != algorithm {
		return a, incomplete("Unsupported AWS 'algorithm': '" + alg + "'.")
	}
	var haveCred, haveSigned, haveSig bool
	for rest != "" {
		tok := rest
		if i := strings.IndexAny(rest, ", \t"); i >= 0 {
			tok, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if tok == "" {
			continue
		}
		k, val, ok := strings.Cut(tok, "=")
		if !ok {
			return a, incomplete("'" + tok + "' not a valid key=value pair (missing equal-sign) in Authorization header: '" + h + "'")
		}
		var seen *bool
		switch k {
		case "Credential":
			seen, a.credential = &haveCred, val
		case "SignedHeaders":
			seen, a.signedHeaders = &haveSigned, val
		case "Signature":
			seen, a.signature = &haveSig, val
		default:
			continue
		}
		if *seen {
			return a, incomplete("'" + k + "' appears more than once in Authorization header: '" + h + "'")
		}
		*seen = true
	}
	var missing []string
	if !haveCred {
		missing = append(missing, "Authorization header requires 'Credential' parameter.")
	}
	if !haveSig {
		missing = append(missing, "Authorization header requires 'Signature' parameter.")
	}
	if !haveSigned {
		missing = append(missing, "Authorization header requires 'SignedHeaders' parameter.")
	}
	if !haveDate {
		missing = append(missing, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	if len(missing) > 0 {
		return a, incomplete(strings.Join(missing, " ") + " Authorization=" + h)
	}
	return a, nil
}

// splitCredential splits "AKID/YYYYMMDD/region/service/aws4_request" into its
// five elements without allocating.
func splitCredential(c string) (parts [5]string, ok bool) {
	for i := 0; i < 4; i++ {
		j := strings.IndexByte(c, '/')
		if j < 0 {
			return parts, false
		}
		parts[i], c = c[:j], c[j+1:]
	}
	if strings.IndexByte(c, '/') >= 0 {
		return parts, false
	}
	parts[4] = c
	return parts, true
}

// parseAmzDate parses the ISO-8601 basic format "YYYYMMDDTHHMMSSZ", refusing
// out-of-range fields (time.Date would silently normalise "20260230").
func parseAmzDate(s string) (time.Time, bool) {
	if len(s) != len(isoFormat) || s[8] != 'T' || s[15] != 'Z' {
		return time.Time{}, false
	}
	num := func(i, j int) (int, bool) {
		n := 0
		for ; i < j; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(4, 6)
	d, ok3 := num(6, 8)
	hh, ok4 := num(9, 11)
	mm, ok5 := num(11, 13)
	ss, ok6 := num(13, 15)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, hh, mm, ss, 0, time.UTC)
	if t.Year() != y || int(t.Month()) != mo || t.Day() != d || t.Hour() != hh || t.Minute() != mm || t.Second() != ss {
		return time.Time{}, false
	}
	return t, true
}

// validRegion accepts region-shaped tokens ("us-east-1", "us-gov-west-1");
// the region ends up in ARNs, so it must not carry separators.
func validRegion(r string) bool {
	if r == "" || len(r) > 64 {
		return false
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validSignedHeaders reports whether sh is a non-empty list of lowercase
// header tokens, strictly ascending, separated by ';'.
func validSignedHeaders(sh string) bool {
	if sh == "" {
		return false
	}
	prev := ""
	for first := true; ; first = false {
		name, rest, more := strings.Cut(sh, ";")
		if name == "" {
			return false
		}
		for i := 0; i < len(name); i++ {
			if !isLowerTokenChar(name[i]) {
				return false
			}
		}
		if !first && name <= prev {
			return false
		}
		prev = name
		if !more {
			return true
		}
		sh = rest
	}
}

// isLowerTokenChar reports whether c may appear in a lowercase HTTP field
// name (RFC 9110 tchar without uppercase letters).
func isLowerTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func hasSignedHeader(sh, name string) bool {
	for sh != "" {
		var n string
		n, sh, _ = strings.Cut(sh, ";")
		if n == name {
			return true
		}
	}
	return false
}

// trimOWS trims HTTP optional whitespace.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}
