// Package env is the host side of one execution environment: it starts a
// sandbox, drives the agent inside it through the init and invoke phases,
// writes the platform log lines (INIT_START, START, END, REPORT), keeps the
// per-invocation log tail, and shuts the environment down.
//
// States (an Environment is used by one invocation at a time; the worker
// guarantees it):
//
//	Starting → Idle ⇄ Busy → … → Stopping → Dead
//	             └──────────────(sandbox died, OOM, watchdog)──→ Dead
//
// The host never trusts the agent to keep time: every wait on it has a
// deadline of its own, after which the sandbox is destroyed.
package env

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// State of an environment.
type State int32

// States.
const (
	Starting State = iota
	Idle
	Busy
	Stopping
	Dead
)

func (s State) String() string {
	return [...]string{"Starting", "Idle", "Busy", "Stopping", "Dead"}[s]
}

// LogSink receives an environment's log lines (each without its newline).
type LogSink interface {
	Append(line []byte, t time.Time)
}

// Config is what the agent needs to start the runtime, plus host limits.
type Config struct {
	Start       agentproto.Start
	MemoryMB    int
	InitTimeout time.Duration
	// RuntimeVersion is shown in INIT_START.
	RuntimeVersion string
	// ExecutedVersion is shown in START ("$LATEST" or the number).
	ExecutedVersion string
	Logs            LogSink
	Logger          *slog.Logger
	// Provisioned environments were initialised ahead of demand; their
	// first REPORT carries no Init Duration, as in Lambda.
	Provisioned bool
	// ObservePhase, when set, receives the cold-start phases this package
	// times: "agent_ready" (sandbox handed over → agent Ready), "init"
	// (the runtime's init) and "first_invoke" (the first invocation).
	ObservePhase func(phase string, d time.Duration)
	// Initialised, when set, is called with the time the first init was
	// over (with StartInvoke, once the first invocation has answered or
	// has run for afterInitDelay).
	Initialised func(at time.Time)
}

// Environment is one execution environment.
type Environment struct {
	ID  string
	cfg Config
	sb  sandbox.Sandbox
	// placed is sb when its backend places it on CPUs, else nil.
	placed  sandbox.Placed
	conn    *agentproto.Conn
	log     *slog.Logger
	state   atomic.Int32
	created time.Time

	initDone chan initOutcome
	results  chan *result
	shutdown chan struct{}
	deadOnce sync.Once
	dead     chan struct{}
	// current is the request id of the last invocation sent to the agent,
	// idleFor that of the last Idle it sent (runtime and extensions done):
	// the environment may be frozen when they are the same.
	current, idleFor atomic.Pointer[string]
	// stream is where the invocation in flight wants its streamed
	// response (Request.Stream); nil when it wants it whole.
	stream atomic.Pointer[streamSink]
	// freezeMu orders freezing against the next invocation's thaw; it
	// guards frozen and freezeTimer.
	freezeMu    sync.Mutex
	frozen      bool
	freezeTimer *time.Timer
	// reporting is closed once the previous invocation's END and REPORT
	// are written (see Invoke); nil when nothing is pending. Only the
	// invoking goroutine touches it; the worker orders invocations.
	reporting chan struct{}
	// queued is the first invocation when it travelled with Start (see
	// StartInvoke): readLoop writes its START once the init outcome
	// arrives, so that the line precedes everything the invocation logs.
	queued   atomic.Pointer[Request]
	coldInit float64 // init duration to report on the first invoke, ms
	// initOutcome is the first init's, and initAt when it arrived, for
	// initialised.
	initOutcome initOutcome
	initAt      time.Time
	lastUsed    atomic.Int64
	readyAt     atomic.Int64 // when the agent said Ready (cold start timing)
	uses        atomic.Int64
	deadCause   atomic.Value // string

	logMu   sync.Mutex
	partial [2][]byte   // unterminated output per stream
	tail    *tailBuffer // current invocation's log, for Tail
}

type initOutcome struct {
	ok         bool
	errType    string
	payload    []byte
	durationMs float64
}

type result struct {
	hdr  agentproto.Result
	body []byte
}

