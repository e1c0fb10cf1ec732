package sigv4

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/testutil"
)

const (
	testAKID   = "AKIDEXAMPLE"
	testSecret = "test-secret"
	testRegion = "us-east-1"
	testARN    = "arn:aws:lambda:us-east-1:000000000000:function:f"
)

var signTime = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func lookup(id string) (string, bool) {
	if id == testAKID {
		return testSecret, true
	}
	return "", false
}

// testVerifier verifies "lambda" with the clock fixed at now (nil: real clock).
func testVerifier(now *time.Time) *Verifier {
	v := &Verifier{Service: "lambda", Lookup: lookup}
	if now != nil {
		t := *now
		v.Now = func() time.Time { return t }
	}
	return v
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type signOpts struct {
	akid, secret, token, service, region string
	at                                   time.Time
}

// sdkSign signs r the way aws-sdk-go-v2 does for Lambda.
func sdkSign(t testing.TB, r *http.Request, body []byte, o signOpts) {
	t.Helper()
	if o.akid == "" {
		o.akid = testAKID
	}
	if o.secret == "" {
		o.secret = testSecret
	}
	if o.service == "" {
		o.service = "lambda"
	}
	if o.region == "" {
		o.region = testRegion
	}
	if o.at.IsZero() {
		o.at = signTime
	}
	creds := aws.Credentials{AccessKeyID: o.akid, SecretAccessKey: o.secret, SessionToken: o.token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hexSHA256(body), o.service, o.region, o.at); err != nil {
		t.Fatal(err)
	}
}

// reqCase is a request as a Lambda client would build it.
type reqCase struct {
	name   string
	method string
	target string // path and query exactly as written into the URL
	header map[string]string
	body   []byte
	token  string
}

const escapedARN = "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"

var sdkCases = []reqCase{
	{name: "get-function-escaped-arn-latest", method: "GET",
		target: "/2015-03-31/functions/" + escapedARN + "%3A%24LATEST"},
	{name: "get-function-raw-colons-latest", method: "GET",
		target: "/2015-03-31/functions/" + testARN + ":$LATEST"},
	{name: "get-function-qualifier-query", method: "GET",
		target: "/2015-03-31/functions/f?Qualifier=%24LATEST"},
	{name: "get-alias", method: "GET",
		target: "/2015-03-31/functions/" + escapedARN + "/aliases/live"},
	{name: "list-functions-several-keys", method: "GET",
		target: "/2015-03-31/functions/?MaxItems=5&Marker=bWFya2Vy%2Fx%3D%3D&FunctionVersion=ALL&MasterRegion=ALL"},
	{name: "repeated-keys", method: "GET",
		target: "/2015-03-31/functions/?b=2&a=2&a=1&a=10&b=1"},
	{name: "special-characters", method: "GET",
		target: "/2015-03-31/functions/?q=hello%20world&plus=a%2Bb&space=a+b&utf8=%E2%9C%93&star=a*b&tilde=~x&slash=a/b&colon=a:b&pct=100%25"},
	{name: "empty-values", method: "GET",
		target: "/2015-03-31/functions/?Marker=&flag&MaxItems=1"},
	{name: "invoke-json-body", method: "POST",
		target: "/2015-03-31/functions/" + escapedARN + "/invocations?Qualifier=live",
		header: map[string]string{
			"Content-Type":          "application/json",
			"X-Amz-Invocation-Type": "RequestResponse",
			"X-Amz-Log-Type":        "Tail",
			"X-Amz-Client-Context":  "eyJjdXN0b20iOnt9fQ==",
		},
		body: []byte(`{"key":"value","list":[1,2,3],"nested":{"s":"a b  c"}}`)},
	{name: "invoke-empty-body", method: "POST",
		target: "/2015-03-31/functions/f/invocations"},
	{name: "update-configuration-put", method: "PUT",
		target: "/2015-03-31/functions/f/configuration",
		header: map[string]string{"Content-Type": "application/json"},
		body:   []byte(`{"MemorySize":256,"Timeout":30}`)},
	{name: "delete-function", method: "DELETE",
		target: "/2015-03-31/functions/f?Qualifier=1"},
	{name: "session-token", method: "GET",
		target: "/2015-03-31/functions/f",
		token:  "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"},
	{name: "header-inner-spaces", method: "POST",
		target: "/2015-03-31/functions/f/invocations",
		header: map[string]string{"X-Amz-Client-Context": "a   b  c", "Content-Type": "application/json"},
		body:   []byte(`{}`)},
	{name: "layer-version", method: "GET",
		target: "/2018-10-31/layers/my-layer/versions/3"},
	{name: "tags-arn", method: "GET",
		target: "/2017-03-31/tags/" + escapedARN},
	{name: "function-url-config", method: "GET",
		target: "/2021-10-31/functions/f/url?Qualifier=live"},
}

func (c reqCase) build(t testing.TB, base string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(c.method, base+c.target, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.body) == 0 {
		r.Body, r.GetBody, r.ContentLength = http.NoBody, nil, 0
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	return r
}

// verifyServer is an httptest server whose handler verifies every request
// and answers like the Lambda API: 200 with a small JSON body, or the AWS
// error shape.
type verifyServer struct {
	*httptest.Server
	v *Verifier

	mu      sync.Mutex
	lastErr *Error
	seen    []seenRequest
}

type seenRequest struct {
	method, uri string
	err         *Error
}

func newVerifyServer(t testing.TB, v *Verifier) *verifyServer {
	s := &verifyServer{v: v}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *verifyServer) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, verr := s.v.Verify(r, body)
	var e *Error
	if verr != nil && !errors.As(verr, &e) {
		e = &Error{Code: "NotAnError", Message: verr.Error(), Status: 500}
	}
	s.mu.Lock()
	s.lastErr = e
	s.seen = append(s.seen, seenRequest{r.Method, r.RequestURI, e})
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	if e != nil {
		w.Header().Set("X-Amzn-ErrorType", e.Code)
		w.WriteHeader(e.Status)
		json.NewEncoder(w).Encode(map[string]string{"__type": e.Code, "message": e.Message})
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/invocations"):
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		w.Write([]byte(`{"ok":true}`))
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/functions/"):
		w.Write([]byte(`{"Functions":[]}`))
	case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/aliases"):
		w.Write([]byte(`{"Aliases":[]}`))
	default:
		json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": id.AccessKeyID, "Region": id.Region})
	}
}

func (s *verifyServer) takeLastErr() *Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lastErr
	s.lastErr = nil
	return e
}

