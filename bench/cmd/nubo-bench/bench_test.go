package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/nsbox"
	"github.com/nubo-dev/nubo/internal/testutil"
)

func durs(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestQuantileNearestRank(t *testing.T) {
	// 1..100 ms: nearest rank puts p50 on the 50th and p99 on the 99th.
	var s []int
	for i := 100; i >= 1; i-- {
		s = append(s, i)
	}
	sum, ok := (&Series{Samples: durs(s...)}).Summarize()
	if !ok {
		t.Fatal("no summary")
	}
	if sum.N != 100 || sum.Min != 1 || sum.P50 != 50 || sum.P90 != 90 || sum.P99 != 99 || sum.Max != 100 || sum.Mean != 50.5 {
		t.Fatalf("summary = %+v", sum)
	}
	// Ten samples: p99 is the slowest, never a value between samples.
	sum, _ = (&Series{Samples: durs(5, 1, 9, 3, 7, 2, 8, 4, 6, 10)}).Summarize()
	if sum.P50 != 5 || sum.P99 != 10 {
		t.Fatalf("p50/p99 of 1..10 = %v/%v", sum.P50, sum.P99)
	}
	if _, ok := (&Series{}).Summarize(); ok {
		t.Fatal("an empty series has no summary")
	}
}

func TestPayloadIs100BytesOfJSON(t *testing.T) {
	p := payload100()
	if len(p) != 100 {
		t.Fatalf("payload is %d bytes", len(p))
	}
	if !json.Valid(p) {
		t.Fatalf("payload is not JSON: %s", p)
	}
}

func TestSameJSON(t *testing.T) {
	a := []byte(`{"payload":"x","n":[1,2]}`)
	if !sameJSON(a, []byte(`{"n": [1, 2], "payload": "x"}`)) {
		t.Error("re-serialised JSON should compare equal")
	}
	if sameJSON(a, []byte(`{"payload":"y","n":[1,2]}`)) {
		t.Error("different values compared equal")
	}
	if sameJSON(a, []byte(`not json`)) {
		t.Error("invalid JSON compared equal")
	}
}

// TestInterleaveAlternatesBlocks checks the property the figures rely on:
// series advance in turns of one block, and a failing series stops without
// stopping the others.
func TestInterleaveAlternatesBlocks(t *testing.T) {
	var trace []string
	mk := func(name string, want int, failAt int) *job {
		s := &Series{Name: name}
		return &job{series: s, want: want, sample: func(_ context.Context, i int) (time.Duration, error) {
			if i == failAt {
				return 0, errors.New("boom")
			}
			trace = append(trace, name)
			return time.Millisecond, nil
		}, after: func(context.Context) error { trace = append(trace, "|"); return nil }}
	}
	a, b, c := mk("a", 5, -1), mk("b", 3, -1), mk("c", 6, 3)
	interleave(context.Background(), 2, a, b, c)
	got := strings.Join(trace, "")
	want := "aa|bb|cc|aa|b|c|a|"
	if got != want {
		t.Fatalf("order = %q, want %q", got, want)
	}
	if len(a.series.Samples) != 5 || len(b.series.Samples) != 3 || len(c.series.Samples) != 3 {
		t.Fatalf("samples a=%d b=%d c=%d", len(a.series.Samples), len(b.series.Samples), len(c.series.Samples))
	}
	if c.series.Err == "" || a.series.Err != "" {
		t.Fatalf("errors: a=%q c=%q", a.series.Err, c.series.Err)
	}
}

func TestRowsTargets(t *testing.T) {
	r := newResults()
	r.series("nubo-warm-go", "", "warm").Samples = durs(1, 1, 1)
	r.series("rie-warm", "", "warm").Samples = durs(2, 2, 2)
	r.series("nubo-cold-go", "", "cold").Samples = durs(30, 30)
	r.series("crun-run-true", "", "cold").Samples = durs(10, 10)
	r.Envs = &envResult{PerSecond: 250, LiveAgents: 10, OverheadPSSKiB: 3 * 1024, RuntimeStartBound: 125}
	r.buildRows(map[int]bool{1: true, 3: true, 4: true})
	find := func(metric, peer string) row {
		for _, x := range r.Rows {
			if x.Metric == metric && x.PeerLabel == peer {
				return x
			}
		}
		t.Fatalf("no row %q vs %q in %+v", metric, peer, r.Rows)
		return row{}
	}
	if x := find("warm invoke p50", "RIE"); *x.Ratio != 0.5 || !*x.Pass {
		t.Errorf("warm p50 row = ratio %v pass %v", *x.Ratio, *x.Pass)
	}
	if x := find("cold start p50", "crun"); *x.Ratio != 3 || *x.Pass {
		t.Errorf("cold vs crun row = ratio %v pass %v", *x.Ratio, *x.Pass)
	}
	if x := find("cold start p50", "RIE cold"); x.Ratio != nil || x.Pass != nil {
		t.Errorf("a row without its peer must not pass or fail: %+v", x)
	}
	if x := find("cold start p99", "RIE cold"); *x.Pass {
		t.Errorf("30 ms p99 passed a 25 ms target")
	}
	if x := find("environments created", "runtime-start bound"); !*x.Pass || *x.Ratio != 2 {
		t.Errorf("250 env/s against a bound of 125: pass %v ratio %v, want a pass (the target is nubo's own rate) and 2×", *x.Pass, *x.Ratio)
	}
	if x := find("idle host memory per env beyond function", ""); *x.Pass {
		t.Errorf("3 MiB passed a 2 MiB target")
	}
	var buf bytes.Buffer
	r.printTable(&buf)
	if !strings.Contains(buf.String(), "FAIL") || !strings.Contains(buf.String(), "pass") {
		t.Errorf("table lacks pass/fail:\n%s", buf.String())
	}
}

// TestRunExecCPU: the CPU time of a process that spins is most of its
// wall time, and one that sleeps uses almost none.
func TestRunExecCPU(t *testing.T) {
	wall, cpu, err := runExec(true, "/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	if err != nil {
		t.Fatal(err)
	}
	// Not a share of the wall time: on a busy host the shell may wait.
	if cpu <= 0 || cpu > 2*wall {
		t.Errorf("spinning shell: cpu %v of wall %v", cpu, wall)
	}
	wall, cpu, err = runExec(true, "/bin/sleep", "0.2")
	if err != nil {
		t.Fatal(err)
	}
	if wall < 200*time.Millisecond || cpu > wall/2 {
		t.Errorf("sleep 0.2: cpu %v of wall %v", cpu, wall)
	}
}

func TestPageTouchMicros(t *testing.T) {
	us, err := pageTouchMicros()
	if err != nil {
		t.Fatal(err)
	}
	// 4096 pages in well under a second, and not for free.
	if us <= 0.01 || us > 250 {
		t.Errorf("first touch of a page: %.3f µs", us)
	}
}

// TestOutputsParse writes the JSON and the SVG of a small run and reads
// them back: the SVG must be well-formed XML with one polyline per drawn
// series, and the JSON must keep every sample.
func TestOutputsParse(t *testing.T) {
	r := newResults()
	r.series("nubo-warm-go", "nubo <warm> & co", "warm").Samples = durs(1, 2, 3, 4)
	r.series("rie-warm", "RIE", "warm").Samples = durs(2, 2)
	r.series("rie-cold", "RIE cold", "cold").Samples = durs(10, 20, 30)
	r.series("crun-run-true", "crun", "cold").Err = "crun not found"
	r.Throughput = []*throughput{{Name: "rie-seq", Label: "RIE sequential", PerSecond: 1000}, {Name: "nubo-c4", Label: "nubo c=4", PerSecond: 2500}}
	dir := t.TempDir()
	sp, jp := filepath.Join(dir, "x.svg"), filepath.Join(dir, "x.json")
	if err := writeSVG(sp, r); err != nil {
		t.Fatal(err)
	}
	if err := r.writeJSON(jp); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(sp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	polylines, rects := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "polyline":
				polylines++
			case "rect":
				rects++
			}
		}
	}
	if polylines != 3 {
		t.Errorf("%d polylines, want 3 (series with samples)", polylines)
	}
	if rects < 2+len(r.Throughput) {
		t.Errorf("%d rects: throughput bars missing", rects)
	}
	b, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Series map[string]seriesOut `json:"series"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.Series["nubo-warm-go"].SamplesUs; len(got) != 4 || got[3] != 4000 {
		t.Errorf("samples = %v", got)
	}
	if out.Series["crun-run-true"].Err != "crun not found" {
		t.Errorf("the failed series lost its error: %+v", out.Series["crun-run-true"])
	}
}

func TestZipKeepsExecutableMode(t *testing.T) {
	z, err := zipOf(map[string][]byte{"bootstrap": []byte("#!/bin/sh\n"), "a.py": []byte("x")}, map[string]bool{"bootstrap": true})
	if err != nil {
		t.Fatal(err)
	}
	modes := zipModes(t, z)
	if modes["bootstrap"]&0o111 == 0 || modes["a.py"]&0o111 != 0 {
		t.Fatalf("modes = %v", modes)
	}
}

func zipModes(t *testing.T, z []byte) map[string]os.FileMode {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]os.FileMode{}
	for _, f := range zr.File {
		m[f.Name] = f.Mode()
	}
	return m
}

// TestPhasesFromLog feeds nubo-shaped debug lines through the log reader
// and checks they are joined to the function and read in the right units.
func TestPhasesFromLog(t *testing.T) {
	n := &nuboServer{envs: map[string]phases{}, byFunc: map[string][]string{}}
	log := strings.Join([]string{
		`{"level":"DEBUG","msg":"Server is ready","component":"nats"}`,
		`{"level":"INFO","msg":"execution ready","runtimes":"provided.al2023,python3.11,nodejs20.x"}`,
		`{"level":"DEBUG","msg":"netenv: attached","env":"e1","veth":"v1"}`,
		`{"level":"DEBUG","msg":"environment initialised","env":"e1","agent_ready":8000000,"runtime_init_ms":3}`,
		`{"level":"DEBUG","msg":"environment started","env":"e1","function":"arn:aws:lambda:us-east-1:000000000000:function:cold-go-0","total":17000000}`,
		`not json at all`,
		`{"level":"INFO","msg":"nubo serving"}`,
	}, "\n") + "\n"
	ready := make(chan struct{})
	var out bytes.Buffer
	n.readLog(strings.NewReader(log), &out, ready)
	select {
	case <-ready:
	default:
		t.Fatal("\"nubo serving\" did not signal readiness")
	}
	if got := strings.Join(n.runtimeIDs(), ","); got != "provided.al2023,python3.11,nodejs20.x" {
		t.Errorf("runtimes = %q", got)
	}
	if runtimeFor(n, "python") != "python3.11" || runtimeFor(n, "ruby") != "" {
		t.Errorf("runtimeFor: python=%q ruby=%q", runtimeFor(n, "python"), runtimeFor(n, "ruby"))
	}
	p, ok := n.firstEnv("cold-go-0", 0)
	if !ok {
		t.Fatal("no phases joined to cold-go-0")
	}
	if p["environment initialised"]["agent_ready"] != 8*time.Millisecond || p["environment initialised"]["runtime_init_ms"] != 3*time.Millisecond {
		t.Errorf("initialised = %v", p["environment initialised"])
	}
	if p["environment started"]["total"] != 17*time.Millisecond {
		t.Errorf("started = %v", p["environment started"])
	}
	if _, ok := p["netenv: attached"]; ok {
		t.Error("a line that times nothing was kept as a phase")
	}
	if strings.Contains(out.String(), "nats") || !strings.Contains(out.String(), "not json at all") {
		t.Errorf("kept log:\n%s", out.String())
	}
}

// TestPkgSources: the generated package imports, its handler echoes, and
// the floors' two copies differ only in the .pyc files.
func TestPkgSources(t *testing.T) {
	py := interpreter("python3")
	testutil.RequiresBinary(t, "python3")
	src, compiled, err := pkgFloorDirs(py, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := timeExec(true, py, "-B", "-c", pkgImport(src)); err != nil {
		t.Fatalf("import from the sources: %v", err)
	}
	script := pkgImport(compiled) + "; import lambda_function, benchpkg.mod3 as m; " +
		"assert lambda_function.lambda_handler({'a': 1}, None) == {'a': 1}; " +
		"assert m.handle_2({'x': 9, 'y': ' Y '}) == 'x=9.00, y:y'; " +
		"import os, struct; st = os.stat(m.__file__); head = open(m.__cached__, 'rb').read(16); " +
		"assert struct.unpack('<III', head[4:16]) == (0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size)"
	// -B: the cached files must be compileall's, not written by this import.
	if _, err := timeExec(true, py, "-B", "-c", script); err != nil {
		t.Fatalf("import from the compiled copy: %v", err)
	}
	if n, err := filepath.Glob(filepath.Join(src, pkgName, "__pycache__")); err != nil || len(n) != 0 {
		t.Errorf("the source copy has a __pycache__: %v", n)
	}
}

// TestIdleWakeMicros: a hand-off across CPUs and one on one CPU are both
// measured, as times that passed.
func TestIdleWakeMicros(t *testing.T) {
	testutil.Requires(t, len(nsbox.AllowedCPUs()) >= 2, "needs two CPUs")
	cross, same, err := idleWakeMicros(time.Millisecond, 20)
	if err != nil {
		t.Fatal(err)
	}
	if cross <= 0 || same <= 0 {
		t.Errorf("hand-offs: across CPUs %.2f µs, on one CPU %.2f µs; want times that passed", cross, same)
	}
	t.Logf("hand-off to an idle CPU %.1f µs, on one CPU %.1f µs", cross, same)
}

// TestColdParts splits a cold start by the timing bootstrap's answer, and
// refuses answers whose times cannot be.
func TestColdParts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	answer := func(main, handler time.Duration) []byte {
		b, _ := json.Marshal(timingAnswer{MainNs: t0.Add(main).UnixNano(), CPUNs: int64(ms(9)), Minflt: 242, HandlerNs: t0.Add(handler).UnixNano()})
		return b
	}
	// main at 13 ms, handler at 15, last byte at 16.5
	p, err := coldParts(t0, t0.Add(ms(16.5)), answer(ms(13), ms(15)))
	if err != nil {
		t.Fatal(err)
	}
	if want := (partSample{parts: [len(partNames)]time.Duration{ms(13), ms(2), ms(1.5), ms(9)}, faults: 242}); p != want {
		t.Errorf("parts %v, want %v", p, want)
	}
	for name, b := range map[string][]byte{
		"not JSON":              []byte("{"),
		"no times":              []byte(`{}`),
		"no CPU time":           []byte(`{"main_ns":1000000000000,"handler_ns":1000002000000}`),
		"main before the start": answer(-ms(1), ms(5)),
		"handler before main":   answer(ms(5), ms(4)),
		"handler after the end": answer(ms(3), ms(20)),
	} {
		if _, err := coldParts(t0, t0.Add(ms(16.5)), b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Kept samples summarise per part, and their faults as counts.
	r := newResults()
	for _, main := range []float64{11, 13, 12} {
		if err := r.addParts("nubo", t0, t0.Add(ms(16.5)), answer(ms(main), ms(15))); err != nil {
			t.Fatal(err)
		}
	}
	r.summarizeParts()
	if got := r.Parts["nubo"][partNames[0]]; got.N != 3 || got.P50 != 12 {
		t.Errorf("%s: %+v, want 3 samples, p50 12 ms", partNames[0], got)
	}
	if got := r.PartFaults["nubo"]; got != [2]int64{242, 242} {
		t.Errorf("faults %v, want p50 and p90 242", got)
	}
}

// TestMedianIndex: figure 4's rate is its median burst's, whatever their
// order; of an even count, the lower middle one.
func TestMedianIndex(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		want int
	}{
		{[]float64{190}, 0},
		{[]float64{220, 190, 205}, 2},
		{[]float64{190, 220, 205}, 2},
		{[]float64{205, 190, 220}, 0},
		{[]float64{210, 190, 220, 200}, 3},
	} {
		if got := medianIndex(tc.v); got != tc.want {
			t.Errorf("medianIndex(%v) = %d, want %d", tc.v, got, tc.want)
		}
	}
}
