package async

import (
	"context"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
)

// Conditions of an invocation record.
const (
	CondSuccess          = "Success"
	CondRetriesExhausted = "RetriesExhausted"
	CondEventAgeExceeded = "EventAgeExceeded"
)

// handle runs one delivered event to its next state.
func (q *Queue) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		q.log.Error("event without metadata", "err", err)
		return
	}
	var ev Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		// Unreadable: it can never run. Keep the bytes for a person.
		q.log.Error("unreadable event; moved to dead letters", "seq", meta.Sequence.Stream, "err", err)
		_, _ = q.dlq.Put(q.ctx, "corrupt."+strconv.FormatUint(meta.Sequence.Stream, 10), msg.Data())
		_ = msg.Ack()
		return
	}
	if meta.NumDelivered > 1 {
		q.mu.Lock()
		deliberate := q.putOff[meta.Sequence.Stream]
		delete(q.putOff, meta.Sequence.Stream)
		q.mu.Unlock()
		if !deliberate {
			// Delivered before and never acked: the earlier run may have
			// happened (nubo died mid-run). At least once, and counted.
			q.m.Redelivered.Inc()
		}
	}
	at := now()
	if wait := time.UnixMilli(ev.NotBeforeMs).Sub(at); wait > 0 {
		q.mu.Lock()
		q.putOff[meta.Sequence.Stream] = true
		q.mu.Unlock()
		_ = msg.NakWithDelay(wait)
		return
	}
	ctx := q.ctx
	retries, maxAge, dest := defaultRetries, defaultMaxAge, (*control.DestinationConfig)(nil)
	if ei, err := q.cfg.Control.EventInvokeFor(ctx, ev.Account, ev.Function, ev.Qualifier); err == nil && ei != nil {
		if ei.MaximumRetryAttempts != nil {
			retries = *ei.MaximumRetryAttempts
		}
		if ei.MaximumEventAgeInSeconds != nil {
			maxAge = time.Duration(*ei.MaximumEventAgeInSeconds) * time.Second
		}
		dest = ei.DestinationConfig
	} else if errdefs.Is(err, errdefs.KindNotFound) {
		q.log.Warn("event for a deleted function dropped", "function", ev.Function, "request_id", ev.RequestID)
		q.m.Dropped.Inc()
		_ = msg.Ack()
		return
	}
	if at.Sub(time.UnixMilli(ev.EnqueuedMs)) > maxAge {
		q.fail(&ev, CondEventAgeExceeded, dest, nil, "")
		_ = msg.Ack()
		return
	}
	t, err := q.cfg.Control.InvokeTarget(ctx, ev.Account, ev.Function, ev.Qualifier)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			q.m.Dropped.Inc()
			_ = msg.Ack()
			return
		}
		q.later(msg, &ev, "lookup: "+err.Error())
		return
	}
	v := t.Version
	if t.Additional != nil && randFloat() < t.Weight {
		v = t.Additional
	}
	if v.Config.State != function.StateActive {
		q.later(msg, &ev, "function is "+v.Config.State)
		return
	}
	done := make(chan struct{})
	go func() {
		// Keep the delivery ours while the function runs (up to 15 min).
		tk := time.NewTicker(10 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				_ = msg.InProgress()
			}
		}
	}()
	resp, err := q.cfg.Runner.Run(ctx, t, v, ev.RequestID, ev.InvokedARN, ev.Payload)
	close(done)
	if err != nil {
		// Throttled or the platform could not run it: not a failed attempt.
		q.later(msg, &ev, err.Error())
		return
	}
	ev.Attempt++
	if !resp.FunctionError {
		q.m.Succeeded.Inc()
		if dest != nil && dest.OnSuccess != nil && dest.OnSuccess.Destination != "" {
			rec := record(&ev, CondSuccess, v, resp.Payload, "")
			q.deliver(dest.OnSuccess.Destination, &ev, rec)
		}
		_ = msg.Ack()
		return
	}
	if ev.Attempt <= retries {
		// AWS waits about a minute before the first retry, two before the second.
		delay := time.Duration(float64(time.Minute) * math.Pow(2, float64(ev.Attempt-1)) * q.cfg.RetryScale)
		ev.NotBeforeMs = now().Add(delay).UnixMilli()
		if err := q.publish(ctx, &ev, ev.RequestID+"#a"+strconv.Itoa(ev.Attempt)); err != nil {
			q.log.Warn("requeue for retry", "err", err)
			return // not acked: redelivered after the ack wait
		}
		q.m.Retries.Inc()
		q.count(ev.Account, ev.Function, func(c *fnCounters) { c.Retries++ })
		_ = msg.Ack()
		return
	}
	q.fail(&ev, CondRetriesExhausted, dest, resp.Payload, v.Config.Version)
	_ = msg.Ack()
}

