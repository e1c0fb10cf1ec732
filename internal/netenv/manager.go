package netenv

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrSubnetOverlap reports a Config.Subnet that overlaps an address or a
// route of the host.
var ErrSubnetOverlap = errors.New("netenv: subnet overlaps the host's networks")

// ErrClosed reports use of a closed Manager.
var ErrClosed = errors.New("netenv: manager closed")

// ErrInUse is returned when another running nubo owns the network name.
var ErrInUse = errors.New("netenv: network name in use")

// Manager owns the host side of environments' networking: the bridge, the
// firewall, the addresses, the host ends of the veths.
//
// Lock order: life, then mu. Attach and Detach hold life shared, so they
// run concurrently; Close holds it exclusively, so it never races an
// Attach halfway through creating a veth.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	fw      Firewall
	nl      *netlink.Handle // bound to the host's network namespace
	hostNS  nsID
	mtu     int
	brIndex int
	brMAC   net.HardwareAddr
	gateway netip.Addr
	// hostConf is the host namespace's /proc/sys/net/ipv6/conf, kept open
	// (nil without IPv6): see disableHostIPv6.
	hostConf *os.File

	life    sync.RWMutex
	wireMu  sync.Mutex     // see Attach
	bg      sync.WaitGroup // Detach's background address release
	tapWarn sync.Once      // the firewall cannot guard taps: said once

	mu     sync.Mutex
	closed bool
	ipam   *ipam
	links  map[string]*Link // by environment id
	names  map[string]bool  // host veth names in use
	seq    uint64
}

// New prepares the host for environments: it removes what an earlier run
// under the same Name left (CleanupStale), creates the bridge with the
// subnet's first address, turns on IPv4 forwarding, and installs the
// firewall policy. After New, attaching an environment changes no firewall
// rule at all.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if err := CleanupStale(cfg); err != nil {
		return nil, fmt.Errorf("netenv: remove leftovers: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netenv: netlink: %w", err)
	}
	m := &Manager{
		cfg:   cfg,
		log:   log,
		nl:    h,
		ipam:  newIPAM(cfg.Subnet),
		links: map[string]*Link{},
		names: map[string]bool{},
	}
	m.gateway = m.Policy().Gateway()
	if m.hostNS, err = nsIDOfPath("/proc/self/ns/net"); err != nil {
		h.Close()
		return nil, err
	}
	if err := m.setup(); err != nil {
		// Undo in the order Close would: links, bridge, then rules.
		_, _ = removeLinks(h, cfg)
		if m.fw != nil {
			_ = m.fw.Teardown()
		}
		if m.hostConf != nil {
			m.hostConf.Close()
		}
		h.Close()
		return nil, err
	}
	attrs := []any{"firewall", m.fw.Name(), "bridge", cfg.Bridge, "subnet", cfg.Subnet, "gateway", m.gateway, "mtu", m.mtu}
	if ipt, ok := m.fw.(*iptFirewall); ok {
		attrs = append(attrs, "iptables", ipt.variant())
	}
	log.Info("netenv: environment network ready", attrs...)
	return m, nil
}

func (m *Manager) setup() error {
	cfg := m.cfg
	if _, err := m.nl.LinkByName(cfg.Bridge); err == nil {
		// CleanupStale removed our own bridge; this one belongs to
		// someone else.
		return fmt.Errorf("netenv: bridge %q exists and was not made by nubo; choose another Config.Bridge", cfg.Bridge)
	}
	if err := checkOverlap(m.nl, cfg.Subnet); err != nil {
		return err
	}
	m.mtu = cfg.MTU
	if m.mtu == 0 {
		m.mtu = defaultMTU(m.nl)
	}
	if err := m.createBridge(); err != nil {
		return fmt.Errorf("netenv: bridge %s: %w", cfg.Bridge, err)
	}
	if err := enableForwarding(m.log); err != nil {
		return err
	}
	// Allocation starts over at the subnet's first address: connections
	// an earlier run's environments opened must not be answered into this
	// run's.
	m.forgetConntrackPrefix(cfg.Subnet)
	p := m.Policy()
	if cfg.Firewall != nil {
		if err := cfg.Firewall.Setup(p); err != nil {
			return fmt.Errorf("netenv: firewall %s: %w", cfg.Firewall.Name(), err)
		}
		m.fw = cfg.Firewall
		return nil
	}
	fw, err := newFirewall(cfg.Backend, cfg.Name, p, m.log)
	if err != nil {
		return fmt.Errorf("netenv: firewall: %w", err)
	}
	m.fw = fw
	return nil
}

// bridgeAlias marks links nubo made that do not carry the veth prefix (the
// bridge), so CleanupStale can find them even after Config.Bridge changed
// between runs, and never mistakes someone else's bridge for ours.
func bridgeAlias(name string) string { return "nubo netenv " + name }

// ownedAlias is the bridge's alias with its owner: the pid and start time
// of the nubo process that made it, so a second nubo using the same name
// refuses to start instead of tearing down a live one's network.
func ownedAlias(name string) string {
	return bridgeAlias(name) + " owner " + processToken(os.Getpid())
}

// processToken identifies a process across pid reuse: pid and start time.
func processToken(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after it are fixed.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 19 {
			return fmt.Sprintf("%d.%s", pid, f[19])
		}
	}
	return ""
}

