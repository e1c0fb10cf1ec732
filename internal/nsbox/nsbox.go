package nsbox

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
	"github.com/nubo-dev/nubo/internal/cgroup"
	"github.com/nubo-dev/nubo/internal/getrandom"
	"github.com/nubo-dev/nubo/internal/rawio"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// Network wires a sandbox's network namespace to the host (package netenv).
type Network interface {
	// Attach connects the network namespace nsFD refers to (an open
	// /proc/<pid>/ns/net; the caller keeps it). Where the host has IPv6,
	// the sandbox's init has turned it off in the namespace's defaults
	// (net.ipv6.conf.default.disable_ipv6) already, so devices made there
	// are born without it (see earlyProc).
	Attach(nsFD int, id string) (detach func() error, err error)
}

// hostHasIPv6 reports whether the kernel has IPv6 (not ipv6.disable=1),
// which a sandbox with a network must then turn off (see Network).
var hostHasIPv6 = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return !errors.Is(err, fs.ErrNotExist)
})

// Config configures the backend.
type Config struct {
	// Dir holds per-environment directories and the generated /etc.
	Dir string
	// Cgroups creates each environment's cgroup; nil runs without (tests).
	Cgroups cgroup.Manager
	// Network attaches environments; nil leaves them with loopback only.
	Network Network
	// Seccomp is the compiled filter handed to every sandbox's init.
	Seccomp []byte
	// PlaceCPUs homes each sandbox entitled to at most one vCPU on one
	// CPU, moved when another is less busy (see placer); false lets every
	// sandbox run on every CPU.
	PlaceCPUs bool
	// TimerSlack is how late the kernel may fire a timer of a sandbox's
	// processes to batch its wake-up with others (PR_SET_TIMERSLACK; see
	// timerSlack); 0 leaves the one nubo has (the kernel's default is
	// 50 µs).
	TimerSlack time.Duration
	// UIDBase is the first host id mapped into sandboxes; sandbox n maps
	// ids 0–999 onto UIDBase+n*1000 ….
	UIDBase int
	// Slots bounds concurrent sandboxes (and the host id ranges used).
	Slots int
	// PoolVolumes caps the /tmp volumes made ahead per size (default 8;
	// negative: none, every sandbox makes its own).
	PoolVolumes int
	// PoolShells caps the sandboxes made ahead per /tmp size, waiting for a
	// function (default 16; negative: none). How many are kept follows the
	// largest recent burst of cold starts (see pool).
	PoolShells int
	// RuntimeDir is nubo's runtime clients, the same for every sandbox.
	RuntimeDir string
	// Agent is an executable holding only the spawner and the agent
	// (cmd/nubo-agent), run instead of nubo's own binary for every
	// sandbox; empty re-executes nubo itself. Both run the same code; the
	// small one starts faster and holds less memory in every environment
	// (see agentexe.go).
	Agent []byte
	// HostAddr, when valid, is the address HostName names in the
	// sandboxes' /etc/hosts: the host as environments reach it (their
	// gateway), where an operator may open ports (netenv.Config.HostPorts).
	HostAddr netip.Addr
	// ResolvConf, when set, is the sandboxes' resolv.conf; otherwise it
	// is the host's, from ResolvConf.
	ResolvConf string
	// WholeAgent runs the whole agent in every sandbox, serving the
	// Runtime API there, as nubo did before session 22. By default the
	// sandbox runs only the agent's keeper and this process supervises
	// it: the Runtime API is served here, on a listener the keeper made in
	// the sandbox's network namespace (see package agent's Supervise).
	WholeAgent bool
	Logger     *slog.Logger
}

// HostName names the host inside sandboxes, as host.docker.internal does
// in Docker's containers.
const HostName = "host.nubo.internal"

// DefaultTimerSlack is the timer slack `nubo serve` gives sandboxes unless
// told otherwise (Config.TimerSlack): 500 µs, against the kernel's 50 µs
// (see timerSlack for what it saves and what it costs).
const DefaultTimerSlack = 500 * time.Microsecond

