package async

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func randFloat() float64 { return rand.Float64() }

// Metrics are the queue's Prometheus counters, and the gauges of queue
// depth and oldest event age per function, read from the stream at scrape.
type Metrics struct {
	Enqueued, Succeeded, Failed, Retries, Throttled, Redelivered, DeadLettered, Dropped prometheus.Counter

	queue *queueCollector
}

// attach makes the gauges report q.
func (m *Metrics) attach(q *Queue) { m.queue.q.Store(q) }

// queueCollector reports per-function queue gauges once a queue is attached.
type queueCollector struct {
	q          atomic.Pointer[Queue]
	depth, age *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.age
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	q := c.q.Load()
	if q == nil {
		return
	}
	ctx, cancel := context.WithTimeout(q.ctx, 5*time.Second)
	defer cancel()
	info, err := q.events.Info(ctx, jetstream.WithSubjectFilter("events.>"))
	if err != nil {
		q.log.Warn("queue metrics", "err", err)
		return
	}
	for subj, n := range info.State.Subjects {
		acct, fn, ok := strings.Cut(strings.TrimPrefix(subj, "events."), ".")
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(n), acct, fn)
		if old, ok := q.oldest(ctx, subj, metricsScan); ok {
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now().Sub(old).Seconds(), acct, fn)
		}
	}
}

// How many queued events of one function are read to find the oldest: the
// stats route looks further than a scrape. Beyond that the age is a lower
// bound.
const (
	statsScan   = 2000
	metricsScan = 200
)

// oldest returns when the oldest of (up to limit of) a subject's queued
// events was accepted. Retries and put-backs are stored anew, so neither
// the stream's order nor its timestamps tell an event's age: EnqueuedMs does.
func (q *Queue) oldest(ctx context.Context, subj string, limit int) (time.Time, bool) {
	var oldest time.Time
	seq := uint64(0)
	for range limit {
		m, err := q.events.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if err != nil {
			break
		}
		t := m.Time
		var ev struct {
			EnqueuedMs int64 `json:"enqueuedMs"`
		}
		if json.Unmarshal(m.Data, &ev) == nil && ev.EnqueuedMs > 0 {
			t = time.UnixMilli(ev.EnqueuedMs)
		}
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
		seq = m.Sequence + 1
	}
	return oldest, !oldest.IsZero()
}

// NewMetrics creates the counters and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	c := func(name, help string) prometheus.Counter {
		m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "nubo", Subsystem: "async", Name: name, Help: help})
		if reg != nil {
			reg.MustRegister(m)
		}
		return m
	}
	qc := &queueCollector{
		depth: prometheus.NewDesc("nubo_async_queue_depth", "Events queued per function (waiting, delayed for a retry, or running).",
			[]string{"account", "function"}, nil),
		age: prometheus.NewDesc("nubo_async_oldest_event_age_seconds", "Age of the oldest queued event per function, since it was accepted.",
			[]string{"account", "function"}, nil),
	}
	if reg != nil {
		reg.MustRegister(qc)
	}
	return &Metrics{
		queue:        qc,
		Enqueued:     c("events_enqueued_total", "Events stored in the queue (new, retries, put back)."),
		Succeeded:    c("events_succeeded_total", "Events whose invocation succeeded."),
		Failed:       c("events_failed_total", "Events that failed finally (retries exhausted or too old)."),
		Retries:      c("retries_total", "Retries scheduled after a function error or timeout."),
		Throttled:    c("events_put_back_total", "Deliveries put back because of limits or platform trouble."),
		Redelivered:  c("redeliveries_total", "Runs of an event whose earlier run was never acknowledged, as after a crash (possible duplicates)."),
		DeadLettered: c("events_dead_lettered_total", "Events moved to the dead-letter store."),
		Dropped:      c("events_dropped_total", "Events of functions deleted before they ran."),
	}
}

// fnCounters are per-function counts since this process started.
type fnCounters struct {
	Retries, DeadLettered int
}

var countersMu sync.Mutex

func (q *Queue) count(acct, fn string, f func(*fnCounters)) {
	countersMu.Lock()
	defer countersMu.Unlock()
	if q.counters == nil {
		q.counters = map[string]*fnCounters{}
	}
	c := q.counters[acct+"/"+fn]
	if c == nil {
		c = &fnCounters{}
		q.counters[acct+"/"+fn] = c
	}
	f(c)
}

// Stats describes one function's queue.
type Stats struct {
	QueueDepth         uint64  `json:"queueDepth"`
	OldestEventAgeSecs float64 `json:"oldestEventAgeSeconds"`
	Retries            int     `json:"retriesSinceStart"`
	DeadLettered       int     `json:"deadLettered"`
	DeadLetteredRecent int     `json:"deadLetteredSinceStart"`
}

// Stats reports a function's queue depth, oldest event age and counters.
func (q *Queue) Stats(ctx context.Context, acct, fn string) (*Stats, error) {
	st, err := q.cfg.JS.Stream(ctx, StreamName)
	if err != nil {
		return nil, err
	}
	subj := subject(acct, fn)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, err
	}
	out := &Stats{QueueDepth: info.State.Subjects[subj]}
	if out.QueueDepth > 0 {
		if old, ok := q.oldest(ctx, subj, statsScan); ok {
			out.OldestEventAgeSecs = now().Sub(old).Seconds()
		}
	}
	countersMu.Lock()
	if c := q.counters[acct+"/"+fn]; c != nil {
		out.Retries, out.DeadLetteredRecent = c.Retries, c.DeadLettered
	}
	countersMu.Unlock()
	if lister, err := q.dlq.ListKeysFiltered(ctx, dlqKey(acct, fn, "*")); err == nil {
		for range lister.Keys() {
			out.DeadLettered++
		}
	}
	return out, nil
}
