package runtimeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	fnDir  string
	fnOnce sync.Once
	fnPath string
	fnErr  error
)

func TestMain(m *testing.M) {
	var err error
	fnDir, err = os.MkdirTemp("", "runtimeapi-fn-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(fnDir)
	os.Exit(code)
}

// fnBinary builds testdata/fn, a real aws-lambda-go function, once per run.
func fnBinary(t testing.TB) string {
	t.Helper()
	fnOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(fnDir, "bootstrap")
		cmd := exec.Command(goTool, "build", "-o", out, "./testdata/fn")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fnErr = fmt.Errorf("go build testdata/fn: %v\n%s", err, b)
			return
		}
		fnPath = out
	})
	if fnErr != nil {
		t.Fatal(fnErr)
	}
	return fnPath
}

// testEnv is one Server served (Serve, as the agent serves it) on
// 127.0.0.1.
type testEnv struct {
	t      *testing.T
	s      *Server
	addr   string
	url    string
	client *http.Client
}

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	return newEnvOn(t, opts, nil)
}

// newEnvOn is newEnv with the listener wrapped by wrap (when not nil).
func newEnvOn(t *testing.T, opts Options, wrap func(net.Listener) net.Listener) *testEnv {
	t.Helper()
	if opts.FunctionName == "" {
		opts.FunctionName = "fn"
	}
	s := New(opts)
	addr, stop := serveLocal(t, s, wrap)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		// Blocked /next requests end when their connections close.
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		client.CloseIdleConnections()
	})
	return &testEnv{t: t, s: s, addr: addr, url: "http://" + addr, client: client}
}

// serveLocal serves s on a new listener on 127.0.0.1 (wrapped by wrap
// when not nil), as the agent serves it. stop ends Serve and returns what
// it returned; it fails the test when Serve does not return within 5 s.
func serveLocal(t *testing.T, s *Server, wrap func(net.Listener) net.Listener) (addr string, stop func() error) {
	t.Helper()
	var l net.Listener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		l = wrap(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	return l.Addr().String(), sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-served:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return")
			return nil
		}
	})
}

// gatedListener holds every Accept until its gate opens, so that a test can
// have a client's bytes, and its close, arrive before the server reads any.
type gatedListener struct {
	net.Listener
	gate   <-chan struct{}
	closed chan struct{}
	once   sync.Once
}

func gated(gate <-chan struct{}) func(net.Listener) net.Listener {
	return func(l net.Listener) net.Listener {
		return &gatedListener{Listener: l, gate: gate, closed: make(chan struct{})}
	}
}

func (g *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-g.gate:
		return g.Listener.Accept()
	case <-g.closed:
		return nil, net.ErrClosed
	}
}

func (g *gatedListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

// fnProc is a running test function process.
type fnProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startFn runs the test function with the given _HANDLER as the runtime, and
// reports its death to the server as the agent would.
func (e *testEnv) startFn(handler string) *fnProc {
	e.t.Helper()
	cmd := exec.Command(fnBinary(e.t))
	cmd.Env = []string{
		"AWS_LAMBDA_RUNTIME_API=" + e.addr,
		"AWS_LAMBDA_FUNCTION_NAME=fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"_HANDLER=" + handler,
		"PATH=/usr/bin:/bin",
	}
	p := &fnProc{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		e.s.RuntimeExited(cmd.ProcessState.String())
		close(p.exited)
	}()
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if e.t.Failed() {
			e.t.Logf("function %s output:\n%s", handler, p.out.String())
		}
	})
	return p
}

func (p *fnProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *fnProc) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("function did not exit")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newInv(id string, payload string) *Invocation {
	return &Invocation{
		RequestID:          id,
		Payload:            []byte(payload),
		DeadlineMs:         time.Now().Add(time.Minute).UnixMilli(),
		InvokedFunctionARN: "arn:aws:lambda:us-east-1:123456789012:function:fn",
	}
}

type invokeOutcome struct {
	res *Result
	err error
}

// invokeAsync runs Invoke in the background.
func (e *testEnv) invokeAsync(ctx context.Context, inv *Invocation) <-chan invokeOutcome {
	ch := make(chan invokeOutcome, 1)
	go func() {
		res, err := e.s.Invoke(ctx, inv)
		ch <- invokeOutcome{res, err}
	}()
	return ch
}

func waitOutcome(t *testing.T, ch <-chan invokeOutcome) invokeOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("Invoke did not return")
		return invokeOutcome{}
	}
}

// do sends one request to the test server and returns status, headers, body.
func (e *testEnv) do(ctx context.Context, method, path string, hdr map[string]string, body string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// mustDo is do that fails the test on transport errors.
func (e *testEnv) mustDo(method, path string, hdr map[string]string, body string) (int, http.Header, []byte) {
	e.t.Helper()
	st, h, b, err := e.do(ctxTimeout(e.t, 10*time.Second), method, path, hdr, body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return st, h, b
}

// wantAPIError checks an error reply of this API.
func wantAPIError(t *testing.T, what string, status int, body []byte, wantStatus int, wantType, wantMsg string) {
	t.Helper()
	var got errorResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: body %q is not an error document: %v", what, body, err)
	}
	if status != wantStatus || got.ErrorType != wantType || (wantMsg != "" && got.ErrorMessage != wantMsg) {
		t.Fatalf("%s: got %d %+v, want %d %s %q", what, status, got, wantStatus, wantType, wantMsg)
	}
}

// fakeNext plays a runtime's /next and returns the delivered request id.
func (e *testEnv) fakeNext() (string, http.Header, []byte) {
	e.t.Helper()
	st, h, b := e.mustDo("GET", "/2018-06-01/runtime/invocation/next", nil, "")
	if st != http.StatusOK {
		e.t.Fatalf("/next: %d %s", st, b)
	}
	return h.Get("Lambda-Runtime-Aws-Request-Id"), h, b
}

func asInitError(err error) *InitError {
	var ie *InitError
	if errors.As(err, &ie) {
		return ie
	}
	return nil
}

// handler adapts the API's routes to net/http, for tests that drive the
// handlers without the wire (Serve's wire server is what the agent runs).
func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.route(httpWriter{w}, &request{Method: r.Method, URL: r.URL, Proto: r.Proto,
			Header: header(r.Header), Trailer: header(r.Trailer), Body: r.Body, ctx: r.Context()})
	})
}

// httpWriter is a net/http response writer as the handlers' responseWriter.
type httpWriter struct{ w http.ResponseWriter }

func (h httpWriter) Header() header              { return header(h.w.Header()) }
func (h httpWriter) WriteHeader(status int)      { h.w.WriteHeader(status) }
func (h httpWriter) Write(p []byte) (int, error) { return h.w.Write(p) }