// later puts an event back without counting an attempt (throttles,
// platform trouble), with a growing delay capped at five minutes.
func (q *Queue) later(msg jetstream.Msg, ev *Event, why string) {
	ev.Throttles++
	q.m.Throttled.Inc()
	d := time.Duration(float64(time.Second) * math.Pow(2, float64(min(ev.Throttles, 9))) * q.cfg.RetryScale)
	d = min(max(d, 10*time.Millisecond), 5*time.Minute)
	ev.NotBeforeMs = now().Add(d).UnixMilli()
	if err := q.publish(q.ctx, ev, ev.RequestID+"#a"+strconv.Itoa(ev.Attempt)+"#t"+strconv.Itoa(ev.Throttles)); err != nil {
		q.log.Warn("requeue throttled event", "err", err)
		return
	}
	q.log.Debug("event put back", "request_id", ev.RequestID, "why", why, "delay", d)
	_ = msg.Ack()
}

// fail sends a finally failed event to its on-failure destination, the
// function's dead-letter target, or the dead-letter store.
func (q *Queue) fail(ev *Event, cond string, dest *control.DestinationConfig, payload []byte, executed string) {
	q.m.Failed.Inc()
	var v *control.Version
	if executed != "" {
		v = &control.Version{Config: function.Config{Version: executed}}
	}
	rec := record(ev, cond, v, payload, "Unhandled")
	if dest != nil && dest.OnFailure != nil && dest.OnFailure.Destination != "" {
		q.deliver(dest.OnFailure.Destination, ev, rec)
		return
	}
	if t, err := q.cfg.Control.InvokeTarget(q.ctx, ev.Account, ev.Function, ev.Qualifier); err == nil {
		if dl := t.Version.Config.DeadLetterConfig; dl != nil && dl.TargetArn != "" {
			q.deliver(dl.TargetArn, ev, rec)
			return
		}
	}
	q.deadLetter(ev, rec)
}

// deliver queues an invocation record for a destination function.
func (q *Queue) deliver(target string, ev *Event, rec []byte) {
	r, err := arn.ParseFunction(target)
	if err != nil || r.AccountID != ev.Account {
		q.log.Warn("destination unusable; dead-lettering", "destination", target)
		q.deadLetter(ev, rec)
		return
	}
	d := &Event{RequestID: uuid.NewString(), Account: ev.Account, Function: r.Name, Qualifier: r.Qualifier,
		InvokedARN: target, Payload: rec, EnqueuedMs: now().UnixMilli()}
	if err := q.publish(q.ctx, d, ev.RequestID+"#dest"); err != nil {
		q.log.Warn("destination enqueue failed; dead-lettering", "err", err)
		q.deadLetter(ev, rec)
	}
}

