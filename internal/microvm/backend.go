package microvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/cgroup"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// maxVMs bounds the VMs of one backend (and the VMM uids it uses:
// UIDBase+1 … UIDBase+maxVMs-1).
const maxVMs = 10000

// BackendConfig configures the microVM backend.
type BackendConfig struct {
	// Dir holds the guest images and one directory per running VM.
	Dir string
	// Kernel is the guest kernel; default FindKernel.
	Kernel string
	// Accel is "kvm", "tcg" or "" (probe: KVM where a probe boot reaches
	// the guest's init, TCG otherwise).
	Accel string
	// MemoryMB is the smallest guest (default 1024); a VM grows to fit a
	// larger function. GuestOverheadMB is what the guest's kernel and agent
	// keep for themselves (default 256).
	MemoryMB        int
	GuestOverheadMB int
	// CPUs per VM (default: the host's, at most 2, under KVM; 1 under
	// TCG, where two emulated vCPUs on a busy 2-core host were seen
	// spinning for minutes, never reaching the guest agent).
	CPUs int
	// Ledger is the node's memory budget, shared with the worker pool:
	// each VM charges its memory to it (the backend is a sandbox.Charger).
	// A VM that does not fit first stops idle VMs, oldest first; if that
	// is not enough, the sandbox is refused with sandbox.ErrNoRoom: the
	// worker pool then shuts down idle environments (which frees their
	// memory, or idles their VM) and tries again, and failing that answers
	// TooManyRequestsException. When nil, one of CapacityMB is made.
	Ledger *sandbox.Ledger
	// CapacityMB bounds the memory of all VMs together when there is no
	// Ledger (0: no bound).
	CapacityMB int
	// IdleTimeout stops a VM that has had no sandbox for this long
	// (default 60 s).
	IdleTimeout time.Duration
	// BootTimeout bounds a boot (default 3 minutes: emulated guests on a
	// loaded host are slow).
	BootTimeout time.Duration
	// RuntimeDir is nubo's runtime clients, sent to every guest.
	RuntimeDir string
	// Cgroups, when set, gives every VMM a cgroup of its own.
	Cgroups cgroup.Manager
	// Network, when set, puts every VM on the environments' network (a tap
	// device on the host bridge); without it functions have loopback only.
	Network Network
	// UIDBase: the VMMs run as group UIDBase and users UIDBase+1, +2, …
	// (default 1,900,000).
	UIDBase int
	// Self is the binary used as the guest's /init and the VMM launcher
	// (default: this executable).
	Self string
	// TimerSlack is the guest's sandboxes' timer slack
	// (nsbox.Config.TimerSlack); 0 leaves the guest kernel's default.
	TimerSlack time.Duration
	Logger     *slog.Logger
}

// Network gives VMs a tap device on the host's environment network.
type Network interface {
	// AttachTap makes the tap for VM id; the VMM gets tap. detach removes
	// the device and frees its address.
	AttachTap(id string) (tap *os.File, guest GuestNet, detach func() error, err error)
}

// Backend runs each account's sandboxes in microVMs of that account only.
type Backend struct {
	cfg BackendConfig
	log *slog.Logger

	prepMu   sync.Mutex
	prepared bool
	initrd   string
	userland string
	kernel   string // the guest kernel, copied where the VMMs can read it
	accel    Accel

	stops sync.WaitGroup // VM stops in flight (idle, dead) and the first prepare

	prepCtx    context.Context // ends with Close
	prepCancel context.CancelFunc
	uids       map[int]bool // VMM uids in use (offsets from UIDBase)

	// bootVM boots a reserved guest (g.boot; tests replace it).
	bootVM func(*guest)

	mu     sync.Mutex
	guests map[string][]*guest // by account
	nextVM int
	closed bool
}