// Backend is the namespace sandbox backend.
type Backend struct {
	cfg Config
	log *slog.Logger
	etc string
	// certs is the host's /etc/ssl/certs, bound on the sandbox's; empty
	// when the host has none.
	certs string
	land  []userlandEntry
	// agent is Config.Agent in a sealed memfd; nil: /proc/self/exe.
	agent *os.File
	// spawner clones the sandboxes (see spawner.go).
	spawner *spawner

	mu    sync.Mutex
	slots []bool
	live  map[*box]struct{}
	// volumes makes /tmp volumes; vols holds some made ahead.
	volumes *volumeMaker
	vols    *pool[*tmpVolume]
	shells  *pool[*box]
	// starting counts sandboxes handed out whose runtime has not finished
	// init: shells made ahead wait for it to fall to zero (see quiet).
	starting quiet
	// placer homes sandboxes on CPUs; nil when Config.PlaceCPUs is off or
	// nubo may run on one CPU only.
	placer *placer
}

// New prepares the backend: it removes leftovers of an earlier run under
// Dir, then generates the sandboxes' /etc.
func New(cfg Config) (*Backend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 2_000_000
	}
	if cfg.Slots == 0 {
		cfg.Slots = 4096
	}
	if err := Cleanup(cfg.Dir); err != nil {
		return nil, fmt.Errorf("cleanup %s: %w", cfg.Dir, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o711); err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, log: cfg.Logger, slots: make([]bool, cfg.Slots), live: map[*box]struct{}{},
		volumes: newVolumeMaker(filepath.Join(cfg.Dir, "templates"))}
	var err error
	if b.etc, err = writeEtc(filepath.Join(cfg.Dir, "etc"), cfg.HostAddr, cfg.ResolvConf, cfg.Logger); err != nil {
		return nil, err
	}
	if b.land, err = hostUserland(); err != nil {
		return nil, err
	}
	if st, err := os.Stat("/etc/ssl/certs"); err == nil && st.IsDir() {
		b.certs = "/etc/ssl/certs"
	}
	if len(cfg.Agent) > 0 {
		// Not fatal: nubo's own binary holds the same agent.
		if b.agent, err = sealedExecutable("nubo-agent", cfg.Agent); err != nil {
			b.log.Warn("cannot run the embedded sandbox agent; sandboxes start from nubo's own binary", "err", err)
		}
	}
	if b.spawner, err = newSpawner(b.agent, cfg.Logger); err != nil {
		if b.agent != nil {
			b.agent.Close()
		}
		return nil, err
	}
	if cfg.PlaceCPUs {
		b.placer = newPlacer(AllowedCPUs())
	}
	// Pools last: their refills make sandboxes from everything above.
	if n := orDefault(cfg.PoolVolumes, 8); n > 0 {
		b.vols = newVolPool(b.volumes, filepath.Join(cfg.Dir, "pool"), n, cfg.Logger.Warn)
	}
	if n := orDefault(cfg.PoolShells, 16); n > 0 {
		b.shells = newShellPool(b, n)
	}
	return b, nil
}

// Cleanup removes what a killed nubo left under dir: mounts (the /tmp
// volumes, whose loop devices then clear themselves) and files. Processes
// and cgroups are the cgroup manager's CleanupStale; links netenv's.
func Cleanup(dir string) error {
	if dir == "" {
		return errors.New("nsbox: no directory")
	}
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Name implements sandbox.Backend.
func (b *Backend) Name() string { return "namespace" }

// SeesHostCode implements sandbox.HostCode: /var/task and /opt are bind
// mounts of the host's directories.
func (b *Backend) SeesHostCode() bool { return true }

func (b *Backend) allocSlot() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, used := range b.slots {
		if !used {
			b.slots[i] = true
			return i, nil
		}
	}
	return 0, errors.New("nsbox: no free sandbox slot")
}

func (b *Backend) freeSlot(i int) {
	b.mu.Lock()
	b.slots[i] = false
	b.mu.Unlock()
}

