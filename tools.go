//go:build tools

package nubo

// Modules only the test functions import: they live in testdata/ trees,
// which `go mod tidy` does not scan, and are built by the tests with
// `go build` inside this module.
import (
	_ "github.com/aws/aws-lambda-go/lambda"
	_ "github.com/aws/aws-lambda-go/lambdacontext"
)
