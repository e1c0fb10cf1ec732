package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/sigv4"
)

// apiError is an error already in AWS's terms.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// awsCodes maps each domain kind to AWS's status and code. Whether the body
// says "Message" or "message" follows what AWS sends for each code
// (LAMBDA-WIRE.md §2): capitalised for ResourceNotFound and Service errors.
var awsCodes = map[errdefs.Kind]struct {
	status int
	code   string
}{
	errdefs.KindNotFound:             {404, "ResourceNotFoundException"},
	errdefs.KindConflict:             {409, "ResourceConflictException"},
	errdefs.KindInvalidParameter:     {400, "InvalidParameterValueException"},
	errdefs.KindValidation:           {400, "ValidationException"},
	errdefs.KindPrecondition:         {412, "PreconditionFailedException"},
	errdefs.KindTooLarge:             {413, "RequestEntityTooLargeException"},
	errdefs.KindInvalidContent:       {400, "InvalidRequestContentException"},
	errdefs.KindThrottled:            {429, "TooManyRequestsException"},
	errdefs.KindProvisionedNotFound:  {404, "ProvisionedConcurrencyConfigNotFoundException"},
	errdefs.KindCodeStorageExceeded:  {400, "CodeStorageExceededException"},
	errdefs.KindInvalidZip:           {502, "InvalidZipFileException"},
	errdefs.KindUnsupportedMediaType: {415, "UnsupportedMediaTypeException"},
	errdefs.KindResourceNotReady:     {502, "ResourceNotReadyException"},
	errdefs.KindServiceUnavailable:   {503, "ServiceException"},
}

// writeError renders any error as AWS does: status, x-amzn-ErrorType, and a
// JSON body with Type and the message.
// statusOf is the HTTP status and message the API gives err, for answers
// that are not Lambda API errors (function URLs); 500 for an unknown one.
func statusOf(err error) (int, string) {
	var de *errdefs.Error
	if errors.As(err, &de) && de.Kind != errdefs.KindUnknown {
		return awsCodes[de.Kind].status, de.Message
	}
	return http.StatusInternalServerError, "Internal Server Error"
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		status         int
		code, msg      string
		reason         string
		retryAfter     int
		capitalMessage bool
		typ            = "User"
		de             *errdefs.Error
		ae             *apiError
		se             *sigv4.Error
	)
	switch {
	case errors.As(err, &ae):
		status, code, msg = ae.status, ae.code, ae.message
	case errors.As(err, &se):
		status, code, msg = se.Status, se.Code, se.Message
	case errors.As(err, &de) && de.Kind != errdefs.KindUnknown:
		m := awsCodes[de.Kind]
		status, code, msg, reason, retryAfter = m.status, m.code, de.Message, de.Reason, de.RetryAfter
	case errors.Is(err, context.Canceled):
		// The client went away; nothing useful can be sent.
		return
	default:
		a.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "request_id", RequestID(r), "err", err)
		status, code, msg, typ = 500, "ServiceException", "An internal error occurred. See the nubo server log for request "+RequestID(r)+".", "Service"
	}
	switch code {
	case "ResourceNotFoundException", "ServiceException", "ProvisionedConcurrencyConfigNotFoundException":
		capitalMessage = true
	}
	body := map[string]any{"Type": typ}
	if capitalMessage {
		body["Message"] = msg
	} else {
		body["message"] = msg
	}
	if reason != "" {
		body["Reason"] = reason
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.Header().Set("x-amzn-ErrorType", code)
	if status >= 500 {
		a.log.Warn("request failed", "status", status, "code", code, "request_id", RequestID(r))
	}
	writeJSON(w, status, body)
}