// NewBackend prepares the backend; VMs start on demand.
func NewBackend(cfg BackendConfig) (*Backend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.GuestOverheadMB == 0 {
		cfg.GuestOverheadMB = 256
	}
	if cfg.Ledger == nil {
		cfg.Ledger = sandbox.NewLedger(cfg.CapacityMB)
	}
	// CPUs 0: chosen once the accelerator is known (see vcpus).
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 3 * time.Minute
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 1_900_000
	}
	if cfg.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Self = self
	}
	if cfg.Kernel == "" {
		k, err := FindKernel()
		if err != nil {
			return nil, err
		}
		cfg.Kernel = k
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return nil, fmt.Errorf("microvm: %s not found (install qemu-system-x86): %w", QEMU, err)
	}
	// What a killed nubo left: VM directories (their QEMUs died with it)
	// and images (rebuilt once, on the first VM).
	if old, _ := filepath.Glob(filepath.Join(cfg.Dir, "vm-*")); len(old) > 0 {
		for _, d := range old {
			unix.Unmount(filepath.Join(d, "root"), unix.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o711); err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, log: cfg.Logger.With("backend", "microvm"), guests: map[string][]*guest{},
		uids: map[int]bool{}, bootVM: (*guest).boot}
	// Images and the KVM probe (about 11 s on the development machine)
	// start now, not at the first invocation that needs a VM.
	b.prepCtx, b.prepCancel = context.WithCancel(context.Background())
	b.stops.Add(1)
	go func() {
		defer b.stops.Done()
		if err := b.prepare(b.prepCtx); err != nil && b.prepCtx.Err() == nil {
			b.log.Warn("microVM tier: preparing the guest images", "err", err)
		}
	}()
	return b, nil
}

// Name implements sandbox.Backend.
func (b *Backend) Name() string { return "microvm" }

// ChargesLedger implements sandbox.Charger: each VM charges its memory.
func (b *Backend) ChargesLedger() bool { return true }

// prepare builds the guest images and chooses the accelerator, once (a
// failure is tried again by the next VM).
func (b *Backend) prepare(ctx context.Context) error {
	b.prepMu.Lock()
	defer b.prepMu.Unlock()
	if b.prepared {
		return nil
	}
	t0 := time.Now()
	images := filepath.Join(b.cfg.Dir, "images")
	if err := os.MkdirAll(images, 0o750); err != nil {
		return err
	}
	os.Chown(images, 0, b.cfg.UIDBase)
	userland, err := BuildUserland(images)
	if err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(images, "initrd-*.cpio"))
	for _, o := range old {
		os.Remove(o)
	}
	initrd, err := BuildInitramfs(images, b.cfg.Kernel, b.cfg.Self)
	if err != nil {
		return err
	}
	// The kernel may be readable by root only where it lies (/boot).
	kernel := filepath.Join(images, "kernel")
	if err := copyFile(b.cfg.Kernel, kernel); err != nil {
		return fmt.Errorf("microvm: guest kernel: %w", err)
	}
	// Readable by the VMMs' group only.
	for _, f := range []string{userland, initrd, kernel} {
		os.Chown(f, 0, b.cfg.UIDBase)
		os.Chmod(f, 0o640)
	}
	tImages := time.Since(t0)
	accel := Accel{Name: b.cfg.Accel, Reason: "configured"}
	if accel.Name != "kvm" && accel.Name != "tcg" {
		accel = DetectAccel(ctx, kernel, initrd, readyMarker, guestEnv+"=probe")
	}
	b.log.Info("microVM tier ready", "accel", accel.Name, "why", accel.Reason, "kernel", b.cfg.Kernel,
		"images", tImages.Round(time.Millisecond))
	b.userland, b.initrd, b.kernel, b.accel, b.prepared = userland, initrd, kernel, accel, true
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// guest is one VM of one account.
type guest struct {
	b       *Backend
	id      string
	n       int
	account string
	memMB   int
	dir     string

	ready  chan struct{} // closed once booted (or failed: err)
	err    error
	sess   *yamux.Session
	cmd    *exec.Cmd
	exited chan struct{}
	cg     cgroup.Cgroup
	info   GuestInfo
	detach func() error // the VM's network
	uid    int          // offset from UIDBase, held until stop

	// Guarded by b.mu.
	usedMB int
	boxes  int
	idle   *time.Timer
	gone   bool

	// The code and layer trees sent to the guest, by key (see put).
	putMu    sync.Mutex
	puts     map[string]*putState
	dropping map[string]chan struct{} // closed when the guest has removed the tree
	// rpc, when set, stands for call (tests).
	rpc func(ctx context.Context, req request, body func(io.Writer) error) (response, error)
}

