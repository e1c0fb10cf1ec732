package async_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/server/servertest"
)

const (
	devAcct = "000000000000"
	region  = "us-east-1"
	role    = "arn:aws:iam::000000000000:role/lambda-role"
)

var (
	workDir   string // removed by TestMain
	buildOnce sync.Once
	buildErr  error
	fnBin     []byte
)

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "nubo-async-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(workDir)
	if err := waitNoChildren(5 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: processes left behind:", err)
		code = 1
	}
	os.Exit(code)
}

// waitNoChildren waits until no process started by this test binary is
// alive: the process backend's agents are re-executions of it, and they
// start the functions' runtimes as their own children.
func waitNoChildren(wait time.Duration) error {
	self := os.Getpid()
	exe, _ := os.Executable()
	deadline := time.Now().Add(wait)
	for {
		var left []string
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			var ppid int
			var state string
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					state = f[0]
					ppid, _ = strconv.Atoi(f[1])
				}
			}
			l, _ := os.Readlink("/proc/" + e.Name() + "/exe")
			if (ppid == self || (exe != "" && l == exe)) && state != "Z" {
				left = append(left, fmt.Sprintf("pid %d (%s)", pid, l))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(strings.Join(left, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fnZip is testdata/fn (built once per run) as a deployment package;
// version distinguishes otherwise equal code.
func fnZip(t testing.TB, version string) []byte {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(workDir, "fn")
		cmd := exec.Command(goTool, "build", "-o", out, "./testdata/fn")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build testdata/fn: %v\n%s", err, b)
			return
		}
		fnBin, buildErr = os.ReadFile(out)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ziptest.Zip(t,
		ziptest.File{Name: "bootstrap", Body: fnBin, Mode: 0o755},
		ziptest.File{Name: "version.txt", Body: []byte(version + "\n")})
}

// harness is a running server on the process backend (functions can write
// to rec on the host) with a client of the development account.
type harness struct {
	s   *servertest.Server
	c   *lambda.Client
	rec string
	// metrics is the /metrics address, when asked for.
	metrics string
}

// opt adjusts the server a harness starts.
type opt func(h *harness, c *server.Config)

func scale(f float64) opt { return func(_ *harness, c *server.Config) { c.AsyncRetryScale = f } }

// withMetrics serves /metrics on a port picked here: the server only logs
// the address it bound.
func withMetrics(h *harness, c *server.Config) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	h.metrics = ln.Addr().String()
	ln.Close()
	c.MetricsListen = h.metrics
}

func newHarness(t *testing.T, opts ...opt) *harness {
	t.Helper()
	h := &harness{rec: t.TempDir()}
	h.s = servertest.Start(t, func(c *server.Config) {
		c.Isolation = "process"
		c.AsyncRetryScale = 0.005 // 1 min → 300 ms, 2 min → 600 ms
		c.AsyncWorkers = 4
		for _, o := range opts {
			o(h, c)
		}
	})
	h.c = h.s.Dev()
	return h
}

func ctx(t testing.TB) context.Context { return servertest.Ctx(t, 60*time.Second) }

func fnARN(name string) string {
	return "arn:aws:lambda:" + region + ":" + devAcct + ":function:" + name
}

// create makes a function running testdata/fn that records its runs, and
// waits until it is Active.
func (h *harness) create(t testing.TB, name string, mutate ...func(*lambda.CreateFunctionInput)) {
	t.Helper()
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String(role),
		Runtime:      types.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: fnZip(t, "v0")},
		Timeout:      aws.Int32(5),
		MemorySize:   aws.Int32(128),
		Environment:  &types.Environment{Variables: map[string]string{"RECORD_DIR": h.rec}},
	}
	for _, m := range mutate {
		m(in)
	}
	if _, err := h.c.CreateFunction(ctx(t), in); err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
	h.waitActive(t, name)
}

func (h *harness) waitActive(t testing.TB, name string) {
	t.Helper()
	w := lambda.NewFunctionActiveV2Waiter(h.c, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
		t.Fatalf("waiting for %s to be Active: %v", name, err)
	}
}

func (h *harness) eventConfig(t testing.TB, in *lambda.PutFunctionEventInvokeConfigInput) {
	t.Helper()
	if _, err := h.c.PutFunctionEventInvokeConfig(ctx(t), in); err != nil {
		t.Fatalf("PutFunctionEventInvokeConfig %s: %v", aws.ToString(in.FunctionName), err)
	}
}

// event sends an Event invoke, checks the 202 answer and returns the
// request id it carried.
func (h *harness) event(t testing.TB, name string, payload string, mutate ...func(*lambda.InvokeInput)) string {
	t.Helper()
	in := &lambda.InvokeInput{FunctionName: aws.String(name), InvocationType: types.InvocationTypeEvent, Payload: []byte(payload)}
	for _, m := range mutate {
		m(in)
	}
	out, err := h.c.Invoke(ctx(t), in)
	if err != nil {
		t.Fatalf("Event invoke %s: %v", name, err)
	}
	if out.StatusCode != http.StatusAccepted || len(out.Payload) != 0 || out.FunctionError != nil || out.ExecutedVersion != nil {
		t.Fatalf("Event invoke %s: status %d, payload %q, function error %v, executed version %v",
			name, out.StatusCode, out.Payload, aws.ToString(out.FunctionError), aws.ToString(out.ExecutedVersion))
	}
	id, _ := awsmw.GetRequestIDMetadata(out.ResultMetadata)
	if id == "" {
		t.Fatalf("Event invoke %s: no x-amzn-RequestId", name)
	}
	return id
}