func (s *verifyServer) takeSeen() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.seen
	s.seen = nil
	return seen
}

func logMismatch(t testing.TB, e *Error) {
	t.Helper()
	if e != nil && e.canonicalRequest != "" {
		t.Logf("server canonical request:\n%s\nstring to sign:\n%s", e.canonicalRequest, e.stringToSign)
	}
}

func send(t testing.TB, r *http.Request) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestSDKSignedRequestsVerify(t *testing.T) {
	now := signTime.Add(90 * time.Second)
	v := testVerifier(&now)
	srv := newVerifyServer(t, v)
	for _, c := range sdkCases {
		t.Run(c.name+"/server", func(t *testing.T) {
			r := c.build(t, srv.URL)
			sdkSign(t, r, c.body, signOpts{token: c.token})
			resp := send(t, r)
			if resp.StatusCode != http.StatusOK {
				e := srv.takeLastErr()
				logMismatch(t, e)
				t.Fatalf("status %d: %v", resp.StatusCode, e)
			}
		})
		t.Run(c.name+"/direct", func(t *testing.T) {
			r := c.build(t, "http://lambda.us-east-1.example.test")
			sdkSign(t, r, c.body, signOpts{token: c.token})
			id, err := v.Verify(r, c.body)
			if err != nil {
				var e *Error
				errors.As(err, &e)
				logMismatch(t, e)
				t.Fatal(err)
			}
			want := Identity{AccessKeyID: testAKID, Region: testRegion, Service: "lambda", Date: signTime, SessionToken: c.token}
			if *id != want {
				t.Errorf("identity = %+v, want %+v", *id, want)
			}
		})
	}
}

// TestLambdaClientRequestsVerify drives the real Lambda client of
// aws-sdk-go-v2, so paths, queries and headers are built by the SDK itself.
func TestLambdaClientRequestsVerify(t *testing.T) {
	srv := newVerifyServer(t, testVerifier(nil))
	client := lambda.New(lambda.Options{
		BaseEndpoint: aws.String(srv.URL),
		Region:       testRegion,
		Credentials:  credentials.NewStaticCredentialsProvider(testAKID, testSecret, "session/token=="),
		HTTPClient:   srv.Client(),
	})
	ctx := context.Background()
	calls := map[string]func() error{
		"GetFunction ARN $LATEST": func() error {
			_, err := client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(testARN + ":$LATEST")})
			return err
		},
		"ListFunctions": func() error {
			_, err := client.ListFunctions(ctx, &lambda.ListFunctionsInput{MaxItems: aws.Int32(5), Marker: aws.String("a b+c/d=")})
			return err
		},
		"Invoke": func() error {
			_, err := client.Invoke(ctx, &lambda.InvokeInput{
				FunctionName:   aws.String(testARN),
				Qualifier:      aws.String("$LATEST"),
				InvocationType: lambdatypes.InvocationTypeRequestResponse,
				LogType:        lambdatypes.LogTypeTail,
				Payload:        []byte(`{"hello":"world"}`),
			})
			return err
		},
		"ListAliases": func() error {
			_, err := client.ListAliases(ctx, &lambda.ListAliasesInput{FunctionName: aws.String("f"), FunctionVersion: aws.String("$LATEST")})
			return err
		},
		"DeleteFunction": func() error {
			_, err := client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("f"), Qualifier: aws.String("1")})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			seen := srv.takeSeen()
			if len(seen) == 0 {
				t.Fatalf("no request reached the server (err %v)", err)
			}
			for _, s := range seen {
				if s.err != nil {
					logMismatch(t, s.err)
					t.Errorf("%s %s: %v", s.method, s.uri, s.err)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func replaceAuth(old, new string) func(*http.Request) {
	return func(r *http.Request) {
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), old, new, 1))
	}
}

