package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/runtimeapi"
)

// warmUp runs the agent's per-invocation code once, before the environment
// has a function: the protocol frames it sends and receives, and one
// invocation through a Runtime API of its own to a client on loopback.
//
// A new process pays for the first use of every code page it touches, of
// its heap, and of encoding/json's per-type caches; without this, all of
// that falls on the cold start, between the runtime's first /next and its
// first response (measured: docs/performance.md, "Session 5"). An agent
// started ahead of demand (a pooled shell) pays it while it waits. Nothing
// of it is needed: the caller ignores the error, which says what did not
// run.
func warmUp(log *slog.Logger) error {
	if err := warmFrames(append(agentFrames, keeperFrames...)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	api := runtimeapi.New(runtimeapi.Options{FunctionName: "warm-up", Logger: log})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = api.Serve(ctx, ln)
	}()
	// A client that fails ends the wait for it.
	wctx, fail := context.WithCancel(ctx)
	defer fail()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if !warmClient(wctx, ln.Addr().String()) {
			fail()
		}
	}()
	err = api.WaitInit(wctx)
	var res *runtimeapi.Result
	if err == nil {
		res, err = api.Invoke(wctx, &runtimeapi.Invocation{RequestID: "warm-up", Payload: []byte(warmPayload),
			InvokedFunctionARN: "arn:aws:lambda:nubo:000000000000:function:warm-up"})
	}
	if err == nil && string(res.Payload) != warmPayload {
		err = fmt.Errorf("warm-up: the client answered %q", res.Payload)
	}
	<-ran
	cancel()
	ln.Close()
	<-served
	return err
}

// warmPayload is the event of the warm-up invocation, which the client
// echoes.
const warmPayload = `{"warm":"up"}`

// warmFrame is one frame of a warm-up: sent with header h, and, when
// into is not nil, decoded back into it.
type warmFrame struct {
	t    agentproto.Type
	h    any
	into any
}

// agentFrames are the whole agent's: every frame type it sends, and those
// it receives.
var agentFrames = []warmFrame{
	{agentproto.TStart, &agentproto.Start{Argv: []string{"/var/runtime/bootstrap"}, Env: []string{"A=b"}, Dir: "/var/task", RuntimeAPI: "127.0.0.1:9001"}, &agentproto.Start{}},
	{agentproto.TInvoke, &agentproto.Invoke{RequestID: "warm-up", DeadlineMs: 1, InvokedFunctionARN: "arn", TimeoutMs: 1}, &agentproto.Invoke{}},
	{agentproto.TInitDone, &agentproto.InitDone{DurationMs: 1}, nil},
	{agentproto.TResult, &agentproto.Result{RequestID: "warm-up", ContentType: "application/json"}, nil},
	{agentproto.TLog, &agentproto.Log{Stream: "stdout"}, nil},
	{agentproto.TIdle, &agentproto.Idle{RequestID: "warm-up"}, nil},
}

// keeperFrames are the keeper's (Keep): it decodes Spawn and Signal, which
// it never encodes (they go as ready-made JSON), and encodes Spawned and
// Exited. Encoding the whole agent's types too cost each keeper about 0.05
// ms of CPU for code it never runs (docs/performance.md, session 26).
var keeperFrames = []warmFrame{
	{agentproto.TSpawn, json.RawMessage(`{"id":1,"name":"runtime","argv":["/var/runtime/bootstrap"],"env":["A=b"],"dir":"/var/task","uid":993,"gid":990}`), &agentproto.Spawn{}},
	{agentproto.TSignal, json.RawMessage(`{"id":1,"signal":9}`), &agentproto.Signal{}},
	{agentproto.TSpawned, &agentproto.Spawned{ID: 1, Pid: 2}, nil},
	{agentproto.TExited, &agentproto.Exited{ID: 1, Reason: "exit status 0"}, nil},
}

// warmFrames sends frames through a buffer and receives them back.
func warmFrames(frames []warmFrame) error {
	c := agentproto.NewConn(&bufferConn{})
	for _, w := range frames {
		if err := c.Send(w.t, w.h, []byte("{}")); err != nil {
			return err
		}
	}
	for _, w := range frames {
		f, err := c.Receive()
		if err != nil {
			return err
		}
		if f.Type != w.t {
			return fmt.Errorf("warm-up: frame %v came back as %v", w.t, f.Type)
		}
		if w.into != nil {
			if err := f.Decode(w.into); err != nil {
				return err
			}
		}
	}
	return nil
}

// bufferConn is an in-memory io.ReadWriteCloser.
type bufferConn struct{ bytes.Buffer }

func (*bufferConn) Close() error { return nil }

// warmClient plays a runtime for one invocation, as an HTTP/1.1 client on
// one kept-alive connection, the way runtimes talk to the Runtime API. It
// reports whether it posted the answer.
func warmClient(ctx context.Context, addr string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	r := bufio.NewReader(conn)
	next := "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: warm-up\r\n\r\n"
	if _, err := io.WriteString(conn, next); err != nil {
		return false
	}
	id, err := readWarmResponse(r)
	if err != nil || id == "" {
		return false
	}
	body := warmPayload
	post := "POST /2018-06-01/runtime/invocation/" + id + "/response HTTP/1.1\r\nHost: " + addr +
		"\r\nUser-Agent: warm-up\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(conn, post); err != nil {
		return false
	}
	readWarmResponse(r)
	return true
}

// readWarmResponse reads one response of the agent's own Runtime API to
// its end and returns its request id header, if any. It knows only what
// that server sends a client: a status line, header lines, and a body of
// Content-Length bytes. (The agent links no HTTP client: net/http would
// make every agent's start dearer; see runtimeapi's request.go.)
func readWarmResponse(r *bufio.Reader) (id string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 ") {
		return "", fmt.Errorf("warm-up: unexpected status line %q", line)
	}
	length := 0
	for {
		if line, err = r.ReadString('\n'); err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Lambda-Runtime-Aws-Request-Id"):
			id = value
		case strings.EqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(value); err != nil || length < 0 {
				return "", fmt.Errorf("warm-up: Content-Length %q", value)
			}
		case strings.EqualFold(name, "Transfer-Encoding"):
			return "", fmt.Errorf("warm-up: unexpected Transfer-Encoding %q", value)
		}
	}
	_, err = r.Discard(length)
	return id, err
}
