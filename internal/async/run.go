package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	at := now()
	if wait := time.UnixMilli(ev.NotBeforeMs).Sub(at); wait > 0 {
		_ = msg.NakWithDelay(wait)
		return
	}
	ctx := q.ctx
	if ev.PayloadRef != "" {
		b, err := q.getBody(ctx, ev.PayloadRef)
		if errors.Is(err, errNoBody) {
			// Bodies go only after the last ack: this delivery's ack was
			// lost after the event was done.
			q.log.Warn("event body gone; event already finished", "request_id", ev.RequestID, "body", ev.PayloadRef)
			q.m.Dropped.Inc()
			_ = msg.Ack()
			return
		}
		if err != nil {
			q.later(msg, &ev, "", "reading body: "+err.Error())
			return
		}
		ev.Payload = b
	}
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
		q.settle(msg, &ev, "", false)
		return
	}
	if at.Sub(time.UnixMilli(ev.EnqueuedMs)) > maxAge {
		q.settle(msg, &ev, "", q.fail(&ev, CondEventAgeExceeded, dest, nil, ""))
		return
	}
	t, err := q.cfg.Control.InvokeTarget(ctx, ev.Account, ev.Function, ev.Qualifier)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			q.m.Dropped.Inc()
			q.settle(msg, &ev, "", false)
			return
		}
		q.later(msg, &ev, "", "lookup: "+err.Error())
		return
	}
	v := t.Version
	if t.Additional != nil && randFloat() < t.Weight {
		v = t.Additional
	}
	if v.Config.State != function.StateActive {
		q.later(msg, &ev, "", "function is "+v.Config.State)
		return
	}
	mark := markName(meta.Sequence.Stream)
	if again, err := q.mark(ctx, mark, ev.RequestID); err != nil {
		q.later(msg, &ev, "", "run marker: "+err.Error())
		return
	} else if again {
		// This very message started running before and was never
		// acknowledged: nubo died during or after that run. At least once,
		// so it runs again, and the possible duplicate is counted.
		q.m.Redelivered.Inc()
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
		q.later(msg, &ev, mark, err.Error())
		return
	}
	ev.Attempt++
	if !resp.FunctionError {
		q.m.Succeeded.Inc()
		kept := false
		if dest != nil && dest.OnSuccess != nil && dest.OnSuccess.Destination != "" {
			rec := record(&ev, CondSuccess, v, resp.Payload, "")
			kept = q.deliver(dest.OnSuccess.Destination, &ev, rec)
		}
		q.settle(msg, &ev, mark, kept)
		return
	}
	if ev.Attempt <= retries {
		// AWS waits about a minute before the first retry, two before the second.
		delay := time.Duration(float64(time.Minute) * math.Pow(2, float64(ev.Attempt-1)) * q.cfg.RetryScale)
		ev.NotBeforeMs = now().Add(delay).UnixMilli()
		if err := q.publish(ctx, &ev, msgID(&ev, "a"+strconv.Itoa(ev.Attempt))); err != nil {
			q.log.Warn("requeue for retry", "err", err)
			return // not acked: redelivered after the ack wait
		}
		q.m.Retries.Inc()
		q.count(ev.Account, ev.Function, func(c *fnCounters) { c.Retries++ })
		q.settle(msg, &ev, mark, true)
		return
	}
	q.settle(msg, &ev, mark, q.fail(&ev, CondRetriesExhausted, dest, resp.Payload, v.Config.Version))
}

// settle acknowledges a delivery whose next state is stored, then clears
// what was kept for it: its run marker, and its out-of-line body unless
// the next state (a retry, a dead letter) still names it. Both wait for
// the server to confirm the ack: cleared first, a lost ack would bring the
// message back without its body, or as a duplicate nobody counted.
func (q *Queue) settle(msg jetstream.Msg, ev *Event, mark string, keepBody bool) {
	dropBody := ev.PayloadRef != "" && !keepBody
	if mark == "" && !dropBody {
		_ = msg.Ack()
		return
	}
	if err := msg.DoubleAck(q.ctx); err != nil {
		q.log.Warn("acknowledging event", "request_id", ev.RequestID, "err", err)
		return
	}
	q.unmark(mark)
	if dropBody {
		q.dropBody(ev.PayloadRef)
	}
}

// msgID names one transition of an event for JetStream's duplicate
// window. EnqueuedMs changes on replay, so a replayed event's retries are
// not mistaken for the retries of its first life.
func msgID(ev *Event, step string) string {
	return ev.RequestID + "#" + strconv.FormatInt(ev.EnqueuedMs, 10) + "#" + step
}

// later puts an event back without counting an attempt (throttles,
// platform trouble), with a growing delay capped at five minutes.
func (q *Queue) later(msg jetstream.Msg, ev *Event, mark, why string) {
	ev.Throttles++
	q.m.Throttled.Inc()
	d := time.Duration(float64(time.Second) * math.Pow(2, float64(min(ev.Throttles, 9))) * q.cfg.RetryScale)
	d = min(max(d, 10*time.Millisecond), 5*time.Minute)
	ev.NotBeforeMs = now().Add(d).UnixMilli()
	if err := q.publish(q.ctx, ev, msgID(ev, "a"+strconv.Itoa(ev.Attempt)+"#t"+strconv.Itoa(ev.Throttles))); err != nil {
		q.log.Warn("requeue throttled event", "err", err)
		return
	}
	q.log.Debug("event put back", "request_id", ev.RequestID, "why", why, "delay", d)
	q.settle(msg, ev, mark, true)
}