// liveOwner returns the owner token of alias when that process still runs
// and is not this one.
func liveOwner(alias string) string {
	_, tok, ok := strings.Cut(alias, " owner ")
	if !ok || tok == "" {
		return ""
	}
	pidStr, _, _ := strings.Cut(tok, ".")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid == os.Getpid() {
		return ""
	}
	if processToken(pid) == tok {
		return tok
	}
	return ""
}

func (m *Manager) createBridge() error {
	la := netlink.NewLinkAttrs()
	la.Name = m.cfg.Bridge
	la.MTU = m.mtu
	if err := m.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		return err
	}
	br, err := m.nl.LinkByName(m.cfg.Bridge)
	if err != nil {
		return err
	}
	if err := m.nl.LinkSetAlias(br, ownedAlias(m.cfg.Name)); err != nil {
		return err
	}
	// A bridge without an address of its own takes the lowest MAC among
	// its ports and changes it as ports come and go; every environment's
	// cached neighbour entry for the gateway would then point nowhere. An
	// address set explicitly (ndo_set_mac_address) stays.
	m.brMAC = randomMAC()
	if err := m.nl.LinkSetHardwareAddr(br, m.brMAC); err != nil {
		return err
	}
	loadIPv6()
	if ipv6Present() {
		if m.hostConf, err = os.Open("/proc/sys/net/ipv6/conf"); err != nil {
			return err
		}
	}
	if err := m.disableHostIPv6(m.cfg.Bridge); err != nil {
		return err
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: m.gateway.AsSlice(), Mask: net.CIDRMask(m.cfg.Subnet.Bits(), 32)}}
	if err := m.nl.AddrAdd(br, gw); err != nil {
		return err
	}
	if err := m.nl.LinkSetUp(br); err != nil {
		return err
	}
	m.brIndex = br.Attrs().Index
	return nil
}

// Policy is the firewall policy the Manager installed.
func (m *Manager) Policy() Policy {
	return Policy{Bridge: m.cfg.Bridge, Subnet: m.cfg.Subnet, HostPorts: slices.Clone(m.cfg.HostPorts)}
}

// Backend names the firewall in use ("nftables", "iptables", or the Name
// of Config.Firewall).
func (m *Manager) Backend() string { return m.fw.Name() }

// Gateway is the bridge's address, every environment's default route.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

// Bridge is the bridge's name.
func (m *Manager) Bridge() string { return m.cfg.Bridge }

// Subnet is where environments' addresses come from.
func (m *Manager) Subnet() netip.Prefix { return m.cfg.Subnet }

// MTU is the MTU of the bridge and of every environment's interface.
func (m *Manager) MTU() int { return m.mtu }

// Close removes every veth, the bridge and the firewall rules. Links
// first: removing the rules while environments are still wired would
// leave them unfiltered for a moment. IPv4 forwarding stays on. Close is
// idempotent.
func (m *Manager) Close() error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.links, m.names = nil, nil
	m.mu.Unlock()

	m.bg.Wait()
	// removeLinks finds our veths by name, the bridge by alias: it also
	// catches veths a failed Detach left.
	_, err := removeLinks(m.nl, m.cfg)
	if ferr := m.fw.Teardown(); ferr != nil {
		err = errors.Join(err, fmt.Errorf("netenv: firewall %s: %w", m.fw.Name(), ferr))
	}
	m.forgetConntrackPrefix(m.cfg.Subnet)
	m.nl.Close()
	if m.hostConf != nil {
		m.hostConf.Close()
	}
	return err
}

// checkOverlap refuses a subnet that overlaps an address of the host or a
// route of its main table, the default route aside.
func checkOverlap(h *netlink.Handle, subnet netip.Prefix) error {
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("netenv: list routes: %w", err)
	}
	for _, r := range routes {
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 {
			continue
		}
		if p.Overlaps(subnet) {
			return fmt.Errorf("%w: %s overlaps route %s%s; set Config.Subnet to a free range", ErrSubnetOverlap, subnet, p, linkSuffix(h, r.LinkIndex))
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("netenv: list addresses: %w", err)
	}
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		if p.Masked().Overlaps(subnet) {
			return fmt.Errorf("%w: %s overlaps address %s%s; set Config.Subnet to a free range", ErrSubnetOverlap, subnet, p, linkSuffix(h, a.LinkIndex))
		}
	}
	return nil
}

func linkSuffix(h *netlink.Handle, index int) string {
	if l, err := h.LinkByIndex(index); err == nil {
		return " on " + l.Attrs().Name
	}
	return ""
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// defaultMTU is the smallest MTU among the interfaces of the default
// routes, or 1500 when there is none.
func defaultMTU(h *netlink.Handle) int {
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return 1500
	}
	mtu := 0
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() != 0 {
			continue
		}
		idx := []int{r.LinkIndex}
		for _, nh := range r.MultiPath {
			idx = append(idx, nh.LinkIndex)
		}
		for _, i := range idx {
			if l, err := h.LinkByIndex(i); err == nil && (mtu == 0 || l.Attrs().MTU < mtu) {
				mtu = l.Attrs().MTU
			}
		}
	}
	if mtu == 0 {
		return 1500
	}
	return mtu
}

// retryDump retries a netlink dump the kernel interrupted because the
// table changed meanwhile (another program adding a route, say).
func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	var (
		v   []T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// randomMAC returns a random unicast, locally administered address.
func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = b[0]&^0x01 | 0x02
	return b
}

// macFor derives an environment's MAC from its address (02:6e = locally
// administered, "n"). Deterministic, so a neighbour entry left by an
// earlier holder of the address is still right.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x6e, b[0], b[1], b[2], b[3]}
}
