package invoke_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/nubo-dev/nubo/internal/server"
)

// TestColdStartPhaseMetrics: a cold start is exported phase by phase as
// the histogram nubo_cold_start_phase_seconds; a warm invoke adds nothing.
func TestColdStartPhaseMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(c *server.Config) { c.MetricsListen = addr })
	h.create(t, "phases", nil)
	h.invokeOK(t, "phases", []byte(`{"op":"echo"}`))
	h.invokeOK(t, "phases", []byte(`{"op":"echo"}`))
	// The init's report (agent_ready, init, start) follows the first
	// answer (env.StartInvoke): poll until it has been observed.
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		seen := 0
		for _, late := range []string{"agent_ready", "init", "start"} {
			if bytes.Contains(body, []byte(`nubo_cold_start_phase_seconds_count{phase="`+late+`"}`)) {
				seen++
			}
		}
		if seen == 3 || time.Now().After(deadline) {
			break
		}
	}
	for _, phase := range []string{"code", "sandbox", "agent_ready", "init", "first_invoke", "start"} {
		m := regexp.MustCompile(`nubo_cold_start_phase_seconds_count\{phase="` + phase + `"\} (\d+)`).FindSubmatch(body)
		if m == nil {
			t.Errorf("no %s phase in /metrics", phase)
			continue
		}
		if n, _ := strconv.Atoi(string(m[1])); n != 1 {
			t.Errorf("phase %s counted %d times for one cold start", phase, n)
		}
		sum := regexp.MustCompile(`nubo_cold_start_phase_seconds_sum\{phase="` + phase + `"\} (\S+)`).FindSubmatch(body)
		if v, err := strconv.ParseFloat(string(sum[1]), 64); err != nil || v <= 0 || v > 30 {
			t.Errorf("phase %s took %s s", phase, sum[1])
		}
	}
}

// TestCodeUnpackedAtCreate: creating a function unpacks its code on the
// node at once, so its first cold start does not.
func TestCodeUnpackedAtCreate(t *testing.T) {
	h := newHarness(t)
	out := h.create(t, "prefetched", nil)
	sum, err := base64.StdEncoding.DecodeString(aws.ToString(out.CodeSha256))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.s.DataDir, "code", "code", hex.EncodeToString(sum))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "bootstrap")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not unpacked 10 s after CreateFunction", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTailAlwaysHoldsOutput: what the function printed before returning is
// in its own invocation's log tail every time, not now and then in the
// next one (the agent once sent the Result while a relay held the last
// chunk it had read but not yet forwarded).
func TestTailAlwaysHoldsOutput(t *testing.T) {
	h := newHarness(t)
	h.create(t, "tailrace", nil)
	missed := 0
	for i := range 300 {
		msg := "line-" + strconv.Itoa(i)
		r := h.invokeOK(t, "tailrace", []byte(`{"op":"print","msg":"`+msg+`"}`), tail)
		b, err := base64.StdEncoding.DecodeString(aws.ToString(r.LogResult))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), msg+"\n") {
			missed++
			if missed <= 3 {
				t.Errorf("invocation %d: tail lacks %q:\n%s", i, msg, b)
			}
		}
	}
	if missed > 0 {
		t.Errorf("%d of 300 tails lacked the function's output", missed)
	}
}
