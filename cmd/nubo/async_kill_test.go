package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
)

// TestAsyncKill9: 1000 events queued against a slow function, nubo killed
// with SIGKILL a third of the way through and restarted on the same data
// dir. Every accepted event runs at least once; the duplicates (runs cut
// short by the kill, redelivered) are few, and all of them counted in
// nubo_async_redeliveries_total.
func TestAsyncKill9(t *testing.T) {
	const (
		events  = 1000
		workers = 4
	)
	data, rec := t.TempDir(), t.TempDir()
	zip := asyncTestFunction(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// The process backend lets the function append to a file on the host.
	args := []string{"--data-dir", data, "--isolation", "process", "--async-workers", strconv.Itoa(workers),
		"--metrics-listen", metrics}
	p := startNubo(t, args...)
	c := p.client()
	// The tag finds function processes that would outlive their nubo.
	tag := "NUBO_KILL9_TEST=" + filepath.Base(rec)
	k, v, _ := strings.Cut(tag, "=")
	create(t, c, "slow", zip, func(in *lambda.CreateFunctionInput) {
		in.Timeout = aws.Int32(30)
		in.Environment = &types.Environment{Variables: map[string]string{"RECORD_DIR": rec, k: v}}
	})
	settled(t, c, "slow")

	// Accept all events, a few senders at a time.
	start := time.Now()
	var mu sync.Mutex
	accepted := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, events)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out, err := c.Invoke(ctx(t), &lambda.InvokeInput{FunctionName: aws.String("slow"), InvocationType: types.InvocationTypeEvent,
					Payload: fmt.Appendf(nil, `{"op":"sleep","ms":20,"i":%d}`, i)})
				if err != nil {
					errs <- err
					continue
				}
				id, _ := awsmw.GetRequestIDMetadata(out.ResultMetadata)
				if out.StatusCode != http.StatusAccepted || id == "" {
					errs <- fmt.Errorf("event %d: status %d, request id %q", i, out.StatusCode, id)
					continue
				}
				mu.Lock()
				accepted[id] = true
				mu.Unlock()
			}
		}()
	}
	for i := range events {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Event invoke: %v", err)
	}
	t.Logf("%d events accepted in %v", len(accepted), time.Since(start))

	// Kill -9 once about a third has run.
	deadline := time.Now().Add(30 * time.Second)
	for len(distinct(t, rec)) < events/3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 10*time.Second)
	before := distinct(t, rec)
	t.Logf("killed after %v with %d of %d run", time.Since(start), len(before), events)
	if len(before) == events || len(before) == 0 {
		t.Fatalf("%d of %d events had run at the kill: nothing was in flight", len(before), events)
	}
	waitGone(t, tag, 5*time.Second)

	// Same data dir: the rest run, and what was in flight is redelivered
	// once its ack deadline passes.
	p = startNubo(t, args...)
	var st struct {
		QueueDepth uint64 `json:"queueDepth"`
	}
	deadline = time.Now().Add(75 * time.Second)
	for {
		st.QueueDepth = ^uint64(0)
		eventsCLI(t, p, &st, "stats", "slow")
		if st.QueueDepth == 0 && len(distinct(t, rec)) >= events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: queue depth %d, %d of %d events run", st.QueueDepth, len(distinct(t, rec)), events)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("queue empty %v after the start", time.Since(start))

	runs := distinct(t, rec)
	total := 0
	for id, n := range runs {
		if !accepted[id] {
			t.Errorf("a run of %s, which nobody sent", id)
		}
		total += n
	}
	for id := range accepted {
		if runs[id] == 0 {
			t.Errorf("event %s was accepted and never ran", id)
		}
	}
	dups := total - events
	redelivered := scrapeCounter(t, metrics, "nubo_async_redeliveries_total")
	t.Logf("%d runs for %d events: %d duplicates, %v redeliveries counted", total, events, dups, redelivered)
	// Every run is marked durably before it starts, so each duplicate is
	// counted (a counted redelivery whose first run never reached the
	// function is no duplicate: the count may be higher).
	if float64(dups) > redelivered {
		t.Errorf("%d duplicates but only %v redeliveries counted", dups, redelivered)
	}
	if dups > 4*workers {
		t.Errorf("%d duplicates with %d workers", dups, workers)
	}
	var failed struct{ Failed []json.RawMessage }
	eventsCLI(t, p, &failed, "failed", "--endpoint", "http://"+p.addr, "slow") // flags first works too
	if len(failed.Failed) != 0 {
		t.Errorf("dead letters after the restart: %s", failed.Failed)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit %d:\n%s", code, p.stderr())
	}
	waitGone(t, tag, 5*time.Second)
}

// asyncTestFunction builds the async tests' aws-lambda-go function (it
// records each run to RECORD_DIR) and zips it.
func asyncTestFunction(t *testing.T) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-o", out, "../../internal/async/testdata/fn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: bin, Mode: 0o755})
}

// distinct counts the runs the function recorded, by request id.
func distinct(t *testing.T, rec string) map[string]int {
	t.Helper()
	out := map[string]int{}
	f, err := os.Open(filepath.Join(rec, "slow.jsonl"))
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct{ Phase, RequestID string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Phase == "start" {
			out[l.RequestID]++
		}
	}
	return out
}

// eventsCLI runs `nubo events CMD FUNCTION` against p and decodes its output.
func eventsCLI(t *testing.T, p *proc, v any, cmdArgs ...string) {
	t.Helper()
	cmd := exec.Command(binary, append(append([]string{"events"}, cmdArgs...), "--endpoint", "http://"+p.addr)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nubo events %v: %v\n%s", cmdArgs, err, stderr.Bytes())
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("nubo events %v: %v\n%s", cmdArgs, err, out)
	}
}

func scrapeCounter(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}

// waitGone waits until no process carries tag in its environment: function
// processes must die with the nubo that ran them.
func waitGone(t *testing.T, tag string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var left []string
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
			if err == nil && bytes.Contains(env, []byte(tag+"\x00")) {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("function processes outlived nubo: pids %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
