package netenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnvIface is the name of an environment's interface inside its namespace.
const EnvIface = "eth0"

// Link is one environment's attachment to the host network.
type Link struct {
	id, name string
	addr     netip.Addr
	prefix   netip.Prefix
	gateway  netip.Addr
	mac      net.HardwareAddr
	tap      bool // guarded (TapGuard): Detach removes the guard
	detached bool // guarded by Manager.mu
}

// ID is the environment id the link was attached for.
func (l *Link) ID() string { return l.id }

// Addr is the environment's IPv4 address.
func (l *Link) Addr() netip.Addr { return l.addr }

// Prefix is the environment's address with the subnet's length, as
// configured on its interface.
func (l *Link) Prefix() netip.Prefix { return l.prefix }

// Gateway is the environment's default route (the bridge's address).
func (l *Link) Gateway() netip.Addr { return l.gateway }

// HostIface is the name of the host end of the veth.
func (l *Link) HostIface() string { return l.name }

// Attach wires the network namespace nsFD refers to (an open
// /proc/<pid>/ns/net of the sandbox's init; the caller keeps it) to the
// bridge as environment id: a veth pair whose host end "<Name>-<id>" is an
// isolated bridge port and whose other end is created directly inside the
// namespace as eth0, with an address from the subnet, the bridge's MTU,
// IPv6 off, and a default route via the bridge. The namespace's lo is the
// sandbox's business.
//
// Attach changes no firewall rule, so it costs a handful of netlink
// messages and one short-lived thread: call it while preparing a sandbox,
// before a request needs it.
func (m *Manager) Attach(nsFD int, id string) (*Link, error) {
	return m.attach(nsFD, id, false)
}

// attach is Attach; ipv6Off says the namespace's IPv6 default is off
// already (see Sandboxes).
func (m *Manager) attach(nsFD int, id string, ipv6Off bool) (*Link, error) {
	m.life.RLock()
	defer m.life.RUnlock()
	if ns, err := nsIDOf(nsFD); err != nil {
		return nil, fmt.Errorf("netenv: attach %q: %w", id, err)
	} else if ns == m.hostNS {
		// Creating "eth0" here would fail at best; configuring the host's
		// own interface at worst.
		return nil, fmt.Errorf("netenv: attach %q: the namespace is the host's own", id)
	}
	l, err := m.reserve(id)
	if err != nil {
		return nil, err
	}
	// One wiring at a time: the kernel serialises them anyway (the routing
	// lock), and a disable_ipv6 write that finds that lock taken does not
	// wait for it but restarts itself, spinning (19% of nubo's CPU while
	// four shells were wired at once).
	m.wireMu.Lock()
	err = m.wire(nsFD, l, ipv6Off)
	m.wireMu.Unlock()
	if err != nil {
		// The namespace end goes with the host end.
		if hl, lerr := m.nl.LinkByName(l.name); lerr == nil {
			_ = m.nl.LinkDel(hl)
		}
		m.delNeigh(l.addr)
		m.unreserve(l)
		return nil, fmt.Errorf("netenv: attach %q: %w", id, err)
	}
	m.log.Debug("netenv: attached", "env", id, "veth", l.name, "addr", l.addr)
	return l, nil
}

func (m *Manager) reserve(id string) (*Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, ok := m.links[id]; ok {
		return nil, fmt.Errorf("netenv: attach %q: already attached", id)
	}
	addr, err := m.ipam.alloc()
	if err != nil {
		return nil, err
	}
	name := vethName(m.cfg.Name, id)
	if m.names[name] || name == m.cfg.Name+"-" {
		// Two ids sharing their last characters: fall back to a counter,
		// which fits easily in the room vethName leaves.
		for {
			m.seq++
			name = fmt.Sprintf("%s-%x", m.cfg.Name, m.seq)
			if !m.names[name] {
				break
			}
		}
	}
	l := &Link{
		id: id, name: name, addr: addr,
		prefix:  netip.PrefixFrom(addr, m.cfg.Subnet.Bits()),
		gateway: m.gateway,
		mac:     macFor(addr),
	}
	m.links[id] = l
	m.names[name] = true
	return l, nil
}

func (m *Manager) unreserve(l *Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forget(l)
	m.ipam.release(l.addr)
}

