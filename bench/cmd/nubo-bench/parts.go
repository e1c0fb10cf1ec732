package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// A cold start's parts, split where the runtime's process reaches main
// (its main package's initialisation, after every other package's) and
// where its handler runs; bench/timing answers with both, wall clock. The
// same split of nubo's cold start and of the pinned least cold start shows
// on which side of the runtime's own start nubo's extra time is. The first
// part holds everything up to the runtime's main: for nubo the client's
// signing, the API, the sandbox, the keeper and the fork; for the floor
// the fork alone; for both the Go runtime's own start. The last ends, for
// nubo, at the client's last byte, for the floor at its Runtime API's.
var partNames = [...]string{"first byte to the runtime's main", "main to the handler", "handler to the last byte",
	"the runtime's CPU to main (rusage)"}

// timingAnswer is bench/timing's answer.
type timingAnswer struct {
	MainNs    int64 `json:"main_ns"`
	CPUNs     int64 `json:"cpu_ns"` // the process's CPU time by main
	Minflt    int64 `json:"minflt"` // its minor page faults by main
	HandlerNs int64 `json:"handler_ns"`
}

// partSample is one cold start's parts and the runtime's page faults by
// main.
type partSample struct {
	parts  [len(partNames)]time.Duration
	faults int64
}

// coldParts splits a cold start timed from t0 to t1 (wall clock, as the
// runtime's own times are) by the runtime's answer; the last "part" is the
// CPU time the runtime's process had used by main, which is not a part of
// the wall time but tells work from waiting in the first.
func coldParts(t0, t1 time.Time, answer []byte) (partSample, error) {
	var a timingAnswer
	if err := json.Unmarshal(answer, &a); err != nil {
		return partSample{}, fmt.Errorf("timing answer %q: %w", trim(answer), err)
	}
	if a.MainNs == 0 || a.HandlerNs == 0 || a.CPUNs == 0 {
		return partSample{}, fmt.Errorf("timing answer %q: no times (a timing bootstrap older than this benchmark?)", trim(answer))
	}
	atMain, handler := time.Unix(0, a.MainNs), time.Unix(0, a.HandlerNs)
	s := partSample{parts: [...]time.Duration{atMain.Sub(t0), handler.Sub(atMain), t1.Sub(handler), time.Duration(a.CPUNs)}, faults: a.Minflt}
	for i, d := range s.parts {
		if d < 0 {
			return partSample{}, fmt.Errorf("timing answer %q: %s is negative (%v)", trim(answer), partNames[i], d)
		}
	}
	return s, nil
}

// partsJobs are figure 3's parts: nubo's cold start and the pinned least
// cold start of the timing bootstrap, want samples each, their parts kept
// under "nubo" and "pinned floor". The floor's job comes first, so that
// its blocks follow another floor's, not nubo's (whose pool refills after
// a block). nubo's phases are not collected for these functions. stop
// ends the floor's server.
func (b *bench) partsJobs(n *nuboServer, want int) (jobs []*job, stop func()) {
	// Their own panel: the chart's cold panel keeps to the figures' series.
	ns := b.res.series("nubo-cold-parts", "nubo cold (timing bootstrap, for the parts)", "cold-parts")
	fs := b.res.series("floor-least-cold-pinned-parts", "least cold start, pinned (timing bootstrap, for the parts)", "cold-parts")
	if b.timingErr != nil {
		ns.Err = "timing bootstrap: " + b.timingErr.Error()
		fs.Err = ns.Err
		return []*job{{series: fs, failed: true}, {series: ns, failed: true}}, func() {}
	}
	const prefix = "cold-parts"
	nj := b.coldJob(n, ns, prefix, b.timing, want)
	nj.sample = func(ctx context.Context, i int) (time.Duration, error) {
		name := fmt.Sprintf("%s-%d", prefix, i)
		t0 := time.Now()
		d, out, err := n.invoke(ctx, name, b.payload)
		if err != nil {
			return 0, err
		}
		return d, b.res.addParts("nubo", t0, t0.Add(d), out)
	}
	fj := &job{series: fs, want: want}
	l, err := startLeastCold(b.timingBootstrap(), b.payload, true)
	if err != nil {
		fj.failed, fs.Err = true, err.Error()
		return []*job{fj, nj}, func() {}
	}
	fj.sample = func(ctx context.Context, _ int) (time.Duration, error) {
		t0, d, out, err := l.sampleAt(ctx)
		if err != nil {
			return 0, err
		}
		return d, b.res.addParts("pinned floor", t0, t0.Add(d), out)
	}
	return []*job{fj, nj}, l.stop
}

// addParts keeps the parts of one sample of who.
func (r *results) addParts(who string, t0, t1 time.Time, answer []byte) error {
	s, err := coldParts(t0, t1, answer)
	if err != nil {
		return err
	}
	if r.parts == nil {
		r.parts = map[string][]partSample{}
	}
	r.parts[who] = append(r.parts[who], s)
	return nil
}

// summarizeParts turns the kept parts into Parts (per who, per part) and
// PartFaults (per who, p50 and p90).
func (r *results) summarizeParts() {
	for who, samples := range r.parts {
		if r.Parts == nil {
			r.Parts, r.PartFaults = map[string]map[string]Summary{}, map[string][2]int64{}
		}
		r.Parts[who] = map[string]Summary{}
		for i, name := range partNames {
			ds := make([]time.Duration, len(samples))
			for j, s := range samples {
				ds[j] = s.parts[i]
			}
			r.Parts[who][name], _ = (&Series{Samples: ds}).Summarize()
		}
		faults := make([]int64, len(samples))
		for j, s := range samples {
			faults[j] = s.faults
		}
		slices.Sort(faults)
		r.PartFaults[who] = [2]int64{quantile(faults, 0.50), quantile(faults, 0.90)}
	}
}

// printParts prints Parts as a table of medians (and p90), nubo beside the
// pinned floor.
func (r *results) printParts(w io.Writer) {
	nubo, floor := r.Parts["nubo"], r.Parts["pinned floor"]
	if len(nubo) == 0 && len(floor) == 0 {
		return
	}
	fmt.Fprintln(w, "\ncold start parts (ms, p50 / p90 of each sample's part, split by the runtime's own clock readings at main and at its handler)")
	fmt.Fprintf(w, "  %-34s %-15s %s\n", "part", "nubo", "pinned floor")
	cell := func(s Summary) string {
		if s.N == 0 {
			return "–" // no sample: the series failed
		}
		return fmt.Sprintf("%.2f / %.2f", s.P50, s.P90)
	}
	for _, name := range partNames {
		fmt.Fprintf(w, "  %-34s %-15s %s\n", name, cell(nubo[name]), cell(floor[name]))
	}
	faults := func(who string) string {
		f, ok := r.PartFaults[who]
		if !ok {
			return "–"
		}
		return fmt.Sprintf("%d / %d", f[0], f[1])
	}
	fmt.Fprintf(w, "  %-34s %-15s %s\n", "the runtime's page faults by main", faults("nubo"), faults("pinned floor"))
}
