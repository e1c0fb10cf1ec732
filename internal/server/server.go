// Package server assembles a single-node nubo: state store, control plane,
// execution and the HTTP API, started in that order and stopped in reverse
// under one root context (SIGINT/SIGTERM cancel it).
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/procs"
	"github.com/nubo-dev/nubo/internal/rawio"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nubo-dev/nubo/internal/api"
	"github.com/nubo-dev/nubo/internal/async"
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/logs"
	"github.com/nubo-dev/nubo/internal/store"
)

// Config is everything `nubo serve` takes from its flags.
type Config struct {
	Listen       string
	DataDir      string
	NATSURL      string
	AccountsFile string
	NoDevAccount bool
	Region       string
	// AccountConcurrency is the per-account concurrency limit.
	AccountConcurrency int
	// TransitionDelay holds functions in Pending/InProgress (for tests).
	TransitionDelay time.Duration
	// Isolation names the execution backend: "namespace" (default),
	// "microvm" (each account's sandboxes inside microVMs of its own),
	// "process" (development, no isolation) or "none" (no execution at
	// all: a control plane only). Accounts may override it (account.Account.Isolation).
	Isolation string
	// MicroVM tier: the accelerator ("" probes KVM, else TCG), the smallest
	// guest's memory, how long a VM without sandboxes lives, and the first
	// host uid of the VMMs.
	MicroVMAccel       string
	MicroVMMemoryMB    int
	MicroVMIdleTimeout time.Duration
	MicroVMUIDBase     int
	// IdleTimeout reaps idle environments; MaxLifetime retires every one.
	IdleTimeout time.Duration
	MaxLifetime time.Duration
	// CapacityMB bounds the memory of live environments (0: 75% of RAM).
	CapacityMB int
	// LogRetention is how long function logs are kept.
	LogRetention time.Duration
	// AsyncWorkers is how many async events run at once; AsyncRetryScale
	// multiplies AWS's retry delays (tests make them short).
	AsyncWorkers    int
	AsyncRetryScale float64
	// MetricsListen serves Prometheus metrics on this address ("" = off).
	MetricsListen string
	// Subnet of the environments' network (default 10.213.0.0/16) and the
	// firewall backend (auto, nftables, iptables).
	Subnet   string
	Firewall string
	// HostPorts are TCP ports of the host every environment may connect to
	// at host.nubo.internal (netenv.Config.HostPorts), as "5432,6379".
	HostPorts string
	// NetName names the bridge, veths and firewall table ("nubo" by
	// default); several nubo servers on one host need distinct names and
	// subnets, and distinct SandboxUIDBase ranges.
	NetName        string
	SandboxUIDBase int
	SandboxSlots   int
	// TimerSlack is every sandbox's timer slack (nsbox.Config.TimerSlack);
	// 0 leaves nubo's own. `nubo serve` sets nsbox.DefaultTimerSlack.
	TimerSlack time.Duration
	// PlaceCPUs homes each namespace sandbox of at most one vCPU on one
	// CPU (nsbox.Config.PlaceCPUs); `nubo serve` sets it.
	PlaceCPUs bool
	// NoCompilePython turns off compiling Python functions' sources ahead
	// (worker.Config.NoCompile).
	NoCompilePython bool
	// SandboxAgent is the small executable namespace sandboxes start from
	// (cmd/nubo-agent, embedded by cmd/nubo); nil: nubo's own binary.
	SandboxAgent []byte
	// Procs sizes GOMAXPROCS to the work (package procs): there is one per
	// process, which `nubo serve` makes; nil leaves GOMAXPROCS alone.
	Procs  *procs.Governor
	Logger *slog.Logger
}

// Server is a running nubo.
type Server struct {
	closeOnce sync.Once
	cfg       Config
	log       *slog.Logger
	ln        net.Listener
	st        *store.Store
	ctl       *control.Service
	http      *http.Server
	accts     *account.Registry
	exec      *execution
	logs      *logs.Store
	queue     *async.Queue
	reg       *prometheus.Registry
	mhttp     *http.Server

	gcStop, gcDone chan struct{}
}

