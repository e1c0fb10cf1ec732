package invoke_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// streamResult is an InvokeWithResponseStream answer read to its end with
// the SDK's own event-stream reader.
type streamResult struct {
	out      *lambda.InvokeWithResponseStreamOutput
	payload  []byte
	chunks   int
	complete *types.InvokeWithResponseStreamCompleteEvent
}

func (h *harness) invokeStream(t testing.TB, name string, payload []byte, mutate ...func(*lambda.InvokeWithResponseStreamInput)) (*streamResult, error) {
	t.Helper()
	in := &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String(name), Payload: payload}
	for _, m := range mutate {
		m(in)
	}
	out, err := h.c.InvokeWithResponseStream(ctx(t), in)
	if err != nil {
		return nil, err
	}
	r := &streamResult{out: out}
	stream := out.GetStream()
	defer stream.Close()
	if out.StatusCode == 204 { // DryRun: no events
		return r, nil
	}
	for ev := range stream.Events() {
		switch ev := ev.(type) {
		case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
			if r.complete != nil {
				t.Errorf("PayloadChunk after InvokeComplete")
			}
			r.payload = append(r.payload, ev.Value.Payload...)
			r.chunks++
		case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
			if r.complete != nil {
				t.Errorf("a second InvokeComplete")
			}
			r.complete = &ev.Value
		default:
			t.Errorf("unexpected event %T", ev)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("event stream: %v", err)
	}
	if r.complete == nil {
		t.Fatalf("the stream ended without InvokeComplete")
	}
	return r, nil
}

// TestResponseStream: InvokeWithResponseStream through the SDK, which reads
// the event stream itself: the function's response arrives whole in
// PayloadChunk events (a 5 MB one in several), then InvokeComplete; a
// function error is InvokeComplete's ErrorCode and ErrorDetails; Tail
// gives the log; DryRun runs nothing; Event is refused, and errors before
// the function runs are Invoke's.
func TestResponseStream(t *testing.T) {
	h := newHarness(t)
	h.create(t, "stream", nil)

	big := []byte(`{"op":"echo","data":"` + strings.Repeat("0123456789", 500_000) + `"}`)
	for _, p := range [][]byte{op("echo"), big} {
		r, err := h.invokeStream(t, "stream", p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.payload, p) {
			t.Errorf("streamed payload differs (%d bytes in, %d out)", len(p), len(r.payload))
		}
		if len(p) > 1<<20 && r.chunks < 2 {
			t.Errorf("%d bytes came in %d chunk(s); want several", len(p), r.chunks)
		}
		if r.out.StatusCode != 200 || aws.ToString(r.out.ExecutedVersion) != "$LATEST" {
			t.Errorf("status %d, executed version %q; want 200, $LATEST", r.out.StatusCode, aws.ToString(r.out.ExecutedVersion))
		}
		if c := r.complete; c.ErrorCode != nil || c.ErrorDetails != nil || c.LogResult != nil {
			t.Errorf("InvokeComplete %+v; want it empty", *c)
		}
		raw, _ := awsmw.GetRawResponse(r.out.ResultMetadata).(*smithyhttp.Response)
		// The function's own content type (aws-lambda-go's) is remapped.
		if raw == nil || raw.Header.Get("Content-Type") != "application/vnd.amazon.eventstream" ||
			raw.Header.Get("X-Amzn-Remapped-Content-Type") != "application/octet-stream" {
			t.Errorf("response headers %v; want an event stream remapping application/octet-stream", raw.Header)
		}
	}

	r, err := h.invokeStream(t, "stream", []byte(`{"op":"error","msg":"streamed boom"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.payload) != 0 || aws.ToString(r.complete.ErrorCode) != "errorString" ||
		aws.ToString(r.complete.ErrorDetails) != `{"errorMessage":"streamed boom","errorType":"errorString"}` {
		t.Errorf("function error: payload %q, InvokeComplete %s / %s; want no payload, errorString and the error document",
			r.payload, aws.ToString(r.complete.ErrorCode), aws.ToString(r.complete.ErrorDetails))
	}

	r, err = h.invokeStream(t, "stream", []byte(`{"op":"print","msg":"stream-tail-marker"}`),
		func(in *lambda.InvokeWithResponseStreamInput) { in.LogType = types.LogTypeTail })
	if err != nil {
		t.Fatal(err)
	}
	log, _ := base64.StdEncoding.DecodeString(aws.ToString(r.complete.LogResult))
	if !bytes.Contains(log, []byte("stream-tail-marker")) || !bytes.Contains(log, []byte("REPORT RequestId:")) {
		t.Errorf("Tail: LogResult %q; want the invocation's log", log)
	}

	r, err = h.invokeStream(t, "stream", op("count"),
		func(in *lambda.InvokeWithResponseStreamInput) {
			in.InvocationType = types.ResponseStreamingInvocationTypeDryRun
		})
	if err != nil {
		t.Fatal(err)
	}
	if r.out.StatusCode != 204 || len(r.payload) != 0 {
		t.Errorf("DryRun: status %d, payload %q; want 204 and nothing", r.out.StatusCode, r.payload)
	}
	if s := decodeState(t, h.invokeOK(t, "stream", op("count"))); s.Count != 5 {
		t.Errorf("the function counted %d invocations; want 5 (the DryRun ran nothing)", s.Count)
	}

	_, err = h.invokeStream(t, "stream", op("count"),
		func(in *lambda.InvokeWithResponseStreamInput) { in.InvocationType = "Event" })
	if code, status := apiError(t, err); code != "ValidationException" || status != 400 {
		t.Errorf("Event: %s %d; want ValidationException 400", code, status)
	}
	_, err = h.invokeStream(t, "no-such-function", op("count"))
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
		t.Errorf("unknown function: %s %d; want ResourceNotFoundException 404", code, status)
	}
	_, err = h.invokeStream(t, "stream", []byte(`{"op":`))
	if code, status := apiError(t, err); code != "InvalidRequestContentException" || status != 400 {
		t.Errorf("invalid JSON: %s %d; want InvalidRequestContentException 400", code, status)
	}
}
