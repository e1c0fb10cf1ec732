package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
	"github.com/nubo-dev/nubo/internal/pycache"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// Compiling a Python function's sources ahead (see package pycache): one
// sandbox at a time per node, of compileMemoryMB, for at most
// compileTimeout, answering with at most compileLimit bytes (the largest
// response an invocation carries whole).
const (
	compileMemoryMB = 512
	compileTimeout  = 2 * time.Minute
	compileLimit    = 6_000_000
	// compileRoom is how many sandboxes of compileMemoryMB the ledger must
	// still have room for: the compiler's and one cold start's.
	compileRoom = 2
)

// compileDirs returns the directories v's environments of rt see as
// their code and layers: codeDir and optDir as unpacked, shared by every
// function with the same zips, or the account's own copies of them
// (codecache.Own) when nubo compiles the function's Python code ahead
// (compiles reports that), so that what is compiled in a sandbox of one
// account never reaches another's functions.
func (p *Pool) compileDirs(v *control.Version, rt runtimes.Runtime, codeDir, optDir string) (code, opt string, compiles bool) {
	if runtimes.CacheTag(rt) == "" || p.cfg.NoCompile || p.cfg.RuntimeDir == "" || !sandbox.SeesHostCode(p.backendOf(v.Account)) {
		return codeDir, optDir, false
	}
	code, err := p.cfg.Code.Own(codeDir, v.Account)
	if err == nil && optDir != "" {
		opt, err = p.cfg.Code.Own(optDir, v.Account)
	}
	if err != nil {
		p.log.Warn("no copy of a Python function's code of its account's own: not compiled ahead", "function", v.Config.FunctionArn, "err", err)
		return codeDir, optDir, false
	}
	return code, opt, true
}

// Prefetch makes ready what the first environment of v will take from the
// code cache: its code and layers unpacked and, where its Python code is
// compiled ahead, its account's own copies of them (linking a tree of 2 000
// files took 140 ms here), so that its cold start does not. The
// compilation itself starts prefetchCompileDelay later, unless an
// environment has started it by then: a function invoked within that
// delay starts before the compiler does (one whose start is still under
// way when the delay ends has it beside it).
//
// It also tells the backend that v's first environment is coming (see
// expectStart), before the unpacking, so that both are done by the time
// it is invoked.
func (p *Pool) Prefetch(ctx context.Context, v *control.Version) {
	p.expectStart(v)
	codeDir, err := p.cfg.Code.Code(ctx, v.CodeHex)
	if err != nil {
		return
	}
	optDir, err := p.cfg.Code.Opt(ctx, v.LayerHexes)
	if err != nil {
		return
	}
	rt, ok := p.runtime(v.Config.Runtime)
	if !ok {
		return
	}
	if code, opt, compiles := p.compileDirs(v, rt, codeDir, optDir); compiles {
		time.AfterFunc(prefetchCompileDelay, func() { p.compileAhead(v, rt, code, opt) })
	}
}

// prefetchCompileDelay: see Prefetch.
const prefetchCompileDelay = 2 * time.Second