// box is one sandbox.
type box struct {
	b     *Backend
	id    string
	slot  int
	pid   int      // of the init, later the agent (host pid namespace)
	pidfd *os.File // of the same process, in the network poller
	conn  *rawio.Quiet
	// keeper is what the sandbox's keeper handed over (nil with
	// Config.WholeAgent); root is the sandbox's root directory (O_PATH),
	// where extensions are looked for.
	keeper *agent.Keeper
	root   *os.File
	// up is package env's end of the connection to the agent's
	// supervisor, which runs here from Create on; supervised is closed
	// when it has returned.
	up         io.ReadWriteCloser
	supervised chan struct{}
	mntns      *os.File // the sandbox's mount namespace, for assign
	cg         cgroup.Cgroup
	vol        *tmpVolume
	detach     func() error
	paths      sandbox.Paths
	memMB      int
	tmpMB      int
	done       chan struct{}
	destroy    sync.Once

	// confineMu orders AfterInit's background cgroup moves against
	// Destroy, which sets destroyed. It also guards starting: the sandbox
	// counts in Backend.starting from Create until its init is over (or
	// it is destroyed).
	confineMu sync.Mutex
	destroyed bool
	starting  bool

	// placeMu guards home (the placer's index of the sandbox's CPU; -1:
	// every CPU), running (the home its invocation in flight began at, -1
	// for none), startedAt (when that one began), movedAt (its last move),
	// wide (let onto every CPU for a long invocation) and widen (the timer
	// that does that; see widenLong). It is taken before the placer's own
	// lock and never together with confineMu.
	placeMu   sync.Mutex
	home      int
	running   int
	startedAt time.Time
	movedAt   time.Time
	wide      bool
	widen     *time.Timer
}

// Expect implements sandbox.Expecting: the shell pool counts a take of
// spec's /tmp size as coming (see pool).
func (b *Backend) Expect(spec sandbox.Spec) {
	if b.shells != nil && !spec.NoNetwork {
		b.shells.announce(max(spec.EphemeralMB, 1))
	}
}

// Create implements sandbox.Backend. The shell comes from the pool (see
// pool): a ready one of the right /tmp size, else the first one made, by a
// refill under way or by a maker started for this call. Sandboxes without
// network are not pooled and are made on the spot. Either way the
// function's code is then handed to the shell (assign).
func (b *Backend) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	t0 := time.Now()
	tmpMB := max(spec.EphemeralMB, 1)
	var s *box
	var err error
	if b.shells != nil && !spec.NoNetwork {
		s, err = b.shells.get(ctx, tmpMB)
	} else {
		s, err = b.newShell(tmpMB, spec.NoNetwork, true)
	}
	if err != nil {
		return nil, err
	}
	tShell := time.Now()
	s.confineMu.Lock()
	if !s.destroyed {
		b.starting.enter()
		s.starting = true
	}
	s.confineMu.Unlock()
	if err := s.assign(spec); err != nil {
		s.Destroy()
		return nil, err
	}
	s.supervise()
	b.log.Debug("sandbox created", "env", s.id, "shell", tShell.Sub(t0), "assign", time.Since(tShell))
	return s, nil
}