// fail sends a finally failed event to its on-failure destination, the
// function's dead-letter target, or the dead-letter store. It reports
// whether a dead letter now names the event's body.
func (q *Queue) fail(ev *Event, cond string, dest *control.DestinationConfig, payload []byte, executed string) bool {
	q.m.Failed.Inc()
	var v *control.Version
	if executed != "" {
		v = &control.Version{Config: function.Config{Version: executed}}
	}
	rec := record(ev, cond, v, payload, "Unhandled")
	if dest != nil && dest.OnFailure != nil && dest.OnFailure.Destination != "" {
		return q.deliver(dest.OnFailure.Destination, ev, rec)
	}
	if t, err := q.cfg.Control.InvokeTarget(q.ctx, ev.Account, ev.Function, ev.Qualifier); err == nil {
		if dl := t.Version.Config.DeadLetterConfig; dl != nil && dl.TargetArn != "" {
			return q.deliver(dl.TargetArn, ev, rec)
		}
	}
	q.deadLetter(ev, rec)
	return true
}

// deliver queues an invocation record for a destination function; when it
// cannot, the event is dead-lettered (and deliver reports true).
func (q *Queue) deliver(target string, ev *Event, rec []byte) bool {
	r, err := arn.ParseFunction(target)
	if err != nil || r.AccountID != ev.Account {
		q.log.Warn("destination unusable; dead-lettering", "destination", target)
		q.deadLetter(ev, rec)
		return true
	}
	if _, err := q.cfg.Control.InvokeTarget(q.ctx, r.AccountID, r.Name, r.Qualifier); errdefs.Is(err, errdefs.KindNotFound) {
		// Queued for a missing function, the record would be dropped.
		q.log.Warn("destination does not exist; dead-lettering", "destination", target, "request_id", ev.RequestID)
		q.deadLetter(ev, rec)
		return true
	}
	// The record's request id is derived, not random: a redelivered event
	// delivering again makes the same message, which the duplicate window
	// drops, and the same body name.
	id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(msgID(ev, "dest"))).String()
	d := &Event{RequestID: id, Account: ev.Account, Function: r.Name, Qualifier: r.Qualifier,
		InvokedARN: target, Payload: rec, EnqueuedMs: now().UnixMilli()}
	if err := q.publish(q.ctx, d, msgID(ev, "dest")); err != nil {
		q.log.Warn("destination enqueue failed; dead-lettering", "err", err)
		q.deadLetter(ev, rec)
		return true
	}
	return false
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
	// RecordRef names the record's body when it was too large to keep
	// inline (Failed fills Record from it).
	RecordRef string `json:"recordRef,omitempty"`
	Time      string `json:"time"`
}

func dlqKey(acct, fn, id string) string { return acct + "." + fn + "." + id }

func (q *Queue) deadLetter(ev *Event, rec []byte) {
	d := DeadLetter{Event: *ev, Time: time.Now().UTC().Format(time.RFC3339Nano)}
	if d.Event.PayloadRef != "" {
		d.Event.Payload = nil
	}
	key := dlqKey(ev.Account, ev.Function, ev.RequestID)
	for q.ctx.Err() == nil {
		err := error(nil)
		if len(rec) > inlineMax {
			d.RecordRef = "r." + key
			err = q.putBody(q.ctx, d.RecordRef, rec)
		} else {
			d.Record = rec
		}
		if err == nil {
			b, _ := json.Marshal(d)
			if _, err = q.dlq.Put(q.ctx, key, b); err == nil {
				break
			}
		}
		// Nobody else holds the event: retry rather than lose it.
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
		if json.Unmarshal(e.Value(), &d) != nil {
			continue
		}
		if d.RecordRef != "" {
			if rec, err := q.getBody(ctx, d.RecordRef); err == nil {
				d.Record = rec
			}
		}
		out = append(out, d)
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
		oldBody := ""
		if ev.PayloadRef != "" {
			// Bodies expire by their age (openBodies), and this one is as
			// old as the event's first queueing: the replayed event gets a
			// copy of its own, as young as the replay.
			b, err := q.getBody(ctx, ev.PayloadRef)
			if err != nil {
				return n, fmt.Errorf("replay %s: payload: %w", ev.RequestID, err)
			}
			oldBody = ev.PayloadRef
			ev.PayloadRef = "p." + ev.RequestID + ".replay-" + strconv.FormatInt(now().UnixNano(), 36)
			if err := q.putBody(ctx, ev.PayloadRef, b); err != nil {
				return n, fmt.Errorf("replay %s: payload: %w", ev.RequestID, err)
			}
		}
		if err := q.publish(ctx, &ev, msgID(&ev, "replay")); err != nil {
			return n, err
		}
		if err := q.dlq.Delete(ctx, dlqKey(acct, fn, ev.RequestID)); err != nil {
			return n, err
		}
		q.dropBody(d.RecordRef)
		if oldBody != "" {
			q.dropBody(oldBody)
		}
		n++
	}
	if len(ids) > 0 && n < len(ids) {
		return n, errdefs.NotFound("%d of the given events are not in the dead-letter store of %s", len(ids)-n, fn)
	}
	return n, nil
}
