// Package worker keeps the pools of execution environments on this node and
// places every invocation in one: a warm idle environment of the same
// function version and configuration when there is one (most recently used
// first), a new one otherwise.
//
// Invariants:
//   - an environment serves one invocation at a time, and only invocations
//     of the account, function version and configuration it was made for
//     (its pool key, see key);
//   - admission is checked before an environment is taken or made: the
//     account's concurrency limit, the function's reserved concurrency, and
//     the node's memory capacity (idle environments of other functions are
//     evicted, least recently used first, before refusing);
//   - idle environments are reaped after IdleTimeout, every environment is
//     retired after MaxLifetime, and environments of a configuration that is
//     no longer current retire once their invocation ends.
//
// Lock order: Pool.mu, then nothing (environments are driven outside it).
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/codecache"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/procs"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// LogOpener returns where an environment's log lines go.
type LogOpener func(account, logGroup, logStream string) env.LogSink

// Config configures a Pool.
type Config struct {
	Backend sandbox.Backend
	Code    *codecache.Cache
	// Procs counts the invocations under way, from admission (those
	// waiting for an environment count too) to the answer: many at once
	// widen GOMAXPROCS (package procs). nil counts nothing.
	Procs    *procs.Governor
	Runtimes []runtimes.Runtime
	// RuntimeDir holds nubo's runtime interface clients on the host.
	RuntimeDir string
	Region     string

	AccountConcurrency int
	// Ledger is the node's memory budget, shared with backends that charge
	// it themselves (sandbox.Charger); when nil, one of CapacityMB is made.
	// The pool charges every other environment's MemorySize to it.
	Ledger *sandbox.Ledger
	// CapacityMB bounds the sum of MemorySize over live environments when
	// there is no Ledger.
	CapacityMB  int
	IdleTimeout time.Duration
	MaxLifetime time.Duration
	InitTimeout time.Duration
	// ShutdownGrace is how long the runtime gets after SIGTERM.
	ShutdownGrace time.Duration
	Logs          LogOpener
	Logger        *slog.Logger
	// NoCompile turns off compiling Python functions' sources ahead (see
	// compileAhead).
	NoCompile bool
	// ObservePhase, when set, receives the cold-start phases: "code"
	// (unpacking code and layers), "sandbox" (the backend's Create: a
	// pooled or new sandbox with the code mounted), "start" (all of an
	// environment's start), and those package env times.
	ObservePhase func(phase string, d time.Duration)
}

// Pool is the node's environments.
type Pool struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	groups   map[string]*group
	byFunc   map[string]int // account/name → busy environments
	byAcct   map[string]int // account → busy environments
	ledger   *sandbox.Ledger
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.WaitGroup
	// compiled holds the code, layers and interpreter compileAhead has
	// taken; compiling admits one compilation at a time.
	compiled  map[string]bool
	compiling chan struct{}
	lowMemory sync.Once // logs the first compile refused for memory
	// expected holds, per function (account/name), the pool key last
	// announced to the backend (see expectStart).
	expected map[string]string
}

// group is the environments of one pool key.
type group struct {
	key   string
	acct  string
	name  string
	memMB int
	// charge is what each environment of the group charges the ledger:
	// memMB, or 0 where the backend charges it (sandbox.Charger).
	charge  int
	idle    []*env.Environment // most recently used last
	busy    int
	retired bool
	// pinned is the provisioned concurrency: that many environments are
	// kept initialised and are never reaped for idleness.
	pinned int
	// starting counts environments being made for provisioning.
	starting int
}

// New starts a pool and its reaper.
func New(cfg Config) *Pool {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = 2 * time.Hour
	}
	if cfg.InitTimeout == 0 {
		cfg.InitTimeout = 10 * time.Second
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 2 * time.Second
	}
	if cfg.AccountConcurrency == 0 {
		cfg.AccountConcurrency = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ledger == nil {
		cfg.Ledger = sandbox.NewLedger(cfg.CapacityMB)
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, groups: map[string]*group{}, byFunc: map[string]int{},
		byAcct: map[string]int{}, ledger: cfg.Ledger, stop: make(chan struct{}),
		compiled: map[string]bool{}, compiling: make(chan struct{}, 1), expected: map[string]string{}}
	p.wg.Add(1)
	go p.reaper()
	return p
}

// key identifies environments that may serve each other's invocations:
// same account, function incarnation, version, code and configuration.
func key(v *control.Version) string {
	return v.Account + "/" + v.Config.FunctionName + "/" + v.Generation + "/" + v.Config.Version + "/" + v.Digest()
}

