package server_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/server"
)

// TestSigV4 sends raw requests signed (or not) with the SDK's own signer.
func TestSigV4(t *testing.T) {
	s := start(t)
	mustCreate(t, s.Dev(), "signed", nil)
	list := s.URL + "/2015-03-31/functions"
	now := time.Now()

	t.Run("Valid", func(t *testing.T) {
		r := do(t, signedRequest(t, "GET", list, nil, account.DevAccessKey, account.DevSecret, now))
		if r.Status != 200 || r.Header.Get("x-amzn-RequestId") == "" || !strings.Contains(string(r.Body), `"FunctionName":"signed"`) {
			t.Errorf("valid request: %d %s", r.Status, r.Body)
		}
		// A full ARN in the path is signed over its double-encoded form.
		arnURL := s.URL + "/2015-03-31/functions/" + url.PathEscape(fnArn(devAcct, "signed")) + "/configuration"
		r = do(t, signedRequest(t, "GET", arnURL, nil, account.DevAccessKey, account.DevSecret, now))
		if r.Status != 200 || !strings.Contains(string(r.Body), `"FunctionArn":"`+fnArn(devAcct, "signed")+`"`) {
			t.Errorf("ARN path: %d %s", r.Status, r.Body)
		}
		// A body is covered by the signature.
		body := []byte(`{"Description":"signed body"}`)
		r = do(t, signedRequest(t, "PUT", s.URL+"/2015-03-31/functions/signed/configuration", body, account.DevAccessKey, account.DevSecret, now))
		if r.Status != 200 || !strings.Contains(string(r.Body), "signed body") {
			t.Errorf("signed PUT: %d %s", r.Status, r.Body)
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		r := do(t, signedRequest(t, "GET", list, nil, account.DevAccessKey, "not-the-secret", now))
		wantRawError(t, r, 403, "InvalidSignatureException")
	})

	t.Run("TamperedBody", func(t *testing.T) {
		req := signedRequest(t, "PUT", s.URL+"/2015-03-31/functions/signed/configuration", []byte(`{"Description":"a"}`), account.DevAccessKey, account.DevSecret, now)
		req.Body = http.NoBody
		req.ContentLength = 0
		wantRawError(t, do(t, req), 403, "InvalidSignatureException")
		r := do(t, signedRequest(t, "GET", s.URL+"/2015-03-31/functions/signed/configuration", nil, account.DevAccessKey, account.DevSecret, now))
		if strings.Contains(string(r.Body), `"Description":"a"`) {
			t.Errorf("a tampered request was applied")
		}
	})

	t.Run("UnknownKey", func(t *testing.T) {
		r := do(t, signedRequest(t, "GET", list, nil, "AKIDUNKNOWN", "whatever", now))
		wantRawError(t, r, 403, "UnrecognizedClientException")
	})

	t.Run("Unsigned", func(t *testing.T) {
		r := do(t, signedRequest(t, "GET", list, nil, "", "", now))
		wantRawError(t, r, 403, "MissingAuthenticationTokenException")
	})

	t.Run("Expired", func(t *testing.T) {
		for _, at := range []time.Time{now.Add(-10 * time.Minute), now.Add(10 * time.Minute)} {
			r := do(t, signedRequest(t, "GET", list, nil, account.DevAccessKey, account.DevSecret, at))
			m := wantRawError(t, r, 403, "InvalidSignatureException")
			if msg, _ := m["message"].(string); !strings.Contains(msg, "Signature expired") && !strings.Contains(msg, "Signature not yet current") {
				t.Errorf("skewed %v: message %q", at.Sub(now).Round(time.Minute), msg)
			}
		}
	})

	t.Run("OtherService", func(t *testing.T) {
		req := signedRequest(t, "GET", list, nil, "", "", now)
		signFor(t, req, "s3")
		r := do(t, req)
		if r.Status != 403 || r.Header.Get("x-amzn-ErrorType") == "" {
			t.Errorf("signed for s3: %d %s", r.Status, r.Body)
		}
	})

	// The body's message key follows AWS per code (LAMBDA-WIRE.md §2).
	t.Run("ErrorBodies", func(t *testing.T) {
		r := do(t, signedRequest(t, "GET", s.URL+"/2015-03-31/functions/none", nil, account.DevAccessKey, account.DevSecret, now))
		m := wantRawError(t, r, 404, "ResourceNotFoundException")
		if m["Type"] != "User" || m["Message"] != "Function not found: "+fnArn(devAcct, "none") {
			t.Errorf("ResourceNotFound body: %s", r.Body)
		}
		r = do(t, signedRequest(t, "GET", s.URL+"/2015-03-31/functions/signed:1?Qualifier=2", nil, account.DevAccessKey, account.DevSecret, now))
		m = wantRawError(t, r, 400, "InvalidParameterValueException")
		if m["message"] != "The derived qualifier from the function name does not match the specified qualifier." {
			t.Errorf("InvalidParameterValue body: %s", r.Body)
		}
		for _, body := range []string{`{"FunctionName":`, `{"FunctionName":"x","MemorySize":"big"}`} {
			r = do(t, signedRequest(t, "POST", list, []byte(body), account.DevAccessKey, account.DevSecret, now))
			wantRawError(t, r, 400, "InvalidRequestContentException")
		}
	})

	t.Run("RequestIdEverywhere", func(t *testing.T) {
		for _, req := range []*http.Request{
			signedRequest(t, "GET", list, nil, account.DevAccessKey, account.DevSecret, now),
			signedRequest(t, "GET", s.URL+"/2015-03-31/functions/none", nil, account.DevAccessKey, account.DevSecret, now),
			signedRequest(t, "GET", s.URL+"/2099-01-01/nothing", nil, account.DevAccessKey, account.DevSecret, now),
			signedRequest(t, "GET", list, nil, "", "", now),
			signedRequest(t, "GET", s.URL+"/nubo/code/"+strings.Repeat("0", 64)+"?account=0&expires=1&signature=00", nil, "", "", now),
		} {
			r := do(t, req)
			if id := r.Header.Get("x-amzn-RequestId"); len(id) < 16 {
				t.Errorf("%s %s: %d without x-amzn-RequestId", req.Method, req.URL.Path, r.Status)
			}
		}
		r := do(t, signedRequest(t, "GET", s.URL+"/2099-01-01/nothing", nil, account.DevAccessKey, account.DevSecret, now))
		if r.Status != 404 || r.Header.Get("x-amzn-ErrorType") == "" {
			t.Errorf("unknown operation: %d %s", r.Status, r.Body)
		}
	})
}

func signFor(t *testing.T, req *http.Request, service string) {
	t.Helper()
	signed := signedRequest(t, req.Method, req.URL.String(), nil, account.DevAccessKey, account.DevSecret, time.Now())
	// Re-sign the same request for another service name.
	auth := signed.Header.Get("Authorization")
	auth = strings.Replace(auth, "/lambda/aws4_request", "/"+service+"/aws4_request", 1)
	req.Header.Set("Authorization", auth)
	req.Header.Set("X-Amz-Date", signed.Header.Get("X-Amz-Date"))
}

// TestAccounts proves the isolation between accounts: nothing of A is
// visible to B, and B cannot tell A's functions from names that never existed.
func TestAccounts(t *testing.T) {
	s := start(t)
	a, b := s.A(), s.B()
	const acctA = "111111111111"
	zip := codeZip(t, "team a")
	mustCreate(t, a, "f", zip, func(in *lambda.CreateFunctionInput) { in.Tags = map[string]string{"owner": "a"} })
	mustPublish(t, a, "f")
	before, err := a.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("f")})
	if err != nil {
		t.Fatal(err)
	}
	aArn := fnArn(acctA, "f")
	neverArn := fnArn(acctA, "never-existed")

	// shape removes the function name, leaving what B learns from a message.
	shape := func(msg, name string) string { return strings.Replace(msg, ":function:"+name, ":function:<name>", 1) }
	ops := map[string]func(fn string) error{
		"GetFunction": func(fn string) error {
			_, err := b.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(fn)})
			return err
		},
		"GetFunctionConfiguration": func(fn string) error {
			_, err := b.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(fn)})
			return err
		},
		"UpdateFunctionConfiguration": func(fn string) error {
			_, err := b.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(fn), Description: aws.String("pwned")})
			return err
		},
		"UpdateFunctionCode": func(fn string) error {
			_, err := b.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String(fn), ZipFile: codeZip(t, "evil")})
			return err
		},
		"DeleteFunction": func(fn string) error {
			_, err := b.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String(fn)})
			return err
		},
		"PublishVersion": func(fn string) error {
			_, err := b.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String(fn)})
			return err
		},
		"CreateAlias": func(fn string) error {
			_, err := b.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String(fn), Name: aws.String("evil"), FunctionVersion: aws.String("1")})
			return err
		},
		"ListVersionsByFunction": func(fn string) error {
			_, err := b.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String(fn)})
			return err
		},
		"PutFunctionConcurrency": func(fn string) error {
			_, err := b.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String(fn), ReservedConcurrentExecutions: aws.Int32(1)})
			return err
		},
		"AddPermission": func(fn string) error {
			_, err := b.AddPermission(ctx(t), &lambda.AddPermissionInput{FunctionName: aws.String(fn), StatementId: aws.String("x"), Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")})
			return err
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			// By A's full ARN, by A's partial ARN, and by bare name (which
			// means B's own, missing, function).
			errArn := op(aArn)
			wantAPIError(t, errArn, 404, "ResourceNotFoundException", "Function not found: "+aArn)
			errPartial := op(acctA + ":function:f")
			wantAPIError(t, errPartial, 404, "ResourceNotFoundException", "")
			errName := op("f")
			wantAPIError(t, errName, 404, "ResourceNotFoundException", "Function not found: "+fnArn("222222222222", "f"))
			errNever := op(neverArn)
			wantAPIError(t, errNever, 404, "ResourceNotFoundException", "")
			if got, want := shape(apiMessage(errArn), "f"), shape(apiMessage(errNever), "never-existed"); got != want {
				t.Errorf("A's existing function answers %q, a missing one %q", got, want)
			}
			if apiMessage(errPartial) != apiMessage(errArn) {
				t.Errorf("partial ARN %q, full ARN %q", apiMessage(errPartial), apiMessage(errArn))
			}
		})
	}

	t.Run("Tags", func(t *testing.T) {
		_, err := b.ListTags(ctx(t), &lambda.ListTagsInput{Resource: aws.String(aArn)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		errNever := func() error {
			_, err := b.ListTags(ctx(t), &lambda.ListTagsInput{Resource: aws.String(neverArn)})
			return err
		}()
		if shape(apiMessage(err), "f") != shape(apiMessage(errNever), "never-existed") {
			t.Errorf("ListTags: %q vs %q", apiMessage(err), apiMessage(errNever))
		}
		_, err = b.TagResource(ctx(t), &lambda.TagResourceInput{Resource: aws.String(aArn), Tags: map[string]string{"owner": "b"}})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = b.UntagResource(ctx(t), &lambda.UntagResourceInput{Resource: aws.String(aArn), TagKeys: []string{"owner"}})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("Listings", func(t *testing.T) {
		for who, c := range map[string]*lambda.Client{"B": b, "dev": s.Dev()} {
			if fs := listAll(t, c); len(fs) != 0 {
				t.Errorf("%s lists %v", who, functionNames(fs))
			}
		}
		if fs := listAll(t, a); len(fs) != 1 || aws.ToString(fs[0].FunctionArn) != aArn {
			t.Errorf("A lists %v", functionNames(fs))
		}
		out, err := b.ListLayers(ctx(t), &lambda.ListLayersInput{})
		if err != nil || len(out.Layers) != 0 {
			t.Errorf("B's layers: %v %v", out, err)
		}
	})

	t.Run("AUnchanged", func(t *testing.T) {
		g, err := a.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("f")})
		if err != nil {
			t.Fatal(err)
		}
		cf := g.Configuration
		if aws.ToString(cf.RevisionId) != aws.ToString(before.RevisionId) || aws.ToString(cf.CodeSha256) != sha64(zip) ||
			aws.ToString(cf.Description) != "" || g.Tags["owner"] != "a" || g.Concurrency != nil {
			t.Errorf("B changed A's function: %+v tags %v", cf, g.Tags)
		}
		vs, err := a.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("f")})
		if err != nil || !slices.Equal(versionList(vs.Versions), []string{"$LATEST", "1"}) {
			t.Errorf("A's versions: %v %v", versionList(vs.Versions), err)
		}
		al, err := a.ListAliases(ctx(t), &lambda.ListAliasesInput{FunctionName: aws.String("f")})
		if err != nil || len(al.Aliases) != 0 {
			t.Errorf("A's aliases: %v %v", al, err)
		}
		if _, err := a.GetPolicy(ctx(t), &lambda.GetPolicyInput{FunctionName: aws.String("f")}); !isNotFound(err) {
			t.Errorf("A's policy: %v", err)
		}
		// A's code URL names A's account; it is not B's to re-sign.
		loc := aws.ToString(g.Code.Location)
		u, _ := url.Parse(loc)
		q := u.Query()
		q.Set("account", "222222222222")
		u.RawQuery = q.Encode()
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("code URL with another account: %d", resp.StatusCode)
		}
	})

	t.Run("Layers", func(t *testing.T) {
		l, err := a.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("shared"), Content: &types.LayerVersionContentInput{ZipFile: codeZip(t, "a's layer")}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.GetLayerVersionByArn(ctx(t), &lambda.GetLayerVersionByArnInput{Arn: l.LayerVersionArn})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = b.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: l.LayerArn, VersionNumber: aws.Int64(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = b.CreateFunction(ctx(t), createInput(t, "uses-a-layer", nil, func(in *lambda.CreateFunctionInput) {
			in.Role = aws.String("arn:aws:iam::222222222222:role/r")
			in.Layers = []string{aws.ToString(l.LayerVersionArn)}
		}))
		wantAPIError(t, err, 400, "InvalidParameterValueException", aws.ToString(l.LayerVersionArn))
		if _, err := b.DeleteLayerVersion(ctx(t), &lambda.DeleteLayerVersionInput{LayerName: l.LayerArn, VersionNumber: aws.Int64(1)}); err == nil {
			if _, err := a.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1)}); err != nil {
				t.Errorf("B deleted A's layer version: %v", err)
			}
		}
	})

	t.Run("B's own function of the same name", func(t *testing.T) {
		mustCreate(t, b, "f", codeZip(t, "team b"))
		g, err := b.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("f")})
		if err != nil || aws.ToString(g.Configuration.FunctionArn) != fnArn("222222222222", "f") || aws.ToString(g.Configuration.CodeSha256) == sha64(zip) {
			t.Errorf("B's f: %v", err)
		}
		_, err = b.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(aArn)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+aArn)
	})
}

