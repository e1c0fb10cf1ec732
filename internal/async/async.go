// Package async runs Lambda's asynchronous invocations (InvocationType
// Event, InvokeAsync) from a durable JetStream queue, with the retries,
// event age limit and destinations of the function's event-invoke config.
//
// Stream "nubo_events" (work-queue retention, file storage, fsync before
// ack on the embedded server): subject events.<account>.<function>. An
// Event invoke answers 202 only after the publish was acknowledged, so an
// accepted event survives kill -9.
//
// Message lifecycle (at least once):
//
//	queued → running → acked                        (success, or final failure
//	                                                 delivered to its destination)
//	       → running → republished with attempt+1   (function error, timeout)
//	       → running → republished, same attempt    (throttled: not a failed attempt)
//	       → (crash) → redelivered                  (a possible duplicate, counted
//	                                                 through its run marker: marks.go)
//
// A message carries NotBefore; one fetched early is put back with a delay
// equal to the time left. While a function runs, the message's ack deadline
// is extended (InProgress), so only a crashed nubo lets it be redelivered.
// Every republish carries a message id derived from the event's state
// (msgID), so a transition repeated after a crash is stored once.
//
// Payloads and records larger than 64 KB travel out of line (bodies.go):
// NATS caps a message at 1 MB by default, below an event's 1 MB payload
// plus its envelope, and far below a record carrying a 6 MB response.
//
// Events that end in failure with no destination (or whose destination
// function is gone) are kept in the KV bucket "nubo_deadletters" (key
// <account>.<function>.<request id>) until a person lists and replays them
// (`nubo events failed|replay`).
package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
	"github.com/nubo-dev/nubo/internal/invoke"
)

// Names in JetStream.
const (
	StreamName     = "nubo_events"
	ConsumerName   = "nubo_runner"
	DeadLetterKV   = "nubo_deadletters"
	defaultRetries = 2
	defaultMaxAge  = 6 * time.Hour
	// DeadLetterRetention is how long a dead letter is kept (as long as
	// SQS, a usual DeadLetterConfig target, keeps a message at most):
	// without a limit a failing function fills the data dir.
	DeadLetterRetention = 14 * 24 * time.Hour
)

// Event is one queued invocation.
type Event struct {
	RequestID string `json:"requestId"`
	Account   string `json:"account"`
	Function  string `json:"function"`
	// Qualifier as invoked ("" = unqualified), and the ARN the function sees.
	Qualifier  string `json:"qualifier,omitempty"`
	InvokedARN string `json:"invokedArn"`
	Payload    []byte `json:"payload"`
	// PayloadRef names the payload's body when it is too large to travel
	// inside the message (see bodies.go); Payload is then empty on the wire.
	PayloadRef string `json:"payloadRef,omitempty"`
	// EnqueuedMs is when the event was first accepted (its age counts from there).
	EnqueuedMs int64 `json:"enqueuedMs"`
	// Attempt counts finished runs that failed (0 before the first run).
	Attempt int `json:"attempt"`
	// NotBeforeMs delays a retry.
	NotBeforeMs int64 `json:"notBeforeMs,omitempty"`
	// Throttles counts deliveries put back because of concurrency limits.
	Throttles int `json:"throttles,omitempty"`
}

// Runner runs invocations for the queue; implemented by *invoke.Invoker.
type Runner interface {
	Run(ctx context.Context, t *control.Target, v *control.Version, requestID, invoked string, payload []byte) (*env.Response, error)
}

// Config configures the queue.
type Config struct {
	JS      jetstream.JetStream
	Control *control.Service
	Runner  Runner
	// Workers is how many events run at once on this node.
	Workers int
	// RetryScale multiplies AWS's retry delays (1 min, then 2 min); tests
	// use a small value.
	RetryScale float64
	Replicas   int
	Logger     *slog.Logger
	Metrics    *Metrics
}

// Queue is the async invocation queue of this node.
type Queue struct {
	cfg    Config
	log    *slog.Logger
	cons   jetstream.Consumer
	events jetstream.Stream
	bodies jetstream.Stream
	dlq    jetstream.KeyValue
	m      *Metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	runs   jetstream.Stream

	counters map[string]*fnCounters
}

