package runtimes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// waitFor bounds every wait on a runtime process; a healthy one answers in
// well under a second.
const waitFor = 10 * time.Second

// invocation is one event the fake Runtime API hands out on /next.
type invocation struct {
	id            string
	body          string
	contentType   string // "" means application/json
	trace         string // "" omits Lambda-Runtime-Trace-Id
	clientContext string // "" omits the header
	cognito       string // "" omits the header
	deadline      time.Time
}

// posted is one POST a runtime made to the fake Runtime API.
type posted struct {
	kind   string // "response", "error" or "init"
	id     string
	header http.Header
	body   []byte
}

func (p posted) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p.body, &m); err != nil {
		t.Fatalf("%s body is not a JSON object: %v: %q", p.kind, err, p.body)
	}
	return m
}

// fakeAPI is a Runtime API (LAMBDA-WIRE §1) on 127.0.0.1 that serves
// queued invocations and records what the runtime posts.
type fakeAPI struct {
	srv    *httptest.Server
	queue  chan invocation
	posts  chan posted
	closed chan struct{}
	// exited, once a runtime is started, closes when it exits, so that a
	// crashed runtime fails the test at once rather than at the timeout.
	exited chan struct{}
	// conns counts the connections runtimes opened; with dropIdle set,
	// the server closes a connection as soon as it has answered on it,
	// without saying so (as a server that timed out an idle one would).
	conns    atomic.Int32
	dropIdle atomic.Bool
}

const functionARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	a := &fakeAPI{
		queue:  make(chan invocation, 16),
		posts:  make(chan posted, 16),
		closed: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", a.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", a.record("response"))
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", a.record("error"))
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", a.record("init"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux, ConnState: func(c net.Conn, st http.ConnState) {
		switch {
		case st == http.StateNew:
			a.conns.Add(1)
		case st == http.StateIdle && a.dropIdle.Load():
			c.Close()
		}
	}}}
	a.srv.Start()
	t.Cleanup(func() {
		close(a.closed) // releases /next calls still blocked
		a.srv.Close()
	})
	return a
}

func (a *fakeAPI) addr() string { return a.srv.Listener.Addr().String() }

func (a *fakeAPI) next(w http.ResponseWriter, r *http.Request) {
	var inv invocation
	select {
	case inv = <-a.queue:
	case <-r.Context().Done():
		return
	case <-a.closed:
		return
	}
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	if inv.deadline.IsZero() {
		inv.deadline = time.Now().Add(30 * time.Second)
	}
	h.Set("Lambda-Runtime-Deadline-Ms", fmt.Sprint(inv.deadline.UnixMilli()))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", functionARN)
	if inv.trace != "" {
		h.Set("Lambda-Runtime-Trace-Id", inv.trace)
	}
	if inv.clientContext != "" {
		h.Set("Lambda-Runtime-Client-Context", inv.clientContext)
	}
	if inv.cognito != "" {
		h.Set("Lambda-Runtime-Cognito-Identity", inv.cognito)
	}
	ct := inv.contentType
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, inv.body)
}

