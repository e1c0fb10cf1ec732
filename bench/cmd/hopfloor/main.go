// Command hopfloor measures what a chain of HTTP hops over loopback costs
// on this machine with nothing else to do: the floor under a warm invoke.
// The emulator's path is two processes (client → emulator → runtime);
// nubo's is three (client → nubo → agent → runtime, the middle hop a
// socketpair). Each hop here is a Go net/http server forwarding a 100-byte
// JSON body over a kept-alive connection to the next, the last one echoing
// it; the client is sequential, as in figure 1.
//
//	go run ./bench/cmd/hopfloor [-n 3000] [-rounds 2]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

func main() {
	n := flag.Int("n", 3000, "round trips per series")
	rounds := flag.Int("rounds", 2, "rounds over all series")
	flag.Parse()
	if flag.NArg() > 0 {
		child(flag.Args())
		return
	}
	// One process per hop; each child prints its URL and serves until
	// its stdin closes, that is until this process exits.
	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	spawn := func(args ...string) string {
		c := exec.Command(os.Args[0], args...)
		out, err := c.StdoutPipe()
		if err != nil {
			panic(err)
		}
		if _, err := c.StdinPipe(); err != nil {
			panic(err)
		}
		if err := c.Start(); err != nil {
			panic(err)
		}
		procs = append(procs, c)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			panic(err)
		}
		return strings.TrimSpace(line)
	}
	last := spawn("echo")
	one := spawn("forward", last)
	two := spawn("forward", one)
	payload := []byte(`{"key":"` + strings.Repeat("x", 88) + `"}`)
	c := newClient()
	for range *rounds {
		measure("1 process (client → echo)", *n, last, c, payload)
		measure("2 processes (client → fwd → echo)", *n, one, c, payload)
		measure("3 processes (client → fwd → fwd → echo)", *n, two, c, payload)
	}
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
}

// child serves one hop: "echo", or "forward <url>".
func child(args []string) {
	var h http.HandlerFunc
	switch args[0] {
	case "echo":
		h = func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		}
	case "forward":
		next, c := args[1], newClient()
		h = func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			resp, err := c.Post(next, "application/json", bytes.NewReader(b))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(out)
		}
	default:
		fmt.Fprintln(os.Stderr, "hopfloor: unknown role", args[0])
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(l, h) }()
	fmt.Println("http://" + l.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent is gone
}

func measure(name string, n int, url string, c *http.Client, payload []byte) {
	lat := make([]time.Duration, n)
	for i := range lat {
		t0 := time.Now()
		resp, err := c.Post(url, "application/json", bytes.NewReader(payload))
		if err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat[i] = time.Since(t0)
		if !bytes.Equal(b, payload) {
			panic(fmt.Sprintf("%s: answer %q", name, b))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p int) float64 { return float64(lat[(n-1)*p/100].Microseconds()) / 1000 }
	fmt.Printf("%-42s n=%d  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n", name, n, q(50), q(90), q(99))
}