// StartIn starts the agent in a fresh sandbox and runs the init phase. An
// init failure is not an error here: as in Lambda, the environment stays
// and the next invocation runs init again and reports its failure. On error
// the sandbox is destroyed.
func StartIn(ctx context.Context, sb sandbox.Sandbox, id string, cfg Config) (*Environment, error) {
	e := begin(sb, id, cfg)
	if err := e.init(ctx, nil); err != nil {
		e.Destroy()
		return nil, err
	}
	e.state.CompareAndSwap(int32(Starting), int32(Idle)) // not if it died meanwhile
	return e, nil
}

// pipelineMax bounds the payload of a first invocation sent along with
// Start: the frame waits in the connection's buffer until the agent is done
// with init, and a larger one would hold up the sender.
const pipelineMax = 64 << 10

// StartInvoke starts an environment as StartIn does and runs req as its
// first invocation. The invocation travels to the agent right behind Start,
// so the runtime gets it the moment its init is over, without a round trip
// through the host in between (half a millisecond of every cold start; see
// docs/performance.md). Its timeout counts from the end of init, as in
// Lambda. As with StartIn, an error means no environment and no invocation
// ran; a failed init is not an error (the invocation runs init again and
// reports its failure). A payload too large to wait in the connection's
// buffer is sent once init is over.
func StartInvoke(ctx context.Context, sb sandbox.Sandbox, id string, cfg Config, req *Request) (*Environment, *Response, error) {
	if len(req.Payload) > pipelineMax {
		e, err := StartIn(ctx, sb, id, cfg)
		if err != nil {
			return nil, nil, err
		}
		resp, err := e.Invoke(ctx, req)
		return e, resp, err
	}
	e := begin(sb, id, cfg)
	defer e.streamTo(req)()
	if err := e.init(ctx, req); err != nil {
		e.Destroy()
		return nil, nil, err
	}
	// The invocation counts from the end of init: the runtime has started
	// by then, at the sandbox's home, and sized itself to it (a long
	// invocation may be let onto every CPU; see nsbox's placer).
	if e.placed != nil {
		e.placed.InvocationStarted()
		defer e.placed.InvocationEnded()
	}
	e.state.CompareAndSwap(int32(Starting), int32(Busy)) // not if it died meanwhile: await sees it
	e.current.Store(&req.RequestID)
	// What follows init (the sandbox's AfterInit, which applies the CPU
	// quota, and the init's report) waits for the invocation's answer, or
	// for afterInitDelay into it: on a small host that work would take
	// the CPU from the very invocation (measured: the echo function's
	// first answer 0.2 ms later beside it). The runtime runs unthrottled
	// that much longer; moving it under its quota takes 1-20 ms on cgroup
	// v1 anyway.
	//
	// An AfterInit that fails retires the environment once the invocation
	// is over (its answer stands).
	var once sync.Once
	var afterErr error
	after := func() {
		once.Do(func() {
			if e.State() != Dead {
				afterErr = e.sb.AfterInit()
			}
			e.initialised()
		})
	}
	judge := func() {
		if afterErr != nil {
			e.log.Warn("after init", "err", afterErr)
			e.markDead("after init: " + afterErr.Error())
		}
	}
	timer := time.AfterFunc(afterInitDelay, after)
	resp := e.await(req, time.Now())
	if timer.Stop() {
		go func() { after(); judge() }()
	} else {
		after() // waits for the timer's run to finish
		judge()
	}
	return e, resp, nil
}

// afterInitDelay bounds how long StartInvoke holds back what follows init
// while the first invocation runs.
const afterInitDelay = 5 * time.Millisecond

// begin makes the Environment for sb and starts reading its agent.
func begin(sb sandbox.Sandbox, id string, cfg Config) *Environment {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Environment{
		ID: id, cfg: cfg, sb: sb, conn: agentproto.NewConn(sb.Conn()), log: cfg.Logger.With("env", id),
		created: time.Now(), initDone: make(chan initOutcome, 1), results: make(chan *result, 1),
		shutdown: make(chan struct{}, 1), dead: make(chan struct{}),
	}
	e.placed, _ = sb.(sandbox.Placed)
	e.state.Store(int32(Starting))
	e.lastUsed.Store(time.Now().UnixNano())
	go e.readLoop()
	go func() {
		<-sb.Done()
		e.markDead("sandbox exited")
	}()
	return e
}

