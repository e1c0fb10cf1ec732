package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// results is everything one run measured; it is written out as JSON whole.
type results struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Host     map[string]any `json:"host"`
	Config   map[string]any `json:"config"`
	Versions map[string]any `json:"versions"`
	Methods  []string       `json:"methods"`
	Rows     []row          `json:"table"`

	Summaries  map[string]seriesOut                     `json:"series"`
	Throughput []*throughput                            `json:"throughput,omitempty"`
	Envs       *envResult                               `json:"environments,omitempty"`
	Phases     map[string]map[string]map[string]Summary `json:"cold_start_phases,omitempty"`
	// Parts are figure 3's cold start parts (parts.go): per who, per part.
	Parts map[string]map[string]Summary `json:"cold_start_parts,omitempty"`
	// PartFaults are the runtime's page faults by main in those cold
	// starts: per who, p50 and p90.
	PartFaults map[string][2]int64 `json:"cold_start_part_faults,omitempty"`
	Errors     []string            `json:"errors,omitempty"`

	order     []*Series
	byName    map[string]*Series
	coldNames map[string][]string
	phases    map[string][]phases
	parts     map[string][]partSample
}

type seriesOut struct {
	Label     string  `json:"label"`
	Panel     string  `json:"panel"`
	Summary   Summary `json:"summary"`
	Err       string  `json:"error,omitempty"`
	Discarded int     `json:"discarded_attempts,omitempty"`
	SamplesUs []int64 `json:"samples_us"`
}

func newResults() *results {
	return &results{Started: time.Now(), byName: map[string]*Series{}, coldNames: map[string][]string{},
		phases: map[string][]phases{}, Versions: map[string]any{}}
}

// series returns the named series, creating it on first use.
func (r *results) series(name, label, panel string) *Series {
	if s, ok := r.byName[name]; ok {
		return s
	}
	s := &Series{Name: name, Label: label, Panel: panel}
	r.byName[name] = s
	r.order = append(r.order, s)
	return s
}

func (r *results) errorf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.Errors = append(r.Errors, msg)
	logf("%s", msg)
}

func (r *results) summary(name string) (Summary, bool) {
	s, ok := r.byName[name]
	if !ok {
		return Summary{}, false
	}
	return s.Summarize()
}

// row is one line of the table: nubo's figure, the peer it is read
// against, their ratio and the target.
type row struct {
	Figure    string   `json:"figure"`
	Metric    string   `json:"metric"`
	Unit      string   `json:"unit"`
	Nubo      *float64 `json:"nubo"`
	PeerLabel string   `json:"peer_label,omitempty"`
	Peer      *float64 `json:"peer,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"`
	Target    string   `json:"target,omitempty"`
	Pass      *bool    `json:"pass,omitempty"`
}

func fp(v float64) *float64 { return &v }
func bp(v bool) *bool       { return &v }

// rowRatio builds a row whose target bounds nubo/peer; cmp is "<=" or ">=".
func rowRatio(fig, metric, unit string, nubo *float64, peerLabel string, peer *float64, cmp string, bound float64) row {
	r := row{Figure: fig, Metric: metric, Unit: unit, Nubo: nubo, PeerLabel: peerLabel, Peer: peer}
	if nubo != nil && peer != nil && *peer > 0 {
		r.Ratio = fp(*nubo / *peer)
	}
	if cmp != "" {
		r.Target = fmt.Sprintf("%s %.3g× %s", cmp, bound, peerLabel)
		if r.Ratio != nil {
			r.Pass = bp(compare(*r.Ratio, cmp, bound))
		}
	}
	return r
}

// rowAbs builds a row whose target bounds nubo's own figure.
func rowAbs(fig, metric, unit string, nubo *float64, peerLabel string, peer *float64, cmp string, bound float64) row {
	r := row{Figure: fig, Metric: metric, Unit: unit, Nubo: nubo, PeerLabel: peerLabel, Peer: peer}
	if nubo != nil && peer != nil && *peer > 0 {
		r.Ratio = fp(*nubo / *peer)
	}
	if cmp != "" {
		r.Target = fmt.Sprintf("%s %g %s", cmp, bound, unit)
		if nubo != nil {
			r.Pass = bp(compare(*nubo, cmp, bound))
		}
	}
	return r
}