type putState struct {
	done chan struct{}
	err  error
	refs int       // the guest's sandboxes using the tree; guarded by putMu
	used time.Time // when a sandbox last took it or let it go; guarded by putMu
}

// maxIdleTrees is how many trees no sandbox uses a guest keeps (the most
// recently used): more would fill its scratch disk over the life of a VM
// that never goes idle, one tree for every deploy of the account's
// functions.
const maxIdleTrees = 4

// reserve finds (or starts) a VM of the account with room for memMB.
func (b *Backend) reserve(account string, memMB int) (*guest, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("microvm: backend closed")
	}
	for _, g := range b.guests[account] {
		if !g.gone && !g.dead() && g.memMB-b.cfg.GuestOverheadMB-g.usedMB >= memMB {
			g.usedMB += memMB
			g.boxes++
			if g.idle != nil {
				g.idle.Stop()
				g.idle = nil
			}
			return g, nil
		}
	}
	need := max(b.cfg.MemoryMB, memMB+b.cfg.GuestOverheadMB)
	if err := b.makeRoomLocked(need); err != nil {
		return nil, err
	}
	uid := 0
	for off := 1; off < maxVMs; off++ {
		if !b.uids[off] {
			uid = off
			break
		}
	}
	if uid == 0 {
		b.cfg.Ledger.Give(need)
		return nil, fmt.Errorf("microvm: %d VMs already run", maxVMs-1)
	}
	b.uids[uid] = true
	b.nextVM++
	g := &guest{uid: uid,
		b: b, n: b.nextVM, account: account, id: fmt.Sprintf("vm-%s-%d", account, b.nextVM),
		memMB: need, usedMB: memMB, boxes: 1,
		ready: make(chan struct{}), exited: make(chan struct{}), puts: map[string]*putState{},
		dropping: map[string]chan struct{}{},
	}
	g.dir = filepath.Join(b.cfg.Dir, g.id)
	b.guests[account] = append(b.guests[account], g)
	go b.bootVM(g)
	return g, nil
}

// makeRoomLocked charges a VM of need MB to the ledger, stopping idle VMs
// (of any account) if it must; b.mu held.
func (b *Backend) makeRoomLocked(need int) error {
	for {
		if b.cfg.Ledger.Take(need) {
			return nil
		}
		var idlest *guest
		for _, list := range b.guests {
			for _, g := range list {
				if g.boxes == 0 && (idlest == nil || g.n < idlest.n) {
					idlest = g
				}
			}
		}
		if idlest == nil {
			return fmt.Errorf("%w: %w", sandbox.ErrNoRoom, errdefs.Throttled("ConcurrentInvocationLimitExceeded", "Rate Exceeded."))
		}
		b.log.Info("microVM stopped for room", "vm", idlest.id, "need_mb", need)
		b.retireLocked(idlest)
	}
}

// retireLocked takes g out of service and stops it in the background; b.mu
// held. Close waits for every such stop (b.stops).
func (b *Backend) retireLocked(g *guest) {
	if g.idle != nil {
		g.idle.Stop()
	}
	b.forget(g)
	b.stops.Add(1)
	go func() {
		defer b.stops.Done()
		<-g.ready // a boot in flight finishes first: nothing of it may escape stop
		g.stop()
	}()
}

