package invoke_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

// invokeStream invokes name with InvokeWithResponseStream and reads the
// answer to its end (servertest.InvokeStream).
func (h *harness) invokeStream(t testing.TB, name string, payload []byte, mutate ...func(*lambda.InvokeWithResponseStreamInput)) (*servertest.StreamResult, error) {
	t.Helper()
	in := &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String(name), Payload: payload}
	for _, m := range mutate {
		m(in)
	}
	return servertest.InvokeStream(t, ctx(t), h.c, in)
}

// TestResponseStream: InvokeWithResponseStream through the SDK, which reads
// the event stream itself: the function's response arrives whole in
// PayloadChunk events (a 5 MB one in several), then InvokeComplete; a
// function error is InvokeComplete's ErrorCode and ErrorDetails; Tail
// gives the log; DryRun runs nothing; Event is refused, and errors before
// the function runs are Invoke's.
func TestResponseStream(t *testing.T) {
	h := newHarness(t)
	// One vCPU (1769 MB): at 128 MB the function gets 1/14 of one, as in
	// Lambda, and echoing 5 MB of JSON through aws-lambda-go then takes it
	// longer than its 5 s timeout now and then.
	h.create(t, "stream", nil, func(in *lambda.CreateFunctionInput) { in.MemorySize = aws.Int32(1769) })

	big := []byte(`{"op":"echo","data":"` + strings.Repeat("0123456789", 500_000) + `"}`)
	for _, p := range [][]byte{op("echo"), big} {
		r, err := h.invokeStream(t, "stream", p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Payload, p) {
			t.Errorf("streamed payload differs (%d bytes in, %d out)", len(p), len(r.Payload))
		}
		if len(p) > 1<<20 && r.Chunks < 2 {
			t.Errorf("%d bytes came in %d chunk(s); want several", len(p), r.Chunks)
		}
		if r.Out.StatusCode != 200 || aws.ToString(r.Out.ExecutedVersion) != "$LATEST" {
			t.Errorf("status %d, executed version %q; want 200, $LATEST", r.Out.StatusCode, aws.ToString(r.Out.ExecutedVersion))
		}
		if c := r.Complete; c.ErrorCode != nil || c.ErrorDetails != nil || c.LogResult != nil {
			t.Errorf("InvokeComplete %s / %s; want it empty", aws.ToString(c.ErrorCode), aws.ToString(c.ErrorDetails))
		}
		// The function's own content type (aws-lambda-go's) is remapped.
		if r.Header.Get("Content-Type") != "application/vnd.amazon.eventstream" ||
			r.Header.Get("X-Amzn-Remapped-Content-Type") != "application/octet-stream" {
			t.Errorf("response headers %v; want an event stream remapping application/octet-stream", r.Header)
		}
	}

	r, err := h.invokeStream(t, "stream", []byte(`{"op":"error","msg":"streamed boom"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Payload) != 0 || aws.ToString(r.Complete.ErrorCode) != "errorString" ||
		aws.ToString(r.Complete.ErrorDetails) != `{"errorMessage":"streamed boom","errorType":"errorString"}` {
		t.Errorf("function error: payload %q, InvokeComplete %s / %s; want no payload, errorString and the error document",
			r.Payload, aws.ToString(r.Complete.ErrorCode), aws.ToString(r.Complete.ErrorDetails))
	}

	r, err = h.invokeStream(t, "stream", []byte(`{"op":"print","msg":"stream-tail-marker"}`),
		func(in *lambda.InvokeWithResponseStreamInput) { in.LogType = types.LogTypeTail })
	if err != nil {
		t.Fatal(err)
	}
	log, _ := base64.StdEncoding.DecodeString(aws.ToString(r.Complete.LogResult))
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
	if r.Out.StatusCode != 204 || len(r.Payload) != 0 {
		t.Errorf("DryRun: status %d, payload %q; want 204 and nothing", r.Out.StatusCode, r.Payload)
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

// TestResponseStreamIncremental: a runtime that streams its response
// (testdata/streamfn) has it reach the caller part by part, while it is
// still writing; past Invoke's 6 MB; with its error trailers, or a timeout
// midway, as InvokeComplete's error after the parts already sent. Invoke
// of the same function gets the response whole, within 6 MB.
func TestResponseStreamIncremental(t *testing.T) {
	h := newHarness(t)
	binaries(t)
	zip := ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: streamBin, Mode: 0o755})
	h.create(t, "streamer", zip, func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(3) })

	// Three parts 400 ms apart: the first must arrive long before the last
	// is written.
	tr, err := h.invokeStream(t, "streamer", []byte(`{"parts":3,"ms":400}`))
	if err != nil {
		t.Fatal(err)
	}
	got, first, done, complete := tr.Payload, tr.First, tr.Done, tr.Complete
	if string(got) != "part-0\npart-1\npart-2\n" || complete == nil || complete.ErrorCode != nil {
		t.Fatalf("streamed %q, InvokeComplete %+v; want three parts and no error", got, complete)
	}
	if done-first < 600*time.Millisecond {
		t.Errorf("first part after %v, end after %v: the parts were not passed on as written", first, done)
	}
	if ct := tr.Header.Get("X-Amzn-Remapped-Content-Type"); ct != "text/plain" {
		t.Errorf("X-Amzn-Remapped-Content-Type %q; want the runtime's text/plain", ct)
	}

	// Error trailers after two parts.
	r, err := h.invokeStream(t, "streamer", []byte(`{"parts":2,"fail":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Payload) != "part-0\npart-1\n" || aws.ToString(r.Complete.ErrorCode) != "StreamBroke" ||
		aws.ToString(r.Complete.ErrorDetails) != `{"errorMessage":"broke mid-stream","errorType":"StreamBroke"}` {
		t.Errorf("trailers: streamed %q, InvokeComplete %s / %s; want two parts, then StreamBroke and its document",
			r.Payload, aws.ToString(r.Complete.ErrorCode), aws.ToString(r.Complete.ErrorDetails))
	}

	// 8 MiB: streamed whole; through Invoke, refused as too large.
	const parts, size = 128, 64 << 10
	big := []byte(`{"parts":128,"bytes":65536}`)
	r, err = h.invokeStream(t, "streamer", big)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Payload) != parts*size || r.Complete.ErrorCode != nil || !bytes.HasPrefix(r.Payload, []byte("part-0.")) ||
		!bytes.Contains(r.Payload, []byte("\npart-127.")) {
		t.Errorf("8 MiB stream: %d bytes, InvokeComplete error %q; want %d bytes and none",
			len(r.Payload), aws.ToString(r.Complete.ErrorCode), parts*size)
	}
	res := h.invoke(t, "streamer", big)
	if aws.ToString(res.FunctionError) != "Unhandled" || !bytes.Contains(res.Payload, []byte("Function.ResponseSizeTooLarge")) {
		t.Errorf("8 MiB through Invoke: FunctionError %q, payload %.200s; want Function.ResponseSizeTooLarge",
			aws.ToString(res.FunctionError), res.Payload)
	}

	// The 3 s timeout strikes after the second part, with a second of
	// room either side: a busy machine (make test runs packages side by
	// side) once held the second part past a timeout 0.5 s after it.
	r, err = h.invokeStream(t, "streamer", []byte(`{"parts":3,"ms":2000}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Payload) != "part-0\npart-1\n" || aws.ToString(r.Complete.ErrorCode) != "Sandbox.Timedout" {
		t.Errorf("timeout: streamed %q, InvokeComplete %s / %s; want two parts, then Sandbox.Timedout",
			r.Payload, aws.ToString(r.Complete.ErrorCode), aws.ToString(r.Complete.ErrorDetails))
	}
	// The environment answers again after the timeout.
	if r, err = h.invokeStream(t, "streamer", []byte(`{"parts":1}`)); err != nil || string(r.Payload) != "part-0\n" {
		t.Errorf("after the timeout: %v, %q; want part-0", err, r.Payload)
	}
}

// TestNodeResponseStream: a Node.js handler wrapped in
// awslambda.streamifyResponse streams through nubo's runtime client: its
// writes reach the caller as written, with its content type; a rejection
// after writing ends the stream with the error; through Invoke the same
// handler answers whole. HttpResponseStream.from writes the prelude.
func TestNodeResponseStream(t *testing.T) {
	rt := managedRuntime(t, runtimes.FamilyNodejs, "node")
	h := newHarness(t)
	c := managedCase{runtime: rt, zip: dirZip(t, "testdata/node")}
	h.create(t, "node-stream", c.zip, managedFn(c, "index.stream"))
	h.create(t, "node-http", c.zip, managedFn(c, "index.http"))

	tr, err := h.invokeStream(t, "node-stream", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	got, first, done, complete := tr.Payload, tr.First, tr.Done, tr.Complete
	if complete == nil || complete.ErrorCode != nil || strings.Count(string(got), "\n") != 3 ||
		!strings.HasPrefix(string(got), "part-0 ") || !strings.Contains(string(got), "part-2 ") {
		t.Fatalf("streamed %q, InvokeComplete %+v; want three parts and no error", got, complete)
	}
	if done-first < 600*time.Millisecond {
		t.Errorf("first part after %v, end after %v: the handler's writes were not passed on as written", first, done)
	}
	if ct := tr.Header.Get("X-Amzn-Remapped-Content-Type"); ct != "text/plain" {
		t.Errorf("X-Amzn-Remapped-Content-Type %q; want text/plain", ct)
	}

	r, err := h.invokeStream(t, "node-stream", []byte(`{"fail":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var doc managedError
	_ = json.Unmarshal([]byte(aws.ToString(r.Complete.ErrorDetails)), &doc)
	if strings.Count(string(r.Payload), "\n") != 3 || aws.ToString(r.Complete.ErrorCode) != "RangeError" ||
		doc.ErrorType != "RangeError" || doc.ErrorMessage != "broke mid-stream" {
		t.Errorf("rejection: streamed %q, InvokeComplete %s / %s; want three parts, then RangeError",
			r.Payload, aws.ToString(r.Complete.ErrorCode), aws.ToString(r.Complete.ErrorDetails))
	}

	// Through Invoke: whole.
	res := h.invokeOK(t, "node-stream", []byte(`{}`))
	if strings.Count(string(res.Payload), "\n") != 3 || !strings.HasPrefix(string(res.Payload), "part-0 "+res.RequestID) {
		t.Errorf("Invoke answered %q; want the three parts whole", res.Payload)
	}

	r, err = h.invokeStream(t, "node-http", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	prelude, body, ok := bytes.Cut(r.Payload, make([]byte, 8))
	if !ok || string(body) != "created" || !json.Valid(prelude) || !bytes.Contains(prelude, []byte(`"statusCode":201`)) {
		t.Errorf("HttpResponseStream: %q; want a JSON prelude, 8 zero bytes, then created", r.Payload)
	}
}
