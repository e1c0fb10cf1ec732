// Package invoke implements Lambda's Invoke operation above the worker:
// it resolves the qualifier (version, alias, alias weights), checks the
// function's state and the request's limits, builds the invocation the
// function sees (request id, invoked ARN, client context, trace id), and
// shapes the outcome (executed version, function error, log tail).
//
// Invocation types: RequestResponse runs synchronously; DryRun only checks;
// Event is handed to the async queue (package async) when one is set.
// InvokeWithResponseStream (Input.ResponseStream) takes RequestResponse
// and DryRun only; the API edge writes its outcome as an event stream.
package invoke

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/worker"
)

// Limits (LAMBDA-WIRE.md §3).
const (
	MaxSyncPayload     = 6291456
	MaxAsyncPayload    = 1048576
	MaxClientContext   = 3583
	TypeRequestResp    = "RequestResponse"
	TypeEvent          = "Event"
	TypeDryRun         = "DryRun"
	LogTypeTail        = "Tail"
	LogTypeNone        = "None"
	statusOK           = 200
	statusAccepted     = 202
	statusNoContent    = 204
	defaultContentType = "application/json"
)

// Input is one Invoke request as the API edge parsed it.
type Input struct {
	Account        string
	FunctionName   string
	Qualifier      string
	InvocationType string
	LogType        string
	ClientContext  string // base64, as sent
	TenantID       string
	Payload        []byte
	RequestID      string
	// ResponseStream marks InvokeWithResponseStream, which has no Event
	// invocation type. Stream, when set, receives a response the runtime
	// streams as it arrives (see env.Request.Stream), with the version
	// that runs; the Output then has no payload.
	ResponseStream bool
	Stream         func(executedVersion, contentType string, part []byte) error
}

// Output is what the API edge writes back.
type Output struct {
	Status          int
	Payload         []byte
	ContentType     string
	FunctionError   string // "Unhandled" or ""
	ErrorType       string // the function error's type, as the runtime reported it
	LogResult       string // base64 of the log tail
	ExecutedVersion string
}

// Async accepts Event invocations.
type Async interface {
	Enqueue(ctx context.Context, t *control.Target, in *Input, invokedARN string) error
}

// Invoker runs invocations.
type Invoker struct {
	Control *control.Service
	Pool    *worker.Pool
	Async   Async
}