// newShell makes a sandbox with everything but the function: /tmp volume,
// cgroup, namespaces, network, the root file system, and the agent started
// and waiting for Start; /var/task and /opt are empty until assign.
//
// A shell made ahead (not urgent) gets the lowest CPU weight until assign:
// on a small host, refills after a burst of cold starts would otherwise
// take the CPUs from the very cold starts they are meant to speed up (the
// agent's start, its share of a shell's cost, runs in the shell's cgroup).
// The weight orders work only under contention; an idle host makes shells
// as fast as before.
func (b *Backend) newShell(tmpMB int, noNetwork, urgent bool) (_ *box, err error) {
	slot, err := b.allocSlot()
	if err != nil {
		return nil, err
	}
	id := newShellID()
	s := &box{b: b, id: id, slot: slot, tmpMB: tmpMB, done: make(chan struct{}), home: -1, running: -1}
	defer func() {
		if err != nil {
			s.Destroy()
		}
	}()
	t0 := time.Now()
	base := b.cfg.UIDBase + slot*idRange
	if b.vols != nil {
		s.vol, _ = b.vols.take(tmpMB)
	}
	if s.vol != nil {
		if err := s.vol.own(base+SandboxUID, base+SandboxGID); err != nil {
			return nil, err
		}
	} else if s.vol, err = b.volumes.volume(filepath.Join(b.cfg.Dir, "vol", id+".img"), tmpMB, base+SandboxUID, base+SandboxGID); err != nil {
		return nil, err
	}
	tVol := time.Now()
	if b.cfg.Cgroups != nil {
		// The function's memory limit is set when the code arrives.
		r := cgroup.Resources{PidsMax: cgroup.MaxPids, IOWeight: 100}
		if !urgent {
			r.CPUWeight = shellCPUWeight
		}
		s.cg, err = b.cfg.Cgroups.Create(id, r)
		if err != nil {
			return nil, err
		}
	}
	cfg := initConfig{Root: "/tmp", Userland: b.land, Hostname: "sandbox", UID: SandboxUID, GID: SandboxGID,
		Seccomp: b.cfg.Seccomp, TimerSlackNs: b.cfg.TimerSlack.Nanoseconds()}
	if b.placer != nil {
		s.home = b.placer.home()
		cfg.CPUs = []int{b.placer.cpus[s.home]}
	}
	tCg := time.Now()
	if err := s.start(&cfg, base, noNetwork, urgent); err != nil {
		return nil, err
	}
	tStart := time.Now()
	if err := s.waitAgent(agentStartTimeout); err != nil {
		return nil, err
	}
	if !b.cfg.WholeAgent {
		if err := s.takeHandover(); err != nil {
			return nil, err
		}
	}
	b.log.Debug("shell created", "env", id, "tmp_volume", tVol.Sub(t0), "cgroup", tCg.Sub(tVol),
		"clone_and_wire", tStart.Sub(tCg), "agent", time.Since(tStart), "total", time.Since(t0))
	b.mu.Lock()
	b.live[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

// CPU weights (cgroup v2's scale): a shell made ahead, and every sandbox
// once it has a function (the kernel's default).
const (
	shellCPUWeight = 1
	envCPUWeight   = 100
)

// orDefault reads a pool size: 0 means def, negative means none.
func orDefault(n, def int) int {
	if n == 0 {
		return def
	}
	return max(n, 0)
}

func newShellID() string {
	var r [6]byte
	getrandom.Read(r[:])
	return "nubo-" + hex.EncodeToString(r[:])
}

// assign hands the function's code to a shell: detached, read-only mount
// trees of the code and layers are moved onto /var/task and /opt inside
// the sandbox's mount namespace, by the host (see moveMountsInto), and the
// cgroup gets the function's memory limit. The agent, already running,
// reads them once Start arrives.
func (s *box) assign(spec sandbox.Spec) error {
	if spec.RuntimeDir != s.b.cfg.RuntimeDir {
		return fmt.Errorf("nsbox: runtime dir %q differs from the backend's %q", spec.RuntimeDir, s.b.cfg.RuntimeDir)
	}
	s.memMB = spec.MemoryMB
	if cgroup.CPUMilliForMemory(spec.MemoryMB, runtime.NumCPU()) > 1000 {
		s.unplace()
	}
	if s.cg != nil {
		if err := s.cg.Set(cgroup.Resources{MemoryBytes: int64(spec.MemoryMB) << 20, PidsMax: cgroup.MaxPids,
			IOWeight: 100, CPUWeight: envCPUWeight}); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	var mounts []nsMount
	defer func() {
		for _, m := range mounts {
			m.tree.Close()
		}
	}()
	for _, m := range []struct{ dir, target string }{{spec.CodeDir, "/var/task"}, {spec.LayersDir, "/opt"}} {
		if m.dir == "" {
			continue
		}
		f, err := detachedMount(m.dir, true)
		if err != nil {
			return err
		}
		mounts = append(mounts, nsMount{tree: f, target: m.target})
	}
	if err := moveMountsInto(s.mntns, mounts); err != nil {
		return fmt.Errorf("hand code to sandbox %s: %w", s.id, err)
	}
	s.paths = sandbox.Paths{TaskRoot: "/var/task", OptDir: "/opt", RuntimeDir: "/var/runtime", TmpDir: "/tmp",
		RuntimeAPI: runtimeAPIAddr, HostTaskRoot: spec.CodeDir, HostOptDir: spec.LayersDir}
	return nil
}

// runtimeAPIAddr is where every sandbox's Runtime API listens, in its own
// network namespace; the agent listens there before it gets a function.
const runtimeAPIAddr = "127.0.0.1:9001"

// nsMount is a detached mount tree and where it goes in a sandbox.
type nsMount struct {
	tree   *os.File
	target string
}

// moveMountsInto attaches detached mount trees inside the mount namespace
// ns. move_mount only attaches to the caller's own namespace, so the host
// joins ns for the moves, on a thread of its own (see startMounter).
// Nothing inside the sandbox takes part: the sandbox keeps no privilege for
// it, and its agent holds none. The targets are resolved in the sandbox's
// root (setns makes it the thread's root), before any function code has
// run there.
func moveMountsInto(ns *os.File, mounts []nsMount) error {
	if len(mounts) == 0 {
		return nil
	}
	if ns == nil {
		return errors.New("no mount namespace")
	}
	// A descriptor of our own: a Destroy running meanwhile closes ns, and
	// its number could then name another sandbox's namespace.
	rc, err := ns.SyscallConn()
	if err != nil {
		return err
	}
	own := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { own, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("mount namespace: %w", derr)
	}
	defer unix.Close(own)
	mounterOnce.Do(startMounter)
	req := mountReq{ns: own, mounts: mounts, done: make(chan error, 1)}
	mounterReqs <- req
	return <-req.done
}

type mountReq struct {
	ns     int // owned by the caller until done
	mounts []nsMount
	done   chan error
}

var (
	mounterOnce sync.Once
	mounterReqs = make(chan mountReq)
)

// startMounter starts the process's mount thread: a goroutine locked for
// good to an OS thread that has its own file system context (setns into a
// mount namespace needs one; Go threads share theirs). Per request it
// joins the sandbox's mount namespace, moves the trees, and returns to the
// host's namespace (it must not keep a dead sandbox's mounts alive). The
// goroutine never ends: a Go thread exits with a goroutine that ends
// locked, and a thread's exit sends the parent-death signal to every child
// it ever forked (this one may have forked sandboxes before being locked).
func startMounter() {
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		host, err := setupMounter()
		for req := range mounterReqs {
			if err != nil {
				req.done <- fmt.Errorf("mount thread: %w", err)
				continue
			}
			merr := mountIn(req)
			// Back home before answering: the caller may destroy the
			// sandbox at once.
			if berr := unix.Setns(host, unix.CLONE_NEWNS); berr != nil {
				// Stranded in a sandbox's namespace: refuse all further work.
				err = fmt.Errorf("return to the host mount namespace: %w", berr)
				merr = errors.Join(merr, err)
			}
			req.done <- merr
		}
	}()
}

func setupMounter() (host int, err error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return -1, fmt.Errorf("unshare fs: %w", err)
	}
	host, err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("host mount namespace: %w", err)
	}
	return host, nil
}

