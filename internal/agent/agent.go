// Package agent runs an execution environment's runtime and extensions
// for the host (package env), over the agentproto connection: it serves
// the Runtime and Extensions APIs, starts the extensions and the runtime,
// relays invocations and output, and enforces the function timeout.
//
// It runs in one of two shapes:
//
//   - whole (Run), as the first process of a microVM's sandbox or of the
//     process backend: one agent does everything inside;
//   - split (Keep and Supervise), for a namespace sandbox: inside, as the
//     sandbox's PID 1, the keeper only starts, signals and reaps
//     processes; the supervisor runs in nubo serve, serving the Runtime
//     API on a listener the keeper made in the sandbox's network
//     namespace and handed over. No process stands between nubo serve and
//     the runtime (see keeper.go).
//
// Lifecycle (one agent per environment):
//
//	Ready → (Start) → Init ─ok→ Idle ⇄ Invoking → … → (Shutdown) → Done
//	                     └fail→ NeedsInit: the next Invoke runs init first,
//	                            under the function timeout, as Lambda does
//
// A timeout, a runtime exit or a failed init kills the runtime's process
// group and marks the runtime for a new init before the next invocation;
// extensions and /tmp survive it.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/rawio"
	"github.com/nubo-dev/nubo/internal/runtimeapi"
)

// Agent is one environment's agent: its supervising half, which serves
// the Runtime API and runs the phases, whichever process it runs in.
type Agent struct {
	conn  *agentproto.Conn
	log   *slog.Logger
	start agentproto.Start
	rapi  *runtimeapi.Server
	// procs starts the runtime and extensions: the agent's own reaper
	// (Run), or the sandbox's keeper (Supervise).
	procs procHost
	// out relays the children's output; nil until the pipes exist.
	out *output
	// listen makes the Runtime API's listener for Start's address.
	listen func(addr string) (net.Listener, error)
	// listExtensions lists the external extensions in a directory as the
	// sandbox sees it.
	listExtensions func(dir string) ([]string, error)
	// apiLog is the Runtime API's log: what a function's requests make it
	// say (see Supervise).
	apiLog *slog.Logger

	rt       *proc
	exts     []*proc
	needInit bool
	// idle sends Idle for idleID (the last invocation) after
	// agentproto.IdleDelay unless the next Invoke clears it first.
	idle   *time.Timer
	idleMu sync.Mutex
	idleID string
}

// procHost starts the agent's children, in their own process groups, with
// the output pipes as their stdout and stderr.
type procHost interface {
	spawn(name string, argv, env []string, dir string, uid, gid int) (*proc, error)
}

// Run serves one environment over rw until Shutdown or until the host goes
// away, as the environment's only agent: it starts and reaps the runtime
// and extensions itself. It returns nil after a clean shutdown.
func Run(rw io.ReadWriteCloser, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := becomeAgent(); err != nil {
		return err
	}
	local := &localProcs{reap: newReaper()}
	a := &Agent{conn: agentproto.NewConn(rw), log: log, apiLog: log, procs: local, listExtensions: listExtensions}
	defer a.killAll()
	if err := warmUp(log); err != nil {
		log.Debug("warm-up", "err", err)
	}
	if err := local.reap.warm(); err != nil {
		log.Debug("warm-up of process starts", "err", err)
	}
	// The Runtime API listens before Start where the address is known
	// ahead (RuntimeAPIEnv).
	var preLn net.Listener
	if addr := os.Getenv(RuntimeAPIEnv); addr != "" {
		os.Unsetenv(RuntimeAPIEnv)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Debug("runtime api", "err", err) // setup tries again
		}
		preLn = ln
	}
	a.listen = func(addr string) (net.Listener, error) {
		if preLn != nil && preLn.Addr().String() == addr {
			return preLn, nil
		}
		if preLn != nil {
			preLn.Close()
		}
		return net.Listen("tcp", addr)
	}
	if err := local.startOutput(a); err != nil {
		return fmt.Errorf("agent: output pipes: %w", err)
	}
	if err := a.conn.Send(agentproto.TReady, nil, nil); err != nil {
		return err
	}
	return a.serve()
}