// init sends Start, and first behind it when not nil, and waits for the
// init phase's outcome.
func (e *Environment) init(ctx context.Context, first *Request) error {
	wait := e.cfg.InitTimeout + 5*time.Second
	timer := time.NewTimer(wait)
	defer timer.Stop()
	e.platform(fmt.Sprintf("INIT_START Runtime Version: %s\tRuntime Version ARN: arn:aws:lambda:nubo::runtime:%s", e.cfg.RuntimeVersion, e.cfg.RuntimeVersion))
	if first != nil {
		// Before Start: the outcome may come back at once.
		e.queued.Store(first)
	}
	if err := e.conn.Send(agentproto.TStart, &e.cfg.Start, nil); err != nil {
		e.queued.Store(nil)
		return fmt.Errorf("start agent: %w", err)
	}
	if first != nil {
		// No deadline yet: the agent starts the timeout when it starts
		// the invocation, after init.
		if err := e.conn.Send(agentproto.TInvoke, invokeFrame(first, 0), first.Payload); err != nil {
			e.queued.Store(nil)
			return fmt.Errorf("send invoke: %w", err)
		}
	}
	// An outcome that arrived takes precedence over a failure seen at the
	// same time: the first invocation may be running already.
	failed := func(err error) (initOutcome, error) {
		select {
		case out := <-e.initDone:
			return out, nil
		default:
			e.queued.Store(nil)
			return initOutcome{}, err
		}
	}
	var out initOutcome
	var err error
	select {
	case out = <-e.initDone:
	case <-e.dead:
		out, err = failed(fmt.Errorf("environment died during init: %s", e.DeadCause()))
	case <-timer.C:
		out, err = failed(fmt.Errorf("init did not finish within %s", wait))
	case <-ctx.Done():
		out, err = failed(ctx.Err())
	}
	if err != nil {
		return err
	}
	if !e.cfg.Provisioned {
		e.coldInit = out.durationMs
	}
	e.initOutcome, e.initAt = out, time.Now()
	if first != nil {
		return nil // see StartInvoke
	}
	if err := e.sb.AfterInit(); err != nil {
		return fmt.Errorf("after init: %w", err)
	}
	e.initialised()
	return nil
}

// initialised reports the first init: its log line, its phase timings and
// the Initialised hook, timed to when the outcome arrived (with
// StartInvoke this runs later).
func (e *Environment) initialised() {
	out := e.initOutcome
	e.log.Debug("environment initialised", "agent_ready", time.Unix(0, e.readyAt.Load()).Sub(e.created),
		"runtime_init_ms", out.durationMs, "total", e.initAt.Sub(e.created))
	if obs := e.cfg.ObservePhase; obs != nil {
		obs("agent_ready", time.Unix(0, e.readyAt.Load()).Sub(e.created))
		obs("init", time.Duration(out.durationMs*float64(time.Millisecond)))
	}
	if e.cfg.Initialised != nil {
		e.cfg.Initialised(e.initAt)
	}
}

// readLoop dispatches the agent's frames.
func (e *Environment) readLoop() {
	// resulted is the request id of the last Result: parts of it that come
	// after (the runtime was still writing when it was killed) are late.
	var resulted string
	for {
		f, err := e.conn.Receive()
		if err != nil {
			e.markDead("agent connection closed")
			return
		}
		switch f.Type {
		case agentproto.TReady:
			e.readyAt.Store(time.Now().UnixNano())
		case agentproto.TLog:
			var l agentproto.Log
			_ = f.Decode(&l)
			e.output(l.Stream, f.Body)
		case agentproto.TInitDone:
			var d agentproto.InitDone
			_ = f.Decode(&d)
			e.initOver(initOutcome{ok: true, durationMs: d.DurationMs})
		case agentproto.TInitError:
			var ie agentproto.InitError
			_ = f.Decode(&ie)
			e.initOver(initOutcome{errType: ie.ErrorType, payload: f.Body, durationMs: ie.DurationMs})
		case agentproto.TResult:
			r := &result{body: f.Body}
			_ = f.Decode(&r.hdr)
			resulted = r.hdr.RequestID
			select {
			case e.results <- r:
			default:
				e.log.Warn("result without an invocation", "request_id", r.hdr.RequestID)
			}
		case agentproto.TChunk:
			var c agentproto.Chunk
			_ = f.Decode(&c)
			// The part goes to the invoking goroutine (await), which
			// writes it to the caller: never this reader, which a slow
			// caller would stall, nor after the invocation is over. A
			// part that outlived its invocation has no one to go to.
			if sk := e.stream.Load(); sk != nil && sk.requestID == c.RequestID && c.RequestID != resulted {
				select {
				case sk.parts <- streamPart{contentType: c.ContentType, b: f.Body}:
				case <-sk.over:
				case <-e.dead:
				}
			}
		case agentproto.TIdle:
			var id agentproto.Idle
			_ = f.Decode(&id)
			e.idleFor.Store(&id.RequestID)
		case agentproto.TShutdownDone:
			select {
			case e.shutdown <- struct{}{}:
			default:
			}
		}
	}
}