func qualifier(q string) func(*lambda.InvokeInput) {
	return func(in *lambda.InvokeInput) { in.Qualifier = aws.String(q) }
}

// run is one line that testdata/fn recorded.
type run struct {
	Phase      string          `json:"phase"`
	RequestID  string          `json:"requestId"`
	InvokedARN string          `json:"invokedArn"`
	Version    string          `json:"version"`
	UnixNano   int64           `json:"unixNano"`
	Payload    json.RawMessage `json:"payload"`
}

func (r run) time() time.Time { return time.Unix(0, r.UnixNano) }

// runs returns what function name recorded so far, in file order; phase
// "start" or "end" keeps only those lines.
func (h *harness) runs(t testing.TB, name, phase string) []run {
	t.Helper()
	f, err := os.Open(filepath.Join(h.rec, name+".jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []run
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var r run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written right now
		}
		if phase == "" || r.Phase == phase {
			out = append(out, r)
		}
	}
	return out
}

// runsOf keeps the start lines of one request id.
func (h *harness) runsOf(t testing.TB, name, id string) []run {
	var out []run
	for _, r := range h.runs(t, name, "start") {
		if r.RequestID == id {
			out = append(out, r)
		}
	}
	return out
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stableCount waits d and checks that id ran exactly want times: used to
// prove a count is final (no extra retry was scheduled).
func (h *harness) stableCount(t testing.TB, name, id string, want int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := len(h.runsOf(t, name, id)); got != want {
		t.Fatalf("%s ran %s %d times, want %d", name, id, got, want)
	}
}

// nubo sends a request to one of nubo's own signed routes as the
// development account and decodes the JSON answer into v (when not nil).
func (h *harness) nubo(t testing.TB, method, path string, q url.Values, v any) int {
	t.Helper()
	u := h.s.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx(t), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	creds := aws.Credentials{AccessKeyID: account.DevAccessKey, SecretAccessKey: account.DevSecret}
	if err := v4.NewSigner().SignHTTP(ctx(t), creds, req, hex.EncodeToString(sum[:]), "lambda", region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// stats is GET /nubo/v1/events/stats.
type stats struct {
	QueueDepth         uint64  `json:"queueDepth"`
	OldestEventAgeSecs float64 `json:"oldestEventAgeSeconds"`
	Retries            int     `json:"retriesSinceStart"`
	DeadLettered       int     `json:"deadLettered"`
	DeadLetteredRecent int     `json:"deadLetteredSinceStart"`
}

func (h *harness) stats(t testing.TB, fn string) stats {
	t.Helper()
	var s stats
	if code := h.nubo(t, "GET", "/nubo/v1/events/stats", url.Values{"function": {fn}}, &s); code != 200 {
		t.Fatalf("events stats %s: HTTP %d", fn, code)
	}
	return s
}

// deadLetter is one item of GET /nubo/v1/events/failed.
type deadLetter struct {
	Event struct {
		RequestID string `json:"requestId"`
		Function  string `json:"function"`
		Payload   []byte `json:"payload"` // base64 in JSON
		Attempt   int    `json:"attempt"`
	} `json:"event"`
	Record invocationRecord `json:"record"`
	Time   string           `json:"time"`
}

func (h *harness) failed(t testing.TB, fn string) []deadLetter {
	t.Helper()
	var out struct {
		Failed []deadLetter
	}
	if code := h.nubo(t, "GET", "/nubo/v1/events/failed", url.Values{"function": {fn}}, &out); code != 200 {
		t.Fatalf("events failed %s: HTTP %d", fn, code)
	}
	sort.Slice(out.Failed, func(i, j int) bool { return out.Failed[i].Event.RequestID < out.Failed[j].Event.RequestID })
	return out.Failed
}

// invocationRecord is AWS's destination payload, decoded loosely so tests
// can also check which keys are present.
type invocationRecord struct {
	Version        string `json:"version"`
	Timestamp      string `json:"timestamp"`
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	RequestPayload  json.RawMessage `json:"requestPayload"`
	ResponseContext *struct {
		StatusCode      int    `json:"statusCode"`
		ExecutedVersion string `json:"executedVersion"`
		FunctionError   string `json:"functionError"`
	} `json:"responseContext"`
	ResponsePayload json.RawMessage `json:"responsePayload"`
}

// recordsFor returns the invocation records destination fn received about
// source request id.
func (h *harness) recordsFor(t testing.TB, dest, id string) []invocationRecord {
	t.Helper()
	var out []invocationRecord
	for _, r := range h.runs(t, dest, "start") {
		var rec invocationRecord
		if json.Unmarshal(r.Payload, &rec) == nil && rec.RequestContext.RequestID == id {
			out = append(out, rec)
		}
	}
	return out
}

// waitRecord waits for exactly one record about id at dest.
func (h *harness) waitRecord(t testing.TB, dest, id string, d time.Duration) (invocationRecord, json.RawMessage) {
	t.Helper()
	eventually(t, d, dest+" received no record of "+id, func() bool { return len(h.recordsFor(t, dest, id)) > 0 })
	for _, r := range h.runs(t, dest, "start") {
		var rec invocationRecord
		if json.Unmarshal(r.Payload, &rec) == nil && rec.RequestContext.RequestID == id {
			return rec, r.Payload
		}
	}
	panic("unreachable")
}

// jsonEqual compares two JSON texts as values.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// keys lists the keys of a JSON object.
func keys(t testing.TB, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s", raw)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// scrape returns the value of one unlabeled (or fully labeled) sample of
// the metrics endpoint; -1 when absent.
func scrape(t testing.TB, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", sample, v)
			}
			return f
		}
	}
	return -1
}