// record builds AWS's invocation record for destinations.
func record(ev *Event, cond string, v *control.Version, payload []byte, functionError string) []byte {
	type reqCtx struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	}
	type respCtx struct {
		StatusCode      int    `json:"statusCode"`
		ExecutedVersion string `json:"executedVersion"`
		FunctionError   string `json:"functionError,omitempty"`
	}
	out := struct {
		Version         string          `json:"version"`
		Timestamp       string          `json:"timestamp"`
		RequestContext  reqCtx          `json:"requestContext"`
		RequestPayload  json.RawMessage `json:"requestPayload"`
		ResponseContext *respCtx        `json:"responseContext,omitempty"`
		ResponsePayload json.RawMessage `json:"responsePayload,omitempty"`
	}{
		Version:   "1.0",
		Timestamp: time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		RequestContext: reqCtx{RequestID: ev.RequestID, FunctionArn: qualifiedARN(ev), Condition: cond,
			ApproximateInvokeCount: ev.Attempt},
		RequestPayload: asJSON(ev.Payload),
	}
	if v != nil {
		rc := &respCtx{StatusCode: 200, ExecutedVersion: v.Config.Version}
		if cond != CondSuccess {
			rc.FunctionError = functionError
		}
		out.ResponseContext = rc
		out.ResponsePayload = asJSON(payload)
	}
	b, _ := json.Marshal(out)
	return b
}

// qualifiedARN is the record's functionArn: always qualified, $LATEST when
// the caller did not qualify.
func qualifiedARN(ev *Event) string {
	r, err := arn.ParseFunction(ev.InvokedARN)
	if err != nil {
		return ev.InvokedARN
	}
	q := r.Qualifier
	if q == "" {
		q = function.Latest
	}
	return arn.Qualified(r.Region, r.AccountID, r.Name, q)
}

// asJSON embeds a payload as JSON when it is JSON, else as a JSON string.
func asJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// DeadLetter is one event kept in the dead-letter store.
type DeadLetter struct {
	Event  Event           `json:"event"`
	Record json.RawMessage `json:"record"`
	Time   string          `json:"time"`
}

func dlqKey(acct, fn, id string) string { return acct + "." + fn + "." + id }

func (q *Queue) deadLetter(ev *Event, rec []byte) {
	b, _ := json.Marshal(DeadLetter{Event: *ev, Record: rec, Time: time.Now().UTC().Format(time.RFC3339Nano)})
	for attempt := 0; ; attempt++ {
		_, err := q.dlq.Put(q.ctx, dlqKey(ev.Account, ev.Function, ev.RequestID), b)
		if err == nil || q.ctx.Err() != nil {
			break
		}
		// The event is already acked by nobody: retry rather than lose it.
		q.log.Error("dead-letter store", "err", err)
		sleep(q.ctx, time.Second)
	}
	q.m.DeadLettered.Inc()
	q.count(ev.Account, ev.Function, func(c *fnCounters) { c.DeadLettered++ })
}

// Failed lists a function's dead letters.
func (q *Queue) Failed(ctx context.Context, acct, fn string) ([]DeadLetter, error) {
	lister, err := q.dlq.ListKeysFiltered(ctx, dlqKey(acct, fn, "*"))
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for k := range lister.Keys() {
		e, err := q.dlq.Get(ctx, k)
		if err != nil {
			continue
		}
		var d DeadLetter
		if json.Unmarshal(e.Value(), &d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Replay queues dead letters again as fresh events (age and attempts reset)
// and removes them from the store; ids empty means all of the function's.
func (q *Queue) Replay(ctx context.Context, acct, fn string, ids []string) (int, error) {
	all, err := q.Failed(ctx, acct, fn)
	if err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	for _, d := range all {
		if len(ids) > 0 && !want[d.Event.RequestID] {
			continue
		}
		ev := d.Event
		ev.Attempt, ev.Throttles, ev.NotBeforeMs = 0, 0, 0
		ev.EnqueuedMs = now().UnixMilli()
		if err := q.publish(ctx, &ev, ev.RequestID+"#replay"+strconv.FormatInt(ev.EnqueuedMs, 10)); err != nil {
			return n, err
		}
		if err := q.dlq.Delete(ctx, dlqKey(acct, fn, ev.RequestID)); err != nil {
			return n, err
		}
		n++
	}
	if len(ids) > 0 && n < len(ids) {
		return n, errdefs.NotFound("%d of the given events are not in the dead-letter store of %s", len(ids)-n, fn)
	}
	return n, nil
}
