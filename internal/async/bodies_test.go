package async

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nubo-dev/nubo/internal/testutil/natstest"
)

// bodyQueue is a Queue with only its body store, on an embedded NATS
// server whose messages are capped at maxPayload bytes.
func bodyQueue(t *testing.T, maxPayload int32) *Queue {
	t.Helper()
	_, js := natstest.Start(t, &server.Options{MaxPayload: maxPayload})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := openBodies(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &Queue{cfg: Config{JS: js}, bodies: st, ctx: ctx, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func (q *Queue) bodyMsgs(t *testing.T) uint64 {
	t.Helper()
	info, err := q.bodies.Info(q.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestBodiesChunked(t *testing.T) {
	q := bodyQueue(t, 64<<10)
	body := make([]byte, 300<<10)
	for i := range body {
		body[i] = byte(i * 7)
	}
	if err := q.putBody(q.ctx, "p.one", body); err != nil {
		t.Fatal(err)
	}
	n := q.bodyMsgs(t)
	if n < 5 {
		t.Errorf("a 300 KB body under a 64 KB message cap took %d messages", n)
	}
	got, err := q.getBody(q.ctx, "p.one")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %d bytes (%v), want %d equal", len(got), err, len(body))
	}
	// Written again under the same name (a redelivery): kept, not doubled.
	if err := q.putBody(q.ctx, "p.one", body); err != nil {
		t.Fatal(err)
	}
	if m := q.bodyMsgs(t); m != n {
		t.Errorf("rewriting the same body: %d messages, then %d", n, m)
	}
	// Another body beside it is independent.
	if err := q.putBody(q.ctx, "p.two", []byte("small")); err != nil {
		t.Fatal(err)
	}
	q.dropBody("p.one")
	if _, err := q.getBody(q.ctx, "p.one"); !errors.Is(err, errNoBody) {
		t.Errorf("dropped body: %v", err)
	}
	if got, err := q.getBody(q.ctx, "p.two"); err != nil || string(got) != "small" {
		t.Errorf("other body: %q %v", got, err)
	}
	if m := q.bodyMsgs(t); m != 1 {
		t.Errorf("%d messages left, want 1", m)
	}
}

// A body cut short (a crash while it was written) reads as missing, never
// as a shorter payload.
func TestBodiesIncomplete(t *testing.T) {
	q := bodyQueue(t, 64<<10)
	m := nats.NewMsg(bodySubjPx + "p.cut")
	m.Header.Set(hdrSize, "100000")
	m.Data = bytes.Repeat([]byte("a"), 50000)
	if _, err := q.cfg.JS.PublishMsg(q.ctx, m); err != nil {
		t.Fatal(err)
	}
	if got, err := q.getBody(q.ctx, "p.cut"); !errors.Is(err, errNoBody) {
		t.Errorf("incomplete body: %d bytes, %v", len(got), err)
	}
	// Writing it whole replaces the fragment.
	whole := bytes.Repeat([]byte("b"), 100000)
	if err := q.putBody(q.ctx, "p.cut", whole); err != nil {
		t.Fatal(err)
	}
	if got, err := q.getBody(q.ctx, "p.cut"); err != nil || !bytes.Equal(got, whole) {
		t.Errorf("rewritten body: %d bytes, %v", len(got), err)
	}
	if _, err := q.getBody(q.ctx, "p.never"); !errors.Is(err, errNoBody) {
		t.Errorf("absent body: %v", err)
	}
}

// TestRetention: dead letters and event bodies expire (a failing function
// would otherwise fill the data dir), also in stores made before the
// limits existed, which the queue updates when it opens them.
func TestRetention(t *testing.T) {
	q := bodyQueue(t, 0)
	js := q.cfg.JS
	ctx := q.ctx
	// A dead-letter bucket as made before: no TTL.
	if err := js.DeleteKeyValue(ctx, DeadLetterKV); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DeadLetterKV, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	kv, err := openDeadLetters(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != DeadLetterRetention {
		t.Errorf("dead letters kept %v, want %v", st.TTL(), DeadLetterRetention)
	}
	// A bodies stream as made before: no age limit.
	if err := js.DeleteStream(ctx, BodiesStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: BodiesStream, Subjects: []string{bodySubjPx + ">"},
		Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	bodies, err := openBodies(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	info, err := bodies.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge < DeadLetterRetention {
		t.Errorf("bodies kept %v, want at least the dead letters' %v", info.Config.MaxAge, DeadLetterRetention)
	}
}
