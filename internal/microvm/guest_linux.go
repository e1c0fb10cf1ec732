package microvm

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/cgroup"
	"github.com/nubo-dev/nubo/internal/netenv"
	"github.com/nubo-dev/nubo/internal/nsbox"
	"github.com/nubo-dev/nubo/internal/sandbox"
	"github.com/nubo-dev/nubo/internal/seccomp"
)

// The guest side. nubo's own static binary is the guest's /init (the
// kernel passes NUBO_GUEST from its command line into init's
// environment). Stage one runs from the initramfs: it loads the virtio
// modules, mounts the read-only userland image and moves into it. Stage
// two, the guest agent, mounts cgroup v2 and the scratch disk, opens the
// virtio-serial port and serves the host's requests, making namespace
// sandboxes with the same nsbox code the host backend uses.

const (
	guestEnv = "NUBO_GUEST"
	// readyMarker is the console line the host waits for.
	readyMarker = "nubo-guest-ready"
	// portName names the virtio-serial port.
	portName = "nubo.0"
	// Serial numbers of the guest's disks.
	userlandSerial = "nubo-userland"
	scratchSerial  = "nubo-scratch"
	// guestBin is where stage two finds the binary after the root moved.
	guestBin = "/run/nubo/nubo"
)

// modulesFile lists the initramfs's kernel modules in load order.
const modulesFile = "modules.order"

func init() {
	stage := os.Getenv(guestEnv)
	if stage == "" || os.Getpid() != 1 {
		return
	}
	var err error
	switch stage {
	case "probe":
		fmt.Println(readyMarker, "probe")
		powerOff()
	case "1":
		err = guestStage1()
	case "2":
		err = guestStage2()
	default:
		err = fmt.Errorf("unknown stage %q", stage)
	}
	fmt.Fprintln(os.Stderr, "nubo guest:", err)
	powerOff()
}

func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(1)
}

func mountAll(ms [][4]string) error {
	for _, m := range ms {
		if err := os.MkdirAll(m[1], 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m[0], m[1], m[2], unix.MS_NOSUID, m[3]); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m[2], m[1], err)
		}
	}
	return nil
}

func guestStage1() error {
	if err := mountAll([][4]string{
		{"dev", "/dev", "devtmpfs", ""},
		{"proc", "/proc", "proc", ""},
		{"sys", "/sys", "sysfs", ""},
	}); err != nil {
		return err
	}
	order, err := os.ReadFile("/" + modulesFile)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(order)) {
		if err := loadModule("/modules/" + name); err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
	}
	dev, err := waitDisk(userlandSerial, 20*time.Second)
	if err != nil {
		return err
	}
	const newRoot = "/newroot"
	os.MkdirAll(newRoot, 0o755)
	if err := unix.Mount(dev, newRoot, "ext4", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount the userland %s: %w", dev, err)
	}
	// /run holds the binary (its bytes stay in the initramfs's memory).
	if err := unix.Mount("run", newRoot+"/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return err
	}
	os.MkdirAll(newRoot+"/run/nubo", 0o700)
	if err := os.WriteFile(newRoot+guestBin, nil, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/init", newRoot+guestBin, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(m, newRoot+m, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m, err)
		}
	}
	// switch_root: the initramfs cannot be pivoted away from.
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	unix.Chdir("/")
	env := []string{guestEnv + "=2"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, guestEnv+"=") {
			env = append(env, kv)
		}
	}
	return unix.Exec(guestBin, []string{guestBin}, env)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// waitDisk finds the virtio disk with the given serial number.
