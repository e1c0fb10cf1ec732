package server_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// parallel runs f(0..n-1) at once and returns their errors.
func parallel(n int, f func(i int) error) []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestConcurrentWrites sends racing requests: every answered write must be
// kept, and no rule may be broken by two requests that each looked fine alone.
func TestConcurrentWrites(t *testing.T) {
	s := start(t)
	c := s.Dev()

	t.Run("ReservedConcurrencyNeverOvercommits", func(t *testing.T) {
		const n = 10
		for i := range n {
			mustCreate(t, c, fmt.Sprintf("res%d", i), nil)
		}
		for round := range 5 {
			errs := parallel(n, func(i int) error {
				_, err := c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{
					FunctionName: aws.String(fmt.Sprintf("res%d", i)), ReservedConcurrentExecutions: aws.Int32(150)})
				return err
			})
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
				} else {
					wantAPIError(t, err, 400, "InvalidParameterValueException", "")
				}
			}
			as, err := c.GetAccountSettings(ctx(t), &lambda.GetAccountSettingsInput{})
			if err != nil {
				t.Fatal(err)
			}
			// 6 × 150 leaves 100 unreserved; a 7th would leave -50.
			if unreserved := aws.ToInt32(as.AccountLimit.UnreservedConcurrentExecutions); ok != 6 || unreserved != 100 {
				t.Errorf("round %d: %d reservations of 150 accepted, %d unreserved", round, ok, unreserved)
			}
			for i := range n {
				if _, err := c.DeleteFunctionConcurrency(ctx(t), &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String(fmt.Sprintf("res%d", i))}); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("RacingCreatesKeepTheWinnersVersion", func(t *testing.T) {
		for round := range 40 {
			name := fmt.Sprintf("race%d", round)
			zips := make([][]byte, 4)
			for i := range zips {
				zips[i] = codeZip(t, fmt.Sprintf("%s by %d", name, i))
			}
			winner := -1
			errs := parallel(len(zips), func(i int) error {
				_, err := c.CreateFunction(ctx(t), createInput(t, name, zips[i], func(in *lambda.CreateFunctionInput) { in.Publish = true }))
				return err
			})
			for i, err := range errs {
				if err == nil {
					if winner >= 0 {
						t.Fatalf("%s: two creates succeeded", name)
					}
					winner = i
				} else {
					wantAPIError(t, err, 409, "ResourceConflictException", "Function already exist: "+name)
				}
			}
			if winner < 0 {
				t.Fatalf("%s: no create succeeded: %v", name, errs)
			}
			vs, err := c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String(name)})
			if err != nil {
				t.Fatal(err)
			}
			if got := versionList(vs.Versions); !slices.Equal(got, []string{"$LATEST", "1"}) || aws.ToString(vs.Versions[1].CodeSha256) != sha64(zips[winner]) {
				t.Fatalf("%s: versions %v after racing creates with Publish", name, got)
			}
		}
	})

	t.Run("MergedWrites", func(t *testing.T) {
		mustCreate(t, c, "busy", nil)
		const n = 20
		errs := parallel(n, func(i int) error {
			_, err := c.TagResource(ctx(t), &lambda.TagResourceInput{Resource: aws.String(fnArn(devAcct, "busy")), Tags: map[string]string{fmt.Sprintf("k%d", i): "v"}})
			return err
		})
		errs = append(errs, parallel(n, func(i int) error {
			_, err := c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("busy"), Name: aws.String(fmt.Sprintf("a%d", i)), FunctionVersion: aws.String("$LATEST")})
			return err
		})...)
		var mu sync.Mutex
		var layerVersions []int64
		errs = append(errs, parallel(n, func(i int) error {
			out, err := c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("busy-layer"),
				Content: &types.LayerVersionContentInput{ZipFile: codeZip(t, fmt.Sprint(i))}})
			if err == nil {
				mu.Lock()
				layerVersions = append(layerVersions, out.Version)
				mu.Unlock()
			}
			return err
		})...)
		for _, err := range errs {
			if err != nil {
				t.Errorf("racing write refused: %v", err)
			}
		}
		tags, err := c.ListTags(ctx(t), &lambda.ListTagsInput{Resource: aws.String(fnArn(devAcct, "busy"))})
		if err != nil || len(tags.Tags) != n {
			t.Errorf("%d tags kept of %d: %v", len(tags.Tags), n, err)
		}
		al, err := c.ListAliases(ctx(t), &lambda.ListAliasesInput{FunctionName: aws.String("busy")})
		if err != nil || len(al.Aliases) != n {
			t.Errorf("%d aliases kept of %d: %v", len(al.Aliases), n, err)
		}
		slices.Sort(layerVersions)
		for i, v := range layerVersions {
			if v != int64(i+1) {
				t.Fatalf("layer versions %v", layerVersions)
			}
		}

		// Racing publishes of one unchanged $LATEST make one version.
		var versions []string
		perrs := parallel(8, func(int) error {
			out, err := c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("busy")})
			if err == nil {
				mu.Lock()
				versions = append(versions, aws.ToString(out.Version))
				mu.Unlock()
			}
			return err
		})
		for _, err := range perrs {
			if err != nil {
				t.Errorf("PublishVersion: %v", err)
			}
		}
		vs, err := c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("busy")})
		if err != nil || !slices.Equal(versionList(vs.Versions), []string{"$LATEST", "1"}) || slices.IndexFunc(versions, func(v string) bool { return v != "1" }) >= 0 {
			t.Errorf("racing publishes: answered %v, versions %v", versions, versionList(vs.Versions))
		}
	})
}
