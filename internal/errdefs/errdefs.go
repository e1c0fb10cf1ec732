// Package errdefs defines the kinds of failure that nubo's domain packages
// report. Domain code returns an *Error carrying a kind and the exact message
// AWS would show; the API edge (package api) is the one place that maps a kind
// to an HTTP status and an AWS error code.
//
// Errors that are not *Error values (a broken disk, a lost NATS connection)
// reach clients as ServiceException (500) with a generic message; their detail
// goes to the server log only.
package errdefs

import (
	"errors"
	"fmt"
)

// Kind names a class of failure. The API edge maps each to an AWS code.
type Kind int

// The kinds, each annotated with the AWS error it becomes at the API edge.
const (
	KindUnknown              Kind = iota // ServiceException 500
	KindNotFound                         // ResourceNotFoundException 404
	KindConflict                         // ResourceConflictException 409
	KindInvalidParameter                 // InvalidParameterValueException 400
	KindValidation                       // ValidationException 400
	KindPrecondition                     // PreconditionFailedException 412
	KindTooLarge                         // RequestEntityTooLargeException 413
	KindInvalidContent                   // InvalidRequestContentException 400
	KindThrottled                        // TooManyRequestsException 429
	KindProvisionedNotFound              // ProvisionedConcurrencyConfigNotFoundException 404
	KindCodeStorageExceeded              // CodeStorageExceededException 400
	KindInvalidZip                       // InvalidZipFileException 502 on invoke, InvalidParameterValue on create
	KindUnsupportedMediaType             // UnsupportedMediaTypeException 415
	KindResourceNotReady                 // ResourceNotReadyException 502
	KindServiceUnavailable               // ServiceException 503
)

// Error is a domain failure with the message a client should see.
type Error struct {
	Kind    Kind
	Message string
	// Reason is AWS's machine-readable sub-reason, used by TooManyRequests
	// ("ReservedFunctionConcurrentInvocationLimitExceeded", ...).
	Reason string
	// RetryAfter, in seconds, is sent as Retry-After when non-zero.
	RetryAfter int
	// Err is an optional underlying cause, kept for logs.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func newf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports a missing resource, e.g. NotFound("Function not found: %s", arn).
func NotFound(format string, args ...any) *Error { return newf(KindNotFound, format, args...) }

// Conflict reports a state conflict (already exists, update in progress).
func Conflict(format string, args ...any) *Error { return newf(KindConflict, format, args...) }

// InvalidParameter reports a parameter AWS rejects with InvalidParameterValueException.
func InvalidParameter(format string, args ...any) *Error {
	return newf(KindInvalidParameter, format, args...)
}

// Validation reports a model constraint violation (ValidationException).
func Validation(format string, args ...any) *Error { return newf(KindValidation, format, args...) }

// Precondition reports a RevisionId or CodeSha256 mismatch.
func Precondition(format string, args ...any) *Error { return newf(KindPrecondition, format, args...) }

// TooLarge reports a request entity over a limit.
func TooLarge(format string, args ...any) *Error { return newf(KindTooLarge, format, args...) }

// InvalidContent reports an unparseable request body.
func InvalidContent(format string, args ...any) *Error {
	return newf(KindInvalidContent, format, args...)
}

// Throttled reports a concurrency limit; reason is AWS's Reason field.
func Throttled(reason, format string, args ...any) *Error {
	e := newf(KindThrottled, format, args...)
	e.Reason = reason
	return e
}

// New builds an *Error of any kind.
func New(k Kind, format string, args ...any) *Error { return newf(k, format, args...) }

// KindOf returns the kind of err, or KindUnknown when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

// Is reports whether err is an *Error of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
