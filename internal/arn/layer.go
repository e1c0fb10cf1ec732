package arn

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Layer patterns of the service model. Their partition and region classes are
// looser than the function ones ([a-zA-Z0-9-]+); the parsers follow them.
const (
	PatternLayerName       = `(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+`
	PatternLayerVersionArn = `arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+`
	PatternLayerArn        = `arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+`
)

const maxLayerArnLength = 140

// Layer renders a layer ARN (no version).
func Layer(region, account, layer string) string {
	return "arn:" + Partition + ":lambda:" + region + ":" + account + ":layer:" + layer
}

// LayerVersion renders a layer version ARN.
func LayerVersion(region, account, layer string, version int64) string {
	return Layer(region, account, layer) + ":" + strconv.FormatInt(version, 10)
}

// LayerVersionRef is a parsed layer version ARN.
type LayerVersionRef struct {
	Partition string
	Region    string
	AccountID string
	Name      string
	Version   int64
}

// String renders r as a layer version ARN in its own partition.
func (r LayerVersionRef) String() string {
	return "arn:" + r.Partition + ":lambda:" + r.Region + ":" + r.AccountID + ":layer:" + r.Name + ":" +
		strconv.FormatInt(r.Version, 10)
}

// ParseLayerVersion parses a layer version ARN, as found in a function's
// Layers list or GetLayerVersionByArn's ?Arn=. The error names the field
// 'arn'; a caller validating another field can test for
// errdefs.KindValidation and word its own message with
// PatternLayerVersionArn.
func ParseLayerVersion(s string) (LayerVersionRef, error) {
	bad := func() (LayerVersionRef, error) {
		return LayerVersionRef{}, validationError(violation{"arn", s, patternConstraint(PatternLayerVersionArn)})
	}
	f, ok := splitLayerArn(s, 8)
	if !ok {
		return bad()
	}
	if !isDigits(f[7]) {
		return bad()
	}
	v, err := strconv.ParseInt(f[7], 10, 64)
	if err != nil {
		// Matches the pattern yet overflows the model's long.
		return bad()
	}
	if utf8.RuneCountInString(s) > maxLayerArnLength {
		return LayerVersionRef{}, validationError(violation{"arn", s, maxLenConstraint(maxLayerArnLength)})
	}
	return LayerVersionRef{Partition: f[1], Region: f[3], AccountID: f[4], Name: f[6], Version: v}, nil
}

// ParseLayerName parses the {LayerName} path parameter: a bare layer name
// (region and account come back empty) or a layer ARN without version.
func ParseLayerName(s string) (region, account, name string, err error) {
	if utf8.RuneCountInString(s) > maxLayerArnLength {
		if isNameChars(s, false) {
			return "", "", "", validationError(violation{"layerName", s, maxLenConstraint(maxLayerArnLength)})
		}
		if _, ok := splitLayerArn(s, 7); ok {
			return "", "", "", validationError(violation{"layerName", s, maxLenConstraint(maxLayerArnLength)})
		}
	}
	if isNameChars(s, false) {
		return "", "", s, nil
	}
	if f, ok := splitLayerArn(s, 7); ok {
		return f[3], f[4], f[6], nil
	}
	if s == "" {
		return "", "", "", validationError(
			violation{"layerName", s, minLenConstraint(1)},
			violation{"layerName", s, patternConstraint(PatternLayerName)})
	}
	return "", "", "", validationError(violation{"layerName", s, patternConstraint(PatternLayerName)})
}

// splitLayerArn checks arn:P:lambda:R:A:layer:NAME[:...] with exactly n
// fields and returns them; the version field (index 7), if any, is left to
// the caller.
func splitLayerArn(s string, n int) ([8]string, bool) {
	var f [8]string
	rest := s
	for i := 0; i < n; i++ {
		if i == n-1 {
			if strings.IndexByte(rest, ':') >= 0 {
				return f, false
			}
			f[i] = rest
			break
		}
		j := strings.IndexByte(rest, ':')
		if j < 0 {
			return f, false
		}
		f[i], rest = rest[:j], rest[j+1:]
	}
	ok := f[0] == "arn" && isLayerWord(f[1]) && f[2] == "lambda" && isLayerWord(f[3]) &&
		isAccount(f[4]) && f[5] == "layer" && isNameChars(f[6], false)
	return f, ok
}

// isLayerWord matches [a-zA-Z0-9-]+.
func isLayerWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
