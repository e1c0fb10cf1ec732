package logs

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nubo-dev/nubo/internal/testutil/natstest"
)

// sinkOnNATS is a Sink on an embedded NATS server and a subscription to
// what it publishes.
func sinkOnNATS(t *testing.T) (*Sink, *nats.Subscription) {
	t.Helper()
	nc, js := natstest.Start(t, nil)
	st, err := Open(context.Background(), nc, js, time.Hour, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("logs.>")
	if err != nil {
		t.Fatal(err)
	}
	return st.Sink("000000000000", "/aws/lambda/f", "2026/11/27/[$LATEST]e"), sub
}

func batch(t *testing.T, sub *nats.Subscription, wait time.Duration) []wireEvent {
	t.Helper()
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatalf("no batch within %v: %v", wait, err)
	}
	var evs []wireEvent
	if err := json.Unmarshal(m.Data, &evs); err != nil {
		t.Fatal(err)
	}
	return evs
}

// A line written now and then is published once its environment pauses.
func TestSinkPublishesAfterAPause(t *testing.T) {
	k, sub := sinkOnNATS(t)
	t0 := time.Now()
	k.Append([]byte("START"), t0)
	k.Append([]byte("END"), t0)
	evs := batch(t, sub, 5*time.Second)
	if took := time.Since(t0); took < batchQuiet || len(evs) != 2 || evs[0].M != "START" || evs[1].M != "END" {
		t.Errorf("batch %+v after %v; want START and END after at least %v", evs, took, batchQuiet)
	}
}

// An environment that never pauses gets a batch about every batchMaxAge,
// not one per batchQuiet, and no line is lost or reordered.
func TestSinkBatchesSteadyLines(t *testing.T) {
	k, sub := sinkOnNATS(t)
	const lines = 150
	for i := range lines {
		k.Append(fmt.Appendf(nil, "line %d", i), time.Now())
		time.Sleep(10 * time.Millisecond)
	}
	k.Flush()
	var got []wireEvent
	batches := 0
	for len(got) < lines {
		got = append(got, batch(t, sub, 5*time.Second)...)
		batches++
	}
	for i, ev := range got {
		if want := fmt.Sprintf("line %d", i); ev.M != want {
			t.Fatalf("line %d is %q, want %q", i, ev.M, want)
		}
	}
	// 1.5 s of lines 10 ms apart: two or three batches; a pause of a
	// busy test machine may add some, one per 50 ms would be 30.
	if batches > 10 || batches < 2 {
		t.Errorf("%d lines in %d batches; want about one a second (at least one before the final Flush)", lines, batches)
	}
}

// TestStreamPersistsAsync: the log stream is written to disk in the
// background (no sync per message); one made before, in the default mode,
// keeps it, since a persist mode cannot change, and still opens.
func TestStreamPersistsAsync(t *testing.T) {
	ctx := context.Background()
	nc, js := natstest.Start(t, nil)
	if _, err := Open(ctx, nc, js, time.Hour, 1, nil); err != nil {
		t.Fatal(err)
	}
	mode := func() jetstream.PersistModeType {
		t.Helper()
		st, err := js.Stream(ctx, StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.PersistMode
	}
	if m := mode(); m != jetstream.AsyncPersistMode {
		t.Errorf("persist mode %v, want async", m)
	}
	if _, err := Open(ctx, nc, js, 2*time.Hour, 1, nil); err != nil {
		t.Fatalf("opening again: %v", err)
	}

	nc2, js2 := natstest.Start(t, nil)
	if _, err := js2.CreateStream(ctx, jetstream.StreamConfig{Name: StreamName, Subjects: []string{"logs.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, nc2, js2, time.Hour, 1, nil); err != nil {
		t.Fatalf("opening a stream made in the default mode: %v", err)
	}
	st, err := js2.Stream(ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.PersistMode != jetstream.DefaultPersistMode || c.MaxAge != time.Hour {
		t.Errorf("the older stream: persist mode %v, max age %v; want default, and the retention updated to 1h", c.PersistMode, c.MaxAge)
	}
}
