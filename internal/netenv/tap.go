package netenv

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachTap attaches a virtual machine as environment id: a tap device
// "<Name>-<id>" that is an isolated port of the bridge, like an
// environment's veth, with an address, a permanent neighbour entry and the
// same firewall policy (rules match the bridge and the subnet, not the
// port). The VMM gets the returned file (the tap's only queue); the device
// goes when that file is closed in every process holding it and Detach
// has run. The guest configures the address on its virtio-net interface
// itself, with the MAC address MAC returns.
//
// A guest kernel can forge any frame, so the port is also guarded when the
// firewall implements TapGuard (nftables does): frames from the tap pass
// only with the VM's own MAC as source and only as IPv4 from the VM's
// address or ARP naming the VM's MAC and address as sender; all else,
// IPv6 included, is dropped. The guard is in place before the device
// exists and goes with Detach. The iptables backend cannot filter bridge
// ports; there a warning is logged once and taps go unguarded.
func (m *Manager) AttachTap(id string) (*Link, *os.File, error) {
	m.life.RLock()
	defer m.life.RUnlock()
	l, err := m.reserve(id)
	if err != nil {
		return nil, nil, err
	}
	g, guard := m.fw.(TapGuard)
	if guard {
		l.tap = true
		if err := g.GuardTap(l.name, l.mac, l.addr); err != nil {
			m.unreserve(l)
			return nil, nil, fmt.Errorf("netenv: attach tap %q: %w", id, err)
		}
	} else {
		m.tapWarn.Do(func() {
			m.log.Warn("netenv: firewall cannot guard VM taps against spoofed source addresses; a VM can send frames as another environment's MAC or IP address (use the nftables backend)",
				"firewall", m.fw.Name())
		})
	}
	f, err := m.wireTap(l)
	if err != nil {
		if hl, lerr := m.nl.LinkByName(l.name); lerr == nil {
			_ = m.nl.LinkDel(hl)
		}
		m.delNeigh(l.addr)
		if guard {
			_ = g.UnguardTap(l.name)
		}
		m.unreserve(l)
		return nil, nil, fmt.Errorf("netenv: attach tap %q: %w", id, err)
	}
	m.log.Debug("netenv: attached tap", "env", id, "tap", l.name, "addr", l.addr)
	return l, f, nil
}

func (m *Manager) wireTap(l *Link) (*os.File, error) {
	la := netlink.NewLinkAttrs()
	la.Name = l.name
	la.MTU = m.mtu
	tap := &netlink.Tuntap{
		LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP,
		// One queue, no packet info; virtio-net headers let QEMU pass
		// checksum offloads through.
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR, Queues: 1,
		// Not persistent: the device dies with the last holder of its file.
		NonPersist: true,
	}
	if err := m.nl.LinkAdd(tap); err != nil {
		return nil, fmt.Errorf("create tap %s: %w", l.name, err)
	}
	f := tap.Fds[0]
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, err
	}
	host, err := m.nl.LinkByName(l.name)
	if err != nil {
		return fail(err)
	}
	// A tap is made by an ioctl that takes no MTU: it comes at 1500.
	if host.Attrs().MTU != m.mtu {
		if err := m.nl.LinkSetMTU(host, m.mtu); err != nil {
			return fail(fmt.Errorf("mtu of %s: %w", l.name, err))
		}
	}
	if err := m.disableHostIPv6(l.name); err != nil {
		return fail(err)
	}
	if err := m.nl.LinkSetMasterByIndex(host, m.brIndex); err != nil {
		return fail(fmt.Errorf("enslave %s: %w", l.name, err))
	}
	if err := m.nl.LinkSetIsolated(host, true); err != nil {
		return fail(fmt.Errorf("isolate %s: %w", l.name, err))
	}
	// Unlike a sandbox, a guest kernel sends whatever frames it likes.
	// The bridge learns nothing from this port (a spoofed source MAC
	// cannot pull another environment's traffic here) and floods no
	// unknown unicast into it; a static entry names the VM's own MAC.
	if err := m.nl.LinkSetLearning(host, false); err != nil {
		return fail(fmt.Errorf("learning off on %s: %w", l.name, err))
	}
	if err := m.nl.LinkSetFlood(host, false); err != nil {
		return fail(fmt.Errorf("flooding off on %s: %w", l.name, err))
	}
	if err := m.nl.NeighSet(&netlink.Neigh{
		LinkIndex: host.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
		State: netlink.NUD_NOARP | netlink.NUD_PERMANENT, HardwareAddr: l.mac,
	}); err != nil {
		return fail(fmt.Errorf("bridge entry for %s: %w", l.name, err))
	}
	if err := m.nl.LinkSetUp(host); err != nil {
		return fail(err)
	}
	if err := m.nl.NeighSet(&netlink.Neigh{
		LinkIndex: m.brIndex, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: l.addr.AsSlice(), HardwareAddr: l.mac,
	}); err != nil {
		return fail(fmt.Errorf("neighbour %s: %w", l.addr, err))
	}
	return f, nil
}

// MAC is the hardware address the environment's interface must have (the
// bridge's permanent neighbour entry names it).
func (l *Link) MAC() net.HardwareAddr { return l.mac }
