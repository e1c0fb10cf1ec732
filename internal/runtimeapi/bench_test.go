package runtimeapi

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkInvoke measures the Runtime API's side of a warm invocation: an
// event handed to a real aws-lambda-go runtime (testdata/fn, in a process
// of its own) through /next, and its answer read from /response. The CPU
// this process uses per iteration is the server's alone:
//
//	go test -run '^$' -bench Invoke -cpuprofile cpu.out ./internal/runtimeapi
func BenchmarkInvoke(b *testing.B) {
	s := New(Options{FunctionName: "fn"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	go s.Serve(sctx, l) // as the agent serves it
	cmd := exec.Command(fnBinary(b))
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + l.Addr().String(), "AWS_LAMBDA_FUNCTION_NAME=fn",
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
	cpu0, sw0 := processCPU()
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
	b.StopTimer()
	cpu1, sw1 := processCPU()
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(sw1-sw0)/float64(b.N), "switches/op")
}

// processCPU is the user and system CPU time this process has used, and
// the context switches of its threads.
func processCPU() (time.Duration, int64) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw
}