// release returns memMB to g; a VM left without sandboxes stops after the
// idle timeout.
func (b *Backend) release(g *guest, memMB int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g.usedMB -= memMB
	g.boxes--
	if g.boxes == 0 && !g.gone {
		if b.cfg.Ledger.Pressed(ledgerPressure) {
			// Someone found the node full lately: the VM's memory is
			// worth more to them than a warm VM to its account.
			b.log.Info("microVM stopped for room", "vm", g.id)
			b.retireLocked(g)
			return
		}
		g.idle = time.AfterFunc(b.cfg.IdleTimeout, func() { b.stopIfIdle(g) })
	}
}

// ledgerPressure is how long after a refused charge an emptied VM stops at
// once instead of after IdleTimeout.
const ledgerPressure = time.Minute

func (b *Backend) stopIfIdle(g *guest) {
	b.mu.Lock()
	if g.boxes > 0 || g.gone {
		b.mu.Unlock()
		return
	}
	b.log.Info("microVM idle: stopping", "vm", g.id)
	b.retireLocked(g)
	b.mu.Unlock()
}

// dead reports whether the VM's QEMU has exited.
func (g *guest) dead() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// forget removes g from the account's VMs; b.mu held.
func (b *Backend) forget(g *guest) {
	if g.gone {
		return
	}
	g.gone = true
	b.cfg.Ledger.Give(g.memMB)
	list := b.guests[g.account]
	for i, x := range list {
		if x == g {
			b.guests[g.account] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(b.guests[g.account]) == 0 {
		delete(b.guests, g.account)
	}
}

func (g *guest) boot() {
	err := g.start()
	if err != nil {
		g.err = err
		g.b.log.Warn("microVM boot failed", "vm", g.id, "err", err)
		g.b.mu.Lock()
		g.b.forget(g)
		g.b.mu.Unlock()
		g.stop()
	}
	close(g.ready)
}

func (g *guest) start() error {
	b := g.b
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BootTimeout)
	defer cancel()
	t0 := time.Now()
	if err := b.prepare(ctx); err != nil {
		return err
	}
	uid, gid := b.cfg.UIDBase+g.uid, b.cfg.UIDBase
	if err := os.MkdirAll(filepath.Join(g.dir, "root"), 0o700); err != nil {
		return err
	}
	// The scratch disk: sparse, formatted here, the VM's user's alone.
	scratch := filepath.Join(g.dir, "scratch.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,root_owner=0:0",
		scratch, "16G").CombinedOutput(); err != nil {
		return fmt.Errorf("scratch disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	os.Chown(scratch, uid, gid)
	os.Chmod(scratch, 0o600)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	hostEnd := os.NewFile(uintptr(pair[0]), "vm-host")
	vmEnd := os.NewFile(uintptr(pair[1]), "vm-guest")
	defer vmEnd.Close()
	conn, err := net.FileConn(hostEnd)
	hostEnd.Close()
	if err != nil {
		return err
	}
	base := Config{Kernel: "/vm/kernel", Initrd: "/vm/initrd", MemoryMB: g.memMB, CPUs: b.vcpus(),
		Accel: b.accel.Name, Cmdline: guestEnv + "=1"}
	args := append(base.args(),
		"-chardev", "socket,id=host,fd=3", "-device", "virtio-serial-device", "-device", "virtserialport,chardev=host,name="+portName,
		"-drive", "file=/vm/userland,if=none,id=userland,format=raw,readonly=on",
		"-device", "virtio-blk-device,drive=userland,serial="+userlandSerial,
		"-drive", "file=/vm/scratch,if=none,id=scratch,format=raw,cache=unsafe,discard=unmap",
		"-device", "virtio-blk-device,drive=scratch,serial="+scratchSerial,
	)
	var tap *os.File
	var gnet *GuestNet
	if b.cfg.Network != nil {
		t, gn, detach, err := b.cfg.Network.AttachTap(g.id)
		if err != nil {
			conn.Close()
			return fmt.Errorf("VM network: %w", err)
		}
		tap, gnet, g.detach = t, &gn, detach
		defer tap.Close() // QEMU holds its own copy
		args = append(args, "-netdev", "tap,id=net0,fd=5,vhost=off",
			"-device", "virtio-net-device,netdev=net0,mac="+gn.MAC)
	}
	spec := vmmSpec{
		Root:     filepath.Join(g.dir, "root"),
		Files:    map[string]string{"kernel": b.kernel, "initrd": b.initrd, "userland": b.userland, "scratch": scratch},
		Writable: []string{"scratch"},
		KVM:      b.accel.Name == "kvm", UID: uid, GID: gid, Args: args,
	}
	cmd, gate, err := vmmCommand(spec, vmEnd, tap)
	if err != nil {
		conn.Close()
		return err
	}
	defer gate.Close()
	console := newConsole(b.log.With("vm", g.id))
	cmd.Stdout = console
	cmd.Stderr = console
	if err := cmd.Start(); err != nil {
		conn.Close()
		return fmt.Errorf("start the VMM: %w", err)
	}
	cmd.ExtraFiles[1].Close() // the gate's read end is the child's now
	g.cmd = cmd
	go func() {
		cmd.Wait()
		close(g.exited)
		conn.Close()
		// A VM that dies by itself (guest panic, VMM killed for memory)
		// takes no more sandboxes; what is left of it goes.
		<-g.ready
		b.mu.Lock()
		if g.gone {
			b.mu.Unlock()
			return
		}
		b.forget(g)
		b.stops.Add(1)
		b.mu.Unlock()
		b.log.Warn("microVM exited", "vm", g.id, "console", console.tail())
		g.stop()
		b.stops.Done()
	}()
	if b.cfg.Cgroups != nil {
		cg, err := b.cfg.Cgroups.Create(g.id, cgroup.Resources{
			MemoryBytes: int64(g.memMB+256) << 20, PidsMax: 512, IOWeight: 100,
			// No more CPU than its vCPUs, whatever runs in the guest.
			CPUMilli: b.vcpus() * 1000})
		if err != nil {
			return fmt.Errorf("VMM cgroup: %w", err)
		}
		g.cg = cg
		if err := cg.AddProc(cmd.Process.Pid); err != nil {
			return fmt.Errorf("VMM cgroup: %w", err)
		}
	}
	if _, err := gate.Write([]byte{1}); err != nil {
		return fmt.Errorf("VMM gate: %w", err)
	}
	select {
	case <-console.ready:
	case <-g.exited:
		return fmt.Errorf("the VM exited during boot: %s", console.tail())
	case <-ctx.Done():
		return fmt.Errorf("the guest was not ready after %v under %s: %s", b.cfg.BootTimeout, b.accel.Name, console.tail())
	}
	tBoot := time.Since(t0)
	guarded := &frameGuard{Conn: conn, violation: func(why string) {
		b.log.Warn("microVM broke the host protocol: stopping it", "vm", g.id, "account", g.account, "why", why)
		cmd.Process.Kill()
	}}
	cfg := yamuxConfig()
	// A guest that stops reading must not hold the host's writers long.
	cfg.ConnectionWriteTimeout = 30 * time.Second
	sess, err := yamux.Client(guarded, cfg)
	if err != nil {
		return err
	}
	g.sess = sess
	if _, err := g.call(ctx, request{Op: opSetup, Net: gnet, TimerSlackNs: b.cfg.TimerSlack.Nanoseconds(), HostTimeNs: time.Now().UnixNano()}, func(w io.Writer) error { return writeTar(w, b.cfg.RuntimeDir) }); err != nil {
		return fmt.Errorf("guest setup: %w", err)
	}
	resp, err := g.call(ctx, request{Op: opInfo}, nil)
	if err != nil {
		return err
	}
	if resp.Info == nil {
		return errors.New("the guest answered info without it")
	}
	g.info = *resp.Info
	go g.keepClock()
	b.log.Info("microVM started", "vm", g.id, "account", g.account, "accel", b.accel.Name, "memory_mb", g.memMB,
		"boot_id", g.info.BootID, "guest_cgroup", g.info.Cgroup, "boot", tBoot.Round(time.Millisecond), "ready", time.Since(t0).Round(time.Millisecond))
	return nil
}

// keepClock re-syncs the guest's wall clock every few seconds while the VM
// runs: an emulated guest's clock drifts.
func (g *guest) keepClock() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.exited:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := g.call(ctx, request{Op: opClock, HostTimeNs: time.Now().UnixNano()}, nil)
			cancel()
			if err != nil && g.sess.IsClosed() {
				return
			}
		}
	}
}

