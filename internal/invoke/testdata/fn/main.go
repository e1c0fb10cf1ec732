// Command fn is the multi-purpose aws-lambda-go function of the invoke
// end-to-end tests. It dispatches on the event's "op" and answers with what
// the tests assert on; "echo" returns the payload bytes untouched, which is
// why it implements lambda.Handler instead of a typed handler (a typed
// handler would re-encode the JSON).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// version tells deployments of the same binary apart: the tests add a
// version.txt beside the bootstrap in each zip they want to be distinct.
var version = readVersion()

func readVersion() string {
	b, err := os.ReadFile(filepath.Join(os.Getenv("LAMBDA_TASK_ROOT"), "version.txt"))
	if err != nil {
		return "v0"
	}
	return strings.TrimSpace(string(b))
}

// invocations counts the invocations this process served; it restarts with
// the runtime process.
var invocations int

type event struct {
	Op    string `json:"op"`
	Ms    int    `json:"ms"`
	Code  int    `json:"code"`
	N     int    `json:"n"`
	Msg   string `json:"msg"`
	Write string `json:"write"`
	Path  string `json:"path"`
	// Addr is where "dial" connects (host:port).
	Addr string `json:"addr"`
	// RawPath is set in a function URL's event (payload format 2.0).
	RawPath string `json:"rawPath"`
}

type handler struct{}

func tmpFile() string { return filepath.Join(os.TempDir(), "fn-marker") }

func (handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	invocations++
	var ev event
	_ = json.Unmarshal(payload, &ev)
	lc, _ := lambdacontext.FromContext(ctx)
	fmt.Printf("fn %s op=%s request=%s\n", version, ev.Op, lc.AwsRequestID)
	if ev.RawPath != "" {
		return urlAnswer(ev.RawPath, payload)
	}
	switch ev.Op {
	case "echo":
		return payload, nil
	case "error":
		return nil, errors.New(ev.Msg)
	case "panic":
		panic(ev.Msg)
	case "sleep":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
		return state(), nil
	case "exit":
		os.Exit(ev.Code)
	case "env":
		m := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		return json.Marshal(m)
	case "context":
		dl, _ := ctx.Deadline()
		return json.Marshal(map[string]any{
			"requestId": lc.AwsRequestID, "invokedArn": lc.InvokedFunctionArn, "deadlineMs": dl.UnixMilli(),
			"clientContext": lc.ClientContext, "functionName": lambdacontext.FunctionName,
			"functionVersion": lambdacontext.FunctionVersion, "memory": lambdacontext.MemoryLimitInMB,
			"logGroup": lambdacontext.LogGroupName, "logStream": lambdacontext.LogStreamName,
			"traceId": os.Getenv("_X_AMZN_TRACE_ID"),
		})
	case "tmp":
		if ev.Write != "" {
			if err := os.WriteFile(tmpFile(), []byte(ev.Write), 0o600); err != nil {
				return nil, err
			}
		}
		return state(), nil
	case "count":
		return state(), nil
	case "readfile":
		b, err := os.ReadFile(filepath.Join(os.TempDir(), ev.Path))
		if err != nil {
			return nil, err
		}
		return json.Marshal(string(b))
	case "big":
		b := make([]byte, ev.N+2)
		for i := range b {
			b[i] = 'a'
		}
		b[0], b[len(b)-1] = '"', '"'
		return b, nil
	case "print":
		fmt.Println(ev.Msg)
		return state(), nil
	case "dial":
		// Connects to Addr and answers the first line the server sends.
		c, err := net.DialTimeout("tcp", ev.Addr, time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return nil, err
		}
		return json.Marshal(strings.TrimSpace(line))
	}
	return nil, fmt.Errorf("unknown op %q", ev.Op)
}

// state is what several ops answer: enough to tell environments, runtime
// processes and deployments apart.
func state() []byte {
	tmp, _ := os.ReadFile(tmpFile())
	b, _ := json.Marshal(map[string]any{
		"count": invocations, "stream": lambdacontext.LogStreamName, "tmp": string(tmp),
		"version": version, "pid": os.Getpid(),
	})
	return b
}

func main() {
	// FN_INIT_SLEEP_MS makes the init phase take that long.
	if ms, err := strconv.Atoi(os.Getenv("FN_INIT_SLEEP_MS")); err == nil {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	lambda.Start(handler{})
}

// urlAnswer answers a function URL request by its path: /event gives the
// event back in a structured response (status 201, a header, a cookie);
// /plain a bare JSON value; /binary a base64 body; /fail an error.
func urlAnswer(path string, event []byte) ([]byte, error) {
	switch {
	case strings.HasPrefix(path, "/event"):
		return json.Marshal(map[string]any{
			"statusCode": 201, "headers": map[string]string{"content-type": "application/json", "x-fn": "yes"},
			"cookies": []string{"session=abc; Path=/"}, "body": string(event),
		})
	case path == "/plain":
		return []byte(`{"plain":true}`), nil
	case path == "/binary":
		return json.Marshal(map[string]any{"statusCode": 200, "isBase64Encoded": true,
			"headers": map[string]string{"content-type": "application/octet-stream"}, "body": "AAEC/w=="})
	}
	return nil, fmt.Errorf("url path %s fails", path)
}