// compileAhead starts compiling the Python sources of v's code and layers
// (codeDir, optDir on the host: the account's own copies, see compileDirs)
// for rt in the background: environments that start afterwards import
// them without compiling. It runs once per directory and interpreter, and
// again after a compilation that stopped short (a limit) or could not run
// (no memory free, the pool closing).
func (p *Pool) compileAhead(v *control.Version, rt runtimes.Runtime, codeDir, optDir string) {
	tag := runtimes.CacheTag(rt)
	// Named by the directories' inodes and birth times too: one removed
	// and made again (codecache.Collect) is compiled again.
	k := dirKey(codeDir) + "\x00" + dirKey(optDir) + "\x00" + tag
	p.mu.Lock()
	if p.closed || p.compiled[k] {
		p.mu.Unlock()
		return
	}
	if len(p.compiled) >= maxCompiled {
		clear(p.compiled) // at worst, some run once more and find little to do
	}
	p.compiled[k] = true
	p.wg.Add(1)
	p.mu.Unlock()
	again := func() {
		p.mu.Lock()
		delete(p.compiled, k)
		p.mu.Unlock()
	}
	go func() {
		defer p.wg.Done()
		select {
		case p.compiling <- struct{}{}:
		case <-p.stop:
			again()
			return
		}
		defer func() { <-p.compiling }()
		ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
		defer cancel()
		go func() {
			select {
			case <-p.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		t0 := time.Now()
		n, partial, err := p.compile(ctx, v, rt, tag, codeDir, optDir)
		switch {
		case errors.Is(err, errNoMemory) || errors.Is(err, sandbox.ErrNoRoom) || errors.Is(err, context.Canceled):
			again()
			p.log.Debug("compiling a Python function's code ahead: later", "function", v.Config.FunctionArn, "err", err)
		case err != nil:
			// Not again: the environments compile as they import.
			p.log.Info("compiling a Python function's code ahead failed", "function", v.Config.FunctionArn, "err", err)
		default:
			if partial && n > 0 {
				again() // the next start compiles the rest
			}
			p.log.Debug("compiled a Python function's code ahead", "function", v.Config.FunctionArn, "files", n,
				"partial", partial, "took", time.Since(t0))
		}
	}()
}

// errNoMemory: the node's memory is too taken to compile now.
var errNoMemory = errors.New("too little memory free on this node")

// maxCompiled bounds Pool.compiled.
const maxCompiled = 10_000

// compile runs the compiler in a sandbox of its own, with v's code, layers
// and account but no network and none of its extensions, and writes what
// it answers into codeDir and optDir.
//
// It leaves the memory of cold starts to them: it runs only while the
// node's ledger has room for several more environments of its size.
func (p *Pool) compile(ctx context.Context, v *control.Version, rt runtimes.Runtime, tag, codeDir, optDir string) (n int, partial bool, err error) {
	charge := compileMemoryMB
	if sandbox.Charges(p.backendOf(v.Account)) {
		charge = 0
	}
	if p.ledger.Free() < compileRoom*compileMemoryMB || !p.ledger.Take(charge) {
		p.lowMemory.Do(func() {
			p.log.Info("too little memory free to compile Python functions' code ahead; tried again at later cold starts",
				"free_mb", p.ledger.Free(), "needs_mb", compileRoom*compileMemoryMB)
		})
		return 0, false, errNoMemory
	}
	defer p.ledger.Give(charge)
	id := newID()
	sb, err := p.cfg.Backend.Create(ctx, sandbox.Spec{ID: "nubo-" + id[:12], Account: v.Account, MemoryMB: compileMemoryMB,
		EphemeralMB: 512, CodeDir: codeDir, LayersDir: optDir, RuntimeDir: p.cfg.RuntimeDir, NoNetwork: true})
	if err != nil {
		return 0, false, fmt.Errorf("sandbox: %w", err)
	}
	// Ended by the pool's close or the timeout, whatever it is doing.
	over := make(chan struct{})
	defer close(over)
	go func() {
		select {
		case <-ctx.Done():
			sb.Destroy()
		case <-over:
		}
	}()
	paths := sb.Paths()
	name, _ := runtimes.Compiler()
	environ := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TMPDIR=" + paths.TmpDir,
		"LAMBDA_TASK_ROOT=" + paths.TaskRoot, "AWS_LAMBDA_RUNTIME_API=" + paths.RuntimeAPI,
		"NUBO_PYC_LIMIT=" + strconv.Itoa(compileLimit)}
	if optDir != "" {
		environ = append(environ, "NUBO_OPT_DIR="+paths.OptDir)
	}
	cfg := env.Config{
		Start: agentproto.Start{
			// -I -S: nothing of the function's environment or the host's
			// site runs here.
			Argv: []string{rt.Interpreter, "-I", "-S", paths.RuntimeDir + "/" + name}, Env: environ, Dir: paths.TaskRoot,
			UID: paths.UID, GID: paths.GID, RuntimeAPI: paths.RuntimeAPI, InitTimeoutMs: p.cfg.InitTimeout.Milliseconds(),
			FunctionName: "nubo-compile", FunctionVersion: "$LATEST", AccountID: v.Account,
		},
		MemoryMB: compileMemoryMB, InitTimeout: p.cfg.InitTimeout, RuntimeVersion: rt.ID, ExecutedVersion: "$LATEST",
		Logger: p.log,
	}
	e, resp, err := env.StartInvoke(ctx, sb, sb.ID(), cfg, &env.Request{RequestID: newID(), Payload: []byte("{}"),
		InvokedFunctionARN: v.Config.FunctionArn, Timeout: compileTimeout})
	if err != nil {
		return 0, false, err
	}
	defer e.Destroy()
	switch {
	case ctx.Err() != nil:
		return 0, false, ctx.Err()
	case resp.FunctionError || resp.Reset || resp.Fatal:
		return 0, false, fmt.Errorf("the compiler failed: %s %.200s", resp.ErrorType, resp.Payload)
	}
	dirs := map[string]string{"task": codeDir}
	if optDir != "" {
		dirs["opt"] = optDir
	}
	n, err = pycache.Apply(ctx, resp.Payload, tag, dirs)
	return n, pycache.Partial(resp.Payload), err
}

// dirKey names a directory with its inode and, where the file system
// keeps it, its birth time: what its contents' changes leave alone, and a
// directory made again in its place does not share.
func dirKey(dir string) string {
	var st unix.Statx_t
	if dir == "" || unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_INO|unix.STATX_BTIME, &st) != nil {
		return dir
	}
	k := dir + "@" + strconv.FormatUint(st.Ino, 10)
	if st.Mask&unix.STATX_BTIME != 0 {
		k += "." + strconv.FormatInt(st.Btime.Sec, 10) + "." + strconv.FormatUint(uint64(st.Btime.Nsec), 10)
	}
	return k
}
