// Command hopfloor measures what a chain of HTTP hops over loopback costs
// on this machine with nothing else to do: the floor under a warm invoke.
// The emulator's path is two processes (client → emulator → runtime);
// nubo's is three (client → nubo → agent → runtime, the middle hop a
// socketpair). Each hop here is a Go net/http server forwarding a 100-byte
// JSON body over a kept-alive connection to the next, the last one echoing
// it; the client is sequential, as in figure 1.
//
// With the echo bootstrap and the emulator built (make bench), it also
// measures the floor under figure 2's concurrency target: the least server
// (see serveLambda) with -concurrency runtimes of its own, driven by as
// many client connections at once, against the emulator's sequential
// throughput. No server can do less per request than that one, so no
// server reaches a throughput ratio above the one printed. It is measured
// twice: as is, and with SigV4 on, as the figures count (the client signs
// each request as nubo-bench does, the server verifies it with nubo's
// verifier and does nothing else), once more with SigV4 and the
// server's connections read and written as nubo's are (package rawio), and
// once more with a relay process per runtime between the server and it,
// as nubo has an agent per environment (serveRelayed): the floor for any
// server that keeps a process between itself and the function.
//
//	go run ./bench/cmd/hopfloor [-n 3000] [-rounds 2] [-concurrency 4] [-duration 2s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nubo-dev/nubo/bench/internal/procstat"
	"github.com/nubo-dev/nubo/internal/rawio"
	"github.com/nubo-dev/nubo/internal/sigv4"
)

func main() {
	n := flag.Int("n", 3000, "round trips per series")
	rounds := flag.Int("rounds", 2, "rounds over all series")
	echo := flag.String("echo", "bench/.bin/echo-bootstrap", "the aws-lambda-go echo bootstrap (skipped when missing)")
	rie := flag.String("rie", "bench/.bin/aws-lambda-rie", "the Runtime Interface Emulator (skipped when missing)")
	conc := flag.Int("concurrency", 4, "client connections and runtimes behind the least server in the throughput floor")
	dur := flag.Duration("duration", 2*time.Second, "time per throughput series per round")
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
	pids := map[string]int{} // a child's URL: its pid
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
		url := strings.TrimSpace(line)
		pids[url] = c.Process.Pid
		return url
	}
	last := spawn("echo")
	one := spawn("forward", last)
	two := spawn("forward", one)
	var lean, leanRaw, leanRelay, wide, signed, signedRaw, relayed, emu string
	if _, err := os.Stat(*echo); err == nil {
		abs, _ := filepath.Abs(*echo)
		lean = spawn("lambda", abs, "1") + "/invoke"
		leanRaw = spawn("lambda", abs, "1", "raw") + "/invoke"
		leanRelay = spawn("lambda", abs, "1", "raw", "relay") + "/invoke"
		wide = spawn("lambda", abs, strconv.Itoa(*conc)) + "/invoke"
		signed = spawn("lambda", abs, strconv.Itoa(*conc), "sign") + "/invoke"
		signedRaw = spawn("lambda", abs, strconv.Itoa(*conc), "sign", "raw") + "/invoke"
		relayed = spawn("lambda", abs, strconv.Itoa(*conc), "sign", "raw", "relay") + "/invoke"
		if _, err := os.Stat(*rie); err == nil {
			bin, _ := filepath.Abs(*rie)
			emu = startRIE(bin, abs, &procs)
			pids[strings.TrimSuffix(emu, "/invoke")] = procs[len(procs)-1].Process.Pid
		}
	}
	pidOf := func(url string) int { return pids[strings.TrimSuffix(url, "/invoke")] }
	payload := []byte(`{"key":"` + strings.Repeat("x", 88) + `"}`)
	c := newClient()
	for range *rounds {
		measure("1 process (client → echo)", *n, last, c, payload)
		measure("2 processes (client → fwd → echo)", *n, one, c, payload)
		measure("3 processes (client → fwd → fwd → echo)", *n, two, c, payload)
		var pe, pl, pr, pv float64
		if emu != "" {
			pe = measure("emulator (client → RIE → aws-lambda-go)", *n, emu, c, payload)
		}
		if lean != "" {
			pl = measure("least server (client → srv → aws-lambda-go)", *n, lean, c, payload)
			pr = measure("the same, raw I/O (package rawio)", *n, leanRaw, c, payload)
			pv = measure("the same, a relay process before the runtime", *n, leanRelay, c, payload)
		}
		if pe > 0 && pl > 0 {
			fmt.Printf("%-42s %.2f× (raw I/O: %.2f×; with a relay: %.2f×) the emulator's p50\n", "least server", pl/pe, pr/pe, pv/pe)
		}
		if emu != "" && wide != "" {
			te := throughput("emulator, sequential", emu, pidOf(emu), 1, *dur, payload, false)
			tw := throughput(fmt.Sprintf("least server, %d runtimes, concurrency %d", *conc, *conc), wide, pidOf(wide), *conc, *dur, payload, false)
			ts := throughput(fmt.Sprintf("the same, SigV4 on, concurrency %d", *conc), signed, pidOf(signed), *conc, *dur, payload, true)
			tr := throughput(fmt.Sprintf("the same, SigV4 on, raw I/O, concurrency %d", *conc), signedRaw, pidOf(signedRaw), *conc, *dur, payload, true)
			tl := throughput(fmt.Sprintf("the same, a relay per runtime, concurrency %d", *conc), relayed, pidOf(relayed), *conc, *dur, payload, true)
			fmt.Printf("%-42s %.2f× (SigV4 off), %.2f× (on), %.2f× (on, raw I/O), %.2f× (on, raw I/O, a relay per runtime) the emulator's sequential throughput\n", "least server", tw/te, ts/te, tr/te, tl/te)
		}
	}
}