func mountIn(req mountReq) error {
	if err := unix.Setns(req.ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("join mount namespace: %w", err)
	}
	for _, m := range req.mounts {
		if err := unix.MoveMount(int(m.tree.Fd()), "", unix.AT_FDCWD, m.target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount %s: %w", m.target, err)
		}
	}
	return nil
}

// agentStartTimeout bounds how long a new sandbox's agent may take to say
// Ready (a Go program's start, on a loaded host).
const agentStartTimeout = 30 * time.Second

// waitAgent waits until the sandbox has written to its connection: the
// init's netReadyByte (readNetReady), or, after it, the agent's Ready
// frame, which the agent sends first. The input is only peeked at, and
// left for its reader. The wait parks a goroutine in the runtime's
// network poller, holding no thread.
func (s *box) waitAgent(timeout time.Duration) error {
	data, err := s.conn.WaitInput(time.Now().Add(timeout))
	switch {
	case err != nil:
		return fmt.Errorf("sandbox %s: wait for the agent: %w", s.id, err)
	case !data:
		return fmt.Errorf("sandbox %s: the init exited before the agent started", s.id)
	}
	return nil
}

// start launches the sandbox's init in new namespaces, places it, and
// releases it. An urgent sandbox (one an invocation waits for) gets a
// keeper that skips its warm-up (see agent.Keep).
func (s *box) start(cfg *initConfig, base int, noNetwork, urgent bool) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// Non-blocking, and waited on through the runtime's network poller
	// without being in it (rawio.Quiet, which sets the flag): waiting on an
	// agent parks a goroutine instead of holding a thread in read(2), and
	// the agent's reads do not wake nubo serve. The agent makes its end
	// Quiet too.
	s.conn, err = rawio.NewQuiet(fds[0], "agent-host")
	if err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return fmt.Errorf("sandbox %s: the agent's connection: %w", s.id, err)
	}
	child := os.NewFile(uintptr(fds[1]), "agent-child")
	defer child.Close()
	relR, relW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer relR.Close()
	defer relW.Close()

	// The agent executable runs the agent from its main; nubo's own
	// binary (no executable of its own) from an initialiser.
	how := sandbox.AgentInInit
	if s.b.agent != nil {
		how = sandbox.AgentInMain
	}
	env := []string{sandbox.AgentEnv + "=" + how, "GOMAXPROCS=1", "PATH=/usr/local/bin:/usr/bin:/bin",
		agent.RuntimeAPIEnv + "=" + runtimeAPIAddr}
	if !s.b.cfg.WholeAgent {
		role := sandbox.AgentKeeper
		if urgent {
			role = sandbox.AgentKeeperNow
		}
		env = append(env, sandbox.AgentRoleEnv+"="+role)
	}
	if os.Getenv(sandbox.AgentDebugEnv) != "" {
		env = append(env, sandbox.AgentDebugEnv+"=1")
	}
	wired := s.b.cfg.Network != nil && !noNetwork
	cfg.NoIPv6 = wired && hostHasIPv6()
	req := spawnRequest{Init: cfg, Args: []string{"nubo-agent"}, Env: env, IDBase: base, IDSize: idRange}
	files := []*os.File{child, relR}
	// Host directories go as detached mounts (see initConfig).
	for _, m := range []struct {
		dir string
		idx *int
		ro  bool
	}{{s.b.etc, &cfg.Etc, true}, {s.b.certs, &cfg.Certs, true}, {s.b.cfg.RuntimeDir, &cfg.Runtime, true}} {
		if m.dir == "" {
			continue
		}
		f, err := detachedMount(m.dir, m.ro)
		if err != nil {
			return err
		}
		defer f.Close()
		*m.idx = len(files)
		files = append(files, f)
	}
	// The /tmp volume is one already (see tmpVolume).
	if s.vol != nil {
		cfg.Tmp = len(files)
		files = append(files, s.vol.tree)
	}
	// Its stderr is logged line by line.
	logR, logW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer logW.Close()
	go func() {
		io.Copy(&logWriter{log: s.b.log, id: s.id}, logR)
		logR.Close()
	}()
	// On cgroup v2 the child is cloned straight into its cgroup; on v1 it
	// is moved there below, before it is released.
	var cgDir *os.File
	if s.cg != nil {
		if dir, err := s.cg.OpenDir(); err == nil {
			defer dir.Close()
			cgDir = dir
		}
	}
	t0 := time.Now()
	pid, pidfd, err := s.b.spawner.spawn(req, logW, files, cgDir)
	if err != nil {
		return fmt.Errorf("start sandbox init: %w", err)
	}
	tStart := time.Now()
	s.pid, s.pidfd = pid, pidfd
	// The init has its end now: ours would hide its death from the wait
	// for its byte below.
	child.Close()
	go func() {
		pidfdWait(pidfd)
		close(s.done)
	}()
	// The pid is the sandbox's as long as its process lives (the spawner
	// reaps it only after its end): checked through the pidfd once the
	// namespaces are open, which then stay the sandbox's whatever happens
	// to the pid.
	s.mntns, err = os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	var netns *os.File
	if err == nil {
		netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	}
	if netns != nil {
		defer netns.Close()
	}
	if err == nil && !pidfdUnreaped(pidfd) {
		err = errors.New("the sandbox's init is gone")
	}
	if err != nil {
		return fmt.Errorf("sandbox namespaces: %w", err)
	}
	if s.cg != nil && cgDir == nil {
		// cgroup v1 names the process by pid: still ours if it has not
		// been reaped since (it waits for its release, so only a kill ends
		// it early).
		if err := s.cg.AddProc(pid); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if !pidfdUnreaped(pidfd) {
			return errors.New("the sandbox's init is gone")
		}
	}
	tCg := time.Now()
	// The init's first byte says its namespace is ready to be wired (see
	// earlyProc); read off before the agent's frames, which follow it.
	if err := s.readNetReady(); err != nil {
		return err
	}
	tReady := time.Now()
	if wired {
		if s.detach, err = s.b.cfg.Network.Attach(int(netns.Fd()), s.id); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	if _, err := relW.Write([]byte{1}); err != nil {
		return fmt.Errorf("release sandbox init: %w", err)
	}
	s.b.log.Debug("sandbox started", "env", s.id, "clone_exec", tStart.Sub(t0), "cgroup", tCg.Sub(tStart), "init_ready", tReady.Sub(tCg), "network", time.Since(tReady))
	return nil
}