// funcKey names v's function (account/name), whatever its version.
func funcKey(v *control.Version) string { return v.Account + "/" + v.Config.FunctionName }

// Invocation is what the invoker asks the pool to run.
type Invocation struct {
	Version  *control.Version
	Reserved *int
	Request  *env.Request
}

// Invoke runs one invocation in a warm or new environment.
func (p *Pool) Invoke(ctx context.Context, inv *Invocation) (*env.Response, error) {
	p.cfg.Procs.InvocationStarted()
	defer p.cfg.Procs.InvocationEnded()
	v := inv.Version
	k := key(v)
	fk := funcKey(v)
	e, g, err := p.acquire(k, fk, v, inv.Reserved)
	if err != nil {
		return nil, err
	}
	// A closure: e may be replaced below and release must see the last one.
	defer func() { p.release(g, fk, e) }()
	var resp *env.Response
	if e == nil {
		e, resp, err = p.start(ctx, v, "on-demand", inv.Request)
	} else {
		resp, err = e.Invoke(ctx, inv.Request)
	}
	if err == env.ErrDead {
		// Died while idle (frozen and killed, OOM): one more try on a fresh
		// one, which takes over the dead one's reservation.
		p.shutdownAsync(e, "failure")
		e, resp, err = p.start(ctx, v, "on-demand", inv.Request)
	}
	return resp, err
}

// acquire admits the invocation and takes an idle environment (nil means
// "make a new one"; capacity for it is reserved).
func (p *Pool) acquire(k, fk string, v *control.Version, reserved *int) (*env.Environment, *group, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errdefs.New(errdefs.KindServiceUnavailable, "nubo is shutting down")
	}
	if reserved != nil && p.byFunc[fk] >= *reserved {
		return nil, nil, errdefs.Throttled("ReservedFunctionConcurrentInvocationLimitExceeded", "Rate Exceeded.")
	}
	if p.byAcct[v.Account] >= p.cfg.AccountConcurrency {
		return nil, nil, errdefs.Throttled("ConcurrentInvocationLimitExceeded", "Rate Exceeded.")
	}
	g := p.groups[k]
	if g == nil {
		g = p.newGroupLocked(k, v)
	}
	var e *env.Environment
	for len(g.idle) > 0 && e == nil {
		cand := g.idle[len(g.idle)-1]
		g.idle = g.idle[:len(g.idle)-1]
		if cand.State() == env.Idle {
			e = cand
		} else {
			p.ledger.Give(g.charge)
			p.shutdownAsync(cand, "failure")
		}
	}
	if e == nil {
		if !p.ledger.Take(g.charge) && !p.evictLocked(g.charge) {
			p.freeUnchargedLocked(g.charge)
			return nil, nil, errdefs.Throttled("ConcurrentInvocationLimitExceeded", "Rate Exceeded.")
		}
	}
	g.busy++
	p.byFunc[fk]++
	p.byAcct[v.Account]++
	return e, g, nil
}

// evictLocked shuts down idle environments the pool charged, least
// recently used first, until need MB can be taken from the ledger, and
// takes them; it reports whether it did. (Idle environments of a backend
// that charges the ledger itself free nothing there at once: see
// shutdownIdle.)
func (p *Pool) evictLocked(need int) bool {
	type cand struct {
		g *group
		e *env.Environment
	}
	var all []cand
	for _, g := range p.groups {
		if g.charge == 0 {
			continue
		}
		for _, e := range g.idle {
			all = append(all, cand{g, e})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].e.LastUsed().Before(all[j].e.LastUsed()) })
	for _, c := range all {
		if p.ledger.Take(need) {
			return true
		}
		p.removeIdleLocked(c.g, c.e)
		p.shutdownAsync(c.e, "spindown")
	}
	return p.ledger.Take(need)
}

// freeUnchargedLocked starts shutting down idle environments of backends
// that charge the ledger themselves, least recently used first, of need MB
// in all: their memory comes back once their backend lets it go (a VM
// stops when its last environment is gone while the ledger is pressed),
// so the invocation that found no room is throttled, and its retry finds
// it. Provisioned environments stay.
func (p *Pool) freeUnchargedLocked(need int) {
	type cand struct {
		g *group
		e *env.Environment
	}
	var all []cand
	for _, g := range p.groups {
		if g.charge > 0 || g.pinned > 0 {
			continue
		}
		for _, e := range g.idle {
			all = append(all, cand{g, e})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].e.LastUsed().Before(all[j].e.LastUsed()) })
	for _, c := range all {
		if need <= 0 {
			return
		}
		p.removeIdleLocked(c.g, c.e)
		p.dropEmptyLocked(c.g)
		p.shutdownAsync(c.e, "spindown")
		need -= c.g.memMB
	}
}

