package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/cgroup"
	"github.com/nubo-dev/nubo/internal/codecache"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
	"github.com/nubo-dev/nubo/internal/invoke"
	"github.com/nubo-dev/nubo/internal/logs"
	"github.com/nubo-dev/nubo/internal/microvm"
	"github.com/nubo-dev/nubo/internal/netenv"
	"github.com/nubo-dev/nubo/internal/nsbox"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/sandbox"
	"github.com/nubo-dev/nubo/internal/seccomp"
	"github.com/nubo-dev/nubo/internal/store"
	"github.com/nubo-dev/nubo/internal/worker"
)

// execution is the part of the server that runs functions.
type execution struct {
	backend sandbox.Backend
	code    *codecache.Cache
	pool    *worker.Pool
	invoker *invoke.Invoker
	ctl     *control.Service
	cgroups cgroup.Manager
	nets    *netenv.Manager

	provisionKick chan struct{}
	stop          chan struct{}
	wg            sync.WaitGroup
}

// kickProvision asks the provisioner to reconcile now.
func (ex *execution) kickProvision() {
	select {
	case ex.provisionKick <- struct{}{}:
	default:
	}
}

// provisioner keeps provisioned-concurrency environments ready and reports
// their count back to the control plane (READY once all are up).
func (ex *execution) provisioner(log *slog.Logger) {
	defer ex.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ex.stop:
			return
		case <-t.C:
		case <-ex.provisionKick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		targets, err := ex.ctl.AllProvisioned(ctx)
		if err != nil {
			cancel()
			continue
		}
		keep := map[string]bool{}
		for _, tg := range targets {
			v, _, err := ex.ctl.Lookup(ctx, tg.Account, tg.Name, tg.Qualifier)
			if err != nil {
				continue
			}
			keep[worker.Key(v)] = true
			ready, err := ex.pool.Provision(ctx, v, tg.Requested)
			status, reason := control.ProvisionedInProgress, ""
			switch {
			case ready >= tg.Requested:
				status = control.ProvisionedReady
			case err != nil:
				status, reason = control.ProvisionedFailed, err.Error()
				log.Warn("provisioned concurrency", "function", tg.Name, "qualifier", tg.Qualifier, "err", err)
			}
			if err := ex.ctl.SetProvisionedStatus(ctx, tg.Account, tg.Name, tg.Qualifier, ready, status, reason); err != nil {
				log.Warn("provisioned concurrency status", "err", err)
			}
		}
		ex.pool.Unpin(keep)
		cancel()
	}
}