// collectCode removes unreferenced deployment packages from the store now
// and then (an hour's grace keeps zips that a create is about to refer to),
// and the node's unpacked copies of code it no longer needs.
func (s *Server) collectCode() {
	defer close(s.gcDone)
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	// A collection under way ends with the server, not minutes later.
	base, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		<-s.gcStop
		stop()
	}()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(base, 5*time.Minute)
		// One read of every record serves both collections.
		refs, err := s.ctl.References(ctx)
		if err != nil {
			s.log.Warn("collecting unused code", "err", err)
			cancel()
			continue
		}
		n, err := s.ctl.CollectCode(ctx, refs, time.Hour)
		if err != nil {
			s.log.Warn("collecting unused code", "err", err)
		} else if n > 0 {
			s.log.Info("collected unused code", "packages", n)
		}
		if s.exec != nil {
			n, err := s.exec.collectUnpacked(refs)
			if err != nil {
				s.log.Warn("collecting unpacked code", "err", err)
			} else if n > 0 {
				s.log.Info("collected unpacked code", "entries", n)
			}
		}
		cancel()
	}
}

// serveMetrics serves /metrics on its own listener: metrics name functions
// of every account, so they stay off the tenants' API address.
func (s *Server) serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	// Profiles for the operator, on the same private address.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.mhttp = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.mhttp.Serve(ln)
	s.log.Info("metrics", "listen", ln.Addr().String())
	return nil
}

// IsLoopback reports whether a listen address binds loopback only.
func IsLoopback(listen string) (bool, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("--listen %q: %w", listen, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false, fmt.Errorf("--listen %q: host must be an IP address or localhost", listen)
	}
	return ip.IsLoopback(), nil
}

// Accounts builds the account registry the flags describe: the accounts file,
// plus the development account while listening on loopback only.
func Accounts(cfg Config) (*account.Registry, bool, error) {
	loop, err := IsLoopback(cfg.Listen)
	if err != nil {
		return nil, false, err
	}
	var accts []account.Account
	if cfg.AccountsFile != "" {
		if accts, err = account.Load(cfg.AccountsFile); err != nil {
			return nil, false, err
		}
	} else if !loop {
		return nil, false, fmt.Errorf("refusing to listen on non-loopback address %s without --accounts: the development account is only for loopback", cfg.Listen)
	}
	dev := loop && !cfg.NoDevAccount
	if dev {
		accts = append(accts, account.Dev())
	}
	if len(accts) == 0 {
		return nil, false, errors.New("no accounts: give --accounts FILE or drop --no-dev-account")
	}
	reg, err := account.NewRegistry(accts)
	return reg, dev, err
}