// newGroupLocked adds the group of key k, for v.
func (p *Pool) newGroupLocked(k string, v *control.Version) *group {
	g := &group{key: k, acct: v.Account, name: v.Config.FunctionName, memMB: v.Config.MemorySize, charge: v.Config.MemorySize}
	if sandbox.Charges(p.backendOf(v.Account)) {
		g.charge = 0
	}
	p.groups[k] = g
	return g
}

// backendOf is the backend of account's sandboxes.
func (p *Pool) backendOf(acct string) sandbox.Backend {
	if r, ok := p.cfg.Backend.(*sandbox.ByAccount); ok {
		return r.For(acct)
	}
	return p.cfg.Backend
}

// shutdownIdle shuts down the least recently used idle environment and
// reports whether there was one. A backend that charges the ledger itself
// (the microVM tier's VMs) refuses a sandbox with sandbox.ErrNoRoom when
// the ledger is full, and idle environments may be what fills it: those
// the pool charged free their memory at once, a VM's once its last
// environment is gone (the backend then stops it for room).
//
// Those the pool charged go first (their memory is free at once), then
// the others; provisioned environments stay. A charged one is shut down
// in the background, another one waited for: its VM must have let it go
// before the backend is asked again.
func (p *Pool) shutdownIdle(acct string) bool {
	rank := func(g *group) int {
		if g.charge > 0 {
			return 0
		}
		return 1
	}
	p.mu.Lock()
	var lru *env.Environment
	var lg *group
	for _, g := range p.groups {
		if g.pinned > 0 {
			continue
		}
		for _, e := range g.idle {
			if lru == nil || rank(g) < rank(lg) || rank(g) == rank(lg) && e.LastUsed().Before(lru.LastUsed()) {
				lru, lg = e, g
			}
		}
	}
	if lru == nil {
		p.mu.Unlock()
		return false
	}
	p.removeIdleLocked(lg, lru)
	p.dropEmptyLocked(lg)
	p.log.Info("environment shut down for room", "env", lru.ID, "for_account", acct)
	if lg.charge > 0 {
		p.shutdownAsync(lru, "spindown")
		p.mu.Unlock()
		return true
	}
	p.shutdown.Add(1)
	p.mu.Unlock()
	defer p.shutdown.Done()
	lru.Shutdown("spindown", p.cfg.ShutdownGrace)
	return true
}

// maxShutdownsForRoom bounds the idle environments one sandbox that found
// no room shuts down before it gives up (see shutdownIdle).
const maxShutdownsForRoom = 8

func (p *Pool) removeIdleLocked(g *group, e *env.Environment) {
	for i, x := range g.idle {
		if x == e {
			g.idle = append(g.idle[:i], g.idle[i+1:]...)
			p.ledger.Give(g.charge)
			return
		}
	}
}

func (p *Pool) shutdownAsync(e *env.Environment, reason string) {
	p.shutdown.Add(1)
	go func() {
		defer p.shutdown.Done()
		e.Shutdown(reason, p.cfg.ShutdownGrace)
	}()
}

// release returns an environment to its group, or retires it.
func (p *Pool) release(g *group, fk string, e *env.Environment) {
	if p.releaseLocked(g, fk, e) {
		// Outside p.mu: Freeze may wait for a freeze in progress.
		e.Freeze()
	}
}

// releaseLocked does release's bookkeeping under p.mu and reports whether
// e went back to the idle list.
func (p *Pool) releaseLocked(g *group, fk string, e *env.Environment) (idle bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g.busy--
	p.byFunc[fk]--
	if p.byFunc[fk] == 0 {
		delete(p.byFunc, fk)
	}
	p.byAcct[g.acct]--
	if p.byAcct[g.acct] == 0 {
		delete(p.byAcct, g.acct)
	}
	switch {
	case e == nil || e.State() == env.Dead:
		p.ledger.Give(g.charge)
		if e != nil {
			p.shutdownAsync(e, "failure")
		}
	case g.retired || p.closed || time.Since(e.Created()) > p.cfg.MaxLifetime:
		p.ledger.Give(g.charge)
		p.shutdownAsync(e, "spindown")
	default:
		g.idle = append(g.idle, e)
		idle = true
	}
	p.dropEmptyLocked(g)
	return idle
}