// initOver writes what the init outcome adds to the log, in order with
// the agent's frames: a failed init's INIT_REPORT, then the START of a
// first invocation sent with Start. It then hands the outcome to init.
func (e *Environment) initOver(out initOutcome) {
	if !out.ok {
		e.platform(fmt.Sprintf("INIT_REPORT Init Duration: %.2f ms\tPhase: init\tStatus: error\tError Type: %s", out.durationMs, out.errType))
	}
	if req := e.queued.Swap(nil); req != nil {
		e.startLog(req)
	}
	select {
	case e.initDone <- out:
	default:
		e.log.Warn("init outcome without an init", "error_type", out.errType)
	}
}

func (e *Environment) markDead(cause string) {
	e.deadOnce.Do(func() {
		e.deadCause.Store(cause)
		e.state.Store(int32(Dead))
		close(e.dead)
	})
}

// DeadCause says why the environment died ("" while alive).
func (e *Environment) DeadCause() string { s, _ := e.deadCause.Load().(string); return s }

// State returns the current state.
func (e *Environment) State() State { return State(e.state.Load()) }

// Dead is closed when the environment can serve no more invocations.
func (e *Environment) Dead() <-chan struct{} { return e.dead }

// Created is when the environment started.
func (e *Environment) Created() time.Time { return e.created }

// LastUsed is when the environment last finished an invocation.
func (e *Environment) LastUsed() time.Time { return time.Unix(0, e.lastUsed.Load()) }

// Uses counts finished invocations.
func (e *Environment) Uses() int64 { return e.uses.Load() }

// Request is one invocation.
type Request struct {
	RequestID          string
	Payload            []byte
	InvokedFunctionARN string
	ClientContext      string
	CognitoIdentity    string
	TraceID            string
	TenantID           string
	Timeout            time.Duration
	// Tail asks for the invocation's last 4 KB of log.
	Tail bool
	// Stream, when set, receives a response the runtime streams as it
	// arrives (InvokeWithResponseStream), with the function's content
	// type; the Response then has no payload, only the outcome. It is
	// called on the goroutine that called Invoke, before Invoke returns,
	// never after: a slow Stream holds back the runtime (its writes wait)
	// without counting against its timeout, and one that fails gets no
	// more parts.
	Stream func(contentType string, part []byte) error
}

// streamTo directs the streamed parts of req to await until the returned
// function is called, once req is over.
func (e *Environment) streamTo(req *Request) func() {
	if req.Stream == nil {
		return func() {}
	}
	sk := &streamSink{requestID: req.RequestID, fn: req.Stream, parts: make(chan streamPart, 16), over: make(chan struct{})}
	e.stream.Store(sk)
	return func() {
		e.stream.Store(nil)
		close(sk.over)
	}
}

// streamSink is the Stream of the invocation in flight: the reader queues
// its parts, await passes them on.
type streamSink struct {
	requestID string
	fn        func(contentType string, part []byte) error
	parts     chan streamPart
	over      chan struct{} // closed when the invocation is over
	gone      bool          // fn failed: the rest is dropped (await only)
	// writing is the time spent in fn past the invocation's deadline
	// (await only): the agent's Result may wait behind parts the caller
	// has not taken, and that time is the caller's, not the function's,
	// so the watchdog does not count it. Writing before the deadline
	// holds nothing back: the agent sends its Result when it is done.
	writing  time.Duration
	deadline time.Time
}