// Invoke runs or queues one invocation.
func (iv *Invoker) Invoke(ctx context.Context, in *Input) (*Output, error) {
	if in.InvocationType == "" {
		in.InvocationType = TypeRequestResp
	}
	switch {
	case in.ResponseStream && in.InvocationType != TypeRequestResp && in.InvocationType != TypeDryRun:
		return nil, errdefs.Validation("1 validation error detected: Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [RequestResponse, DryRun]", in.InvocationType)
	case in.InvocationType != TypeRequestResp && in.InvocationType != TypeEvent && in.InvocationType != TypeDryRun:
		return nil, errdefs.Validation("1 validation error detected: Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]", in.InvocationType)
	}
	if in.LogType != "" && in.LogType != LogTypeTail && in.LogType != LogTypeNone {
		return nil, errdefs.Validation("1 validation error detected: Value '%s' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [None, Tail]", in.LogType)
	}
	limit := MaxSyncPayload
	if in.InvocationType == TypeEvent {
		limit = MaxAsyncPayload
	}
	if len(in.Payload) > limit {
		if in.InvocationType == TypeEvent {
			return nil, errdefs.TooLarge("%d byte payload is too large for the Event invocation type (limit %d bytes)", len(in.Payload), limit)
		}
		return nil, errdefs.TooLarge("Request must be smaller than %d bytes for the InvokeFunction operation", limit)
	}
	clientContext, err := decodeClientContext(in.ClientContext)
	if err != nil {
		return nil, err
	}
	if len(in.Payload) == 0 {
		// Lambda hands an empty payload to the function as an empty object.
		in.Payload = []byte("{}")
	} else if !json.Valid(in.Payload) {
		return nil, errdefs.InvalidContent("Could not parse request body into json: Could not parse payload into json: Unexpected character: was expecting a JSON value")
	}
	t, err := iv.Control.InvokeTarget(ctx, in.Account, in.FunctionName, in.Qualifier)
	if err != nil {
		return nil, err
	}
	v := t.Version
	if v.Config.State != function.StateActive {
		return nil, errdefs.Conflict("The operation cannot be performed at this time. The function is currently in the following state: %s", v.Config.State)
	}
	invoked := invokedARN(iv.Control.Region(), in.Account, t)
	switch in.InvocationType {
	case TypeDryRun:
		return &Output{Status: statusNoContent, ExecutedVersion: v.Config.Version}, nil
	case TypeEvent:
		if iv.Async == nil {
			return nil, errdefs.New(errdefs.KindServiceUnavailable, "asynchronous invocation is not enabled on this nubo server")
		}
		if err := iv.Async.Enqueue(ctx, t, in, invoked); err != nil {
			return nil, err
		}
		return &Output{Status: statusAccepted}, nil
	}
	if t.Additional != nil && rand.Float64() < t.Weight {
		v = t.Additional
	}
	req := &env.Request{
		RequestID: in.RequestID, Payload: in.Payload, InvokedFunctionARN: invoked, ClientContext: clientContext,
		TraceID: NewTraceID(), TenantID: in.TenantID, Timeout: time.Duration(v.Config.Timeout) * time.Second,
		Tail: in.LogType == LogTypeTail,
	}
	if in.Stream != nil {
		version := v.Config.Version
		req.Stream = func(contentType string, part []byte) error { return in.Stream(version, contentType, part) }
	}
	resp, err := iv.Pool.Invoke(ctx, &worker.Invocation{Version: v, Reserved: t.Reserved, Request: req})
	if err != nil {
		return nil, err
	}
	out := &Output{Status: statusOK, Payload: resp.Payload, ContentType: resp.ContentType, ExecutedVersion: v.Config.Version}
	if out.ContentType == "" {
		out.ContentType = defaultContentType
	}
	if resp.FunctionError {
		out.FunctionError = "Unhandled"
		out.ErrorType = resp.ErrorType
	}
	if in.LogType == LogTypeTail {
		out.LogResult = base64.StdEncoding.EncodeToString(resp.LogTail)
	}
	return out, nil
}

// Run invokes a resolved version synchronously on behalf of the async
// queue; it returns the environment's response.
func (iv *Invoker) Run(ctx context.Context, t *control.Target, v *control.Version, requestID, invoked string, payload []byte) (*env.Response, error) {
	return iv.Pool.Invoke(ctx, &worker.Invocation{Version: v, Reserved: t.Reserved, Request: &env.Request{
		RequestID: requestID, Payload: payload, InvokedFunctionARN: invoked, TraceID: NewTraceID(),
		Timeout: time.Duration(v.Config.Timeout) * time.Second,
	}})
}

// invokedARN is the ARN the function sees as invoked: qualified only when
// the caller qualified it.
func invokedARN(region, account string, t *control.Target) string {
	if t.Qualifier != "" {
		return arn.Qualified(region, account, t.Name, t.Qualifier)
	}
	return arn.Function(region, account, t.Name)
}

// decodeClientContext turns X-Amz-Client-Context (base64 JSON) into the
// JSON the runtime receives.
func decodeClientContext(b64 string) (string, error) {
	if b64 == "" {
		return "", nil
	}
	if len(b64) > MaxClientContext {
		return "", errdefs.InvalidParameter("Client context must be smaller than %d bytes.", MaxClientContext)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !json.Valid(raw) {
		return "", errdefs.InvalidParameter("Client context must be a valid Base64-encoded JSON object.")
	}
	return string(raw), nil
}

// NewTraceID makes an X-Ray trace header: Root=1-<epoch hex>-<96 random bits>.
//
// It is appended rather than formatted: every invocation makes one.
func NewTraceID() string {
	var b [20]byte
	_, _ = crand.Read(b[:])
	var ts [4]byte // X-Ray's epoch field is 8 hex digits: good until 2106
	binary.BigEndian.PutUint32(ts[:], uint32(time.Now().Unix()))
	r := make([]byte, 0, 80)
	r = append(r, "Root=1-"...)
	r = hex.AppendEncode(r, ts[:])
	r = append(r, '-')
	r = hex.AppendEncode(r, b[:12])
	r = append(r, ";Parent="...)
	r = hex.AppendEncode(r, b[12:])
	r = append(r, ";Sampled=0"...)
	return string(r)
}
