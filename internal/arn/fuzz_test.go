package arn

import (
	"errors"
	"strings"
	"testing"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

func FuzzParseFunction(f *testing.F) {
	for _, s := range []string{
		"f", "f:1", "f:$LATEST", acct + ":function:f", acct + ":function:f:live",
		"arn:aws:lambda:us-east-1:" + acct + ":function:f",
		"arn:aws-us-gov:lambda:us-gov-west-1:" + acct + ":function:f:$LATEST",
		"arn::lambda:local:" + acct + ":function:a.b:$LATEST.PUBLISHED",
		"a:b:c:d:e:f:g:h:i", "", ":", "arn:aws:lambda:us-east-1:" + acct + ":layer:x:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, shape := range []Shape{ShapeFunctionName, ShapeNamespaced, ShapeUnqualified} {
			r, err := ParseFunctionShape(s, shape)
			if err != nil {
				var e *errdefs.Error
				if !errors.As(err, &e) || e.Kind != errdefs.KindValidation {
					t.Fatalf("shape %d, %q: error %v is not a ValidationException", shape, s, err)
				}
				continue
			}
			if shape == ShapeFunctionName && !oracle.MatchString(s) {
				t.Fatalf("accepted %q outside the oracle language", s)
			}
			out := r.String()
			if out != s {
				t.Fatalf("shape %d: %q re-rendered as %q", shape, s, out)
			}
			r2, err := ParseFunctionShape(out, shape)
			if err != nil || r2 != r {
				t.Fatalf("shape %d: %q -> %+v -> %q -> %+v, %v", shape, s, r, out, r2, err)
			}
			// A qualifier taken from a name always passes the query shape
			// unless it outgrows the query's 128 characters.
			if q, err := ResolveQualifier(r, r.Qualifier); err != nil {
				if len(r.Qualifier) <= 128 {
					t.Fatalf("%q: own qualifier rejected: %v", s, err)
				}
			} else if q != r.Qualifier {
				t.Fatalf("%q: resolved %q", s, q)
			}
		}
		if _, err := ParseCreateFunctionName(s); err != nil && errdefs.KindOf(err) == errdefs.KindUnknown {
			t.Fatalf("create %q: untyped error %v", s, err)
		}
		if _, err := ParseResource(s); err != nil && errdefs.KindOf(err) == errdefs.KindUnknown {
			t.Fatalf("resource %q: untyped error %v", s, err)
		}
		if r, err := ParseLayerVersion(s); err == nil {
			// The pattern lets a version carry leading zeros ("…:007"),
			// read as the number; any other ARN renders back as it came,
			// and a rendered one parses back to the same reference.
			if v := s[strings.LastIndexByte(s, ':')+1:]; r.String() != s && (len(v) == 1 || v[0] != '0') {
				t.Fatalf("layer version %q re-rendered as %q", s, r.String())
			}
			if again, err := ParseLayerVersion(r.String()); err != nil || again != r {
				t.Fatalf("layer version %q: its rendering %q parses as %+v, %v", s, r.String(), again, err)
			}
		}
		_, _, _, _ = ParseLayerName(s)
		_, _ = ResolveQualifier(FunctionRef{Name: "f", Qualifier: "q"}, s)
		_, _ = ResolveQualifierShape(FunctionRef{}, s, QualifierFunctionURL)
	})
}