func TestRejections(t *testing.T) {
	invoke := reqCase{method: "POST", target: "/2015-03-31/functions/" + escapedARN + "/invocations?Qualifier=live",
		header: map[string]string{"X-Amz-Invocation-Type": "RequestResponse", "Content-Type": "application/json"},
		body:   []byte(`{"amount":100}`)}
	const mismatch = msgMismatch
	cases := []struct {
		name       string
		req        reqCase
		opts       signOpts
		noSign     bool
		mutate     func(*http.Request)
		now        time.Time
		wantStatus int
		wantCode   string
		wantMsg    string // exact when set
	}{
		{name: "body tampered after signing", req: invoke, mutate: func(r *http.Request) {
			tampered := []byte(`{"amount":900}`)
			r.Body = io.NopCloser(bytes.NewReader(tampered))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tampered)), nil }
		}, wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "path changed", req: invoke, mutate: func(r *http.Request) {
			r.URL.Path, r.URL.RawPath = "/2015-03-31/functions/other/invocations", ""
		}, wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "path qualifier escaped differently", req: reqCase{method: "GET", target: "/2015-03-31/functions/" + escapedARN + "%3A%24LATEST"},
			mutate: func(r *http.Request) {
				// Same decoded path, different bytes on the wire: the client signed the escaped form.
				r.URL.RawPath = ""
			}, wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "query changed", req: invoke, mutate: func(r *http.Request) { r.URL.RawQuery = "Qualifier=prod" },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "query parameter added", req: invoke, mutate: func(r *http.Request) { r.URL.RawQuery += "&x=1" },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "signed header changed", req: invoke, mutate: func(r *http.Request) { r.Header.Set("X-Amz-Invocation-Type", "Event") },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "method changed", req: invoke, mutate: func(r *http.Request) { r.Method = "PUT" },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "wrong secret", req: invoke, opts: signOpts{secret: "not-the-secret"},
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "unknown access key", req: invoke, opts: signOpts{akid: "AKIDUNKNOWN"},
			wantStatus: 403, wantCode: CodeUnrecognizedClient, wantMsg: "The security token included in the request is invalid."},
		{name: "skew +6 min", req: invoke, now: signTime.Add(6 * time.Minute),
			wantStatus: 403, wantCode: CodeInvalidSignature,
			wantMsg: "Signature expired: 20260101T120000Z is now earlier than 20260101T120100Z (20260101T120600Z - 5 min.)"},
		{name: "skew -6 min", req: invoke, now: signTime.Add(-6 * time.Minute),
			wantStatus: 403, wantCode: CodeInvalidSignature,
			wantMsg: "Signature not yet current: 20260101T120000Z is still later than 20260101T115900Z (20260101T115400Z + 5 min.)"},
		{name: "scope date mismatch", req: invoke, mutate: replaceAuth("/20260101/", "/20251231/"),
			wantStatus: 403, wantCode: CodeInvalidSignature,
			wantMsg: "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20251231' != '20260101', from '20260101T120000Z'."},
		{name: "wrong service", req: invoke, opts: signOpts{service: "s3"},
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: "Credential should be scoped to correct service: 'lambda'. "},
		{name: "wrong terminator", req: invoke, mutate: replaceAuth("/aws4_request", "/aws5_request"),
			wantStatus: 403, wantCode: CodeInvalidSignature,
			wantMsg: "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. "},
		{name: "empty region", req: invoke, mutate: replaceAuth("/us-east-1/", "//"),
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: "Credential should be scoped to a valid region, not ''. "},
		{name: "missing Authorization", req: invoke, noSign: true,
			wantStatus: 403, wantCode: CodeMissingAuthenticationToken, wantMsg: "Missing Authentication Token"},
		{name: "garbage Authorization", req: invoke, mutate: func(r *http.Request) { r.Header.Set("Authorization", "garbage") },
			wantStatus: 400, wantCode: CodeIncompleteSignature, wantMsg: "Unsupported AWS 'algorithm': 'garbage'."},
		{name: "Authorization without parameters", req: invoke, mutate: func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256") },
			wantStatus: 400, wantCode: CodeIncompleteSignature,
			wantMsg: "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. " +
				"Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256"},
		{name: "missing Signature", req: invoke, mutate: func(r *http.Request) {
			a := r.Header.Get("Authorization")
			r.Header.Set("Authorization", a[:strings.Index(a, ", Signature=")])
		}, wantStatus: 400, wantCode: CodeIncompleteSignature},
		{name: "missing X-Amz-Date", req: invoke, mutate: func(r *http.Request) { r.Header.Del("X-Amz-Date") },
			wantStatus: 400, wantCode: CodeIncompleteSignature},
		{name: "malformed X-Amz-Date", req: invoke, mutate: func(r *http.Request) { r.Header.Set("X-Amz-Date", "2026-01-01T12:00:00Z") },
			wantStatus: 400, wantCode: CodeIncompleteSignature,
			wantMsg: "Date must be in ISO-8601 'basic format'. Got '2026-01-01T12:00:00Z'. See http://en.wikipedia.org/wiki/ISO_8601"},
		{name: "SignedHeaders without host", req: invoke, mutate: replaceAuth("SignedHeaders=content-length;content-type;host;", "SignedHeaders=content-length;content-type;"),
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."},
		{name: "SignedHeaders without x-amz-date", req: reqCase{method: "GET", target: "/2015-03-31/functions/f"},
			mutate:     replaceAuth("SignedHeaders=host;x-amz-date", "SignedHeaders=host"),
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."},
		{name: "session token not signed", req: reqCase{method: "GET", target: "/2015-03-31/functions/f"},
			mutate:     func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "injected") },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."},
		{name: "session token replaced", req: reqCase{method: "GET", target: "/2015-03-31/functions/f", token: "original"},
			mutate:     func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "replaced") },
			wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "SignedHeaders unsorted", req: invoke, mutate: replaceAuth("SignedHeaders=content-length;content-type;host;", "SignedHeaders=content-type;content-length;host;"),
			wantStatus: 403, wantCode: CodeInvalidSignature},
		{name: "SignedHeaders uppercase", req: invoke, mutate: replaceAuth(";host;", ";Host;"),
			wantStatus: 403, wantCode: CodeInvalidSignature},
		{name: "credential with four elements", req: invoke, mutate: replaceAuth("/lambda/aws4_request", "/lambda"),
			wantStatus: 400, wantCode: CodeIncompleteSignature},
		{name: "duplicate Signature parameter", req: invoke, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", r.Header.Get("Authorization")+", Signature="+strings.Repeat("0", 64))
		}, wantStatus: 400, wantCode: CodeIncompleteSignature},
		{name: "signature in uppercase hex", req: invoke, mutate: func(r *http.Request) {
			a := r.Header.Get("Authorization")
			i := strings.Index(a, "Signature=") + len("Signature=")
			r.Header.Set("Authorization", a[:i]+strings.ToUpper(a[i:]))
		}, wantStatus: 403, wantCode: CodeInvalidSignature, wantMsg: mismatch},
		{name: "two Authorization headers", req: invoke, mutate: func(r *http.Request) {
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
		}, wantStatus: 400, wantCode: CodeIncompleteSignature},
		{name: "header and query auth together", req: invoke, mutate: func(r *http.Request) { r.URL.RawQuery += "&X-Amz-Algorithm=AWS4-HMAC-SHA256" },
			wantStatus: 403, wantCode: CodeInvalidSignature},
		// The SDK's signer rewrites RawQuery to its canonical form, so these
		// queries are put in after signing.
		{name: "query with invalid escape", req: reqCase{method: "GET", target: "/2015-03-31/functions/"},
			mutate:     func(r *http.Request) { r.URL.RawQuery = "Marker=%zz" },
			wantStatus: 400, wantCode: CodeMalformedQueryString},
		{name: "query with semicolon", req: reqCase{method: "GET", target: "/2015-03-31/functions/"},
			mutate:     func(r *http.Request) { r.URL.RawQuery = "a=1;b=2" },
			wantStatus: 400, wantCode: CodeMalformedQueryString},
		{name: "UNSIGNED-PAYLOAD with header auth", req: reqCase{method: "POST", target: "/2015-03-31/functions/f/invocations",
			header: map[string]string{"X-Amz-Content-Sha256": unsignedPayload}, body: []byte(`{}`)},
			wantStatus: 403, wantCode: CodeInvalidSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := signTime.Add(30 * time.Second)
			if !c.now.IsZero() {
				now = c.now
			}
			srv := newVerifyServer(t, testVerifier(&now))
			r := c.req.build(t, srv.URL)
			if !c.noSign {
				if c.opts.token == "" {
					c.opts.token = c.req.token
				}
				sdkSign(t, r, c.req.body, c.opts)
			}
			if c.mutate != nil {
				c.mutate(r)
			}
			resp := send(t, r)
			e := srv.takeLastErr()
			if e == nil {
				t.Fatalf("accepted (status %d), want %d %s", resp.StatusCode, c.wantStatus, c.wantCode)
			}
			if resp.StatusCode != c.wantStatus || e.Status != c.wantStatus || e.Code != c.wantCode {
				t.Errorf("got %d %s (%q), want %d %s", resp.StatusCode, e.Code, e.Message, c.wantStatus, c.wantCode)
			}
			if resp.Header.Get("X-Amzn-ErrorType") != c.wantCode {
				t.Errorf("X-Amzn-ErrorType = %q", resp.Header.Get("X-Amzn-ErrorType"))
			}
			if c.wantMsg != "" && e.Message != c.wantMsg {
				t.Errorf("message\n got: %q\nwant: %q", e.Message, c.wantMsg)
			}
		})
	}
}