// becomeAgent sets up the process the agent (or the keeper) runs in.
func becomeAgent() error {
	// The function runs as the agent's own uid: without this, it could
	// open /proc/1/mem and rewrite the agent (ptrace access checks pass for
	// a dumpable process of the same uid; seccomp cannot see a plain open).
	// Non-dumpable, the agent's /proc files belong to the namespace's root.
	// The runtime it execs is dumpable again, as exec resets the flag.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("agent: set non-dumpable: %w", err)
	}
	// The agent's work is a chain of hand-offs (frame in, HTTP out, HTTP in,
	// frame out) that never runs in parallel. With a second P, every
	// goroutine wake-up also wakes an idle thread to look for work, and
	// on a virtual machine each of those thread switches costs more than
	// the work itself (measured: fewer context switches and less CPU per
	// invocation with one; see docs/performance.md, "Warm path, session 2").
	runtime.GOMAXPROCS(1)
	// Nothing above the agent reaches the function: every descriptor it
	// inherited beyond stdin, stdout and stderr (the connection to the host
	// among them) closes when the runtime or an extension is exec'd. Those
	// it opens itself are close-on-exec already.
	CloseOnExecFrom(3)
	return nil
}

// serve waits for Start, sets up, runs the init phase and then the
// invocations, until Shutdown or the end of the connection.
func (a *Agent) serve() error {
	f, err := a.conn.Receive()
	if err != nil {
		return fmt.Errorf("agent: waiting for Start: %w", err)
	}
	if f.Type != agentproto.TStart {
		return fmt.Errorf("agent: first frame is %s, want Start", f.Type)
	}
	tStart := time.Now()
	if err := f.Decode(&a.start); err != nil {
		return fmt.Errorf("agent: Start: %w", err)
	}
	if err := a.setup(); err != nil {
		a.sendInitError("Runtime.Unknown", 0, err.Error())
		return err
	}
	tSetup := time.Now()
	a.initPhase(context.Background(), time.Duration(a.start.InitTimeoutMs)*time.Millisecond, "")
	a.log.Debug("init phase", "setup", tSetup.Sub(tStart), "init", time.Since(tSetup))
	for {
		f, err := a.conn.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil // host closed: the environment is being destroyed
			}
			return err
		}
		switch f.Type {
		case agentproto.TInvoke:
			a.cancelIdle()
			var inv agentproto.Invoke
			if err := f.Decode(&inv); err != nil {
				return fmt.Errorf("agent: Invoke: %w", err)
			}
			a.invoke(&inv, f.Body)
		case agentproto.TShutdown:
			a.cancelIdle()
			var sd agentproto.Shutdown
			_ = f.Decode(&sd)
			a.shutdown(&sd)
			return a.conn.Send(agentproto.TShutdownDone, nil, nil)
		default:
			a.log.Warn("unexpected frame", "type", f.Type)
		}
	}
}

// partGate sends the parts of one invocation's streamed response until
// close, which comes before its Result: a part the Runtime API is still
// reading from a runtime killed by a timeout must not follow the Result.
type partGate struct {
	a         *Agent
	requestID string
	mu        sync.Mutex
	closed    bool
}

func (g *partGate) send(contentType string, part []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errStreamOver
	}
	return g.a.conn.Send(agentproto.TChunk, &agentproto.Chunk{RequestID: g.requestID, ContentType: contentType}, part)
}

// close ends the parts; a nil gate (no streaming) has none.
func (g *partGate) close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// errStreamOver refuses a part of a streamed response that comes after
// its invocation's Result.
var errStreamOver = errors.New("agent: the invocation is over")

// DebugEnv, set to anything in the agent's environment, gives the agent
// a debug log on its stderr, and the Runtime API a supervisor serves (in
// nubo serve) a log of what clients make it say.
const DebugEnv = "NUBO_AGENT_DEBUG"

// HostConn is the agent's (or keeper's) connection to the host on fd, a
// socket: read without being in the poller (rawio.Quiet), so that the
// host's reads of it do not wake this process, or as an *os.File where
// that cannot be.
func HostConn(fd int, log *slog.Logger) io.ReadWriteCloser {
	q, err := rawio.NewQuiet(fd, "host-conn")
	if err == nil {
		return q
	}
	log.Debug("the host connection is read in the poller", "err", err)
	return os.NewFile(uintptr(fd), "host-conn")
}

// RuntimeAPIEnv, set in the agent's environment, names the address the
// Runtime API will listen on (Start's RuntimeAPI), so the agent (or the
// keeper) listens before Start arrives.
const RuntimeAPIEnv = "NUBO_RUNTIME_API"