func compare(v float64, cmp string, bound float64) bool {
	if cmp == ">=" {
		return v >= bound
	}
	return v <= bound
}

func (r *results) p(name string, q string) *float64 {
	s, ok := r.summary(name)
	if !ok {
		return nil
	}
	switch q {
	case "p50":
		return fp(s.P50)
	case "p99":
		return fp(s.P99)
	}
	return nil
}

// buildRows turns the measurements into the table, with the issue's
// targets; a figure that was not run has no row.
func (r *results) buildRows(figs map[int]bool) {
	var rows []row
	if figs[1] {
		rows = append(rows,
			rowRatio("1", "warm invoke p50", "ms", r.p("nubo-warm-go", "p50"), "RIE", r.p("rie-warm", "p50"), "<=", 0.6),
			rowRatio("1", "warm invoke p99", "ms", r.p("nubo-warm-go", "p99"), "RIE", r.p("rie-warm", "p99"), "<=", 1.0),
			// Where the target sits: the least servers' own ratio to
			// the emulator, and nubo's to them.
			rowRatio("1", "least server p50 (floor)", "ms", r.p("floor-server-warm", "p50"), "RIE", r.p("rie-warm", "p50"), "", 0),
			rowRatio("1", "least relayed server p50 (floor)", "ms", r.p("floor-relayed-warm", "p50"), "RIE", r.p("rie-warm", "p50"), "", 0),
			rowRatio("1", "warm invoke p50 vs floor", "ms", r.p("nubo-warm-go", "p50"), "least relayed", r.p("floor-relayed-warm", "p50"), "", 0))
	}
	if figs[2] {
		var seq *float64
		for _, t := range r.Throughput {
			if t.Name == "rie-seq" && t.PerSecond > 0 {
				seq = fp(t.PerSecond)
			}
		}
		for _, t := range r.Throughput {
			if t.Name == "rie-seq" {
				continue
			}
			var v *float64
			if t.PerSecond > 0 {
				v = fp(t.PerSecond)
			}
			metric := fmt.Sprintf("warm throughput, concurrency %d", t.Concurrency)
			if t.Concurrency == 4 {
				rows = append(rows, rowRatio("2", metric, "req/s", v, "RIE seq", seq, ">=", 2))
			} else {
				rows = append(rows, rowRatio("2", metric, "req/s", v, "RIE seq", seq, "", 0))
			}
		}
	}
	if figs[3] {
		rows = append(rows,
			rowRatio("3", "cold start p50", "ms", r.p("nubo-cold-go", "p50"), "crun", r.p("crun-run-true", "p50"), "<=", 0.5),
			rowRatio("3", "cold start p50", "ms", r.p("nubo-cold-go", "p50"), "RIE cold", r.p("rie-cold", "p50"), "<=", 0.3),
			rowAbs("3", "cold start p99", "ms", r.p("nubo-cold-go", "p99"), "RIE cold", r.p("rie-cold", "p99"), "<=", 25),
			rowAbs("3", "cold start p99", "ms", r.p("nubo-cold-go", "p99"), "crun", r.p("crun-run-true", "p99"), "", 0),
			rowRatio("3", "cold start p50 vs floor", "ms", r.p("nubo-cold-go", "p50"), "exec echo", r.p("floor-exec-echo", "p50"), "", 0),
			// The absolute p99 target beside what the bare exec of the
			// function reaches at its own tail on this machine.
			rowRatio("3", "cold start p99 vs floor", "ms", r.p("nubo-cold-go", "p99"), "exec echo", r.p("floor-exec-echo", "p99"), "", 0),
			// The least a cold start can be here: the function's own
			// start, init and first invocation against the least
			// Runtime API, as a bare process and as nubo runs it.
			rowRatio("3", "cold start p50 vs floor", "ms", r.p("nubo-cold-go", "p50"), "least cold", r.p("floor-least-cold", "p50"), "", 0),
			rowRatio("3", "cold start p99 vs floor", "ms", r.p("nubo-cold-go", "p99"), "least cold", r.p("floor-least-cold", "p99"), "", 0),
			rowRatio("3", "cold start p50 vs floor", "ms", r.p("nubo-cold-go", "p50"), "least cold pinned", r.p("floor-least-cold-pinned", "p50"), "", 0),
			rowRatio("3", "cold start p99 vs floor", "ms", r.p("nubo-cold-go", "p99"), "least cold pinned", r.p("floor-least-cold-pinned", "p99"), "", 0),
			rowRatio("3", "cold start p50 vs floor", "ms", r.p("nubo-cold-go", "p50"), "unshare", r.p("floor-unshare", "p50"), "", 0))
	}
	if figs[4] && r.Envs != nil {
		e := r.Envs
		var rate, mem, bound *float64
		if e.PerSecond > 0 {
			rate = fp(e.PerSecond)
		}
		if e.RuntimeStartBound > 0 {
			bound = fp(e.RuntimeStartBound)
		}
		if e.LiveAgents > 0 {
			mem = fp(e.OverheadPSSKiB / 1024)
		}
		rows = append(rows,
			rowAbs("4", "environments created", "env/s", rate, "runtime-start bound", bound, ">=", 200),
			rowAbs("4", "idle host memory per env beyond function", "MiB", mem, "", nil, "<=", 2))
	}
	if figs[5] {
		for _, rt := range []string{"python", "node"} {
			rows = append(rows,
				rowRatio("5", rt+" warm p50", "ms", r.p("nubo-warm-"+rt, "p50"), "nubo Go", r.p("nubo-warm-go", "p50"), "", 0),
				rowRatio("5", rt+" warm p99", "ms", r.p("nubo-warm-"+rt, "p99"), "nubo Go", r.p("nubo-warm-go", "p99"), "", 0),
				rowRatio("5", rt+" cold p50", "ms", r.p("nubo-cold-"+rt, "p50"), rt+" start", r.p("floor-"+rt, "p50"), "", 0),
				rowRatio("5", rt+" cold p99", "ms", r.p("nubo-cold-"+rt, "p99"), rt+" start", r.p("floor-"+rt, "p99"), "", 0))
		}
		rows = append(rows,
			rowRatio("5", "python+package cold p50", "ms", r.p("nubo-cold-python-pkg", "p50"), "import, .pyc cached", r.p("floor-python-pkg", "p50"), "", 0),
			rowRatio("5", "python+package cold p50", "ms", r.p("nubo-cold-python-pkg", "p50"), "import, compiling", r.p("floor-python-pkg-compile", "p50"), "", 0),
			rowRatio("5", "python+package cold p99", "ms", r.p("nubo-cold-python-pkg", "p99"), "import, .pyc cached", r.p("floor-python-pkg", "p99"), "", 0))
	}
	r.Rows = rows
}

