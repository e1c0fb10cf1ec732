package netenv

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TapGuard is implemented by firewalls that can hold a VM's tap to its own
// addresses. A guest kernel sends whatever frames it likes; a veth's
// namespace end is configured by nubo and cannot. Manager.AttachTap uses
// it when Config.Firewall (or the chosen backend) implements it, and warns
// once when it does not (the iptables backend: bridge filtering needs
// ebtables).
type TapGuard interface {
	// GuardTap drops every frame arriving from the bridge port iface
	// unless its source MAC is mac and it is an IPv4 packet from addr or
	// an ARP packet whose sender is mac and addr. It replaces an earlier
	// guard of the same iface.
	GuardTap(iface string, mac net.HardwareAddr, addr netip.Addr) error
	// UnguardTap removes iface's guard. Finding none is not an error.
	UnguardTap(iface string) error
}

// nftBridgePriorityFilter is the bridge family's "filter" priority.
const nftBridgePriorityFilter = -200

// The guards live in a second table named after the instance, of family
// bridge: one base chain at prerouting, which every frame entering the
// bridge from a port passes before the bridge decides whether to forward
// it or pass it up to the host, jumps by input port name to one regular
// chain per tap. Teardown removes the table with the inet one.
const nftTapBase = "prerouting"

func nftTapChain(iface string) string   { return "tap-" + iface }
func nftTapComment(iface string) string { return "nubo: tap " + iface }

func (f *nftFirewall) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: f.table, Family: nftables.TableFamilyBridge}
}

// GuardTap implements TapGuard.
func (f *nftFirewall) GuardTap(iface string, mac net.HardwareAddr, addr netip.Addr) error {
	if len(mac) != 6 || !addr.Is4() {
		return fmt.Errorf("guard tap %s: need a 6-byte MAC and an IPv4 address, got %s %s", iface, mac, addr)
	}
	f.tapMu.Lock()
	defer f.tapMu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	// Creating what exists already is no error (no NLM_F_EXCL): the first
	// tap makes the table and base chain, later ones reuse them.
	t := c.AddTable(f.bridgeTable())
	accept := nftables.ChainPolicyAccept
	base := c.AddChain(&nftables.Chain{
		Name: nftTapBase, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(nftBridgePriorityFilter), Policy: &accept,
	})
	// A guard an earlier holder of the name left (a failed Detach):
	// replaced in the same transaction, so the name is never unguarded.
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return err
	}
	if err := f.delTapJumps(c, t, chains, iface); err != nil {
		return err
	}
	ch := c.AddChain(&nftables.Chain{Name: nftTapChain(iface), Table: t})
	c.FlushChain(ch)
	for _, es := range tapGuardExprs(mac, addr) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es})
	}
	c.AddRule(&nftables.Rule{
		Table: t, Chain: base,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(iface)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, nftTapComment(iface)),
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("guard tap %s in table bridge %s: %w", iface, f.table, err)
	}
	return nil
}

// UnguardTap implements TapGuard.
func (f *nftFirewall) UnguardTap(iface string) error {
	f.tapMu.Lock()
	defer f.tapMu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := f.bridgeTable()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return err
	}
	var ch *nftables.Chain
	for _, x := range chains {
		if x.Table.Name == f.table && x.Name == nftTapChain(iface) {
			ch = x
		}
	}
	if err := f.delTapJumps(c, t, chains, iface); err != nil {
		return err
	}
	if ch != nil {
		// Jumps first, then the chain they referenced: one transaction.
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("unguard tap %s in table bridge %s: %w", iface, f.table, err)
	}
	return nil
}

// delTapJumps queues the deletion of the base chain's jumps for iface;
// chains are the bridge family's. A missing table or chain has none.
func (f *nftFirewall) delTapJumps(c *nftables.Conn, t *nftables.Table, chains []*nftables.Chain, iface string) error {
	found := false
	for _, x := range chains {
		if x.Table.Name == f.table && x.Name == nftTapBase {
			found = true
		}
	}
	if !found {
		return nil
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: nftTapBase, Table: t})
	if err != nil {
		return fmt.Errorf("list table bridge %s: %w", f.table, err)
	}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && s == nftTapComment(iface) {
			if err := c.DelRule(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// tapGuardExprs are the rules of a tap's chain, in order. Frames that
// pass return to the base chain (policy accept); the last rule drops the
// rest. EtherType is read from the frame (payload), not meta protocol:
// the kernel moves an 802.1Q tag out of the frame before the bridge sees
// it, and meta protocol would then name the inner protocol, while a
// payload load puts the tag back, so tagged frames are dropped.
func tapGuardExprs(mac net.HardwareAddr, addr netip.Addr) [][]expr.Any {
	a := addr.As4()
	ll := func(off, n uint32) expr.Any {
		return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: off, Len: n}
	}
	nh := func(off, n uint32) expr.Any {
		return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	}
	eq := func(b []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: bytes.Clone(b)} }
	etherType := func(p uint16) []expr.Any { return []expr.Any{ll(12, 2), eq([]byte{byte(p >> 8), byte(p)})} }
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	var ipv4, arp []expr.Any
	ipv4 = append(ipv4, etherType(unix.ETH_P_IP)...)
	ipv4 = append(ipv4, nh(12, 4), eq(a[:]), ret) // ip saddr
	arp = append(arp, etherType(unix.ETH_P_ARP)...)
	arp = append(arp,
		// Ethernet/IPv4 ARP (htype 1, ptype 0x0800, hlen 6, plen 4): the
		// only kind the kernel's ARP accepts, and the one the offsets
		// below assume.
		nh(0, 6), eq([]byte{0, 1, 8, 0, 6, 4}),
		nh(8, 6), eq(mac), // sender hardware address
		nh(14, 4), eq(a[:]), // sender IP address
		ret)
	return [][]expr.Any{
		{ll(6, 6), &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: bytes.Clone(mac)}, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
		ipv4,
		arp,
		// IPv6, other EtherTypes, VLAN tags, spoofed IPv4 and ARP.
		{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
	}
}
