package async

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Large bodies (event payloads up to 1 MB, invocation records carrying a
// response of up to 6 MB) do not fit in one NATS message, which the server
// caps at 1 MB by default. They are kept out of line in the stream
// "nubo_event_bodies", one subject per body (bodies.<name>), split into
// chunks; the event or dead letter names the body instead of holding it.
//
// A body is written before the message naming it is published, and purged
// only after that message was acknowledged for the last time, so a crash
// can leave an orphan body but never a message without its body.
const (
	BodiesStream = "nubo_event_bodies"
	// inlineMax is the largest body kept inside a queue message or a dead
	// letter.
	inlineMax  = 64 << 10
	hdrSize    = "Nubo-Body-Size"
	bodySubjPx = "bodies."
)

var errNoBody = errors.New("event body missing")

func openBodies(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        BodiesStream,
		Description: "large payloads of queued and dead-lettered async events",
		Subjects:    []string{bodySubjPx + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		// A body lives at most as long as its event: queued (hours) and
		// then dead-lettered. The limit also removes a body whose event was
		// never published (the publish failed after the body was stored).
		MaxAge: DeadLetterRetention + 24*time.Hour,
	})
}

// chunkSize keeps every chunk well under the connection's message limit.
func (q *Queue) chunkSize() int {
	limit := int(q.cfg.JS.Conn().MaxPayload())
	return min(max(limit-8<<10, 32<<10), 1<<20)
}

// putBody stores b as name. A body already stored whole under that name is
// kept: names are derived from the event, so a rewrite after a crash
// stores an equivalent body, and rewriting one that a running event may
// be reading would break that reader.
func (q *Queue) putBody(ctx context.Context, name string, b []byte) error {
	subj := bodySubjPx + name
	if got, err := q.getBody(ctx, name); err == nil && len(got) == len(b) {
		return nil
	}
	if err := q.bodies.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return fmt.Errorf("body %s: %w", name, err)
	}
	size := q.chunkSize()
	for off := 0; off == 0 || off < len(b); off += size {
		m := nats.NewMsg(subj)
		m.Data = b[off:min(off+size, len(b))]
		if off == 0 {
			m.Header.Set(hdrSize, strconv.Itoa(len(b)))
		}
		if _, err := q.cfg.JS.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("body %s: %w", name, err)
		}
	}
	return nil
}

// getBody reads a body back; errNoBody when it is absent or incomplete.
func (q *Queue) getBody(ctx context.Context, name string) ([]byte, error) {
	subj := bodySubjPx + name
	first, err := q.bodies.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(subj))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, errNoBody
	}
	if err != nil {
		return nil, err
	}
	size, err := strconv.Atoi(first.Header.Get(hdrSize))
	if err != nil {
		return nil, errNoBody
	}
	out := make([]byte, 0, size)
	out = append(out, first.Data...)
	for seq := first.Sequence + 1; len(out) < size; {
		m, err := q.bodies.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, errNoBody
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m.Data...)
		seq = m.Sequence + 1
	}
	if len(out) != size {
		return nil, errNoBody
	}
	return out, nil
}

// dropBody removes a body that nothing names any more.
func (q *Queue) dropBody(name string) {
	if name == "" {
		return
	}
	if err := q.bodies.Purge(context.WithoutCancel(q.ctx), jetstream.WithPurgeSubject(bodySubjPx+name)); err != nil {
		q.log.Warn("removing event body", "body", name, "err", err)
	}
}
