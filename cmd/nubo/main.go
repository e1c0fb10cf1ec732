// Command nubo runs AWS Lambda functions on your own machines: `nubo serve`
// starts the platform; the other subcommands are its command-line client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nubo-dev/nubo/internal/nsbox"
	"github.com/nubo-dev/nubo/internal/procs"
	"github.com/nubo-dev/nubo/internal/server"
)

const usage = `usage: nubo <command> [flags]

commands:
  serve     start the nubo platform (Lambda API, environments, state)
  logs      print a function's logs (nubo logs FUNCTION [--follow] [--since 10m])
  events    the async event queue: stats, failed, replay
  version   print the version

Run 'nubo <command> -h' for a command's flags.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "logs":
		return logsCmd(args[1:], stdout, stderr)
	case "events":
		return eventsCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "nubo", version)
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "nubo: unknown command %q\n%s", args[0], usage)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	// A mistyped flag gets one line, not the whole flag list: the list is
	// for -h, and the error must stay readable in a service log.
	fs.SetOutput(io.Discard)
	var cfg server.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:9000", "address of the Lambda API")
	fs.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "directory for all state")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "use this NATS server or cluster instead of the embedded one")
	fs.StringVar(&cfg.AccountsFile, "accounts", "", "JSON file declaring accounts and their access keys")
	fs.BoolVar(&cfg.NoDevAccount, "no-dev-account", false, "do not enable the development account (000000000000, key test/test) on loopback")
	fs.StringVar(&cfg.Region, "region", "us-east-1", "region named in every ARN")
	fs.IntVar(&cfg.AccountConcurrency, "account-concurrency", 1000, "concurrent executions per account")
	fs.DurationVar(&cfg.TransitionDelay, "state-transition-delay", 0, "hold new and updated functions in Pending/InProgress this long (testing waiters)")
	fs.StringVar(&cfg.Isolation, "isolation", "namespace", "execution backend: namespace (default, isolated sandboxes), microvm (each account's sandboxes inside QEMU microVMs of its own), process (development only: NO isolation) or none (control plane only); an account in --accounts may set its own \"isolation\"")
	fs.StringVar(&cfg.MicroVMAccel, "microvm-accel", "", "microVM accelerator: kvm, tcg, or empty to probe (KVM where a probe boot succeeds, else TCG emulation)")
	fs.IntVar(&cfg.MicroVMMemoryMB, "microvm-memory-mb", 1024, "memory of the smallest microVM; a VM grows to fit its largest function, an account gets more VMs as it needs")
	fs.DurationVar(&cfg.MicroVMIdleTimeout, "microvm-idle-timeout", time.Minute, "stop a microVM that has had no environment this long")
	fs.IntVar(&cfg.MicroVMUIDBase, "microvm-uid-base", 1_900_000, "host gid of the VMM processes and first of their uids (one per VM)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 10*time.Minute, "reap environments idle this long")
	fs.DurationVar(&cfg.MaxLifetime, "max-lifetime", 2*time.Hour, "retire every environment after this long")
	fs.IntVar(&cfg.CapacityMB, "capacity-mb", 0, "memory for environments on this node, in MB (0: 75% of RAM)")
	fs.DurationVar(&cfg.LogRetention, "log-retention", 7*24*time.Hour, "how long function logs are kept")
	fs.IntVar(&cfg.AsyncWorkers, "async-workers", 16, "asynchronous events run at once on this node")
	fs.Float64Var(&cfg.AsyncRetryScale, "async-retry-scale", 1, "multiply AWS's async retry delays (1 min, 2 min) by this (tests use small values)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on this address (off when empty)")
	fs.StringVar(&cfg.Subnet, "subnet", "", "IPv4 subnet of the environments' network (default 10.213.0.0/16)")
	fs.StringVar(&cfg.Firewall, "firewall", "auto", "environment firewall: auto (nftables, else iptables), nftables or iptables")
	fs.StringVar(&cfg.HostPorts, "host-ports", "", "TCP ports of this host that every environment may connect to, at host.nubo.internal (e.g. 5432,6379 for a database in development); none by default")
	fs.StringVar(&cfg.NetName, "net-name", "nubo", "name of the bridge, veths and firewall table (several nubo servers on one host need distinct names and subnets)")
	fs.IntVar(&cfg.SandboxUIDBase, "sandbox-uid-base", 2_000_000, "first host uid/gid mapped into sandboxes (each takes 1000; several servers on one host need distinct ranges)")
	fs.DurationVar(&cfg.TimerSlack, "timer-slack", nsbox.DefaultTimerSlack, "how late the kernel may fire a timer of a sandboxed process, to batch wake-ups (PR_SET_TIMERSLACK): fewer context switches for Go runtimes; a function's sleeps may last this much longer; 0 keeps nubo's own slack (the kernel's 50µs unless changed); namespace and microvm isolation")
	fs.BoolVar(&cfg.PlaceCPUs, "place-cpus", true, "namespace isolation: run each environment of at most one vCPU (MemorySize up to 1769) on one CPU, moved to a less busy one when its own is busier (an invocation longer than 50ms may use every CPU): fewer context switches, and runtimes size themselves to one CPU; false lets every environment use every CPU")
	compilePython := fs.Bool("compile-python", true, "namespace and process isolation: compile each Python function's .py files once per account, in a sandbox of its own, into __pycache__ beside them (the code stays read-only to the function): cold starts then import without compiling; false leaves compiling to every cold start")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "nubo serve: %v (see 'nubo serve -h')\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nubo serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.NoCompilePython = !*compilePython
	if cfg.TimerSlack < 0 || cfg.TimerSlack > maxTimerSlack {
		fmt.Fprintf(stderr, "nubo serve: --timer-slack %v: want 0 to %v\n", cfg.TimerSlack, maxTimerSlack)
		return 2
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "nubo serve: %v\n", err)
		return 2
	}
	cfg.Logger = logger
	var why string
	if cfg.SandboxAgent, why = embeddedAgent(); why != "" {
		logger.Info("sandboxes start from nubo's own binary, not the small agent executable", "why", why)
	}
	cfg.Procs = procs.New()
	if cfg.Procs != nil {
		narrow, wide := cfg.Procs.Sizes()
		logger.Debug("GOMAXPROCS follows the work (set GOMAXPROCS to fix it)", "narrow", narrow, "bulk", wide)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "nubo serve: %v\n", err)
		return 1
	}
	return 0
}

// maxTimerSlack bounds --timer-slack: more would let every sleep of a
// function end far too late.
const maxTimerSlack = 100 * time.Millisecond

func defaultDataDir() string {
	if d := os.Getenv("NUBO_DATA_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/nubo"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/nubo"
	}
	return ".nubo"
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
