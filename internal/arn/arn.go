// Package arn owns the textual identity of Lambda resources: the forms in
// which clients name a function (bare name, name:qualifier, partial ARN,
// full ARN), the ARNs nubo renders for functions and layers, and the
// ValidationException texts AWS sends when such a string breaks the model.
//
// Invariants:
//   - Parsing is structural (split on ':' and check each field by hand), so it
//     costs no regexp on the request path and a name such as "f:live" can never
//     be mistaken for a region or account. Only these forms are accepted:
//     NAME, NAME:Q, ACCOUNT:function:NAME[:Q] and
//     arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:Q]. The model's
//     regular expression also admits oddities such as "us-east-1:function:f"
//     (a region without an account); AWS documents no such form and nubo
//     rejects them with the model's own message.
//   - Regions follow AWS's shape loosely: any lowercase letter followed by
//     lowercase letters, digits and dashes, so a self-hosted operator may
//     invent a region such as "home-1" or "local".
//   - Every error is an *errdefs.Error carrying the exact text AWS sends; the
//     patterns quoted in messages are those of the service model
//     (botocore 1.43.11 / aws-sdk-go-v2 service/lambda v1.114).
//   - Nothing here panics on any input; FuzzParseFunction holds that.
//   - Rendered ARNs always use the partition "aws".
package arn