// Open creates the stream, consumer and dead-letter bucket and starts the workers.
func Open(ctx context.Context, cfg Config) (*Queue, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.RetryScale == 0 {
		cfg.RetryScale = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	replicas := max(cfg.Replicas, 1)
	st, err := cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "asynchronous invocations",
		Subjects:    []string{"events.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("event stream: %w", err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
	})
	if err != nil {
		return nil, fmt.Errorf("event consumer: %w", err)
	}
	dlq, err := openDeadLetters(ctx, cfg.JS, replicas)
	if err != nil {
		return nil, fmt.Errorf("dead-letter bucket: %w", err)
	}
	bodies, err := openBodies(ctx, cfg.JS, replicas)
	if err != nil {
		return nil, fmt.Errorf("event bodies: %w", err)
	}
	runs, err := openRuns(ctx, cfg.JS, replicas)
	if err != nil {
		return nil, fmt.Errorf("run markers: %w", err)
	}
	qctx, cancel := context.WithCancel(context.Background())
	q := &Queue{cfg: cfg, log: cfg.Logger, cons: cons, events: st, bodies: bodies, dlq: dlq, m: cfg.Metrics,
		runs: runs, ctx: qctx, cancel: cancel}
	cfg.Metrics.attach(q)
	for i := 0; i < cfg.Workers; i++ {
		q.wg.Add(1)
		go q.worker()
	}
	return q, nil
}

// Close stops the workers; events in flight are redelivered later.
func (q *Queue) Close() {
	q.cancel()
	q.wg.Wait()
}

func subject(acct, fn string) string { return "events." + acct + "." + fn }

// Enqueue stores an Event invocation durably (implements invoke.Async).
func (q *Queue) Enqueue(ctx context.Context, t *control.Target, in *invoke.Input, invokedARN string) error {
	name := t.Version.Config.FunctionName
	ev := &Event{RequestID: in.RequestID, Account: in.Account, Function: name, Qualifier: qualifierOf(in),
		InvokedARN: invokedARN, Payload: in.Payload, EnqueuedMs: now().UnixMilli()}
	return q.publish(ctx, ev, ev.RequestID)
}

func qualifierOf(in *invoke.Input) string {
	r, err := arn.ParseFunction(in.FunctionName)
	if err != nil {
		return in.Qualifier
	}
	q, _ := arn.ResolveQualifier(r, in.Qualifier)
	return q
}

// publish stores ev and waits for the store's acknowledgement. msgID is
// derived from the event's state, so the same transition published twice
// (a redelivery after a crash mid-transition) is stored once.
func (q *Queue) publish(ctx context.Context, ev *Event, msgID string) error {
	if ev.PayloadRef == "" && len(ev.Payload) > inlineMax {
		name := "p." + ev.RequestID
		if err := q.putBody(ctx, name, ev.Payload); err != nil {
			return fmt.Errorf("queue event: %w", err)
		}
		ev.PayloadRef = name
	}
	wire := *ev
	if wire.PayloadRef != "" {
		wire.Payload = nil
	}
	b, err := json.Marshal(&wire)
	if err != nil {
		return err
	}
	if _, err := q.cfg.JS.Publish(ctx, subject(ev.Account, ev.Function), b, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("queue event: %w", err)
	}
	q.m.Enqueued.Inc()
	return nil
}

func (q *Queue) worker() {
	defer q.wg.Done()
	for q.ctx.Err() == nil {
		msgs, err := q.cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if q.ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
				q.log.Warn("fetching events", "err", err)
				sleep(q.ctx, time.Second)
			}
			continue
		}
		for msg := range msgs.Messages() {
			q.handle(msg)
		}
	}
}

// clockSkew shifts the queue's clock (event age, retry times); only tests
// set it, to age events without waiting for MaximumEventAgeInSeconds.
var clockSkew atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockSkew.Load())) }

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// openDeadLetters opens the dead-letter bucket, whose entries expire
// DeadLetterRetention after they were written.
func openDeadLetters(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: DeadLetterKV, Description: "async events that failed with nowhere to go",
		Storage: jetstream.FileStorage, Replicas: replicas, TTL: DeadLetterRetention,
	})
}
