package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nubo-dev/nubo/bench/internal/procstat"
)

// The development account nubo enables on loopback.
const (
	devAccount = "000000000000"
	devRegion  = "us-east-1"
	devRole    = "arn:aws:iam::" + devAccount + ":role/lambda"
)

// logDuration reads a numeric log field as a duration: nanoseconds (how
// slog writes a time.Duration) unless its name says milliseconds or
// microseconds ("runtime_init_ms").
func logDuration(field string, v float64) time.Duration {
	switch {
	case strings.HasSuffix(field, "_ms"):
		return time.Duration(v * float64(time.Millisecond))
	case strings.HasSuffix(field, "_us"):
		return time.Duration(v * float64(time.Microsecond))
	}
	return time.Duration(int64(v))
}

// phases is one environment's cold start as nubo's debug log tells it:
// every debug line naming the environment ("sandbox created",
// "environment started", ...), each with its duration fields. The schema
// is nubo's and changes with it, so nothing here names a phase: every
// numeric field of such a line is a duration (see logDuration).
type phases map[string]map[string]time.Duration // msg → field → duration

// nuboServer is one `nubo serve` child of the benchmark, driven only through
// its public API, as any client would.
type nuboServer struct {
	cmd      *exec.Cmd
	base     string
	client   *http.Client
	signer   *v4.Signer
	creds    aws.Credentials
	runtimes []string
	logPath  string
	exited   chan struct{}
	exitErr  error

	mu     sync.Mutex
	envs   map[string]phases
	byFunc map[string][]string // function name → env ids, in start order
}

type nuboOptions struct {
	bin        string
	dir        string // data dir and log live here
	capacityMB int
	extra      []string // more `nubo serve` flags (--nubo-args)
}

// startNubo runs `nubo serve` on a free loopback port with debug logs in
// JSON, so the per-phase cold start timings can be read back.
func startNubo(ctx context.Context, o nuboOptions) (*nuboServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"serve", "--listen", addr, "--data-dir", filepath.Join(o.dir, "data"),
		"--log-level", "debug", "--log-format", "json"}
	capacity := o.capacityMB
	if capacity == 0 {
		// Memory limits are ceilings, not allocations: 64 environments of
		// 1769 MB at concurrency 64 must be admitted on this machine too.
		capacity = 64 * memoryMB * 2
	}
	args = append(args, "--capacity-mb", fmt.Sprint(capacity))
	args = append(args, o.extra...)
	cmd := exec.Command(o.bin, args...)
	// nubo must not outlive the benchmark even if the benchmark is killed:
	// it owns sandboxes, mounts and cgroups that only its own shutdown
	// removes, and SIGTERM lets it run that shutdown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(o.dir, "nubo.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	tr := &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 5 * time.Minute,
		DisableCompression: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	n := &nuboServer{
		cmd: cmd, base: "http://" + addr, client: &http.Client{Transport: tr, Timeout: 2 * time.Minute},
		signer: v4.NewSigner(), creds: aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test", Source: "nubo-bench"},
		logPath: logPath, exited: make(chan struct{}), envs: map[string]phases{}, byFunc: map[string][]string{},
	}
	if _, err := start(cmd); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	ready := make(chan struct{})
	go n.readLog(stderr, logFile, ready)
	go func() {
		n.exitErr = cmd.Wait()
		logFile.Close()
		close(n.exited)
	}()
	select {
	case <-ready:
		return n, nil
	case <-n.exited:
		return nil, fmt.Errorf("nubo serve exited before serving (%v); see %s", n.exitErr, logPath)
	case <-time.After(60 * time.Second):
		n.stop()
		return nil, fmt.Errorf("nubo serve not ready after 60s; see %s", logPath)
	case <-ctx.Done():
		n.stop()
		return nil, ctx.Err()
	}
}

// readLog keeps nubo's own log (less the embedded NATS server's chatter) and
// picks out readiness, the runtimes on offer and the cold start phases.
func (n *nuboServer) readLog(r io.Reader, out io.Writer, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Bytes()
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			out.Write(append(line, '\n'))
			continue
		}
		if rec["component"] == "nats" {
			continue
		}
		out.Write(append(line, '\n'))
		msg, _ := rec["msg"].(string)
		switch msg {
		case "execution ready":
			if s, ok := rec["runtimes"].(string); ok {
				n.mu.Lock()
				n.runtimes = strings.Split(s, ",")
				n.mu.Unlock()
			}
		case "nubo serving":
			if !signalled {
				signalled = true
				close(ready)
			}
		default:
			if rec["level"] == "DEBUG" {
				n.notePhases(msg, rec)
			}
		}
	}
	io.Copy(io.Discard, r)
}

