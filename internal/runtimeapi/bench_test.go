package runtimeapi

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/rawio"
)

// BenchmarkInvoke measures the Runtime API's side of a warm invocation: an
// event handed to a real aws-lambda-go runtime (testdata/fn, in a process
// of its own) through /next, and its answer read from /response. The CPU
// this process uses per iteration is the server's alone:
//
//	go test -run '^$' -bench Invoke -cpuprofile cpu.out ./internal/runtimeapi
func BenchmarkInvoke(b *testing.B) {
	s := New(Options{FunctionName: "fn"})
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Listener = rawio.Listener{Listener: srv.Listener} // as the agent serves it
	srv.Start()
	defer srv.Close()
	cmd := exec.Command(fnBinary(b))
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + srv.Listener.Addr().String(), "AWS_LAMBDA_FUNCTION_NAME=fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128", "_HANDLER=echo", "PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := s.WaitInit(ctx); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"key":"` + string(bytes.Repeat([]byte("x"), 88)) + `"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		res, err := s.Invoke(ctx, &Invocation{RequestID: "req-" + strconv.Itoa(i), Payload: payload,
			InvokedFunctionARN: "arn:aws:lambda:us-east-1:000000000000:function:fn"})
		if err != nil {
			b.Fatalf("invoke %d: %v", i, err)
		}
		if !bytes.Equal(res.Payload, payload) {
			b.Fatalf("invoke %d: answered %q", i, res.Payload)
		}
		if err := s.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