func (p *Pool) dropEmptyLocked(g *group) {
	if g.busy == 0 && len(g.idle) == 0 && g.pinned == 0 && g.starting == 0 && p.groups[g.key] == g {
		delete(p.groups, g.key)
	}
}

// newID makes an environment id: 32 hex digits, like the suffix of AWS's
// log stream names.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (p *Pool) runtime(id string) (runtimes.Runtime, bool) {
	for _, r := range p.cfg.Runtimes {
		if r.ID == id {
			return r, true
		}
	}
	if strings.HasPrefix(id, "provided") {
		return runtimes.Runtime{ID: id, Family: runtimes.FamilyProvided}, true
	}
	return runtimes.Runtime{}, false
}

// createAs starts an environment whose AWS_LAMBDA_INITIALIZATION_TYPE is initType.
func (p *Pool) createAs(ctx context.Context, v *control.Version, initType string) (*env.Environment, error) {
	e, _, err := p.start(ctx, v, initType, nil)
	return e, err
}

// start starts an environment for v whose AWS_LAMBDA_INITIALIZATION_TYPE is
// initType; with first, it runs first as the environment's first
// invocation (env.StartInvoke). e is nil whenever err is not.
func (p *Pool) start(ctx context.Context, v *control.Version, initType string, first *env.Request) (e *env.Environment, resp *env.Response, err error) {
	c := &v.Config
	rt, ok := p.runtime(c.Runtime)
	if !ok {
		return nil, nil, p.CheckRuntime(c.Runtime)
	}
	tCode := time.Now()
	codeDir, err := p.cfg.Code.Code(ctx, v.CodeHex)
	if err != nil {
		return nil, nil, fmt.Errorf("unpack code: %w", err)
	}
	optDir, err := p.cfg.Code.Opt(ctx, v.LayerHexes)
	if err != nil {
		return nil, nil, fmt.Errorf("unpack layers: %w", err)
	}
	codeDir, optDir, compiles := p.compileDirs(v, rt, codeDir, optDir)
	if compiles {
		// After this environment's start: the compiler's sandbox would take
		// the CPU from it.
		defer func() {
			if err == nil {
				p.compileAhead(v, rt, codeDir, optDir)
			}
		}()
	}
	id := newID()
	spec := sandbox.Spec{ID: "nubo-" + id[:12], Account: v.Account, MemoryMB: c.MemorySize, EphemeralMB: c.EphemeralStorage.Size,
		CodeDir: codeDir, LayersDir: optDir, RuntimeDir: p.cfg.RuntimeDir, NoNetwork: c.NuboNetwork == "none"}
	t0 := time.Now()
	sb, err := p.cfg.Backend.Create(ctx, spec)
	for i := 0; i < maxShutdownsForRoom && errors.Is(err, sandbox.ErrNoRoom) && ctx.Err() == nil && p.shutdownIdle(v.Account); i++ {
		sb, err = p.cfg.Backend.Create(ctx, spec)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: %w", err)
	}
	tSandbox := time.Now()
	if obs := p.cfg.ObservePhase; obs != nil {
		obs("code", t0.Sub(tCode))
		obs("sandbox", tSandbox.Sub(t0))
	}
	paths := sb.Paths()
	stream := time.Now().UTC().Format("2006/01/02") + "/[" + c.Version + "]" + id
	group := c.LoggingConfig.LogGroup
	if group == "" {
		group = "/aws/lambda/" + c.FunctionName
	}
	start := agentproto.Start{
		Argv: p.command(rt, paths, c.MemorySize), Env: Environment(v, rt, paths, p.cfg.Region, group, stream, initType), Dir: paths.TaskRoot,
		UID: paths.UID, GID: paths.GID, ExtensionsDir: joinOpt(paths.OptDir, "extensions"), RuntimeAPI: paths.RuntimeAPI,
		InitTimeoutMs: p.cfg.InitTimeout.Milliseconds(), FunctionName: c.FunctionName, FunctionVersion: c.Version,
		Handler: c.Handler, AccountID: v.Account,
	}
	var sink env.LogSink
	if p.cfg.Logs != nil {
		sink = p.cfg.Logs(v.Account, group, stream)
	}
	cfg := env.Config{
		Start: start, MemoryMB: c.MemorySize, InitTimeout: p.cfg.InitTimeout, RuntimeVersion: rt.ID,
		ExecutedVersion: c.Version, Logs: sink, Logger: p.log, Provisioned: initType == "provisioned-concurrency",
		ObservePhase: p.cfg.ObservePhase,
		Initialised: func(at time.Time) {
			if obs := p.cfg.ObservePhase; obs != nil {
				obs("start", at.Sub(tCode))
			}
			p.log.Debug("environment started", "env", sb.ID(), "function", c.FunctionArn, "sandbox", tSandbox.Sub(t0),
				"agent_and_init", at.Sub(tSandbox), "total", at.Sub(t0))
		},
	}
	if first == nil {
		e, err = env.StartIn(ctx, sb, sb.ID(), cfg)
	} else {
		e, resp, err = env.StartInvoke(ctx, sb, sb.ID(), cfg, first)
	}
	if e == nil && err != nil {
		return nil, nil, fmt.Errorf("start environment: %w", err)
	}
	return e, resp, err
}

