package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

// bodyRoutes are the control-plane operations that read a JSON body, on
// a function "fz" with version 1 and alias "live" (made by the fuzz target).
var bodyRoutes = []struct{ method, path, seed string }{
	{"POST", "/2015-03-31/functions", `{"FunctionName":"fz2","Role":"arn:aws:iam::000000000000:role/r","Runtime":"provided.al2023","Handler":"h","Code":{"ZipFile":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}}`},
	{"PUT", "/2015-03-31/functions/fz/configuration", `{"Description":"d","MemorySize":256,"Timeout":5,"Environment":{"Variables":{"A":"b"}}}`},
	{"PUT", "/2015-03-31/functions/fz/code", `{"ZipFile":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==","Publish":true}`},
	{"POST", "/2015-03-31/functions/fz/versions", `{"Description":"v","RevisionId":"x"}`},
	{"POST", "/2015-03-31/functions/fz/aliases", `{"Name":"a2","FunctionVersion":"1","RoutingConfig":{"AdditionalVersionWeights":{"1":0.5}}}`},
	{"PUT", "/2015-03-31/functions/fz/aliases/live", `{"FunctionVersion":"$LATEST","Description":"d"}`},
	{"POST", "/2018-10-31/layers/lz/versions", `{"Content":{"ZipFile":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},"CompatibleRuntimes":["python3.11"]}`},
	{"PUT", "/2017-10-31/functions/fz/concurrency", `{"ReservedConcurrentExecutions":5}`},
	{"PUT", "/2019-09-30/functions/fz/provisioned-concurrency?Qualifier=live", `{"ProvisionedConcurrentExecutions":1}`},
	{"PUT", "/2019-09-25/functions/fz/event-invoke-config", `{"MaximumRetryAttempts":1,"MaximumEventAgeInSeconds":60,"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:lambda:us-east-1:000000000000:function:fz"}}}`},
	{"POST", "/2019-09-25/functions/fz/event-invoke-config", `{"MaximumRetryAttempts":2}`},
	{"POST", "/2017-03-31/tags/" + url.PathEscape(fnArn(devAcct, "fz")), `{"Tags":{"k":"v"}}`},
	{"POST", "/2015-03-31/functions/fz/policy", `{"StatementId":"s","Action":"lambda:InvokeFunction","Principal":"*"}`},
	{"POST", "/2021-10-31/functions/fz/url?Qualifier=live", `{"AuthType":"NONE","Cors":{"AllowOrigins":["*"],"MaxAge":60}}`},
	{"PUT", "/2021-10-31/functions/fz/url?Qualifier=live", `{"AuthType":"AWS_IAM","InvokeMode":"RESPONSE_STREAM"}`},
}

// FuzzControlPlaneBodies sends arbitrary bodies, signed as a client would,
// to every operation that reads one: the answer is a success or an
// AWS-shaped client error (x-amzn-ErrorType, a JSON body with a message),
// never a 5xx. (Invoke's bodies and headers have FuzzInvokeHeaders; this
// server runs no environments.)
func FuzzControlPlaneBodies(f *testing.F) {
	s := fuzzServer(f, true)
	for i, r := range bodyRoutes {
		f.Add(uint8(i), []byte(r.seed))
		f.Add(uint8(i), []byte(`{"MemorySize":"x","Timeout":-1,"Name":null,"Tags":[1]}`))
		f.Add(uint8(i), []byte(`[{"":{}}]`))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := bodyRoutes[int(route)%len(bodyRoutes)]
		req := signedRequest(t, r.method, s.URL+r.path, body, account.DevAccessKey, account.DevSecret, time.Now())
		fuzzAnswer(t, req, fmt.Sprintf("%s %s with %q", r.method, r.path, body))
	})
}

// fuzzServer is a control-plane server with a function "fz", its version
// 1 and, with alias, an alias "live" of it, for the fuzz targets.
func fuzzServer(f *testing.F, alias bool) *servertest.Server {
	s := start(f)
	c := s.Dev()
	mustCreate(f, c, "fz", nil)
	waitSettled(f, c, "fz")
	mustPublish(f, c, "fz")
	if alias {
		if _, err := c.CreateAlias(ctx(f), &lambda.CreateAliasInput{FunctionName: aws.String("fz"), Name: aws.String("live"),
			FunctionVersion: aws.String("1")}); err != nil {
			f.Fatal(err)
		}
	}
	return s
}

