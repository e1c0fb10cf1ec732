package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

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
)

// compileAhead starts compiling the Python sources of v's code and layers
// (codeDir, optDir on the host) for rt in the background, once per code,
// layers and interpreter for the life of the pool: environments that start
// afterwards import them without compiling. It does nothing for other
// runtimes or when Config.NoCompile is set.
func (p *Pool) compileAhead(v *control.Version, rt runtimes.Runtime, codeDir, optDir string) {
	tag := runtimes.CacheTag(rt)
	if tag == "" || p.cfg.NoCompile || p.cfg.RuntimeDir == "" {
		return
	}
	// Named by the directories' inodes too: one removed and unpacked again
	// (codecache.Collect) is compiled again.
	k := dirKey(codeDir) + "\x00" + dirKey(optDir) + "\x00" + tag
	p.mu.Lock()
	if p.closed || p.compiled[k] {
		p.mu.Unlock()
		return
	}
	p.compiled[k] = true
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		select {
		case p.compiling <- struct{}{}:
		case <-p.stop:
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
		n, err := p.compile(ctx, v, rt, tag, codeDir, optDir)
		if err != nil {
			// Not again for this code: the environments compile as they import.
			p.log.Info("compiling a Python function's code ahead failed", "function", v.Config.FunctionArn, "err", err)
			return
		}
		p.log.Debug("compiled a Python function's code ahead", "function", v.Config.FunctionArn, "files", n, "took", time.Since(t0))
	}()
}

// compile runs the compiler in a sandbox of its own, with v's code, layers
// and account but no network and none of its extensions, and writes what
// it answers into codeDir and optDir.
func (p *Pool) compile(ctx context.Context, v *control.Version, rt runtimes.Runtime, tag, codeDir, optDir string) (int, error) {
	charge := compileMemoryMB
	if sandbox.Charges(p.backendOf(v.Account)) {
		charge = 0
	}
	if !p.ledger.Take(charge) {
		return 0, errors.New("no memory free on this node")
	}
	defer p.ledger.Give(charge)
	id := newID()
	sb, err := p.cfg.Backend.Create(ctx, sandbox.Spec{ID: "nubo-" + id[:12], Account: v.Account, MemoryMB: compileMemoryMB,
		EphemeralMB: 512, CodeDir: codeDir, LayersDir: optDir, RuntimeDir: p.cfg.RuntimeDir, NoNetwork: true})
	if err != nil {
		return 0, fmt.Errorf("sandbox: %w", err)
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
		return 0, err
	}
	defer e.Destroy()
	switch {
	case resp.FunctionError || resp.Reset || resp.Fatal:
		return 0, fmt.Errorf("the compiler failed: %s %.200s", resp.ErrorType, resp.Payload)
	case ctx.Err() != nil:
		return 0, ctx.Err()
	}
	dirs := map[string]string{"task": codeDir}
	if optDir != "" {
		dirs["opt"] = optDir
	}
	return pycache.Apply(resp.Payload, tag, dirs)
}

// dirKey names a directory and the inode it has now.
func dirKey(dir string) string {
	var st syscall.Stat_t
	if dir == "" || syscall.Stat(dir, &st) != nil {
		return dir
	}
	return dir + "@" + strconv.FormatUint(st.Ino, 10)
}
