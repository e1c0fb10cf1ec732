// Tests of the control plane through the real aws-sdk-go-v2 Lambda client
// against an in-process server (issue 2): every operation's observable
// values, AWS's error codes and statuses, and the state machine the SDK
// waiters poll.
package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip"
	"github.com/nubo-dev/nubo/internal/server"
)

// TestStateTransitions holds every transition for 300 ms so the transient
// states are observable, and drives the SDK's own waiters through them.
func TestStateTransitions(t *testing.T) {
	const delay = 300 * time.Millisecond
	s := start(t, func(c *server.Config) { c.TransitionDelay = delay })
	c := s.Dev()
	fast := func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 100*time.Millisecond
	}
	fastU := func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 100*time.Millisecond
	}

	var rev0 string
	t.Run("CreatePendingThenActive", func(t *testing.T) {
		start := time.Now()
		out, err := c.CreateFunction(ctx(t), createInput(t, "st", nil))
		if err != nil {
			t.Fatal(err)
		}
		if out.State != types.StatePending || out.StateReasonCode != types.StateReasonCodeCreating ||
			aws.ToString(out.StateReason) != "The function is being created." {
			t.Errorf("create returned %s/%s/%q", out.State, out.StateReasonCode, aws.ToString(out.StateReason))
		}
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("st")})
		if err != nil {
			t.Fatal(err)
		}
		if g.Configuration.State != types.StatePending {
			t.Errorf("GetFunction %v after create: State %s, want Pending", time.Since(start), g.Configuration.State)
		}
		// A write while Pending is refused as AWS refuses it.
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("st"), Description: aws.String("x")})
		wantAPIError(t, err, 409, "ResourceConflictException", "The function is currently in the following state: Pending")
		w := lambda.NewFunctionActiveV2Waiter(c, fast)
		g, err = w.WaitForOutput(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("st")}, 10*time.Second)
		if err != nil {
			t.Fatalf("FunctionActiveV2 waiter: %v", err)
		}
		if g.Configuration.State != types.StateActive {
			t.Errorf("after waiter: %s", g.Configuration.State)
		}
		if el := time.Since(start); el < delay {
			t.Errorf("Active after %v, before the %v transition delay", el, delay)
		}
		if g.Configuration.StateReason != nil || g.Configuration.StateReasonCode != "" {
			t.Errorf("Active function keeps reason %q/%q", aws.ToString(g.Configuration.StateReason), g.Configuration.StateReasonCode)
		}
		rev0 = aws.ToString(g.Configuration.RevisionId)
	})

	t.Run("UpdateCodeInProgressThenSuccessful", func(t *testing.T) {
		zip := codeZip(t, "st v2")
		out, err := c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("st"), ZipFile: zip})
		if err != nil {
			t.Fatal(err)
		}
		if out.LastUpdateStatus != types.LastUpdateStatusInProgress {
			t.Errorf("UpdateFunctionCode returned LastUpdateStatus %s", out.LastUpdateStatus)
		}
		if aws.ToString(out.CodeSha256) != sha64(zip) || aws.ToInt64(&out.CodeSize) != int64(len(zip)) {
			t.Errorf("code fields %s/%d", aws.ToString(out.CodeSha256), out.CodeSize)
		}
		rev1 := aws.ToString(out.RevisionId)
		if rev1 == "" || rev1 == rev0 {
			t.Errorf("RevisionId %q after update, was %q", rev1, rev0)
		}
		// A second write while the first is in progress: 409.
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("st"), MemorySize: aws.Int32(256)})
		wantAPIError(t, err, 409, "ResourceConflictException", "An update is in progress for resource: "+fnArn(devAcct, "st"))
		_, err = c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("st"), ZipFile: codeZip(t, "st v3")})
		wantAPIError(t, err, 409, "ResourceConflictException", "An update is in progress")
		_, err = c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("st")})
		wantAPIError(t, err, 409, "ResourceConflictException", "An update is in progress")

		g, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("st")})
		if err != nil {
			t.Fatal(err)
		}
		if g.LastUpdateStatus != types.LastUpdateStatusInProgress {
			t.Errorf("GetFunctionConfiguration during update: %s", g.LastUpdateStatus)
		}
		w := lambda.NewFunctionUpdatedV2Waiter(c, fastU)
		gf, err := w.WaitForOutput(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("st")}, 10*time.Second)
		if err != nil {
			t.Fatalf("FunctionUpdatedV2 waiter: %v", err)
		}
		if gf.Configuration.LastUpdateStatus != types.LastUpdateStatusSuccessful || gf.Configuration.State != types.StateActive {
			t.Errorf("after waiter: %s/%s", gf.Configuration.State, gf.Configuration.LastUpdateStatus)
		}
		if aws.ToString(gf.Configuration.CodeSha256) != sha64(zip) {
			t.Errorf("CodeSha256 after update %s", aws.ToString(gf.Configuration.CodeSha256))
		}
	})

	t.Run("UpdateConfigurationRevisions", func(t *testing.T) {
		g, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("st")})
		if err != nil {
			t.Fatal(err)
		}
		before := aws.ToString(g.RevisionId)
		// A stale RevisionId: 412, and nothing changes.
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
			FunctionName: aws.String("st"), MemorySize: aws.Int32(512), RevisionId: aws.String(rev0)})
		wantAPIError(t, err, 412, "PreconditionFailedException", "Revision Id")
		_, err = c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{
			FunctionName: aws.String("st"), ZipFile: codeZip(t, "stale"), RevisionId: aws.String(rev0)})
		wantAPIError(t, err, 412, "PreconditionFailedException", "")

		out, err := c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
			FunctionName: aws.String("st"), MemorySize: aws.Int32(512), Timeout: aws.Int32(30),
			Description: aws.String("tuned"), RevisionId: aws.String(before),
			Environment: &types.Environment{Variables: map[string]string{"MODE": "fast"}}})
		if err != nil {
			t.Fatal(err)
		}
		if out.LastUpdateStatus != types.LastUpdateStatusInProgress {
			t.Errorf("LastUpdateStatus %s", out.LastUpdateStatus)
		}
		if r := aws.ToString(out.RevisionId); r == "" || r == before {
			t.Errorf("RevisionId %q after update, was %q", r, before)
		}
		w := lambda.NewFunctionUpdatedV2Waiter(c, fastU)
		gf, err := w.WaitForOutput(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("st")}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cf := gf.Configuration
		if aws.ToInt32(cf.MemorySize) != 512 || aws.ToInt32(cf.Timeout) != 30 || aws.ToString(cf.Description) != "tuned" ||
			cf.Environment == nil || cf.Environment.Variables["MODE"] != "fast" {
			t.Errorf("config after update: mem %d timeout %d desc %q env %+v", aws.ToInt32(cf.MemorySize), aws.ToInt32(cf.Timeout), aws.ToString(cf.Description), cf.Environment)
		}
		// The update with the current RevisionId worked; the one it replaced is now stale.
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{
			FunctionName: aws.String("st"), Description: aws.String("again"), RevisionId: aws.String(before)})
		wantAPIError(t, err, 412, "PreconditionFailedException", "")
	})
}

