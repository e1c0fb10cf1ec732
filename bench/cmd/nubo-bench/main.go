// Command nubo-bench measures nubo against its peers in one run and prints
// the figures of the performance issue: warm invoke latency and throughput
// against the AWS Lambda Runtime Interface Emulator (RIE), cold start
// against the RIE's process start and `crun run /bin/true`, the rate at
// which environments are made and the idle host memory each one holds, and
// the warm and cold figures of the Python and Node runtimes.
//
// It is a program, not a test: it asserts nothing, it prints a table
// (figure, nubo, peer, ratio, target, pass/fail), and writes the raw
// samples as JSON and the distributions as an SVG chart under --out.
// `make bench` installs the peers, builds everything and runs it as root.
//
// Invariants:
//   - nubo is driven only through its public Lambda API, every request
//     SigV4-signed as a real client signs it; the signing is timed too.
//   - Peers and nubo are measured in the same run in alternating blocks;
//     the machine is shared and noisy, so only ratios within one run mean
//     anything, and the JSON keeps every sample so they can be rechecked.
//   - Nothing outlives the run: every nubo is stopped with SIGTERM and
//     waited for, every emulator and runtime killed and reaped, every crun
//     container removed, the temporary directory deleted (after checking
//     nothing is still mounted under it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	nuboBin, rieBin, echoBin, crunBin string
	timingBin                         string
	hopfloorBin                       string
	functionsDir, outDir              string
	figures                           map[int]bool
	quick                             bool
	warm, cold, envs                  int
	block, coldBlock                  int
	envConcurrency, envBursts         int
	concurrencies                     []int
	tputRounds                        int
	tputDuration                      time.Duration
	keepTemp                          bool
	nuboArgs                          []string
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "nubo-bench: "+format+"\n", a...)
}