// localProcs is the agent's own children: it forks them and reaps them.
type localProcs struct {
	reap *reaper
	// pipes are the write ends of the output pipes (stdout, stderr), which
	// every child shares.
	pipes [2]*os.File
}

// startOutput makes the pipes the runtime and extensions write to and
// starts relaying them to the host.
func (l *localProcs) startOutput(a *Agent) error {
	var r [2]*os.File
	for i := range r {
		rf, wf, err := os.Pipe()
		if err != nil {
			for j := range i {
				r[j].Close()
				l.pipes[j].Close()
				l.pipes[j] = nil
			}
			return err
		}
		r[i], l.pipes[i] = rf, wf
	}
	out, err := newOutput(a.conn, r)
	if err != nil {
		return err
	}
	a.out = out
	return nil
}

func (l *localProcs) spawn(name string, argv, env []string, dir string, uid, gid int) (*proc, error) {
	return l.reap.start(procSpec{name: name, argv: argv, env: env, dir: dir, uid: uid, gid: gid,
		stdout: l.pipes[0], stderr: l.pipes[1]})
}

// setup starts the Runtime API and the extensions.
func (a *Agent) setup() error {
	exts, err := a.listExtensions(a.start.ExtensionsDir)
	if err != nil {
		return err
	}
	names := make([]string, len(exts))
	for i, e := range exts {
		names[i] = filepath.Base(e)
	}
	a.rapi = runtimeapi.New(runtimeapi.Options{
		FunctionName: a.start.FunctionName, FunctionVersion: a.start.FunctionVersion,
		Handler: a.start.Handler, AccountID: a.start.AccountID, Extensions: names, Logger: a.apiLog,
		MaxConns: maxRuntimeAPIConns, OnPanic: a.broken,
	})
	ln, err := a.listen(a.start.RuntimeAPI)
	if err != nil {
		return fmt.Errorf("runtime api: %w", err)
	}
	// Serve reads and writes the runtime's connections raw (package
	// rawio), as the agent does the host's (agentproto) and the output
	// pipes (readChunk).
	go a.rapi.Serve(context.Background(), ln)
	for _, path := range exts {
		p, err := a.procs.spawn(filepath.Base(path), []string{path}, a.start.Env, "/", a.start.UID, a.start.GID)
		if err != nil {
			return fmt.Errorf("extension %s: %w", filepath.Base(path), err)
		}
		a.exts = append(a.exts, p)
		go func(p *proc) {
			<-p.done
			a.rapi.ExtensionExited(p.name, p.reason)
		}(p)
	}
	return nil
}

// listExtensions returns the executables in dir in lexical order (Lambda
// starts extensions in parallel; order only matters for log readability).
func listExtensions(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

// startRuntime launches the runtime process.
func (a *Agent) startRuntime() error {
	s := a.start
	p, err := a.procs.spawn("runtime", s.Argv, s.Env, s.Dir, s.UID, s.GID)
	if err != nil {
		return err
	}
	a.rt = p
	p.reported = make(chan struct{})
	go func() {
		<-p.done
		a.rapi.RuntimeExited(p.reason)
		close(p.reported)
	}()
	return nil
}

// stopRuntime kills the runtime's process group and readies the Runtime API
// for a new one.
func (a *Agent) stopRuntime() {
	if a.rt != nil {
		a.rt.signal(syscall.SIGKILL)
		// The exit must have reached the Runtime API before the reset:
		// reported late, it would mark the next runtime process as exited.
		select {
		case <-a.rt.reported:
		case <-time.After(5 * time.Second):
			a.log.Error("runtime did not die after SIGKILL", "pid", a.rt.pid)
		}
		a.rt = nil
	}
	a.rapi.ResetRuntime()
	a.needInit = true
}

// initResult is the outcome of an init phase.
type initResult struct {
	errType  string
	payload  []byte
	duration time.Duration
}

// runInit starts the runtime and waits until it (and every extension) is
// ready, or fails.
func (a *Agent) runInit(ctx context.Context, requestID string) *initResult {
	t0 := time.Now()
	res := &initResult{}
	if a.start.InitTimeoutMs > 0 && requestID == "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(a.start.InitTimeoutMs)*time.Millisecond)
		defer cancel()
	}
	err := a.rapi.WaitExtensionsRegistered(ctx)
	if err == nil {
		if err = a.startRuntime(); err != nil {
			res.errType, res.payload = "Runtime.InvalidEntrypoint", platformError("Runtime.InvalidEntrypoint", requestID, err.Error())
		} else {
			err = a.rapi.WaitInit(ctx)
		}
	}
	res.duration = time.Since(t0)
	if err == nil || res.errType != "" {
		if res.errType != "" {
			a.stopRuntime()
		} else {
			a.needInit = false
		}
		return res
	}
	var ie *runtimeapi.InitError
	var ee *runtimeapi.RuntimeExitError
	switch {
	case errors.As(err, &ie):
		res.errType, res.payload = ie.Type, ie.Payload
	case errors.As(err, &ee):
		res.errType = "Runtime.ExitError"
		res.payload = platformError(res.errType, requestID, ee.Error())
	case errors.Is(err, context.DeadlineExceeded):
		res.errType = "Sandbox.Timedout"
		res.payload = platformError(res.errType, requestID, fmt.Sprintf("Task timed out after %.2f seconds", res.duration.Seconds()))
	default:
		res.errType = "Runtime.Unknown"
		res.payload = platformError(res.errType, requestID, err.Error())
	}
	a.stopRuntime()
	return res
}