func (n *nuboServer) notePhases(msg string, rec map[string]any) {
	id, _ := rec["env"].(string)
	if id == "" {
		return
	}
	f := map[string]time.Duration{}
	for k, v := range rec {
		if x, ok := v.(float64); ok {
			f[k] = logDuration(k, x)
		}
	}
	fn, named := rec["function"].(string)
	if len(f) == 0 && !named {
		return // a line about the environment that times nothing
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.envs[id]
	if p == nil {
		p = phases{}
		n.envs[id] = p
	}
	p[msg] = f
	// "environment started" names the function: the key to join a
	// function's first invoke to its environment's phases.
	if named {
		if i := strings.LastIndex(fn, ":function:"); i >= 0 {
			name := fn[i+len(":function:"):]
			n.byFunc[name] = append(n.byFunc[name], id)
		}
	}
}

// firstEnv returns the phases of the first environment nubo started for
// the function. The log line may trail the invoke's response by a moment.
func (n *nuboServer) firstEnv(name string, wait time.Duration) (phases, bool) {
	deadline := time.Now().Add(wait)
	for {
		n.mu.Lock()
		ids := n.byFunc[name]
		var p phases
		ok := false
		if len(ids) > 0 {
			p, ok = phases{}, true
			for msg, f := range n.envs[ids[0]] {
				p[msg] = f
			}
		}
		n.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return p, ok
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *nuboServer) runtimeIDs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.runtimes...)
}

func (n *nuboServer) pid() int { return n.cmd.Process.Pid }

// stop ends nubo the way an operator would (SIGTERM), so it tears down
// every environment itself; SIGKILL only if it hangs.
func (n *nuboServer) stop() error {
	n.client.CloseIdleConnections()
	select {
	case <-n.exited:
		// Nobody asked it to stop: whatever it says last is the reason.
		return fmt.Errorf("nubo serve exited while measured (%v); its log ends:\n%s", n.exitErr, tailFile(n.logPath, 15))
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return n.exitErr
	case <-time.After(60 * time.Second):
		n.cmd.Process.Kill()
		<-n.exited
		return fmt.Errorf("nubo serve ignored SIGTERM for 60s and was killed")
	}
}

