package api

import (
	"encoding/json"
	"net/http"
	"strconv"

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
// function's response in order, then one InvokeComplete. A function error
// is no payload but InvokeComplete's ErrorCode (the error's type) and
// ErrorDetails (the error document the runtime sent), as Lambda reports
// an error a streaming runtime sends in its trailers. Errors before the
// function runs are answered as Invoke's are.
//
// The response is sent once the function has finished: a runtime's
// streamed response reaches nubo whole, within Invoke's 6 MB.
func (a *API) invokeStream(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Invoker == nil {
		a.writeError(w, r, errdefs.New(errdefs.KindServiceUnavailable, "This nubo server runs no execution environments"))
		return
	}
	in := input(r)
	in.ResponseStream = true
	out, err := a.cfg.Invoker.Invoke(r.Context(), in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	if out.ExecutedVersion != "" {
		h.Set("X-Amz-Executed-Version", out.ExecutedVersion)
	}
	if out.Status != http.StatusOK { // DryRun
		w.WriteHeader(out.Status)
		return
	}
	h.Set("Content-Type", eventStreamType)
	h.Set("X-Amzn-Remapped-Content-Type", out.ContentType)
	w.WriteHeader(http.StatusOK)
	enc := eventstream.NewEncoder()
	var complete streamComplete
	if out.FunctionError != "" {
		complete.ErrorCode, complete.ErrorDetails = errorCode(out), string(out.Payload)
	} else {
		for p := out.Payload; len(p) > 0; {
			n := min(len(p), streamChunk)
			if enc.Encode(w, streamEvent("PayloadChunk", "application/octet-stream", p[:n])) != nil {
				return // the client went away
			}
			p = p[n:]
		}
	}
	if in.LogType == invoke.LogTypeTail {
		complete.LogResult = out.LogResult
	}
	body, _ := json.Marshal(complete)
	_ = enc.Encode(w, streamEvent("InvokeComplete", "application/json", body))
}

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