// Start opens everything and begins serving. Stop with Close.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Absolute from here on: mount points, cgroup and sandbox paths are
	// compared with what the kernel reports (/proc/self/mountinfo), which
	// is absolute.
	if cfg.DataDir != "" {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
		}
		cfg.DataDir = abs
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	reg, dev, err := Accounts(cfg)
	if err != nil {
		return nil, err
	}
	s.accts = reg
	// Listen before opening state: a busy port should fail fast and leave
	// the data dir untouched.
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if err := checkHostPorts(cfg, s.ln.Addr()); err != nil {
		s.ln.Close()
		return nil, err
	}
	if cfg.HostPorts != "" && (cfg.Isolation == "none" || cfg.Isolation == "process") {
		cfg.Logger.Warn("--host-ports does nothing with --isolation "+cfg.Isolation+": there is no environment network", "host_ports", cfg.HostPorts)
	}
	if s.st, err = store.Open(ctx, store.Config{DataDir: cfg.DataDir, NATSURL: cfg.NATSURL, Logger: cfg.Logger}); err != nil {
		s.ln.Close()
		return nil, err
	}
	key, err := urlKey(ctx, s.st)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.ctl = control.New(s.st, control.Options{
		Region:             cfg.Region,
		AccountConcurrency: cfg.AccountConcurrency,
		TransitionDelay:    cfg.TransitionDelay,
		Logger:             cfg.Logger.With("component", "control"),
	})
	if err := s.ctl.Recover(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("recover: %w", err)
	}
	if s.logs, err = logs.Open(ctx, s.st.NC, s.st.JS, cfg.LogRetention, 1, cfg.Logger); err != nil {
		s.Close()
		return nil, err
	}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var invoker api.Invoker
	var events api.Events
	if cfg.Isolation != "none" {
		if s.exec, err = startExecution(ctx, cfg, reg, s.st, s.ctl, s.logs, s.reg); err != nil {
			s.Close()
			return nil, err
		}
		s.queue, err = async.Open(ctx, async.Config{JS: s.st.JS, Control: s.ctl, Runner: s.exec.invoker,
			Workers: cfg.AsyncWorkers, RetryScale: cfg.AsyncRetryScale, Logger: cfg.Logger.With("component", "async"),
			Metrics: async.NewMetrics(s.reg)})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.exec.invoker.Async = s.queue
		invoker, events = s.exec.invoker, s.queue
	}
	if cfg.MetricsListen != "" {
		if err := s.serveMetrics(cfg.MetricsListen); err != nil {
			s.Close()
			return nil, err
		}
	}
	// After execution is set up: the collector reads s.exec.
	s.gcStop = make(chan struct{})
	s.gcDone = make(chan struct{})
	go s.collectCode()
	h := api.New(api.Config{Control: s.ctl, Accounts: reg, URLKey: key, Code: s.st, Invoker: invoker, Logs: s.logs,
		Events: events, Procs: cfg.Procs, Logger: cfg.Logger.With("component", "api")})
	// IdleTimeout: a kept-alive connection nobody uses is closed after a
	// while (each holds a goroutine and a descriptor); longer than the
	// SDKs keep theirs idle (Go's 90 s), so a client's reuse rarely races
	// the close.
	s.http = &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	go func() {
		// Raw reads and writes on clients' connections (package rawio).
		if err := s.http.Serve(rawio.Listener{Listener: s.ln}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "err", err)
		}
	}()
	state := "embedded"
	if cfg.NATSURL != "" {
		state = cfg.NATSURL
	}
	s.log.Info("nubo serving", "listen", s.ln.Addr().String(), "data_dir", cfg.DataDir, "nats", state, "dev_account", dev, "region", s.ctl.Region())
	return s, nil
}

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Control exposes the control plane (tests, CLI helpers).
func (s *Server) Control() *control.Service { return s.ctl }

// Close stops serving and releases everything, in reverse start order.
func (s *Server) Close() error {
	s.closeOnce.Do(s.close)
	return nil
}

func (s *Server) close() {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	if s.mhttp != nil {
		s.mhttp.Close()
	}
	if s.gcStop != nil {
		close(s.gcStop)
		<-s.gcDone
	}
	if s.queue != nil {
		s.queue.Close()
	}
	if s.exec != nil {
		s.exec.close()
	}
	if s.ctl != nil {
		s.ctl.Close()
	}
	if s.st != nil {
		s.st.Close()
	}
}

// urlKey returns the server's secret for signed code URLs, created once and
// kept in the store so URLs survive a restart.
func urlKey(ctx context.Context, st *store.Store) ([]byte, error) {
	var k []byte
	if _, err := st.Get(ctx, "server.urlkey", &k); err == nil && len(k) == 32 {
		return k, nil
	}
	k = make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if _, err := st.Create(ctx, "server.urlkey", k); errors.Is(err, store.ErrExists) {
		_, err = st.Get(ctx, "server.urlkey", &k)
		return k, err
	} else if err != nil {
		return nil, err
	}
	return k, nil
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	s.log.Info("shutting down")
	return s.Close()
}
