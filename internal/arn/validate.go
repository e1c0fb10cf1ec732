package arn

import (
	"strconv"
	"strings"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// violation is one failed model constraint, rendered the way AWS's request
// validator words it.
type violation struct {
	field, value, constraint string
}

func patternConstraint(p string) string {
	return "Member must satisfy regular expression pattern: " + p
}

func maxLenConstraint(n int) string {
	return "Member must have length less than or equal to " + strconv.Itoa(n)
}

func minLenConstraint(n int) string {
	return "Member must have length greater than or equal to " + strconv.Itoa(n)
}

// validationError joins violations into AWS's ValidationException text:
// "2 validation errors detected: Value 'x' at 'f' failed to satisfy
// constraint: ...; Value ...".
func validationError(vs ...violation) *errdefs.Error {
	var b strings.Builder
	b.WriteString(strconv.Itoa(len(vs)))
	if len(vs) == 1 {
		b.WriteString(" validation error detected: ")
	} else {
		b.WriteString(" validation errors detected: ")
	}
	for i, v := range vs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString("Value '")
		b.WriteString(v.value)
		b.WriteString("' at '")
		b.WriteString(v.field)
		b.WriteString("' failed to satisfy constraint: ")
		b.WriteString(v.constraint)
	}
	// The text goes through Validation's format string as an argument so a
	// '%' in a hostile value is printed, not interpreted.
	return errdefs.Validation("%s", b.String())
}