// throughput drives url from c connections at once for d and returns the
// completed requests per second; sign signs each request anew with SigV4.
// With the server's pid, it also prints the CPU each party used per
// request (see parties).
func throughput(name, url string, pid, c int, d time.Duration, payload []byte, sign bool) float64 {
	before := parties(pid)
	var done atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient()
			signer := v4.NewSigner()
			creds := aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}
			for time.Now().Before(stop) {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
				if err != nil {
					panic(err)
				}
				req.Header.Set("Content-Type", "application/json")
				if sign {
					sum := sha256.Sum256(payload)
					if err := signer.SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now()); err != nil {
						panic(err)
					}
				}
				resp, err := cl.Do(req)
				if err != nil {
					panic(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(bytes.TrimSpace(b), payload) {
					panic(fmt.Sprintf("%s: answer %q", name, b))
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(done.Load()) / time.Since(t0).Seconds()
	fmt.Printf("%-42s %.0f req/s", name, rate)
	if pid > 0 && done.Load() > 0 {
		after := parties(pid)
		per := func(k string) float64 {
			return float64(after[k].Sub(before[k]).CPU.Microseconds()) / float64(done.Load())
		}
		sw := func(k string) float64 { return float64(after[k].Sub(before[k]).Switches) / float64(done.Load()) }
		fmt.Printf("; CPU µs/request: client %.0f, server %.0f, relays %.0f, runtimes %.0f; machine busy %.0f; switches/request: %.1f, %.1f, %.1f, %.1f",
			per("client"), per("server"), per("relays"), per("runtimes"), per("machine"), sw("client"), sw("server"), sw("relays"), sw("runtimes"))
	}
	fmt.Println()
	return rate
}

// parties is what each party of a throughput series has used so far: this
// process ("client"), the server (pid), its relay processes, the runtimes
// below, and the whole machine.
func parties(pid int) map[string]procstat.Use {
	u := map[string]procstat.Use{"client": procstat.Of(os.Getpid())}
	if pid <= 0 {
		return u
	}
	busy, _ := procstat.Busy()
	u["machine"] = procstat.Use{CPU: busy}
	u["server"] = procstat.Of(pid)
	for _, p := range procstat.Descendants(procstat.ParentMap(), pid) {
		k := "runtimes"
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); err == nil && bytes.Contains(b, []byte("\x00relay\x00")) {
			k = "relays"
		}
		u[k] = u[k].Add(procstat.Of(p))
	}
	return u
}

// startRIE starts the emulator serving bootstrap and waits until it
// answers; it returns its invoke URL.
func startRIE(bin, bootstrap string, procs *[]*exec.Cmd) string {
	ports := freePorts(2)
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	c := exec.Command(bin, "--runtime-interface-emulator-address", addr,
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", ports[1]), bootstrap)
	c.Dir = filepath.Dir(bootstrap)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		panic(err)
	}
	*procs = append(*procs, c)
	url := "http://" + addr + "/2015-03-31/functions/function/invocations"
	cl := newClient()
	for range 200 {
		resp, err := cl.Post(url, "application/json", strings.NewReader(`{}`))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return url
		}
		time.Sleep(20 * time.Millisecond)
	}
	panic("the emulator did not answer")
}

