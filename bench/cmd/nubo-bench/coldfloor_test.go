package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for a runtime: started by
// leastCold (which names the function least-cold), it takes one
// invocation from the Runtime API and echoes it, as the echo bootstrap
// does.
func TestMain(m *testing.M) {
	if os.Getenv("AWS_LAMBDA_FUNCTION_NAME") == "least-cold" && os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		os.Exit(fakeRuntime(os.Getenv("AWS_LAMBDA_RUNTIME_API")))
	}
	os.Exit(m.Run())
}

func fakeRuntime(api string) int {
	base := "http://" + api + "/2018-06-01/runtime/invocation/"
	resp, err := http.Get(base + "next")
	if err != nil {
		return 2
	}
	event, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
	if err != nil || id == "" {
		return 3
	}
	r, err := http.Post(base+id+"/response", "application/json", bytes.NewReader(event))
	if err != nil {
		return 4
	}
	r.Body.Close()
	if r.StatusCode != http.StatusAccepted {
		return 5
	}
	// Then waits for the next invocation, as a runtime does, until killed.
	if resp, err := http.Get(base + "next"); err == nil {
		resp.Body.Close()
	}
	return 0
}

func TestLeastColdEchoesFirstInvocation(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		l, err := startLeastCold(os.Args[0], payload100(), pinned)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			d, out, err := l.sample(context.Background())
			if err != nil {
				t.Fatalf("pinned=%v sample %d: %v", pinned, i, err)
			}
			if !bytes.Equal(out, payload100()) {
				t.Fatalf("pinned=%v sample %d: response %q, want the event", pinned, i, out)
			}
			if d <= 0 {
				t.Fatalf("pinned=%v sample %d: duration %v", pinned, i, d)
			}
		}
		l.mu.Lock()
		left := len(l.samples)
		l.mu.Unlock()
		if left != 0 {
			t.Fatalf("pinned=%v: %d samples still registered", pinned, left)
		}
		l.stop()
	}
}

func TestLeastColdRefusesUnknownRequestID(t *testing.T) {
	l, err := startLeastCold(os.Args[0], payload100(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	r, err := http.Post("http://"+l.addr+"/2018-06-01/runtime/invocation/nope/response", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", r.StatusCode)
	}
}
