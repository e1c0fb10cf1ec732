package invoke_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	// runTagVar marks every process this test run makes run functions in
	// (the variable is part of each test function's configuration), so the
	// leftover check can find runtimes and extensions that escaped.
	runTagVar = "NUBO_INVOKE_E2E_RUN"
)

var (
	workDir string // removed by TestMain
	runTag  string

	buildOnce sync.Once
	buildErr  error
	fnBin     []byte // testdata/fn, an aws-lambda-go function
	extBin    []byte // testdata/ext, a raw Extensions API client
	streamBin []byte // testdata/streamfn, a runtime that streams its responses
)

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "nubo-invoke-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b := make([]byte, 8)
	rand.Read(b)
	runTag = hex.EncodeToString(b)
	code := m.Run()
	os.RemoveAll(workDir)
	if err := waitNoLeftovers(5 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: processes left behind:", err)
		code = 1
	}
	os.Exit(code)
}

// waitNoLeftovers waits until no process of this run is alive: children of
// the test binary, agents (re-executions of the test binary), and runtimes
// or extensions carrying this run's tag in their environment (which could
// have been orphaned away from their agent).
func waitNoLeftovers(wait time.Duration) error {
	self := os.Getpid()
	exe, _ := os.Executable()
	tag := []byte(runTagVar + "=" + runTag)
	deadline := time.Now().Add(wait)
	for {
		var left []string
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			dir := "/proc/" + e.Name()
			stat, err := os.ReadFile(dir + "/stat")
			if err != nil {
				continue
			}
			// Fields after the command (which may hold spaces) start at ") ".
			var ppid int
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 1 {
					ppid, _ = strconv.Atoi(f[1])
				}
				if len(f) > 0 && f[0] == "Z" && ppid != self {
					continue // a zombie of someone else's
				}
			}
			why := ""
			if ppid == self {
				why = "child of the test"
			} else if l, err := os.Readlink(dir + "/exe"); err == nil && exe != "" && l == exe {
				why = "agent (test binary)"
			} else if env, err := os.ReadFile(dir + "/environ"); err == nil && bytes.Contains(env, tag) {
				why = "function process of this run"
			}
			if why != "" {
				cmd, _ := os.ReadFile(dir + "/cmdline")
				left = append(left, fmt.Sprintf("pid %d (%s): %s", pid, why, strings.ReplaceAll(string(cmd), "\x00", " ")))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(strings.Join(left, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// binaries builds the test function and the test extension once per run.
func binaries(t testing.TB) {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(workDir, "bin")
		cmd := exec.Command(goTool, "build", "-o", out+"/", "./testdata/fn", "./testdata/ext", "./testdata/streamfn")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build testdata: %v\n%s", err, b)
			return
		}
		if fnBin, buildErr = os.ReadFile(filepath.Join(out, "fn")); buildErr != nil {
			return
		}
		if extBin, buildErr = os.ReadFile(filepath.Join(out, "ext")); buildErr != nil {
			return
		}
		streamBin, buildErr = os.ReadFile(filepath.Join(out, "streamfn"))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// fnZip is the Go test function's deployment package; version is what the
// function reports as its version (distinct values give distinct code).
func fnZip(t testing.TB, version string) []byte {
	t.Helper()
	binaries(t)
	return ziptest.Zip(t,
		ziptest.File{Name: "bootstrap", Body: fnBin, Mode: 0o755},
		ziptest.File{Name: "version.txt", Body: []byte(version + "\n")})
}

// serverConfig is what servertest options adjust.
type serverConfig = server.Config

// harness is one running server and a client of its development account.
type harness struct {
	s *servertest.Server
	c *lambda.Client
}

// newHarness starts a server with the default execution backend, or the one
// NUBO_TEST_ISOLATION names ("process", "namespace").
func newHarness(t testing.TB, opts ...servertest.Option) *harness {
	t.Helper()
	if iso := os.Getenv("NUBO_TEST_ISOLATION"); iso != "" {
		opts = append([]servertest.Option{func(c *server.Config) { c.Isolation = iso }}, opts...)
	}
	s := servertest.Start(t, opts...)
	return &harness{s: s, c: s.Dev()}
}

func ctx(t testing.TB) context.Context { return servertest.Ctx(t, 60*time.Second) }

// create makes a function (Go test function unless the input says
// otherwise) and waits until it is Active.
func (h *harness) create(t testing.TB, name string, zip []byte, mutate ...func(*lambda.CreateFunctionInput)) *lambda.CreateFunctionOutput {
	t.Helper()
	if zip == nil {
		zip = fnZip(t, "v0")
	}
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String(role),
		Runtime:      types.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: zip},
		Timeout:      aws.Int32(5),
		MemorySize:   aws.Int32(128),
		Environment:  &types.Environment{Variables: map[string]string{}},
	}
	for _, m := range mutate {
		m(in)
	}
	in.Environment.Variables[runTagVar] = runTag
	out, err := h.c.CreateFunction(ctx(t), in)
	if err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
	h.waitActive(t, name)
	return out
}

// waitActive waits with the SDK's own waiter, polled fast.
func (h *harness) waitActive(t testing.TB, name string) {
	t.Helper()
	w := lambda.NewFunctionActiveV2Waiter(h.c, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
		t.Fatalf("waiting for %s to be Active: %v", name, err)
	}
}

func (h *harness) waitUpdated(t testing.TB, name string) {
	t.Helper()
	w := lambda.NewFunctionUpdatedV2Waiter(h.c, func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
		t.Fatalf("waiting for %s to be updated: %v", name, err)
	}
}

func (h *harness) publish(t testing.TB, name string) string {
	t.Helper()
	out, err := h.c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String(name)})
	if err != nil {
		t.Fatalf("PublishVersion %s: %v", name, err)
	}
	return aws.ToString(out.Version)
}

