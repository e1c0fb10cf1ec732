// Command echo is the function every latency figure of nubo-bench runs: an
// unmodified aws-lambda-go handler that returns the event it was given, so
// the figures measure the platform and not the function. The same binary is
// the bootstrap of nubo's provided.al2023 function and of the Runtime
// Interface Emulator, which makes the two directly comparable.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func echo(_ context.Context, event json.RawMessage) (json.RawMessage, error) {
	return event, nil
}

func main() {
	lambda.Start(echo)
}