// forget drops l from the maps; m.mu must be held.
func (m *Manager) forget(l *Link) {
	if m.links != nil && m.links[l.id] == l {
		delete(m.links, l.id)
		delete(m.names, l.name)
	}
}

func (m *Manager) wire(nsFD int, l *Link, ipv6Off bool) error {
	la := netlink.NewLinkAttrs()
	la.Name = l.name
	la.MTU = m.mtu
	// One queue each way, on both ends, asked for at creation. Left to the
	// kernel, a veth gets a queue per possible CPU and is then cut down to
	// one real queue; cutting an end's transmit queues waits for an
	// expedited RCU grace period while holding the routing lock, which
	// every other environment's netlink request and new network namespace
	// waits for (figure 4's burst, docs/performance.md, session 25).
	la.NumTxQueues = 1
	la.NumRxQueues = 1
	// Creating the peer inside the namespace (IFLA_NET_NS_FD) under its
	// final name saves moving and renaming it, and it never exists in the
	// host namespace, not even for a moment.
	veth := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         EnvIface,
		PeerNamespace:    netlink.NsFd(nsFD),
		PeerHardwareAddr: l.mac,
	}
	// The peer is born with IPv6 off: it takes the namespace's defaults.
	// Turning it off on the device afterwards is a device change under the
	// routing lock (with the host side's below, 28% of nubo's CPU while
	// making environments).
	if !ipv6Off {
		if err := inNetns(nsFD, func() error { return disableIPv6("default") }); err != nil {
			return fmt.Errorf("disable IPv6 in the environment: %w", err)
		}
	}
	if err := m.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", l.name, err)
	}
	// LinkAdd has looked the new link up by name already, for its index
	// (and ignored a failure of that): a second lookup would cost each
	// environment another netlink round trip and message to decode.
	var host netlink.Link = veth
	if veth.Index == 0 {
		var err error
		if host, err = m.nl.LinkByName(l.name); err != nil {
			return err
		}
	}
	// Bridge ports do no L3 of their own (frames go to the bridge), so an
	// IPv6 address here would only mean DAD and MLD noise. Off, not just
	// without an address: the few frames a bridge hands to the port's own
	// stack (reserved link-local multicast) must find no IPv6 there, which
	// the firewall, matching the bridge, would not see.
	if err := m.disableHostIPv6(l.name); err != nil {
		return err
	}
	if err := m.nl.LinkSetMasterByIndex(host, m.brIndex); err != nil {
		return fmt.Errorf("enslave %s: %w", l.name, err)
	}
	// Isolated ports exchange no frames with each other, only with the
	// bridge itself (the host) and non-isolated ports (there are none):
	// environments cannot reach each other at L2, ARP included, whatever
	// the IP rules. Set before the port comes up.
	if err := m.nl.LinkSetIsolated(host, true); err != nil {
		return fmt.Errorf("isolate %s: %w", l.name, err)
	}
	if err := m.nl.LinkSetUp(host); err != nil {
		return err
	}
	// A permanent neighbour entry: the host never has to resolve the
	// environment, and no ARP reply (from a neighbour claiming the address)
	// can redirect its traffic.
	if err := m.nl.NeighSet(&netlink.Neigh{
		LinkIndex: m.brIndex, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: l.addr.AsSlice(), HardwareAddr: l.mac,
	}); err != nil {
		return fmt.Errorf("neighbour %s: %w", l.addr, err)
	}
	return inNetns(nsFD, func() error { return m.configureInside(l) })
}