// do sends one SigV4-signed request as an AWS SDK would: the payload hash
// is computed and the request signed anew for every call, so that cost is
// part of every figure, exactly as it is for a real client.
func (n *nuboServer) do(ctx context.Context, method, path string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	sum := sha256.Sum256(body)
	if err := n.signer.SignHTTP(ctx, n.creds, req, hex.EncodeToString(sum[:]), "lambda", devRegion, time.Now()); err != nil {
		return 0, nil, nil, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// invoke times one RequestResponse Invoke from before signing to the last
// byte of the response.
func (n *nuboServer) invoke(ctx context.Context, name string, payload []byte) (time.Duration, []byte, error) {
	t0 := time.Now()
	st, h, b, err := n.do(ctx, http.MethodPost, "/2015-03-31/functions/"+name+"/invocations", payload)
	d := time.Since(t0)
	if err != nil {
		return 0, nil, fmt.Errorf("invoke %s: %w%s", name, err, n.liveness())
	}
	if st != http.StatusOK {
		return 0, nil, fmt.Errorf("invoke %s: HTTP %d: %s", name, st, trim(b))
	}
	if fe := h.Get("X-Amz-Function-Error"); fe != "" {
		return 0, nil, fmt.Errorf("invoke %s: function error %s: %s", name, fe, trim(b))
	}
	return d, b, nil
}

type functionSpec struct {
	Runtime string
	Handler string
	Zip     []byte
}

func (n *nuboServer) createFunction(ctx context.Context, name string, f functionSpec) error {
	body, _ := json.Marshal(map[string]any{
		"FunctionName": name, "Runtime": f.Runtime, "Handler": f.Handler, "Role": devRole,
		"MemorySize": memoryMB, "Timeout": 30, "Code": map[string]string{"ZipFile": base64.StdEncoding.EncodeToString(f.Zip)},
	})
	st, _, b, err := n.do(ctx, http.MethodPost, "/2015-03-31/functions", body)
	if err != nil {
		return fmt.Errorf("create function %s: %w", name, err)
	}
	if st != http.StatusCreated {
		return fmt.Errorf("create function %s: HTTP %d: %s", name, st, trim(b))
	}
	return n.waitActive(ctx, name)
}

func (n *nuboServer) waitActive(ctx context.Context, name string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, _, b, err := n.do(ctx, http.MethodGet, "/2015-03-31/functions/"+name+"/configuration", nil)
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("get function %s: HTTP %d: %s", name, st, trim(b))
		}
		var c struct{ State, StateReason string }
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		switch c.State {
		case "Active":
			return nil
		case "Failed":
			return fmt.Errorf("function %s failed: %s", name, c.StateReason)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("function %s still %s after 60s", name, c.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *nuboServer) deleteFunction(ctx context.Context, name string) error {
	st, _, b, err := n.do(ctx, http.MethodDelete, "/2015-03-31/functions/"+name, nil)
	if err != nil {
		return err
	}
	if st != http.StatusNoContent && st != http.StatusOK {
		return fmt.Errorf("delete function %s: HTTP %d: %s", name, st, trim(b))
	}
	return nil
}

// createMany creates functions four at a time (the upload and unpacking are
// preparation, never timed).
func (n *nuboServer) createMany(ctx context.Context, names []string, f functionSpec) error {
	return parallel(ctx, 4, len(names), func(i int) error { return n.createFunction(ctx, names[i], f) })
}

func (n *nuboServer) deleteMany(ctx context.Context, names []string) error {
	return parallel(ctx, 4, len(names), func(i int) error { return n.deleteFunction(ctx, names[i]) })
}

// environments lists the agents of nubo's live environments, with the
// process table they were read from. Each sandbox's agent is a process
// below nubo named nubo-agent (a child of nubo's spawner, or of nubo
// itself in older builds); an agent with a process below it has a
// runtime, one without is a shell nubo made ahead of demand and holds in
// its pool, which is not an environment yet.
func (n *nuboServer) environments() ([]int, map[int]int) {
	envs, _, pm := n.agents()
	return envs, pm
}

// agents splits the agents below nubo into environments and pooled shells.
func (n *nuboServer) agents() (envs, shells []int, pm map[int]int) {
	pm = procstat.ParentMap()
	kids := map[int]int{}
	for _, pp := range pm {
		kids[pp]++
	}
	for _, p := range procstat.Descendants(pm, n.pid()) {
		if !isAgent(p) {
			continue
		}
		if kids[p] > 0 {
			envs = append(envs, p)
		} else {
			shells = append(shells, p)
		}
	}
	return envs, shells, pm
}

// helpers are nubo's own processes beside its sandboxes (the spawner that
// clones them): their CPU and memory count as nubo's.
func (n *nuboServer) helpers() []int {
	var out []int
	for p, pp := range procstat.ParentMap() {
		if pp == n.pid() && !isAgent(p) {
			out = append(out, p)
		}
	}
	return out
}

// cpu is the CPU time of nubo serve and its helpers.
func (n *nuboServer) cpu() (time.Duration, error) {
	total, err := procstat.CPU(n.pid())
	for _, p := range n.helpers() {
		if c, err := procstat.CPU(p); err == nil {
			total += c
		}
	}
	return total, err
}

// cpuShare is the CPU time and context switches used so far by this
// benchmark, nubo, its agents and the processes below them (the runtimes).
// Only live processes count: a throughput target runs on environments that
// stay.
func (n *nuboServer) cpuShare() cpuShare {
	var s cpuShare
	s.machine.CPU, _ = procstat.Busy()
	s.client = procstat.Of(os.Getpid())
	s.server = procstat.Of(n.pid())
	for _, p := range n.helpers() {
		s.server = s.server.Add(procstat.Of(p))
	}
	envs, shells, pm := n.agents()
	for _, a := range append(envs, shells...) {
		s.agent = s.agent.Add(procstat.Of(a))
		for _, p := range procstat.Descendants(pm, a) {
			s.runtime = s.runtime.Add(procstat.Of(p))
		}
	}
	return s
}

// memory is the smaps rollup of nubo serve and its helpers.
func (n *nuboServer) memory() (rollup, error) {
	total, err := smapsRollup(n.pid())
	for _, p := range n.helpers() {
		if r, err := smapsRollup(p); err == nil {
			total.RSS += r.RSS
			total.PSS += r.PSS
		}
	}
	return total, err
}

// waitEnvs waits until nubo has at most max environments left, so a block
// of measurements never overlaps the teardown of the previous one.
// pooledShells counts the shells nubo holds ready: agents without a
// process below them (see environments).
func (n *nuboServer) pooledShells() int {
	_, shells, _ := n.agents()
	return len(shells)
}

func (n *nuboServer) waitEnvs(ctx context.Context, max int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil {
		envs, _ := n.environments()
		if len(envs) <= max {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d environments still live after %v (want ≤ %d)", len(envs), timeout, max)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

func parallel(ctx context.Context, workers, n int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		first error
		next  int
		wg    sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil || i >= n || ctx.Err() != nil
				mu.Unlock()
				if stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// zipOf packs files (name → body) as a deployment package; executables
// keep their mode, which is how Lambda knows a bootstrap may run.
func zipOf(files map[string][]byte, exec map[string]bool) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		mode := os.FileMode(0o644)
		if exec[name] {
			mode = 0o755
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func freePort() (int, error) {
	p, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// freePorts returns n distinct ports free on loopback now. The listeners
// are held until all are found: one closed and opened again can give the
// same port twice (the emulator then crashed binding its second address).
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

var errMismatch = errors.New("response differs from the payload")

// sameJSON reports whether two JSON documents are equal as values: the
// Python and Node runtimes re-serialise the event, so bytes may differ.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// tailFile returns the last lines of a file, indented for an error report.
func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "\t(" + err.Error() + ")"
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "\t" + strings.Join(ls, "\n\t")
}

// liveness tells, for an error report, whether the nubo process is still
// there: a refused connection from a live process means it is shutting
// down (its log says why), from a dead one that it exited.
func (n *nuboServer) liveness() string {
	select {
	case <-n.exited:
		return fmt.Sprintf(" (nubo serve has exited: %v)", n.exitErr)
	default:
		return " (nubo serve is still running)"
	}
}