func num(v *float64) string {
	if v == nil {
		return "n/a"
	}
	a := math.Abs(*v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", *v)
	case a >= 10:
		return fmt.Sprintf("%.1f", *v)
	default:
		return fmt.Sprintf("%.2f", *v)
	}
}

func (r *results) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fig\tmetric\tunit\tnubo\tpeer\tpeer value\tratio\ttarget\tresult")
	for _, x := range r.Rows {
		ratio := "—"
		if x.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *x.Ratio)
		}
		peer, pv := x.PeerLabel, "—"
		if peer == "" {
			peer = "—"
		} else {
			pv = num(x.Peer)
		}
		target, res := x.Target, "—"
		if target == "" {
			target = "—"
		}
		if x.Pass != nil {
			res = "FAIL"
			if *x.Pass {
				res = "pass"
			}
		} else if x.Target != "" {
			res = "n/a"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Figure, x.Metric, x.Unit, num(x.Nubo), peer, pv, ratio, target, res)
	}
	tw.Flush()
}

// printDetails prints the distributions behind the table, the throughput
// runs, the cold start phases and the memory figure's parts.
func (r *results) printDetails(w io.Writer) {
	if a, ok := r.Host["page_first_touch_us_start"].(float64); ok {
		b, _ := r.Host["page_first_touch_us_end"].(float64)
		fmt.Fprintf(w, "\nmachine: a fresh page's first touch costs %.2f µs at the start, %.2f at the end (bare metal: about 0.1–0.5; every process start pays it per page)\n", a, b)
	}
	if a, ok := r.Host["idle_cpu_wake_us_start"].(float64); ok {
		b, _ := r.Host["idle_cpu_wake_us_end"].(float64)
		sa, _ := r.Host["same_cpu_wake_us_start"].(float64)
		sb, _ := r.Host["same_cpu_wake_us_end"].(float64)
		fmt.Fprintf(w, "machine: a write reaches a thread asleep on another CPU, idle 2 ms, in %.1f µs at the start, %.1f at the end; on the writer's own CPU in %.1f and %.1f (each hand-off between threads of a cold start pays one or the other)\n", a, b, sa, sb)
	}
	fmt.Fprintln(w, "\nlatency distributions (ms)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "series\tn\tmin\tp50\tp90\tp99\tmax\tnote")
	for _, s := range r.order {
		sum, ok := s.Summarize()
		note := s.Err
		if s.Discarded > 0 {
			note = strings.TrimPrefix(note+"; ", "; ") + fmt.Sprintf("attempts taken again: %d (the emulator's runtime raced its Runtime API)", s.Discarded)
		}
		if !ok {
			fmt.Fprintf(tw, "%s\t0\t\t\t\t\t\t%s\n", s.Label, note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\n", s.Label, sum.N, sum.Min, sum.P50, sum.P90, sum.P99, sum.Max, note)
	}
	tw.Flush()
	if len(r.Throughput) > 0 {
		fmt.Fprintln(w, "\nwarm throughput")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "target\trequests\tseconds\treq/s\tp50 ms\tp99 ms\tCPU µs/request: client\tserver\tagent\truntime\ttotal\tmachine\tswitches/request: client\tserver\tagent\truntime\tnote")
		for _, t := range r.Throughput {
			c, sw := t.CPUPerRequest, t.SwitchesPerRequest
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\n", t.Label, t.Requests, t.Seconds, t.PerSecond, t.Latency.P50, t.Latency.P99,
				c["client"], c["server"], c["agent"], c["runtime"], c["client"]+c["server"]+c["agent"]+c["runtime"], c["machine"],
				sw["client"], sw["server"], sw["agent"], sw["runtime"], t.Err)
		}
		tw.Flush()
	}
	r.printParts(w)
	if len(r.Phases) > 0 {
		fmt.Fprintln(w, "\ncold start phases from nubo's debug log (ms, p50 / p99; n = environments whose line was seen)")
		for _, k := range sortedKeys(r.Phases) {
			for _, msg := range sortedKeys(r.Phases[k]) {
				var parts []string
				fields := r.Phases[k][msg]
				for _, f := range sortedKeys(fields) {
					s := fields[f]
					parts = append(parts, fmt.Sprintf("%s %.2f / %.2f", f, s.P50, s.P99))
				}
				n := 0
				for _, s := range fields {
					n = max(n, s.N)
				}
				fmt.Fprintf(w, "  %s, %q (n=%d): %s\n", k, msg, n, strings.Join(parts, ", "))
			}
		}
	}
	if e := r.Envs; e != nil {
		fmt.Fprintln(w, "\nenvironments (figure 4)")
		bursts := make([]string, len(e.Bursts))
		for i, v := range e.Bursts {
			bursts[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(w, "  %d first invokes of distinct functions, %d at a time, in each of %d bursts: %s environments/s; median %.0f (%.2f s)\n",
			e.Environments, e.Concurrency, len(e.Bursts), strings.Join(bursts, ", "), e.PerSecond, e.Seconds)
		fmt.Fprintf(w, "  the first burst's first-invoke latency p50 %.1f ms, p99 %.1f ms\n", e.Latency.P50, e.Latency.P99)
		fmt.Fprintf(w, "  %d idle environments: MemAvailable fell %.1f MiB = %.2f MiB per environment (pooled shells %d before, %d after)\n",
			e.LiveAgents, float64(e.MemAvailDeltaKiB)/1024, e.PerEnvHostKiB/1024, e.PooledBefore, e.PooledAfter)
		fmt.Fprintf(w, "  per environment: function PSS %.2f MiB (RSS %.2f MiB), agent PSS %.2f MiB, nubo (serve and spawner) PSS growth %.2f MiB\n",
			e.FunctionPSSKiB/1024, e.FunctionRSSKiB/1024, e.AgentPSSKiB/1024, e.ServerPSSDeltaKiB/1024)
		fmt.Fprintf(w, "  beyond the function: %.2f MiB (host − function PSS), %.2f MiB (host − function RSS); userland part %.2f MiB\n",
			e.OverheadPSSKiB/1024, e.OverheadRSSKiB/1024, e.UserlandKiB/1024)
		fmt.Fprintf(w, "  CPU per environment: nubo (serve and spawner) %.1f ms + the environment's cgroup %.1f ms; bound on %d cores: %.0f environments/s\n",
			e.ServerCPUPerEnvMs, e.EnvCPUMs, runtime.NumCPU(), e.CapacityPerSecond)
		fmt.Fprintf(w, "  the function's own start (echo bootstrap fork+exec, median CPU) %.1f ms; bound on %d cores if an environment cost nothing else: %.0f environments/s\n",
			e.RuntimeStartCPUMs, runtime.NumCPU(), e.RuntimeStartBound)
		if e.Err != "" {
			fmt.Fprintf(w, "  error: %s\n", e.Err)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// summarizePhases reduces the joined phase lines: series → log message →
// field → distribution.
func (r *results) summarizePhases() {
	if len(r.phases) == 0 {
		return
	}
	r.Phases = map[string]map[string]map[string]Summary{}
	for k, ps := range r.phases {
		acc := map[string]map[string]*Series{}
		for _, p := range ps {
			for msg, fields := range p {
				if acc[msg] == nil {
					acc[msg] = map[string]*Series{}
				}
				for f, d := range fields {
					if acc[msg][f] == nil {
						acc[msg][f] = &Series{}
					}
					acc[msg][f].Samples = append(acc[msg][f].Samples, d)
				}
			}
		}
		out := map[string]map[string]Summary{}
		for msg, fields := range acc {
			out[msg] = map[string]Summary{}
			for f, s := range fields {
				out[msg][f], _ = s.Summarize()
			}
		}
		r.Phases[k] = out
	}
}

func (r *results) writeJSON(path string) error {
	r.Summaries = map[string]seriesOut{}
	for _, s := range r.order {
		sum, _ := s.Summarize()
		o := seriesOut{Label: s.Label, Panel: s.Panel, Summary: sum, Err: s.Err, Discarded: s.Discarded, SamplesUs: make([]int64, len(s.Samples))}
		for i, d := range s.Samples {
			o.SamplesUs[i] = d.Microseconds()
		}
		r.Summaries[s.Name] = o
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// methods says how each figure was measured; it is printed and kept in the
// JSON so a number is never read without its method.
func methods(c config) []string {
	return []string{
		"All figures come from one run on one machine; peers and nubo are measured in alternating blocks (warm: " +
			fmt.Sprint(c.block) + " samples, cold: " + fmt.Sprint(c.coldBlock) + " samples) so drift on a shared machine hits both; only ratios within one run are claims.",
		"Quantiles are nearest-rank over all samples of a series.",
		"nubo: `nubo serve` (namespace isolation, every control on; its own bridge, subnet and uid range when the binary has those flags, so it coexists with other nubo servers) on 127.0.0.1, driven over its Lambda API with a keep-alive net/http client; every request is SigV4-signed anew (payload hash + signature) and timed from before signing to the last response byte.",
		"Payload: a 100-byte JSON event; every response is checked to equal it (as JSON for Python/Node).",
		"Warm: 20 untimed invokes first (the first is the cold start), then sequential invokes of one function. RIE: aws-lambda-rie serving the same echo bootstrap, POST /2015-03-31/functions/function/invocations, sequential (it crashes on overlapping requests).",
		"Warm floors: hopfloor's least Lambda servers (bench/cmd/hopfloor) in the same blocks, serving the same echo bootstrap with one runtime: each request's SigV4 signature is checked, its body handed to the runtime's pending /next and the runtime's /response returned, the server's connections read and written as nubo serve's are (package rawio), and nothing else is done (no logs, no isolation, no metrics); the relayed one has a relay process between it and the runtime over a socketpair, as nubo has its agent, both ends read and written as nubo's agent connection is (rawio.Quiet). Their requests are signed and timed as nubo's. The rows marked (floor) put the floor's own p50 in nubo's column.",
		"Throughput: per round, RIE sequential for " + c.tputDuration.String() + ", then nubo at each concurrency for " + c.tputDuration.String() + " against one function (its environments warmed first); req/s = completed invokes / wall time over all rounds. CPU per request: user + system time from /proc/PID/stat over each target's bursts, divided by its requests: client = this benchmark, server = nubo serve and its spawner (or the emulator), agent = nubo's agents, runtime = the processes below them (below the emulator); at 10 ms tick resolution.",
		"Cold (nubo): for each sample a new function is created and reaches Active untimed; the sample is its first Invoke end to end (new sandbox, runtime start, init, response). Functions are deleted after each block and their environments waited out before the next.",
		"Cold (RIE): from fork+exec of aws-lambda-rie to the first successful response, retrying the connection every 0.2 ms until it listens; a new emulator per sample. Under load the emulator can start its runtime before its own Runtime API listens, and then answers 502: such an attempt is taken again with a new emulator (up to three times) and counted in the series' note.",
		"crun: `crun run` of a bundle from `crun spec` running /bin/true from a rootfs holding only it and its libraries; timed inside a long-lived helper in a private mount namespace where /sys/fs/cgroup/unified is unmounted (crun 1.8 refuses this host's hybrid cgroup mode otherwise); only crun's own run is timed.",
		"Floors: fork+exec of the echo bootstrap outside Lambda (it exits at once, having started its runtime), `unshare --pid --fork --mount --net --uts --ipc /bin/true`, and the bare interpreter start for Python and Node.",
		"Least cold start (floor): the echo bootstrap started outside any sandbox against the least Runtime API (a server in the benchmark whose first /next hands it the event), timed from before the fork to its response's last byte: the function's start, init and first invocation and nothing else. Pinned, it is started as nubo starts a runtime: on one CPU (the last allowed), under SCHED_OTHER, with nubo's 500 µs timer slack. No system that starts the function's process per environment answers a first invoke sooner than the faster of the two.",
		"Cold start parts: a quarter of the cold samples (at least 10) again, nubo's and the pinned least cold start's, with bench/timing's bootstrap, which answers with the wall-clock time its process reached main (its main package's initialisation) and its handler ran, and its CPU time (user and system together) and minor page faults by main (getrusage). Each sample is split into first byte to the runtime's main, main to handler, handler to last byte; for nubo the first part begins before the request is signed and the last ends at the client's last byte, for the floor they begin before the fork and end at its Runtime API's last byte. The table gives each part's p50 and p90. With fewer samples than the other series, these finish in the run's first rounds. (No fork time: the runtime's schedstat would give one, but this machine's scheduler clock put a bare start's fork before the benchmark called fork.)",
		"Environments: N functions sharing one deployment package get their first invoke " + fmt.Sprint(c.envConcurrency) + " at a time; rate = N / wall time from the first request to the last response. This burst runs " + fmt.Sprint(c.envBursts) + " times, each with N new functions (those of the burst before deleted and their environments gone first, then 3 s for the host to settle); the figure is the median rate; latency, memory and CPU are the first burst's. Its peer is a bound no system that starts the function's process for each environment can pass on this machine (a design that restores snapshots or forks warm runtimes could): the cores divided by the median CPU time (rusage) of 31 fork+execs of the echo bootstrap outside any sandbox, the function's own start.",
		"Machine: a fresh anonymous page's first write, timed over 16 MiB (huge pages refused) at the start and the end of the run; on a guest with shadow page tables it is tens of times dearer than on bare metal, and it prices every process start. Also a hand-off between threads: the median time from a thread's write of a byte to a pipe, after 2 ms asleep, until a thread pinned to another CPU returns from its read (50 rounds), and the same with both on one CPU; in a guest whose idle vCPUs halt into the hypervisor the first is many times the second.",
		"Idle memory: MemAvailable (median of 7 readings) before the burst minus after it, 2 s after the last response, divided by the live environments (nubo's agent children with a runtime below them; shells nubo holds ready in a pool are not environments: the pool grows after a burst, so each shell added since before the burst is counted as one environment's overhead without a function), minus the mean PSS of each environment's function processes (PSS, not RSS, because the environments share one unpacked binary; the RSS variant is reported too). Includes kernel objects, the agent and nubo's own growth; neighbours on a shared machine add noise.",
	}
}