// readNetReady reads the init's netReadyByte off the agent's connection.
func (s *box) readNetReady() error {
	if err := s.waitAgent(agentStartTimeout); err != nil {
		return err
	}
	var b [1]byte
	if n, err := s.conn.Read(b[:]); err != nil || n != 1 || b[0] != netReadyByte {
		return fmt.Errorf("sandbox %s: the init's first byte: %q, %v", s.id, b[:n], err)
	}
	return nil
}

// coldStartOver ends the sandbox's count in Backend.starting, once.
func (s *box) coldStartOver() {
	s.confineMu.Lock()
	defer s.confineMu.Unlock()
	if s.starting {
		s.starting = false
		s.b.starting.leave()
	}
}

func (s *box) ID() string { return s.id }

// Conn is the connection to the agent: its supervisor's (see supervise),
// or the whole agent's in the sandbox.
func (s *box) Conn() io.ReadWriteCloser {
	if s.up != nil {
		return s.up
	}
	return s.conn
}

func (s *box) Paths() sandbox.Paths  { return s.paths }
func (s *box) Done() <-chan struct{} { return s.done }

// AfterInit applies the CPU quota: proportional to memory, as Lambda
// allots it, but only once init is over (init runs unthrottled), and only
// to the agent's children — the runtime and extensions, which run the
// function's code — so the agent's own work is not charged to the
// function. It is called again after a runtime restart.
//
// The move happens in the background: on cgroup v1 a write to cgroup.procs
// waits for an RCU grace period (1–20 ms here), which would otherwise sit
// between init and the first invocation. Until it lands the runtime runs
// unthrottled, as it did during init.
func (s *box) AfterInit() error {
	s.coldStartOver()
	if s.cg == nil || s.pidfd == nil {
		return nil
	}
	_, kids, err := threadsOf(s.pid)
	if err != nil {
		return err
	}
	if !pidfdUnreaped(s.pidfd) {
		return errors.New("the sandbox's agent is gone") // its pid may name another process now
	}
	milli := cgroup.CPUMilliForMemory(s.memMB, runtime.NumCPU())
	go func() {
		s.confineMu.Lock()
		defer s.confineMu.Unlock()
		if s.destroyed {
			return
		}
		if err := s.cg.Confine(kids, milli); err != nil {
			s.b.log.Warn("applying the CPU quota", "env", s.id, "err", err)
		}
	}()
	return nil
}