// TestControlPlane covers each operation group on one shared server.
func TestControlPlane(t *testing.T) {
	s := start(t)
	c := s.Dev()

	t.Run("GetFunction", func(t *testing.T) {
		zip := codeZip(t, "getter")
		before := time.Now()
		out := mustCreate(t, c, "getter", zip, func(in *lambda.CreateFunctionInput) {
			in.Description = aws.String("reads things")
			in.Environment = &types.Environment{Variables: map[string]string{"AB": "1"}}
		})
		if aws.ToString(out.FunctionArn) != fnArn(devAcct, "getter") {
			t.Errorf("FunctionArn %s", aws.ToString(out.FunctionArn))
		}
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("getter")})
		if err != nil {
			t.Fatal(err)
		}
		cf := g.Configuration
		if got := aws.ToString(cf.CodeSha256); got != sha64(zip) {
			t.Errorf("CodeSha256 = %s, want %s", got, sha64(zip))
		}
		if cf.CodeSize != int64(len(zip)) {
			t.Errorf("CodeSize = %d, want %d", cf.CodeSize, len(zip))
		}
		lm := aws.ToString(cf.LastModified)
		if !lastModifiedRE.MatchString(lm) {
			t.Errorf("LastModified %q", lm)
		}
		if ts, err := time.Parse("2006-01-02T15:04:05.000-0700", lm); err != nil || ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("LastModified %q is not the create time (%v)", lm, err)
		}
		if len(aws.ToString(cf.RevisionId)) != 36 {
			t.Errorf("RevisionId %q", aws.ToString(cf.RevisionId))
		}
		if aws.ToString(cf.Version) != "$LATEST" || aws.ToString(cf.FunctionName) != "getter" ||
			aws.ToString(cf.Role) != role || string(cf.Runtime) != runtime || aws.ToString(cf.Handler) != "bootstrap" ||
			aws.ToInt32(cf.Timeout) != 3 || aws.ToInt32(cf.MemorySize) != 128 || aws.ToString(cf.Description) != "reads things" ||
			cf.PackageType != types.PackageTypeZip || !slices.Equal(cf.Architectures, []types.Architecture{types.ArchitectureX8664}) ||
			cf.EphemeralStorage == nil || aws.ToInt32(cf.EphemeralStorage.Size) != 512 ||
			cf.TracingConfig == nil || cf.TracingConfig.Mode != types.TracingModePassThrough ||
			cf.LoggingConfig == nil || aws.ToString(cf.LoggingConfig.LogGroup) != "/aws/lambda/getter" ||
			cf.Environment == nil || cf.Environment.Variables["AB"] != "1" || cf.State != types.StateActive {
			b, _ := json.Marshal(cf)
			t.Errorf("configuration: %s", b)
		}
		if aws.ToString(g.Code.RepositoryType) != "S3" {
			t.Errorf("RepositoryType %q", aws.ToString(g.Code.RepositoryType))
		}
		loc := aws.ToString(g.Code.Location)
		resp, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, zip) {
			t.Errorf("download %s: %d, %d bytes, identical %v", loc, resp.StatusCode, len(got), bytes.Equal(got, zip))
		}
		// A tampered signature, or a URL re-pointed at other code, is refused.
		u, _ := url.Parse(loc)
		q := u.Query()
		sig := []byte(q.Get("signature"))
		if sig[0] == 'a' {
			sig[0] = 'b'
		} else {
			sig[0] = 'a'
		}
		q.Set("signature", string(sig))
		tampered := *u
		tampered.RawQuery = q.Encode()
		other := *u
		other.Path = strings.Replace(u.Path, codezip.HexSHA256(zip), strings.Repeat("0", 64), 1)
		later := *u
		q2 := u.Query()
		exp, _ := strconv.ParseInt(q2.Get("expires"), 10, 64)
		q2.Set("expires", strconv.FormatInt(exp+3600, 10))
		later.RawQuery = q2.Encode()
		for name, bad := range map[string]*url.URL{"signature": &tampered, "path": &other, "expiry": &later} {
			resp, err := http.Get(bad.String())
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 403 || bytes.Contains(b, []byte("bootstrap")) {
				t.Errorf("tampered %s: %d %q", name, resp.StatusCode, b)
			}
		}
	})

	t.Run("GetFunctionConfiguration", func(t *testing.T) {
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("getter")})
		if err != nil {
			t.Fatal(err)
		}
		cf, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("getter")})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(g.Configuration)
		b, _ := json.Marshal(configOf(cf))
		if string(a) != string(b) {
			t.Errorf("GetFunctionConfiguration differs from GetFunction's Configuration:\n%s\n%s", a, b)
		}
		_, err = c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("nope")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, "nope"))
	})

	t.Run("CreateDuplicate", func(t *testing.T) {
		_, err := c.CreateFunction(ctx(t), createInput(t, "getter", nil))
		wantAPIError(t, err, 409, "ResourceConflictException", "Function already exist: getter")
	})

	t.Run("ListFunctionsPaginated", func(t *testing.T) {
		names := []string{"page-a", "page-b", "page-c", "page-d", "page-e", "page-f"}
		for _, n := range names {
			mustCreate(t, c, n, nil)
		}
		mustPublish(t, c, "page-a")
		p := lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{MaxItems: aws.Int32(2)})
		var all []types.FunctionConfiguration
		pages := 0
		for p.HasMorePages() {
			out, err := p.NextPage(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(out.Functions) > 2 {
				t.Errorf("page of %d with MaxItems 2", len(out.Functions))
			}
			all = append(all, out.Functions...)
		}
		got := functionNames(all)
		for _, n := range names {
			if got[n] != 1 {
				t.Errorf("%s listed %d times", n, got[n])
			}
		}
		if pages < (len(all)+1)/2 || pages < 3 {
			t.Errorf("%d functions in %d pages", len(all), pages)
		}
		for _, f := range all {
			if aws.ToString(f.Version) != "$LATEST" {
				t.Errorf("%s:%s listed without FunctionVersion=ALL", aws.ToString(f.FunctionName), aws.ToString(f.Version))
			}
		}
		p = lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{MaxItems: aws.Int32(3), FunctionVersion: types.FunctionVersionAll})
		var versions []string
		n := 0
		for p.HasMorePages() {
			out, err := p.NextPage(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range out.Functions {
				n++
				if aws.ToString(f.FunctionName) == "page-a" {
					versions = append(versions, aws.ToString(f.Version)+"="+aws.ToString(f.FunctionArn))
				}
			}
		}
		// In a list of versions $LATEST's ARN is qualified too.
		want := []string{"$LATEST=" + fnArn(devAcct, "page-a") + ":$LATEST", "1=" + fnArn(devAcct, "page-a") + ":1"}
		if !slices.Equal(versions, want) {
			t.Errorf("FunctionVersion=ALL for page-a: %v, want %v", versions, want)
		}
		if n != len(all)+1 {
			t.Errorf("ALL listed %d entries, want %d", n, len(all)+1)
		}
	})

	// A page's marker names the last item of the previous page; deleting that
	// item between pages must neither skip nor repeat the items after it.
	t.Run("PaginationSurvivesDeletes", func(t *testing.T) {
		a := s.A()
		for _, n := range []string{"api", "api-v2", "api1", "b"} {
			mustCreate(t, a, n, nil)
		}
		p1, err := a.ListFunctions(ctx(t), &lambda.ListFunctionsInput{MaxItems: aws.Int32(1)})
		if err != nil || len(p1.Functions) != 1 || aws.ToString(p1.Functions[0].FunctionName) != "api" || p1.NextMarker == nil {
			t.Fatalf("first page: %v %v", functionNames(p1.Functions), err)
		}
		if _, err := a.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("api")}); err != nil {
			t.Fatal(err)
		}
		rest, err := a.ListFunctions(ctx(t), &lambda.ListFunctionsInput{Marker: p1.NextMarker})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range rest.Functions {
			names = append(names, aws.ToString(f.FunctionName))
		}
		if want := []string{"api-v2", "api1", "b"}; !slices.Equal(names, want) {
			t.Errorf("ListFunctions after the marker's function was deleted: %v, want %v", names, want)
		}

		mustCreate(t, a, "many", nil)
		for i := 1; i <= 11; i++ {
			mustUpdateDescription(t, a, "many", strconv.Itoa(i))
			mustPublish(t, a, "many")
		}
		v1, err := a.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("many"), MaxItems: aws.Int32(10)})
		if err != nil || len(v1.Versions) != 10 || aws.ToString(v1.Versions[9].Version) != "9" {
			t.Fatalf("first page of versions: %v %v", versionList(v1.Versions), err)
		}
		if _, err := a.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("many"), Qualifier: aws.String("9")}); err != nil {
			t.Fatal(err)
		}
		v2, err := a.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("many"), Marker: v1.NextMarker})
		if err != nil || !slices.Equal(versionList(v2.Versions), []string{"10", "11"}) {
			t.Errorf("versions after the marker's version was deleted: %v %v", versionList(v2.Versions), err)
		}

		for range 5 {
			if _, err := a.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("pl"), Content: &types.LayerVersionContentInput{ZipFile: codeZip(t, "pl")}}); err != nil {
				t.Fatal(err)
			}
		}
		l1, err := a.ListLayerVersions(ctx(t), &lambda.ListLayerVersionsInput{LayerName: aws.String("pl"), MaxItems: aws.Int32(3)})
		if err != nil || !slices.Equal(layerVersionNumbers(l1.LayerVersions), []int64{5, 4, 3}) {
			t.Fatalf("first page of layer versions: %v %v", layerVersionNumbers(l1.LayerVersions), err)
		}
		if _, err := a.DeleteLayerVersion(ctx(t), &lambda.DeleteLayerVersionInput{LayerName: aws.String("pl"), VersionNumber: aws.Int64(3)}); err != nil {
			t.Fatal(err)
		}
		l2, err := a.ListLayerVersions(ctx(t), &lambda.ListLayerVersionsInput{LayerName: aws.String("pl"), Marker: l1.NextMarker})
		if err != nil || !slices.Equal(layerVersionNumbers(l2.LayerVersions), []int64{2, 1}) {
			t.Errorf("layer versions after the marker's version was deleted: %v %v", layerVersionNumbers(l2.LayerVersions), err)
		}
	})

	t.Run("DeleteFunction", func(t *testing.T) {
		mustCreate(t, c, "doomed", nil)
		v1 := mustPublish(t, c, "doomed")
		mustUpdateDescription(t, c, "doomed", "two")
		v2 := mustPublish(t, c, "doomed")
		if v1 != "1" || v2 != "2" {
			t.Fatalf("versions %s %s", v1, v2)
		}
		_, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("doomed"), Qualifier: aws.String("$LATEST")})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "$LATEST version cannot be deleted")
		if _, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("doomed"), Name: aws.String("prod"), FunctionVersion: aws.String("2")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("doomed"), Qualifier: aws.String("2")})
		wantAPIError(t, err, 409, "ResourceConflictException", "prod")
		// Deleting version 1 removes only that version.
		if _, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("doomed"), Qualifier: aws.String("1")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("doomed"), Qualifier: aws.String("1")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+fnArn(devAcct, "doomed")+":1")
		if _, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("doomed"), Qualifier: aws.String("2")}); err != nil {
			t.Errorf("version 2 after deleting 1: %v", err)
		}
		vs, err := c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("doomed")})
		if err != nil {
			t.Fatal(err)
		}
		if got := versionList(vs.Versions); !slices.Equal(got, []string{"$LATEST", "2"}) {
			t.Errorf("versions after deleting 1: %v", got)
		} else if a := aws.ToString(vs.Versions[0].FunctionArn); a != fnArn(devAcct, "doomed")+":$LATEST" {
			t.Errorf("$LATEST listed as %s; want the ARN qualified with $LATEST", a)
		}
		// The whole function, versions and aliases included.
		if _, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("doomed")}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"", "2", "prod"} {
			in := &lambda.GetFunctionInput{FunctionName: aws.String("doomed")}
			if q != "" {
				in.Qualifier = aws.String(q)
			}
			_, err := c.GetFunction(ctx(t), in)
			// The message names the ARN as the caller qualified it.
			want := fnArn(devAcct, "doomed")
			if q != "" {
				want += ":" + q
			}
			wantAPIError(t, err, 404, "ResourceNotFoundException", "Function not found: "+want)
			if msg := apiMessage(err); !strings.HasSuffix(msg, want) {
				t.Errorf("GetFunction %q: %q, want it to end with %s", q, msg, want)
			}
		}
		// Not by the $LATEST an unqualified event-invoke config is kept under.
		_, err = c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{
			FunctionName: aws.String("doomed"), MaximumRetryAttempts: aws.Int32(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		if msg := apiMessage(err); !strings.HasSuffix(msg, fnArn(devAcct, "doomed")) {
			t.Errorf("PutFunctionEventInvokeConfig of a missing function: %q, want the unqualified ARN", msg)
		}
		_, err = c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("doomed")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		// A new function of the same name starts from scratch.
		mustCreate(t, c, "doomed", nil)
		if v := mustPublish(t, c, "doomed"); v != "1" {
			t.Errorf("first version of a re-created function is %s", v)
		}
		_, err = c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String("doomed"), Name: aws.String("prod")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("PublishVersion", func(t *testing.T) {
		mustCreate(t, c, "pub", nil)
		out, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("pub"), Description: aws.String("first")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.Version) != "1" || aws.ToString(out.FunctionArn) != fnArn(devAcct, "pub")+":1" ||
			aws.ToString(out.Description) != "first" || out.State != types.StateActive {
			t.Errorf("version 1: %s %s %q %s", aws.ToString(out.Version), aws.ToString(out.FunctionArn), aws.ToString(out.Description), out.State)
		}
		// Unchanged $LATEST: the latest version again, not a new one.
		again, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("pub")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(again.Version) != "1" || aws.ToString(again.RevisionId) != aws.ToString(out.RevisionId) {
			t.Errorf("republishing unchanged $LATEST gave version %s (rev %s vs %s)", aws.ToString(again.Version), aws.ToString(again.RevisionId), aws.ToString(out.RevisionId))
		}
		zip2 := codeZip(t, "pub v2")
		if _, err := c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("pub"), ZipFile: zip2}); err != nil {
			t.Fatal(err)
		}
		waitSettled(t, c, "pub")
		_, err = c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("pub"), CodeSha256: aws.String(sha64([]byte("other")))})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "CodeSHA256")
		_, err = c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("pub"), RevisionId: aws.String(aws.ToString(out.RevisionId))})
		wantAPIError(t, err, 412, "PreconditionFailedException", "")
		v2, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("pub"), CodeSha256: aws.String(sha64(zip2))})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(v2.Version) != "2" || aws.ToString(v2.CodeSha256) != sha64(zip2) {
			t.Errorf("version 2: %s %s", aws.ToString(v2.Version), aws.ToString(v2.CodeSha256))
		}
		// Versions are immutable snapshots: version 1 keeps the old code.
		g1, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("pub"), Qualifier: aws.String("1")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(g1.CodeSha256) != sha64(codeZip(t, "pub")) || aws.ToString(g1.Version) != "1" {
			t.Errorf("version 1 now %s %s", aws.ToString(g1.Version), aws.ToString(g1.CodeSha256))
		}
		_, err = c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("nope")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("PublishFlags", func(t *testing.T) {
		zip1 := codeZip(t, "flags v1")
		out, err := c.CreateFunction(ctx(t), createInput(t, fnArn(devAcct, "flags"), zip1, func(in *lambda.CreateFunctionInput) { in.Publish = true }))
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.Version) != "1" || aws.ToString(out.FunctionArn) != fnArn(devAcct, "flags")+":1" || aws.ToString(out.FunctionName) != "flags" {
			t.Errorf("create by ARN with Publish: %s %s %s", aws.ToString(out.FunctionName), aws.ToString(out.Version), aws.ToString(out.FunctionArn))
		}
		waitSettled(t, c, "flags")
		if v := mustPublish(t, c, "flags"); v != "1" {
			t.Errorf("publishing unchanged after Publish=true gave %s", v)
		}
		zip2 := codeZip(t, "flags v2")
		u, err := c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("flags"), ZipFile: zip2, Publish: true})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(u.Version) != "2" || aws.ToString(u.CodeSha256) != sha64(zip2) {
			t.Errorf("UpdateFunctionCode Publish: version %s sha %s", aws.ToString(u.Version), aws.ToString(u.CodeSha256))
		}
		// DryRun checks and changes nothing.
		d, err := c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("flags"), ZipFile: codeZip(t, "dry"), DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(d.CodeSha256) != sha64(codeZip(t, "dry")) {
			t.Errorf("DryRun answered %s", aws.ToString(d.CodeSha256))
		}
		// Each version's Code.Location serves that version's zip.
		for q, want := range map[string][]byte{"1": zip1, "2": zip2, "$LATEST": zip2} {
			g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("flags"), Qualifier: aws.String(q)})
			if err != nil {
				t.Fatal(err)
			}
			if b := download(t, aws.ToString(g.Code.Location)); !bytes.Equal(b, want) {
				t.Errorf("code of %s differs", q)
			}
		}
	})

	t.Run("ListVersionsByFunction", func(t *testing.T) {
		mustCreate(t, c, "vers", nil)
		for i := 1; i <= 4; i++ {
			mustUpdateDescription(t, c, "vers", "d"+strconv.Itoa(i))
			if v := mustPublish(t, c, "vers"); v != strconv.Itoa(i) {
				t.Fatalf("publish %d gave %s", i, v)
			}
		}
		p := lambda.NewListVersionsByFunctionPaginator(c, &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("vers"), MaxItems: aws.Int32(2)})
		var got []string
		pages := 0
		for p.HasMorePages() {
			out, err := p.NextPage(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, v := range out.Versions {
				got = append(got, aws.ToString(v.Version)+":"+aws.ToString(v.Description))
			}
		}
		want := []string{"$LATEST:d4", "1:d1", "2:d2", "3:d3", "4:d4"}
		if !slices.Equal(got, want) || pages != 3 {
			t.Errorf("versions %v in %d pages, want %v in 3", got, pages, want)
		}
	})

	t.Run("Aliases", func(t *testing.T) {
		mustCreate(t, c, "al", nil)
		mustPublish(t, c, "al")
		mustUpdateDescription(t, c, "al", "2")
		mustPublish(t, c, "al")
		out, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{
			FunctionName: aws.String("al"), Name: aws.String("live"), FunctionVersion: aws.String("1"), Description: aws.String("canary"),
			RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.2}}})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.AliasArn) != fnArn(devAcct, "al")+":live" || aws.ToString(out.FunctionVersion) != "1" ||
			out.RoutingConfig == nil || out.RoutingConfig.AdditionalVersionWeights["2"] != 0.2 || aws.ToString(out.RevisionId) == "" {
			t.Errorf("CreateAlias: %+v", out)
		}
		g, err := c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String("al"), Name: aws.String("live")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(g.Description) != "canary" || g.RoutingConfig.AdditionalVersionWeights["2"] != 0.2 || aws.ToString(g.RevisionId) != aws.ToString(out.RevisionId) {
			t.Errorf("GetAlias: %+v", g)
		}
		_, err = c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String("live"), FunctionVersion: aws.String("2")})
		wantAPIError(t, err, 409, "ResourceConflictException", "Alias already exists: "+fnArn(devAcct, "al")+":live")
		_, err = c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String("bad"), FunctionVersion: aws.String("1"),
			RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 1.5}}})
		wantAPIError(t, err, 400, "ValidationException", "additionalVersionWeights")
		_, err = c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String("bad"), FunctionVersion: aws.String("9")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", fnArn(devAcct, "al")+":9")
		_, err = c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String("bad"), FunctionVersion: aws.String("1"),
			RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"7": 0.5}}})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String("bad"), FunctionVersion: aws.String("1"),
			RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"1": 0.5}}})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		if _, err := c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String("al"), Name: aws.String("bad")}); !isNotFound(err) {
			t.Errorf("a refused alias exists: %v", err)
		}

		// Update: stale RevisionId refused; then move to version 2 and drop the weights.
		_, err = c.UpdateAlias(ctx(t), &lambda.UpdateAliasInput{FunctionName: aws.String("al"), Name: aws.String("live"), Description: aws.String("stale"), RevisionId: aws.String("00000000-0000-0000-0000-000000000000")})
		wantAPIError(t, err, 412, "PreconditionFailedException", "")
		u, err := c.UpdateAlias(ctx(t), &lambda.UpdateAliasInput{FunctionName: aws.String("al"), Name: aws.String("live"), FunctionVersion: aws.String("2"),
			RoutingConfig: &types.AliasRoutingConfiguration{}, RevisionId: out.RevisionId})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(u.FunctionVersion) != "2" || (u.RoutingConfig != nil && len(u.RoutingConfig.AdditionalVersionWeights) > 0) ||
			aws.ToString(u.RevisionId) == aws.ToString(out.RevisionId) || aws.ToString(u.Description) != "canary" {
			t.Errorf("UpdateAlias: %+v", u)
		}
		_, err = c.UpdateAlias(ctx(t), &lambda.UpdateAliasInput{FunctionName: aws.String("al"), Name: aws.String("live"),
			RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"1": -0.1}}})
		wantAPIError(t, err, 400, "ValidationException", "")
		_, err = c.UpdateAlias(ctx(t), &lambda.UpdateAliasInput{FunctionName: aws.String("al"), Name: aws.String("ghost"), FunctionVersion: aws.String("1")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Alias not found: "+fnArn(devAcct, "al")+":ghost")

		for _, n := range []string{"a1", "a2", "a3"} {
			if _, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("al"), Name: aws.String(n), FunctionVersion: aws.String("1")}); err != nil {
				t.Fatal(err)
			}
		}
		p := lambda.NewListAliasesPaginator(c, &lambda.ListAliasesInput{FunctionName: aws.String("al"), MaxItems: aws.Int32(2)})
		var names []string
		for p.HasMorePages() {
			o, err := p.NextPage(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range o.Aliases {
				names = append(names, aws.ToString(a.Name)+"->"+aws.ToString(a.FunctionVersion))
			}
		}
		if want := []string{"a1->1", "a2->1", "a3->1", "live->2"}; !slices.Equal(names, want) {
			t.Errorf("ListAliases %v, want %v", names, want)
		}
		only2, err := c.ListAliases(ctx(t), &lambda.ListAliasesInput{FunctionName: aws.String("al"), FunctionVersion: aws.String("2")})
		if err != nil || len(only2.Aliases) != 1 || aws.ToString(only2.Aliases[0].Name) != "live" {
			t.Errorf("ListAliases FunctionVersion=2: %+v %v", only2, err)
		}
		if _, err := c.DeleteAlias(ctx(t), &lambda.DeleteAliasInput{FunctionName: aws.String("al"), Name: aws.String("live")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String("al"), Name: aws.String("live")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "Alias not found: "+fnArn(devAcct, "al")+":live")
	})

	t.Run("Layers", func(t *testing.T) {
		lz1, lz2 := codeZip(t, "layer one"), codeZip(t, "layer two")
		l1, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("tools"),
			Content: &types.LayerVersionContentInput{ZipFile: lz1}, CompatibleRuntimes: []types.Runtime{runtime}, LicenseInfo: aws.String("MIT")})
		if err != nil {
			t.Fatal(err)
		}
		layerArn := "arn:aws:lambda:" + region + ":" + devAcct + ":layer:tools"
		if l1.Version != 1 || aws.ToString(l1.LayerArn) != layerArn || aws.ToString(l1.LayerVersionArn) != layerArn+":1" ||
			aws.ToString(l1.Content.CodeSha256) != sha64(lz1) || l1.Content.CodeSize != int64(len(lz1)) ||
			!lastModifiedRE.MatchString(aws.ToString(l1.CreatedDate)) || aws.ToString(l1.LicenseInfo) != "MIT" {
			b, _ := json.Marshal(l1)
			t.Errorf("PublishLayerVersion: %s", b)
		}
		if b := download(t, aws.ToString(l1.Content.Location)); !bytes.Equal(b, lz1) {
			t.Errorf("layer download differs (%d bytes)", len(b))
		}
		l2, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("tools"), Content: &types.LayerVersionContentInput{ZipFile: lz2}})
		if err != nil {
			t.Fatal(err)
		}
		if l2.Version != 2 {
			t.Errorf("second layer version is %d", l2.Version)
		}
		g, err := c.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: aws.String("tools"), VersionNumber: aws.Int64(1)})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(g.Content.CodeSha256) != sha64(lz1) || g.Version != 1 {
			t.Errorf("GetLayerVersion 1: %+v", g)
		}
		ga, err := c.GetLayerVersionByArn(ctx(t), &lambda.GetLayerVersionByArnInput{Arn: aws.String(layerArn + ":2")})
		if err != nil {
			t.Fatal(err)
		}
		if ga.Version != 2 || aws.ToString(ga.Content.CodeSha256) != sha64(lz2) {
			t.Errorf("GetLayerVersionByArn: %+v", ga)
		}
		ll, err := c.ListLayers(ctx(t), &lambda.ListLayersInput{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ll.Layers) != 1 || aws.ToString(ll.Layers[0].LayerName) != "tools" || ll.Layers[0].LatestMatchingVersion.Version != 2 {
			b, _ := json.Marshal(ll.Layers)
			t.Errorf("ListLayers: %s", b)
		}
		lr, err := c.ListLayers(ctx(t), &lambda.ListLayersInput{CompatibleRuntime: types.Runtime(runtime)})
		if err != nil || len(lr.Layers) != 1 || lr.Layers[0].LatestMatchingVersion.Version != 1 {
			t.Errorf("ListLayers for %s: %+v %v", runtime, lr, err)
		}
		lv, err := c.ListLayerVersions(ctx(t), &lambda.ListLayerVersionsInput{LayerName: aws.String("tools")})
		if err != nil {
			t.Fatal(err)
		}
		if got := layerVersionNumbers(lv.LayerVersions); !slices.Equal(got, []int64{2, 1}) {
			t.Errorf("ListLayerVersions %v", got)
		}

		// A function using the layer reports it.
		fo := mustCreate(t, c, "layered", nil, func(in *lambda.CreateFunctionInput) { in.Layers = []string{layerArn + ":1"} })
		if len(fo.Layers) != 1 || aws.ToString(fo.Layers[0].Arn) != layerArn+":1" || fo.Layers[0].CodeSize != int64(len(lz1)) {
			t.Errorf("function layers: %+v", fo.Layers)
		}
		six := []string{}
		for range 6 {
			six = append(six, layerArn+":1")
		}
		_, err = c.CreateFunction(ctx(t), createInput(t, "six-layers", nil, func(in *lambda.CreateFunctionInput) { in.Layers = six }))
		wantAPIError(t, err, 400, "InvalidParameterValueException", "Cannot reference more than 5 layers.")
		_, err = c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("layered"), Layers: six})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "Cannot reference more than 5 layers.")
		_, err = c.CreateFunction(ctx(t), createInput(t, "ghost-layer", nil, func(in *lambda.CreateFunctionInput) { in.Layers = []string{layerArn + ":9"} }))
		wantAPIError(t, err, 400, "InvalidParameterValueException", layerArn+":9")
		_, err = c.CreateFunction(ctx(t), createInput(t, "ghost-layer", nil, func(in *lambda.CreateFunctionInput) {
			in.Layers = []string{"arn:aws:lambda:" + region + ":" + devAcct + ":layer:nothing:1"}
		}))
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		for _, n := range []string{"six-layers", "ghost-layer"} {
			if _, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(n)}); !isNotFound(err) {
				t.Errorf("refused %s exists: %v", n, err)
			}
		}

		// Delete keeps numbering: the next version is 3, not 2.
		if _, err := c.DeleteLayerVersion(ctx(t), &lambda.DeleteLayerVersionInput{LayerName: aws.String("tools"), VersionNumber: aws.Int64(2)}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: aws.String("tools"), VersionNumber: aws.Int64(2)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		l3, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("tools"), Content: &types.LayerVersionContentInput{ZipFile: lz2}})
		if err != nil {
			t.Fatal(err)
		}
		if l3.Version != 3 {
			t.Errorf("version after deleting 2 is %d, want 3", l3.Version)
		}
		// Deleting every version does not reset the counter either.
		for _, v := range []int64{1, 3} {
			if _, err := c.DeleteLayerVersion(ctx(t), &lambda.DeleteLayerVersionInput{LayerName: aws.String("tools"), VersionNumber: aws.Int64(v)}); err != nil {
				t.Fatal(err)
			}
		}
		l4, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("tools"), Content: &types.LayerVersionContentInput{ZipFile: lz1}})
		if err != nil {
			t.Fatal(err)
		}
		if l4.Version != 4 {
			t.Errorf("version after deleting all is %d, want 4", l4.Version)
		}
		// The function keeps working on the deleted version 1.
		if g, err := c.GetFunctionConfiguration(ctx(t), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("layered")}); err != nil || len(g.Layers) != 1 {
			t.Errorf("layered after the layer's deletion: %v", err)
		}
		_, err = c.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: aws.String("unknown"), VersionNumber: aws.Int64(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = c.GetLayerVersionByArn(ctx(t), &lambda.GetLayerVersionByArnInput{Arn: aws.String("arn:aws:lambda:" + region + ":" + devAcct + ":layer:unknown:1")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("ReservedConcurrency", func(t *testing.T) {
		mustCreate(t, c, "conc1", nil)
		mustCreate(t, c, "conc2", nil)
		g, err := c.GetFunctionConcurrency(ctx(t), &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("conc1")})
		if err != nil || g.ReservedConcurrentExecutions != nil {
			t.Errorf("unset concurrency: %+v %v", g, err)
		}
		p, err := c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("conc1"), ReservedConcurrentExecutions: aws.Int32(50)})
		if err != nil || aws.ToInt32(p.ReservedConcurrentExecutions) != 50 {
			t.Fatalf("Put 50: %+v %v", p, err)
		}
		g, err = c.GetFunctionConcurrency(ctx(t), &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("conc1")})
		if err != nil || aws.ToInt32(g.ReservedConcurrentExecutions) != 50 {
			t.Errorf("Get: %+v %v", g, err)
		}
		gf, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("conc1")})
		if err != nil || gf.Concurrency == nil || aws.ToInt32(gf.Concurrency.ReservedConcurrentExecutions) != 50 {
			t.Errorf("GetFunction Concurrency: %+v %v", gf.Concurrency, err)
		}
		as, err := c.GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{})
		if err != nil || aws.ToInt32(as.AccountLimit.UnreservedConcurrentExecutions) != 950 || as.AccountLimit.ConcurrentExecutions != 1000 {
			t.Errorf("account limit: %+v %v", as.AccountLimit, err)
		}
		// 1000 - 50 - 851 = 99 < 100: refused; 850 leaves exactly 100.
		_, err = c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("conc2"), ReservedConcurrentExecutions: aws.Int32(851)})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "UnreservedConcurrentExecution below its minimum value of [100]")
		if _, err := c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("conc2"), ReservedConcurrentExecutions: aws.Int32(850)}); err != nil {
			t.Errorf("850 leaving exactly 100: %v", err)
		}
		// Raising conc1 counts conc2's share, not conc1's own old value.
		_, err = c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("conc1"), ReservedConcurrentExecutions: aws.Int32(51)})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		if _, err := c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("conc1"), ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
			t.Errorf("0: %v", err)
		}
		for _, n := range []string{"conc1", "conc2"} {
			if _, err := c.DeleteFunctionConcurrency(ctx(t), &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String(n)}); err != nil {
				t.Fatal(err)
			}
		}
		g, err = c.GetFunctionConcurrency(ctx(t), &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("conc1")})
		if err != nil || g.ReservedConcurrentExecutions != nil {
			t.Errorf("after delete: %+v %v", g, err)
		}
		as, _ = c.GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{})
		if aws.ToInt32(as.AccountLimit.UnreservedConcurrentExecutions) != 1000 {
			t.Errorf("unreserved after deletes: %d", aws.ToInt32(as.AccountLimit.UnreservedConcurrentExecutions))
		}
		_, err = c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("nope"), ReservedConcurrentExecutions: aws.Int32(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("EventInvokeConfig", func(t *testing.T) {
		mustCreate(t, c, "async", nil)
		_, err := c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("async")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		before := time.Now().Add(-2 * time.Second)
		p, err := c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("async"),
			MaximumRetryAttempts: aws.Int32(1), MaximumEventAgeInSeconds: aws.Int32(120)})
		if err != nil {
			t.Fatal(err)
		}
		if p.LastModified == nil || p.LastModified.Before(before) || p.LastModified.After(time.Now().Add(2*time.Second)) {
			t.Errorf("LastModified %v", p.LastModified)
		}
		if aws.ToInt32(p.MaximumRetryAttempts) != 1 || aws.ToInt32(p.MaximumEventAgeInSeconds) != 120 || aws.ToString(p.FunctionArn) != fnArn(devAcct, "async")+":$LATEST" {
			t.Errorf("Put: %+v", p)
		}
		u, err := c.UpdateFunctionEventInvokeConfig(ctx(t), &lambda.UpdateFunctionEventInvokeConfigInput{FunctionName: aws.String("async"), MaximumRetryAttempts: aws.Int32(0)})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToInt32(u.MaximumRetryAttempts) != 0 || aws.ToInt32(u.MaximumEventAgeInSeconds) != 120 {
			t.Errorf("Update merges: retries %d age %d", aws.ToInt32(u.MaximumRetryAttempts), aws.ToInt32(u.MaximumEventAgeInSeconds))
		}
		g, err := c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("async")})
		if err != nil || aws.ToInt32(g.MaximumRetryAttempts) != 0 || aws.ToInt32(g.MaximumEventAgeInSeconds) != 120 || g.LastModified == nil {
			t.Errorf("Get: %+v %v", g, err)
		}
		for _, bad := range []struct{ retries, age *int32 }{{aws.Int32(3), nil}, {aws.Int32(-1), nil}, {nil, aws.Int32(59)}, {nil, aws.Int32(21601)}} {
			_, err := c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("async"),
				MaximumRetryAttempts: bad.retries, MaximumEventAgeInSeconds: bad.age})
			wantAPIError(t, err, 400, "ValidationException", "")
		}
		for _, ok := range []struct{ retries, age int32 }{{0, 60}, {2, 21600}} {
			if _, err := c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("async"),
				MaximumRetryAttempts: aws.Int32(ok.retries), MaximumEventAgeInSeconds: aws.Int32(ok.age)}); err != nil {
				t.Errorf("bounds %+v refused: %v", ok, err)
			}
		}
		mustPublish(t, c, "async")
		if _, err := c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("async"), Qualifier: aws.String("1"), MaximumRetryAttempts: aws.Int32(2)}); err != nil {
			t.Fatal(err)
		}
		l, err := c.ListFunctionEventInvokeConfigs(ctx(t), &lambda.ListFunctionEventInvokeConfigsInput{FunctionName: aws.String("async")})
		if err != nil {
			t.Fatal(err)
		}
		var arns []string
		for _, e := range l.FunctionEventInvokeConfigs {
			arns = append(arns, aws.ToString(e.FunctionArn))
			if e.LastModified == nil || e.LastModified.Before(before) {
				t.Errorf("listed LastModified %v", e.LastModified)
			}
		}
		sort.Strings(arns)
		if want := []string{fnArn(devAcct, "async") + ":$LATEST", fnArn(devAcct, "async") + ":1"}; !slices.Equal(arns, want) {
			t.Errorf("List: %v, want %v", arns, want)
		}
		if _, err := c.DeleteFunctionEventInvokeConfig(ctx(t), &lambda.DeleteFunctionEventInvokeConfigInput{FunctionName: aws.String("async")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("async")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		if _, err := c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("async"), Qualifier: aws.String("1")}); err != nil {
			t.Errorf("version 1's config went with $LATEST's: %v", err)
		}
		_, err = c.UpdateFunctionEventInvokeConfig(ctx(t), &lambda.UpdateFunctionEventInvokeConfigInput{FunctionName: aws.String("async"), MaximumRetryAttempts: aws.Int32(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})

	t.Run("ProvisionedConcurrency", func(t *testing.T) {
		mustCreate(t, c, "warm", nil)
		mustPublish(t, c, "warm")
		_, err := c.PutProvisionedConcurrencyConfig(ctx(t), &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("$LATEST"), ProvisionedConcurrentExecutions: aws.Int32(1)})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		_, err = c.GetProvisionedConcurrencyConfig(ctx(t), &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1")})
		wantAPIError(t, err, 404, "ProvisionedConcurrencyConfigNotFoundException", "")
		_, err = c.PutProvisionedConcurrencyConfig(ctx(t), &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("5"), ProvisionedConcurrentExecutions: aws.Int32(1)})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		p, err := c.PutProvisionedConcurrencyConfig(ctx(t), &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1"), ProvisionedConcurrentExecutions: aws.Int32(2)})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToInt32(p.RequestedProvisionedConcurrentExecutions) != 2 || (p.Status != types.ProvisionedConcurrencyStatusEnumInProgress && p.Status != types.ProvisionedConcurrencyStatusEnumReady) {
			t.Errorf("Put: %+v", p)
		}
		// READY needs running environments, which is the execution layer's
		// business; the control plane must report the config it stored.
		g, err := c.GetProvisionedConcurrencyConfig(ctx(t), &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToInt32(g.RequestedProvisionedConcurrentExecutions) != 2 || !slices.Contains(types.ProvisionedConcurrencyStatusEnum("").Values(), g.Status) ||
			!lastModifiedRE.MatchString(aws.ToString(g.LastModified)) {
			t.Errorf("Get: requested %d status %q modified %q", aws.ToInt32(g.RequestedProvisionedConcurrentExecutions), g.Status, aws.ToString(g.LastModified))
		}
		l, err := c.ListProvisionedConcurrencyConfigs(ctx(t), &lambda.ListProvisionedConcurrencyConfigsInput{FunctionName: aws.String("warm")})
		if err != nil || len(l.ProvisionedConcurrencyConfigs) != 1 || aws.ToString(l.ProvisionedConcurrencyConfigs[0].FunctionArn) != fnArn(devAcct, "warm")+":1" {
			t.Errorf("List: %+v %v", l, err)
		}
		if _, err := c.DeleteProvisionedConcurrencyConfig(ctx(t), &lambda.DeleteProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetProvisionedConcurrencyConfig(ctx(t), &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1")})
		wantAPIError(t, err, 404, "ProvisionedConcurrencyConfigNotFoundException", "")
		_, err = c.DeleteProvisionedConcurrencyConfig(ctx(t), &lambda.DeleteProvisionedConcurrencyConfigInput{FunctionName: aws.String("warm"), Qualifier: aws.String("1")})
		wantAPIError(t, err, 404, "ProvisionedConcurrencyConfigNotFoundException", "")
		l, err = c.ListProvisionedConcurrencyConfigs(ctx(t), &lambda.ListProvisionedConcurrencyConfigsInput{FunctionName: aws.String("warm")})
		if err != nil || len(l.ProvisionedConcurrencyConfigs) != 0 {
			t.Errorf("List after delete: %+v %v", l, err)
		}
	})

	t.Run("Tags", func(t *testing.T) {
		mustCreate(t, c, "tagged", nil, func(in *lambda.CreateFunctionInput) { in.Tags = map[string]string{"team": "core"} })
		res := aws.String(fnArn(devAcct, "tagged"))
		if _, err := c.TagResource(ctx(t), &lambda.TagResourceInput{Resource: res, Tags: map[string]string{"env": "dev", "cost": "1"}}); err != nil {
			t.Fatal(err)
		}
		l, err := c.ListTags(ctx(t), &lambda.ListTagsInput{Resource: res})
		if err != nil || !mapsEqual(l.Tags, map[string]string{"team": "core", "env": "dev", "cost": "1"}) {
			t.Errorf("ListTags: %v %v", l.Tags, err)
		}
		if _, err := c.UntagResource(ctx(t), &lambda.UntagResourceInput{Resource: res, TagKeys: []string{"team", "cost"}}); err != nil {
			t.Fatal(err)
		}
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("tagged")})
		if err != nil || !mapsEqual(g.Tags, map[string]string{"env": "dev"}) {
			t.Errorf("GetFunction Tags: %v %v", g.Tags, err)
		}
		_, err = c.TagResource(ctx(t), &lambda.TagResourceInput{Resource: aws.String(fnArn(devAcct, "tagged") + ":$LATEST"), Tags: map[string]string{"x": "y"}})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
		_, err = c.ListTags(ctx(t), &lambda.ListTagsInput{Resource: aws.String(fnArn(devAcct, "untagged-nothing"))})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		_, err = c.TagResource(ctx(t), &lambda.TagResourceInput{Resource: res, Tags: map[string]string{"aws:x": "y"}})
		wantAPIError(t, err, 400, "InvalidParameterValueException", "")
	})

	t.Run("Permissions", func(t *testing.T) {
		mustCreate(t, c, "perm", nil)
		_, err := c.GetPolicy(ctx(t), &lambda.GetPolicyInput{FunctionName: aws.String("perm")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		ap, err := c.AddPermission(ctx(t), &lambda.AddPermissionInput{FunctionName: aws.String("perm"), StatementId: aws.String("s3-invoke"),
			Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("s3.amazonaws.com"), SourceAccount: aws.String(devAcct)})
		if err != nil {
			t.Fatal(err)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(aws.ToString(ap.Statement)), &st); err != nil {
			t.Fatalf("Statement %q: %v", aws.ToString(ap.Statement), err)
		}
		if st["Sid"] != "s3-invoke" || st["Resource"] != fnArn(devAcct, "perm") || st["Effect"] != "Allow" ||
			st["Principal"].(map[string]any)["Service"] != "s3.amazonaws.com" {
			t.Errorf("Statement: %v", st)
		}
		_, err = c.AddPermission(ctx(t), &lambda.AddPermissionInput{FunctionName: aws.String("perm"), StatementId: aws.String("s3-invoke"),
			Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("sns.amazonaws.com")})
		wantAPIError(t, err, 409, "ResourceConflictException", "s3-invoke")
		gp, err := c.GetPolicy(ctx(t), &lambda.GetPolicyInput{FunctionName: aws.String("perm")})
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Version   string
			Statement []map[string]any
		}
		if err := json.Unmarshal([]byte(aws.ToString(gp.Policy)), &doc); err != nil || doc.Version != "2012-10-17" || len(doc.Statement) != 1 || doc.Statement[0]["Sid"] != "s3-invoke" {
			t.Errorf("Policy %q: %v", aws.ToString(gp.Policy), err)
		}
		if aws.ToString(gp.RevisionId) == "" {
			t.Errorf("GetPolicy without RevisionId")
		}
		_, err = c.RemovePermission(ctx(t), &lambda.RemovePermissionInput{FunctionName: aws.String("perm"), StatementId: aws.String("other")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
		if _, err := c.RemovePermission(ctx(t), &lambda.RemovePermissionInput{FunctionName: aws.String("perm"), StatementId: aws.String("s3-invoke")}); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetPolicy(ctx(t), &lambda.GetPolicyInput{FunctionName: aws.String("perm")})
		wantAPIError(t, err, 404, "ResourceNotFoundException", "")
	})
}

// TestAccountSettings follows usage through creates, versions, layers and
// deletes in an account of its own.
func TestAccountSettings(t *testing.T) {
	s := start(t)
	c := s.A()
	usage := func() (int64, int64) {
		t.Helper()
		out, err := c.GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{})
		if err != nil {
			t.Fatal(err)
		}
		if out.AccountLimit.CodeSizeZipped != 52428800 || out.AccountLimit.CodeSizeUnzipped != 262144000 || out.AccountLimit.ConcurrentExecutions != 1000 {
			t.Errorf("limits %+v", out.AccountLimit)
		}
		return out.AccountUsage.FunctionCount, out.AccountUsage.TotalCodeSize
	}
	want := func(step string, count, size int64) {
		t.Helper()
		if n, sz := usage(); n != count || sz != size {
			t.Errorf("%s: FunctionCount %d TotalCodeSize %d, want %d %d", step, n, sz, count, size)
		}
	}
	want("empty", 0, 0)
	z1, z2, lz := codeZip(t, "one"), codeZip(t, "second function, longer"), codeZip(t, "a layer of some size")
	mustCreate(t, c, "one", z1)
	want("one function", 1, int64(len(z1)))
	mustCreate(t, c, "two", z2)
	want("two functions", 2, int64(len(z1)+len(z2)))
	mustPublish(t, c, "one")
	want("a version", 2, int64(2*len(z1)+len(z2)))
	if _, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("l"), Content: &types.LayerVersionContentInput{ZipFile: lz}}); err != nil {
		t.Fatal(err)
	}
	want("a layer", 2, int64(2*len(z1)+len(z2)+len(lz)))
	if _, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("one"), Qualifier: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	want("version deleted", 2, int64(len(z1)+len(z2)+len(lz)))
	if _, err := c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("one")}); err != nil {
		t.Fatal(err)
	}
	want("function deleted", 1, int64(len(z2)+len(lz)))
	if _, err := c.DeleteLayerVersion(ctx(t), &lambda.DeleteLayerVersionInput{LayerName: aws.String("l"), VersionNumber: aws.Int64(1)}); err != nil {
		t.Fatal(err)
	}
	want("layer deleted", 1, int64(len(z2)))
	// Another account's usage is its own.
	other, err := s.B().GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{})
	if err != nil || other.AccountUsage.FunctionCount != 0 || other.AccountUsage.TotalCodeSize != 0 {
		t.Errorf("account B: %+v %v", other.AccountUsage, err)
	}
}