type streamPart struct {
	contentType string
	b           []byte
}

// pass hands one part to the caller's Stream.
func (sk *streamSink) pass(p streamPart) {
	if sk.gone {
		return
	}
	t := time.Now()
	if sk.fn(p.contentType, p.b) != nil {
		sk.gone = true
	}
	if d := time.Since(later(t, sk.deadline)); d > 0 {
		sk.writing += d
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// drain passes on the parts already queued: those the agent sent ahead of
// the result, which the reader queued before it.
func (sk *streamSink) drain() {
	for {
		select {
		case p := <-sk.parts:
			sk.pass(p)
		default:
			return
		}
	}
}

// Response is an invocation's outcome.
type Response struct {
	Payload       []byte
	ContentType   string
	FunctionError bool
	ErrorType     string
	// LogTail is the last 4 KB of the invocation's log when Tail was asked.
	LogTail []byte
	// Reset means the runtime was restarted (timeout, exit); Fatal means the
	// environment is gone and must not be used again.
	Reset, Fatal bool
	Duration     time.Duration
	InitDuration float64
	MaxMemoryMB  uint64
}

// ErrDead is returned when invoking an environment that has died.
var ErrDead = errors.New("env: environment is dead")

// tailLimit is what X-Amz-Log-Result carries: the last 4 KB.
const tailLimit = 4096

// tailBuffer keeps the last tailLimit bytes written to it, in at most
// twice that much memory (plus one write) whatever an invocation logs.
type tailBuffer struct{ b []byte }

// addTail writes p (log bytes or a line) to t.
func addTail[S string | []byte](t *tailBuffer, p S) {
	if len(p) >= tailLimit {
		t.b = append(t.b[:0], p[len(p)-tailLimit:]...)
		return
	}
	t.b = append(t.b, p...)
	t.trim()
}

func (t *tailBuffer) trim() {
	if len(t.b) > 2*tailLimit {
		t.b = t.b[:copy(t.b, t.b[len(t.b)-tailLimit:])]
	}
}

// bytes returns the last tailLimit bytes (shared with the buffer).
func (t *tailBuffer) bytes() []byte {
	if len(t.b) > tailLimit {
		return t.b[len(t.b)-tailLimit:]
	}
	return t.b
}

// Invoke runs one invocation. The caller must not invoke concurrently.
func (e *Environment) Invoke(ctx context.Context, req *Request) (*Response, error) {
	if !e.state.CompareAndSwap(int32(Idle), int32(Busy)) {
		return nil, ErrDead
	}
	if e.reporting != nil {
		// The previous invocation's REPORT precedes this START.
		<-e.reporting
		e.reporting = nil
	}
	e.current.Store(&req.RequestID)
	e.freezeMu.Lock()
	if e.frozen {
		if err := e.sb.Thaw(); err != nil {
			e.freezeMu.Unlock()
			e.markDead("thaw: " + err.Error())
			return nil, ErrDead
		}
		e.frozen = false
	}
	e.freezeMu.Unlock()
	if e.placed != nil {
		e.placed.InvocationStarted()
		defer e.placed.InvocationEnded()
	}
	start := time.Now()
	e.startLog(req)
	defer e.streamTo(req)()
	if err := e.conn.Send(agentproto.TInvoke, invokeFrame(req, start.Add(req.Timeout).UnixMilli()), req.Payload); err != nil {
		e.markDead("send invoke: " + err.Error())
		return nil, ErrDead
	}
	return e.await(req, start), nil
}

// startLog begins req's part of the log: its tail, if asked, and START.
func (e *Environment) startLog(req *Request) {
	e.logMu.Lock()
	e.tail = nil
	if req.Tail {
		e.tail = &tailBuffer{}
	}
	e.logMu.Unlock()
	e.platform("START RequestId: " + req.RequestID + " Version: " + e.cfg.ExecutedVersion)
}

// invokeFrame is req for the agent; deadlineMs 0 lets the agent start the
// timeout itself.
func invokeFrame(req *Request, deadlineMs int64) *agentproto.Invoke {
	return &agentproto.Invoke{
		RequestID: req.RequestID, DeadlineMs: deadlineMs, InvokedFunctionARN: req.InvokedFunctionARN,
		TraceID: req.TraceID, ClientContext: req.ClientContext, CognitoIdentity: req.CognitoIdentity,
		TenantID: req.TenantID, TimeoutMs: req.Timeout.Milliseconds(), Stream: req.Stream != nil,
	}
}

// await waits for the result of req, sent at start, and ends the
// invocation.
func (e *Environment) await(req *Request, start time.Time) *Response {
	// The agent enforces the deadline; the watchdog only catches an agent
	// that cannot (frozen, wedged, killed).
	watchdog := time.NewTimer(time.Until(start.Add(req.Timeout)) + 3*time.Second)
	defer watchdog.Stop()
	resp := &Response{}
	if obs := e.cfg.ObservePhase; obs != nil && e.uses.Load() == 0 {
		defer func() { obs("first_invoke", time.Since(start)) }()
	}
	// Parts of a streamed response come ahead of the result; they are
	// written to the caller here, on the invoking goroutine.
	var parts chan streamPart
	sk := e.stream.Load()
	if sk != nil && sk.requestID == req.RequestID {
		parts = sk.parts
		sk.deadline = start.Add(req.Timeout)
	} else {
		sk = nil
	}
	var r *result
	var credited time.Duration // of sk.writing, added to the watchdog
wait:
	for {
		select {
		case p := <-parts:
			sk.pass(p)
			continue
		case r = <-e.results:
		case <-e.dead:
		case <-watchdog.C:
			// Time a slow caller held this goroutine in its writes is not
			// the function's: the agent's result may be queued behind the
			// parts not yet passed on.
			if sk != nil && sk.writing > credited {
				watchdog.Reset(sk.writing - credited)
				credited = sk.writing
				continue
			}
			select {
			case r = <-e.results:
			default:
				e.markDead("watchdog: no result after the deadline")
				resp.Fatal = true
				resp.FunctionError, resp.ErrorType = true, "Sandbox.Timedout"
				resp.Payload = platformError("Sandbox.Timedout", req.RequestID, fmt.Sprintf("Task timed out after %.2f seconds", req.Timeout.Seconds()))
			}
		}
		break wait
	}
	if sk != nil {
		sk.drain()
	}
	switch {
	case r != nil:
		resp.Payload, resp.ContentType = r.body, r.hdr.ContentType
		resp.FunctionError, resp.ErrorType, resp.Reset = r.hdr.FunctionError, r.hdr.ErrorType, r.hdr.Reset
		resp.InitDuration = r.hdr.InitDurationMs
		if r.hdr.InitDurationMs > 0 && !r.hdr.Reset {
			// The runtime was started again (after a timeout or crash):
			// it ran its init unthrottled; now it gets its quota back.
			if err := e.sb.AfterInit(); err != nil {
				e.log.Warn("re-applying the CPU quota", "err", err)
			}
		}
	case !resp.Fatal: // dead
		resp.Fatal = true
		e.fatalPayload(resp, req)
	}
	resp.Duration = time.Since(start)
	cold := e.coldInit // REPORT shows only the cold start's init
	if cold > 0 {
		resp.InitDuration = cold
		e.coldInit = 0
	}
	if !resp.FunctionError && !resp.Fatal && !req.Tail {
		// A successful invocation's outcome cannot change any more (only
		// a failed one can turn out to be an OOM kill), so the caller gets
		// it now, and the memory peak (cgroup file reads: a good part of a
		// warm invocation's host CPU) and END/REPORT follow. The next
		// invocation waits for them before its START.
		e.uses.Add(1)
		e.lastUsed.Store(time.Now().UnixNano())
		done := make(chan struct{})
		e.reporting = done
		id, d := req.RequestID, resp.Duration
		e.state.Store(int32(Idle))
		go func() {
			defer close(done)
			var peak uint64
			if p, err := sandbox.MemoryPeak(e.sb); err == nil {
				peak = p >> 20
			}
			e.report(id, d, peak, cold, "")
		}()
		return resp
	}
	if st, err := e.sb.Stats(); err == nil {
		resp.MaxMemoryMB = st.MemoryPeak >> 20
		if st.OOMKilled > 0 && resp.FunctionError && (resp.ErrorType == "Runtime.ExitError" || resp.Fatal) {
			resp.ErrorType = "Runtime.OutOfMemory"
			resp.Payload = platformError("Runtime.OutOfMemory", req.RequestID, "Runtime exited with error: signal: killed")
			resp.Fatal = true // the environment is replaced after an OOM kill
		}
	}
	e.finish(req, resp, cold)
	return resp
}

// fatalPayload builds the error for an environment that died mid-invoke.
func (e *Environment) fatalPayload(resp *Response, req *Request) {
	resp.FunctionError, resp.ErrorType = true, "Runtime.ExitError"
	resp.Payload = platformError("Runtime.ExitError", req.RequestID, "Runtime exited without providing a reason")
}

// finish writes END and REPORT, collects the tail and returns the
// environment to Idle (or Dead).
func (e *Environment) finish(req *Request, resp *Response, coldInitMs float64) {
	e.report(req.RequestID, resp.Duration, resp.MaxMemoryMB, coldInitMs, resp.ErrorType)
	e.logMu.Lock()
	if e.tail != nil {
		resp.LogTail = append([]byte(nil), e.tail.bytes()...)
		e.tail = nil
	}
	e.logMu.Unlock()
	e.uses.Add(1)
	e.lastUsed.Store(time.Now().UnixNano())
	if resp.Fatal {
		e.markDead("invocation left the environment unusable: " + resp.ErrorType)
		return
	}
	e.state.Store(int32(Idle))
}

// report writes END and REPORT; initMs is the cold start's init duration
// (0 for a warm invocation).
func (e *Environment) report(requestID string, d time.Duration, maxMemMB uint64, initMs float64, errType string) {
	e.platform("END RequestId: " + requestID)
	e.platform(reportLine(requestID, d, e.cfg.MemoryMB, maxMemMB, initMs, errType))
}

// reportLine is the REPORT line, appended rather than formatted: fmt's %.2f
// was most of its cost, which every invocation pays.
func reportLine(requestID string, d time.Duration, memoryMB int, maxMemMB uint64, initMs float64, errType string) string {
	ms := float64(d.Microseconds()) / 1000
	r := make([]byte, 0, 192)
	r = append(r, "REPORT RequestId: "...)
	r = append(r, requestID...)
	r = append(r, "\tDuration: "...)
	r = strconv.AppendFloat(r, ms, 'f', 2, 64)
	r = append(r, " ms\tBilled Duration: "...)
	r = strconv.AppendInt(r, int64(math.Ceil(ms)), 10)
	r = append(r, " ms\tMemory Size: "...)
	r = strconv.AppendInt(r, int64(memoryMB), 10)
	r = append(r, " MB\tMax Memory Used: "...)
	r = strconv.AppendUint(r, max(maxMemMB, 1), 10)
	r = append(r, " MB\t"...)
	if initMs > 0 {
		r = append(r, "Init Duration: "...)
		r = strconv.AppendFloat(r, initMs, 'f', 2, 64)
		r = append(r, " ms\t"...)
	}
	switch errType {
	case "Sandbox.Timedout":
		r = append(r, "Status: timeout\t"...)
	case "Runtime.OutOfMemory":
		r = append(r, "Status: error\tError Type: Runtime.OutOfMemory\t"...)
	}
	return string(r)
}

// freezeAfter is how long an environment stays idle before it is frozen.
const freezeAfter = 200 * time.Millisecond

// Freeze arranges for the environment's processes to be stopped once it
// has been idle for freezeAfter and the agent has reported Idle (extensions
// done); the worker calls it whenever it puts the environment back.
//
// Freezing and thawing a cgroup costs milliseconds, and an invocation
// arriving meanwhile would wait for it: an environment in steady use is not
// frozen between back-to-back invocations. Nothing of the function runs
// meanwhile but what it left running, as in Lambda's brief window before
// the freeze. One timer per environment, re-armed here, keeps this free of
// a goroutine and timers per invocation.
func (e *Environment) Freeze() {
	e.freezeMu.Lock()
	defer e.freezeMu.Unlock()
	if e.freezeTimer == nil {
		e.freezeTimer = time.AfterFunc(freezeAfter, e.freezeIdle)
		return
	}
	e.freezeTimer.Reset(freezeAfter)
}

// freezeIdle freezes the environment if it is still idle.
func (e *Environment) freezeIdle() {
	e.freezeMu.Lock()
	defer e.freezeMu.Unlock()
	// The next invocation may have begun meanwhile: it thaws under the same
	// lock, so checking the state here is enough.
	if e.State() != Idle || e.frozen {
		return
	}
	if cur, idle := e.current.Load(), e.idleFor.Load(); cur != nil && (idle == nil || *idle != *cur) {
		// Extensions are still working on the last invocation: look again
		// later rather than freeze them mid-work.
		e.freezeTimer.Reset(freezeAfter)
		return
	}
	if err := e.sb.Freeze(); err == nil {
		e.frozen = true
	}
}

// Shutdown runs Lambda's shutdown sequence (SHUTDOWN event, SIGTERM,
// SIGKILL) within grace, then destroys the sandbox.
func (e *Environment) Shutdown(reason string, grace time.Duration) {
	if State(e.state.Swap(int32(Stopping))) == Dead {
		e.state.Store(int32(Dead))
		e.Destroy()
		return
	}
	e.freezeMu.Lock()
	if e.freezeTimer != nil {
		e.freezeTimer.Stop()
	}
	if e.frozen {
		_ = e.sb.Thaw()
		e.frozen = false
	}
	e.freezeMu.Unlock()
	deadline := time.Now().Add(grace)
	if err := e.conn.Send(agentproto.TShutdown, &agentproto.Shutdown{Reason: reason, DeadlineMs: deadline.UnixMilli()}, nil); err == nil {
		select {
		case <-e.shutdown:
		case <-e.dead:
		case <-time.After(grace + time.Second):
		}
	}
	e.Destroy()
}

// Destroy kills the sandbox immediately.
func (e *Environment) Destroy() {
	e.markDead("destroyed")
	_ = e.sb.Destroy()
	e.flushPartial()
	// A sink that batches publishes its last lines now rather than after
	// nubo may have closed its connection to the store.
	if f, ok := e.cfg.Logs.(interface{ Flush() }); ok {
		f.Flush()
	}
}

// output splits runtime output into log lines.
func (e *Environment) output(stream string, b []byte) {
	i := 0
	if stream == "stderr" {
		i = 1
	}
	now := time.Now()
	e.logMu.Lock()
	defer e.logMu.Unlock()
	if e.tail != nil {
		addTail(e.tail, b)
	}
	buf := append(e.partial[i], b...)
	for {
		nl := bytes.IndexByte(buf, '\n')
		if nl < 0 {
			break
		}
		e.emit(buf[:nl], now)
		buf = buf[nl+1:]
	}
	// A runaway line without newlines is cut at 256 KB, as CloudWatch does.
	if len(buf) > 256<<10 {
		e.emit(buf, now)
		buf = nil
	}
	e.partial[i] = append([]byte(nil), buf...)
}

func (e *Environment) flushPartial() {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	for i, p := range e.partial {
		if len(p) > 0 {
			e.emit(p, time.Now())
			e.partial[i] = nil
		}
	}
}

func (e *Environment) emit(line []byte, t time.Time) {
	if e.cfg.Logs != nil {
		e.cfg.Logs.Append(line, t)
	}
}

// platform writes a line of nubo's own (START, END, REPORT, ...).
func (e *Environment) platform(line string) {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	// Unterminated runtime output goes first so lines stay in order.
	for i, p := range e.partial {
		if len(p) > 0 {
			e.emit(p, time.Now())
			if e.tail != nil {
				addTail(e.tail, "\n")
			}
			e.partial[i] = nil
		}
	}
	if e.tail != nil {
		addTail(e.tail, line)
		addTail(e.tail, "\n")
	}
	e.emit([]byte(line), time.Now())
}

func platformError(errType, requestID, msg string) []byte {
	b, _ := json.Marshal(struct {
		ErrorType    string `json:"errorType"`
		ErrorMessage string `json:"errorMessage"`
	}{errType, "RequestId: " + requestID + " Error: " + msg})
	return b
}
