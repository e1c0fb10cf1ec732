package invoke_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

// urlCall sends an HTTP request to a function URL, signed for the
// development account when sign is set, and reads the answer.
func urlCall(t *testing.T, method, u string, body []byte, hdr map[string]string, sign bool) *rawResponse {
	t.Helper()
	var creds *aws.Credentials
	if sign {
		creds = &aws.Credentials{AccessKeyID: account.DevAccessKey, SecretAccessKey: account.DevSecret}
	}
	return urlCallAs(t, method, u, body, hdr, creds)
}

// urlCallAs is urlCall signed with creds (none when nil).
func urlCallAs(t *testing.T, method, u string, body []byte, hdr map[string]string, creds *aws.Credentials) *rawResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if creds != nil {
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(ctx(t), *creds, req, hex.EncodeToString(sum[:]), "lambda", region, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// urlEvent is the part of a function URL event the tests look at.
type urlEvent struct {
	Version         string            `json:"version"`
	RawPath         string            `json:"rawPath"`
	RawQueryString  string            `json:"rawQueryString"`
	Cookies         []string          `json:"cookies"`
	Headers         map[string]string `json:"headers"`
	Query           map[string]string `json:"queryStringParameters"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
	RequestContext  struct {
		AccountID  string `json:"accountId"`
		APIID      string `json:"apiId"`
		RequestID  string `json:"requestId"`
		Authorizer *struct {
			IAM struct {
				AccountID string `json:"accountId"`
			} `json:"iam"`
		} `json:"authorizer"`
		HTTP struct {
			Method string `json:"method"`
			Path   string `json:"path"`
		} `json:"http"`
	} `json:"requestContext"`
}

// TestFunctionURLs: the function URL configuration operations through the
// SDK, and the URLs themselves: AuthType NONE answers only once a policy
// lets anyone invoke it; the function gets a payload format 2.0 event and
// its answer becomes the HTTP response (structured or bare, text or
// base64, 502 on a function error); AWS_IAM wants a signature of the
// function's account; CORS preflights are answered from the
// configuration; a URL of AWS's Host form reaches the same function; a
// deleted URL is gone.
func TestFunctionURLs(t *testing.T) {
	h := newHarness(t)
	h.create(t, "web", nil)
	c := h.c

	_, err := c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: "OPEN"})
	if code, status := apiError(t, err); code != "ValidationException" || status != 400 {
		t.Errorf("AuthType OPEN: %s %d; want ValidationException 400", code, status)
	}
	created, err := c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{
		FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeNone,
		Cors: &types.Cors{AllowOrigins: []string{"https://app.example"}, AllowMethods: []string{"GET", "POST"},
			AllowHeaders: []string{"content-type"}, MaxAge: aws.Int32(600)},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := aws.ToString(created.FunctionUrl)
	if !strings.HasPrefix(u, h.s.URL+"/lambda-url/") || !strings.HasSuffix(u, "/") ||
		aws.ToString(created.FunctionArn) != "arn:aws:lambda:us-east-1:000000000000:function:web" ||
		created.InvokeMode != types.InvokeModeBuffered || aws.ToString(created.CreationTime) == "" {
		t.Fatalf("CreateFunctionUrlConfig: %+v", created)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(u, h.s.URL+"/lambda-url/"), "/")
	_, err = c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeNone})
	if code, status := apiError(t, err); code != "ResourceConflictException" || status != 409 {
		t.Errorf("second CreateFunctionUrlConfig: %s %d; want ResourceConflictException 409", code, status)
	}
	got, err := c.GetFunctionUrlConfig(ctx(t), &lambda.GetFunctionUrlConfigInput{FunctionName: aws.String("web")})
	if err != nil || aws.ToString(got.FunctionUrl) != u || aws.ToString(got.LastModifiedTime) == "" || got.Cors == nil ||
		aws.ToInt32(got.Cors.MaxAge) != 600 {
		t.Fatalf("GetFunctionUrlConfig: %+v, %v", got, err)
	}

	// Another account sees no URL of this function, even by its ARN.
	_, err = h.s.A().GetFunctionUrlConfig(ctx(t), &lambda.GetFunctionUrlConfigInput{FunctionName: created.FunctionArn})
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
		t.Errorf("another account's GetFunctionUrlConfig: %s %d; want ResourceNotFoundException 404", code, status)
	}

	// No policy yet: the URL answers 403.
	if r := urlCall(t, "GET", u+"event", nil, nil, false); r.Status != 403 || string(r.Body) != `{"Message":"Forbidden"}` {
		t.Errorf("before add-permission: %d %s; want 403 Forbidden", r.Status, r.Body)
	}
	if _, err := c.AddPermission(ctx(t), &lambda.AddPermissionInput{FunctionName: aws.String("web"),
		StatementId: aws.String("url"), Action: aws.String("lambda:InvokeFunctionUrl"), Principal: aws.String("*"),
		FunctionUrlAuthType: types.FunctionUrlAuthTypeNone}); err != nil {
		t.Fatal(err)
	}

	r := urlCall(t, "POST", u+"event/x?a=1&a=2&b=3", []byte(`{"hi":"there"}`),
		map[string]string{"Content-Type": "application/json", "Cookie": "c1=v1; c2=v2", "X-Custom": "yes"}, false)
	if r.Status != 201 || r.Header.Get("X-Fn") != "yes" || r.Header.Get("Set-Cookie") != "session=abc; Path=/" ||
		r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("structured answer: %d %v %s", r.Status, r.Header, r.Body)
	}
	var ev urlEvent
	if err := json.Unmarshal(r.Body, &ev); err != nil {
		t.Fatalf("event %s: %v", r.Body, err)
	}
	if ev.Version != "2.0" || ev.RawPath != "/event/x" || ev.RawQueryString != "a=1&a=2&b=3" ||
		ev.Query["a"] != "1,2" || ev.Query["b"] != "3" || strings.Join(ev.Cookies, "|") != "c1=v1|c2=v2" ||
		ev.Headers["x-custom"] != "yes" || ev.Headers["cookie"] != "" || ev.Body != `{"hi":"there"}` || ev.IsBase64Encoded ||
		ev.RequestContext.AccountID != "anonymous" || ev.RequestContext.APIID != id || ev.RequestContext.HTTP.Method != "POST" ||
		ev.RequestContext.HTTP.Path != "/event/x" || ev.RequestContext.RequestID == "" || ev.RequestContext.Authorizer != nil {
		t.Errorf("event: %s", r.Body)
	}
	r = urlCall(t, "PUT", u+"event", []byte{0, 1, 2, 255}, map[string]string{"Content-Type": "application/octet-stream"}, false)
	if err := json.Unmarshal(r.Body, &ev); err != nil || !ev.IsBase64Encoded || ev.Body != base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255}) {
		t.Errorf("binary request body: event %s", r.Body)
	}
	if r := urlCall(t, "GET", u+"plain", nil, nil, false); r.Status != 200 || string(r.Body) != `{"plain":true}` ||
		r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("bare answer: %d %v %s", r.Status, r.Header, r.Body)
	}
	if r := urlCall(t, "GET", u+"binary", nil, nil, false); r.Status != 200 || !bytes.Equal(r.Body, []byte{0, 1, 2, 255}) {
		t.Errorf("base64 answer: %d %q", r.Status, r.Body)
	}
	if r := urlCall(t, "GET", u+"fail", nil, nil, false); r.Status != 502 || string(r.Body) != `{"Message":"Internal Server Error"}` {
		t.Errorf("function error: %d %s; want 502", r.Status, r.Body)
	}
	if r := urlCall(t, "GET", h.s.URL+"/lambda-url/"+strings.Repeat("z", 32)+"/plain", nil, nil, false); r.Status != 404 {
		t.Errorf("unknown URL: %d %s; want 404", r.Status, r.Body)
	}
	// AWS's form, by Host.
	r = urlCall(t, "GET", h.s.URL+"/plain", nil, map[string]string{"Host": id + ".lambda-url.us-east-1.localhost"}, false)
	if r.Status != 200 || string(r.Body) != `{"plain":true}` {
		t.Errorf("by Host: %d %s", r.Status, r.Body)
	}

	// CORS.
	r = urlCall(t, "OPTIONS", u+"event", nil, map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}, false)
	if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		r.Header.Get("Access-Control-Allow-Methods") != "GET,POST" || r.Header.Get("Access-Control-Max-Age") != "600" {
		t.Errorf("preflight: %d %v", r.Status, r.Header)
	}
	r = urlCall(t, "GET", u+"plain", nil, map[string]string{"Origin": "https://app.example"}, false)
	if r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("CORS on an actual request: %v", r.Header)
	}
	if r := urlCall(t, "GET", u+"plain", nil, map[string]string{"Origin": "https://evil.example"}, false); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS for another origin: %v", r.Header)
	}

	// AWS_IAM: a signature of the function's account.
	upd, err := c.UpdateFunctionUrlConfig(ctx(t), &lambda.UpdateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeAwsIam})
	if err != nil || upd.AuthType != types.FunctionUrlAuthTypeAwsIam || aws.ToString(upd.FunctionUrl) != u || upd.Cors == nil {
		t.Fatalf("UpdateFunctionUrlConfig: %+v %v", upd, err)
	}
	if r := urlCall(t, "GET", u+"plain", nil, nil, false); r.Status != 403 {
		t.Errorf("AWS_IAM unsigned: %d; want 403", r.Status)
	}
	// Another account's valid signature, or a wrong secret, is no way in.
	other := servertest.AccountA.AccessKeys[0]
	if r := urlCallAs(t, "GET", u+"plain", nil, nil, &aws.Credentials{AccessKeyID: other.AccessKeyID, SecretAccessKey: other.SecretAccessKey}); r.Status != 403 {
		t.Errorf("AWS_IAM signed by another account: %d %s; want 403", r.Status, r.Body)
	}
	if r := urlCallAs(t, "GET", u+"plain", nil, nil, &aws.Credentials{AccessKeyID: account.DevAccessKey, SecretAccessKey: "wrong"}); r.Status != 403 {
		t.Errorf("AWS_IAM with a wrong secret: %d; want 403", r.Status)
	}
	r = urlCall(t, "GET", u+"event", nil, nil, true)
	if err := json.Unmarshal(r.Body, &ev); err != nil || r.Status != 201 || ev.RequestContext.AccountID != devAcct ||
		ev.RequestContext.Authorizer == nil || ev.RequestContext.Authorizer.IAM.AccountID != devAcct {
		t.Errorf("AWS_IAM signed: %d %s", r.Status, r.Body)
	}

	// On an alias, and listed.
	h.publish(t, "web")
	if _, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("web"), Name: aws.String("live"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), Qualifier: aws.String("gone"), AuthType: types.FunctionUrlAuthTypeAwsIam})
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
		t.Errorf("URL on a missing alias: %s %d; want ResourceNotFoundException 404", code, status)
	}
	live, err := c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), Qualifier: aws.String("live"), AuthType: types.FunctionUrlAuthTypeAwsIam})
	if err != nil || aws.ToString(live.FunctionArn) != "arn:aws:lambda:us-east-1:000000000000:function:web:live" {
		t.Fatalf("URL on an alias: %+v %v", live, err)
	}
	if r := urlCall(t, "GET", aws.ToString(live.FunctionUrl)+"plain", nil, nil, true); r.Status != 200 {
		t.Errorf("alias URL: %d %s", r.Status, r.Body)
	}
	list, err := c.ListFunctionUrlConfigs(ctx(t), &lambda.ListFunctionUrlConfigsInput{FunctionName: aws.String("web")})
	if err != nil || len(list.FunctionUrlConfigs) != 2 || aws.ToString(list.FunctionUrlConfigs[0].FunctionUrl) != u {
		t.Errorf("ListFunctionUrlConfigs: %+v %v", list, err)
	}

	// Deleted: gone, config and URL.
	if _, err := c.DeleteFunctionUrlConfig(ctx(t), &lambda.DeleteFunctionUrlConfigInput{FunctionName: aws.String("web")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetFunctionUrlConfig(ctx(t), &lambda.GetFunctionUrlConfigInput{FunctionName: aws.String("web")})
	if code, status := apiError(t, err); code != "ResourceNotFoundException" || status != 404 {
		t.Errorf("GetFunctionUrlConfig after delete: %s %d", code, status)
	}
	if r := urlCall(t, "GET", u+"plain", nil, nil, true); r.Status != 404 {
		t.Errorf("deleted URL: %d; want 404", r.Status)
	}
	// Deleting the alias takes its URL along.
	if _, err := c.DeleteAlias(ctx(t), &lambda.DeleteAliasInput{FunctionName: aws.String("web"), Name: aws.String("live")}); err != nil {
		t.Fatal(err)
	}
	if r := urlCall(t, "GET", aws.ToString(live.FunctionUrl)+"plain", nil, nil, true); r.Status != 404 {
		t.Errorf("URL of a deleted alias: %d; want 404", r.Status)
	}
}

// TestFunctionURLResponseStream: a RESPONSE_STREAM URL of a Node.js
// function that answers through awslambda.HttpResponseStream.from gets
// the status and headers of its prelude and the body after it.
func TestFunctionURLResponseStream(t *testing.T) {
	rt := managedRuntime(t, runtimes.FamilyNodejs, "node")
	h := newHarness(t)
	c := managedCase{runtime: rt, zip: dirZip(t, "testdata/node")}
	h.create(t, "node-web", c.zip, managedFn(c, "index.http"))
	out, err := h.c.CreateFunctionUrlConfig(ctx(t), &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("node-web"),
		AuthType: types.FunctionUrlAuthTypeAwsIam, InvokeMode: types.InvokeModeResponseStream})
	if err != nil {
		t.Fatal(err)
	}
	r := urlCall(t, "GET", aws.ToString(out.FunctionUrl), nil, nil, true)
	if r.Status != 201 || r.Header.Get("X-Nubo") != "yes" || string(r.Body) != "created" {
		t.Errorf("streamed URL answer: %d %v %q; want 201, x-nubo: yes, created", r.Status, r.Header, r.Body)
	}
}
