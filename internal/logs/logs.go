// Package logs stores functions' log lines in JetStream, one log stream per
// execution environment named as AWS names it (group /aws/lambda/<fn>,
// stream YYYY/MM/DD/[<version>]<env id>), with an age limit, and reads them
// back for `nubo logs`.
//
// Stream "nubo_logs", subject logs.<account>.<b64url(group)>.<b64url(stream)>.
// A message is a batch: lines are buffered per environment and published
// together (once the environment has written nothing for batchQuiet, or
// batchMaxAge after the batch's first line, at 64 KB, or when the
// environment is destroyed: Flush) so a busy function costs one store
// write per batch rather than per line. A message
// body is JSON: [{"t": unix nanos, "m": "line"}, ...].
package logs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the JetStream stream holding logs.
const StreamName = "nubo_logs"

// Event is one log line.
type Event struct {
	Time      time.Time
	LogStream string
	Message   string
}

type wireEvent struct {
	T int64  `json:"t"`
	M string `json:"m"`
}

// Store writes and reads logs.
type Store struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
}

// Open creates or updates the log stream with the given retention.
func Open(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, retention time.Duration, replicas int, log *slog.Logger) (*Store, error) {
	if retention <= 0 {
		retention = 7 * 24 * time.Hour
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "function logs",
		Subjects:    []string{"logs.>"},
		Storage:     jetstream.FileStorage,
		MaxAge:      retention,
		Replicas:    max(replicas, 1),
	}
	// A new stream is written to disk in the background, not synced
	// message by message as the embedded server syncs every other write
	// (its SyncAlways, which a stream's persist mode overrides): logs are
	// published without waiting for the store (see flushLocked), so no
	// caller was ever told a line was on disk, and each sync cost 0.14 ms
	// of nubo serve's CPU per new environment (docs/performance.md,
	// session 26). The store gathers writes for a few milliseconds first,
	// in nubo's memory: a crash of nubo, or of the host, may lose the last
	// lines. A stream's persist mode cannot change, so one made by an
	// earlier nubo keeps its own; a replicated stream cannot be async; and
	// an external server too old to know the mode may refuse it, and
	// gets the default.
	st, err := js.Stream(ctx, StreamName)
	switch {
	case err == nil:
		cfg.PersistMode = st.CachedInfo().Config.PersistMode
		_, err = js.UpdateStream(ctx, cfg)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if cfg.Replicas == 1 {
			cfg.PersistMode = jetstream.AsyncPersistMode
			if _, err = js.CreateStream(ctx, cfg); err == nil {
				break
			}
			if log != nil {
				log.Warn("log stream: asynchronous persistence refused; syncing every batch", "err", err)
			}
			cfg.PersistMode = jetstream.DefaultPersistMode
		}
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("log stream: %w", err)
	}
	return &Store{nc: nc, js: js, log: log}, nil
}

func token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func subject(acct, group, stream string) string {
	return "logs." + acct + "." + token(group) + "." + token(stream)
}

// A batch is published once its environment has written nothing for
// batchQuiet, and at the latest batchMaxAge after its first line. An
// invocation now and then is readable 50 ms after its last line, as
// before; an environment whose lines come less than 50 ms apart costs
// one store write a second instead of twenty. Each write is a disk
// sync (the embedded server syncs every write, for metadata's sake): at
// 20 a second per environment they took 3-8 % of nubo serve's CPU at
// concurrency 4 (docs/performance.md, session 14).
const (
	batchQuiet  = 50 * time.Millisecond
	batchMaxAge = time.Second
)

// Sink buffers one environment's lines and publishes them in batches.
type Sink struct {
	st      *Store
	subject string
	mu      sync.Mutex
	buf     []wireEvent
	size    int
	timer   *time.Timer
	first   time.Time // when the batch's first line came
}

// Sink returns the writer for one log stream.
func (s *Store) Sink(acct, group, stream string) *Sink {
	return &Sink{st: s, subject: subject(acct, group, stream)}
}

// Append implements env.LogSink.
func (k *Sink) Append(line []byte, t time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.buf = append(k.buf, wireEvent{T: t.UnixNano(), M: string(line)})
	k.size += len(line) + 32
	if k.size >= 64<<10 {
		k.flushLocked()
		return
	}
	now := time.Now()
	switch {
	case k.timer == nil:
		k.first = now
		k.timer = time.AfterFunc(batchQuiet, k.Flush)
	case now.Sub(k.first) < batchMaxAge-batchQuiet:
		k.timer.Reset(batchQuiet)
	}
}

// Flush publishes what is buffered.
func (k *Sink) Flush() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.flushLocked()
}

func (k *Sink) flushLocked() {
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	if len(k.buf) == 0 {
		return
	}
	b, _ := json.Marshal(k.buf)
	k.buf, k.size = nil, 0
	// Core publish: the stream captures it; waiting for the store's ack
	// would put a disk sync on the invocation's path.
	if err := k.st.nc.Publish(k.subject, b); err != nil && k.st.log != nil {
		k.st.log.Warn("log publish", "err", err)
	}
}

// Query selects log events.
type Query struct {
	Account  string
	LogGroup string
	Since    time.Time
	Follow   bool
}

// GroupExists reports whether a log group of acct holds any event (within
// the retention): a group no function has written to, or whose events
// have all expired, does not exist, as in CloudWatch Logs.
func (s *Store) GroupExists(ctx context.Context, acct, group string) (bool, error) {
	st, err := s.js.Stream(ctx, StreamName)
	if err != nil {
		return false, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(groupFilter(acct, group)))
	if err != nil {
		return false, err
	}
	return len(info.State.Subjects) > 0, nil
}

// groupFilter is the subject filter of every log stream of a group.
func groupFilter(acct, group string) string { return "logs." + acct + "." + token(group) + ".*" }

// Read calls fn for each event matching q in order; with Follow it keeps
// waiting for new events until ctx ends.
func (s *Store) Read(ctx context.Context, q Query, fn func(Event) error) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{groupFilter(q.Account, q.LogGroup)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if !q.Since.IsZero() {
		// A batch is stamped when published, after its lines (up to a
		// second: batchMaxAge); start earlier and filter by line time.
		t := q.Since.Add(-time.Second)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamName, cfg)
	if err != nil {
		return err
	}
	for {
		var wait time.Duration = 200 * time.Millisecond
		msg, err := cons.Next(jetstream.FetchMaxWait(wait))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			if !q.Follow {
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		parts := strings.SplitN(msg.Subject(), ".", 4)
		stream := ""
		if len(parts) == 4 {
			if b, err := base64.RawURLEncoding.DecodeString(parts[3]); err == nil {
				stream = string(b)
			}
		}
		var evs []wireEvent
		if json.Unmarshal(msg.Data(), &evs) != nil {
			continue
		}
		for _, e := range evs {
			t := time.Unix(0, e.T)
			if !q.Since.IsZero() && t.Before(q.Since) {
				continue
			}
			if err := fn(Event{Time: t, LogStream: stream, Message: e.M}); err != nil {
				return err
			}
		}
	}
}