func startExecution(ctx context.Context, cfg Config, accts *account.Registry, st *store.Store, ctl *control.Service, lg *logs.Store, reg prometheus.Registerer) (_ *execution, err error) {
	log := cfg.Logger.With("component", "worker")
	var backend sandbox.Backend
	var cgm cgroup.Manager
	var nets *netenv.Manager
	// On any failure below, undo what was set up: nothing may stay behind.
	defer func() {
		if err == nil {
			return
		}
		if backend != nil {
			backend.Close()
		}
		if nets != nil {
			nets.Close()
		}
		if cgm != nil {
			cgm.Close()
		}
	}()
	cache, err := codecache.New(filepath.Join(cfg.DataDir, "code"), st)
	if err != nil {
		return nil, err
	}
	cache.Procs = cfg.Procs
	rts, err := runtimes.Detect("/")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	var ids []string
	for _, rt := range rts {
		ids = append(ids, rt.ID)
		if name, src, ok := runtimes.Bootstrap(rt.Family); ok {
			files[name] = src
		}
		if runtimes.CacheTag(rt) != "" {
			name, src := runtimes.Compiler()
			files[name] = src
		}
	}
	rtDir, err := cache.Runtime(files)
	if err != nil {
		return nil, err
	}
	if rts, err = runtimes.Precompile(rtDir, "/var/runtime", rts); err != nil {
		log.Warn("Python runtimes will compile their runtime client at every start", "err", err)
	}
	// One memory budget for the node, whichever tiers run on it.
	ledger := sandbox.NewLedger(capacityMB(cfg))
	// One backend per isolation the server and its accounts ask for.
	made := map[string]sandbox.Backend{}
	closeMade := func() {
		for _, b := range made {
			b.Close()
		}
	}
	get := func(kind string) (sandbox.Backend, error) {
		if b, ok := made[kind]; ok {
			return b, nil
		}
		var b sandbox.Backend
		var err error
		switch kind {
		case "process":
			log.Warn("isolation=process: functions run as plain child processes with NO isolation; use it only for code you trust")
			b, err = sandbox.NewProcess(filepath.Join(cfg.DataDir, "envs"), log)
		case "namespace":
			b, err = newNamespaceBackend(cfg, log, rtDir, &cgm, &nets)
		case "microvm":
			b, err = newMicroVMBackend(cfg, log, rtDir, &cgm, &nets, ledger)
		default:
			err = fmt.Errorf("--isolation %q: want namespace, microvm, process or none", kind)
		}
		if err != nil {
			return nil, err
		}
		made[kind] = b
		return b, nil
	}
	// "" is the default, namespace: one name, so one backend for both.
	defKind := cmp.Or(cfg.Isolation, "namespace")
	def, err := get(defKind)
	if err != nil {
		closeMade()
		return nil, err
	}
	router := &sandbox.ByAccount{Default: def, Accounts: map[string]sandbox.Backend{}}
	for _, id := range accts.All() {
		a, _ := accts.ByID(id)
		if a.Isolation == "" || a.Isolation == defKind {
			continue
		}
		b, err := get(a.Isolation)
		if err != nil {
			closeMade()
			return nil, fmt.Errorf("account %s: %w", id, err)
		}
		router.Accounts[id] = b
		log.Info("account isolation", "account", id, "isolation", a.Isolation)
	}
	backend = def
	if len(router.Accounts) > 0 {
		backend = router
	}
	capacity := capacityMB(cfg)
	pool := worker.New(worker.Config{
		Backend: backend, Code: cache, Procs: cfg.Procs, Runtimes: rts, RuntimeDir: rtDir, Region: ctl.Region(),
		AccountConcurrency: cfg.AccountConcurrency, Ledger: ledger, NoCompile: cfg.NoCompilePython,
		IdleTimeout: cfg.IdleTimeout, MaxLifetime: cfg.MaxLifetime,
		Logs:         func(acct, group, stream string) env.LogSink { return lg.Sink(acct, group, stream) },
		ObservePhase: coldStartPhases(reg),
		Logger:       log,
	})
	ex := &execution{backend: backend, pool: pool, code: cache, ctl: ctl, cgroups: cgm, nets: nets, invoker: &invoke.Invoker{Control: ctl, Pool: pool}}
	ctl.SetCheckRuntime(pool.CheckRuntime)
	ctl.SetOnChange(func(acct, name string) {
		go ex.invalidate(acct, name)
		go ex.prefetch(acct, name)
		ex.kickProvision()
	})
	ex.provisionKick = make(chan struct{}, 1)
	ex.stop = make(chan struct{})
	ex.wg.Add(1)
	go ex.provisioner(log)
	log.Info("execution ready", "backend", backend.Name(), "runtimes", strings.Join(ids, ","), "capacity_mb", capacity)
	return ex, nil
}

// prefetch unpacks a created or updated function's code and layers into
// the code cache right away, so its first cold start does not (80-100 ms
// for the bench's package on the development machine; see
// worker.Pool.Prefetch).
func (ex *execution) prefetch(acct, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, _, err := ex.ctl.Lookup(ctx, acct, name, "")
	if err != nil {
		return
	}
	ex.pool.Prefetch(ctx, v)
}

// collectUnpacked removes unpacked code this node no longer needs (see
// codecache.Collect): what the store refers to (refs) stays, and so does
// what an environment may still run from: anything used within the pool's
// longest environment lifetime, plus the longest invocation (15 minutes)
// that may still run at its end, plus a margin.
func (ex *execution) collectUnpacked(refs *control.CodeRefs) (int, error) {
	return ex.code.Collect(keepUnpacked(refs), ex.pool.MaxLifetime()+30*time.Minute)
}

