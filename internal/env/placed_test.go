package env

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/agentproto"
)

// placedSandbox counts the invocations its environment reports.
type placedSandbox struct {
	pipeSandbox
	mu             sync.Mutex
	started, ended int
	nested         bool
}

func (p *placedSandbox) InvocationStarted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started != p.ended {
		p.nested = true
	}
	p.started++
}

func (p *placedSandbox) InvocationEnded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended++
}

// TestPlacedInvocationsPair: every invocation, the cold start's first
// one and one that finds its environment dead included, starts and ends
// once, never inside another.
func TestPlacedInvocationsPair(t *testing.T) {
	host, agent := net.Pipe()
	sb := &placedSandbox{pipeSandbox: pipeSandbox{conn: host, done: make(chan struct{})}}
	defer agent.Close()
	go fakeAgent(agent, func(ac *agentproto.Conn, inv agentproto.Invoke, payload []byte) {
		_ = ac.Send(agentproto.TResult, &agentproto.Result{RequestID: inv.RequestID}, payload)
	})
	req := func(id string) *Request {
		return &Request{RequestID: id, Payload: []byte(`{}`), Timeout: 5 * time.Second}
	}
	e, resp, err := StartInvoke(context.Background(), sb, "placed", Config{InitTimeout: 5 * time.Second}, req("cold"))
	if err != nil || resp.FunctionError {
		t.Fatalf("cold start: %+v %v", resp, err)
	}
	defer e.Destroy()
	for _, id := range []string{"warm-1", "warm-2"} {
		waitIdle(t, e)
		if resp, err := e.Invoke(context.Background(), req(id)); err != nil || resp.FunctionError {
			t.Fatalf("%s: %+v %v", id, resp, err)
		}
	}
	waitIdle(t, e)
	e.markDead("test")
	if _, err := e.Invoke(context.Background(), req("dead")); err == nil {
		t.Fatal("an invocation of a dead environment ran")
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.started != 3 || sb.ended != 3 || sb.nested {
		t.Errorf("started %d, ended %d, nested %v; want 3 and 3, none nested", sb.started, sb.ended, sb.nested)
	}
}

// waitIdle waits for e to take its next invocation.
func waitIdle(t *testing.T, e *Environment) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); e.State() != Idle; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("environment still %v", e.State())
		}
	}
}

// flushingSink records whether it was flushed.
type flushingSink struct {
	mu      sync.Mutex
	flushed bool
}

func (f *flushingSink) Append([]byte, time.Time) {}
func (f *flushingSink) Flush()                   { f.mu.Lock(); f.flushed = true; f.mu.Unlock() }

// TestDestroyFlushesLogs: a sink that batches gets its last lines out
// when the environment is destroyed, not a batch interval later.
func TestDestroyFlushesLogs(t *testing.T) {
	host, agent := net.Pipe()
	defer agent.Close()
	go fakeAgent(agent, func(*agentproto.Conn, agentproto.Invoke, []byte) {})
	sink := &flushingSink{}
	e, err := StartIn(context.Background(), &pipeSandbox{conn: host, done: make(chan struct{})}, "flush", Config{InitTimeout: 5 * time.Second, Logs: sink})
	if err != nil {
		t.Fatal(err)
	}
	e.Destroy()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if !sink.flushed {
		t.Error("Destroy did not flush the log sink")
	}
}