func (s *box) Freeze() error {
	if s.cg == nil {
		return nil
	}
	return s.cg.Freeze()
}

func (s *box) Thaw() error {
	if s.cg == nil {
		return nil
	}
	return s.cg.Thaw()
}

func (s *box) Stats() (sandbox.Stats, error) {
	if s.cg == nil {
		return sandbox.Stats{}, nil
	}
	peak, ooms, err := s.cg.Memory()
	return sandbox.Stats{MemoryPeak: peak, OOMKilled: ooms}, err
}

// MemoryPeak implements sandbox.PeakReader.
func (s *box) MemoryPeak() (uint64, error) {
	if s.cg == nil {
		return 0, nil
	}
	return s.cg.MemoryPeak()
}

// Destroy kills the sandbox's PID 1 (the kernel then kills the whole pid
// namespace) and removes everything the sandbox had on the host.
func (s *box) Destroy() error {
	var errs []error
	s.destroy.Do(func() {
		// No quota may be applied from here on (see AfterInit), and the
		// sandbox no longer counts as starting.
		s.confineMu.Lock()
		s.destroyed = true
		up := s.up // set under confineMu (supervise)
		s.confineMu.Unlock()
		s.coldStartOver()
		s.placeMu.Lock()
		if s.home >= 0 {
			s.b.placer.leave(s.home)
			s.home = -1
		}
		if s.widen != nil {
			s.widen.Stop()
		}
		s.placeMu.Unlock()
		if s.pidfd != nil {
			pidfdKill(s.pidfd)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("sandbox %s: init did not exit", s.id))
			}
		}
		if s.pidfd != nil {
			s.pidfd.Close()
		}
		// The supervisor ends once its connection is closed and the
		// sandbox's processes are dead (their ends reach it through the
		// keeper's connection, closed by the kernel).
		if up != nil {
			up.Close()
			select {
			case <-s.supervised:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("sandbox %s: its supervisor did not end", s.id))
			}
		} else if s.keeper != nil {
			s.keeper.Close()
		}
		if s.root != nil {
			s.root.Close()
		}
		if s.conn != nil {
			s.conn.Close()
		}
		if s.mntns != nil {
			s.mntns.Close()
		}
		if s.cg != nil {
			if err := s.cg.Kill(); err != nil {
				errs = append(errs, err)
			}
			if err := s.cg.Delete(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.detach != nil {
			if err := s.detach(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.vol != nil {
			if err := s.vol.destroy(); err != nil {
				errs = append(errs, err)
			}
		}
		s.b.freeSlot(s.slot)
		s.b.mu.Lock()
		delete(s.b.live, s)
		s.b.mu.Unlock()
	})
	return errors.Join(errs...)
}

// Close destroys every live sandbox and removes the backend's directory.
func (b *Backend) Close() error {
	if b.shells != nil {
		b.shells.close() // first: a refill may add to the live list
	}
	b.mu.Lock()
	live := make([]*box, 0, len(b.live))
	for s := range b.live {
		live = append(live, s)
	}
	b.mu.Unlock()
	var errs []error
	for _, s := range live {
		errs = append(errs, s.Destroy())
	}
	if b.vols != nil {
		b.vols.close()
	}
	b.spawner.close()
	if b.agent != nil {
		b.agent.Close()
	}
	errs = append(errs, Cleanup(b.cfg.Dir))
	return errors.Join(errs...)
}

// detachedMount clones the mount of dir into a detached mount tree (not
// attached anywhere) with the sandbox's mount flags already set, ready for
// the init to move_mount into place. Done here, by the host's root:
// the sandbox's own root user is an unprivileged host id that may not even
// be able to traverse dir's parents (a data dir under a 0700 home), and a
// plain fd would not do, since bind mounts cannot take a source from
// another mount namespace while detached trees can be attached anywhere.
func detachedMount(dir string, readOnly bool) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", dir, err)
	}
	// Private: the clone shares no propagation with the host's mount.
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: unix.MS_PRIVATE}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount_setattr %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// logWriter logs a sandbox's stderr (its init and agent) line by line.
type logWriter struct {
	log *slog.Logger
	id  string
	mu  sync.Mutex
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	sc := bufio.NewScanner(strings.NewReader(string(w.buf)))
	consumed := 0
	for sc.Scan() {
		line := sc.Text()
		if consumed+len(line) >= len(w.buf) {
			break // unterminated: keep for later
		}
		consumed += len(line) + 1
		w.log.Warn("sandbox", "env", w.id, "msg", line)
	}
	w.buf = w.buf[consumed:]
	if len(w.buf) > 64<<10 {
		w.buf = nil
	}
	return len(p), nil
}
