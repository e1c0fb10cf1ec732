package env

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// pipeSandbox is a sandbox whose agent is the test, at the other end of a
// pipe.
type pipeSandbox struct {
	conn net.Conn
	done chan struct{}
}

func (p *pipeSandbox) ID() string                    { return "pipe" }
func (p *pipeSandbox) Conn() io.ReadWriteCloser      { return p.conn }
func (p *pipeSandbox) Paths() sandbox.Paths          { return sandbox.Paths{} }
func (p *pipeSandbox) Freeze() error                 { return nil }
func (p *pipeSandbox) Thaw() error                   { return nil }
func (p *pipeSandbox) AfterInit() error              { return nil }
func (p *pipeSandbox) Stats() (sandbox.Stats, error) { return sandbox.Stats{}, nil }
func (p *pipeSandbox) Done() <-chan struct{}         { return p.done }
func (p *pipeSandbox) Destroy() error                { p.conn.Close(); return nil }

// fakeAgent is the test's agent on conn: every init succeeds at once, and
// invoke answers every invocation.
func fakeAgent(conn net.Conn, invoke func(ac *agentproto.Conn, inv agentproto.Invoke, payload []byte)) {
	ac := agentproto.NewConn(conn)
	for {
		f, err := ac.Receive()
		if err != nil {
			return
		}
		switch f.Type {
		case agentproto.TStart:
			_ = ac.Send(agentproto.TInitDone, &agentproto.InitDone{DurationMs: 1}, nil)
		case agentproto.TInvoke:
			var inv agentproto.Invoke
			_ = f.Decode(&inv)
			invoke(ac, inv, f.Body)
		}
	}
}

// streamingEnv starts an environment whose agent (the test's) answers
// every invocation with parts, its Result, and then one part too many;
// silent, it sends the parts and nothing more (a wedged agent).
func streamingEnv(t *testing.T, parts []string, silent bool) *Environment {
	t.Helper()
	host, agent := net.Pipe()
	sb := &pipeSandbox{conn: host, done: make(chan struct{})}
	t.Cleanup(func() { agent.Close() })
	go fakeAgent(agent, func(ac *agentproto.Conn, inv agentproto.Invoke, _ []byte) {
		for _, p := range parts {
			_ = ac.Send(agentproto.TChunk, &agentproto.Chunk{RequestID: inv.RequestID, ContentType: "text/plain"}, []byte(p))
		}
		if silent {
			return
		}
		_ = ac.Send(agentproto.TResult, &agentproto.Result{RequestID: inv.RequestID, ContentType: "text/plain"}, nil)
		_ = ac.Send(agentproto.TChunk, &agentproto.Chunk{RequestID: inv.RequestID}, []byte(" late"))
	})
	e, err := StartIn(context.Background(), sb, "pipe", Config{InitTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Destroy() })
	return e
}

// TestStreamPartsEndWithTheInvocation: parts of a streamed response reach
// Request.Stream on the invoking goroutine, before Invoke returns, all
// those sent ahead of the Result; a part sent after the Result (the
// runtime was still writing when it was killed) reaches nobody, and a
// Stream that fails gets no more parts.
func TestStreamPartsEndWithTheInvocation(t *testing.T) {
	e := streamingEnv(t, []string{"one ", "two ", "three"}, false)
	var mu sync.Mutex
	var got string
	returned := false
	stream := func(ct string, p []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if returned {
			t.Errorf("part %q after Invoke returned", p)
		}
		got += string(p)
		return nil
	}
	resp, err := e.Invoke(context.Background(), &Request{RequestID: "r1", Payload: []byte("{}"), Timeout: 5 * time.Second, Stream: stream})
	mu.Lock()
	returned = true
	mu.Unlock()
	if err != nil || resp.FunctionError || got != "one two three" {
		t.Fatalf("Invoke: %+v %v, streamed %q; want one two three", resp, err, got)
	}
	time.Sleep(100 * time.Millisecond) // the late part arrives, and must go nowhere

	// A Stream that fails once is not called again.
	calls := 0
	e.state.Store(int32(Idle))
	resp, err = e.Invoke(context.Background(), &Request{RequestID: "r2", Payload: []byte("{}"), Timeout: 5 * time.Second,
		Stream: func(string, []byte) error { calls++; return io.ErrClosedPipe }})
	if err != nil || calls != 1 {
		t.Fatalf("failing Stream: %+v %v, called %d times; want once", resp, err, calls)
	}
}

// TestSlowStreamIsNotATimeout: a caller slow to take the parts holds the
// agent's Result behind them for longer than the function's timeout and
// the watchdog's slack; that is the caller's time, not the function's:
// the invocation succeeds with every part, and the environment lives.
func TestSlowStreamIsNotATimeout(t *testing.T) {
	// More parts than the queue holds are still unread when the watchdog
	// (timeout + 3 s) fires: the Result is behind them on the connection.
	parts := make([]string, 360)
	for i := range parts {
		parts[i] = "p"
	}
	e := streamingEnv(t, parts, false)
	n := 0
	resp, err := e.Invoke(context.Background(), &Request{RequestID: "slow", Payload: []byte("{}"), Timeout: 100 * time.Millisecond,
		Stream: func(string, []byte) error { time.Sleep(10 * time.Millisecond); n++; return nil }})
	if err != nil || resp.FunctionError || resp.Fatal || n != len(parts) || e.State() == Dead {
		t.Fatalf("slow caller: %+v %v, %d of %d parts, state %v; want success with every part", resp, err, n, len(parts), e.State())
	}
}

// TestSlowStreamThenWedgedAgent: writing to a slow caller before the
// deadline holds nothing back, so it does not delay the watchdog: an agent
// that then goes silent is found out at the deadline plus the slack.
func TestSlowStreamThenWedgedAgent(t *testing.T) {
	e := streamingEnv(t, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, true)
	start := time.Now()
	resp, err := e.Invoke(context.Background(), &Request{RequestID: "wedged", Payload: []byte("{}"), Timeout: time.Second,
		Stream: func(string, []byte) error { time.Sleep(100 * time.Millisecond); return nil }})
	took := time.Since(start)
	if err != nil || !resp.Fatal || resp.ErrorType != "Sandbox.Timedout" {
		t.Fatalf("wedged agent: %+v %v; want the watchdog's Sandbox.Timedout", resp, err)
	}
	if took > 4400*time.Millisecond {
		t.Errorf("the watchdog took %v; want about 4 s (1 s timeout + 3 s): writes before the deadline were credited", took)
	}
}
