package runtimeapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strconv"
)

const (
	hdrErrorType    = "Lambda-Runtime-Function-Error-Type"
	hdrErrorBody    = "Lambda-Runtime-Function-Error-Body"
	hdrResponseMode = "Lambda-Runtime-Function-Response-Mode"

	// errorWithCauseType is the Content-Type of an /error body that carries
	// an X-Ray errorCause next to the error; the cause is stripped before the
	// error reaches the caller.
	errorWithCauseType = "application/vnd.aws.lambda.error.cause+json"
)

// runtimeNext serves GET /runtime/invocation/next.
func (s *Server) runtimeNext(w responseWriter, r *request) {
	ctx := r.Context()
	s.mu.Lock()
	switch s.rt {
	case rtInitError, rtRunning, rtAnswering, rtExited:
		// A /next while an invocation is in flight would either deliver it a
		// second time (the RIE re-renders it) or lose it; refuse instead.
		from := s.rt
		s.mu.Unlock()
		renderRuntimeTransition(w, from.String(), rtReady.String(), transitionNotAllowed)
		return
	case rtStarted, rtResponded:
		s.rt = rtReady
		s.rtNexted = true
	}
	s.supersedeRuntimeLocked("superseded by a newer /runtime/invocation/next request")
	wt := newWaiter()
	s.rtWaiter = wt
	s.broadcastLocked()
	for {
		if wt.superseded != "" {
			s.mu.Unlock()
			renderRuntimeTransition(w, rtReady.String(), rtReady.String(), wt.superseded)
			return
		}
		// A request whose client is gone must not claim the invocation: the
		// runtime would never see it.
		if c := s.queued; c != nil && ctx.Err() == nil {
			s.queued, s.current, s.rtWaiter = nil, c, nil
			s.rt = rtRunning
			s.broadcastLocked()
			s.mu.Unlock()
			writeInvocation(w, c)
			return
		}
		s.mu.Unlock()
		select {
		case <-wt.wake:
		case <-ctx.Done():
			s.mu.Lock()
			if s.rtWaiter == wt {
				s.rtWaiter = nil
				s.broadcastLocked()
			}
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
	}
}

// runtimeAnswer serves POST /runtime/invocation/{id}/response and /error.
func (s *Server) runtimeAnswer(w responseWriter, r *request, id string, isError bool) {
	target := "InvocationResponse"
	if isError {
		target = "InvocationErrorResponse"
	}
	s.mu.Lock()
	switch s.rt {
	case rtStarted, rtInitError, rtExited:
		from := s.rt
		s.mu.Unlock()
		renderRuntimeTransition(w, from.String(), target, transitionNotAllowed)
		return
	case rtRunning:
		if s.current != nil && s.current.inv.RequestID == id {
			break
		}
		fallthrough
	default:
		// Not the invocation in flight: unknown, already answered, or being
		// answered by a concurrent request.
		s.mu.Unlock()
		renderInvalidRequestID(w)
		return
	}
	c, gen := s.current, s.gen
	s.rt = rtAnswering
	s.mu.Unlock()

	var res *Result
	var status int
	var errType, msg string
	if inv := c.inv; !isError && inv.Stream != nil && r.Header.Get(hdrResponseMode) == "streaming" {
		res, status, errType, msg = streamAnswer(r, inv)
	} else {
		res, status, errType, msg = s.readAnswer(r, isError)
	}

	s.mu.Lock()
	if s.gen != gen || s.current != c {
		// The runtime was reset or died while its answer was being read.
		s.mu.Unlock()
		renderInvalidRequestID(w)
		return
	}
	s.current = nil
	s.rt = rtResponded
	s.finishLocked(c, res, nil)
	s.broadcastLocked()
	s.mu.Unlock()
	// The answer goes on to the caller (the agent's Result to the host)
	// before the runtime hears back: with one P, as the agent runs, this
	// goroutine would otherwise write the 202 first, and that write wakes
	// the runtime, which on a VM costs more than the rest of the hop.
	runtime.Gosched()

	if status == statusAccepted {
		renderAccepted(w)
		return
	}
	s.log.Warn("runtime answer rejected", "requestId", id, "errorType", errType, "error", msg)
	renderError(w, status, errType, "%s", msg)
}

// readAnswer reads a /response or /error body and turns it into the caller's
// Result. A body the server refuses (too large, truncated, bad response mode)
// still ends the invocation, with a platform error payload for the caller,
// and the runtime gets the returned non-202 status.
func (s *Server) readAnswer(r *request, isError bool) (res *Result, status int, errType, msg string) {
	if !isError {
		if mode := r.Header.Get(hdrResponseMode); mode != "" && mode != "streaming" {
			// Streaming responses are buffered like any other for now: the
			// caller still gets the whole body, only later.
			return &Result{
				Payload:       platformError(typeInvalidResponseMode, "Invalid function response mode"),
				ContentType:   "application/json",
				FunctionError: true,
				ErrorType:     typeInvalidResponseMode,
			}, statusBadRequest, errTypeInvalidResponseMode, "Invalid function response mode"
		}
	}
	body, err := s.readBody(r.Body, s.maxBody)
	switch {
	case errors.Is(err, errTooLarge):
		return answerTooLarge(s.maxBody)
	case err != nil:
		return answerTruncated(err)
	}
	ct := r.Header.Get("Content-Type")
	if isError {
		if ct == errorWithCauseType {
			body, ct = stripErrorCause(body)
		}
		return &Result{
			Payload:       body,
			ContentType:   ct,
			FunctionError: true,
			ErrorType:     errorTypeOf(r.Header.Get(hdrErrorType), body),
		}, statusAccepted, "", ""
	}
	// aws-lambda-go declares these trailers on every response and fills them
	// when reading the handler's io.Reader fails midway; the body sent so far
	// is then incomplete and the trailers carry the real outcome.
	if res := trailerError(r); res != nil {
		return res, statusAccepted, "", ""
	}
	return &Result{Payload: body, ContentType: ct}, statusAccepted, "", ""
}

// trailerError is the outcome error trailers report, once a body has been
// read to its end, or nil.
func trailerError(r *request) *Result {
	t := r.Trailer.Get(hdrErrorType)
	if t == "" {
		return nil
	}
	payload, err := base64.StdEncoding.DecodeString(r.Trailer.Get(hdrErrorBody))
	if err != nil || !json.Valid(payload) {
		payload = platformError(t, "Invalid error body")
	}
	return &Result{Payload: payload, ContentType: "application/json", FunctionError: true, ErrorType: t}
}

// streamAnswer passes a streamed /response on to inv.Stream as it
// arrives. The parts go out as read, so the caller sees the response as
// the function writes it; error trailers (aws-lambda-go's, after a failed
// read of the handler's io.Reader) become the outcome, after the parts
// already sent.
func streamAnswer(r *request, inv *Invocation) (res *Result, status int, errType, msg string) {
	limit := inv.StreamLimit
	if limit <= 0 {
		limit = MaxStreamedResponse
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	buf := make([]byte, streamPart)
	sent := 0
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if sent+n > limit {
				return answerTooLarge(limit)
			}
			sent += n
			if serr := inv.Stream(ct, buf[:n]); serr != nil {
				// Nobody reads any more: the invocation is over for the
				// caller. The runtime's answer is taken all the same.
				io.Copy(io.Discard, io.LimitReader(r.Body, int64(limit-sent)))
				return &Result{ContentType: ct}, statusAccepted, "", ""
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return answerTruncated(err)
		}
	}
	if res := trailerError(r); res != nil {
		return res, statusAccepted, "", ""
	}
	return &Result{ContentType: ct}, statusAccepted, "", ""
}

// streamPart is the most one read of a streamed response passes on.
const streamPart = 32 << 10

// answerTooLarge is the outcome of a response over limit bytes: the
// caller's Function.ResponseSizeTooLarge and the runtime's 413.
func answerTooLarge(limit int) (*Result, int, string, string) {
	m := "Exceeded maximum allowed payload size (" + strconv.Itoa(limit) + " bytes)."
	return oversizedResult(limit), statusRequestEntityTooLarge, errTypeTooLarge, m
}

// answerTruncated is the outcome of a response body that broke off.
func answerTruncated(err error) (*Result, int, string, string) {
	return &Result{
		Payload:       platformError(typeTruncatedResponse, "Runtime response was truncated: "+err.Error()),
		ContentType:   "application/json",
		FunctionError: true,
		ErrorType:     typeTruncatedResponse,
	}, statusBadRequest, errTypeTruncated, "HTTP request detected as truncated"
}

func oversizedResult(limit int) *Result {
	return &Result{
		Payload: platformError(typeOversizedResponse,
			"Response payload size exceeded maximum allowed payload size ("+strconv.Itoa(limit)+" bytes)."),
		ContentType:   "application/json",
		FunctionError: true,
		ErrorType:     typeOversizedResponse,
	}
}

// stripErrorCause keeps errorMessage, errorType and stackTrace of an
// error-with-cause body, as Lambda does; an unparseable one becomes the JSON
// string "Invalid error body".
func stripErrorCause(body []byte) ([]byte, string) {
	var doc struct {
		ErrorMessage string   `json:"errorMessage"`
		ErrorType    string   `json:"errorType"`
		StackTrace   []string `json:"stackTrace,omitempty"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return []byte(`"Invalid error body"`), "application/octet-stream"
	}
	out, _ := json.Marshal(doc)
	return out, "application/json"
}

// runtimeInitError serves POST /runtime/init/error.
func (s *Server) runtimeInitError(w responseWriter, r *request) {
	s.mu.Lock()
	if s.rt != rtStarted {
		from := s.rt
		s.mu.Unlock()
		renderRuntimeTransition(w, from.String(), rtInitError.String(), transitionNotAllowed)
		return
	}
	gen := s.gen
	s.mu.Unlock()

	body, err := s.readBody(r.Body, s.maxBody)
	if errors.Is(err, errTooLarge) {
		// The state is left alone: the runtime may report a shorter error,
		// or exits and the agent sees Runtime.ExitError.
		renderError(w, statusRequestEntityTooLarge, errTypeTooLarge,
			"Exceeded maximum allowed payload size (%d bytes).", s.maxBody)
		return
	}
	if err != nil {
		renderError(w, statusBadRequest, errTypeTruncated, "HTTP request detected as truncated")
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
		if json.Valid(body) {
			ct = "application/json"
		}
	}

	s.mu.Lock()
	if s.gen != gen || s.rt != rtStarted {
		from := s.rt
		s.mu.Unlock()
		renderRuntimeTransition(w, from.String(), rtInitError.String(), transitionNotAllowed)
		return
	}
	s.rt = rtInitError
	s.rtInitErr = &InitError{Type: errorTypeOf(r.Header.Get(hdrErrorType), body), Payload: body, ContentType: ct}
	if c := s.queued; c != nil {
		// An invocation waiting for this runtime's init fails with it.
		s.queued = nil
		s.finishLocked(c, nil, s.rtInitErr)
	}
	s.broadcastLocked()
	s.mu.Unlock()
	renderAccepted(w)
}

var errTooLarge = errors.New("body too large")

// readLimited reads at most limit bytes of body; one byte more is
// errTooLarge, and the rest is left unread.
func readLimited(body io.Reader, limit int) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(limit) {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// readBody reads a body of at most limit bytes whole, as readLimited
// does, but reads at most bigBodies bodies larger than smallBody at a
// time: each is held in memory whole, nubo serve's own memory when it
// serves a namespace sandbox's Runtime API, and a function must not be
// able to make it hold one per connection. A body waiting its turn holds
// smallBody bytes.
func (s *Server) readBody(body io.Reader, limit int) ([]byte, error) {
	if limit <= smallBody {
		return readLimited(body, limit)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(body, smallBody+1))
	if err != nil {
		return nil, err
	}
	if n <= smallBody {
		return buf.Bytes(), nil
	}
	s.bigBodies <- struct{}{}
	defer func() { <-s.bigBodies }()
	m, err := buf.ReadFrom(io.LimitReader(body, int64(limit)+1-n))
	if err != nil {
		return nil, err
	}
	if n+m > int64(limit) {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// Bodies read whole: up to smallBody bytes freely, bigBodies larger ones
// at a time (readBody).
const (
	smallBody = 64 << 10
	bigBodies = 2
)