// The query is canonicalised from its decoded pairs, so any encoding of the
// same pairs verifies: botocore sends %20 where Go's url.Values sends '+', and
// the SDK signs its own re-encoding of whatever the URL held.
func TestEquivalentQueryEncodings(t *testing.T) {
	now := signTime
	srv := newVerifyServer(t, testVerifier(&now))
	for _, raw := range []string{
		"y=%41&x=a+b&z=%7E%2a",
		"x=a%20b&z=~*&y=A",
		"z=%7e%2A&y=A&x=a%20b",
	} {
		r := reqCase{method: "GET", target: "/2015-03-31/functions/?x=a%20b&y=A&z=~*"}.build(t, srv.URL)
		sdkSign(t, r, nil, signOpts{})
		r.URL.RawQuery = raw
		if resp := send(t, r); resp.StatusCode != 200 {
			e := srv.takeLastErr()
			logMismatch(t, e)
			t.Errorf("%s: %v", raw, e)
		}
	}
}

func TestContentSHA256Header(t *testing.T) {
	now := signTime
	v := testVerifier(&now)
	body := []byte(`{"a":1}`)
	build := func(claim string) *http.Request {
		r := reqCase{method: "POST", target: "/2015-03-31/functions/f/invocations", body: body}.build(t, "http://h.example.test")
		r.Header.Set("X-Amz-Content-Sha256", claim)
		return r
	}
	// A correct claim is accepted.
	r := build(hexSHA256(body))
	sdkSign(t, r, body, signOpts{})
	if _, err := v.Verify(r, body); err != nil {
		t.Fatalf("correct claim: %v", err)
	}
	// A signed but false claim is refused even though the signature holds.
	r = build(hexSHA256([]byte("other")))
	v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret},
		r, hexSHA256([]byte("other")), "lambda", testRegion, signTime)
	_, err := v.Verify(r, body)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeContentSHA256Mismatch || e.Status != 400 {
		t.Fatalf("false claim: %v", err)
	}
}

