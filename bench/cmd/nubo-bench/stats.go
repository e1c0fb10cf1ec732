package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"
)

// Series is one latency distribution: every sample of one thing measured
// one way in this run.
type Series struct {
	Name    string // stable key in the JSON ("nubo-warm-go")
	Label   string // legend text in the chart
	Panel   string // "warm" or "cold": which chart panel draws it ("cold-parts": none)
	Samples []time.Duration
	Err     string // why the series stopped early, if it did
	// Discarded counts attempts thrown away and taken again because the
	// peer failed on its own (see errRIEInitRace).
	Discarded int
}

// Summary is a series reduced to the figures the table quotes, in
// milliseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the nearest-rank quantile of sorted samples: the smallest
// sample with at least q of all samples at or below it. Nearest rank never
// invents a value between two samples, so a p99 of 100 samples is the 99th
// slowest one actually observed.
func quantile[T any](sorted []T, q float64) T {
	if len(sorted) == 0 {
		var zero T
		return zero
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func sortedCopy(s []time.Duration) []time.Duration {
	c := append([]time.Duration(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

// Summarize reduces the series; ok is false when it has no sample.
func (s *Series) Summarize() (Summary, bool) {
	if s == nil || len(s.Samples) == 0 {
		return Summary{}, false
	}
	c := sortedCopy(s.Samples)
	var sum time.Duration
	for _, d := range c {
		sum += d
	}
	return Summary{
		N: len(c), Min: ms(c[0]), P50: ms(quantile(c, 0.50)), P90: ms(quantile(c, 0.90)),
		P99: ms(quantile(c, 0.99)), Max: ms(c[len(c)-1]), Mean: ms(sum / time.Duration(len(c))),
	}, true
}

// job is one series to fill by interleaving: sample measures once; before
// and after bracket each block outside the timed region (creating the
// functions a block of cold starts needs, deleting them afterwards).
type job struct {
	series *Series
	want   int
	sample func(ctx context.Context, i int) (time.Duration, error)
	before func(ctx context.Context, n int) error
	after  func(ctx context.Context) error
	done   int
	failed bool
}

// interleave fills every job round-robin, block samples at a time, so slow
// drifts of a shared, noisy machine hit every series alike: only ratios
// within one run are claims. A job that fails stops (its error is kept on
// its series) and the others go on.
func interleave(ctx context.Context, block int, jobs ...*job) {
	for {
		active := false
		for _, j := range jobs {
			if j.failed || j.done >= j.want {
				continue
			}
			active = true
			n := min(block, j.want-j.done)
			if err := runBlock(ctx, j, n); err != nil {
				j.failed = true
				if j.series.Err == "" {
					j.series.Err = err.Error()
				}
				logf("%s: %v (stopping this series after %d samples)", j.series.Name, err, len(j.series.Samples))
			}
			if ctx.Err() != nil {
				return
			}
		}
		if !active {
			return
		}
	}
}

func runBlock(ctx context.Context, j *job, n int) error {
	if j.before != nil {
		if err := j.before(ctx, n); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	var err error
	for k := 0; k < n && err == nil; k++ {
		if err = ctx.Err(); err != nil {
			break
		}
		var d time.Duration
		if d, err = j.sample(ctx, j.done); err == nil {
			j.series.Samples = append(j.series.Samples, d)
			j.done++
		}
	}
	if j.after != nil {
		if aerr := j.after(ctx); aerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", aerr)
		}
	}
	return err
}
