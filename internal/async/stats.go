package async

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func randFloat() float64 { return rand.Float64() }

// Metrics are the queue's Prometheus counters.
type Metrics struct {
	Enqueued, Succeeded, Failed, Retries, Throttled, Redelivered, DeadLettered, Dropped prometheus.Counter
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
	return &Metrics{
		Enqueued:     c("events_enqueued_total", "Events stored in the queue (new, retries, put back)."),
		Succeeded:    c("events_succeeded_total", "Events whose invocation succeeded."),
		Failed:       c("events_failed_total", "Events that failed finally (retries exhausted or too old)."),
		Retries:      c("retries_total", "Retries scheduled after a function error or timeout."),
		Throttled:    c("events_put_back_total", "Deliveries put back because of limits or platform trouble."),
		Redelivered:  c("redeliveries_total", "Events delivered again after an unacknowledged delivery (possible duplicates)."),
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
		if m, err := st.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(subj)); err == nil {
			out.OldestEventAgeSecs = time.Since(m.Time).Seconds()
		}
	}
	countersMu.Lock()
	if c := q.counters[acct+"/"+fn]; c != nil {
		out.Retries, out.DeadLetteredRecent = c.Retries, c.DeadLettered
	}
	countersMu.Unlock()
	if dl, err := q.Failed(ctx, acct, fn); err == nil {
		out.DeadLettered = len(dl)
	}
	return out, nil
}
