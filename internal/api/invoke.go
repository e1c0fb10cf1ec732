package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/invoke"
)

func (a *API) routeInvoke() {
	a.mux.HandleFunc("POST /2015-03-31/functions/{fn}/invocations", a.invoke(false))
	a.mux.HandleFunc("POST /2014-11-13/functions/{fn}/invoke-async", a.invoke(true))
	a.mux.HandleFunc("POST /2021-11-15/functions/{fn}/response-streaming-invocations", a.invokeStream)
}

// input reads the Invoke request parameters common to Invoke and
// InvokeWithResponseStream.
func input(r *http.Request) *invoke.Input {
	return &invoke.Input{
		Account:        accountOf(r),
		FunctionName:   r.PathValue("fn"),
		Qualifier:      r.URL.Query().Get("Qualifier"),
		InvocationType: r.Header.Get("X-Amz-Invocation-Type"),
		LogType:        r.Header.Get("X-Amz-Log-Type"),
		ClientContext:  r.Header.Get("X-Amz-Client-Context"),
		TenantID:       r.Header.Get("X-Amz-Tenant-Id"),
		Payload:        bodyOf(r),
		RequestID:      RequestID(r),
	}
}

// invoke serves Invoke and the legacy InvokeAsync. The x-amzn-RequestId of
// the answer is the request id the function sees.
func (a *API) invoke(legacyAsync bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Invoker == nil {
			a.writeError(w, r, errdefs.New(errdefs.KindServiceUnavailable, "This nubo server runs no execution environments"))
			return
		}
		in := input(r)
		if legacyAsync {
			in.InvocationType = invoke.TypeEvent
		}
		endBulk(r)
		out, err := a.cfg.Invoker.Invoke(r.Context(), in)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		h := w.Header()
		if out.ExecutedVersion != "" && !legacyAsync && out.Status != http.StatusAccepted {
			h.Set("X-Amz-Executed-Version", out.ExecutedVersion)
		}
		if out.FunctionError != "" {
			h.Set("X-Amz-Function-Error", out.FunctionError)
		}
		if in.LogType == invoke.LogTypeTail && out.Status == http.StatusOK {
			h.Set("X-Amz-Log-Result", out.LogResult)
		}
		if len(out.Payload) > 0 {
			h.Set("Content-Type", out.ContentType)
		}
		h.Set("Content-Length", strconv.Itoa(len(out.Payload)))
		w.WriteHeader(out.Status)
		w.Write(out.Payload)
	}
}

// invokeStream serves InvokeWithResponseStream: 200 and an event stream
// (application/vnd.amazon.eventstream) of PayloadChunk events, the
// function's response in order, then one InvokeComplete. A runtime that
// streams its response (Lambda-Runtime-Function-Response-Mode: streaming)
// has it passed on as it writes it, up to 200 MB; one that answers whole
// has it sent once it has answered. A function error is no payload but
// InvokeComplete's ErrorCode (the error's type) and ErrorDetails (the
// error document), as Lambda reports an error a streaming runtime sends
// in its trailers; one after part of the response has gone out (a timeout,
// a failed read in the runtime) ends the stream the same way. Errors
// before the function runs are answered as Invoke's are.
func (a *API) invokeStream(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Invoker == nil {
		a.writeError(w, r, errdefs.New(errdefs.KindServiceUnavailable, "This nubo server runs no execution environments"))
		return
	}
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), enc: eventstream.NewEncoder()}
	// The deadlines set below belong to the connection: a kept-alive one
	// must not carry them into its next request.
	defer sw.rc.SetWriteDeadline(time.Time{})
	in := input(r)
	in.ResponseStream = true
	in.Stream = sw.part
	endBulk(r)
	out, err := a.cfg.Invoker.Invoke(r.Context(), in)
	if err != nil {
		if sw.started {
			// Not reached: once the function has run, its outcome is the
			// Output's, and the Invoker fails only before.
			a.log.Warn("invoke failed after its stream began", "err", err)
			return
		}
		a.writeError(w, r, err)
		return
	}
	if out.Status != http.StatusOK { // DryRun
		if out.ExecutedVersion != "" {
			w.Header().Set("X-Amz-Executed-Version", out.ExecutedVersion)
		}
		w.WriteHeader(out.Status)
		return
	}
	sw.begin(out.ExecutedVersion, out.ContentType)
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	var complete streamComplete
	if out.FunctionError != "" {
		complete.ErrorCode, complete.ErrorDetails = errorCode(out), string(out.Payload)
	} else if sw.chunks(out.Payload) != nil {
		return
	}
	if in.LogType == invoke.LogTypeTail {
		complete.LogResult = out.LogResult
	}
	body, _ := json.Marshal(complete)
	_ = sw.enc.Encode(w, streamEvent("InvokeComplete", "application/json", body))
}

// streamWriter writes an InvokeWithResponseStream answer: the headers
// once, before the first event, then the events.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	enc     *eventstream.Encoder
	started bool
	failed  error // the first write that failed: the client is gone
}

// begin writes the status and headers, once.
func (s *streamWriter) begin(executedVersion, contentType string) {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	if executedVersion != "" {
		h.Set("X-Amz-Executed-Version", executedVersion)
	}
	h.Set("Content-Type", eventStreamType)
	h.Set("X-Amzn-Remapped-Content-Type", contentType)
	s.w.WriteHeader(http.StatusOK)
}

// part passes on part of a response the runtime streams, at once. A client
// that reads nothing for streamWriteTimeout is taken for gone: the
// invocation, whose parts wait for it, must not wait for good.
func (s *streamWriter) part(executedVersion, contentType string, p []byte) error {
	s.begin(executedVersion, contentType)
	_ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if err := s.chunks(p); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil {
		s.failed = err
	}
	return s.failed
}

// chunks writes p as PayloadChunk events of at most streamChunk bytes.
func (s *streamWriter) chunks(p []byte) error {
	for s.failed == nil && len(p) > 0 {
		n := min(len(p), streamChunk)
		s.failed = s.enc.Encode(s.w, streamEvent("PayloadChunk", "application/octet-stream", p[:n]))
		p = p[n:]
	}
	return s.failed
}

// streamWriteTimeout bounds one write of a streamed part to the client.
const streamWriteTimeout = time.Minute

// eventStreamType is the media type of an AWS event stream.
const eventStreamType = "application/vnd.amazon.eventstream"

// streamChunk is the most payload one PayloadChunk event carries.
const streamChunk = 64 << 10

// streamComplete is the InvokeComplete event's body.
type streamComplete struct {
	ErrorCode    string `json:",omitempty"`
	ErrorDetails string `json:",omitempty"`
	LogResult    string `json:",omitempty"`
}

// streamEvent is one event of an InvokeWithResponseStream response.
func streamEvent(eventType, contentType string, payload []byte) eventstream.Message {
	var m eventstream.Message
	m.Headers.Set(":event-type", eventstream.StringValue(eventType))
	m.Headers.Set(":content-type", eventstream.StringValue(contentType))
	m.Headers.Set(":message-type", eventstream.StringValue("event"))
	m.Payload = payload
	return m
}

// errorCode is a function error's type: the runtime's, else the errorType
// of its error document, else Lambda's catch-all.
func errorCode(out *invoke.Output) string {
	if out.ErrorType != "" {
		return out.ErrorType
	}
	var doc struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(out.Payload, &doc) == nil && doc.ErrorType != "" {
		return doc.ErrorType
	}
	return "Unhandled"
}
