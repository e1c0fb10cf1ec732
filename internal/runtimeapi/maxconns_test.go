package runtimeapi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestMaxConns: past MaxConns, a new connection is closed as it is
// accepted, and those already served go on being served; once one of
// them closes, a new one is served again.
func TestMaxConns(t *testing.T) {
	s := New(Options{FunctionName: "f", MaxConns: 2})
	addr, stop := serveLocal(t, s, nil)
	defer stop()
	ping := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /2018-06-01/ping HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "pong" {
			t.Errorf("ping answered %d %q", resp.StatusCode, body)
		}
		return err
	}
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ping(c); err != nil {
			t.Fatalf("a connection within the bound: %v", err)
		}
		conns = append(conns, c)
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := ping(extra); err == nil {
		t.Fatal("a third connection was served with MaxConns 2")
	}
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		err = ping(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one of two closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := ping(conns[1]); err != nil {
		t.Fatalf("a served connection stopped being served: %v", err)
	}
}