func cores() int { return runtime.NumCPU() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == crunHelperArg {
		os.Exit(crunHelperMain(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// memoryMB is the MemorySize every measured function gets.
var memoryMB = 1769

func run(args []string) int {
	fs := flag.NewFlagSet("nubo-bench", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.nuboBin, "nubo", "bin/nubo", "the nubo binary to measure")
	fs.StringVar(&c.rieBin, "rie", "bench/.bin/aws-lambda-rie", "the aws-lambda-rie binary")
	fs.StringVar(&c.hopfloorBin, "hopfloor", "bench/.bin/hopfloor", "the hopfloor command (go build ./bench/cmd/hopfloor), whose least servers are figure 1's floors")
	fs.StringVar(&c.echoBin, "echo", "bench/.bin/echo-bootstrap", "the aws-lambda-go echo bootstrap (go build ./bench/echo)")
	fs.StringVar(&c.timingBin, "timing", "bench/.bin/timing-bootstrap", "the bootstrap that answers with its own times, for figure 3's cold start parts (go build ./bench/timing)")
	fs.StringVar(&c.crunBin, "crun", "", "the crun binary (default: crun on the PATH)")
	fs.StringVar(&c.functionsDir, "functions", "bench/functions", "directory with the python/ and node/ echo handlers")
	fs.StringVar(&c.outDir, "out", "bench/results", "directory for <timestamp>.json and <timestamp>.svg")
	figs := fs.String("figures", "1,2,3,4,5", "figures to run (comma-separated, 1-5)")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: 200 warm / 20 cold samples, 50 environments, short throughput rounds")
	fs.IntVar(&c.warm, "warm", 0, "warm samples per series (default 3000, --quick 200)")
	fs.IntVar(&c.cold, "cold", 0, "cold samples per series (default 200, --quick 20)")
	fs.IntVar(&c.envs, "envs", 0, "environments for figure 4 (default 200, --quick 50)")
	fs.IntVar(&c.block, "block", 50, "warm samples per interleaved block")
	fs.IntVar(&c.coldBlock, "cold-block", 10, "cold samples per interleaved block")
	fs.IntVar(&c.envConcurrency, "env-concurrency", 8, "first invokes in flight at once in figure 4")
	fs.IntVar(&c.envBursts, "env-bursts", 0, "bursts of figure 4, each of --envs new functions; the rate is their median (default 3, --quick 1)")
	conc := fs.String("concurrency", "1,4,16,64", "nubo concurrencies for figure 2")
	fs.IntVar(&c.tputRounds, "tput-rounds", 0, "throughput rounds (default 3, --quick 1)")
	fs.DurationVar(&c.tputDuration, "tput-duration", 0, "time per throughput target per round (default 2s, --quick 500ms)")
	fs.IntVar(&memoryMB, "memory", 1769, "MemorySize of the measured functions: 1769 MB is one full vCPU, as the emulator is unlimited; smaller sizes measure Lambda's proportional CPU quota too")
	fs.BoolVar(&c.keepTemp, "keep-temp", false, "keep the temporary directory (nubo and RIE logs) for inspection")
	nuboArgs := fs.String("nubo-args", "", "extra `nubo serve` flags, space-separated (for investigation; the figures are defined with the defaults)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	c.nuboArgs = strings.Fields(*nuboArgs)
	c.figures = map[int]bool{}
	fl, err := parseInts(*figs)
	if err != nil {
		logf("--figures: %v", err)
		return 2
	}
	for _, f := range fl {
		if f > 5 {
			logf("--figures: no figure %d", f)
			return 2
		}
		c.figures[f] = true
	}
	if c.concurrencies, err = parseInts(*conc); err != nil {
		logf("--concurrency: %v", err)
		return 2
	}
	def := func(v *int, full, quick int) {
		if *v <= 0 {
			*v = full
			if c.quick {
				*v = quick
			}
		}
	}
	def(&c.warm, 3000, 200)
	def(&c.cold, 200, 20)
	def(&c.envs, 200, 50)
	def(&c.envBursts, 3, 1)
	def(&c.tputRounds, 3, 1)
	if c.tputDuration <= 0 {
		c.tputDuration = 2 * time.Second
		if c.quick {
			c.tputDuration = 500 * time.Millisecond
		}
	}
	if c.crunBin == "" {
		c.crunBin, _ = exec.LookPath("crun")
	}
	if os.Geteuid() != 0 {
		logf("must run as root: nubo's namespace sandboxes and crun need it")
		return 2
	}
	for _, p := range []*string{&c.nuboBin, &c.rieBin, &c.hopfloorBin, &c.echoBin, &c.functionsDir, &c.outDir} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	for _, need := range []string{c.nuboBin, c.echoBin} {
		if _, err := os.Stat(need); err != nil {
			logf("%v (make bench builds it)", err)
			return 2
		}
	}
	if _, err := os.Stat(c.rieBin); err != nil && (c.figures[1] || c.figures[2] || c.figures[3]) {
		logf("%v (make bench installs it)", err)
		return 2
	}

	c.nuboArgs = append(coexistArgs(c.nuboBin), c.nuboArgs...)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return measure(ctx, c)
}

func measure(ctx context.Context, c config) int {
	tmp, err := os.MkdirTemp("", "nubo-bench-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	res := newResults()
	b := &bench{cfg: c, tmp: tmp, res: res, payload: payload100()}
	code := 0
	defer func() {
		b.stopAll()
		cleanTemp(tmp, c.keepTemp)
	}()
	if err := b.prepare(); err != nil {
		logf("prepare: %v", err)
		return 1
	}
	res.Host = hostInfo()
	if us, err := pageTouchMicros(); err == nil {
		res.Host["page_first_touch_us_start"] = us
		logf("a fresh page's first touch costs %.2f µs here (bare metal: about 0.1–0.5)", us)
	}
	machineWake(res.Host, "start")
	res.Config = map[string]any{
		"figures": c.figures, "quick": c.quick, "warm_samples": c.warm, "cold_samples": c.cold, "environments": c.envs,
		"block": c.block, "cold_block": c.coldBlock, "env_concurrency": c.envConcurrency, "env_bursts": c.envBursts, "concurrencies": c.concurrencies,
		"nubo_args": c.nuboArgs, "tput_rounds": c.tputRounds, "tput_duration": c.tputDuration.String(), "payload_bytes": len(b.payload),
	}
	res.Versions = versions(c)
	res.Methods = methods(c)

	steps := []struct {
		on   bool
		name string
		f    func(context.Context) error
	}{
		{c.figures[1] || c.figures[5], "warm (figures 1, 5)", b.figWarm},
		{c.figures[2], "throughput (figure 2)", b.figThroughput},
		{c.figures[3] || c.figures[5], "cold (figures 3, 5)", b.figCold},
		{c.figures[4], "environments (figure 4)", b.figEnvs},
	}
	for _, s := range steps {
		if !s.on || ctx.Err() != nil {
			continue
		}
		t0 := time.Now()
		logf("== %s", s.name)
		if err := s.f(ctx); err != nil {
			res.errorf("%s: %v", s.name, err)
			code = 1
		}
		logf("== %s done in %.1fs", s.name, time.Since(t0).Seconds())
	}
	for _, s := range res.order {
		if s.Err != "" {
			res.Errors = append(res.Errors, s.Name+": "+s.Err)
			code = 1
		}
	}
	if us, err := pageTouchMicros(); err == nil {
		res.Host["page_first_touch_us_end"] = us
	}
	machineWake(res.Host, "end")
	res.Finished = time.Now()
	res.summarizePhases()
	res.summarizeParts()
	res.buildRows(c.figures)

	fmt.Println()
	res.printTable(os.Stdout)
	res.printDetails(os.Stdout)
	fmt.Println("\nmethod:")
	for _, m := range res.Methods {
		fmt.Println("  - " + m)
	}
	if len(res.Errors) > 0 {
		fmt.Println("\nerrors:")
		for _, e := range res.Errors {
			fmt.Println("  - " + e)
		}
	}
	if err := os.MkdirAll(c.outDir, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	stamp := res.Started.UTC().Format("20060102T150405Z")
	jp := filepath.Join(c.outDir, stamp+".json")
	sp := filepath.Join(c.outDir, stamp+".svg")
	if err := res.writeJSON(jp); err != nil {
		logf("write %s: %v", jp, err)
		return 1
	}
	if err := writeSVG(sp, res); err != nil {
		logf("write %s: %v", sp, err)
		return 1
	}
	fmt.Printf("\nresults: %s\nchart:   %s\n", jp, sp)
	if len(res.Errors) > 0 {
		// The temporary directory goes away; the logs that explain the
		// errors must not.
		ld := filepath.Join(c.outDir, stamp+"-logs")
		if n := keepLogs(tmp, ld); n > 0 {
			fmt.Printf("logs:    %s (%d files, kept because of the errors above)\n", ld, n)
		}
	}
	if ctx.Err() != nil {
		return 130
	}
	return code
}

// goBootstrap makes a provided.al2023 function of the bootstrap at bin, and
// writes a copy of it at copyTo (in one write, see copyFile) for what runs
// it outside nubo: the emulator and the least cold starts, which start it
// from "/", so copyTo is absolute.
func goBootstrap(bin, copyTo string) (functionSpec, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return functionSpec{}, err
	}
	z, err := zipOf(map[string][]byte{"bootstrap": exe}, map[string]bool{"bootstrap": true})
	if err != nil {
		return functionSpec{}, err
	}
	if err := os.MkdirAll(filepath.Dir(copyTo), 0o755); err != nil {
		return functionSpec{}, err
	}
	if err := os.WriteFile(copyTo, exe, 0o755); err != nil {
		return functionSpec{}, err
	}
	return functionSpec{Runtime: "provided.al2023", Handler: "bootstrap", Zip: z}, nil
}

// prepare builds the deployment packages and the emulator's task root.
func (b *bench) prepare() error {
	var err error
	if b.echo, err = goBootstrap(b.cfg.echoBin, b.rieBootstrap()); err != nil {
		return err
	}
	// The pinned floor of figure 3's parts runs a copy, as the echo floors
	// run the emulator's; without one the parts fail, not the figures.
	b.timing, b.timingErr = goBootstrap(b.cfg.timingBin, b.timingBootstrap())
	py, err := os.ReadFile(filepath.Join(b.cfg.functionsDir, "python", "lambda_function.py"))
	if err != nil {
		return err
	}
	if b.py.Zip, err = zipOf(map[string][]byte{"lambda_function.py": py}, nil); err != nil {
		return err
	}
	b.py.Handler = "lambda_function.lambda_handler"
	if b.pyPkg.Zip, err = zipOf(pkgSources(), nil); err != nil {
		return err
	}
	b.pyPkg.Handler = "lambda_function.lambda_handler"
	js, err := os.ReadFile(filepath.Join(b.cfg.functionsDir, "node", "index.js"))
	if err != nil {
		return err
	}
	if b.node.Zip, err = zipOf(map[string][]byte{"index.js": js}, nil); err != nil {
		return err
	}
	b.node.Handler = "index.handler"
	return nil
}

// versions records what was measured: nubo's build, the emulator's module
// version and crun's version line.
func versions(c config) map[string]any {
	v := map[string]any{"go": runtime.Version()}
	if out, err := exec.Command("go", "version", "-m", c.rieBin).Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "mod" {
				v["aws-lambda-rie"] = f[1] + "@" + f[2]
			}
		}
	}
	if out, err := exec.Command("go", "version", "-m", c.nuboBin).Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.") {
				if k, val, ok := strings.Cut(f[1], "="); ok {
					v["nubo."+strings.TrimPrefix(k, "vcs.")] = val
				}
			}
		}
	}
	if c.crunBin != "" {
		if out, err := exec.Command(c.crunBin, "--version").Output(); err == nil {
			v["crun"] = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		}
	}
	return v
}

// cleanTemp removes the run's directory unless something is still mounted
// under it (a nubo that failed to clean up): removing through a live mount
// would hide the leak and could fail half-way.
func cleanTemp(dir string, keep bool) {
	if keep {
		logf("kept %s", dir)
		return
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				logf("not removing %s: %s is still mounted", dir, f[4])
				return
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		logf("remove %s: %v", dir, err)
	}
}

// coexistArgs gives the benchmark's nubo servers a bridge, subnet and host
// uid range of their own, when this nubo has those flags, so a run neither
// disturbs nor is disturbed by another nubo on the same host (`make run`,
// a test suite): servers sharing them would tear down each other's
// network. Each server of the run is stopped before the next starts, so
// one set serves them all.
func coexistArgs(bin string) []string {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	has := func(f string) bool { return strings.Contains(string(out), "\n  -"+f+" ") }
	var args []string
	if has("net-name") && has("subnet") {
		args = append(args, "--net-name", "nbench", "--subnet", "10.214.0.0/16")
	}
	if has("sandbox-uid-base") {
		args = append(args, "--sandbox-uid-base", "900000000")
	}
	return args
}

// keepLogs copies every *.log of the run's directory to dst.
func keepLogs(tmp, dst string) int {
	n := 0
	filepath.WalkDir(tmp, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		// Sandboxes' and NATS's own directories hold no log of ours.
		if d.IsDir() && d.Name() == "data" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".log") {
			rel, _ := filepath.Rel(tmp, p)
			if copyFile(p, filepath.Join(dst, strings.ReplaceAll(rel, "/", "-"))) == nil {
				n++
			}
		}
		return nil
	})
	return n
}