// initPhase runs the first init and reports it to the host.
func (a *Agent) initPhase(ctx context.Context, timeout time.Duration, requestID string) {
	res := a.runInit(ctx, requestID)
	ms := float64(res.duration.Microseconds()) / 1000
	if res.errType == "" {
		_ = a.conn.Send(agentproto.TInitDone, &agentproto.InitDone{DurationMs: ms}, nil)
		return
	}
	_ = a.conn.Send(agentproto.TInitError, &agentproto.InitError{ErrorType: res.errType, DurationMs: ms}, res.payload)
}

func (a *Agent) sendInitError(errType string, d time.Duration, msg string) {
	_ = a.conn.Send(agentproto.TInitError, &agentproto.InitError{ErrorType: errType, DurationMs: float64(d.Microseconds()) / 1000},
		platformError(errType, "", msg))
}

// platformError is the payload of an error nubo produces on the runtime's
// behalf, worded as AWS words it (LAMBDA-WIRE.md §1).
func platformError(errType, requestID, msg string) []byte {
	m := msg
	if requestID != "" {
		m = "RequestId: " + requestID + " Error: " + msg
	}
	b, _ := json.Marshal(struct {
		ErrorType    string `json:"errorType"`
		ErrorMessage string `json:"errorMessage"`
	}{errType, m})
	return b
}

// invoke runs one invocation and sends its Result.
func (a *Agent) invoke(inv *agentproto.Invoke, payload []byte) {
	if inv.DeadlineMs == 0 {
		// Sent along with Start: the timeout starts now, after init.
		inv.DeadlineMs = time.Now().Add(time.Duration(inv.TimeoutMs) * time.Millisecond).UnixMilli()
	}
	deadline := time.UnixMilli(inv.DeadlineMs)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	res := &agentproto.Result{RequestID: inv.RequestID}
	var body []byte
	if !a.needInit && a.rt != nil && !a.rt.alive() {
		// Died between invocations: this invocation runs a new init.
		a.stopRuntime()
	}
	if a.needInit {
		ir := a.runInit(ctx, inv.RequestID)
		res.InitDurationMs = float64(ir.duration.Microseconds()) / 1000
		if ir.errType != "" {
			if ir.errType == "Sandbox.Timedout" {
				ir.payload = timeoutPayload(inv)
			}
			res.FunctionError, res.ErrorType, res.Reset = true, ir.errType, true
			a.out.flush()
			_ = a.conn.Send(agentproto.TResult, res, ir.payload)
			a.idleLater(inv.RequestID)
			return
		}
	}
	rinv := &runtimeapi.Invocation{
		RequestID: inv.RequestID, Payload: payload, DeadlineMs: inv.DeadlineMs,
		InvokedFunctionARN: inv.InvokedFunctionARN, TraceID: inv.TraceID, ClientContext: inv.ClientContext,
		CognitoIdentity: inv.CognitoIdentity, TenantID: inv.TenantID,
	}
	var parts *partGate
	if inv.Stream {
		parts = &partGate{a: a, requestID: inv.RequestID}
		rinv.StreamLimit = agentproto.MaxStreamedResponse
		rinv.Stream = parts.send
	}
	out, err := a.rapi.Invoke(ctx, rinv)
	parts.close()
	var ee *runtimeapi.RuntimeExitError
	switch {
	case err == nil:
		body = out.Payload
		res.FunctionError, res.ErrorType, res.ContentType = out.FunctionError, out.ErrorType, out.ContentType
	case errors.Is(err, context.DeadlineExceeded):
		a.stopRuntime()
		body = timeoutPayload(inv)
		res.FunctionError, res.ErrorType, res.Reset = true, "Sandbox.Timedout", true
	case errors.As(err, &ee):
		a.stopRuntime()
		res.FunctionError, res.ErrorType, res.Reset = true, "Runtime.ExitError", true
		body = platformError(res.ErrorType, inv.RequestID, ee.Error())
	default:
		a.stopRuntime()
		res.FunctionError, res.ErrorType, res.Reset = true, "Sandbox.Failure", true
		body = platformError(res.ErrorType, inv.RequestID, err.Error())
	}
	a.out.flush()
	_ = a.conn.Send(agentproto.TResult, res, body)
	if err == nil {
		// The invoke phase ends when extensions are done too. A runtime
		// that exits after answering (aws-lambda-go does after a panic and
		// after a refused oversized response) is replaced by a new init
		// before the next invocation, not reported as that one's failure.
		var ee *runtimeapi.RuntimeExitError
		if werr := a.rapi.WaitIdle(ctx); errors.As(werr, &ee) {
			a.stopRuntime()
		}
	}
	a.idleLater(inv.RequestID)
}