func joinOpt(opt, sub string) string {
	if opt == "" {
		return ""
	}
	return opt + "/" + sub
}

// CheckRuntime refuses a runtime this node does not offer (an
// InvalidParameterValueException naming the ones it does).
func (p *Pool) CheckRuntime(id string) error {
	if _, ok := p.runtime(id); ok {
		return nil
	}
	return errdefs.InvalidParameter("The runtime parameter of %s is not supported on this nubo node; it offers: %s", id, p.offered())
}

func (p *Pool) offered() string {
	ids := []string{"provided", "provided.al2", "provided.al2023"}
	for _, r := range p.cfg.Runtimes {
		if r.Family != runtimes.FamilyProvided {
			ids = append(ids, r.ID)
		}
	}
	return strings.Join(ids, ", ")
}

// command is the runtime's argv as seen inside the sandbox, for a
// function with memoryMB.
func (p *Pool) command(rt runtimes.Runtime, paths sandbox.Paths, memoryMB int) []string {
	if rt.Family != runtimes.FamilyProvided {
		name, _, _ := runtimes.Bootstrap(rt.Family)
		return runtimes.Command(rt, paths.RuntimeDir+"/"+name, memoryMB)
	}
	return []string{providedBootstrap(paths)}
}

// Invalidate retires the environments of a function's groups whose keys
// are in stale: configurations no longer current. A group not named is
// left alone, whatever its key: it may have been made after the caller
// judged the keys.
func (p *Pool) Invalidate(acct, name string, stale map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, g := range p.groups {
		if g.acct != acct || g.name != name || !stale[k] {
			continue
		}
		g.retired = true
		for _, e := range g.idle {
			p.ledger.Give(g.charge)
			p.shutdownAsync(e, "spindown")
		}
		g.idle = nil
		p.dropEmptyLocked(g)
	}
}

// Keys lists the pool keys of a function's live groups.
func (p *Pool) Keys(acct, name string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, g := range p.groups {
		if g.acct == acct && g.name == name {
			out = append(out, k)
		}
	}
	return out
}

// MaxLifetime is the longest an environment lives (its last invocation
// may run beyond it).
func (p *Pool) MaxLifetime() time.Duration { return p.cfg.MaxLifetime }

// Key exposes a version's pool key.
func Key(v *control.Version) string { return key(v) }

// reaper retires idle and old environments.
func (p *Pool) reaper() {
	defer p.wg.Done()
	tick := min(p.cfg.IdleTimeout/4, 5*time.Second)
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		p.mu.Lock()
		for _, g := range p.groups {
			kept := make([]*env.Environment, 0, len(g.idle))
			for i, e := range g.idle {
				// Provisioned environments are kept however idle; only
				// those beyond the pinned count age out.
				keepWarm := len(g.idle)-i+g.busy <= g.pinned && e.State() != env.Dead && now.Sub(e.Created()) <= p.cfg.MaxLifetime
				if !keepWarm && (now.Sub(e.LastUsed()) > p.cfg.IdleTimeout || now.Sub(e.Created()) > p.cfg.MaxLifetime || e.State() == env.Dead) {
					p.ledger.Give(g.charge)
					p.shutdownAsync(e, "spindown")
					continue
				}
				kept = append(kept, e)
			}
			g.idle = kept
			p.dropEmptyLocked(g)
		}
		p.mu.Unlock()
	}
}

// Stats is a snapshot for metrics and the CLI.
type Stats struct {
	Idle, Busy, LiveMB int
}

// Stats returns the pool's current figures.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{LiveMB: p.ledger.Used()}
	for _, g := range p.groups {
		s.Idle += len(g.idle)
		s.Busy += g.busy
	}
	return s
}

// Close shuts every environment down and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	for _, g := range p.groups {
		for _, e := range g.idle {
			p.shutdownAsync(e, "spindown")
		}
		g.idle = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.shutdown.Wait()
}