// TestDevAccountLoopbackOnly checks which accounts the flags produce.
func TestDevAccountLoopbackOnly(t *testing.T) {
	dir := t.TempDir()
	accts := filepath.Join(dir, "accounts.json")
	if err := os.WriteFile(accts, []byte(`[{"accountId":"111111111111","name":"a","accessKeys":[{"accessKeyId":"AKIDX","secretAccessKey":"s"}]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, listen := range []string{"0.0.0.0:9000", "[::]:9000", "192.0.2.1:9000"} {
		if _, _, err := server.Accounts(server.Config{Listen: listen}); err == nil {
			t.Errorf("%s without --accounts: accepted", listen)
		} else if !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: unclear error %v", listen, err)
		}
		reg, dev, err := server.Accounts(server.Config{Listen: listen, AccountsFile: accts})
		if err != nil {
			t.Fatalf("%s with --accounts: %v", listen, err)
		}
		if dev {
			t.Errorf("%s: development account enabled", listen)
		}
		if _, ok := reg.Secret(account.DevAccessKey); ok {
			t.Errorf("%s: the dev key %q authenticates", listen, account.DevAccessKey)
		}
		if _, ok := reg.ByID(account.DevAccountID); ok {
			t.Errorf("%s: account %s exists", listen, account.DevAccountID)
		}
		if sec, ok := reg.Secret("AKIDX"); !ok || sec != "s" {
			t.Errorf("%s: the file's key is missing", listen)
		}
	}
	for _, listen := range []string{"127.0.0.1:9000", "[::1]:9000", "localhost:9000"} {
		reg, dev, err := server.Accounts(server.Config{Listen: listen})
		if err != nil || !dev {
			t.Errorf("%s: dev %v err %v", listen, dev, err)
			continue
		}
		if sec, ok := reg.Secret(account.DevAccessKey); !ok || sec != account.DevSecret {
			t.Errorf("%s: dev key missing", listen)
		}
		if _, _, err := server.Accounts(server.Config{Listen: listen, NoDevAccount: true}); err == nil {
			t.Errorf("%s --no-dev-account without accounts: accepted with no accounts at all", listen)
		}
		reg, dev, err = server.Accounts(server.Config{Listen: listen, AccountsFile: accts, NoDevAccount: true})
		if err != nil || dev {
			t.Errorf("%s --no-dev-account --accounts: dev %v err %v", listen, dev, err)
		} else if _, ok := reg.Secret(account.DevAccessKey); ok {
			t.Errorf("%s --no-dev-account: dev key works", listen)
		}
	}
	// A real server with --no-dev-account refuses the dev key.
	s := start(t, func(c *server.Config) { c.NoDevAccount = true })
	r := do(t, signedRequest(t, "GET", s.URL+"/2015-03-31/functions", nil, account.DevAccessKey, account.DevSecret, time.Now()))
	wantRawError(t, r, 403, "UnrecognizedClientException")
	if _, err := s.A().ListFunctions(ctx(t), &lambda.ListFunctionsInput{}); err != nil {
		t.Errorf("account A on a server without the dev account: %v", err)
	}
}
