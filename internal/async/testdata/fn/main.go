// Command fn is the aws-lambda-go function of the async tests. When its
// configuration sets RECORD_DIR, every invocation appends one JSON line to
// RECORD_DIR/<function name>.jsonl before doing anything else, so a test on
// the "process" backend can count runs exactly, see when they started and
// ended, and read the payloads destinations received.
//
// Ops (the event's "op"): "ok" answers {"ok":true,"echo":<event>}; "fail"
// returns an error unless the file "unless" exists; "sleep" sleeps "ms"
// milliseconds (longer than the timeout makes a timeout); "big" answers
// about "n" bytes. Any other event, such as an invocation record, is
// answered like "ok".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Op     string `json:"op"`
	Ms     int    `json:"ms"`
	Unless string `json:"unless"`
	N      int    `json:"n"`
}

// line is one recorded run.
type line struct {
	Phase      string          `json:"phase"` // "start" or "end"
	RequestID  string          `json:"requestId"`
	InvokedARN string          `json:"invokedArn"`
	Version    string          `json:"version"`
	UnixNano   int64           `json:"unixNano"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

var version = func() string {
	b, err := os.ReadFile(filepath.Join(os.Getenv("LAMBDA_TASK_ROOT"), "version.txt"))
	if err != nil {
		return "v0"
	}
	return strings.TrimSpace(string(b))
}()

// record appends one line with a single write: O_APPEND keeps concurrent
// writers (several environments of one function) from interleaving.
func record(l line) {
	dir := os.Getenv("RECORD_DIR")
	if dir == "" {
		return
	}
	l.Version, l.UnixNano = version, time.Now().UnixNano()
	b, _ := json.Marshal(l)
	f, err := os.OpenFile(filepath.Join(dir, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")+".jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	f.Write(append(b, '\n'))
	f.Close()
}

type handler struct{}

func (handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	base := line{RequestID: lc.AwsRequestID, InvokedARN: lc.InvokedFunctionArn}
	start := base
	start.Phase, start.Payload = "start", payload
	record(start)
	end := base
	end.Phase = "end"
	defer record(end)

	var ev event
	_ = json.Unmarshal(payload, &ev)
	switch ev.Op {
	case "fail":
		if ev.Unless != "" {
			if _, err := os.Stat(ev.Unless); err == nil {
				break
			}
		}
		return nil, errors.New("boom")
	case "sleep":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
	case "big":
		return json.Marshal(map[string]string{"pad": strings.Repeat("y", ev.N)})
	}
	return json.Marshal(map[string]any{"ok": true, "echo": json.RawMessage(payload)})
}

func main() { lambda.Start(handler{}) }
