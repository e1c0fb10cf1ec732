package arn

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

const acct = "123456789012"

func TestParseFunctionForms(t *testing.T) {
	cases := []struct {
		in   string
		want FunctionRef
	}{
		{"my-function", FunctionRef{Name: "my-function"}},
		{"My_Function-2", FunctionRef{Name: "My_Function-2"}},
		{"123456789012", FunctionRef{Name: "123456789012"}}, // all digits is a name
		{"f:v1", FunctionRef{Name: "f", Qualifier: "v1"}},
		{"f:7", FunctionRef{Name: "f", Qualifier: "7"}},
		{"f:$LATEST", FunctionRef{Name: "f", Qualifier: "$LATEST"}},
		{"function:live", FunctionRef{Name: "function", Qualifier: "live"}},
		{acct + ":function:f", FunctionRef{AccountID: acct, Name: "f"}},
		{acct + ":function:f:$LATEST", FunctionRef{AccountID: acct, Name: "f", Qualifier: "$LATEST"}},
		{acct + ":function:f:prod", FunctionRef{AccountID: acct, Name: "f", Qualifier: "prod"}},
		{"arn:aws:lambda:us-west-2:" + acct + ":function:my-function",
			FunctionRef{Partition: "aws", Region: "us-west-2", AccountID: acct, Name: "my-function"}},
		{"arn:aws:lambda:us-west-2:" + acct + ":function:my-function:12",
			FunctionRef{Partition: "aws", Region: "us-west-2", AccountID: acct, Name: "my-function", Qualifier: "12"}},
		{"arn:aws-cn:lambda:cn-north-1:" + acct + ":function:f",
			FunctionRef{Partition: "aws-cn", Region: "cn-north-1", AccountID: acct, Name: "f"}},
		{"arn:aws-us-gov:lambda:us-gov-west-1:" + acct + ":function:f:$LATEST",
			FunctionRef{Partition: "aws-us-gov", Region: "us-gov-west-1", AccountID: acct, Name: "f", Qualifier: "$LATEST"}},
		// Self-hosted regions need not look like AWS's.
		{"arn:aws:lambda:local:" + acct + ":function:f",
			FunctionRef{Partition: "aws", Region: "local", AccountID: acct, Name: "f"}},
		{"arn:aws:lambda:home-lab2:" + acct + ":function:f:a",
			FunctionRef{Partition: "aws", Region: "home-lab2", AccountID: acct, Name: "f", Qualifier: "a"}},
		// The model's partition group is optional.
		{"arn::lambda:us-east-1:" + acct + ":function:f",
			FunctionRef{Region: "us-east-1", AccountID: acct, Name: "f"}},
		{strings.Repeat("a", 140), FunctionRef{Name: strings.Repeat("a", 140)}},
	}
	for _, c := range cases {
		got, err := ParseFunction(c.in)
		if err != nil {
			t.Errorf("ParseFunction(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseFunction(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if s := got.String(); s != c.in {
			t.Errorf("ParseFunction(%q).String() = %q", c.in, s)
		}
	}
}

func TestParseFunctionInvalid(t *testing.T) {
	cases := []string{
		"bad name",
		"f:",
		":f",
		"f:v1:v2",
		"f:$latest",
		"f:$LATEST.PUBLISHED", // only the namespaced shape admits it
		"f.g",                 // dots only in the namespaced shape
		"f/g",
		"f\x00",
		"ünïcode",
		"12345678901:function:f",   // 11-digit account
		"1234567890123:function:f", // 13 digits
		"12345678901a:function:f",  // not digits
		acct + ":functions:f",      // wrong literal
		acct + ":function:",        // empty name
		acct + ":function:f:",      // empty qualifier
		acct + ":function:f:a:b",   // five fields
		"us-east-1:function:f",     // region without account: no documented form
		"us-east-1:" + acct + ":function:f",
		"arn:aws:lambda:us-east-1:" + acct + ":function",
		"arn:aws:lambda:us-east-1:" + acct + ":function:",
		"arn:aws:lambda:us-east-1:" + acct + ":function:f:",
		"arn:aws:lambda:us-east-1:" + acct + ":function:f:1:2",
		"arn:aws:lambda:us-east-1:" + acct + ":layer:f",
		"arn:aws:s3:us-east-1:" + acct + ":function:f",
		"arn:azure:lambda:us-east-1:" + acct + ":function:f",
		"arn:aws1:lambda:us-east-1:" + acct + ":function:f",
		"arn:aws:lambda:US-EAST-1:" + acct + ":function:f",
		"arn:aws:lambda:1us:" + acct + ":function:f",
		"arn:aws:lambda::" + acct + ":function:f",
		"arn:aws:lambda:us-east-1::function:f",
		"ARN:aws:lambda:us-east-1:" + acct + ":function:f",
		"arn:aws:lambda:us-east-1:" + acct + ":function:f g",
		strings.Repeat(":", 20),
	}
	for _, in := range cases {
		_, err := ParseFunction(in)
		if !errdefs.Is(err, errdefs.KindValidation) {
			t.Errorf("ParseFunction(%q) err = %v, want ValidationException", in, err)
			continue
		}
		want := "1 validation error detected: Value '" + in + "' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternFunctionName
		if err.Error() != want {
			t.Errorf("ParseFunction(%q) message\n got %s\nwant %s", in, err, want)
		}
	}
}

func TestParseFunctionMessages(t *testing.T) {
	long := strings.Repeat("a", 141)
	_, err := ParseFunction(long)
	want := "1 validation error detected: Value '" + long + "' at 'functionName' failed to satisfy constraint: Member must have length less than or equal to 140"
	if err == nil || err.Error() != want || !errdefs.Is(err, errdefs.KindValidation) {
		t.Errorf("141 chars: %v", err)
	}
	// A string breaking both rules gets only the pattern message.
	both := strings.Repeat("a b", 100)
	_, err = ParseFunction(both)
	if err == nil || !strings.HasPrefix(err.Error(), "1 validation error detected:") ||
		!strings.HasSuffix(err.Error(), PatternFunctionName) {
		t.Errorf("long and bad: %v", err)
	}
	_, err = ParseFunction("")
	want = "2 validation errors detected: Value '' at 'functionName' failed to satisfy constraint: Member must have length greater than or equal to 1; Value '' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternFunctionName
	if err == nil || err.Error() != want {
		t.Errorf("empty: %v", err)
	}
	// A '%' in hostile input must come back verbatim.
	_, err = ParseFunction("%s%d%!")
	if err == nil || !strings.Contains(err.Error(), "Value '%s%d%!'") {
		t.Errorf("percent: %v", err)
	}
}

func TestShapes(t *testing.T) {
	ns := []struct {
		in   string
		want FunctionRef
	}{
		{"my.fn", FunctionRef{Name: "my.fn"}},
		{"f:$LATEST.PUBLISHED", FunctionRef{Name: "f", Qualifier: "$LATEST.PUBLISHED"}},
		{"arn:aws:lambda:eu-west-1:" + acct + ":function:a.b:live",
			FunctionRef{Partition: "aws", Region: "eu-west-1", AccountID: acct, Name: "a.b", Qualifier: "live"}},
		{strings.Repeat("n", 256), FunctionRef{Name: strings.Repeat("n", 256)}},
	}
	for _, c := range ns {
		got, err := ParseFunctionShape(c.in, ShapeNamespaced)
		if err != nil || got != c.want {
			t.Errorf("namespaced %q = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"f:a.b", "f:$LATEST.published", "f:$LATEST."} {
		_, err := ParseFunctionShape(in, ShapeNamespaced)
		if err == nil || !strings.HasSuffix(err.Error(), PatternNamespacedFunctionName) {
			t.Errorf("namespaced %q: %v", in, err)
		}
	}
	_, err := ParseFunctionShape(strings.Repeat("n", 257), ShapeNamespaced)
	if err == nil || !strings.HasSuffix(err.Error(), "less than or equal to 256") {
		t.Errorf("namespaced 257: %v", err)
	}

	if r, err := ParseFunctionShape(acct+":function:f", ShapeUnqualified); err != nil || r.Name != "f" {
		t.Errorf("unqualified: %+v %v", r, err)
	}
	for _, in := range []string{"f:1", "f:$LATEST", acct + ":function:f:a", "arn:aws:lambda:us-east-1:" + acct + ":function:f:1"} {
		_, err := ParseFunctionShape(in, ShapeUnqualified)
		if err == nil || !strings.HasSuffix(err.Error(), PatternUnqualifiedFunctionName) {
			t.Errorf("unqualified %q: %v", in, err)
		}
	}
}

func TestParseCreateFunctionName(t *testing.T) {
	if r, err := ParseCreateFunctionName(strings.Repeat("a", 64)); err != nil || r.Name != strings.Repeat("a", 64) {
		t.Errorf("64 chars: %v", err)
	}
	// A bare name over 64 is InvalidParameterValue, not Validation.
	long := strings.Repeat("a", 65)
	_, err := ParseCreateFunctionName(long)
	want := "1 validation error detected: Value '" + long + "' at 'functionName' failed to satisfy constraint: Member must have length less than or equal to 64"
	if !errdefs.Is(err, errdefs.KindInvalidParameter) || err.Error() != want {
		t.Errorf("65 chars: %v", err)
	}
	// ARN forms may be longer than 64 in total.
	full := "arn:aws:lambda:us-east-1:" + acct + ":function:" + strings.Repeat("b", 64)
	if r, err := ParseCreateFunctionName(full); err != nil || r.Region != "us-east-1" {
		t.Errorf("full ARN: %+v %v", r, err)
	}
	tooLong := "arn:aws:lambda:us-east-1:" + acct + ":function:" + strings.Repeat("b", 110)
	_, err = ParseCreateFunctionName(tooLong)
	if !errdefs.Is(err, errdefs.KindValidation) || !strings.HasSuffix(err.Error(), "less than or equal to 140") {
		t.Errorf("full ARN 150: %v", err)
	}
	// CreateFunction reports every violation.
	bad := strings.Repeat("x y", 50)
	_, err = ParseCreateFunctionName(bad)
	want = "2 validation errors detected: Value '" + bad + "' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternFunctionName +
		"; Value '" + bad + "' at 'functionName' failed to satisfy constraint: Member must have length less than or equal to 140"
	if !errdefs.Is(err, errdefs.KindValidation) || err.Error() != want {
		t.Errorf("bad and long:\n got %v\nwant %s", err, want)
	}
	if r, err := ParseCreateFunctionName("f:v1"); err != nil || r.Qualifier != "v1" {
		t.Errorf("qualifier kept for the caller: %+v %v", r, err)
	}
}

func TestResolveQualifier(t *testing.T) {
	named := FunctionRef{Name: "f", Qualifier: "live"}
	plain := FunctionRef{Name: "f"}
	cases := []struct {
		ref   FunctionRef
		query string
		want  string
		kind  errdefs.Kind // KindUnknown: no error
	}{
		{plain, "", "", 0},
		{plain, "3", "3", 0},
		{plain, "$LATEST", "$LATEST", 0},
		{plain, "$LATEST.PUBLISHED", "$LATEST.PUBLISHED", 0},
		{named, "", "live", 0},
		{named, "live", "live", 0},
		{named, "prod", "", errdefs.KindInvalidParameter},
		{named, "$LATEST", "", errdefs.KindInvalidParameter},
		{plain, "bad qualifier", "", errdefs.KindValidation},
		{plain, "a.b", "", errdefs.KindValidation},
		{plain, strings.Repeat("q", 129), "", errdefs.KindValidation},
		// Validation comes before the conflict check.
		{named, "bad/one", "", errdefs.KindValidation},
	}
	for _, c := range cases {
		got, err := ResolveQualifier(c.ref, c.query)
		if errdefs.KindOf(err) != c.kind || (c.kind == 0 && err != nil) {
			t.Errorf("ResolveQualifier(%+v, %q) err = %v, want kind %d", c.ref, c.query, err, c.kind)
			continue
		}
		if got != c.want {
			t.Errorf("ResolveQualifier(%+v, %q) = %q, want %q", c.ref, c.query, got, c.want)
		}
	}
	_, err := ResolveQualifier(named, "prod")
	if err == nil || err.Error() != "The derived qualifier from the function name does not match the specified qualifier." {
		t.Errorf("conflict message: %v", err)
	}
	_, err = ResolveQualifier(plain, "a b")
	want := "1 validation error detected: Value 'a b' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternNumericLatestPublishedOrAliasQualifier
	if err == nil || err.Error() != want {
		t.Errorf("qualifier message: %v", err)
	}
	long := strings.Repeat("!", 129)
	_, err = ResolveQualifier(plain, long)
	if err == nil || !strings.HasPrefix(err.Error(), "2 validation errors detected: Value '"+long+"' at 'qualifier' failed to satisfy constraint: Member must have length less than or equal to 128; ") {
		t.Errorf("two violations: %v", err)
	}

	if _, err := ResolveQualifierShape(plain, "$LATEST.PUBLISHED", QualifierPlain); err == nil ||
		!strings.HasSuffix(err.Error(), PatternQualifier) {
		t.Errorf("plain shape rejects .PUBLISHED: %v", err)
	}
	if q, err := ResolveQualifierShape(plain, "1", QualifierPlain); err != nil || q != "1" {
		t.Errorf("plain shape: %q %v", q, err)
	}
	for _, bad := range []string{"1", "42", "$LATEST"} {
		if _, err := ResolveQualifierShape(plain, bad, QualifierFunctionURL); err == nil ||
			!strings.HasSuffix(err.Error(), PatternFunctionURLQualifier) {
			t.Errorf("URL shape %q: %v", bad, err)
		}
	}
	if q, err := ResolveQualifierShape(plain, "live", QualifierFunctionURL); err != nil || q != "live" {
		t.Errorf("URL shape alias: %q %v", q, err)
	}
}

func TestBuildersRoundTrip(t *testing.T) {
	a := Function("us-east-1", acct, "f")
	if a != "arn:aws:lambda:us-east-1:123456789012:function:f" {
		t.Errorf("Function = %s", a)
	}
	q := Qualified("us-east-1", acct, "f", "$LATEST")
	if q != a+":$LATEST" {
		t.Errorf("Qualified = %s", q)
	}
	if Qualified("us-east-1", acct, "f", "") != a {
		t.Errorf("empty qualifier must give the unqualified ARN")
	}
	for _, s := range []string{a, q, Qualified("local", acct, "f", "7")} {
		r, err := ParseFunction(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if Qualified(r.Region, r.AccountID, r.Name, r.Qualifier) != s {
			t.Errorf("round trip of %s gave %+v", s, r)
		}
	}
	if r, err := ParseResource(a); err != nil || Function(r.Region, r.AccountID, r.Name) != a {
		t.Errorf("ParseResource(%s) = %+v, %v", a, r, err)
	}

	l := Layer("us-east-1", acct, "deps")
	if l != "arn:aws:lambda:us-east-1:123456789012:layer:deps" {
		t.Errorf("Layer = %s", l)
	}
	lv := LayerVersion("us-east-1", acct, "deps", 3)
	if lv != l+":3" {
		t.Errorf("LayerVersion = %s", lv)
	}
	r, err := ParseLayerVersion(lv)
	if err != nil || r != (LayerVersionRef{Partition: "aws", Region: "us-east-1", AccountID: acct, Name: "deps", Version: 3}) {
		t.Errorf("ParseLayerVersion = %+v, %v", r, err)
	}
	if r.String() != lv {
		t.Errorf("LayerVersionRef.String = %s", r.String())
	}
	reg, ac, name, err := ParseLayerName(l)
	if err != nil || reg != "us-east-1" || ac != acct || name != "deps" {
		t.Errorf("ParseLayerName(arn) = %s %s %s %v", reg, ac, name, err)
	}
}

func TestParseLayer(t *testing.T) {
	reg, ac, name, err := ParseLayerName("my_layer-1")
	if err != nil || reg != "" || ac != "" || name != "my_layer-1" {
		t.Errorf("bare layer name: %q %q %q %v", reg, ac, name, err)
	}
	for _, bad := range []string{"", "a b", "a:b", "arn:aws:lambda:us-east-1:" + acct + ":layer:x:1",
		"arn:aws:lambda:us-east-1:" + acct + ":function:x", "arn:aws:lambda:us_east:" + acct + ":layer:x",
		"arn:aws:lambda:us-east-1:1234:layer:x"} {
		_, _, _, err := ParseLayerName(bad)
		if !errdefs.Is(err, errdefs.KindValidation) || !strings.HasSuffix(err.Error(), PatternLayerName) ||
			!strings.Contains(err.Error(), "at 'layerName'") {
			t.Errorf("ParseLayerName(%q): %v", bad, err)
		}
	}
	_, _, _, err = ParseLayerName(strings.Repeat("l", 141))
	if err == nil || !strings.HasSuffix(err.Error(), "less than or equal to 140") {
		t.Errorf("long layer name: %v", err)
	}

	// The layer patterns admit partitions and regions the function ones do not.
	r, err := ParseLayerVersion("arn:custom-1:lambda:Region-X:" + acct + ":layer:x:0")
	if err != nil || r.Partition != "custom-1" || r.Region != "Region-X" || r.Version != 0 {
		t.Errorf("loose layer ARN: %+v %v", r, err)
	}
	for _, bad := range []string{
		"arn:aws:lambda:us-east-1:" + acct + ":layer:x",
		"arn:aws:lambda:us-east-1:" + acct + ":layer:x:",
		"arn:aws:lambda:us-east-1:" + acct + ":layer:x:-1",
		"arn:aws:lambda:us-east-1:" + acct + ":layer:x:1:2",
		"arn:aws:lambda:us-east-1:" + acct + ":layer:x:99999999999999999999", // overflows int64
		"arn:aws:lambda:us-east-1:" + acct + ":function:x:1",
		"arn::lambda:us-east-1:" + acct + ":layer:x:1",
	} {
		_, err := ParseLayerVersion(bad)
		want := "1 validation error detected: Value '" + bad + "' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternLayerVersionArn
		if err == nil || err.Error() != want {
			t.Errorf("ParseLayerVersion(%q): %v", bad, err)
		}
	}
	longArn := "arn:aws:lambda:us-east-1:" + acct + ":layer:" + strings.Repeat("z", 120) + ":1"
	if _, err := ParseLayerVersion(longArn); err == nil || !strings.HasSuffix(err.Error(), "less than or equal to 140") {
		t.Errorf("long layer version ARN: %v", err)
	}
}

func TestParseResource(t *testing.T) {
	base := "arn:aws:lambda:us-east-1:" + acct + ":"
	_, err := ParseResource(base + "function:f:live")
	if !errdefs.Is(err, errdefs.KindInvalidParameter) ||
		err.Error() != "Tags on function aliases and versions are not supported. Please specify a function ARN." {
		t.Errorf("qualified: %v", err)
	}
	for _, other := range []string{
		base + "code-signing-config:csc-0123456789abcdefg",
		base + "event-source-mapping:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
		base + "capacity-provider:cp-1",
	} {
		if _, err := ParseResource(other); !errdefs.Is(err, errdefs.KindNotFound) {
			t.Errorf("%s: %v", other, err)
		}
	}
	for _, bad := range []string{
		"f",
		acct + ":function:f",
		"arn::lambda:us-east-1:" + acct + ":function:f", // partition required here
		base + "function:",
		base + "function:f:",
		base + "function:f:1:2",
		base + "function:a.b",
		base + "layer:x",
		base + "layer:x:1",
		base + "code-signing-config:csc-short",
		base + "event-source-mapping:not-a-uuid",
		base + "event-source-mapping:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b:1",
		"arn:aws:lambda:us-east-1:" + acct,
	} {
		_, err := ParseResource(bad)
		want := "1 validation error detected: Value '" + bad + "' at 'resource' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternTaggableResource
		if err == nil || err.Error() != want {
			t.Errorf("ParseResource(%q): %v", bad, err)
		}
	}
	long := base + "function:" + strings.Repeat("f", 230)
	if _, err := ParseResource(long); err == nil || !strings.HasSuffix(err.Error(), "less than or equal to 256") {
		t.Errorf("long resource: %v", err)
	}
}

func TestValidators(t *testing.T) {
	for _, c := range []struct {
		s                    string
		name, alias, version bool
	}{
		{"f", true, true, false},
		{"live-1_x", true, true, false},
		{"12", true, false, true},
		{"0", true, false, true},
		{"$LATEST", false, false, true},
		{"", false, false, false},
		{"a b", false, false, false},
		{"a.b", false, false, false},
		{strings.Repeat("a", 64), true, true, false},
		{strings.Repeat("a", 65), false, true, false},
		{strings.Repeat("a", 128), false, true, false},
		{strings.Repeat("a", 129), false, false, false},
	} {
		if got := ValidFunctionName(c.s); got != c.name {
			t.Errorf("ValidFunctionName(%q) = %v", c.s, got)
		}
		if got := ValidAliasName(c.s); got != c.alias {
			t.Errorf("ValidAliasName(%q) = %v", c.s, got)
		}
		if got := ValidVersion(c.s); got != c.version {
			t.Errorf("ValidVersion(%q) = %v", c.s, got)
		}
		err := ValidateAlias(c.s)
		if (err == nil) != c.alias {
			t.Errorf("ValidateAlias(%q) = %v", c.s, err)
		}
	}
	err := ValidateAlias("42")
	want := "1 validation error detected: Value '42' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: " + PatternAlias
	if err == nil || err.Error() != want || !errdefs.Is(err, errdefs.KindValidation) {
		t.Errorf("ValidateAlias(42) = %v", err)
	}
}

func TestCheckRegion(t *testing.T) {
	r, _ := ParseFunction("arn:aws:lambda:us-west-2:" + acct + ":function:f")
	err := r.CheckRegion("us-east-1")
	if !errdefs.Is(err, errdefs.KindNotFound) ||
		err.Error() != "Functions from 'us-west-2' are not reachable in this region ('us-east-1')" {
		t.Errorf("CheckRegion: %v", err)
	}
	if err := r.CheckRegion("us-west-2"); err != nil {
		t.Errorf("same region: %v", err)
	}
	if err := (FunctionRef{Name: "f"}).CheckRegion("us-east-1"); err != nil {
		t.Errorf("no region: %v", err)
	}
}

// oracle is the language ParseFunction accepts, written as one anchored
// regular expression: the model's pattern restricted to the documented forms,
// with nubo's looser region class. The hand-written parser must agree with it.
var oracle = regexp.MustCompile(`^(?:arn:(?:aws[a-zA-Z-]*)?:lambda:[a-z][a-z0-9-]*:\d{12}:function:|\d{12}:function:)?[a-zA-Z0-9_-]+(?::(?:\$LATEST|[a-zA-Z0-9_-]+))?$`)

func TestParseFunctionMatchesOracle(t *testing.T) {
	atoms := []string{"", "arn", "aws", "aws-cn", "lambda", "us-east-1", "local", acct, "function", "f", "$LATEST", "1", ":", "::", ".", " ", "x:y", "Us"}
	n, accepted := 0, 0
	for _, a := range atoms {
		for _, b := range atoms {
			for _, c := range atoms {
				for _, d := range []string{"", ":f", ":function:f", ":" + acct + ":function:f:1"} {
					s := a + ":" + b + c + d
					if n%3 == 0 {
						s = a + b + ":" + c + d
					}
					n++
					_, err := ParseFunction(s)
					if want := oracle.MatchString(s) && len(s) <= 140; (err == nil) != want {
						t.Errorf("ParseFunction(%q) err=%v, oracle says accept=%v", s, err, want)
					}
					if err == nil {
						accepted++
					}
				}
			}
		}
	}
	// Both sides of the language must be exercised for the comparison to mean anything.
	if accepted < 50 || n-accepted < 50 {
		t.Fatalf("generator too narrow: %d of %d accepted", accepted, n)
	}
	t.Logf("%d of %d accepted", accepted, n)
}
