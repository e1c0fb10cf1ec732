package runtimeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

var (
	// ErrBusy is returned by Invoke while another invocation is in flight.
	ErrBusy = errdefs.Conflict("execution environment is busy with another invocation")
	// ErrShutdown is returned by Invoke after Shutdown.
	ErrShutdown = errdefs.New(errdefs.KindServiceUnavailable, "execution environment is shutting down")
	// ErrRuntimeReset ends an invocation that was in flight when ResetRuntime
	// was called.
	ErrRuntimeReset = errors.New("runtimeapi: runtime reset while an invocation was in flight")
)

// InitError reports a failed init phase: the runtime posted
// /runtime/init/error, or an extension posted /extension/init/error or
// /extension/exit/error, or died before finishing its init.
type InitError struct {
	// Type is the Lambda error type: the runtime's (from the
	// Lambda-Runtime-Function-Error-Type header when it is a valid
	// Runtime.*/Function.* type, else the payload's errorType, else
	// Runtime.Unknown), or Extension.InitError, Extension.ExitError,
	// Extension.Crash for extension failures.
	Type string
	// Payload is the body the runtime or extension posted, verbatim; for
	// Extension.Crash it is a generated {"errorMessage","errorType"} document.
	Payload []byte
	// ContentType is the Content-Type the runtime sent with the payload.
	ContentType string
	// Extension names the failing extension; empty when the runtime failed.
	Extension string
	// ExtensionErrorType is the extension's Lambda-Extension-Function-Error-Type.
	ExtensionErrorType string
}

func (e *InitError) Error() string {
	if e.Extension != "" {
		return fmt.Sprintf("init failed: extension %q: %s", e.Extension, e.Type)
	}
	return "init failed: runtime: " + e.Type
}

// RuntimeExitError reports that the runtime process died, before or during
// an invocation. The agent turns it into Runtime.ExitError.
type RuntimeExitError struct {
	RequestID string // invocation that was pending or in flight; empty during init
	Reason    string // "exit status 2", "signal: killed"; empty when unknown
}

func (e *RuntimeExitError) Error() string {
	if e.Reason == "" {
		return "Runtime exited without providing a reason"
	}
	return "Runtime exited with error: " + e.Reason
}

// errorResponse is the body of every error this API returns.
type errorResponse struct {
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}

// Error types and messages as the Runtime Interface Emulator renders them.
const (
	errTypeInvalidStateTransition = "InvalidStateTransition"
	errTypeInvalidRequestID       = "InvalidRequestID"
	errTypeTooLarge               = "RequestEntityTooLarge"
	errTypeTruncated              = "TruncatedHTTPRequest"
	errTypeInvalidResponseMode    = "InvalidFunctionResponseMode"

	errExtMissingID      = "Extension.MissingExtensionIdentifier"
	errExtInvalidID      = "Extension.InvalidExtensionIdentifier"
	errExtUnknownID      = "Extension.UnknownExtensionIdentifier"
	errExtInvalidName    = "Extension.InvalidExtensionName"
	errExtRegClosed      = "Extension.RegistrationClosed"
	errExtInvalidState   = "Extension.InvalidExtensionState"
	errExtMissingHeader  = "Extension.MissingHeader"
	errExtTooMany        = "Extension.TooManyExtensions"
	errExtInvalidEvent   = "Extension.InvalidEventType"
	errInvalidReqFormat  = "InvalidRequestFormat"
	transitionNotAllowed = "State transition is not allowed"
)

// Error types of payloads the platform produces for the caller.
const (
	typeOversizedResponse   = "Function.ResponseSizeTooLarge"
	typeTruncatedResponse   = "Runtime.TruncatedResponse"
	typeInvalidResponseMode = "Runtime.InvalidResponseModeHeader"
	typeRuntimeUnknown      = "Runtime.Unknown"
	typeFunctionUnknown     = "Function.Unknown"
	typeExtInitError        = "Extension.InitError"
	typeExtExitError        = "Extension.ExitError"
	typeExtCrash            = "Extension.Crash"
)

func renderJSON(w responseWriter, status int, v any) {
	var buf bytes.Buffer
	// An Encoder with HTML escaping and a trailing newline, as the RIE
	// renders; clients only parse it, but identical bytes cost nothing.
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v) // only plain structs of strings are rendered
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func renderError(w responseWriter, status int, errType, format string, args ...any) {
	renderJSON(w, status, errorResponse{ErrorMessage: fmt.Sprintf(format, args...), ErrorType: errType})
}

func renderAccepted(w responseWriter) {
	renderJSON(w, statusAccepted, struct {
		Status string `json:"status"`
	}{"OK"})
}

func renderRuntimeTransition(w responseWriter, from, to, why string) {
	renderError(w, statusForbidden, errTypeInvalidStateTransition,
		"State transition from %s to %s failed for runtime. Error: %s", from, to, why)
}

func renderExtensionTransition(w responseWriter, from, to, ext string) {
	renderError(w, statusForbidden, errExtInvalidState,
		"State transition from %s to %s failed for extension %s. Error: %s", from, to, ext, transitionNotAllowed)
}

func renderInvalidRequestID(w responseWriter) {
	renderError(w, statusBadRequest, errTypeInvalidRequestID, "Invalid request ID")
}

// platformError builds the payload the caller sees for an error the platform,
// not the function, detected.
func platformError(errType, message string) []byte {
	b, _ := json.Marshal(errorResponse{ErrorMessage: message, ErrorType: errType})
	return b
}

// validErrorType is the RIE's rule for Lambda-Runtime-Function-Error-Type,
// `(Runtime|Function)\.[A-Z][a-zA-Z]+`, anchored here: the RIE matches it
// anywhere in the string, which would let "x Runtime.Foo y" through.
// Checked by hand: a package-level regexp is compiled at every agent's start.
func validErrorType(s string) bool {
	rest, ok := strings.CutPrefix(s, "Runtime.")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "Function."); !ok {
			return false
		}
	}
	if len(rest) < 2 || rest[0] < 'A' || rest[0] > 'Z' {
		return false
	}
	for i := 1; i < len(rest); i++ {
		if c := rest[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// errorTypeOf picks the error type of a runtime-reported error: the header
// when it is a valid Runtime.*/Function.* type, else the payload's errorType
// (what aws-lambda-go and most runtimes send), else the RIE's fallbacks.
func errorTypeOf(header string, payload []byte) string {
	if validErrorType(header) {
		return header
	}
	var doc struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(payload, &doc) == nil && doc.ErrorType != "" && headerSafe(doc.ErrorType) && len(doc.ErrorType) <= 1024 {
		return doc.ErrorType
	}
	if strings.HasPrefix(header, "Function.") {
		return typeFunctionUnknown
	}
	return typeRuntimeUnknown
}

// headerSafe reports whether s can travel in an HTTP header value unchanged:
// no control characters other than tab (a CR or LF would let a value inject
// headers into the runtime's /next response).
func headerSafe[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