// idleLater sends Idle for requestID after agentproto.IdleDelay, unless the
// next Invoke arrives first (see agentproto.IdleDelay).
func (a *Agent) idleLater(requestID string) {
	a.idleMu.Lock()
	a.idleID = requestID
	a.idleMu.Unlock()
	if a.idle == nil {
		a.idle = time.AfterFunc(agentproto.IdleDelay, a.sendIdle)
		return
	}
	a.idle.Reset(agentproto.IdleDelay)
}

// cancelIdle drops a pending Idle. One already on its way is harmless: it
// names the invocation it concludes.
func (a *Agent) cancelIdle() {
	if a.idle == nil {
		return
	}
	a.idle.Stop()
	a.idleMu.Lock()
	a.idleID = ""
	a.idleMu.Unlock()
}

func (a *Agent) sendIdle() {
	a.idleMu.Lock()
	id := a.idleID
	a.idleID = ""
	a.idleMu.Unlock()
	if id != "" {
		_ = a.conn.Send(agentproto.TIdle, &agentproto.Idle{RequestID: id}, nil)
	}
}

func timeoutPayload(inv *agentproto.Invoke) []byte {
	return platformError("Sandbox.Timedout", inv.RequestID, fmt.Sprintf("Task timed out after %.2f seconds", float64(inv.TimeoutMs)/1000))
}

// shutdown runs Lambda's shutdown sequence: SHUTDOWN to extensions, then
// SIGTERM to everything, then SIGKILL once the deadline passes.
func (a *Agent) shutdown(sd *agentproto.Shutdown) {
	deadline := time.UnixMilli(sd.DeadlineMs)
	if sd.DeadlineMs == 0 {
		deadline = time.Now().Add(2 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	reason := sd.Reason
	if reason == "" {
		reason = "spindown"
	}
	_ = a.rapi.Shutdown(ctx, reason, deadline)
	procs := append([]*proc{}, a.exts...)
	if a.rt != nil {
		procs = append(procs, a.rt)
	}
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
		}
	}
	a.killAll()
	a.out.flush()
}

// killAll SIGKILLs every child still alive.
func (a *Agent) killAll() {
	if a.rt != nil {
		a.rt.signal(syscall.SIGKILL)
	}
	for _, p := range a.exts {
		p.signal(syscall.SIGKILL)
	}
}

// CloseOnExecFrom marks every descriptor from fd up close-on-exec: what a
// process inherited then never reaches the programs it starts. The agent
// uses it, and so does nubo's sandbox spawner.
func CloseOnExecFrom(fd int) {
	if err := unix.CloseRange(uint(fd), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	// Before Linux 5.11: one by one.
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= fd {
			unix.FcntlInt(uintptr(n), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// broken ends the environment after its Runtime API panicked serving a
// connection: the host sees the agent's connection end and replaces it.
func (a *Agent) broken(v any) {
	a.log.Error("runtime api panicked; ending the environment", "panic", v)
	_ = a.conn.Close()
}

// maxRuntimeAPIConns bounds the Runtime API's connections: the runtime
// keeps one or two, each of at most ten extensions two more.
const maxRuntimeAPIConns = 64
