package netenv

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// nftPriorityFilter runs the filter chains just before the conventional
// filter priority (0, where iptables-nft and most rulesets sit). Order
// matters less than it seems: in nftables a drop in any base chain of a hook
// is final, while an accept only ends that one chain, so another table's
// accept can never undo our drop. It does mean our accept cannot undo
// another table's drop either; New warns about such tables.
const nftPriorityFilter = -10

// nftFirewall renders the policy into one table of family inet named after
// the instance: a filter chain at input, one at forward, one at
// prerouting (ahead of DNAT), a NAT chain at postrouting. One table makes
// replacing and removing the whole ruleset a single atomic operation.
// Being inet, the table also sees IPv6, which the policy's NotIPv4 rule
// drops. NAT in an inet table needs Linux 5.2; on
// older kernels Setup fails and BackendAuto falls back to iptables. VMs'
// tap guards live in a second table, of family bridge (tapguard.go).
type nftFirewall struct {
	table string
	log   *slog.Logger
	tapMu sync.Mutex // serialises GuardTap and UnguardTap (see tapguard.go)
}

func newNftables(name string, log *slog.Logger) (Firewall, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("%w: nftables: %v", ErrUnavailable, err)
	}
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("%w: nftables: %v", ErrUnavailable, err)
	}
	return &nftFirewall{table: name, log: log}, nil
}

func (f *nftFirewall) Name() string { return BackendNftables }

func (f *nftFirewall) Setup(p Policy) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
	// Add, delete, add in one batch: the kernel applies a batch as one
	// transaction, so an existing table (an earlier Setup, a crashed run) is
	// replaced without a moment in which no rules are loaded, and a missing
	// one is simply created.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)

	accept := nftables.ChainPolicyAccept
	chains := map[Hook]*nftables.Chain{
		HookInput: c.AddChain(&nftables.Chain{
			Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftPriorityFilter), Policy: &accept,
		}),
		HookForward: c.AddChain(&nftables.Chain{
			Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(nftPriorityFilter), Policy: &accept,
		}),
		HookPostrouting: c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
		}),
		// Ahead of any destination NAT (a nat chain's priority is above
		// -200) and of conntrack: what is dropped here leaves no entry.
		HookPrerouting: c.AddChain(&nftables.Chain{
			Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept,
		}),
	}
	for _, r := range p.Rules() {
		c.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    chains[r.Hook],
			Exprs:    nftExprs(r),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment),
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install table inet %s: %w", f.table, err)
	}
	f.warnForeignDrop(c)
	return nil
}

// warnForeignDrop logs base chains of other tables that drop forwarded
// packets by default (Docker, for one, sets iptables' FORWARD policy to
// DROP): environments' egress, accepted here, dies there.
func (f *nftFirewall) warnForeignDrop(c *nftables.Conn) {
	chains, err := c.ListChains()
	if err != nil {
		return
	}
	for _, ch := range chains {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		if ch.Table.Name == f.table && ch.Table.Family == nftables.TableFamilyINet {
			continue
		}
		f.log.Warn("netenv: another forward chain drops by default; environments' egress may be dropped there unless it accepts the environment subnet (or use the iptables backend, whose accept comes first in FORWARD)",
			"table", ch.Table.Name, "chain", ch.Name)
	}
}

func (f *nftFirewall) Teardown() error {
	_, err := f.teardown()
	return err
}

func (f *nftFirewall) teardown() (removed []string, err error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	// The inet table (the policy) and the bridge table (taps' guards).
	for _, fam := range []struct {
		family nftables.TableFamily
		name   string
	}{{nftables.TableFamilyINet, "inet"}, {nftables.TableFamilyBridge, "bridge"}} {
		tables, err := c.ListTablesOfFamily(fam.family)
		if err != nil {
			return removed, err
		}
		for _, t := range tables {
			if t.Name != f.table {
				continue
			}
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return removed, fmt.Errorf("delete table %s %s: %w", fam.name, f.table, err)
			}
			removed = append(removed, "nftables table "+fam.name+" "+f.table)
		}
	}
	return removed, nil
}

// nftExprs renders one rule. Interfaces are matched by name, not index: a
// rule bound to an index would silently stop matching if the bridge were
// ever recreated under the same name while the table stayed.
func nftExprs(r Rule) []expr.Any {
	var es []expr.Any
	iface := func(key expr.MetaKey, m IfaceMatch) {
		if m.any() {
			return
		}
		es = append(es,
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: nftCmp(m.Not), Register: 1, Data: ifnameBytes(m.Name)},
		)
	}
	iface(expr.MetaKeyIIFNAME, r.In)
	iface(expr.MetaKeyOIFNAME, r.Out)
	if r.NotIPv4 {
		es = append(es,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		)
	}
	if !r.Src.any() || !r.Dst.any() {
		// In an inet table the IPv4 header offsets below mean nothing for
		// IPv6 packets: restrict address matches to IPv4 first.
		es = append(es,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		)
	}
	addr := func(m AddrMatch, offset uint32) {
		if m.any() {
			return
		}
		es = append(es, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4})
		if m.Prefix.Bits() < 32 {
			es = append(es, &expr.Bitwise{
				SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: net.CIDRMask(m.Prefix.Bits(), 32), Xor: make([]byte, 4),
			})
		}
		base := m.Prefix.Masked().Addr().As4()
		es = append(es, &expr.Cmp{Op: nftCmp(m.Not), Register: 1, Data: base[:]})
	}
	addr(r.Src, 12) // IPv4 source address
	addr(r.Dst, 16) // IPv4 destination address
	if r.TCPDstPort != 0 {
		if r.Src.any() && r.Dst.any() {
			// As for addresses: the port is TCP's over IPv4 only.
			es = append(es,
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			)
		}
		var port [2]byte
		binary.BigEndian.PutUint16(port[:], r.TCPDstPort)
		es = append(es,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port[:]},
		)
	}
	if r.DstLocal {
		// fib daddr type local: the route to the destination is local.
		es = append(es,
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		)
	}
	if r.Replies {
		// ct state is a host-endian bitmask.
		es = append(es,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		)
	}
	es = append(es, &expr.Counter{})
	switch r.Action {
	case Accept:
		es = append(es, &expr.Verdict{Kind: expr.VerdictAccept})
	case Drop:
		es = append(es, &expr.Verdict{Kind: expr.VerdictDrop})
	case Masquerade:
		es = append(es, &expr.Masq{})
	case Pass:
		// From a base chain: its policy, accept, which ends only this
		// chain; the host's other chains still see the packet.
		es = append(es, &expr.Verdict{Kind: expr.VerdictReturn})
	default:
		panic(fmt.Sprintf("netenv: rule action %v cannot be rendered", r.Action))
	}
	return es
}

func nftCmp(not bool) expr.CmpOp {
	if not {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// ifnameBytes is name as the kernel compares it: IFNAMSIZ bytes, NUL padded.
func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