// keepUnpacked says which entries of the code cache refs keep: every zip
// referred to, every list of layers in use, and an account's own copy of
// either while that account refers to it.
func keepUnpacked(refs *control.CodeRefs) func(kind, name string) bool {
	opts := map[string]bool{}
	for _, l := range refs.Layers {
		opts[codecache.OptName(l)] = true
	}
	// An account's own copy (codecache.Own) lives while that account refers
	// to its entry.
	owned := map[string]bool{}
	for acct, r := range refs.Accounts {
		for z := range r.Zips {
			owned["code/"+z+"@"+acct] = true
		}
		for _, l := range r.Layers {
			owned["opt/"+codecache.OptName(l)+"@"+acct] = true
		}
	}
	return func(kind, name string) bool {
		if _, owner := codecache.Owned(name); owner != "" {
			return owned[kind+"/"+name]
		}
		if kind == "opt" {
			return opts[name]
		}
		return refs.Zips[name]
	}
}

// invalidate retires environments whose function changed. It judges the
// keys the pool has when it starts and retires only those found stale: a
// group made meanwhile (a provisioned environment of a version looked up
// after the change) was not judged, and is judged in another pass.
func (ex *execution) invalidate(acct, name string) {
	judged := map[string]bool{}
	for pass := 0; pass < 5; pass++ {
		var latest string
		if v, _, err := ex.ctl.Lookup(context.Background(), acct, name, ""); err == nil {
			latest = worker.Key(v)
		}
		stale := map[string]bool{}
		fresh := false
		for _, k := range ex.pool.Keys(acct, name) {
			if judged[k] {
				continue
			}
			judged[k], fresh = true, true
			if k != latest && !ex.published(acct, name, k) {
				stale[k] = true
			}
		}
		if !fresh {
			return
		}
		ex.pool.Invalidate(acct, name, stale)
	}
}

// published reports whether pool key k is a published version's that
// still exists: published versions are immutable, so their key only goes
// with them.
func (ex *execution) published(acct, name, k string) bool {
	ver := versionOfKey(k)
	if ver == "$LATEST" {
		return false
	}
	v, _, err := ex.ctl.Lookup(context.Background(), acct, name, ver)
	return err == nil && worker.Key(v) == k
}

// versionOfKey extracts the version from a pool key (see worker.key).
func versionOfKey(k string) string {
	parts := strings.Split(k, "/")
	if len(parts) < 5 {
		return ""
	}
	return parts[3]
}

func (ex *execution) close() {
	close(ex.stop)
	ex.wg.Wait()
	ex.pool.Close()
	ex.backend.Close()
	if ex.nets != nil {
		ex.nets.Close()
	}
	if ex.cgroups != nil {
		ex.cgroups.Close()
	}
}

// capacityMB is the memory for environments on this node: --capacity-mb,
// or three quarters of the RAM.
func capacityMB(cfg Config) int {
	if cfg.CapacityMB > 0 {
		return cfg.CapacityMB
	}
	return memTotalMB() * 3 / 4
}

func memTotalMB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 4096
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb / 1024
		}
	}
	return 4096
}

// hostCgroups makes the cgroup manager once, removing what an earlier run left.
func hostCgroups(log *slog.Logger, cgm *cgroup.Manager) error {
	if *cgm != nil {
		return nil
	}
	m, err := cgroup.New(cgroup.Options{})
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if err := m.CleanupStale(); err != nil {
		log.Warn("removing cgroups of an earlier run", "err", err)
	}
	*cgm = m
	return nil
}

// hostNetwork makes the environments' network once (bridge, firewall),
// removing what an earlier run left.
func hostNetwork(cfg Config, log *slog.Logger, nets **netenv.Manager) error {
	if *nets != nil {
		return nil
	}
	ncfg := netenv.Config{Name: cfg.NetName, Backend: cfg.Firewall, Logger: log}
	if cfg.Subnet != "" {
		var err error
		if ncfg.Subnet, err = netip.ParsePrefix(cfg.Subnet); err != nil {
			return fmt.Errorf("--subnet: %w", err)
		}
	}
	var err error
	if ncfg.HostPorts, err = parsePorts(cfg.HostPorts); err != nil {
		return fmt.Errorf("--host-ports: %w", err)
	}
	if len(ncfg.HostPorts) > 0 {
		log.Warn("environments of every account may connect to these host ports at "+nsbox.HostName, "host_ports", ncfg.HostPorts)
	}
	if err := netenv.CleanupStale(ncfg); err != nil {
		log.Warn("removing network leftovers of an earlier run", "err", err)
	}
	m, err := netenv.New(ncfg)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	*nets = m
	return nil
}

