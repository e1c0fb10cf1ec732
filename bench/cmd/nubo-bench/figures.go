package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/bench/internal/procstat"
)

// bench is one run: its configuration, the functions it deploys and
// everything it measured.
type bench struct {
	cfg  config
	tmp  string
	res  *results
	seq  int
	echo functionSpec // provided.al2023, the aws-lambda-go echo bootstrap
	// timing is bench/timing's bootstrap (provided.al2023), for figure 3's
	// parts; timingErr says why there is none.
	timing    functionSpec
	timingErr error
	py        functionSpec
	node      functionSpec
	// pyPkg imports a generated package (pypkg.go) and echoes.
	pyPkg functionSpec

	payload []byte // the 100-byte event of every invoke

	mu    sync.Mutex
	nubos []*nuboServer // running, for cleanup on any exit path
}

// payload100 is a JSON event of exactly 100 bytes.
func payload100() []byte {
	const head, tail = `{"payload":"`, `"}`
	fill := bytes.Repeat([]byte("nubo-bench-"), 10)[:100-len(head)-len(tail)]
	return []byte(head + string(fill) + tail)
}

func (b *bench) newNubo(ctx context.Context, capacityMB int) (*nuboServer, error) {
	b.seq++
	dir := filepath.Join(b.tmp, fmt.Sprintf("nubo-%d", b.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n, err := startNubo(ctx, nuboOptions{bin: b.cfg.nuboBin, dir: dir, capacityMB: capacityMB, extra: b.cfg.nuboArgs})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.nubos = append(b.nubos, n)
	b.mu.Unlock()
	return n, nil
}

func (b *bench) stopNubo(n *nuboServer) {
	if err := n.stop(); err != nil {
		b.res.errorf("nubo serve: %v (log: %s)", err, n.logPath)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range b.nubos {
		if x == n {
			b.nubos = append(b.nubos[:i], b.nubos[i+1:]...)
			break
		}
	}
}

func (b *bench) stopAll() {
	b.mu.Lock()
	ns := append([]*nuboServer(nil), b.nubos...)
	b.mu.Unlock()
	for _, n := range ns {
		b.stopNubo(n)
	}
}

// runtimeFor picks the runtime id nubo offers for a family ("python",
// "nodejs"): the newest it lists.
func runtimeFor(n *nuboServer, family string) string {
	var ids []string
	for _, id := range n.runtimeIDs() {
		if strings.HasPrefix(id, family) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}

// withRuntimes fills in the managed runtimes' ids from what this nubo
// offers; a family it does not offer is left empty and its series fail
// with that reason.
func (b *bench) withRuntimes(n *nuboServer) {
	b.py.Runtime = runtimeFor(n, "python")
	b.pyPkg.Runtime = b.py.Runtime
	b.node.Runtime = runtimeFor(n, "nodejs")
}

func (b *bench) check(spec functionSpec, got []byte) error {
	if spec.Runtime == "provided.al2023" {
		if !bytes.Equal(got, b.payload) {
			return errMismatch
		}
		return nil
	}
	if !sameJSON(got, b.payload) {
		return errMismatch
	}
	return nil
}

// warmJob measures warm invokes of one function created up front.
func (b *bench) warmJob(ctx context.Context, n *nuboServer, s *Series, name string, spec functionSpec, want int) *job {
	j := &job{series: s, want: want}
	if spec.Runtime == "" {
		j.failed, s.Err = true, "nubo offers no runtime for this family"
		return j
	}
	if err := n.createFunction(ctx, name, spec); err != nil {
		j.failed, s.Err = true, err.Error()
		return j
	}
	// The first invoke is the cold start; the next ones let the runtime,
	// the connection and both Go heaps settle before anything counts.
	for i := 0; i < 20; i++ {
		if _, _, err := n.invoke(ctx, name, b.payload); err != nil {
			j.failed, s.Err = true, err.Error()
			return j
		}
	}
	j.sample = func(ctx context.Context, _ int) (time.Duration, error) {
		d, out, err := n.invoke(ctx, name, b.payload)
		if err != nil {
			return 0, err
		}
		return d, b.check(spec, out)
	}
	return j
}

// figWarm: figures 1 and 5 (warm). nubo and the emulator are measured in
// alternating blocks against the same echo bootstrap and payload.
func (b *bench) figWarm(ctx context.Context) error {
	n, err := b.newNubo(ctx, 0)
	if err != nil {
		return err
	}
	defer b.stopNubo(n)
	b.withRuntimes(n)
	var jobs []*job
	if b.cfg.figures[1] {
		jobs = append(jobs, b.warmJob(ctx, n, b.res.series("nubo-warm-go", "nubo warm (Go echo)", "warm"), "warm-go", b.echo, b.cfg.warm))
		rs := b.res.series("rie-warm", "RIE warm (Go echo)", "warm")
		r, err := startRIE(rieOptions{bin: b.cfg.rieBin, bootstrap: b.rieBootstrap(), logPath: filepath.Join(b.tmp, "rie-warm.log")})
		if err != nil {
			rs.Err = err.Error()
		} else {
			defer r.stop()
			rj := &job{series: rs, want: b.cfg.warm}
			if _, err := r.firstResponse(ctx, b.payload); err != nil {
				rj.failed, rs.Err = true, err.Error()
			}
			for i := 0; i < 20 && !rj.failed; i++ {
				if _, _, err := r.invoke(ctx, b.payload); err != nil {
					rj.failed, rs.Err = true, err.Error()
				}
			}
			rj.sample = func(ctx context.Context, _ int) (time.Duration, error) {
				d, out, err := r.invoke(ctx, b.payload)
				if err == nil && !bytes.Equal(out, b.payload) {
					err = errMismatch
				}
				return d, err
			}
			jobs = append(jobs, rj)
		}
		for _, relayed := range []bool{false, true} {
			s := b.res.series("floor-server-warm", "least server, SigV4 and raw I/O (floor)", "warm")
			if relayed {
				s = b.res.series("floor-relayed-warm", "least server with a relay process (floor)", "warm")
			}
			f, err := b.startFloor(ctx, relayed)
			if f != nil {
				defer f.stop()
			}
			if err != nil {
				s.Err = err.Error()
				continue
			}
			jobs = append(jobs, &job{series: s, want: b.cfg.warm, sample: func(ctx context.Context, _ int) (time.Duration, error) {
				d, out, err := f.invoke(ctx, b.payload)
				if err == nil && !bytes.Equal(out, b.payload) {
					err = errMismatch
				}
				return d, err
			}})
		}
	}
	if b.cfg.figures[5] {
		jobs = append(jobs,
			b.warmJob(ctx, n, b.res.series("nubo-warm-python", "nubo warm (Python echo)", "warm"), "warm-python", b.py, b.cfg.warm),
			b.warmJob(ctx, n, b.res.series("nubo-warm-node", "nubo warm (Node echo)", "warm"), "warm-node", b.node, b.cfg.warm))
		if !b.cfg.figures[1] {
			// Figure 5 reads against the Go echo of the same run.
			jobs = append(jobs, b.warmJob(ctx, n, b.res.series("nubo-warm-go", "nubo warm (Go echo)", "warm"), "warm-go", b.echo, b.cfg.warm))
		}
	}
	logf("warm: %d samples per series, blocks of %d", b.cfg.warm, b.cfg.block)
	interleave(ctx, b.cfg.block, jobs...)
	return ctx.Err()
}

// startFloor starts one of figure 1's floors (see floorServer) and warms
// it as the emulator is warmed: a first invoke, then 20 untimed.
func (b *bench) startFloor(ctx context.Context, relayed bool) (*floorServer, error) {
	if _, err := os.Stat(b.cfg.hopfloorBin); err != nil {
		return nil, fmt.Errorf("%w (make bench builds it)", err)
	}
	f, err := startFloorServer(b.cfg.hopfloorBin, b.rieBootstrap(), relayed)
	if err != nil {
		return nil, err
	}
	for i := 0; i < 21; i++ {
		if _, _, err := f.invoke(ctx, b.payload); err != nil {
			return f, err
		}
	}
	return f, nil
}

// rieBootstrap is the echo bootstrap in a directory of its own, which the
// emulator takes as its task root.
func (b *bench) rieBootstrap() string {
	return filepath.Join(b.tmp, "rie-task", "bootstrap")
}

// timingBootstrap is the run's copy of bench/timing's bootstrap.
func (b *bench) timingBootstrap() string {
	return filepath.Join(b.tmp, "timing-bootstrap")
}

// figThroughput: figure 2. Each round runs the emulator sequentially for a
// fixed time, then nubo at each concurrency for the same time.
func (b *bench) figThroughput(ctx context.Context) error {
	n, err := b.newNubo(ctx, 0)
	if err != nil {
		return err
	}
	defer b.stopNubo(n)
	const name = "tput-go"
	if err := n.createFunction(ctx, name, b.echo); err != nil {
		return err
	}
	nuboCall := func(ctx context.Context) (time.Duration, error) {
		d, out, err := n.invoke(ctx, name, b.payload)
		if err == nil && !bytes.Equal(out, b.payload) {
			err = errMismatch
		}
		return d, err
	}
	// Warm up: as many environments as the highest concurrency will use.
	for _, c := range b.cfg.concurrencies {
		if _, _, _, err := burst(ctx, c, 0, 5*c, nuboCall); err != nil {
			return fmt.Errorf("warm-up at concurrency %d: %w", c, err)
		}
	}
	r, err := startRIE(rieOptions{bin: b.cfg.rieBin, bootstrap: b.rieBootstrap(), logPath: filepath.Join(b.tmp, "rie-tput.log")})
	if err != nil {
		return err
	}
	defer r.stop()
	if _, err := r.firstResponse(ctx, b.payload); err != nil {
		return fmt.Errorf("aws-lambda-rie: %w", err)
	}
	rieCall := func(ctx context.Context) (time.Duration, error) {
		d, out, err := r.invoke(ctx, b.payload)
		if err == nil && !bytes.Equal(out, b.payload) {
			err = errMismatch
		}
		return d, err
	}
	for i := 0; i < 20; i++ {
		if _, err := rieCall(ctx); err != nil {
			return fmt.Errorf("aws-lambda-rie: %w", err)
		}
	}
	tp := map[string]*throughput{}
	order := []string{"rie-seq"}
	tp["rie-seq"] = &throughput{Name: "rie-seq", Label: "RIE sequential", Concurrency: 1}
	for _, c := range b.cfg.concurrencies {
		k := fmt.Sprintf("nubo-c%d", c)
		order = append(order, k)
		tp[k] = &throughput{Name: k, Label: fmt.Sprintf("nubo c=%d", c), Concurrency: c}
	}
	logf("throughput: %d rounds of %v per target", b.cfg.tputRounds, b.cfg.tputDuration)
	for round := 0; round < b.cfg.tputRounds; round++ {
		for _, k := range order {
			t := tp[k]
			call := nuboCall
			if k == "rie-seq" {
				call = rieCall
			}
			share := func() cpuShare { return n.cpuShare() }
			if k == "rie-seq" {
				share = r.cpuShare
			}
			before := share()
			cnt, el, lat, err := burst(ctx, t.Concurrency, b.cfg.tputDuration, 0, call)
			if err != nil {
				t.Err = err.Error()
				continue
			}
			t.cpu = t.cpu.add(share().sub(before))
			t.Requests += cnt
			t.elapsed += el
			t.lat = append(t.lat, lat...)
		}
	}
	for _, k := range order {
		t := tp[k]
		if t.elapsed > 0 {
			t.PerSecond = float64(t.Requests) / t.elapsed.Seconds()
			t.Seconds = t.elapsed.Seconds()
			t.Latency, _ = (&Series{Samples: t.lat}).Summarize()
			if t.Requests > 0 {
				t.CPUPerRequest, t.SwitchesPerRequest = t.cpu.perRequest(t.Requests)
			}
		}
		b.res.Throughput = append(b.res.Throughput, t)
	}
	return ctx.Err()
}

type throughput struct {
	Name        string  `json:"name"`
	Label       string  `json:"label"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
	Latency     Summary `json:"latency"`
	Err         string  `json:"error,omitempty"`
	// CPUPerRequest is the CPU time each party used per request, in µs:
	// "client" (this benchmark), "server" (nubo serve and its spawner, or
	// the emulator), "agent" (nubo's agents; none for the emulator) and
	// "runtime" (the function's processes), and "machine": the busy time
	// of all CPUs (/proc/stat), which also holds what no party is charged
	// with and whatever else ran.
	CPUPerRequest map[string]float64 `json:"cpu_per_request_us,omitempty"`
	// SwitchesPerRequest is the context switches (voluntary and not, over
	// all threads) each party made per request: on this nested VM a switch
	// costs more than most of the work around it.
	SwitchesPerRequest map[string]float64 `json:"switches_per_request,omitempty"`
	elapsed            time.Duration
	lat                []time.Duration
	cpu                cpuShare
}

// cpuShare is CPU time used so far by each party of a warm invocation,
// and by the whole machine.
type cpuShare struct{ client, server, agent, runtime, machine procstat.Use }

func (a cpuShare) add(b cpuShare) cpuShare {
	return cpuShare{a.client.Add(b.client), a.server.Add(b.server), a.agent.Add(b.agent), a.runtime.Add(b.runtime), a.machine.Add(b.machine)}
}

func (a cpuShare) sub(b cpuShare) cpuShare {
	return cpuShare{a.client.Sub(b.client), a.server.Sub(b.server), a.agent.Sub(b.agent), a.runtime.Sub(b.runtime), a.machine.Sub(b.machine)}
}

func (a cpuShare) perRequest(n int) (cpuUs, switches map[string]float64) {
	cpuUs, switches = map[string]float64{}, map[string]float64{}
	for name, u := range map[string]procstat.Use{"client": a.client, "server": a.server, "agent": a.agent, "runtime": a.runtime} {
		cpuUs[name] = float64(u.CPU.Microseconds()) / float64(n)
		switches[name] = float64(u.Switches) / float64(n)
	}
	cpuUs["machine"] = float64(a.machine.CPU.Microseconds()) / float64(n)
	return cpuUs, switches
}

// burst runs c callers until dur has passed (dur > 0) or total calls are
// made, and returns the calls completed, the wall time from the first call
// to the last response, and every call's latency.
func burst(ctx context.Context, c int, dur time.Duration, total int, call func(context.Context) (time.Duration, error)) (int, time.Duration, []time.Duration, error) {
	var (
		mu    sync.Mutex
		lat   []time.Duration
		first error
		next  int
		wg    sync.WaitGroup
	)
	t0 := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				if dur > 0 && time.Since(t0) >= dur {
					break
				}
				if total > 0 {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= total {
						break
					}
				}
				d, err := call(ctx)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					break
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if first == nil {
		first = ctx.Err()
	}
	return len(lat), el, lat, first
}

// coldJob measures the first invoke of functions that have never run:
// before each block it creates and activates one function per sample
// (untimed), afterwards it deletes them and waits until their environments
// are gone, so no block runs beside the teardown of the last.
func (b *bench) coldJob(n *nuboServer, s *Series, prefix string, spec functionSpec, want int) *job {
	j := &job{series: s, want: want}
	if spec.Runtime == "" {
		j.failed, s.Err = true, "nubo offers no runtime for this family"
		return j
	}
	var names []string
	j.before = func(ctx context.Context, k int) error {
		names = names[:0]
		for i := 0; i < k; i++ {
			names = append(names, fmt.Sprintf("%s-%d", prefix, len(s.Samples)+i))
		}
		return n.createMany(ctx, names, spec)
	}
	j.sample = func(ctx context.Context, i int) (time.Duration, error) {
		name := fmt.Sprintf("%s-%d", prefix, i)
		d, out, err := n.invoke(ctx, name, b.payload)
		if err != nil {
			return 0, err
		}
		b.res.coldNames[s.Name] = append(b.res.coldNames[s.Name], name)
		return d, b.check(spec, out)
	}
	j.after = func(ctx context.Context) error {
		if ctx.Err() != nil {
			return nil // interrupted: stopping nubo removes everything
		}
		if err := n.deleteMany(ctx, names); err != nil {
			return err
		}
		return n.waitEnvs(ctx, 0, 30*time.Second)
	}
	return j
}

// rieCold is one emulator cold start: a new emulator, its first response.
// An attempt whose runtime raced the emulator's Runtime API (its log, from
// where this attempt began, says the runtime's /next was refused) returns
// an error wrapping errRIEInitRace.
func (b *bench) rieCold(ctx context.Context, logPath string) (time.Duration, error) {
	var from int64
	if st, err := os.Stat(logPath); err == nil {
		from = st.Size()
	}
	r, err := startRIE(rieOptions{bin: b.cfg.rieBin, bootstrap: b.rieBootstrap(), logPath: logPath})
	if err != nil {
		return 0, err
	}
	d, err := r.firstResponse(ctx, b.payload)
	r.stop()
	if err != nil && strings.Contains(err.Error(), "HTTP 502") {
		if log, rerr := os.ReadFile(logPath); rerr == nil && int64(len(log)) >= from {
			tail := string(log[from:])
			if strings.Contains(tail, "runtime/invocation/next") && strings.Contains(tail, "connection refused") {
				err = fmt.Errorf("%w: %w", errRIEInitRace, err)
			}
		}
	}
	return d, err
}

// figCold: figures 3 and 5 (cold). nubo's cold starts, the emulator's
// process-start-to-first-response, `crun run /bin/true` and the floors are
// measured in alternating blocks.
func (b *bench) figCold(ctx context.Context) error {
	n, err := b.newNubo(ctx, 0)
	if err != nil {
		return err
	}
	defer b.stopNubo(n)
	b.withRuntimes(n)
	var jobs []*job
	if b.cfg.figures[3] {
		jobs = append(jobs, b.coldJob(n, b.res.series("nubo-cold-go", "nubo cold (Go echo)", "cold"), "cold-go", b.echo, b.cfg.cold))
		rs := b.res.series("rie-cold", "RIE start→first response", "cold")
		rieLog := filepath.Join(b.tmp, "rie-cold.log")
		jobs = append(jobs, &job{series: rs, want: b.cfg.cold, sample: func(ctx context.Context, _ int) (time.Duration, error) {
			for attempt := 1; ; attempt++ {
				d, err := b.rieCold(ctx, rieLog)
				if errors.Is(err, errRIEInitRace) && attempt < 3 {
					rs.Discarded++
					continue
				}
				return d, err
			}
		}})
		cs := b.res.series("crun-run-true", "crun run /bin/true", "cold")
		cj := &job{series: cs, want: b.cfg.cold}
		if h, err := b.crunHelper(); err != nil {
			cj.failed, cs.Err = true, err.Error()
		} else {
			defer h.stop()
			cj.sample = func(context.Context, int) (time.Duration, error) { return h.run() }
		}
		jobs = append(jobs, cj)
		for _, pinned := range []bool{false, true} {
			name, label := "floor-least-cold", "least cold start: echo bootstrap to first response (floor)"
			if pinned {
				name, label = "floor-least-cold-pinned", "least cold start, one CPU, nubo's timer slack (floor)"
			}
			js := b.res.series(name, label, "cold")
			j := &job{series: js, want: b.cfg.cold}
			if l, err := startLeastCold(b.rieBootstrap(), b.payload, pinned); err != nil {
				j.failed, js.Err = true, err.Error()
			} else {
				defer l.stop()
				j.sample = func(ctx context.Context, _ int) (time.Duration, error) {
					d, out, err := l.sample(ctx)
					if err != nil {
						return 0, err
					}
					return d, b.check(b.echo, out)
				}
			}
			jobs = append(jobs, j)
		}
		pj, stop := b.partsJobs(n, max(10, b.cfg.cold/4))
		defer stop()
		jobs = append(jobs, pj...)
		jobs = append(jobs,
			execJob(b.res.series("floor-exec-echo", "fork+exec echo bootstrap (floor)", "cold"), b.cfg.cold, false, b.rieBootstrap()),
			execJob(b.res.series("floor-unshare", "unshare pid+mnt+net+uts+ipc /bin/true", "cold"), b.cfg.cold, true,
				"unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "/bin/true"))
	}
	if b.cfg.figures[5] {
		jobs = append(jobs,
			b.coldJob(n, b.res.series("nubo-cold-python", "nubo cold (Python echo)", "cold"), "cold-python", b.py, b.cfg.cold),
			b.coldJob(n, b.res.series("nubo-cold-node", "nubo cold (Node echo)", "cold"), "cold-node", b.node, b.cfg.cold))
		if py := interpreter("python3"); py != "" {
			jobs = append(jobs, execJob(b.res.series("floor-python", py+" -c pass (floor)", "cold"), b.cfg.cold, true, py, "-c", "pass"))
		}
		jobs = append(jobs, b.pkgJobs(n)...)
		if node := interpreter("node"); node != "" {
			jobs = append(jobs, execJob(b.res.series("floor-node", node+" -e 0 (floor)", "cold"), b.cfg.cold, true, node, "-e", "0"))
		}
	}
	logf("cold: %d samples per series, blocks of %d", b.cfg.cold, b.cfg.coldBlock)
	interleave(ctx, b.cfg.coldBlock, jobs...)
	// The phase lines of the last environments may trail their responses.
	for series, names := range b.res.coldNames {
		b.collectPhases(n, series, names)
	}
	return ctx.Err()
}

// collectPhases joins nubo's phase log lines to the series' functions. The
// lines of the last environments may trail their responses, so the first
// lookups wait a little; a nubo that logs no phases costs two seconds, not
// two per function.
func (b *bench) collectPhases(n *nuboServer, series string, names []string) {
	deadline := time.Now().Add(2 * time.Second)
	for _, name := range names {
		if p, ok := n.firstEnv(name, max(0, time.Until(deadline))); ok {
			b.res.phases[series] = append(b.res.phases[series], p)
		}
	}
}

// interpreter prefers the distribution's interpreter (what nubo's userland
// runs) over shims earlier on the PATH.
func interpreter(name string) string {
	for _, dir := range []string{"/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	p, _ := exec.LookPath(name)
	return p
}

func execJob(s *Series, want int, wantOK bool, argv ...string) *job {
	return &job{series: s, want: want, sample: func(context.Context, int) (time.Duration, error) {
		return timeExec(wantOK, argv...)
	}}
}

func (b *bench) crunHelper() (*crunHelper, error) {
	if b.cfg.crunBin == "" {
		return nil, errors.New("crun not found (make bench installs it: scripts/deps.sh --bench)")
	}
	dir := filepath.Join(b.tmp, "crun-bundle")
	if err := makeBundle(b.cfg.crunBin, dir); err != nil {
		return nil, err
	}
	return startCrunHelper(b.cfg.crunBin, dir)
}

// envResult is figure 4.
type envResult struct {
	Environments int `json:"environments"`
	Concurrency  int `json:"concurrency"`
	// Each burst's wall time and rate, in order; PerSecond is the median
	// rate, Seconds that burst's time. Latency, memory and CPU are the
	// first burst's.
	Bursts            []float64 `json:"bursts_per_second"`
	BurstSeconds      []float64 `json:"bursts_seconds"`
	Seconds           float64   `json:"seconds"`
	PerSecond         float64   `json:"per_second"`
	Latency           Summary   `json:"first_invoke_latency"`
	LiveAgents        int       `json:"live_environments_seen"`
	MemAvailDeltaKiB  int64     `json:"mem_available_delta_kib"`
	PerEnvHostKiB     float64   `json:"per_env_host_kib"`
	FunctionPSSKiB    float64   `json:"function_pss_kib"`
	FunctionRSSKiB    float64   `json:"function_rss_kib"`
	AgentPSSKiB       float64   `json:"agent_pss_kib"`
	ServerPSSDeltaKiB float64   `json:"server_pss_delta_per_env_kib"`
	OverheadPSSKiB    float64   `json:"overhead_beyond_function_pss_kib"`
	OverheadRSSKiB    float64   `json:"overhead_beyond_function_rss_kib"`
	UserlandKiB       float64   `json:"userland_overhead_kib"`
	// Shells nubo held ready in its pool before the burst and when memory
	// was read: the pool grows after a burst (it is sized from bursts),
	// and the shells added hold memory that is no environment's.
	PooledBefore int `json:"pooled_shells_before"`
	PooledAfter  int `json:"pooled_shells_after"`
	// CPU per environment: nubo serve's CPU time over the burst divided by
	// the environments made, and the mean CPU time of each environment's
	// cgroup (agent, runtime, everything that ran there). Their sum bounds
	// the creation rate on this machine's cores whatever else runs beside:
	// CapacityPerSecond = cores × 1000 / (server + environment) ms.
	ServerCPUPerEnvMs float64 `json:"server_cpu_per_env_ms"`
	EnvCPUMs          float64 `json:"env_cpu_ms"`
	CapacityPerSecond float64 `json:"cpu_bound_env_per_second"`
	// The function's own start: the median CPU time of the echo
	// bootstrap's fork+exec outside any sandbox (see runExec), which every
	// environment pays once whatever creates it, and the rate the cores
	// would allow if that were all an environment cost:
	// RuntimeStartBound = cores × 1000 / RuntimeStartCPUMs.
	RuntimeStartCPUMs float64 `json:"runtime_start_cpu_ms"`
	RuntimeStartBound float64 `json:"runtime_start_bound_env_per_second"`
	Err               string  `json:"error,omitempty"`
}

// figEnvs: figure 4. Many functions (one deployment package, so the code
// is unpacked and cached once) get their first invoke at once; the rate is
// environments made per second of wall time. The environments then sit
// idle and the host memory they hold is read.
func (b *bench) figEnvs(ctx context.Context) error {
	// Room for every environment's memory reservation (128 MB each): the
	// default capacity, 75% of RAM, would refuse a 200th environment on a
	// small host although idle environments use a fraction of it.
	n, err := b.newNubo(ctx, memoryMB*(b.cfg.envs+16))
	if err != nil {
		return err
	}
	defer b.stopNubo(n)
	r := &envResult{Environments: b.cfg.envs, Concurrency: b.cfg.envConcurrency}
	b.res.Envs = r
	names := envNames(0, b.cfg.envs)
	logf("environments: creating %d functions", len(names))
	if err := n.createMany(ctx, names, b.echo); err != nil {
		r.Err = err.Error()
		return err
	}
	if c, err := medianExecCPU(31, b.rieBootstrap()); err != nil {
		logf("environments: the echo bootstrap's own start: %v", err)
	} else if c > 0 {
		r.RuntimeStartCPUMs = float64(c.Microseconds()) / 1000
		r.RuntimeStartBound = float64(runtime.NumCPU()) * 1000 / r.RuntimeStartCPUMs
	}
	r.PooledBefore = n.pooledShells()
	serverBefore, _ := n.memory()
	cpuBefore, _ := n.cpu()
	availBefore, err := memAvailableKiB()
	if err != nil {
		r.Err = err.Error()
		return err
	}
	logf("environments: %d first invokes, %d at a time", len(names), b.cfg.envConcurrency)
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	cnt, el, _, err := burst(ctx, b.cfg.envConcurrency, 0, len(names), b.envCall(n, names, &mu, &lat))
	if err != nil {
		r.Err = err.Error()
		return err
	}
	r.Bursts = append(r.Bursts, float64(cnt)/el.Seconds())
	r.BurstSeconds = append(r.BurstSeconds, el.Seconds())
	r.PerSecond, r.Seconds = r.Bursts[0], r.BurstSeconds[0]
	r.Latency, _ = (&Series{Samples: lat}).Summarize()
	cpuAfter, _ := n.cpu()
	b.collectPhases(n, "nubo-env-burst", names)
	// Let the last environments settle into idle (their runtimes block on
	// /next) before reading memory.
	time.Sleep(2 * time.Second)
	availAfter, err := memAvailableKiB()
	if err != nil {
		r.Err = err.Error()
		return err
	}
	serverAfter, _ := n.memory()
	agents, pm := n.environments()
	r.PooledAfter = n.pooledShells()
	r.LiveAgents = len(agents)
	var fnPSS, fnRSS, agPSS int64
	var envCPU time.Duration
	for _, a := range agents {
		if ro, err := smapsRollup(a); err == nil {
			agPSS += ro.PSS
		}
		if c, err := cgroupCPU(a); err == nil {
			envCPU += c
		}
		for _, p := range procstat.Descendants(pm, a) {
			if ro, err := smapsRollup(p); err == nil {
				fnPSS += ro.PSS
				fnRSS += ro.RSS
			}
		}
	}
	k := float64(len(agents))
	if k == 0 {
		r.Err = "no live environment found after the burst"
		return errors.New(r.Err)
	}
	r.MemAvailDeltaKiB = availBefore - availAfter
	r.FunctionPSSKiB = float64(fnPSS) / k
	r.FunctionRSSKiB = float64(fnRSS) / k
	r.AgentPSSKiB = float64(agPSS) / k
	r.ServerPSSDeltaKiB = float64(serverAfter.PSS-serverBefore.PSS) / k
	// A pooled shell is an environment without its function (same agent,
	// kernel objects, /tmp volume): the fall is k × (function + overhead)
	// + Δshells × overhead.
	dp := float64(r.PooledAfter - r.PooledBefore)
	r.OverheadPSSKiB = (float64(r.MemAvailDeltaKiB) - k*r.FunctionPSSKiB) / max(k+dp, 1)
	r.PerEnvHostKiB = r.FunctionPSSKiB + r.OverheadPSSKiB
	r.OverheadRSSKiB = r.PerEnvHostKiB - r.FunctionRSSKiB
	r.UserlandKiB = r.AgentPSSKiB + r.ServerPSSDeltaKiB
	r.ServerCPUPerEnvMs = float64((cpuAfter - cpuBefore).Microseconds()) / 1000 / float64(cnt)
	r.EnvCPUMs = float64(envCPU.Microseconds()) / 1000 / k
	if per := r.ServerCPUPerEnvMs + r.EnvCPUMs; per > 0 {
		r.CapacityPerSecond = float64(runtime.NumCPU()) * 1000 / per
	}
	// More bursts, for the rate only: one lasts about a second, and its
	// rate moved by ±10 % between runs of one build (docs/performance.md,
	// session 25). Before each, the last burst's functions are deleted,
	// their environments waited out and the host left to settle (their
	// teardown, and the pool's refill, run in the background), so each
	// starts as the first did.
	for burstNo := 1; burstNo < b.cfg.envBursts && ctx.Err() == nil; burstNo++ {
		if err := n.deleteMany(ctx, names); err != nil {
			r.Err = err.Error()
			return err
		}
		if err := n.waitEnvs(ctx, 0, time.Minute); err != nil {
			r.Err = err.Error()
			return err
		}
		names = envNames(burstNo, b.cfg.envs)
		logf("environments: burst %d of %d: creating %d functions", burstNo+1, b.cfg.envBursts, len(names))
		if err := n.createMany(ctx, names, b.echo); err != nil {
			r.Err = err.Error()
			return err
		}
		time.Sleep(envSettle)
		logf("environments: burst %d: %d first invokes, %d at a time", burstNo+1, len(names), b.cfg.envConcurrency)
		cnt, el, _, err := burst(ctx, b.cfg.envConcurrency, 0, len(names), b.envCall(n, names, nil, nil))
		if err != nil {
			r.Err = err.Error()
			return err
		}
		r.Bursts = append(r.Bursts, float64(cnt)/el.Seconds())
		r.BurstSeconds = append(r.BurstSeconds, el.Seconds())
	}
	med := medianIndex(r.Bursts)
	r.PerSecond, r.Seconds = r.Bursts[med], r.BurstSeconds[med]
	return ctx.Err()
}

// envSettle is the pause before each later burst of figure 4, after its
// functions are created: the first burst's come after the bootstrap's
// floor is measured (31 starts) and memory read, a few seconds.
const envSettle = 3 * time.Second

// envNames are the functions of figure 4's burst k.
func envNames(k, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("env-%d-%d", k, i)
	}
	return names
}

// envCall is figure 4's call: the first invoke of the next of names,
// checked; with lat, each call's latency is kept there (under mu).
func (b *bench) envCall(n *nuboServer, names []string, mu *sync.Mutex, lat *[]time.Duration) func(context.Context) (time.Duration, error) {
	var (
		nmu  sync.Mutex
		next int
	)
	return func(ctx context.Context) (time.Duration, error) {
		nmu.Lock()
		i := next
		next++
		nmu.Unlock()
		d, out, err := n.invoke(ctx, names[i], b.payload)
		if err == nil && !bytes.Equal(out, b.payload) {
			err = errMismatch
		}
		if lat != nil {
			mu.Lock()
			*lat = append(*lat, d)
			mu.Unlock()
		}
		return d, err
	}
}

// medianIndex is the index of the median of v (the lower one of an even
// count).
func medianIndex(v []float64) int {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	return idx[(len(idx)-1)/2]
}