func configOf(c *lambda.GetFunctionConfigurationOutput) *types.FunctionConfiguration {
	return &types.FunctionConfiguration{
		Architectures: c.Architectures, CodeSha256: c.CodeSha256, CodeSize: c.CodeSize, DeadLetterConfig: c.DeadLetterConfig,
		Description: c.Description, Environment: c.Environment, EphemeralStorage: c.EphemeralStorage, FunctionArn: c.FunctionArn,
		FunctionName: c.FunctionName, Handler: c.Handler, KMSKeyArn: c.KMSKeyArn, LastModified: c.LastModified,
		LastUpdateStatus: c.LastUpdateStatus, LastUpdateStatusReason: c.LastUpdateStatusReason, LastUpdateStatusReasonCode: c.LastUpdateStatusReasonCode,
		Layers: c.Layers, LoggingConfig: c.LoggingConfig, MemorySize: c.MemorySize, PackageType: c.PackageType, RevisionId: c.RevisionId,
		Role: c.Role, Runtime: c.Runtime, RuntimeVersionConfig: c.RuntimeVersionConfig, SnapStart: c.SnapStart, State: c.State,
		StateReason: c.StateReason, StateReasonCode: c.StateReasonCode, Timeout: c.Timeout, TracingConfig: c.TracingConfig, Version: c.Version,
	}
}

func versionList(vs []types.FunctionConfiguration) []string {
	var out []string
	for _, v := range vs {
		out = append(out, aws.ToString(v.Version))
	}
	return out
}

func layerVersionNumbers(ls []types.LayerVersionsListItem) []int64 {
	var out []int64
	for _, l := range ls {
		out = append(out, l.Version)
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func download(t testing.TB, loc string) []byte {
	t.Helper()
	resp, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Errorf("download %s: %d %s", loc, resp.StatusCode, b)
	}
	return b
}
