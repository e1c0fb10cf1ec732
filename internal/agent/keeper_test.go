package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/rawio"
)

// testRoleEnv makes the test binary, re-executed, a keeper or a runtime.
const testRoleEnv = "NUBO_AGENT_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(testRoleEnv) {
	case "keeper", "keeper-now":
		warm := os.Getenv(testRoleEnv) == "keeper"
		os.Unsetenv(testRoleEnv)
		if err := Keep(3, warm, nil); err != nil {
			fmt.Fprintln(os.Stderr, "keeper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "runtime":
		testRuntime()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testRuntime is a runtime: it writes each event to stdout and echoes it,
// except {"sleep":ms}, which it sleeps on first.
func testRuntime() {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	for {
		resp, err := http.Get(base + "next")
		if err != nil {
			os.Exit(3)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var ev struct{ Sleep int }
		_ = json.Unmarshal(body, &ev)
		time.Sleep(time.Duration(ev.Sleep) * time.Millisecond)
		fmt.Printf("event %s\n", body)
		r, err := http.Post(base+id+"/response", "application/json", bytes.NewReader(body))
		if err != nil {
			os.Exit(4)
		}
		r.Body.Close()
	}
}

// keeperUnderTest is a keeper in a child process, and what it handed over.
type keeperUnderTest struct {
	cmd  *exec.Cmd
	conn *rawio.Quiet
	k    *Keeper
	addr string
}

// startKeeper starts a keeper made ahead of demand (warm: it warms up)
// or for an invocation that waits (it does not).
func startKeeper(t *testing.T, warm bool) *keeperUnderTest {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A free port on loopback for the Runtime API.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	child := os.NewFile(uintptr(fds[1]), "keeper-end")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	role := "keeper-now"
	if warm {
		role = "keeper"
	}
	cmd.Env = append(os.Environ(), testRoleEnv+"="+role, RuntimeAPIEnv+"="+addr)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	q, err := rawio.NewQuiet(fds[0], "keeper-host")
	if err != nil {
		t.Fatal(err)
	}
	ku := &keeperUnderTest{cmd: cmd, conn: q, addr: addr}
	t.Cleanup(func() {
		q.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	if data, err := q.WaitInput(time.Now().Add(20 * time.Second)); err != nil || !data {
		t.Fatalf("the keeper said nothing: %v", err)
	}
	if ku.k, err = ReceiveHandover(q); err != nil {
		t.Fatal(err)
	}
	if ku.k.Addr() != addr {
		t.Fatalf("handed-over listener on %s, want %s", ku.k.Addr(), addr)
	}
	return ku
}

// hostConn receives frames for the test, skipping Log frames into logs.
type hostConn struct {
	t    *testing.T
	c    *agentproto.Conn
	logs []string
}

func (h *hostConn) next(want agentproto.Type) *agentproto.Frame {
	h.t.Helper()
	for {
		f, err := h.c.Receive()
		if err != nil {
			h.t.Fatalf("waiting for %s: %v", want, err)
		}
		if f.Type == agentproto.TLog {
			h.logs = append(h.logs, string(f.Body))
			continue
		}
		if f.Type != want {
			h.t.Fatalf("got %s (%s %q), want %s", f.Type, f.Header, f.Body, want)
		}
		return f
	}
}

func (h *hostConn) invoke(id, payload string, timeout time.Duration) (agentproto.Result, string) {
	h.t.Helper()
	inv := &agentproto.Invoke{RequestID: id, DeadlineMs: time.Now().Add(timeout).UnixMilli(),
		InvokedFunctionARN: "arn:aws:lambda:nubo:000000000000:function:f", TimeoutMs: timeout.Milliseconds()}
	if err := h.c.Send(agentproto.TInvoke, inv, []byte(payload)); err != nil {
		h.t.Fatal(err)
	}
	f := h.next(agentproto.TResult)
	var r agentproto.Result
	if err := f.Decode(&r); err != nil {
		h.t.Fatal(err)
	}
	return r, string(f.Body)
}

// TestSupervisedKeeper runs an environment split as a namespace sandbox's
// is: the keeper in a process of its own, the supervisor here. The
// invocations reach the runtime through the handed-over listener, its
// output comes through the handed-over pipes ahead of each Result, a
// timeout kills the runtime through the keeper and the next invocation
// starts a new one, and once the host closes the connection everything
// ends: the supervisor's goroutines, the keeper and its children.
func TestSupervisedKeeper(t *testing.T) {
	for _, warm := range []bool{true, false} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) { testSupervisedKeeper(t, warm) })
	}
}

func testSupervisedKeeper(t *testing.T, warm bool) {
	goroutines := runtime.NumGoroutine()
	ku := startKeeper(t, warm)
	host, sup := agentproto.Pipe()
	supervised := make(chan error, 1)
	go func() {
		supervised <- Supervise(sup, ku.k, listExtensions, nil)
		sup.Close()
	}()
	h := &hostConn{t: t, c: agentproto.NewConn(host)}
	h.next(agentproto.TReady)
	start := &agentproto.Start{Argv: []string{os.Args[0], "-test.run=^$"}, Env: []string{testRoleEnv + "=runtime",
		"AWS_LAMBDA_RUNTIME_API=" + ku.addr}, Dir: "/", RuntimeAPI: ku.addr, InitTimeoutMs: 20000, FunctionName: "f"}
	if err := h.c.Send(agentproto.TStart, start, nil); err != nil {
		t.Fatal(err)
	}
	h.next(agentproto.TInitDone)

	for i := range 3 {
		ev := `{"n":` + strconv.Itoa(i) + `}`
		r, body := h.invoke("req-"+strconv.Itoa(i), ev, 10*time.Second)
		if r.FunctionError || body != ev {
			t.Fatalf("invocation %d: %+v %q", i, r, body)
		}
		if got := strings.Join(h.logs, ""); !strings.Contains(got, "event "+ev+"\n") {
			t.Fatalf("invocation %d: its output %q did not come before its Result", i, got)
		}
		h.logs = nil
	}

	// The timeout's kill goes through the keeper: without it the
	// supervisor would wait 5 s for the runtime's end before the Result.
	t0 := time.Now()
	r, body := h.invoke("slow", `{"sleep":5000}`, 300*time.Millisecond)
	if r.ErrorType != "Sandbox.Timedout" || !r.Reset || !strings.Contains(body, "Task timed out after 0.30 seconds") {
		t.Fatalf("timed-out invocation: %+v %q", r, body)
	}
	r, body = h.invoke("after", `{"n":9}`, 10*time.Second)
	if r.FunctionError || body != `{"n":9}` || r.InitDurationMs <= 0 {
		t.Fatalf("invocation after the timeout: %+v %q (want the echo, after a new init)", r, body)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Fatalf("the timed-out runtime took %s to be killed and replaced", d)
	}

	if err := h.c.Send(agentproto.TShutdown, &agentproto.Shutdown{Reason: "spindown",
		DeadlineMs: time.Now().Add(2 * time.Second).UnixMilli()}, nil); err != nil {
		t.Fatal(err)
	}
	h.next(agentproto.TShutdownDone)
	host.Close()
	select {
	case err := <-supervised:
		if err != nil {
			t.Fatalf("Supervise: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Supervise did not return after the host closed its end")
	}
	ku.conn.Close()
	waited := make(chan error, 1)
	go func() { waited <- ku.cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("the keeper ended badly: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the keeper did not end after its connection closed")
	}
	// Nothing of the supervisor's keeps running (the pipe ends, relays,
	// the Runtime API's server and connections, the keeper's reader).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left over (%d before):\n%s", n-goroutines, goroutines, buf[:runtime.Stack(buf, true)])
	}
}

// TestSupervisedSpawnFails: a runtime the keeper cannot start is init's
// Runtime.InvalidEntrypoint, with the keeper's reason.
func TestSupervisedSpawnFails(t *testing.T) {
	ku := startKeeper(t, false)
	host, sup := agentproto.Pipe()
	defer host.Close()
	go func() {
		Supervise(sup, ku.k, listExtensions, nil)
		sup.Close()
	}()
	h := &hostConn{t: t, c: agentproto.NewConn(host)}
	h.next(agentproto.TReady)
	start := &agentproto.Start{Argv: []string{"/nonexistent/bootstrap"}, Dir: "/", RuntimeAPI: ku.addr, InitTimeoutMs: 20000}
	if err := h.c.Send(agentproto.TStart, start, nil); err != nil {
		t.Fatal(err)
	}
	f := h.next(agentproto.TInitError)
	var ie agentproto.InitError
	f.Decode(&ie)
	if ie.ErrorType != "Runtime.InvalidEntrypoint" || !strings.Contains(string(f.Body), "no such file or directory") {
		t.Fatalf("init error %+v %s", ie, f.Body)
	}
}

// TestReceiveHandoverRefusesOther: a first byte without the keeper's
// descriptors is no handover.
func TestReceiveHandoverRefusesOther(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	q, err := rawio.NewQuiet(fds[0], "test")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := unix.Write(fds[1], []byte{handoverByte}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReceiveHandover(q); err == nil {
		t.Fatal("a byte without descriptors was taken for a handover")
	}
	// One descriptor where three are due.
	if err := unix.Sendmsg(fds[1], []byte{handoverByte}, unix.UnixRights(fds[1]), nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ReceiveHandover(q); err == nil || !strings.Contains(err.Error(), "1 descriptors") {
		t.Fatalf("one descriptor: %v", err)
	}
}
