package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []bool{false, true} {
		l, err := startLeastCold(self, payload100(), pinned)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.stop)
		for i := 0; i < 3; i++ {
			d, out, err := l.sample(context.Background())
			if pinned && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
				t.Skipf("this kernel refuses to set a thread as nubo sets a sandbox: %v", err)
			}
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
		left := l.cur
		l.mu.Unlock()
		if left != nil {
			t.Fatalf("pinned=%v: sample %s still registered", pinned, left.id)
		}
	}
}

func TestLeastColdRefusesUnknownRequestID(t *testing.T) {
	l, err := startLeastCold("/nonexistent", payload100(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.stop)
	r, err := http.Post("http://"+l.addr+"/2018-06-01/runtime/invocation/nope/response", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", r.StatusCode)
	}
}

// A /next on a connection made before a sample began (as a killed
// runtime's is), even one that arrives while the sample runs, gets no
// event: the sample's own runtime does.
func TestLeastColdStaleNextGetsNothing(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l, err := startLeastCold(self, payload100(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.stop)
	c, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One exchange first, so the server has surely accepted the
	// connection (and tagged it) before the sample begins.
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	answered := make(chan string, 1)
	go func() {
		// Once the sample is running, and long before its runtime is up.
		for {
			l.mu.Lock()
			running := l.cur != nil
			l.mu.Unlock()
			if running {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		fmt.Fprintf(c, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := br.ReadString('\n')
		answered <- line
	}()
	_, out, err := l.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, payload100()) {
		t.Fatalf("response %q, want the event", out)
	}
	if line := <-answered; line != "" {
		t.Fatalf("a /next on a connection from before the sample got %q", line)
	}
}
