package server_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// TestFunctionNameForms addresses one function by every form AWS accepts
// (LAMBDA-WIRE.md §2): name, partial ARN and full ARN, each with or without
// a qualifier, in the name or in ?Qualifier=.
func TestFunctionNameForms(t *testing.T) {
	s := start(t)
	c := s.Dev()
	zip1 := codeZip(t, "forms v1")
	mustCreate(t, c, "nf", zip1)
	mustPublish(t, c, "nf")
	zip2 := codeZip(t, "forms v2")
	if _, err := c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("nf"), ZipFile: zip2}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, c, "nf")
	mustPublish(t, c, "nf")
	if _, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("nf"), Name: aws.String("live"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	const partial = devAcct + ":function:nf"
	full := fnArn(devAcct, "nf")

	t.Run("Resolve", func(t *testing.T) {
		cases := []struct {
			fn, qualifier string
			version, sha  string
		}{
			{"nf", "", "$LATEST", sha64(zip2)},
			{partial, "", "$LATEST", sha64(zip2)},
			{full, "", "$LATEST", sha64(zip2)},
			{"nf:$LATEST", "", "$LATEST", sha64(zip2)},
			{"nf:1", "", "1", sha64(zip1)},
			{partial + ":1", "", "1", sha64(zip1)},
			{full + ":1", "", "1", sha64(zip1)},
			{"nf", "1", "1", sha64(zip1)},
			{partial, "2", "2", sha64(zip2)},
			{full, "1", "1", sha64(zip1)},
			{"nf:1", "1", "1", sha64(zip1)},
			{full + ":2", "2", "2", sha64(zip2)},
			{"nf:live", "", "1", sha64(zip1)},
			{full + ":live", "", "1", sha64(zip1)},
			{partial, "live", "1", sha64(zip1)},
		}
		for _, tc := range cases {
			in := &lambda.GetFunctionInput{FunctionName: aws.String(tc.fn)}
			cin := &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(tc.fn)}
			if tc.qualifier != "" {
				in.Qualifier, cin.Qualifier = aws.String(tc.qualifier), aws.String(tc.qualifier)
			}
			g, err := c.GetFunction(ctx(t), in)
			if err != nil {
				t.Errorf("GetFunction %s ?Qualifier=%s: %v", tc.fn, tc.qualifier, err)
				continue
			}
			if aws.ToString(g.Configuration.Version) != tc.version || aws.ToString(g.Configuration.CodeSha256) != tc.sha {
				t.Errorf("GetFunction %s ?Qualifier=%s: version %s sha %s, want %s %s", tc.fn, tc.qualifier,
					aws.ToString(g.Configuration.Version), aws.ToString(g.Configuration.CodeSha256), tc.version, tc.sha)
			}
			gc, err := c.GetFunctionConfiguration(ctx(t), cin)
			if err != nil || aws.ToString(gc.Version) != tc.version {
				t.Errorf("GetFunctionConfiguration %s ?Qualifier=%s: %v", tc.fn, tc.qualifier, err)
			}
		}
	})

	t.Run("ConflictingQualifiers", func(t *testing.T) {
		const msg = "The derived qualifier from the function name does not match the specified qualifier."
		cases := []struct{ fn, q string }{
			{"nf:1", "2"},
			{partial + ":1", "$LATEST"},
			{full + ":live", "1"},
			{full + ":$LATEST", "live"},
		}
		for _, tc := range cases {
			_, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(tc.fn), Qualifier: aws.String(tc.q)})
			wantAPIError(t, err, 400, "InvalidParameterValueException", msg)
			if m := apiMessage(err); m != msg {
				t.Errorf("message %q", m)
			}
			_, err = c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(tc.fn), Qualifier: aws.String(tc.q)})
			wantAPIError(t, err, 400, "InvalidParameterValueException", msg)
			_, err = c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String(tc.fn), Qualifier: aws.String(tc.q)})
			wantAPIError(t, err, 400, "InvalidParameterValueException", msg)
			_, err = c.GetPolicy(ctx(t), &lambda.GetPolicyInput{FunctionName: aws.String(tc.fn), Qualifier: aws.String(tc.q)})
			wantAPIError(t, err, 400, "InvalidParameterValueException", msg)
			_, err = c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String(tc.fn), Qualifier: aws.String(tc.q)})
			wantAPIError(t, err, 400, "InvalidParameterValueException", msg)
		}
		// Nothing was deleted by the refused DeleteFunction calls.
		vs, err := c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("nf")})
		if err != nil || len(vs.Versions) != 3 {
			t.Errorf("versions after refused deletes: %v %v", versionList(vs.Versions), err)
		}
	})

	t.Run("WritesByARN", func(t *testing.T) {
		u, err := c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(full), Description: aws.String("by full arn")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(u.FunctionArn) != full || aws.ToString(u.FunctionName) != "nf" {
			t.Errorf("update by ARN answered for %s / %s", aws.ToString(u.FunctionArn), aws.ToString(u.FunctionName))
		}
		waitSettled(t, c, partial)
		p, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String(partial)})
		if err != nil || aws.ToString(p.Version) != "3" || aws.ToString(p.FunctionArn) != full+":3" {
			t.Fatalf("publish by partial ARN: %+v %v", p, err)
		}
		if _, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String(full), Name: aws.String("by-arn"), FunctionVersion: aws.String("3")}); err != nil {
			t.Fatal(err)
		}
		al, err := c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String(partial), Name: aws.String("by-arn")})
		if err != nil || aws.ToString(al.AliasArn) != full+":by-arn" {
			t.Errorf("GetAlias by partial ARN: %+v %v", al, err)
		}
		if _, err := c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String(partial), ReservedConcurrentExecutions: aws.Int32(7)}); err != nil {
			t.Fatal(err)
		}
		gc, err := c.GetFunctionConcurrency(ctx(t), &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String(full)})
		if err != nil || aws.ToInt32(gc.ReservedConcurrentExecutions) != 7 {
			t.Errorf("concurrency by ARN: %+v %v", gc, err)
		}
		// Unqualified-only operations refuse a qualified name.
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(full + ":1"), Description: aws.String("x")})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		// DeleteFunction by qualified full ARN deletes that version only.
		if _, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String(full + ":2")}); err != nil {
			t.Fatal(err)
		}
		vs, err := c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String(full)})
		if err != nil {
			t.Fatal(err)
		}
		if got := versionList(vs.Versions); len(got) != 3 || got[0] != "$LATEST" || got[1] != "1" || got[2] != "3" {
			t.Errorf("versions after deleting :2 by ARN: %v", got)
		}
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("nf")})
		if err != nil || aws.ToString(g.Configuration.Description) != "by full arn" || g.Configuration.State != types.StateActive {
			t.Errorf("after writes by ARN: %v", err)
		}
	})

	t.Run("MissingByEveryForm", func(t *testing.T) {
		for _, fn := range []string{"ghost", devAcct + ":function:ghost", fnArn(devAcct, "ghost")} {
			_, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(fn)})
			wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, "ghost"))
		}
		_, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("nf"), Qualifier: aws.String("99")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, "nf")+":99")
		_, err = c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("nf:nosuchalias")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, "nf")+":nosuchalias")
	})
}