func waitDisk(serial string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		blocks, _ := filepath.Glob("/sys/block/vd*")
		for _, b := range blocks {
			if s, err := os.ReadFile(b + "/serial"); err == nil && strings.TrimSpace(string(s)) == serial {
				dev := "/dev/" + filepath.Base(b)
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk %q after %v", serial, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPort finds the virtio-serial port by name.
func waitPort(name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*")
		for _, p := range ports {
			if n, err := os.ReadFile(p + "/name"); err == nil && strings.TrimSpace(string(n)) == name {
				dev := "/dev/" + filepath.Base(p)
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port %q after %v", name, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// guestAgent serves the host's requests inside the guest.
type guestAgent struct {
	log     *slog.Logger
	scratch string

	mu      sync.Mutex
	backend sandbox.Backend
	boxes   map[string]sandbox.Sandbox
	puts    map[string]*sync.Mutex
}

func guestStage2() error {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := mountAll([][4]string{
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", "nsdelegate"},
		{"tmp", "/tmp", "tmpfs", "mode=1777"},
	}); err != nil {
		return err
	}
	// The scratch disk (made by the host, per VM) holds code and the
	// sandboxes' /tmp volumes: on the host's disk, not in guest memory.
	dev, err := waitDisk(scratchSerial, 10*time.Second)
	if err != nil {
		return err
	}
	const scratch = "/mnt/scratch"
	// discard: blocks freed here are freed in the host's sparse file too.
	if err := unix.Mount(dev, scratch, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "discard"); err != nil {
		return fmt.Errorf("mount the scratch disk: %w", err)
	}
	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	port, err := waitPort(portName, 10*time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	sess, err := yamux.Server(f, yamuxConfig())
	if err != nil {
		return err
	}
	g := &guestAgent{log: log, scratch: scratch, boxes: map[string]sandbox.Sandbox{}, puts: map[string]*sync.Mutex{}}
	fmt.Println(readyMarker, "boot_id="+bootID())
	for {
		st, err := sess.Accept()
		if err != nil {
			// The host is gone: nothing may outlive it.
			g.shutdown()
			return fmt.Errorf("host connection closed: %w", err)
		}
		go g.serve(st)
	}
}

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	// Emulated guests are slow; a stream is never given up on for time.
	c.ConnectionWriteTimeout = 5 * time.Minute
	c.StreamOpenTimeout = 5 * time.Minute
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func (g *guestAgent) shutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.backend != nil {
		g.backend.Close()
	}
}

func (g *guestAgent) serve(st io.ReadWriteCloser) {
	var req request
	if err := readJSONLine(st, &req); err != nil {
		st.Close()
		return
	}
	if req.HostTimeNs != 0 {
		syncClock(req.HostTimeNs)
	}
	if req.Op == opCreate {
		g.create(st, req) // keeps the stream as the agent connection
		return
	}
	defer st.Close()
	resp, err := g.handle(st, req)
	if err != nil {
		resp = response{Error: err.Error()}
	}
	writeJSONLine(st, resp)
}

func (g *guestAgent) box(id string) (sandbox.Sandbox, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	sb, ok := g.boxes[id]
	if !ok {
		return nil, fmt.Errorf("no sandbox %q", id)
	}
	return sb, nil
}

func (g *guestAgent) handle(st io.Reader, req request) (response, error) {
	switch req.Op {
	case opSetup:
		return response{}, g.setup(st, req.Net, time.Duration(req.TimerSlackNs))
	case opPut:
		return response{}, g.put(st, req.Key)
	case opDrop:
		return response{}, g.drop(req.Key)
	case opClock:
		return response{}, nil // synced in serve
	case opInfo:
		g.mu.Lock()
		n := len(g.boxes)
		g.mu.Unlock()
		return response{Info: &GuestInfo{BootID: bootID(), MemoryMB: memTotalMB(), Sandboxes: n, Cgroup: cgroupMode()}}, nil
	}
	sb, err := g.box(req.ID)
	if err != nil {
		return response{}, err
	}
	switch req.Op {
	case opWait:
		<-sb.Done()
		return response{}, nil
	case opFreeze:
		return response{}, sb.Freeze()
	case opThaw:
		return response{}, sb.Thaw()
	case opAfterInit:
		return response{}, sb.AfterInit()
	case opStats:
		s, err := sb.Stats()
		return response{Stats: &s}, err
	case opDestroy:
		g.mu.Lock()
		delete(g.boxes, req.ID)
		g.mu.Unlock()
		return response{}, sb.Destroy()
	}
	return response{}, fmt.Errorf("unknown operation %q", req.Op)
}

func (g *guestAgent) runtimeDir() string { return "/run/nubo/runtime" }

// setup receives the runtime clients and makes the sandbox backend; with
// a network, the guest's interface is configured and the sandboxes get
// the same per-environment network as on the host (package netenv), NATed
// out of the guest's interface.
func (g *guestAgent) setup(r io.Reader, gn *GuestNet, slack time.Duration) (err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.backend != nil {
		io.Copy(io.Discard, r)
		return errors.New("already set up")
	}
	if err := readTar(r, g.runtimeDir()); err != nil {
		return err
	}
	var c closers
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := linkUp("lo"); err != nil {
		return err
	}
	var network nsbox.Network
	// The host as the guest's sandboxes reach it: the host bridge's
	// address, the guest's gateway (their traffic to it leaves the guest
	// masqueraded, and the host's policy treats it as any environment's).
	var hostAddr netip.Addr
	var resolv string
	if gn != nil {
		hostAddr, _ = netip.ParseAddr(gn.Gateway)
		resolv = gn.ResolvConf
		if err := configureNet(gn); err != nil {
			return fmt.Errorf("guest network: %w", err)
		}
		subnet := netip.MustParsePrefix("172.30.0.0/16")
		if p, err := netip.ParsePrefix(gn.Addr); err == nil && p.Overlaps(subnet) {
			subnet = netip.MustParsePrefix("10.99.0.0/16")
		}
		nets, err := netenv.New(netenv.Config{Name: "nubo", Subnet: subnet, Backend: "nftables", Logger: g.log})
		if err != nil {
			return fmt.Errorf("sandbox network: %w", err)
		}
		c.nets = nets
		network = netenv.Sandboxes{M: nets}
	}
	if c.cgm, err = cgroup.New(cgroup.Options{MoveSiblings: true}); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	filter, err := seccomp.Compile()
	if err != nil {
		return err
	}
	c.Backend, err = nsbox.New(nsbox.Config{
		Dir: filepath.Join(g.scratch, "sandboxes"), Cgroups: c.cgm, Network: network, Seccomp: filter.Bytes(),
		UIDBase: 100_000, Slots: 1000, RuntimeDir: g.runtimeDir(), PoolShells: 2, PoolVolumes: 2, HostAddr: hostAddr, ResolvConf: resolv,
		TimerSlack: slack, Logger: g.log,
	})
	if err != nil {
		return err
	}
	g.backend = c
	return nil
}

// closers closes the backend, then the network and the cgroup manager.
type closers struct {
	*nsbox.Backend
	nets *netenv.Manager
	cgm  cgroup.Manager
}

func (c closers) Close() error {
	var err error
	if c.Backend != nil {
		err = c.Backend.Close()
	}
	if c.nets != nil {
		c.nets.Close()
	}
	if c.cgm != nil {
		c.cgm.Close()
	}
	return err
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// configureNet sets up the guest's virtio-net interface (found by its MAC).
func configureNet(gn *GuestNet) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var eth netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for eth == nil {
		for _, l := range links {
			if strings.EqualFold(l.Attrs().HardwareAddr.String(), gn.MAC) {
				eth = l
			}
		}
		if eth != nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no interface with MAC %s", gn.MAC)
		}
		time.Sleep(20 * time.Millisecond)
		if links, err = netlink.LinkList(); err != nil {
			return err
		}
	}
	addr, err := netlink.ParseAddr(gn.Addr)
	if err != nil {
		return err
	}
	if gn.MTU > 0 {
		if err := netlink.LinkSetMTU(eth, gn.MTU); err != nil {
			return err
		}
	}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return err
	}
	gw := net.ParseIP(gn.Gateway)
	if gw == nil {
		return fmt.Errorf("gateway %q", gn.Gateway)
	}
	return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw})
}

func keyDir(scratch, key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(scratch, "code", hex.EncodeToString(h[:16]))
}

// put stores a directory sent as tar under key, once.
func (g *guestAgent) put(r io.Reader, key string) error {
	g.mu.Lock()
	mu := g.puts[key]
	if mu == nil {
		mu = &sync.Mutex{}
		g.puts[key] = mu
	}
	g.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	dir := keyDir(g.scratch, key)
	if _, err := os.Stat(dir); err == nil {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	tmp := dir + ".part"
	os.RemoveAll(tmp)
	if err := readTar(r, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return os.Rename(tmp, dir)
}

// drop removes the tree stored under key. The host drops only a tree no
// sandbox uses, and never while it puts the same key.
func (g *guestAgent) drop(key string) error {
	g.mu.Lock()
	mu := g.puts[key]
	g.mu.Unlock()
	if mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	// Out of the way first, in one step: put takes an existing directory
	// for a whole tree, so a removal that fails half-way must not leave
	// one under the key.
	dir := keyDir(g.scratch, key)
	gone := dir + ".drop"
	os.RemoveAll(gone)
	if err := os.Rename(dir, gone); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	return os.RemoveAll(gone)
}

func (g *guestAgent) create(st io.ReadWriteCloser, req request) {
	sb, err := g.createBox(req)
	if err != nil {
		writeJSONLine(st, response{Error: err.Error()})
		st.Close()
		return
	}
	p := sb.Paths()
	if err := writeJSONLine(st, response{Paths: &p}); err != nil {
		st.Close()
		return
	}
	// The stream is now the agent's connection. When either end goes (the
	// host closed it, or the agent exited), the sandbox goes too: a host
	// that failed half-way through create never leaks one here.
	conn := sb.Conn()
	go func() {
		io.Copy(conn, st)
		conn.Close()
	}()
	io.Copy(st, conn)
	st.Close()
	g.mu.Lock()
	if g.boxes[req.Spec.ID] == sb {
		delete(g.boxes, req.Spec.ID)
	}
	g.mu.Unlock()
	sb.Destroy()
}

func (g *guestAgent) createBox(req request) (sandbox.Sandbox, error) {
	g.mu.Lock()
	b := g.backend
	g.mu.Unlock()
	if b == nil {
		return nil, errors.New("guest not set up")
	}
	if req.Spec == nil {
		return nil, errors.New("create without a spec")
	}
	spec := sandbox.Spec{
		ID: req.Spec.ID, Account: req.Spec.Account, MemoryMB: req.Spec.MemoryMB, EphemeralMB: req.Spec.EphemeralMB,
		CodeDir: keyDir(g.scratch, req.Code), RuntimeDir: g.runtimeDir(), NoNetwork: req.Spec.NoNetwork,
	}
	if req.Layers != "" {
		spec.LayersDir = keyDir(g.scratch, req.Layers)
	}
	for _, d := range []string{spec.CodeDir, spec.LayersDir} {
		if _, err := os.Stat(d); d != "" && err != nil {
			return nil, fmt.Errorf("code %s was not put: %w", d, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb, err := b.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.boxes[req.Spec.ID] = sb
	g.mu.Unlock()
	return sb, nil
}

// syncClock sets the wall clock to the host's when they differ by more
// than 2 ms (the request's own transit is well below that).
func syncClock(hostNs int64) {
	var now unix.Timespec
	if unix.ClockGettime(unix.CLOCK_REALTIME, &now) != nil {
		return
	}
	d := now.Nano() - hostNs
	if d < -2e6 || d > 2e6 {
		ts := unix.NsecToTimespec(hostNs)
		unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
	}
}

func memTotalMB() int {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb >> 10
		}
	}
	return 0
}

func cgroupMode() string {
	if m, err := cgroup.Detect(); err == nil {
		return m.String()
	}
	return "unknown"
}

// guestModules are the kernel modules the guest needs that Debian's cloud
// kernel builds as modules; their dependencies come from modules.dep.
var guestModules = []string{
	"virtio_mmio", "virtio_console", "virtio_blk", "virtio_net", "loop",
	// The sandboxes' network inside the guest (package netenv).
	"veth", "bridge", "nf_tables", "nft_chain_nat", "nft_masq", "nft_ct", "nf_conntrack_netlink",
	// fib daddr type local: the policy's drop ahead of DNAT.
	"nft_fib_inet",
}

// moduleFiles finds the guest modules for kernel release rel, with every
// dependency, in an order that loads each after what it needs.
func moduleFiles(rel string) ([]File, string, error) {
	base := filepath.Join("/lib/modules", rel)
	dep, err := os.ReadFile(filepath.Join(base, "modules.dep"))
	if err != nil {
		return nil, "", fmt.Errorf("microvm: modules of the guest kernel: %w", err)
	}
	deps := map[string][]string{} // module path → its dependencies' paths
	byName := map[string]string{} // module name → path
	for _, line := range strings.Split(string(dep), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		name := strings.SplitN(filepath.Base(mod), ".ko", 2)[0]
		byName[strings.ReplaceAll(name, "-", "_")] = mod
	}
	var order []string
	seen := map[string]bool{}
	var visit func(mod string)
	visit = func(mod string) {
		if seen[mod] {
			return
		}
		seen[mod] = true
		for _, d := range deps[mod] {
			visit(d)
		}
		order = append(order, mod)
	}
	for _, m := range guestModules {
		if mod, ok := byName[m]; ok {
			visit(mod)
		} // else built into this kernel
	}
	var files []File
	var names []string
	for _, mod := range order {
		if !strings.HasSuffix(mod, ".ko") {
			return nil, "", fmt.Errorf("microvm: %s is compressed; nubo loads plain .ko modules", mod)
		}
		body, err := os.ReadFile(filepath.Join(base, mod))
		if err != nil {
			return nil, "", err
		}
		name := filepath.Base(mod)
		files = append(files, File{Name: "modules/" + name, Mode: 0o644, Body: body})
		names = append(names, name)
	}
	return files, strings.Join(names, "\n") + "\n", nil
}

// kernelRelease reads the release from a kernel path /boot/vmlinuz-<rel>.
func kernelRelease(kernel string) string {
	return strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
}

// BuildInitramfs writes the guest's initramfs into dir: the binary self as
// /init and the kernel modules the guest needs. It is not compressed: an
// emulated guest would spend seconds decompressing it.
func BuildInitramfs(dir, kernel, self string) (string, error) {
	if f, err := elf.Open(self); err == nil {
		interp := elfInterp(f)
		f.Close()
		if interp != "" {
			return "", fmt.Errorf("microvm: %s is dynamically linked (%s); the guest's /init must be static: build with CGO_ENABLED=0", self, interp)
		}
	}
	body, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	mods, order, err := moduleFiles(kernelRelease(kernel))
	if err != nil {
		return "", err
	}
	files := append([]File{
		{Name: "init", Mode: 0o755, Body: body},
		{Name: modulesFile, Mode: 0o644, Body: []byte(order)},
		{Name: "dev", Mode: os.ModeDir | 0o755},
		{Name: "proc", Mode: os.ModeDir | 0o755},
		{Name: "sys", Mode: os.ModeDir | 0o755},
		{Name: "newroot", Mode: os.ModeDir | 0o755},
	}, mods...)
	sort.SliceStable(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "initrd-*.cpio")
	if err != nil {
		return "", err
	}
	if err := writeCpio(f, files); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}