// configureInside runs on a thread inside the environment's namespace.
func (m *Manager) configureInside(l *Link) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	eth, err := h.LinkByName(EnvIface)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: l.addr.AsSlice(), Mask: net.CIDRMask(l.prefix.Bits(), 32)}}
	if err := h.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("address %s: %w", l.prefix, err)
	}
	// The gateway's entry is permanent for the same reasons as the host's
	// entry for the environment, and the first packet out needs no ARP.
	if err := h.NeighSet(&netlink.Neigh{
		LinkIndex: eth.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: l.gateway.AsSlice(), HardwareAddr: m.brMAC,
	}); err != nil {
		return fmt.Errorf("gateway neighbour: %w", err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return err
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: l.gateway.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// Detach removes the environment's veth (its namespace end goes with it)
// and releases the address. It is safe when the namespace, and with it the
// veth, is already gone, and when called twice. The id may be attached
// again at once; the address returns to the pool only after its conntrack
// entries are flushed, which happens in the background (it walks the whole
// conntrack table: milliseconds on a busy host).
func (m *Manager) Detach(l *Link) error {
	if l == nil {
		return nil
	}
	m.life.RLock()
	defer m.life.RUnlock()
	m.mu.Lock()
	if m.closed || l.detached {
		// Close removes every link itself.
		m.mu.Unlock()
		return nil
	}
	l.detached = true
	m.mu.Unlock()

	hl, err := m.nl.LinkByName(l.name)
	if err == nil {
		err = m.nl.LinkDel(hl)
	}
	if err != nil && !isGone(err) {
		m.mu.Lock()
		l.detached = false
		m.mu.Unlock()
		return fmt.Errorf("netenv: detach %q: delete %s: %w", l.id, l.name, err)
	}
	m.delNeigh(l.addr)
	// The port is gone: its guard can go. A guard left behind (the error
	// is returned, but the link is detached regardless) filters nothing
	// else, is replaced when a tap takes the name again, and goes with the
	// whole table at Close.
	var gerr error
	if g, ok := m.fw.(TapGuard); ok && l.tap {
		if err := g.UnguardTap(l.name); err != nil {
			gerr = fmt.Errorf("netenv: detach %q: remove guard of %s: %w", l.id, l.name, err)
		}
	}
	m.mu.Lock()
	m.forget(l)
	m.mu.Unlock()
	// Close waits for this (it holds life exclusively, so Add cannot
	// race its Wait).
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.forgetConntrack(l.addr)
		m.mu.Lock()
		m.ipam.release(l.addr)
		m.mu.Unlock()
	}()
	m.log.Debug("netenv: detached", "env", l.id, "veth", l.name)
	return gerr
}

// delNeigh removes the bridge's permanent entry for an environment.
func (m *Manager) delNeigh(a netip.Addr) {
	err := m.nl.NeighDel(&netlink.Neigh{LinkIndex: m.brIndex, Family: netlink.FAMILY_V4, IP: a.AsSlice()})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		m.log.Debug("netenv: remove neighbour", "addr", a, "err", err)
	}
}

// forgetConntrack drops the connection tracking entries of connections an
// environment opened, so their NAT mappings die with it rather than serve
// the next holder of its address. Best effort: it needs the conntrack
// netlink interface, which a kernel may lack; round-robin allocation is the
// main defence (see ipam).
func (m *Manager) forgetConntrack(a netip.Addr) {
	if _, _, err := deleteConntrackFrom(a); err != nil {
		m.log.Debug("netenv: flush conntrack", "from", a, "err", err)
	}
}

// forgetConntrackPrefix drops the entries of connections opened from p,
// reading the whole table (for a subnet, at start and at Close; an
// environment's address has deleteConntrackFrom).
func (m *Manager) forgetConntrackPrefix(p netip.Prefix) {
	f := &netlink.ConntrackFilter{}
	n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
	if err := f.AddIPNet(netlink.ConntrackOrigSrcIP, n); err != nil {
		return
	}
	if _, err := m.nl.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(unix.AF_INET), f); err != nil {
		m.log.Debug("netenv: flush conntrack", "from", p, "err", err)
	}
}

// isGone reports an error meaning the link no longer exists.
func isGone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// Sandboxes adapts a Manager to a sandbox backend's network hook
// (nsbox.Network): attach the network namespace of a sandbox's first
// process, and get back how to detach it. The sandbox has turned IPv6 off
// in its namespace's defaults already, through a /proc of its own (nsbox's
// earlyProc): through the host's /proc, which every other environment's
// namespace is seen through too, the write cost 0.15 ms of nubo serve's
// CPU with 400 environments alive, and more with more.
type Sandboxes struct{ M *Manager }

// Attach implements nsbox.Network.
func (s Sandboxes) Attach(nsFD int, id string) (func() error, error) {
	l, err := s.M.attach(nsFD, id, true)
	if err != nil {
		return nil, err
	}
	return func() error { return s.M.Detach(l) }, nil
}
