package servertest

import (
	"context"
	"net/http"
	"testing"
	"time"

	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// StreamResult is an InvokeWithResponseStream answer read to its end with
// the SDK's own event-stream reader.
type StreamResult struct {
	Out      *lambda.InvokeWithResponseStreamOutput
	Header   http.Header // of the HTTP response
	Payload  []byte      // the PayloadChunk events' payloads, in order
	Chunks   int
	First    time.Duration // from the call to the first PayloadChunk
	Done     time.Duration // from the call to InvokeComplete
	Complete *types.InvokeWithResponseStreamCompleteEvent
}

// InvokeStream calls InvokeWithResponseStream and reads the answer. An
// error of the call is returned; a broken stream, a part after
// InvokeComplete, a second InvokeComplete or none fail the test. A 204
// (DryRun) has no stream to read.
func InvokeStream(t testing.TB, ctx context.Context, c *lambda.Client, in *lambda.InvokeWithResponseStreamInput) (*StreamResult, error) {
	t.Helper()
	start := time.Now()
	out, err := c.InvokeWithResponseStream(ctx, in)
	if err != nil {
		return nil, err
	}
	r := &StreamResult{Out: out, Header: http.Header{}}
	if raw, ok := awsmw.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); ok {
		r.Header = raw.Header
	}
	stream := out.GetStream()
	defer stream.Close()
	if out.StatusCode == 204 {
		return r, nil
	}
	for ev := range stream.Events() {
		switch ev := ev.(type) {
		case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
			if r.Complete != nil {
				t.Errorf("PayloadChunk after InvokeComplete")
			}
			if r.Chunks == 0 {
				r.First = time.Since(start)
			}
			r.Payload = append(r.Payload, ev.Value.Payload...)
			r.Chunks++
		case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
			if r.Complete != nil {
				t.Errorf("a second InvokeComplete")
			}
			r.Complete, r.Done = &ev.Value, time.Since(start)
		default:
			t.Errorf("unexpected event %T", ev)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("event stream: %v", err)
	}
	if r.Complete == nil {
		t.Fatalf("the stream ended without InvokeComplete")
	}
	return r, nil
}
