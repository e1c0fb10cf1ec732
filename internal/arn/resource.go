package arn

import (
	"strings"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// PatternTaggableResource is the model's TaggableResource pattern, quoted in
// the tag operations' ValidationException.
const PatternTaggableResource = `arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|capacity-provider:[a-zA-Z0-9-_]+)`

const maxTaggableResourceLength = 256

// ParseResource parses the {Resource} of TagResource, UntagResource and
// ListTags. Only unqualified function ARNs are taggable in nubo:
//   - a qualified function ARN gets AWS's InvalidParameterValueException
//     ("Tags on function aliases and versions are not supported...");
//   - the other taggable kinds of the model (code signing configs, event
//     source mappings, capacity providers) are well-formed but nubo has none,
//     so they are reported as not found;
//   - anything else gets the pattern's ValidationException.
func ParseResource(s string) (FunctionRef, error) {
	bad := func() (FunctionRef, error) {
		return FunctionRef{}, validationError(violation{"resource", s, patternConstraint(PatternTaggableResource)})
	}
	// arn:P:lambda:R:A:TYPE:ID[:QUALIFIER]
	var f [8]string
	n := 0
	rest := s
	for n < len(f) {
		i := strings.IndexByte(rest, ':')
		if i < 0 || n == len(f)-1 {
			f[n] = rest
			n++
			break
		}
		f[n], rest = rest[:i], rest[i+1:]
		n++
	}
	if n < 7 || f[0] != "arn" || f[1] == "" || !isPartition(f[1]) || f[2] != "lambda" ||
		!IsRegion(f[3]) || !isAccount(f[4]) {
		return bad()
	}
	tooLong := func() (FunctionRef, error) {
		return FunctionRef{}, validationError(violation{"resource", s, maxLenConstraint(maxTaggableResourceLength)})
	}
	long := utf8.RuneCountInString(s) > maxTaggableResourceLength
	switch f[5] {
	case "function":
		if !isNameChars(f[6], false) || n == 8 && !isNameQualifier(f[7], false) {
			return bad()
		}
		if long {
			return tooLong()
		}
		if n == 8 {
			return FunctionRef{}, errdefs.InvalidParameter("Tags on function aliases and versions are not supported. Please specify a function ARN.")
		}
		return FunctionRef{Partition: f[1], Region: f[3], AccountID: f[4], Name: f[6]}, nil
	case "code-signing-config", "event-source-mapping", "capacity-provider":
		if n != 7 || !(f[5] == "code-signing-config" && isCSCID(f[6]) ||
			f[5] == "event-source-mapping" && isUUID(f[6]) ||
			f[5] == "capacity-provider" && isNameChars(f[6], false)) {
			return bad()
		}
		if long {
			return tooLong()
		}
		return FunctionRef{}, errUnsupportedResource()
	}
	return bad()
}

// errUnsupportedResource is the not-found answer for a taggable kind nubo
// does not implement; the text is the one Lambda uses for a missing event
// source mapping.
func errUnsupportedResource() error {
	return errdefs.NotFound("The resource you requested does not exist.")
}

// isCSCID matches csc-[a-z0-9]{17}.
func isCSCID(s string) bool {
	if len(s) != 21 || !strings.HasPrefix(s, "csc-") {
		return false
	}
	for i := 4; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isUUID matches the 8-4-4-4-12 hexadecimal form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
