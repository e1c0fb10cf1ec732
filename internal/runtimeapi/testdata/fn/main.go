// Command fn is a Lambda function built on aws-lambda-go, used by the
// runtimeapi tests as a real runtime. _HANDLER selects the behaviour.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func echo(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }

func fail(_ context.Context, _ json.RawMessage) (json.RawMessage, error) {
	return nil, errors.New("Error: x")
}

func boom(_ context.Context, _ json.RawMessage) (json.RawMessage, error) { panic("boom") }

type ctxInfo struct {
	RequestID     string            `json:"requestId"`
	FunctionARN   string            `json:"functionArn"`
	DeadlineMs    int64             `json:"deadlineMs"`
	TraceID       string            `json:"traceId"`
	TenantID      string            `json:"tenantId"`
	ClientApp     string            `json:"clientApp"`
	ClientCustom  map[string]string `json:"clientCustom"`
	CognitoID     string            `json:"cognitoId"`
	CognitoPoolID string            `json:"cognitoPoolId"`
	FunctionName  string            `json:"functionName"`
}

func inspect(ctx context.Context, _ json.RawMessage) (ctxInfo, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	d, _ := ctx.Deadline()
	trace, _ := ctx.Value("x-amzn-trace-id").(string)
	return ctxInfo{
		RequestID:     lc.AwsRequestID,
		FunctionARN:   lc.InvokedFunctionArn,
		DeadlineMs:    d.UnixMilli(),
		TraceID:       trace,
		TenantID:      lc.TenantID,
		ClientApp:     lc.ClientContext.Client.AppTitle,
		ClientCustom:  lc.ClientContext.Custom,
		CognitoID:     lc.Identity.CognitoIdentityID,
		CognitoPoolID: lc.Identity.CognitoIdentityPoolID,
		FunctionName:  lambdacontext.FunctionName,
	}, nil
}

// big returns n bytes, n given as the event, as a raw (io.Reader) response.
func big(_ context.Context, n int) (io.Reader, error) {
	return strings.NewReader(strings.Repeat("x", n)), nil
}

// failingReader makes aws-lambda-go report the failure in trailers.
type failingReader struct{ sent bool }

func (r *failingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("stream broke")
}

func brokenStream(_ context.Context, _ json.RawMessage) (io.Reader, error) {
	return &failingReader{}, nil
}

// sleep sleeps for the number of milliseconds given as the event.
func sleep(_ context.Context, ms int) (string, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return "slept " + strconv.Itoa(ms), nil
}

func main() {
	switch os.Getenv("_HANDLER") {
	case "echo":
		lambda.Start(echo)
	case "error":
		lambda.Start(fail)
	case "panic":
		lambda.Start(boom)
	case "context":
		lambda.Start(inspect)
	case "big":
		lambda.Start(big)
	case "broken":
		lambda.Start(brokenStream)
	case "sleep":
		lambda.Start(sleep)
	case "sigterm":
		lambda.StartWithOptions(echo, lambda.WithEnableSIGTERM())
	default:
		os.Exit(3)
	}
}