// serveLambda is the least a Lambda server can do for n runtimes: a client
// request's body goes to a runtime's pending /next, the runtime's
// /response goes back as the answer. With v, a request must carry a valid
// SigV4 signature first.
func serveLambda(bootstrap string, n int, v *sigv4.Verifier, wrap func(net.Listener) net.Listener) http.HandlerFunc {
	type invocation struct {
		id   string
		body []byte
		done chan []byte
	}
	var (
		seq     atomic.Int64
		pending = make(chan *invocation)
		mu      sync.Mutex
		current = map[string]*invocation{}
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", func(w http.ResponseWriter, r *http.Request) {
		inv := <-pending
		mu.Lock()
		current[inv.id] = inv
		mu.Unlock()
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:echo")
		h.Set("Content-Type", "application/json")
		_, _ = w.Write(inv.body)
	})
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		inv := current[r.PathValue("id")]
		delete(current, r.PathValue("id"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		if inv != nil {
			inv.done <- b
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(wrap(l), mux) }()
	for range n {
		startRuntime(bootstrap, l.Addr().String())
	}
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if v != nil {
			if _, err := v.Verify(r, b); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		inv := &invocation{id: strconv.FormatInt(seq.Add(1), 10), body: b, done: make(chan []byte, 1)}
		pending <- inv
		out := <-inv.done
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

// startRuntime starts the bootstrap with its Runtime API at api; it dies
// with its parent.
func startRuntime(bootstrap, api string) {
	rt := exec.Command(bootstrap)
	rt.Env = append(os.Environ(), "AWS_LAMBDA_RUNTIME_API="+api)
	rt.Stdout, rt.Stderr = os.Stderr, os.Stderr
	rt.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := rt.Start(); err != nil {
		panic(err)
	}
}

// freePorts returns n distinct ports free on loopback now. The listeners
// are held until all are found (one closed and opened again can give the
// same port twice) and closed before it returns, for the emulator to bind.
func freePorts(n int) []int {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
}

// child serves one hop: "echo", or "forward <url>".
func child(args []string) {
	var h http.HandlerFunc
	wrap := func(l net.Listener) net.Listener { return l }
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
	case "lambda":
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "hopfloor: lambda wants a runtime count")
			os.Exit(2)
		}
		var v *sigv4.Verifier
		relayed := false
		for _, opt := range args[3:] {
			switch opt {
			case "sign":
				v = &sigv4.Verifier{Lookup: func(string) (string, bool) { return "test", true }}
			case "raw":
				wrap = func(l net.Listener) net.Listener { return rawio.Listener{Listener: l} }
			case "relay":
				relayed = true
			}
		}
		if relayed {
			h = serveRelayed(os.Args[0], args[1], n, v)
		} else {
			h = serveLambda(args[1], n, v, wrap)
		}
	case "relay":
		relayMain(args[1])
		return
	default:
		fmt.Fprintln(os.Stderr, "hopfloor: unknown role", args[0])
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(wrap(l), h) }()
	fmt.Println("http://" + l.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent is gone
}

func measure(name string, n int, url string, c *http.Client, payload []byte) float64 {
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
		if !bytes.Equal(bytes.TrimSpace(b), payload) {
			panic(fmt.Sprintf("%s: answer %q", name, b))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p int) float64 { return float64(lat[(n-1)*p/100].Microseconds()) / 1000 }
	fmt.Printf("%-42s n=%d  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n", name, n, q(50), q(90), q(99))
	return q(50)
}