// The AWS SigV4 test suite (aws-sig-v4-test-suite): credentials AKIDEXAMPLE /
// wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service "service",
// 20150830T123600Z. Each vector gives the request target and headers as the
// server receives them, the canonical request, and the expected signature.
// Known answers pin the canonicalisation independently of the Go SDK.
func TestAWSTestSuiteVectors(t *testing.T) {
	const (
		secret  = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
		empty   = emptySHA256
		host    = "example.amazonaws.com"
		stdHdrs = "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
	)
	type hdr = [2]string
	vectors := []struct {
		name, method, target string
		headers              []hdr
		signed, body, creq   string
		sig                  string
	}{
		{"get-vanilla", "GET", "/", nil, "host;x-amz-date", "",
			"GET\n/\n\n" + stdHdrs + empty, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1", nil, "host;x-amz-date", "",
			"GET\n/\nParam1=value1&Param2=value2\n" + stdHdrs + empty, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{"get-vanilla-query-order-key", "GET", "/?Param1=value2&Param1=Value1", nil, "host;x-amz-date", "",
			"GET\n/\nParam1=Value1&Param1=value2\n" + stdHdrs + empty, "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"},
		{"get-vanilla-query-order-encoded", "GET", "/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1", nil, "host;x-amz-date", "",
			"GET\n/\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\n" + stdHdrs + empty, "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"},
		{"get-vanilla-query-unreserved", "GET", "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", nil, "host;x-amz-date", "",
			"GET\n/\n-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n" + stdHdrs + empty,
			"9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
		{"get-vanilla-utf8-query", "GET", "/?ሴ=bar", nil, "host;x-amz-date", "",
			"GET\n/\n%E1%88%B4=bar\n" + stdHdrs + empty, "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
		{"get-utf8", "GET", "/ሴ", nil, "host;x-amz-date", "",
			"GET\n/%E1%88%B4\n\n" + stdHdrs + empty, "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
		{"get-unreserved", "GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", nil, "host;x-amz-date", "",
			"GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\n" + stdHdrs + empty, "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
		{"get-special-character", "GET", "/example/$delete", nil, "host;x-amz-date", "",
			"GET\n/example/%24delete\n\n" + stdHdrs + empty, "a853c9b21b528b19643d00910d35b83a10c366a10833ceefb45edd6c80e40f27"},
		{"get-space", "GET", "/example space/", nil, "host;x-amz-date", "",
			"GET\n/example%20space/\n\n" + stdHdrs + empty, "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
		{"get-relative-relative", "GET", "/example1/example2/../..", nil, "host;x-amz-date", "",
			"GET\n/\n\n" + stdHdrs + empty, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-slash-dot-slash", "GET", "/./", nil, "host;x-amz-date", "",
			"GET\n/\n\n" + stdHdrs + empty, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-slash-pointless-dot", "GET", "/./example", nil, "host;x-amz-date", "",
			"GET\n/example\n\n" + stdHdrs + empty, "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"},
		{"get-slashes", "GET", "//example//", nil, "host;x-amz-date", "",
			"GET\n/example/\n\n" + stdHdrs + empty, "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"},
		{"get-header-key-duplicate", "GET", "/", []hdr{{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
			"host;my-header1;x-amz-date", "",
			"GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + empty,
			"c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
		{"get-header-value-trim", "GET", "/", []hdr{{"My-Header1", " value1"}, {"My-Header2", ` "a   b   c"`}},
			"host;my-header1;my-header2;x-amz-date", "",
			"GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n" + empty,
			"acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
		{"post-header-value-case", "POST", "/", []hdr{{"My-Header1", "VALUE1"}}, "host;my-header1;x-amz-date", "",
			"POST\n/\n\nhost:example.amazonaws.com\nmy-header1:VALUE1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + empty,
			"cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
		{"post-x-www-form-urlencoded", "POST", "/", []hdr{{"Content-Type", "application/x-www-form-urlencoded"}},
			"content-type;host;x-amz-date", "Param1=value1",
			"POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
			"ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
		{"post-sts-header-before", "POST", "/", []hdr{{"X-Amz-Security-Token", "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="}},
			"host;x-amz-date;x-amz-security-token", "",
			"", "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
	}
	now := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	v := &Verifier{Service: "service", Now: func() time.Time { return now },
		Lookup: func(id string) (string, bool) { return secret, id == "AKIDEXAMPLE" }}
	for _, c := range vectors {
		t.Run(c.name, func(t *testing.T) {
			build := func(sig string) *http.Request {
				r := &http.Request{Method: c.method, RequestURI: c.target, Host: host, Header: http.Header{}}
				if u, err := url.ParseRequestURI(c.target); err == nil {
					r.URL = u
				} else {
					r.URL = &url.URL{Path: c.target}
				}
				for _, h := range c.headers {
					r.Header.Add(h[0], strings.TrimLeft(h[1], " "))
				}
				r.Header.Set("X-Amz-Date", "20150830T123600Z")
				r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders="+c.signed+", Signature="+sig)
				return r
			}
			id, err := v.Verify(build(c.sig), []byte(c.body))
			if err != nil {
				var e *Error
				errors.As(err, &e)
				logMismatch(t, e)
				t.Fatal(err)
			}
			if id.Region != "us-east-1" || id.Service != "service" || !id.Date.Equal(now) {
				t.Errorf("identity %+v", id)
			}
			// A wrong signature exposes the canonical request the server built.
			_, err = v.Verify(build(strings.Repeat("0", 64)), []byte(c.body))
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidSignature {
				t.Fatalf("zero signature: %v", err)
			}
			if c.creq != "" && e.canonicalRequest != c.creq {
				t.Errorf("canonical request\n got: %q\nwant: %q", e.canonicalRequest, c.creq)
			}
		})
	}
}

// AWS also takes the time from an HTTP Date header, signing its ISO-8601
// form. The expected signature is computed here from a literal canonical request.
func TestDateHeader(t *testing.T) {
	const date = "Sun, 30 Aug 2015 12:36:00 GMT"
	creq := "GET\n/\n\ndate:" + date + "\nhost:example.amazonaws.com\n\ndate;host\n" + emptySHA256
	c := sha256.Sum256([]byte(creq))
	sts := "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/lambda/aws4_request\n" + hex.EncodeToString(c[:])
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+testSecret), "20150830")
	k = mac(mac(mac(k, "us-east-1"), "lambda"), "aws4_request")
	sig := hex.EncodeToString(mac(k, sts))

	now := time.Date(2015, 8, 30, 12, 38, 0, 0, time.UTC)
	v := testVerifier(&now)
	build := func(signed string) *http.Request {
		r := httptest.NewRequest("GET", "http://example.amazonaws.com/", nil)
		r.Header.Set("Date", date)
		r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+testAKID+"/20150830/us-east-1/lambda/aws4_request, SignedHeaders="+signed+", Signature="+sig)
		return r
	}
	id, err := v.Verify(build("date;host"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Date.Equal(time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)) {
		t.Errorf("date %v", id.Date)
	}
	// The Date header must then be signed.
	_, err = v.Verify(build("host"), nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidSignature || !strings.Contains(e.Message, "'Date' must be a 'SignedHeader'") {
		t.Fatalf("unsigned Date: %v", err)
	}
}

func TestPresign(t *testing.T) {
	now := signTime.Add(time.Minute)
	v := testVerifier(&now)
	srv := newVerifyServer(t, v)
	base, _ := url.Parse(srv.URL + "/2015-03-31/functions/" + escapedARN + "/code?versionId=3&x=a%20b")
	creds := Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret, SessionToken: "tok/en=="}
	u, err := Presign("GET", base, creds, testRegion, "lambda", signTime, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	get := func(u string) (*http.Response, *Error) {
		r, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp := send(t, r)
		return resp, srv.takeLastErr()
	}
	if resp, e := get(u.String()); resp.StatusCode != 200 {
		logMismatch(t, e)
		t.Fatalf("presigned GET: %d %v", resp.StatusCode, e)
	}
	if !strings.Contains(u.RawQuery, "X-Amz-Security-Token=tok%2Fen%3D%3D") || !strings.HasPrefix(u.RawQuery, "versionId=3&x=a%20b&") {
		t.Errorf("query %s", u.RawQuery)
	}

	tampered := *u
	tampered.RawQuery = strings.Replace(u.RawQuery, "versionId=3", "versionId=4", 1)
	if _, e := get(tampered.String()); e == nil || e.Code != CodeInvalidSignature || e.Message != msgMismatch {
		t.Errorf("tampered: %v", e)
	}
	noExpires := *u
	noExpires.RawQuery = strings.Replace(u.RawQuery, "X-Amz-Expires=600&", "", 1)
	if _, e := get(noExpires.String()); e == nil || e.Code != CodeInvalidSignature {
		t.Errorf("X-Amz-Expires removed: %v", e)
	}
	noSig := *u
	noSig.RawQuery = u.RawQuery[:strings.Index(u.RawQuery, "&X-Amz-Signature=")]
	if _, e := get(noSig.String()); e == nil || e.Code != CodeIncompleteSignature || e.Status != 400 {
		t.Errorf("no signature: %v", e)
	}

	// Valid until X-Amz-Date + X-Amz-Expires, not merely within the skew.
	now = signTime.Add(9 * time.Minute)
	v.Now = func() time.Time { return now }
	if resp, e := get(u.String()); resp.StatusCode != 200 {
		t.Errorf("within expiry: %v", e)
	}
	now = signTime.Add(10*time.Minute + time.Second)
	v.Now = func() time.Time { return now }
	_, e := get(u.String())
	want := "Signature expired: 20260101T120000Z is now earlier than 20260101T120001Z (20260101T121001Z - 10 min.)"
	if e == nil || e.Code != CodeInvalidSignature || e.Message != want {
		t.Errorf("expired: %v", e)
	}

	for _, bad := range []time.Duration{0, 500 * time.Millisecond, MaxPresignExpiry + time.Second} {
		if _, err := Presign("GET", base, creds, testRegion, "lambda", signTime, bad); err == nil {
			t.Errorf("expiry %v accepted", bad)
		}
	}
	if _, err := Presign("GET", u, creds, testRegion, "lambda", signTime, time.Minute); err == nil {
		t.Error("presigning a presigned URL accepted")
	}
	if p, err := Presign("GET", &url.URL{Scheme: "https", Host: "h.example.test:443", Path: "/x"}, creds, testRegion, "lambda", signTime, time.Minute); err != nil || p.Host != "h.example.test" {
		t.Errorf("default port: %v %v", p, err)
	}
}

// URLs presigned by aws-sdk-go-v2 verify, and UNSIGNED-PAYLOAD is honoured
// only when the signer declared it through X-Amz-Content-Sha256.
func TestSDKPresignedURLs(t *testing.T) {
	now := signTime.Add(time.Minute)
	srv := newVerifyServer(t, testVerifier(&now))
	presign := func(payloadHash string, header http.Header) (string, http.Header) {
		r, _ := http.NewRequest("GET", srv.URL+"/2015-03-31/functions/f/code?X-Amz-Expires=300&a=b%2Fc", nil)
		for k, v := range header {
			r.Header[k] = v
		}
		u, h, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret},
			r, payloadHash, "lambda", testRegion, signTime)
		if err != nil {
			t.Fatal(err)
		}
		return u, h
	}
	do := func(u string, h http.Header) (int, *Error) {
		r, _ := http.NewRequest("GET", u, nil)
		for k, v := range h {
			if k != "Host" {
				r.Header[k] = v
			}
		}
		return send(t, r).StatusCode, srv.takeLastErr()
	}
	if st, e := do(presign(emptySHA256, nil)); st != 200 {
		logMismatch(t, e)
		t.Errorf("empty payload hash: %d %v", st, e)
	}
	if st, e := do(presign(unsignedPayload, http.Header{"X-Amz-Content-Sha256": {unsignedPayload}})); st != 200 {
		logMismatch(t, e)
		t.Errorf("declared UNSIGNED-PAYLOAD: %d %v", st, e)
	}
	if st, e := do(presign(unsignedPayload, nil)); st != 403 || e == nil || e.Code != CodeInvalidSignature {
		t.Errorf("undeclared UNSIGNED-PAYLOAD: %d %v", st, e)
	}
}

func TestCanonicalQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"":                    "",
		"b=2&a=1&a=0&c=":      "a=0&a=1&b=2&c=",
		"x=a+b":               "x=a%20b",
		"x=%2b&y=%2B":         "x=%2B&y=%2B",
		"k":                   "k=",
		"a&&b":                "a=&b=",
		"%41=%7e":             "A=~",
		"q=%E2%9C%93&q=*":     "q=%2A&q=%E2%9C%93",
		"X-Amz-Signature=abc": "X-Amz-Signature=abc",
		"=v":                  "=v",
		"a=b=c":               "a=b%3Dc",
		"Qualifier=%24LATEST": "Qualifier=%24LATEST",
	} {
		s := getScratch()
		if e := s.parseQuery(raw); e != nil {
			t.Errorf("%q: %v", raw, e)
			continue
		}
		if got := string(s.appendCanonicalQuery(nil, false)); got != want {
			t.Errorf("%q: got %q, want %q", raw, got, want)
		}
		putScratch(s)
	}
	for _, raw := range []string{"a=%", "a=%4", "a=%g1", "a=1;b=2", "%zz=1"} {
		s := getScratch()
		if e := s.parseQuery(raw); e == nil || e.Code != CodeMalformedQueryString {
			t.Errorf("%q accepted", raw)
		}
		putScratch(s)
	}
}

func TestCanonicalURI(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "/",
		"/":                               "/",
		"/2015-03-31/functions/arn%3Aaws": "/2015-03-31/functions/arn%253Aaws",
		"/functions/f:$LATEST":            "/functions/f%3A%24LATEST",
		"/functions/f%3A%24LATEST":        "/functions/f%253A%2524LATEST",
		"/2015-03-31/functions/":          "/2015-03-31/functions/",
		"/a//b/./c/../d/":                 "/a/b/d/",
		"/a/..":                           "/",
		"/a/%2F/b":                        "/a/%252F/b",
	} {
		if got := string(appendCanonicalURI(nil, in)); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestVerifyWithoutURL(t *testing.T) {
	r := &http.Request{Method: "GET", Header: http.Header{"Authorization": {"AWS4-HMAC-SHA256 Credential=x"}}}
	if _, err := testVerifier(nil).Verify(r, nil); err == nil {
		t.Fatal("accepted")
	}
}

func TestSigningKeyCacheFollowsSecretRotation(t *testing.T) {
	now := signTime
	secret := testSecret
	v := &Verifier{Lookup: func(string) (string, bool) { return secret, true }, Now: func() time.Time { return now }}
	sign := func(s string) *http.Request {
		r := reqCase{method: "GET", target: "/2015-03-31/functions/f"}.build(t, "http://h.example.test")
		sdkSign(t, r, nil, signOpts{secret: s})
		return r
	}
	if _, err := v.Verify(sign(testSecret), nil); err != nil {
		t.Fatal(err)
	}
	secret = "rotated"
	if _, err := v.Verify(sign(testSecret), nil); err == nil {
		t.Fatal("old secret accepted after rotation")
	}
	if _, err := v.Verify(sign("rotated"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestAWSCLI runs the stock AWS CLIs (v1 on PATH, v2 from Debian) against a
// server that verifies every request.
func TestAWSCLI(t *testing.T) {
	testutil.RequiresBinary(t, "aws")
	bins := map[string]string{}
	for _, name := range []string{"aws", "/usr/bin/aws"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		bins[name] = p
	}
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "fn.zip")
	writeZip(t, zipPath, map[string]string{"h.py": "def handler(event, context):\n    return event\n"})

	seenVersions := map[string]string{}
	for name, bin := range bins {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v %s", bin, err, out)
		}
		version := strings.Fields(string(out))[0]
		if prev, dup := seenVersions[version]; dup {
			t.Logf("%s is the same CLI as %s (%s)", name, prev, version)
			continue
		}
		seenVersions[version] = name
		v2 := strings.HasPrefix(version, "aws-cli/2")
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			runCLI(t, bin, v2, zipPath)
		})
	}
}

func runCLI(t *testing.T, bin string, v2 bool, zipPath string) {
	srv := newVerifyServer(t, testVerifier(nil))
	work := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"AWS_ACCESS_KEY_ID=" + testAKID,
		"AWS_SECRET_ACCESS_KEY=" + testSecret,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_PAGER=",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_MAX_ATTEMPTS=1",
	}
	binary := []string{}
	if v2 {
		binary = []string{"--cli-binary-format", "raw-in-base64-out"}
	}
	commands := [][]string{
		{"lambda", "get-function", "--function-name", testARN + ":$LATEST"},
		{"lambda", "list-functions", "--max-items", "5"},
		{"lambda", "list-aliases", "--function-name", "f", "--function-version", "$LATEST"},
		append([]string{"lambda", "invoke", "--function-name", "f", "--qualifier", "$LATEST", "--log-type", "Tail",
			"--payload", `{"key":"a b  c","n":[1,2]}`}, append(binary, "out.json")...),
		{"lambda", "create-function", "--function-name", "f", "--runtime", "python3.12", "--handler", "h.handler",
			"--role", "arn:aws:iam::000000000000:role/r", "--zip-file", "fileb://" + zipPath},
		{"lambda", "delete-function", "--function-name", testARN, "--qualifier", "1"},
	}
	for _, args := range commands {
		args = append(args, "--endpoint-url", srv.URL, "--region", testRegion, "--output", "json")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env, cmd.Dir = env, work
		out, err := cmd.CombinedOutput()
		cancel()
		seen := srv.takeSeen()
		if len(seen) == 0 {
			t.Errorf("%s: no request reached the server: %v\n%s", args[1], err, out)
			continue
		}
		for _, s := range seen {
			if s.err != nil {
				logMismatch(t, s.err)
				t.Errorf("%s: %s %s: %v", args[1], s.method, s.uri, s.err)
			} else {
				t.Logf("%s: verified %s %s", args[1], s.method, s.uri)
			}
		}
		if err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	if got, err := os.ReadFile(filepath.Join(work, "out.json")); err != nil || string(got) != `{"ok":true}` {
		t.Errorf("invoke output %q, %v", got, err)
	}
}

func writeZip(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func signedRequest(tb testing.TB, c reqCase, token string) *http.Request {
	r := c.build(tb, "http://lambda.us-east-1.example.test")
	sdkSign(tb, r, c.body, signOpts{token: token})
	return r
}

func FuzzParseAuthorization(f *testing.F) {
	for _, c := range sdkCases {
		f.Add(signedRequest(f, c, c.token).Header.Get("Authorization"))
	}
	for _, s := range []string{
		"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
		"AWS4-HMAC-SHA256 Credential= AKID/20181128/eu-central-1/cloud9/aws4_request, SignedHeaders=host, Signature=x",
		"AWS4-HMAC-SHA256 Credential=a,SignedHeaders=b,Signature=c",
		"AWS AKIAI2HBJEUM7LRSTWOQ:qaNdqGsI6bq4Hi+9Gzovwyjbh0E=",
		"AWS4-HMAC-SHA256", "", " \t", "Bearer x", "AWS4-HMAC-SHA256 ===,,, =",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		a, e := parseAuthorization(h, true)
		if e != nil {
			if e.Code != CodeIncompleteSignature || e.Status != 400 || e.Message == "" {
				t.Fatalf("error %+v", e)
			}
			return
		}
		// A parsed header re-serialises to one that parses identically.
		again := algorithm + " Credential=" + a.credential + ", SignedHeaders=" + a.signedHeaders + ", Signature=" + a.signature
		b, e := parseAuthorization(again, true)
		if e != nil || a != b {
			t.Fatalf("round trip of %q: %+v %v, want %+v", h, b, e, a)
		}
		if _, ok := splitCredential(a.credential); ok && strings.Count(a.credential, "/") != 4 {
			t.Fatalf("credential %q split", a.credential)
		}
	})
}

func FuzzVerify(f *testing.F) {
	for _, c := range sdkCases[:6] {
		r := signedRequest(f, c, c.token)
		f.Add(r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("Authorization"), r.Header.Get("X-Amz-Date"), c.token, c.body)
	}
	f.Add("GET", "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Flambda%2Faws4_request&X-Amz-Date=20260101T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
		"h", "", "", "", []byte(nil))
	f.Add("", "*", "", "AWS4-HMAC-SHA256 Credential=////, SignedHeaders=;;, Signature=", "00000000T000000Z", "", []byte("x"))
	f.Add("GET", "//../%zz?a=%&;", "", "", "", "", []byte(nil))
	now := signTime
	v := testVerifier(&now)
	f.Fuzz(func(t *testing.T, method, target, host, authz, date, token string, body []byte) {
		r := &http.Request{Method: method, RequestURI: target, Host: host, Header: http.Header{}, ContentLength: int64(len(body))}
		if u, err := url.ParseRequestURI(target); err == nil {
			r.URL = u
		} else if len(target)%2 == 0 {
			r.URL = &url.URL{Path: target}
		}
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if date != "" {
			r.Header["X-Amz-Date"] = []string{date}
		}
		if token != "" {
			r.Header["X-Amz-Security-Token"] = []string{token}
		}
		id, err := v.Verify(r, body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" || e.Message == "" || (e.Status != 400 && e.Status != 403) {
				t.Fatalf("error %#v", err)
			}
			return
		}
		if id.AccessKeyID != testAKID || id.Service != "lambda" {
			t.Fatalf("identity %+v", id)
		}
		if id2, err := v.Verify(r, body); err != nil || *id2 != *id {
			t.Fatalf("second verification: %+v %v", id2, err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	c := sdkCases[8] // invoke with a JSON body and several signed headers
	now := signTime
	v := testVerifier(&now)
	r := c.build(b, "http://lambda.us-east-1.example.test")
	sdkSign(b, r, c.body, signOpts{})
	r.RequestURI = r.URL.RequestURI()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, c.body); err != nil {
			b.Fatal(err)
		}
	}
}
