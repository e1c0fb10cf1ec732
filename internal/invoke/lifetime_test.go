package invoke_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// TestIdleReapAndMaxLifetime: an environment idle longer than IdleTimeout
// is reaped, and one older than MaxLifetime retires, so the next invoke
// lands in a new environment (a new log stream, the counter from 1).
func TestIdleReapAndMaxLifetime(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		h := newHarness(t, func(c *server.Config) { c.IdleTimeout = 400 * time.Millisecond })
		h.create(t, "idle", nil)
		first := decodeState(t, h.invokeOK(t, "idle", op("count")))
		warm := decodeState(t, h.invokeOK(t, "idle", op("count")))
		if warm.Stream != first.Stream || warm.Count != 2 {
			t.Fatalf("second invoke right away should reuse the environment: %+v then %+v", first, warm)
		}
		time.Sleep(1500 * time.Millisecond)
		after := decodeState(t, h.invokeOK(t, "idle", op("count")))
		if after.Stream == first.Stream || after.Count != 1 {
			t.Fatalf("after the idle timeout a new environment should serve: %+v then %+v", first, after)
		}
	})
	t.Run("lifetime", func(t *testing.T) {
		h := newHarness(t, func(c *server.Config) { c.MaxLifetime = 700 * time.Millisecond })
		h.create(t, "aged", nil)
		first := decodeState(t, h.invokeOK(t, "aged", op("count")))
		// Kept busy with invocations, it still retires once it is too old.
		var last fnState
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			last = decodeState(t, h.invokeOK(t, "aged", op("count")))
			if last.Stream != first.Stream {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if last.Stream == first.Stream {
			t.Fatalf("environment %s still serving after its maximum lifetime", first.Stream)
		}
		if last.Count != 1 {
			t.Fatalf("the replacement should start fresh: %+v", last)
		}
	})
}

// TestNoNetwork: a function configured with nubo's "NuboNetwork": "none"
// has only loopback, while a default one has eth0 (namespace backend).
func TestNoNetwork(t *testing.T) {
	if os.Getenv("NUBO_TEST_ISOLATION") == "process" {
		t.Skip("the process backend has no network namespaces")
	}
	testutil.RequiresRoot(t)
	h := newHarness(t)
	read := []byte(`{"op":"readfile","path":"../proc/net/dev"}`)
	h.create(t, "netdefault", nil)
	h.create(t, "netnone", nil)
	resp, err := h.signedRequest(t, "PUT", "/2015-03-31/functions/netnone/configuration", []byte(`{"NuboNetwork":"none"}`), nil, nil)
	if err != nil || resp.Status != 200 || !strings.Contains(string(resp.Body), `"NuboNetwork":"none"`) {
		t.Fatalf("set NuboNetwork: %v %+v", err, resp)
	}
	h.waitUpdated(t, "netnone")
	def := string(h.invokeOK(t, "netdefault", read).Payload)
	none := string(h.invokeOK(t, "netnone", read).Payload)
	if !strings.Contains(def, "eth0:") || !strings.Contains(def, "lo:") {
		t.Fatalf("default network should have lo and eth0: %s", def)
	}
	if strings.Contains(none, "eth0:") || !strings.Contains(none, "lo:") {
		t.Fatalf("NuboNetwork none should have loopback only: %s", none)
	}
}

// TestHostPorts: with --host-ports, a function reaches a service on the
// host by the name host.nubo.internal (its /etc/hosts), at those ports
// only.
func TestHostPorts(t *testing.T) {
	if os.Getenv("NUBO_TEST_ISOLATION") == "process" {
		t.Skip("the process backend has no network namespaces")
	}
	testutil.RequiresRoot(t)
	listen := func(greeting string) int {
		ln, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		testutil.Serve(t, ln, func(c net.Conn) { fmt.Fprintln(c, greeting) })
		return ln.Addr().(*net.TCPAddr).Port
	}
	open, closed := listen("hello from the host"), listen("should not be reached")
	h := newHarness(t, func(c *server.Config) { c.HostPorts = strconv.Itoa(open) })
	h.create(t, "hostdial", nil)
	dial := func(port int) *result {
		return h.invoke(t, "hostdial", []byte(fmt.Sprintf(`{"op":"dial","addr":"host.nubo.internal:%d"}`, port)))
	}
	if r := dial(open); r.FunctionError != nil || string(r.Payload) != `"hello from the host"` {
		t.Errorf("dial an opened host port: %s %s", aws.ToString(r.FunctionError), r.Payload)
	}
	if r := dial(closed); r.FunctionError == nil {
		t.Errorf("dial a host port not opened: reached (%s)", r.Payload)
	}
}

// TestInvalidEntrypoint: a package whose bootstrap is missing, not
// executable, a script with no valid interpreter, or a binary for another
// architecture fails with AWS's Runtime.InvalidEntrypoint, promptly.
func TestInvalidEntrypoint(t *testing.T) {
	h := newHarness(t)
	arm := append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 9)...)
	arm = append(arm, 0x02, 0x00, 0xb7, 0x00, 0x01, 0, 0, 0) // ET_EXEC, EM_AARCH64
	arm = append(arm, make([]byte, 40)...)
	cases := map[string][]ziptest.File{
		"missing":   {{Name: "other.txt", Body: []byte("x")}},
		"noexec":    {{Name: "bootstrap", Body: []byte("#!/bin/sh\necho hi\n"), Mode: 0o644}},
		"badinterp": {{Name: "bootstrap", Body: []byte("#!/nonexistent/interp\n"), Mode: 0o755}},
		"otherarch": {{Name: "bootstrap", Body: arm, Mode: 0o755}},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			fn := "entry-" + name
			h.create(t, fn, ziptest.Zip(t, files...))
			start := time.Now()
			r := h.invoke(t, fn, nil)
			if r.FunctionError == nil || *r.FunctionError != "Unhandled" {
				t.Fatalf("want Unhandled, got %v: %s", r.FunctionError, r.Payload)
			}
			if !strings.Contains(string(r.Payload), `"errorType":"Runtime.InvalidEntrypoint"`) {
				t.Fatalf("want Runtime.InvalidEntrypoint, got %s", r.Payload)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v: a broken entry point must fail fast", d)
			}
		})
	}
}

// TestNodeCapacity: with the node's memory for environments nearly full,
// an idle environment of another function is evicted to make room; when
// every environment is busy, the invocation is throttled.
func TestNodeCapacity(t *testing.T) {
	h := newHarness(t, func(c *server.Config) { c.CapacityMB = 300 })
	h.create(t, "small", nil)
	h.create(t, "large", nil, func(in *lambda.CreateFunctionInput) { in.MemorySize = aws.Int32(256) })
	first := decodeState(t, h.invokeOK(t, "small", op("count")))
	h.invokeOK(t, "large", op("count")) // evicts small's idle environment
	again := decodeState(t, h.invokeOK(t, "small", op("count")))
	if again.Stream == first.Stream {
		t.Fatalf("small's idle environment should have been evicted for large")
	}
	// Now small holds 128 MB; keep it busy and large cannot fit.
	done := make(chan error, 1)
	go func() {
		_, err := h.invokeErr(t, "small", []byte(`{"op":"sleep","ms":1500}`))
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	_, err := h.invokeErr(t, "large", op("count"))
	var tm *types.TooManyRequestsException
	if !errors.As(err, &tm) {
		t.Fatalf("large while small is busy: want TooManyRequestsException, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