import (
	"strings"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// Partition is the partition nubo writes into every ARN it renders.
const Partition = "aws"

// Latest is the qualifier of a function's unpublished version.
const Latest = "$LATEST"

// LatestPublished is the qualifier the model admits on namespaced function
// names for the newest published version (Lambda Managed Instances).
const LatestPublished = "$LATEST.PUBLISHED"

// FunctionRef is a function name as a client wrote it, split into fields.
// Region and AccountID are empty unless the client gave them (a partial ARN
// carries an account only); the caller fills in its own region and account
// and must check given ones against them (see CheckRegion).
type FunctionRef struct {
	Partition string // as written in a full ARN; empty otherwise
	Region    string
	AccountID string
	Name      string
	Qualifier string // "" when the name carried none
}

// String renders r back in the form it was parsed from: a full ARN when it
// has a region, a partial ARN when it has only an account, else NAME[:Q].
func (r FunctionRef) String() string {
	var b strings.Builder
	switch {
	case r.Region != "":
		b.WriteString("arn:")
		b.WriteString(r.Partition)
		b.WriteString(":lambda:")
		b.WriteString(r.Region)
		b.WriteByte(':')
		b.WriteString(r.AccountID)
		b.WriteString(":function:")
	case r.AccountID != "":
		b.WriteString(r.AccountID)
		b.WriteString(":function:")
	}
	b.WriteString(r.Name)
	if r.Qualifier != "" {
		b.WriteByte(':')
		b.WriteString(r.Qualifier)
	}
	return b.String()
}

// CheckRegion reports the error AWS returns when a full ARN names another
// region than the one the request was sent to.
func (r FunctionRef) CheckRegion(region string) error {
	if r.Region != "" && r.Region != region {
		return errdefs.NotFound("Functions from '%s' are not reachable in this region ('%s')", r.Region, region)
	}
	return nil
}

// Shape is one of the model's string shapes for a function name field. Each
// operation uses one of them for its {FunctionName}; they differ in length,
// in whether '.' may appear in the name and in which qualifiers they admit.
type Shape uint8

// The function-name shapes of the service model.
const (
	// ShapeFunctionName ("FunctionName"): at most 140 characters. Used by
	// CreateFunction, Update*, PublishVersion, aliases, concurrency, URLs.
	ShapeFunctionName Shape = iota
	// ShapeNamespaced ("NamespacedFunctionName"): at most 256 characters, '.'
	// allowed in the name, "$LATEST.PUBLISHED" allowed as qualifier. Used by
	// GetFunction, GetFunctionConfiguration, DeleteFunction, Invoke,
	// ListVersionsByFunction, policies and event-invoke configs.
	ShapeNamespaced
	// ShapeUnqualified ("UnqualifiedFunctionName"): at most 140 characters,
	// no qualifier.
	ShapeUnqualified
)

// Patterns of the service model, quoted verbatim in ValidationException
// messages.
const (
	PatternFunctionName            = `(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?`
	PatternNamespacedFunctionName  = `(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?`
	PatternUnqualifiedFunctionName = `(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)`
	PatternAlias                   = `(?!^[0-9]+$)([a-zA-Z0-9-_]+)`
	PatternVersion                 = `(\$LATEST|[0-9]+)`
)

type shapeSpec struct {
	pattern   string
	maxLen    int
	dots      bool // '.' allowed in the name
	qualified bool // a qualifier may follow the name
	published bool // "$LATEST.PUBLISHED" is a qualifier
}

var shapes = [...]shapeSpec{
	ShapeFunctionName: {pattern: PatternFunctionName, maxLen: 140, qualified: true},
	ShapeNamespaced:   {pattern: PatternNamespacedFunctionName, maxLen: 256, dots: true, qualified: true, published: true},
	ShapeUnqualified:  {pattern: PatternUnqualifiedFunctionName, maxLen: 140},
}

func (s Shape) spec() shapeSpec {
	if int(s) < len(shapes) {
		return shapes[s]
	}
	return shapes[ShapeFunctionName]
}

// MaxFunctionNameLength is the longest bare function name CreateFunction
// accepts; the longer limits of the shapes apply to the ARN forms.
const MaxFunctionNameLength = 64

// ParseFunction parses a {FunctionName} of the FunctionName shape.
func ParseFunction(s string) (FunctionRef, error) {
	return ParseFunctionShape(s, ShapeFunctionName)
}

// ParseFunctionShape parses a function name of the given model shape. A
// string that breaks the pattern gets only the pattern message, as AWS sends
// for every operation but CreateFunction; a well-formed string that is too
// long gets the length message.
func ParseFunctionShape(s string, shape Shape) (FunctionRef, error) {
	sp := shape.spec()
	ref, ok := parseFunction(s, sp)
	if !ok {
		if s == "" {
			return FunctionRef{}, validationError(
				violation{"functionName", s, minLenConstraint(1)},
				violation{"functionName", s, patternConstraint(sp.pattern)})
		}
		return FunctionRef{}, validationError(violation{"functionName", s, patternConstraint(sp.pattern)})
	}
	if utf8.RuneCountInString(s) > sp.maxLen {
		return FunctionRef{}, validationError(violation{"functionName", s, maxLenConstraint(sp.maxLen)})
	}
	return ref, nil
}

// ParseCreateFunctionName parses CreateFunction's FunctionName. Unlike other
// operations, CreateFunction reports every violation at once, limits a bare
// name to 64 characters, and answers a bare name that is too long with
// InvalidParameterValueException rather than ValidationException. A
// qualifier in the name is returned in the ref for the caller to refuse.
func ParseCreateFunctionName(s string) (FunctionRef, error) {
	sp := shapes[ShapeFunctionName]
	ref, ok := parseFunction(s, sp)
	n := utf8.RuneCountInString(s)
	if ok && !strings.Contains(s, ":") {
		if n > MaxFunctionNameLength {
			e := validationError(violation{"functionName", s, maxLenConstraint(MaxFunctionNameLength)})
			e.Kind = errdefs.KindInvalidParameter
			return FunctionRef{}, e
		}
		return ref, nil
	}
	var vs []violation
	if s == "" {
		vs = append(vs, violation{"functionName", s, minLenConstraint(1)})
	}
	if !ok {
		vs = append(vs, violation{"functionName", s, patternConstraint(sp.pattern)})
	}
	if n > sp.maxLen {
		vs = append(vs, violation{"functionName", s, maxLenConstraint(sp.maxLen)})
	}
	if len(vs) > 0 {
		return FunctionRef{}, validationError(vs...)
	}
	return ref, nil
}

// parseFunction splits s into its fields. It allocates nothing but the
// returned substrings' headers.
func parseFunction(s string, sp shapeSpec) (FunctionRef, bool) {
	var f [8]string
	n := 0
	rest := s
	for {
		i := strings.IndexByte(rest, ':')
		if n == len(f)-1 || i < 0 {
			f[n] = rest
			n++
			break
		}
		f[n] = rest[:i]
		n++
		rest = rest[i+1:]
	}
	if n == len(f) && strings.IndexByte(f[7], ':') >= 0 {
		return FunctionRef{}, false
	}
	var r FunctionRef
	var name, qual string
	hasQual := false
	switch n {
	case 1:
		name = f[0]
	case 2:
		name, qual, hasQual = f[0], f[1], true
	case 3, 4:
		if !isAccount(f[0]) || f[1] != "function" {
			return FunctionRef{}, false
		}
		r.AccountID, name = f[0], f[2]
		if n == 4 {
			qual, hasQual = f[3], true
		}
	case 7, 8:
		if f[0] != "arn" || !isPartition(f[1]) || f[2] != "lambda" || !IsRegion(f[3]) ||
			!isAccount(f[4]) || f[5] != "function" {
			return FunctionRef{}, false
		}
		r.Partition, r.Region, r.AccountID, name = f[1], f[3], f[4], f[6]
		if n == 8 {
			qual, hasQual = f[7], true
		}
	default:
		return FunctionRef{}, false
	}
	if !isNameChars(name, sp.dots) {
		return FunctionRef{}, false
	}
	if hasQual {
		if !sp.qualified || !isNameQualifier(qual, sp.published) {
			return FunctionRef{}, false
		}
		r.Qualifier = qual
	}
	r.Name = name
	return r, true
}

// isNameQualifier reports whether q may follow a function name after ':'.
func isNameQualifier(q string, published bool) bool {
	if q == Latest || (published && q == LatestPublished) {
		return true
	}
	return isNameChars(q, false)
}

// Function renders an unqualified function ARN.
func Function(region, account, name string) string {
	return "arn:" + Partition + ":lambda:" + region + ":" + account + ":function:" + name
}

// Qualified renders a function ARN with ":qualifier"; an empty qualifier
// gives the unqualified ARN.
func Qualified(region, account, name, qualifier string) string {
	if qualifier == "" {
		return Function(region, account, name)
	}
	return Function(region, account, name) + ":" + qualifier
}

// ValidFunctionName reports whether s is a bare function name CreateFunction
// accepts: 1 to 64 of [a-zA-Z0-9-_].
func ValidFunctionName(s string) bool {
	return len(s) <= MaxFunctionNameLength && isNameChars(s, false)
}

// ValidAliasName reports whether s matches the Alias shape: 1 to 128 of
// [a-zA-Z0-9-_], not all digits (that would read as a version).
func ValidAliasName(s string) bool {
	return len(s) <= 128 && isNameChars(s, false) && !isDigits(s)
}

// ValidVersion reports whether s is "$LATEST" or a version number.
func ValidVersion(s string) bool {
	return s == Latest || (len(s) <= 1024 && isDigits(s))
}

// ValidateAlias returns AWS's ValidationException for an alias name (the
// Name member of the alias operations) that breaks the Alias shape.
func ValidateAlias(s string) error {
	var vs []violation
	if n := utf8.RuneCountInString(s); n > 128 {
		vs = append(vs, violation{"name", s, maxLenConstraint(128)})
	}
	if s == "" {
		vs = append(vs, violation{"name", s, minLenConstraint(1)})
	}
	if !isNameChars(s, false) || isDigits(s) {
		vs = append(vs, violation{"name", s, patternConstraint(PatternAlias)})
	}
	if len(vs) > 0 {
		return validationError(vs...)
	}
	return nil
}

// IsRegion reports whether s is acceptable as a region: a lowercase letter,
// then lowercase letters, digits and dashes. This is looser than AWS's
// [a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d so that self-hosted regions work.
func IsRegion(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isAccount(s string) bool { return len(s) == 12 && isDigits(s) }

// isPartition matches the model's (aws[a-zA-Z-]*)? — including the empty
// partition the model admits.
func isPartition(s string) bool {
	if s == "" {
		return true
	}
	if !strings.HasPrefix(s, "aws") {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

// isNameChars matches [a-zA-Z0-9-_]+ (with '.' when dots is set).
func isNameChars(s string, dots bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || dots && c == '.') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
