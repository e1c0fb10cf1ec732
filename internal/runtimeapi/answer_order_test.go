package runtimeapi

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// orderLog records, in order, what a test saw happen.
type orderLog struct {
	mu  sync.Mutex
	got []string
}

func (l *orderLog) add(s string) { l.mu.Lock(); l.got = append(l.got, s); l.mu.Unlock() }

func (l *orderLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.got
	l.got = nil
	return g
}

// acceptedConn logs each 202 the server starts to write.
type acceptedConn struct {
	net.Conn
	log *orderLog
}

func (c acceptedConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("HTTP/1.1 202")) {
		c.log.add("202")
	}
	return c.Conn.Write(p)
}

type acceptedListener struct {
	net.Listener
	log *orderLog
}

func (l acceptedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return acceptedConn{Conn: c, log: l.log}, nil
}

// TestAnswerReachesCallerBefore202: with one P, as the agent runs, the
// runtime's answer reaches Invoke's caller before the server writes the
// runtime its 202: that write wakes the runtime, and the caller's answer
// is the invocation's latency. Not parallel: it sets GOMAXPROCS. It
// checks the Go scheduler's order, not a duration: the goroutine readied
// by the answer runs before the one that yields, except when the
// scheduler takes its global run queue first (one pick in 61 in Go 1.26),
// so it asks for most rounds, not all (writing the 202 first, none are).
// A Go release that schedules otherwise may need this revisited.
func TestAnswerReachesCallerBefore202(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	log := &orderLog{}
	e := newEnvOn(t, Options{}, func(l net.Listener) net.Listener { return acceptedListener{Listener: l, log: log} })
	const rounds = 30
	first := 0
	for i := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := make(chan error, 1)
		go func() {
			_, err := e.s.Invoke(ctx, newInv(fmt.Sprintf("r-%d", i), `{}`))
			log.add("result")
			done <- err
		}()
		id, _, _ := e.fakeNext()
		log.take() // only the answer's order counts
		st, _, b := e.mustDo("POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, "{}")
		if st != http.StatusAccepted {
			t.Fatalf("response: %d %s", st, b)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		cancel()
		if got := log.take(); len(got) == 2 && got[0] == "result" {
			first++
		} else if len(got) != 2 {
			t.Fatalf("round %d saw %v, want a result and a 202", i, got)
		}
	}
	if first < rounds*3/4 {
		t.Fatalf("the answer reached the caller before the 202 in %d of %d rounds, want most", first, rounds)
	}
	t.Logf("answer first in %d of %d rounds", first, rounds)
}
