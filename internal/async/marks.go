package async

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Run markers count possible duplicates. Before a delivered event runs, a
// marker named after its stream sequence is stored (fsynced like every
// write); it is cleared once the delivery's ack is confirmed. Finding the
// marker already there means this message ran before without an ack that
// landed: nubo died during or just after the run, and this run may be a
// duplicate. JetStream's own delivery count cannot tell: a consumer's
// state reaches disk a little after the fact, so after kill -9 an
// unacknowledged message can come back as if never delivered.
//
// Markers are a stream of their own ("nubo_event_runs", subject
// runs.<sequence>), purged by subject so that clearing leaves nothing
// behind; MaxAge removes the rare marker whose clearing a crash cut off.
const RunsStream = "nubo_event_runs"

func openRuns(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        RunsStream,
		Description: "async events running now (possible duplicates after a crash)",
		Subjects:    []string{"runs.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      7 * 24 * time.Hour,
	})
}

func markName(seq uint64) string { return "runs." + strconv.FormatUint(seq, 10) }

// mark stores the run marker; again reports that it was there already.
func (q *Queue) mark(ctx context.Context, name, requestID string) (again bool, err error) {
	if _, err := q.runs.GetLastMsgForSubject(ctx, name); err == nil {
		return true, nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, err
	}
	_, err = q.cfg.JS.Publish(ctx, name, []byte(requestID))
	return false, err
}

func (q *Queue) unmark(name string) {
	if name == "" {
		return
	}
	if err := q.runs.Purge(context.WithoutCancel(q.ctx), jetstream.WithPurgeSubject(name)); err != nil {
		q.log.Warn("clearing run marker", "marker", name, "err", err)
	}
}
