package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

const (
	devAcct = "000000000000"
	region  = "us-east-1"
	role    = "arn:aws:iam::000000000000:role/lambda-role"
	runtime = "provided.al2023"
)

// lastModifiedRE is AWS's LastModified layout: milliseconds and +0000.
var lastModifiedRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$`)

func fnArn(acct, name string) string {
	return "arn:aws:lambda:" + region + ":" + acct + ":function:" + name
}

// start runs a test server without execution: these tests are about the
// control plane, and a control-plane-only server touches nothing of the host
// (no bridge, cgroups or firewall rules another nubo could collide with).
func start(t testing.TB, opts ...servertest.Option) *servertest.Server {
	t.Helper()
	return servertest.Start(t, append([]servertest.Option{func(c *server.Config) { c.Isolation = "none" }}, opts...)...)
}

// codeZip is a small deployment package; distinct bodies give distinct hashes.
func codeZip(t testing.TB, body string) []byte {
	return ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: []byte("#!/bin/sh\n# " + body + "\n"), Mode: 0o755})
}

func sha64(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// createInput is a valid CreateFunction request; mutate adjusts it.
func createInput(t testing.TB, name string, zip []byte, mutate ...func(*lambda.CreateFunctionInput)) *lambda.CreateFunctionInput {
	if zip == nil {
		zip = codeZip(t, name)
	}
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String(role),
		Runtime:      types.Runtime(runtime),
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: zip},
	}
	for _, m := range mutate {
		m(in)
	}
	return in
}

// mustCreate creates a function and waits until it is Active.
func mustCreate(t testing.TB, c *lambda.Client, name string, zip []byte, mutate ...func(*lambda.CreateFunctionInput)) *lambda.CreateFunctionOutput {
	t.Helper()
	out, err := c.CreateFunction(ctx(t), createInput(t, name, zip, mutate...))
	if err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
	waitSettled(t, c, name)
	return out
}

// waitSettled polls (faster than the SDK waiters' 1 s minimum) until the
// function is Active and its last update Successful.
func waitSettled(t testing.TB, c *lambda.Client, name string) *lambda.GetFunctionConfigurationOutput {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(name)})
		if err != nil {
			t.Fatalf("GetFunctionConfiguration %s: %v", name, err)
		}
		if out.State == types.StateActive && out.LastUpdateStatus == types.LastUpdateStatusSuccessful {
			return out
		}
		if out.State == types.StateFailed || out.LastUpdateStatus == types.LastUpdateStatusFailed {
			t.Fatalf("%s failed: %s %s", name, aws.ToString(out.StateReason), aws.ToString(out.LastUpdateStatusReason))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s/%s", name, out.State, out.LastUpdateStatus)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustPublish(t testing.TB, c *lambda.Client, name string) string {
	t.Helper()
	out, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String(name)})
	if err != nil {
		t.Fatalf("PublishVersion %s: %v", name, err)
	}
	return aws.ToString(out.Version)
}

// mustUpdateDescription changes $LATEST (so the next publish is a new
// version) and waits for the update to finish.
func mustUpdateDescription(t testing.TB, c *lambda.Client, name, desc string) *lambda.UpdateFunctionConfigurationOutput {
	t.Helper()
	out, err := c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(name), Description: aws.String(desc)})
	if err != nil {
		t.Fatalf("UpdateFunctionConfiguration %s: %v", name, err)
	}
	waitSettled(t, c, name)
	return out
}

// wantAPIError asserts err is the AWS error code with the HTTP status and,
// when msg is not empty, a message containing msg.
func wantAPIError(t testing.TB, err error, status int, code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %d %s", status, code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want an API error %s", err, code)
	}
	if ae.ErrorCode() != code {
		t.Errorf("code = %s (%s), want %s", ae.ErrorCode(), ae.ErrorMessage(), code)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("no HTTP response in %v", err)
	}
	if re.HTTPStatusCode() != status {
		t.Errorf("status = %d, want %d (%s)", re.HTTPStatusCode(), status, ae.ErrorCode())
	}
	if re.ServiceRequestID() == "" {
		t.Errorf("no x-amzn-RequestId on the %s error", code)
	}
	if msg != "" && !strings.Contains(ae.ErrorMessage(), msg) {
		t.Errorf("message = %q, want it to contain %q", ae.ErrorMessage(), msg)
	}
}

func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

func isNotFound(err error) bool {
	var nf *types.ResourceNotFoundException
	return errors.As(err, &nf)
}

// rawResponse is a response read whole.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map.
func (r *rawResponse) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	return m
}

// signedRequest builds a request signed for service lambda with the given
// key at the given time; a zero key leaves it unsigned.
func signedRequest(t testing.TB, method, url string, body []byte, key, secret string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	if key == "" {
		return req
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: key, SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "lambda", region, at); err != nil {
		t.Fatal(err)
	}
	return req
}

func do(t testing.TB, req *http.Request) *rawResponse {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// wantRawError checks an error response's status, x-amzn-ErrorType header,
// request id and JSON body (Type plus a message in either case).
func wantRawError(t testing.TB, r *rawResponse, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d, want %d (body %s)", r.Status, status, r.Body)
	}
	if got := r.Header.Get("x-amzn-ErrorType"); got != code {
		t.Errorf("x-amzn-ErrorType = %q, want %q", got, code)
	}
	if r.Header.Get("x-amzn-RequestId") == "" {
		t.Errorf("no x-amzn-RequestId")
	}
	m := r.JSON(t)
	if typ, _ := m["Type"].(string); typ == "" {
		t.Errorf("body has no Type: %s", r.Body)
	}
	msg, _ := m["message"].(string)
	if msg == "" {
		msg, _ = m["Message"].(string)
	}
	if msg == "" {
		t.Errorf("body has no message: %s", r.Body)
	}
	return m
}

func functionNames(fs []types.FunctionConfiguration) map[string]int {
	out := map[string]int{}
	for _, f := range fs {
		out[aws.ToString(f.FunctionName)]++
	}
	return out
}

func listAll(t testing.TB, c *lambda.Client) []types.FunctionConfiguration {
	t.Helper()
	var all []types.FunctionConfiguration
	p := lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx(t))
		if err != nil {
			t.Fatalf("ListFunctions: %v", err)
		}
		all = append(all, out.Functions...)
	}
	return all
}
