package arn

import (
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// QualifierShape is one of the model's shapes for the ?Qualifier= query
// parameter.
type QualifierShape uint8

// The qualifier shapes of the service model.
const (
	// QualifierNumericLatestPublishedOrAlias: "$LATEST", "$LATEST.PUBLISHED"
	// or [a-zA-Z0-9-_$]+. GetFunction, DeleteFunction, Invoke, policies,
	// event-invoke configs.
	QualifierNumericLatestPublishedOrAlias QualifierShape = iota
	// QualifierPlain ("Qualifier"): [a-zA-Z0-9$_-]+. Provisioned concurrency.
	QualifierPlain
	// QualifierFunctionURL ("FunctionUrlQualifier"): an alias name, never a
	// version number (and, in the current model, never "$LATEST").
	QualifierFunctionURL
)

// Qualifier patterns of the service model, quoted in messages.
const (
	PatternNumericLatestPublishedOrAliasQualifier = `\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+`
	PatternQualifier                              = `(|[a-zA-Z0-9$_-]+)`
	PatternFunctionURLQualifier                   = `((?!^\d+$)^[0-9a-zA-Z-_]+$)`
)

// ResolveQualifier merges the qualifier carried by a function name with the
// ?Qualifier= query value (NumericLatestPublishedOrAliasQualifier shape).
// See ResolveQualifierShape.
func ResolveQualifier(ref FunctionRef, query string) (string, error) {
	return ResolveQualifierShape(ref, query, QualifierNumericLatestPublishedOrAlias)
}

// ResolveQualifierShape validates the query qualifier against its shape and
// merges it with ref.Qualifier: either may be given alone, both must agree
// when both are given, and "" means the request named no qualifier. An empty
// query value is taken as absent because the HTTP layer cannot tell
// "?Qualifier=" from no parameter once it reads url.Values.
func ResolveQualifierShape(ref FunctionRef, query string, shape QualifierShape) (string, error) {
	if query != "" {
		if err := validateQualifier(query, shape); err != nil {
			return "", err
		}
	}
	switch {
	case ref.Qualifier == "":
		return query, nil
	case query == "" || query == ref.Qualifier:
		return ref.Qualifier, nil
	default:
		return "", errdefs.InvalidParameter("The derived qualifier from the function name does not match the specified qualifier.")
	}
}

func validateQualifier(q string, shape QualifierShape) error {
	var ok bool
	var pattern string
	switch shape {
	case QualifierPlain:
		ok, pattern = isQualifierChars(q), PatternQualifier
	case QualifierFunctionURL:
		ok, pattern = isNameChars(q, false) && !isDigits(q), PatternFunctionURLQualifier
	default:
		ok, pattern = q == LatestPublished || isQualifierChars(q), PatternNumericLatestPublishedOrAliasQualifier
	}
	var vs []violation
	if utf8.RuneCountInString(q) > 128 {
		vs = append(vs, violation{"qualifier", q, maxLenConstraint(128)})
	}
	if !ok {
		vs = append(vs, violation{"qualifier", q, patternConstraint(pattern)})
	}
	if len(vs) > 0 {
		return validationError(vs...)
	}
	return nil
}

// isQualifierChars matches [a-zA-Z0-9-_$]+.
func isQualifierChars(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '$') {
			return false
		}
	}
	return true
}
