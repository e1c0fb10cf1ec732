package async_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/nubo-dev/nubo/internal/async"
)

// apiError returns the HTTP status and error code of an SDK error.
func apiError(t testing.TB, err error) (int, string, string) {
	t.Helper()
	var re *awshttp.ResponseError
	var ae smithy.APIError
	if !errors.As(err, &re) || !errors.As(err, &ae) {
		t.Fatalf("not an API error: %v", err)
	}
	return re.HTTPStatusCode(), ae.ErrorCode(), ae.ErrorMessage()
}

// TestEventAccepted: an Event invoke answers 202 with an empty body and the
// request id the function then runs with; payloads up to 1 MB are taken;
// qualifiers and aliases resolve as for synchronous invokes; the legacy
// InvokeAsync works too.
func TestEventAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.create(t, "acc")

	payload := `{"op":"ok","n":1}`
	id := h.event(t, "acc", payload)
	eventually(t, 10*time.Second, "the event did not run", func() bool { return len(h.runsOf(t, "acc", id)) == 1 })
	r := h.runsOf(t, "acc", id)[0]
	if r.InvokedARN != fnARN("acc") || !jsonEqual(r.Payload, []byte(payload)) || r.Version != "v0" {
		t.Errorf("run: invoked %s, payload %s, version %s", r.InvokedARN, r.Payload, r.Version)
	}
	// An empty payload reaches the function as an empty object.
	empty := h.event(t, "acc", "")
	eventually(t, 10*time.Second, "the empty event did not run", func() bool { return len(h.runsOf(t, "acc", empty)) == 1 })
	if p := h.runsOf(t, "acc", empty)[0].Payload; string(p) != "{}" {
		t.Errorf("empty payload arrived as %q", p)
	}

	// 1 MB exactly is accepted; one byte more is refused before queueing.
	const limit = 1 << 20
	pad := func(n int) string {
		head, tail := `{"op":"ok","pad":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	big := h.event(t, "acc", pad(limit))
	_, err := h.c.Invoke(ctx(t), &lambda.InvokeInput{FunctionName: aws.String("acc"), InvocationType: types.InvocationTypeEvent,
		Payload: []byte(pad(limit + 1))})
	if err == nil {
		t.Fatal("a payload of 1 MB + 1 byte was accepted")
	}
	status, code, msg := apiError(t, err)
	if status != http.StatusRequestEntityTooLarge || code != "RequestEntityTooLargeException" ||
		msg != fmt.Sprintf("%d byte payload is too large for the Event invocation type (limit %d bytes)", limit+1, limit) {
		t.Errorf("too large: %d %s %q", status, code, msg)
	}
	eventually(t, 10*time.Second, "the 1 MB event did not run", func() bool { return len(h.runsOf(t, "acc", big)) == 1 })
	if p := h.runsOf(t, "acc", big)[0].Payload; len(p) != limit {
		t.Errorf("1 MB event arrived with %d bytes", len(p))
	}

	// Versions and aliases: version 1 is v0's code, $LATEST becomes v1.
	pub, err := h.c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("acc")})
	if err != nil || aws.ToString(pub.Version) != "1" {
		t.Fatalf("PublishVersion: %v", err)
	}
	if _, err := h.c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("acc"), Name: aws.String("live"),
		FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("acc"), ZipFile: fnZip(t, "v1")}); err != nil {
		t.Fatal(err)
	}
	w := lambda.NewFunctionUpdatedV2Waiter(h.c, func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("acc")}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, fn, q, arn, version string
	}{
		{"unqualified", "acc", "", fnARN("acc"), "v1"},
		{"$LATEST", "acc", "$LATEST", fnARN("acc") + ":$LATEST", "v1"},
		{"version", "acc", "1", fnARN("acc") + ":1", "v0"},
		{"alias", "acc", "live", fnARN("acc") + ":live", "v0"},
		{"alias in ARN", fnARN("acc") + ":live", "", fnARN("acc") + ":live", "v0"},
		{"alias in partial name", "acc:live", "", fnARN("acc") + ":live", "v0"},
	}
	ids := map[string]string{}
	for _, c := range cases {
		var m []func(*lambda.InvokeInput)
		if c.q != "" {
			m = append(m, qualifier(c.q))
		}
		ids[c.name] = h.event(t, c.fn, `{"op":"ok","case":"`+c.name+`"}`, m...)
	}
	for _, c := range cases {
		id := ids[c.name]
		eventually(t, 10*time.Second, c.name+": did not run", func() bool { return len(h.runsOf(t, "acc", id)) > 0 })
		r := h.runsOf(t, "acc", id)[0]
		if r.InvokedARN != c.arn || r.Version != c.version {
			t.Errorf("%s: ran as %s with code %s, want %s with %s", c.name, r.InvokedARN, r.Version, c.arn, c.version)
		}
	}
	for _, bad := range []struct{ fn, q string }{{"acc", "nope"}, {"acc", "7"}, {"missing", ""}} {
		in := &lambda.InvokeInput{FunctionName: aws.String(bad.fn), InvocationType: types.InvocationTypeEvent, Payload: []byte(`{}`)}
		if bad.q != "" {
			in.Qualifier = aws.String(bad.q)
		}
		_, err := h.c.Invoke(ctx(t), in)
		if err == nil {
			t.Errorf("Event invoke of %s:%s accepted", bad.fn, bad.q)
			continue
		}
		if status, code, _ := apiError(t, err); status != 404 || code != "ResourceNotFoundException" {
			t.Errorf("%s:%s: %d %s", bad.fn, bad.q, status, code)
		}
	}

	// The legacy InvokeAsync.
	out, err := h.c.InvokeAsync(ctx(t), &lambda.InvokeAsyncInput{FunctionName: aws.String("acc"),
		InvokeArgs: strings.NewReader(`{"op":"ok","legacy":true}`)})
	if err != nil {
		t.Fatalf("InvokeAsync: %v", err)
	}
	legacy, _ := awsmw.GetRequestIDMetadata(out.ResultMetadata)
	if out.Status != http.StatusAccepted || legacy == "" {
		t.Fatalf("InvokeAsync: status %d, request id %q", out.Status, legacy)
	}
	eventually(t, 10*time.Second, "the InvokeAsync event did not run", func() bool { return len(h.runsOf(t, "acc", legacy)) == 1 })

	// Success is final: nothing ran twice.
	time.Sleep(500 * time.Millisecond)
	seen := map[string]int{}
	for _, r := range h.runs(t, "acc", "start") {
		seen[r.RequestID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s ran %d times", id, n)
		}
	}
	if s := h.stats(t, "acc"); s.QueueDepth != 0 || s.Retries != 0 || s.DeadLettered != 0 {
		t.Errorf("stats after all ran: %+v", s)
	}
}

// TestRetries: function errors and timeouts run 1+MaximumRetryAttempts
// times with the same request id, about 1 then 2 (scaled) minutes apart,
// then land in the dead-letter store.
func TestRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t) // retry scale 0.005: 300 ms, then 600 ms
	type tc struct {
		cause   string
		retries int // -1: no event-invoke config (the default, 2)
	}
	var cases []tc
	for _, cause := range []string{"error", "timeout"} {
		for _, n := range []int{0, 1, 2, -1} {
			cases = append(cases, tc{cause, n})
		}
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s-%d", c.cause, c.retries)
		if c.retries < 0 {
			name = c.cause + "-default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn := "retry-" + name
			h.create(t, fn, func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(1) })
			want := 3
			if c.retries >= 0 {
				h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String(fn),
					MaximumRetryAttempts: aws.Int32(int32(c.retries))})
				want = c.retries + 1
			}
			payload := `{"op":"fail"}`
			if c.cause == "timeout" {
				payload = `{"op":"sleep","ms":2500}`
			}
			id := h.event(t, fn, payload)
			eventually(t, 20*time.Second, fmt.Sprintf("%s did not run %d times", fn, want), func() bool {
				return len(h.runsOf(t, fn, id)) >= want
			})
			// The next retry would come 2^want × 300 ms later; twice that
			// passes with nothing more.
			h.stableCount(t, fn, id, want, 1500*time.Millisecond)
			runs := h.runsOf(t, fn, id)
			for k := 1; k < len(runs); k++ {
				gap := runs[k].time().Sub(runs[k-1].time())
				delay := 300 * time.Millisecond << (k - 1)
				if c.cause == "timeout" {
					delay += time.Second // the attempt itself lasts the timeout
				}
				if gap < delay*9/10 || gap > delay+3*time.Second {
					t.Errorf("attempt %d came %v after attempt %d, want about %v", k+1, gap, k, delay)
				}
			}
			var dl []deadLetter
			eventually(t, 5*time.Second, "not in the dead-letter store", func() bool { dl = h.failed(t, fn); return len(dl) == 1 })
			d := dl[0]
			if d.Event.RequestID != id || d.Event.Attempt != want || !jsonEqual(d.Event.Payload, []byte(payload)) {
				t.Errorf("dead letter event %+v", d.Event)
			}
			rc := d.Record.RequestContext
			if rc.RequestID != id || rc.Condition != async.CondRetriesExhausted || rc.ApproximateInvokeCount != want ||
				rc.FunctionArn != fnARN(fn)+":$LATEST" {
				t.Errorf("dead letter record %+v", rc)
			}
			if d.Record.ResponseContext == nil || d.Record.ResponseContext.FunctionError != "Unhandled" {
				t.Errorf("dead letter response context %+v", d.Record.ResponseContext)
			}
			var resp struct{ ErrorType string }
			json.Unmarshal(d.Record.ResponsePayload, &resp)
			if wantType := map[string]string{"error": "errorString", "timeout": "Sandbox.Timedout"}[c.cause]; resp.ErrorType != wantType {
				t.Errorf("last response %s, want errorType %s", d.Record.ResponsePayload, wantType)
			}
			if s := h.stats(t, fn); s.Retries != want-1 || s.DeadLettered != 1 || s.DeadLetteredRecent != 1 || s.QueueDepth != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

var timestampRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// checkRecord checks the fields every invocation record has.
func checkRecord(t *testing.T, raw []byte, rec invocationRecord, id, arn, cond string, count int, payload string) {
	t.Helper()
	if rec.Version != "1.0" || !timestampRE.MatchString(rec.Timestamp) {
		t.Errorf("record version %q timestamp %q", rec.Version, rec.Timestamp)
	}
	if ts, err := time.Parse(time.RFC3339, rec.Timestamp); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < -time.Second {
		t.Errorf("record timestamp %q is not now", rec.Timestamp)
	}
	var top map[string]json.RawMessage
	json.Unmarshal(raw, &top)
	if got := keys(t, top["requestContext"]); !slices.Equal(got, []string{"approximateInvokeCount", "condition", "functionArn", "requestId"}) {
		t.Errorf("requestContext keys %v", got)
	}
	rc := rec.RequestContext
	if rc.RequestID != id || rc.FunctionArn != arn || rc.Condition != cond || rc.ApproximateInvokeCount != count {
		t.Errorf("requestContext %+v, want %s %s %s %d", rc, id, arn, cond, count)
	}
	if !jsonEqual(rec.RequestPayload, []byte(payload)) {
		t.Errorf("requestPayload %s, want %s", rec.RequestPayload, payload)
	}
}

// TestDestinations: OnSuccess, OnFailure and a function DeadLetterConfig
// receive AWS's invocation record, exactly once each.
func TestDestinations(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, n := range []string{"dst-ok", "dst-fail", "dst-dlq", "dst-gone", "src", "src-big", "src-gone"} {
		h.create(t, n)
	}
	h.create(t, "dl-src", func(in *lambda.CreateFunctionInput) {
		in.DeadLetterConfig = &types.DeadLetterConfig{TargetArn: aws.String(fnARN("dst-dlq"))}
	})
	if _, err := h.c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("src")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("src"), Name: aws.String("prod"),
		FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	dests := &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(fnARN("dst-ok"))},
		OnFailure: &types.OnFailure{Destination: aws.String(fnARN("dst-fail"))}}
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("src"),
		MaximumRetryAttempts: aws.Int32(1), DestinationConfig: dests})
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("src"), Qualifier: aws.String("prod"),
		MaximumRetryAttempts: aws.Int32(0), DestinationConfig: dests})
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("dl-src"), MaximumRetryAttempts: aws.Int32(0)})
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("src-big"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(fnARN("dst-ok"))}}})
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("src-gone"), MaximumRetryAttempts: aws.Int32(0),
		DestinationConfig: &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(fnARN("dst-gone"))}}})
	if _, err := h.c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String("dst-gone")}); err != nil {
		t.Fatal(err)
	}

	// What the function answers, as a synchronous invoke shows it.
	syncOut := func(payload string) []byte {
		out, err := h.c.Invoke(ctx(t), &lambda.InvokeInput{FunctionName: aws.String("src"), Payload: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return out.Payload
	}

	okPayload := `{"op":"ok","k":"success"}`
	failPayload := `{"op":"fail","k":"failure"}`
	aliasPayload := `{"op":"fail","k":"alias"}`
	okID := h.event(t, "src", okPayload)
	failID := h.event(t, "src", failPayload)
	aliasID := h.event(t, "src", aliasPayload, qualifier("prod"))
	dlID := h.event(t, "dl-src", failPayload)
	// A record larger than a NATS message: a 1 MB request and a 2 MB answer.
	bigPayload := `{"op":"big","n":2000000,"pad":"` + strings.Repeat("z", 1000000) + `"}`
	bigID := h.event(t, "src-big", bigPayload)
	goneID := h.event(t, "src-gone", failPayload)

	t.Run("OnSuccess", func(t *testing.T) {
		rec, raw := h.waitRecord(t, "dst-ok", okID, 10*time.Second)
		if got := keys(t, raw); !slices.Equal(got, []string{"requestContext", "requestPayload", "responseContext", "responsePayload", "timestamp", "version"}) {
			t.Errorf("record keys %v", got)
		}
		checkRecord(t, raw, rec, okID, fnARN("src")+":$LATEST", async.CondSuccess, 1, okPayload)
		var top map[string]json.RawMessage
		json.Unmarshal(raw, &top)
		if got := keys(t, top["responseContext"]); !slices.Equal(got, []string{"executedVersion", "statusCode"}) {
			t.Errorf("responseContext keys %v", got)
		}
		if rc := rec.ResponseContext; rc.StatusCode != 200 || rc.ExecutedVersion != "$LATEST" {
			t.Errorf("responseContext %+v", rc)
		}
		if want := syncOut(okPayload); !jsonEqual(rec.ResponsePayload, want) {
			t.Errorf("responsePayload %s, want %s", rec.ResponsePayload, want)
		}
	})
	t.Run("OnFailure", func(t *testing.T) {
		rec, raw := h.waitRecord(t, "dst-fail", failID, 10*time.Second)
		if got := keys(t, raw); !slices.Equal(got, []string{"requestContext", "requestPayload", "responseContext", "responsePayload", "timestamp", "version"}) {
			t.Errorf("record keys %v", got)
		}
		checkRecord(t, raw, rec, failID, fnARN("src")+":$LATEST", async.CondRetriesExhausted, 2, failPayload)
		var top map[string]json.RawMessage
		json.Unmarshal(raw, &top)
		if got := keys(t, top["responseContext"]); !slices.Equal(got, []string{"executedVersion", "functionError", "statusCode"}) {
			t.Errorf("responseContext keys %v", got)
		}
		if rc := rec.ResponseContext; rc.StatusCode != 200 || rc.ExecutedVersion != "$LATEST" || rc.FunctionError != "Unhandled" {
			t.Errorf("responseContext %+v", rc)
		}
		if want := syncOut(failPayload); !jsonEqual(rec.ResponsePayload, want) {
			t.Errorf("responsePayload %s, want %s", rec.ResponsePayload, want)
		}
		if n := len(h.runsOf(t, "src", failID)); n != 2 {
			t.Errorf("src ran the failing event %d times, want 2", n)
		}
	})
	t.Run("alias", func(t *testing.T) {
		// The alias's own config: no retry, executed version 1.
		rec, raw := h.waitRecord(t, "dst-fail", aliasID, 10*time.Second)
		checkRecord(t, raw, rec, aliasID, fnARN("src")+":prod", async.CondRetriesExhausted, 1, aliasPayload)
		if rc := rec.ResponseContext; rc == nil || rc.ExecutedVersion != "1" || rc.FunctionError != "Unhandled" {
			t.Errorf("responseContext %+v", rc)
		}
		if r := h.runsOf(t, "src", aliasID); len(r) != 1 || r[0].InvokedARN != fnARN("src")+":prod" {
			t.Errorf("alias runs %+v", r)
		}
	})
	t.Run("DeadLetterConfig", func(t *testing.T) {
		rec, raw := h.waitRecord(t, "dst-dlq", dlID, 10*time.Second)
		checkRecord(t, raw, rec, dlID, fnARN("dl-src")+":$LATEST", async.CondRetriesExhausted, 1, failPayload)
		if rc := rec.ResponseContext; rc == nil || rc.FunctionError != "Unhandled" {
			t.Errorf("responseContext %+v", rc)
		}
	})
	t.Run("large record", func(t *testing.T) {
		rec, raw := h.waitRecord(t, "dst-ok", bigID, 20*time.Second)
		checkRecord(t, raw, rec, bigID, fnARN("src-big")+":$LATEST", async.CondSuccess, 1, bigPayload)
		var resp struct{ Pad string }
		if err := json.Unmarshal(rec.ResponsePayload, &resp); err != nil || len(resp.Pad) != 2000000 {
			t.Errorf("responsePayload of %d bytes: %v", len(rec.ResponsePayload), err)
		}
	})
	t.Run("missing destination", func(t *testing.T) {
		// Its destination deleted, the failure is kept, not dropped.
		var dl []deadLetter
		eventually(t, 10*time.Second, "not dead-lettered", func() bool { dl = h.failed(t, "src-gone"); return len(dl) == 1 })
		rc := dl[0].Record.RequestContext
		if dl[0].Event.RequestID != goneID || rc.Condition != async.CondRetriesExhausted || rc.ApproximateInvokeCount != 1 {
			t.Errorf("dead letter %+v", dl[0])
		}
	})
	// Each record arrived once, and nothing was also dead-lettered.
	time.Sleep(700 * time.Millisecond)
	for dest, ids := range map[string][]string{"dst-ok": {okID, bigID}, "dst-fail": {failID, aliasID}, "dst-dlq": {dlID}} {
		for _, id := range ids {
			if n := len(h.recordsFor(t, dest, id)); n != 1 {
				t.Errorf("%s received %d records of %s", dest, n, id)
			}
		}
	}
	if n := len(h.recordsFor(t, "dst-ok", failID)) + len(h.recordsFor(t, "dst-fail", okID)); n != 0 {
		t.Errorf("records went to the wrong destination")
	}
	for _, fn := range []string{"src", "dl-src", "src-big"} {
		if dl := h.failed(t, fn); len(dl) != 0 {
			t.Errorf("%s has dead letters although it has somewhere to send them: %+v", fn, dl)
		}
	}
}

// TestDeadLetterReplay: events that failed with nowhere to go are listed
// and replayed; a replay that fails again comes back to the store.
func TestDeadLetterReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.create(t, "dead")
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("dead"), MaximumRetryAttempts: aws.Int32(1)})
	flag := filepath.Join(h.rec, "fixed")
	payload := `{"op":"fail","unless":"` + flag + `"}`
	// c's payload is kept out of line (larger than a NATS message).
	bigPayload := `{"op":"fail","unless":"` + flag + `","pad":"` + strings.Repeat("p", 1040000) + `"}`
	a, b, c := h.event(t, "dead", payload), h.event(t, "dead", payload), h.event(t, "dead", bigPayload)
	var dl []deadLetter
	eventually(t, 15*time.Second, "three dead letters", func() bool { dl = h.failed(t, "dead"); return len(dl) == 3 })
	got := []string{dl[0].Event.RequestID, dl[1].Event.RequestID, dl[2].Event.RequestID}
	want := []string{a, b, c}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dead letters %v, want %v", got, want)
	}
	for _, d := range dl {
		p := payload
		if d.Event.RequestID == c {
			p = bigPayload
		} else if !jsonEqual(d.Event.Payload, []byte(p)) {
			t.Errorf("dead letter payload %s", d.Event.Payload)
		}
		if d.Event.Function != "dead" || d.Event.Attempt != 2 || !jsonEqual(d.Record.RequestPayload, []byte(p)) ||
			d.Record.RequestContext.Condition != async.CondRetriesExhausted || d.Record.RequestContext.ApproximateInvokeCount != 2 {
			t.Errorf("dead letter %+v", d.Record.RequestContext)
		}
		if _, err := time.Parse(time.RFC3339Nano, d.Time); err != nil {
			t.Errorf("dead letter time %q", d.Time)
		}
	}
	if s := h.stats(t, "dead"); s.DeadLettered != 3 || s.DeadLetteredRecent != 3 || s.Retries != 3 || s.QueueDepth != 0 {
		t.Errorf("stats %+v", s)
	}
	replay := func(ids ...string) (int, int) {
		q := url.Values{"function": {"dead"}}
		if len(ids) > 0 {
			q.Set("requestIds", strings.Join(ids, ","))
		}
		var out struct{ Replayed int }
		code := h.nubo(t, "POST", "/nubo/v1/events/replay", q, &out)
		return code, out.Replayed
	}

	// Replayed while the function still fails: it runs with its retries
	// again and is kept again.
	if code, n := replay(b); code != 200 || n != 1 {
		t.Fatalf("replay %s: HTTP %d, %d replayed", b, code, n)
	}
	if dl := h.failed(t, "dead"); len(dl) != 2 || slices.ContainsFunc(dl, func(d deadLetter) bool { return d.Event.RequestID == b }) {
		t.Errorf("after replaying %s the store holds %+v", b, dl)
	}
	eventually(t, 15*time.Second, "the failing replay did not come back to the store", func() bool {
		return len(h.runsOf(t, "dead", b)) == 4 && len(h.failed(t, "dead")) == 3
	})

	// Fixed: one replayed event runs once and is gone for good.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, n := replay(a); code != 200 || n != 1 {
		t.Fatalf("replay %s: HTTP %d, %d", a, code, n)
	}
	eventually(t, 10*time.Second, "replayed event did not run", func() bool { return len(h.runsOf(t, "dead", a)) == 3 })
	h.stableCount(t, "dead", a, 3, 500*time.Millisecond)
	if dl := h.failed(t, "dead"); len(dl) != 2 || slices.ContainsFunc(dl, func(d deadLetter) bool { return d.Event.RequestID == a }) {
		t.Errorf("store after replaying %s: %+v", a, dl)
	}

	if code, _ := replay("no-such-event"); code != http.StatusNotFound {
		t.Errorf("replay of an unknown id: HTTP %d", code)
	}
	if code := h.nubo(t, "GET", "/nubo/v1/events/failed", url.Values{"function": {"nope"}}, nil); code != http.StatusNotFound {
		t.Errorf("dead letters of a missing function: HTTP %d", code)
	}

	// Replay everything left.
	if code, n := replay(); code != 200 || n != 2 {
		t.Fatalf("replay all: HTTP %d, %d", code, n)
	}
	eventually(t, 10*time.Second, "replay-all did not run", func() bool {
		return len(h.runsOf(t, "dead", b)) == 5 && len(h.runsOf(t, "dead", c)) == 3
	})
	h.stableCount(t, "dead", b, 5, 500*time.Millisecond)
	for i, r := range h.runsOf(t, "dead", c) {
		if !jsonEqual(r.Payload, []byte(bigPayload)) {
			t.Errorf("run %d of the large event had a payload of %d bytes", i+1, len(r.Payload))
		}
	}
	if dl := h.failed(t, "dead"); len(dl) != 0 {
		t.Errorf("store after replaying all: %+v", dl)
	}
	if s := h.stats(t, "dead"); s.DeadLettered != 0 || s.QueueDepth != 0 {
		t.Errorf("stats at the end %+v", s)
	}
}

// TestThrottled: with reserved concurrency 1, events and synchronous
// invokes share the one slot; throttled events wait and run later, exactly
// once, and a throttle is not a failed attempt.
func TestThrottled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.create(t, "thr-dst")
	h.create(t, "thr")
	if _, err := h.c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("thr"),
		ReservedConcurrentExecutions: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	// No retry: were a throttle a failed attempt, the events would fail.
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("thr"), MaximumRetryAttempts: aws.Int32(0),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(fnARN("thr-dst"))}}})

	syncInvoke := func(payload string) error {
		out, err := h.c.Invoke(ctx(t), &lambda.InvokeInput{FunctionName: aws.String("thr"), Payload: []byte(payload)})
		if err == nil && out.FunctionError != nil {
			return fmt.Errorf("function error %s", out.Payload)
		}
		return err
	}
	throttled := func(err error) bool {
		if err == nil {
			return false
		}
		status, code, _ := apiError(t, err)
		return status == http.StatusTooManyRequests && code == "TooManyRequestsException"
	}

	// A synchronous invoke holds the slot while events arrive.
	var wg sync.WaitGroup
	var holdErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		holdErr = syncInvoke(`{"op":"sleep","ms":1500,"k":"hold"}`)
	}()
	eventually(t, 10*time.Second, "the holding invoke did not start", func() bool { return len(h.runs(t, "thr", "start")) == 1 })
	var ids []string
	for i := range 5 {
		ids = append(ids, h.event(t, "thr", fmt.Sprintf(`{"op":"sleep","ms":50,"i":%d}`, i)))
	}
	if err := syncInvoke(`{"op":"ok"}`); !throttled(err) {
		t.Errorf("a second synchronous invoke while the slot is held: %v", err)
	}
	wg.Wait()
	if holdErr != nil {
		t.Fatal(holdErr)
	}
	eventually(t, 20*time.Second, "the throttled events did not all run", func() bool {
		for _, id := range ids {
			if len(h.runsOf(t, "thr", id)) == 0 {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if n := len(h.runsOf(t, "thr", id)); n != 1 {
			t.Errorf("event %s ran %d times", id, n)
		}
		rec, _ := h.waitRecord(t, "thr-dst", id, 10*time.Second)
		if rec.RequestContext.Condition != async.CondSuccess || rec.RequestContext.ApproximateInvokeCount != 1 {
			t.Errorf("event %s: %+v", id, rec.RequestContext)
		}
	}
	if dl := h.failed(t, "thr"); len(dl) != 0 {
		t.Errorf("throttled events were dead-lettered: %+v", dl)
	}

	// An event holds the slot: a synchronous invoke is throttled meanwhile.
	long := h.event(t, "thr", `{"op":"sleep","ms":1500,"k":"long"}`)
	eventually(t, 10*time.Second, "the long event did not start", func() bool { return len(h.runsOf(t, "thr", long)) == 1 })
	if err := syncInvoke(`{"op":"ok"}`); !throttled(err) {
		t.Errorf("a synchronous invoke while an event runs: %v", err)
	}
	eventually(t, 10*time.Second, "the long event did not end", func() bool {
		for _, r := range h.runs(t, "thr", "end") {
			if r.RequestID == long {
				return true
			}
		}
		return false
	})
	time.Sleep(50 * time.Millisecond)
	if err := syncInvoke(`{"op":"ok"}`); err != nil {
		t.Errorf("a synchronous invoke after the event: %v", err)
	}

	// Never two at once: every run ended before the next started.
	starts, ends := h.runs(t, "thr", "start"), h.runs(t, "thr", "end")
	if len(starts) != len(ends) {
		t.Fatalf("%d starts, %d ends", len(starts), len(ends))
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].UnixNano < starts[j].UnixNano })
	sort.Slice(ends, func(i, j int) bool { return ends[i].UnixNano < ends[j].UnixNano })
	for i := 1; i < len(starts); i++ {
		if starts[i].UnixNano < ends[i-1].UnixNano {
			t.Errorf("run %s started before %s ended: reserved concurrency 1 exceeded", starts[i].RequestID, ends[i-1].RequestID)
		}
	}
}

// TestVisibility: queue depth, the oldest event's age, retries and dead
// letters show in the stats route and the Prometheus metrics.
func TestVisibility(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withMetrics)
	h.create(t, "vis")
	h.create(t, "vis-fail")
	// Reserved concurrency 0: every event waits in the queue.
	if _, err := h.c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("vis"),
		ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("vis-fail"), MaximumRetryAttempts: aws.Int32(1)})
	for range 3 {
		h.event(t, "vis", `{"op":"ok"}`)
	}
	h.event(t, "vis-fail", `{"op":"fail"}`)
	time.Sleep(1200 * time.Millisecond)
	s := h.stats(t, "vis")
	if s.QueueDepth != 3 || s.OldestEventAgeSecs < 1 || s.OldestEventAgeSecs > 30 {
		t.Errorf("stats of the held function: %+v", s)
	}
	if n := len(h.runs(t, "vis", "")); n != 0 {
		t.Errorf("a function with reserved concurrency 0 ran %d times", n)
	}
	eventually(t, 10*time.Second, "vis-fail not dead-lettered", func() bool { return h.stats(t, "vis-fail").DeadLettered == 1 })
	if s := h.stats(t, "vis-fail"); s.Retries != 1 || s.DeadLetteredRecent != 1 || s.QueueDepth != 0 {
		t.Errorf("stats of the failing function: %+v", s)
	}

	m := func(sample string) float64 { return scrape(t, h.metrics, sample) }
	if v := m(`nubo_async_queue_depth{account="000000000000",function="vis"}`); v != 3 {
		t.Errorf("queue depth metric %v", v)
	}
	if v := m(`nubo_async_oldest_event_age_seconds{account="000000000000",function="vis"}`); v < 1 || v > 30 {
		t.Errorf("oldest age metric %v", v)
	}
	if v := m("nubo_async_retries_total"); v != 1 {
		t.Errorf("retries metric %v", v)
	}
	if v := m("nubo_async_events_dead_lettered_total"); v != 1 {
		t.Errorf("dead-lettered metric %v", v)
	}
	if v := m("nubo_async_events_put_back_total"); v < 1 {
		t.Errorf("put-back metric %v", v)
	}
	if v := m("nubo_async_events_enqueued_total"); v < 5 {
		t.Errorf("enqueued metric %v", v)
	}
	if v := m("nubo_async_redeliveries_total"); v != 0 {
		t.Errorf("redeliveries without a crash: %v", v)
	}
}

// TestEventAge runs alone: it moves the queue's clock past
// MaximumEventAgeInSeconds instead of waiting a minute.
func TestEventAge(t *testing.T) {
	h := newHarness(t, scale(0.05)) // first retry 3 s after the failure
	h.create(t, "aged")
	h.create(t, "aged-dst")
	h.create(t, "held")
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("aged"), MaximumRetryAttempts: aws.Int32(2),
		MaximumEventAgeInSeconds: aws.Int32(60),
		DestinationConfig:        &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(fnARN("aged-dst"))}}})
	if _, err := h.c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("held"),
		ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	h.eventConfig(t, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("held"), MaximumEventAgeInSeconds: aws.Int32(60)})

	failing := `{"op":"fail","k":"aged"}`
	agedID := h.event(t, "aged", failing)
	heldID := h.event(t, "held", `{"op":"ok","k":"held"}`)
	eventually(t, 10*time.Second, "the first attempt did not run", func() bool { return len(h.runsOf(t, "aged", agedID)) == 1 })
	time.Sleep(300 * time.Millisecond)
	if s := h.stats(t, "held"); s.QueueDepth != 1 {
		t.Errorf("held event not queued: %+v", s)
	}
	// A minute passes (for the queue) before the retry is due.
	defer async.SetClockSkew(61 * time.Second)()

	rec, raw := h.waitRecord(t, "aged-dst", agedID, 15*time.Second)
	checkRecord(t, raw, rec, agedID, fnARN("aged")+":$LATEST", async.CondEventAgeExceeded, 1, failing)
	h.stableCount(t, "aged", agedID, 1, 0)

	// The throttled event never ran: it is kept, with no attempt counted.
	var dl []deadLetter
	eventually(t, 15*time.Second, "the held event was not dead-lettered", func() bool { dl = h.failed(t, "held"); return len(dl) == 1 })
	rc := dl[0].Record.RequestContext
	if dl[0].Event.RequestID != heldID || rc.Condition != async.CondEventAgeExceeded || rc.ApproximateInvokeCount != 0 ||
		dl[0].Record.ResponseContext != nil {
		t.Errorf("held dead letter: %+v", dl[0])
	}
	if n := len(h.runs(t, "held", "")); n != 0 {
		t.Errorf("held ran %d times", n)
	}
	if s := h.stats(t, "held"); s.QueueDepth != 0 || s.DeadLettered != 1 {
		t.Errorf("held stats %+v", s)
	}
}