// fuzzAnswer sends req and fails unless the answer comes within 30 s and
// is a success or an AWS-shaped client error: x-amzn-ErrorType and a JSON
// body with a message. what names the request in a failure.
func fuzzAnswer(t *testing.T, req *http.Request, what string) {
	t.Helper()
	t0 := time.Now()
	resp := do(t, req)
	if d := time.Since(t0); d > 30*time.Second {
		t.Fatalf("%s: answered after %v", what, d)
	}
	if resp.Status >= 500 {
		t.Fatalf("%s: status %d, body %s", what, resp.Status, resp.Body)
	}
	if resp.Status < 400 {
		return
	}
	if resp.Header.Get("x-amzn-ErrorType") == "" {
		t.Fatalf("%s: status %d without x-amzn-ErrorType (body %s)", what, resp.Status, resp.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		t.Fatalf("%s: error body %q is not JSON: %v", what, resp.Body, err)
	}
	msg, _ := m["message"].(string)
	if msg == "" {
		msg, _ = m["Message"].(string)
	}
	if msg == "" {
		t.Fatalf("%s: error body without a message: %s", what, resp.Body)
	}
}

// queryRoutes are the operations that read the path and the query: %s
// is a name the fuzzer picks (escaped as a client would), the query is the
// fuzzer's too.
var queryRoutes = []struct{ method, path string }{
	{"GET", "/2015-03-31/functions"},
	{"GET", "/2015-03-31/functions/%s"},
	{"GET", "/2015-03-31/functions/%s/configuration"},
	{"GET", "/2015-03-31/functions/%s/versions"},
	{"GET", "/2015-03-31/functions/%s/aliases"},
	{"GET", "/2015-03-31/functions/fz/aliases/%s"},
	{"DELETE", "/2015-03-31/functions/fz/aliases/%s"},
	{"GET", "/2018-10-31/layers"},
	{"GET", "/2018-10-31/layers/%s/versions"},
	{"GET", "/2018-10-31/layers/lz/versions/%s"},
	{"DELETE", "/2018-10-31/layers/%s/versions/7"},
	{"GET", "/2019-09-30/functions/%s/concurrency"},
	{"GET", "/2019-09-30/functions/%s/provisioned-concurrency"},
	{"DELETE", "/2019-09-30/functions/%s/provisioned-concurrency"},
	{"GET", "/2019-09-25/functions/%s/event-invoke-config"},
	{"GET", "/2019-09-25/functions/%s/event-invoke-config/list"},
	{"GET", "/2017-03-31/tags/%s"},
	{"DELETE", "/2017-03-31/tags/%s"},
	{"GET", "/2015-03-31/functions/%s/policy"},
	{"DELETE", "/2015-03-31/functions/fz/policy/%s"},
	{"GET", "/2016-08-19/account-settings"},
	{"GET", "/2021-10-31/functions/%s/url"},
	{"GET", "/2021-10-31/functions/%s/urls"},
	{"DELETE", "/2021-10-31/functions/%s/url"},
}

// FuzzControlPlaneQueries sends arbitrary names in the path and arbitrary
// queries, signed, to the operations that read them: a success or an
// AWS-shaped client error, never a 5xx. Deletes act on throwaway names,
// never on the function the others read.
func FuzzControlPlaneQueries(f *testing.F) {
	s := fuzzServer(f, false)
	for i := range queryRoutes {
		f.Add(uint8(i), "fz", "Qualifier=1&MaxItems=10&Marker=x")
		f.Add(uint8(i), fnArn(devAcct, "fz")+":1", "FunctionVersion=ALL&CompatibleRuntime=python3.11")
		f.Add(uint8(i), "arn:aws:lambda:us-east-1:000000000000:layer:lz", "MaxItems=-1&Qualifier=%00")
		f.Add(uint8(i), "", "Marker=%ff%fe&MaxItems=99999999999999999999")
	}
	f.Fuzz(func(t *testing.T, route uint8, name, query string) {
		r := queryRoutes[int(route)%len(queryRoutes)]
		if r.method == "DELETE" && (name == "fz" || strings.Contains(name, ":function:fz")) {
			return
		}
		if _, err := url.ParseQuery(query); err != nil && strings.ContainsAny(query, " #") {
			return // not a query a client can send
		}
		p := r.path
		if strings.Contains(p, "%s") {
			p = fmt.Sprintf(p, url.PathEscape(name))
		}
		u := s.URL + p
		if query != "" {
			u += "?" + query
		}
		if _, err := url.Parse(u); err != nil {
			return
		}
		req := signedRequest(t, r.method, u, nil, account.DevAccessKey, account.DevSecret, time.Now())
		fuzzAnswer(t, req, r.method+" "+u)
	})
}