// checkHostPorts refuses --host-ports that would open nubo's own
// listeners (the API at api, the metrics) to environments: no function may
// connect to the nubo API, whatever the operator opens.
func checkHostPorts(cfg Config, api net.Addr) error {
	ports, err := parsePorts(cfg.HostPorts)
	if err != nil {
		return fmt.Errorf("--host-ports: %w", err)
	}
	own := map[string]string{}
	if a, ok := api.(*net.TCPAddr); ok {
		own[strconv.Itoa(a.Port)] = "the Lambda API's (--listen)"
	}
	if _, p, err := net.SplitHostPort(cfg.MetricsListen); err == nil && p != "0" {
		own[p] = "the metrics' (--metrics-listen)"
	}
	for _, p := range ports {
		if what, ok := own[strconv.Itoa(int(p))]; ok {
			return fmt.Errorf("--host-ports: %d is %s port: environments must never reach nubo's own listeners", p, what)
		}
	}
	return nil
}

// parsePorts reads a comma-separated list of TCP ports ("" is none).
func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a TCP port (1–65535)", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// newNamespaceBackend makes the namespace sandbox backend with its network.
func newNamespaceBackend(cfg Config, log *slog.Logger, rtDir string, cgm *cgroup.Manager, nets **netenv.Manager) (sandbox.Backend, error) {
	if err := hostCgroups(log, cgm); err != nil {
		return nil, err
	}
	filter, err := seccomp.Compile()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if err := hostNetwork(cfg, log, nets); err != nil {
		return nil, err
	}
	return nsbox.New(nsbox.Config{Dir: filepath.Join(cfg.DataDir, "sandboxes"), Cgroups: *cgm,
		Network: netenv.Sandboxes{M: *nets}, Seccomp: filter.Bytes(), UIDBase: cfg.SandboxUIDBase, Slots: cfg.SandboxSlots,
		RuntimeDir: rtDir, Agent: cfg.SandboxAgent, HostAddr: (*nets).Gateway(), TimerSlack: cfg.TimerSlack, PlaceCPUs: cfg.PlaceCPUs, Logger: log})
}

// newMicroVMBackend makes the microVM backend: each account's sandboxes in
// QEMU microVMs of that account only.
func newMicroVMBackend(cfg Config, log *slog.Logger, rtDir string, cgm *cgroup.Manager, nets **netenv.Manager, ledger *sandbox.Ledger) (sandbox.Backend, error) {
	if err := hostCgroups(log, cgm); err != nil {
		return nil, err
	}
	if err := hostNetwork(cfg, log, nets); err != nil {
		return nil, err
	}
	return microvm.NewBackend(microvm.BackendConfig{
		Dir: filepath.Join(cfg.DataDir, "microvm"), Accel: cfg.MicroVMAccel, MemoryMB: cfg.MicroVMMemoryMB,
		IdleTimeout: cfg.MicroVMIdleTimeout, RuntimeDir: rtDir, Cgroups: *cgm, Network: tapAttacher{*nets},
		Ledger:  ledger,
		UIDBase: cfg.MicroVMUIDBase, TimerSlack: cfg.TimerSlack, Logger: log,
	})
}

// tapAttacher adapts netenv to the microVM backend's Network hook.
type tapAttacher struct{ m *netenv.Manager }

func (t tapAttacher) AttachTap(id string) (*os.File, microvm.GuestNet, func() error, error) {
	l, f, err := t.m.AttachTap(id)
	if err != nil {
		return nil, microvm.GuestNet{}, nil, err
	}
	rc, _ := nsbox.ResolvConf()
	gn := microvm.GuestNet{Addr: l.Prefix().String(), Gateway: l.Gateway().String(), MAC: l.MAC().String(), MTU: t.m.MTU(), ResolvConf: rc}
	return f, gn, func() error { return t.m.Detach(l) }, nil
}

// coldStartPhases exports the cold-start phases (see worker.Config) as the
// histogram nubo_cold_start_phase_seconds{phase}.
func coldStartPhases(reg prometheus.Registerer) func(string, time.Duration) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "nubo_cold_start_phase_seconds",
		Help: "Time of each cold-start phase: code (unpack), sandbox (acquire with code mounted), agent_ready, init (the runtime's), first_invoke, start (code to initialised).",
		// 100 µs to ~26 s.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 19),
	}, []string{"phase"})
	reg.MustRegister(h)
	return func(phase string, d time.Duration) { h.WithLabelValues(phase).Observe(d.Seconds()) }
}