// vcpus is the number of vCPUs a VM gets.
func (b *Backend) vcpus() int {
	switch {
	case b.cfg.CPUs > 0:
		return b.cfg.CPUs
	case b.accel.Name == "kvm":
		return min(runtime.NumCPU(), 2)
	}
	return 1
}

// stop ends the VM: the guest powers off when its host connection closes;
// QEMU is killed if it lingers. Everything of the VM is removed.
func (g *guest) stop() {
	if g.sess != nil {
		g.sess.Close()
	}
	if g.cmd != nil && g.cmd.Process != nil {
		select {
		case <-g.exited:
		case <-time.After(5 * time.Second):
			g.cmd.Process.Kill()
			<-g.exited
		}
	}
	if g.cg != nil {
		g.cg.Kill()
		g.cg.Delete()
	}
	if g.detach != nil {
		if err := g.detach(); err != nil {
			g.b.log.Warn("microVM network", "vm", g.id, "err", err)
		}
	}
	unix.Unmount(filepath.Join(g.dir, "root"), unix.MNT_DETACH)
	os.RemoveAll(g.dir)
	g.b.mu.Lock()
	delete(g.b.uids, g.uid)
	g.b.mu.Unlock()
}

// call sends one request on a new stream; body, when set, writes what
// follows the request line. It returns the guest's answer.
func (g *guest) call(ctx context.Context, req request, body func(io.Writer) error) (response, error) {
	st, err := g.sess.OpenStream()
	if err != nil {
		return response{}, fmt.Errorf("microvm %s: %w", g.id, err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	if err := writeJSONLine(st, req); err != nil {
		return response{}, err
	}
	if body != nil {
		if err := body(st); err != nil {
			return response{}, err
		}
	}
	var resp response
	if err := readJSONLine(st, &resp); err != nil {
		if ctx.Err() != nil {
			return response{}, ctx.Err()
		}
		return response{}, fmt.Errorf("microvm %s: %s: %w", g.id, req.Op, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("microvm %s: %s: %s", g.id, req.Op, resp.Error)
	}
	return resp, nil
}

// put makes sure the guest has dir under key, sending it at most once,
// and takes a reference on it for the sandbox being made: a tree no
// sandbox references may be dropped (see unref). A tree being dropped is
// waited for, then sent again.
func (g *guest) put(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	key := dir // code directories are content-addressed: the path names the content
	g.putMu.Lock()
	for {
		ch, ok := g.dropping[key]
		if !ok {
			break
		}
		g.putMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		g.putMu.Lock()
	}
	ps, ok := g.puts[key]
	if !ok {
		ps = &putState{done: make(chan struct{})}
		g.puts[key] = ps
	}
	ps.refs++
	ps.used = time.Now()
	g.putMu.Unlock()
	if !ok {
		_, ps.err = g.send(ctx, request{Op: opPut, Key: key}, func(w io.Writer) error { return writeTar(w, dir) })
		if ps.err != nil {
			g.putMu.Lock()
			delete(g.puts, key)
			g.putMu.Unlock()
		}
		close(ps.done)
	}
	var err error
	select {
	case <-ps.done:
		err = ps.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		g.putMu.Lock()
		ps.refs--
		g.putMu.Unlock()
		return "", err
	}
	return key, nil
}

// send is call, or what a test put in its place.
func (g *guest) send(ctx context.Context, req request, body func(io.Writer) error) (response, error) {
	if g.rpc != nil {
		return g.rpc(ctx, req, body)
	}
	return g.call(ctx, req, body)
}

// unref releases a sandbox's references on trees put for it, and drops
// from the guest the trees no sandbox uses beyond the maxIdleTrees most
// recently used.
func (g *guest) unref(keys ...string) {
	g.putMu.Lock()
	now := time.Now()
	for _, k := range keys {
		if ps := g.puts[k]; k != "" && ps != nil && ps.refs > 0 {
			ps.refs--
			if ps.refs == 0 {
				ps.used = now // in use until now: the most recently used
			}
		}
	}
	var idle []string
	for k, ps := range g.puts {
		select {
		case <-ps.done:
			if ps.refs == 0 && ps.err == nil {
				idle = append(idle, k)
			}
		default: // still being sent
		}
	}
	var drop []string
	if len(idle) > maxIdleTrees {
		sort.Slice(idle, func(i, j int) bool { return g.puts[idle[i]].used.After(g.puts[idle[j]].used) })
		drop = idle[maxIdleTrees:]
		for _, k := range drop {
			delete(g.puts, k)
			g.dropping[k] = make(chan struct{})
		}
	}
	g.putMu.Unlock()
	for _, k := range drop {
		go g.drop(k)
	}
}

// drop removes a tree from the guest; a put of the same key waits for it.
// A drop that fails leaves the tree in the guest, where a later put finds
// it.
func (g *guest) drop(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.send(ctx, request{Op: opDrop, Key: key}, nil); err != nil && !g.dead() {
		g.b.log.Warn("microvm: dropping a code tree from the guest", "vm", g.id, "err", err)
	}
	g.putMu.Lock()
	ch := g.dropping[key]
	delete(g.dropping, key)
	g.putMu.Unlock()
	close(ch)
}

// Create implements sandbox.Backend.
func (b *Backend) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if spec.Account == "" {
		return nil, errors.New("microvm: a sandbox needs an account")
	}
	mem := max(spec.MemoryMB, 1)
	g, err := b.reserve(spec.Account, mem)
	if err != nil {
		return nil, err
	}
	sb, err := g.create(ctx, spec)
	if err != nil {
		b.release(g, mem)
		return nil, err
	}
	return sb, nil
}

func (g *guest) create(ctx context.Context, spec sandbox.Spec) (*vmBox, error) {
	select {
	case <-g.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if g.err != nil {
		return nil, g.err
	}
	// However the caller waits, a guest that does not make the sandbox in
	// time fails the request rather than holding it.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	code, err := g.put(ctx, spec.CodeDir)
	if err != nil {
		return nil, err
	}
	layers, err := g.put(ctx, spec.LayersDir)
	if err != nil {
		g.unref(code)
		return nil, err
	}
	created := false
	defer func() {
		if !created {
			g.unref(code, layers)
		}
	}()
	st, err := g.sess.OpenStream()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	req := request{Op: opCreate, Code: code, Layers: layers, HostTimeNs: time.Now().UnixNano(), Spec: &guestSpec{
		ID: spec.ID, Account: spec.Account, MemoryMB: spec.MemoryMB, EphemeralMB: spec.EphemeralMB, NoNetwork: spec.NoNetwork}}
	var resp response
	err = writeJSONLine(st, req)
	if err == nil {
		err = readJSONLine(st, &resp)
	}
	if !stop() || err != nil || resp.Error != "" {
		st.Close()
		if err == nil && resp.Error != "" {
			err = errors.New(resp.Error)
		} else if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("microvm %s: create: %w", g.id, err)
	}
	if resp.Paths == nil {
		st.Close()
		return nil, fmt.Errorf("microvm %s: create: the guest answered without paths", g.id)
	}
	paths := *resp.Paths
	paths.HostTaskRoot, paths.HostOptDir = spec.CodeDir, spec.LayersDir
	box := &vmBox{g: g, id: spec.ID, mem: max(spec.MemoryMB, 1), conn: st, paths: paths, done: make(chan struct{}),
		trees: []string{code, layers}}
	created = true
	go box.wait()
	return box, nil
}

// vmBox is a sandbox inside a guest, driven over its yamux streams.
type vmBox struct {
	g     *guest
	id    string
	mem   int
	conn  *yamux.Stream
	paths sandbox.Paths
	done  chan struct{}
	once  sync.Once
	trees []string // the keys of its code and layers in the guest
}

func (s *vmBox) wait() {
	s.g.call(context.Background(), request{Op: opWait, ID: s.id}, nil)
	close(s.done)
}

func (s *vmBox) ID() string               { return s.id }
func (s *vmBox) Conn() io.ReadWriteCloser { return s.conn }
func (s *vmBox) Paths() sandbox.Paths     { return s.paths }
func (s *vmBox) Done() <-chan struct{}    { return s.done }
func (s *vmBox) op(op string) (response, error) {
	// Freeze and thaw sit between invocations: a guest that does not
	// answer in time is not waited for long.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.g.call(ctx, request{Op: op, ID: s.id}, nil)
}
func (s *vmBox) Freeze() error    { _, err := s.op(opFreeze); return err }
func (s *vmBox) Thaw() error      { _, err := s.op(opThaw); return err }
func (s *vmBox) AfterInit() error { _, err := s.op(opAfterInit); return err }

func (s *vmBox) Stats() (sandbox.Stats, error) {
	resp, err := s.op(opStats)
	if err != nil || resp.Stats == nil {
		return sandbox.Stats{}, err
	}
	return *resp.Stats, nil
}

func (s *vmBox) Destroy() error {
	var err error
	s.once.Do(func() {
		_, err = s.op(opDestroy)
		s.conn.Close()
		if err == nil {
			s.g.unref(s.trees...)
		} // else the sandbox may still be going: its trees stay (for the VM's life at worst)
		s.g.b.release(s.g, s.mem)
	})
	return err
}

// Close implements sandbox.Backend: every VM stops and its files go.
func (b *Backend) Close() error {
	if b.prepCancel != nil {
		b.prepCancel()
	}
	b.mu.Lock()
	b.closed = true
	var all []*guest
	for _, list := range b.guests {
		all = append(all, list...)
	}
	for _, g := range all {
		b.retireLocked(g)
	}
	b.mu.Unlock()
	b.stops.Wait()
	// Nothing of the tier stays: the images are rebuilt at the next start
	// (a few seconds, once).
	return os.RemoveAll(b.cfg.Dir)
}

// console relays the guest's serial console to the log and signals the
// ready marker.
type console struct {
	log   *slog.Logger
	ready chan struct{}
	once  sync.Once
	mu    sync.Mutex
	buf   []byte
	last  []string
}

func newConsole(log *slog.Logger) *console {
	return &console{log: log, ready: make(chan struct{})}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	// The guest is not trusted: a line without end is cut, not kept.
	if len(c.buf) > 64<<10 {
		c.buf = append(c.buf[:4<<10:4<<10], '\n')
	}
	start := 0
	for {
		i := bytes.IndexByte(c.buf[start:], '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.buf[start:start+i]), "\r")
		start += i + 1
		if line == "" {
			continue
		}
		c.log.Debug("guest console", "line", line)
		if len(c.last) >= 20 {
			c.last = c.last[1:]
		}
		c.last = append(c.last, line)
		if strings.HasPrefix(line, readyMarker) {
			c.once.Do(func() { close(c.ready) })
		}
	}
	c.buf = c.buf[:copy(c.buf, c.buf[start:])]
	return len(p), nil
}

func (c *console) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.last, " | ")
}