func (h *harness) updateCode(t testing.TB, name string, zip []byte) {
	t.Helper()
	if _, err := h.c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String(name), ZipFile: zip}); err != nil {
		t.Fatalf("UpdateFunctionCode %s: %v", name, err)
	}
	h.waitUpdated(t, name)
}

// result is one successful Invoke call as the SDK returned it.
type result struct {
	*lambda.InvokeOutput
	RequestID string
}

// invokeErr invokes through the SDK.
func (h *harness) invokeErr(t testing.TB, name string, payload []byte, mutate ...func(*lambda.InvokeInput)) (*result, error) {
	t.Helper()
	in := &lambda.InvokeInput{FunctionName: aws.String(name), Payload: payload}
	for _, m := range mutate {
		m(in)
	}
	out, err := h.c.Invoke(ctx(t), in)
	if err != nil {
		return nil, err
	}
	id, _ := awsmw.GetRequestIDMetadata(out.ResultMetadata)
	return &result{InvokeOutput: out, RequestID: id}, nil
}

// invoke invokes and fails the test on an API error (a function error is
// not an API error).
func (h *harness) invoke(t testing.TB, name string, payload []byte, mutate ...func(*lambda.InvokeInput)) *result {
	t.Helper()
	r, err := h.invokeErr(t, name, payload, mutate...)
	if err != nil {
		t.Fatalf("Invoke %s: %v", name, err)
	}
	return r
}

// invokeOK invokes and fails the test unless the function succeeded.
func (h *harness) invokeOK(t testing.TB, name string, payload []byte, mutate ...func(*lambda.InvokeInput)) *result {
	t.Helper()
	r := h.invoke(t, name, payload, mutate...)
	if r.FunctionError != nil {
		t.Fatalf("Invoke %s: function error %s: %s", name, aws.ToString(r.FunctionError), r.Payload)
	}
	return r
}

func qualifier(q string) func(*lambda.InvokeInput) {
	return func(in *lambda.InvokeInput) { in.Qualifier = aws.String(q) }
}

func tail(in *lambda.InvokeInput) { in.LogType = types.LogTypeTail }

// fnState is what the test function's state-reporting ops answer.
type fnState struct {
	Count   int    `json:"count"`
	Stream  string `json:"stream"`
	Tmp     string `json:"tmp"`
	Version string `json:"version"`
	Pid     int    `json:"pid"`
}

func decodeState(t testing.TB, r *result) fnState {
	t.Helper()
	var s fnState
	if err := json.Unmarshal(r.Payload, &s); err != nil {
		t.Fatalf("state answer %q: %v", r.Payload, err)
	}
	return s
}

func op(s string) []byte { return []byte(`{"op":"` + s + `"}`) }

// rawResponse is an HTTP answer read in full.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// signedRequest sends a request signed for the development account, with
// extra headers added after signing (unsigned headers are allowed by
// SigV4 and let tests send values a signer would normalise).
func (h *harness) signedRequest(t testing.TB, method, path string, body []byte, signed, unsigned map[string]string) (*rawResponse, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), method, h.s.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range signed {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	creds := aws.Credentials{AccessKeyID: account.DevAccessKey, SecretAccessKey: account.DevSecret}
	if err := v4.NewSigner().SignHTTP(ctx(t), creds, req, payloadHash, "lambda", region, time.Now()); err != nil {
		return nil, err
	}
	for k, v := range unsigned {
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// awsError decodes an AWS REST-JSON error body.
type awsError struct {
	Type    string `json:"Type"`
	Message string `json:"message"`
	Reason  string `json:"Reason"`
}

func invokePath(name string) string { return "/2015-03-31/functions/" + name + "/invocations" }
