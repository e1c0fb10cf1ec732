package netenv

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ErrExhausted reports that every address of the subnet is in use.
var ErrExhausted = errors.New("netenv: no free address in the subnet")

// ipam hands out the subnet's addresses in memory. Offset 0 is the network
// address, 1 the bridge (gateway), the last the broadcast address; the rest
// go to environments.
//
// Allocation is round robin rather than lowest-free: conntrack keeps the
// NAT mappings of a retired environment's connections for minutes to days
// (an established TCP flow: five days), and a new environment given the
// same address at once would receive the replies meant for the old one.
// Cycling through the whole subnet makes reuse as late as possible; Detach
// also flushes the address's conntrack entries where the kernel lets it.
// Not safe for concurrent use: the Manager's lock guards it.
type ipam struct {
	base uint32 // network address
	size uint32 // addresses in the subnet
	next uint32 // offset to try first
	used map[uint32]bool
}

func newIPAM(p netip.Prefix) *ipam {
	a4 := p.Masked().Addr().As4()
	return &ipam{
		base: binary.BigEndian.Uint32(a4[:]),
		size: 1 << (32 - p.Bits()),
		next: 2,
		used: map[uint32]bool{},
	}
}

func (a *ipam) addr(off uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a.base+off)
	return netip.AddrFrom4(b)
}

func (a *ipam) alloc() (netip.Addr, error) {
	// Offset 1 is the gateway (Policy.Gateway), the last the broadcast.
	first, last := uint32(2), a.size-2
	for range last - first + 1 {
		off := a.next
		a.next++
		if a.next > last {
			a.next = first
		}
		if !a.used[off] {
			a.used[off] = true
			return a.addr(off), nil
		}
	}
	return netip.Addr{}, ErrExhausted
}

func (a *ipam) release(ip netip.Addr) {
	if !ip.Is4() {
		return
	}
	b := ip.As4()
	delete(a.used, binary.BigEndian.Uint32(b[:])-a.base)
}

func (a *ipam) inUse() int { return len(a.used) }