func (a *fakeAPI) record(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.posts <- posted{kind: kind, id: r.PathValue("id"), header: r.Header.Clone(), body: body}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"OK"}`)
	}
}

// invoke queues inv and returns what the runtime posts next.
func (a *fakeAPI) invoke(t *testing.T, inv invocation) posted {
	t.Helper()
	a.queue <- inv
	p := a.await(t)
	if p.kind != "init" && p.id != inv.id {
		t.Fatalf("runtime posted %s for %q, want %q", p.kind, p.id, inv.id)
	}
	return p
}

func (a *fakeAPI) await(t *testing.T) posted {
	t.Helper()
	select {
	case p := <-a.posts:
		return p
	case <-a.exited:
		// A post made just before exiting is already queued.
		select {
		case p := <-a.posts:
			return p
		default:
			t.Fatal("runtime exited without posting")
		}
	case <-time.After(waitFor):
		t.Fatal("runtime posted nothing")
	}
	return posted{}
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a runtime process under test.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// waitExit waits for the process to exit by itself and returns its code.
func (p *proc) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitFor):
		t.Fatalf("runtime did not exit; stderr:\n%s", p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

// eventually waits until the process output satisfies ok; the runtime
// writes its log lines before it posts, but the test reads them through
// a pipe, so they may land a moment later.
func (p *proc) eventually(t *testing.T, what string, ok func(stdout string) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !ok(p.stdout.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("stdout never showed %s; stdout:\n%q\nstderr:\n%s", what, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testMemoryMB is the MemorySize of every function under test.
const testMemoryMB = 256

// lambdaEnv is the environment of every runtime under test, minus
// AWS_LAMBDA_RUNTIME_API, _HANDLER and LAMBDA_TASK_ROOT.
var lambdaEnv = map[string]string{
	"AWS_LAMBDA_FUNCTION_NAME":        "fn",
	"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
	"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(testMemoryMB),
	"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/fn",
	"AWS_LAMBDA_LOG_STREAM_NAME":      "2024/01/01/[$LATEST]0123456789abcdef",
	"AWS_REGION":                      "us-east-1",
	"TZ":                              ":UTC",
}

// start writes family's embedded RIC to a fresh runtime directory and
// starts it with interpreter, as Command says, for the function in taskRoot.
func start(t *testing.T, family, interpreter string, api *fakeAPI, taskRoot, handler string, extraEnv ...string) *proc {
	t.Helper()
	name, src, ok := Bootstrap(family)
	if !ok {
		t.Fatalf("no bootstrap for %s", family)
	}
	runtimeDir := t.TempDir()
	ricPath := filepath.Join(runtimeDir, name)
	if err := os.WriteFile(ricPath, src, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := Runtime{ID: family, Family: family, Interpreter: interpreter}
	if family == FamilyPython {
		// As nubo runs it: compiled ahead (see Precompile).
		rts, err := Precompile(runtimeDir, runtimeDir, []Runtime{rt})
		if err != nil || rts[0].Compiled == "" {
			t.Fatalf("precompile: %v", err)
		}
		rt = rts[0]
	}
	argv := Command(rt, ricPath, testMemoryMB)

	env := hostEnv()
	for k, v := range lambdaEnv {
		env = append(env, k+"="+v)
	}
	env = append(env,
		"AWS_LAMBDA_RUNTIME_API="+api.addr(),
		"LAMBDA_TASK_ROOT="+taskRoot,
		"LAMBDA_RUNTIME_DIR="+runtimeDir,
		"_HANDLER="+handler,
	)
	env = append(env, extraEnv...)

	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = taskRoot
	p.cmd.Env = env
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	api.exited = p.done
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// The runtime loops on /next forever; stop it.
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("runtime stdout:\n%s\nruntime stderr:\n%s", p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// hostEnv is the host's environment (a pyenv shim needs HOME and PATH)
// without the variables that would change how a runtime behaves (AWS_*,
// LAMBDA_*, _*, PYTHON*, NODE_*: a developer's NODE_OPTIONS, say).
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "LAMBDA_") || strings.HasPrefix(k, "_") ||
			strings.HasPrefix(k, "PYTHON") || strings.HasPrefix(k, "NODE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// writeFiles creates files (path → content) under a new task root.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func startPython(t *testing.T, api *fakeAPI, taskRoot, handler string, extraEnv ...string) *proc {
	t.Helper()
	return start(t, FamilyPython, testutil.RequiresBinary(t, "python3"), api, taskRoot, handler, extraEnv...)
}

func startNode(t *testing.T, api *fakeAPI, taskRoot, handler string, extraEnv ...string) *proc {
	t.Helper()
	return start(t, FamilyNodejs, testutil.RequiresBinary(t, "node"), api, taskRoot, handler, extraEnv...)
}

// keys returns the sorted keys of m, for exact-shape checks.
func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// testConnections: a runtime keeps one connection to the Runtime API, and
// sends a request again on a new one when the server has closed the kept
// one without answering. start starts the runtime with an echo handler;
// echo is how it answers the event {"id":id}.
func testConnections(t *testing.T, start func(api *fakeAPI), echo func(id string) string) {
	t.Helper()
	api := newFakeAPI(t)
	start(api)
	invoke := func(id string) {
		t.Helper()
		if got := api.invoke(t, invocation{id: id, body: `{"id":"` + id + `"}`}); got.kind != "response" || string(got.body) != echo(id) {
			t.Fatalf("%s: posted %s %s", id, got.kind, got.body)
		}
	}
	for i := range 5 {
		invoke(fmt.Sprintf("k-%d", i))
	}
	if n := api.conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 invocations, want 1 kept alive", n)
	}
	api.dropIdle.Store(true)
	for i := range 3 {
		invoke(fmt.Sprintf("d-%d", i))
	}
	if n := api.conns.Load(); n < 4 {
		t.Errorf("%d connections in all: the dropped ones were not replaced", n)
	}
}
