package netenv

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/kernel"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// Made-up connection tracking entries use TEST-NET-2 (198.51.100.0/24),
// which no host uses: they carry no traffic, and nothing else in the table
// shares their addresses.
var testNet2 = netip.MustParsePrefix("198.51.100.0/24")

func requiresConntrack(t testing.TB) {
	t.Helper()
	testutil.RequiresRoot(t)
	_, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_count")
	testutil.Requires(t, err == nil, "needs connection tracking (the nf_conntrack module)")
}

// addFlow makes up a UDP entry from src:sport to dst:53.
func addFlow(t testing.TB, src, dst netip.Addr, sport uint16) {
	t.Helper()
	f := &netlink.ConntrackFlow{
		FamilyType: unix.AF_INET,
		Forward:    netlink.IPTuple{SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice()), Protocol: unix.IPPROTO_UDP, SrcPort: sport, DstPort: 53},
		Reverse:    netlink.IPTuple{SrcIP: net.IP(dst.AsSlice()), DstIP: net.IP(src.AsSlice()), Protocol: unix.IPPROTO_UDP, SrcPort: 53, DstPort: sport},
		TimeOut:    120,
	}
	if err := netlink.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
		t.Fatalf("make up an entry %s:%d -> %s: %v", src, sport, dst, err)
	}
}

// flowsFrom counts the entries whose original source is a.
func flowsFrom(t testing.TB, a netip.Addr) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if s, ok := netip.AddrFromSlice(f.Forward.SrcIP); ok && s.Unmap() == a {
			n++
		}
	}
	return n
}

func forgetTestNet2(t testing.TB) {
	t.Helper()
	f := &netlink.ConntrackFilter{}
	n := &net.IPNet{IP: net.IP(testNet2.Addr().AsSlice()), Mask: net.CIDRMask(testNet2.Bits(), 32)}
	if err := f.AddIPNet(netlink.ConntrackOrigSrcIP, n); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
		t.Logf("remove the made-up entries: %v", err)
	}
}

// TestOrigSource reads an entry's original source, and not its reply
// tuple's, from attributes laid out as the kernel sends them.
func TestOrigSource(t *testing.T) {
	entry := func(orig, reply string) []byte {
		var b []byte
		for _, tu := range []struct {
			typ int
			src string
		}{{nl.CTA_TUPLE_ORIG, orig}, {nl.CTA_TUPLE_REPLY, reply}} {
			if tu.src == "" {
				continue
			}
			outer := nl.NewRtAttr(unix.NLA_F_NESTED|tu.typ, nil)
			ip := outer.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
			ip.AddRtAttr(nl.CTA_IP_V4_DST, netip.MustParseAddr("198.51.100.1").AsSlice())
			ip.AddRtAttr(nl.CTA_IP_V4_SRC, netip.MustParseAddr(tu.src).AsSlice())
			b = append(b, outer.Serialize()...)
		}
		return b
	}
	for _, c := range []struct {
		attrs []byte
		want  string // "" for none
	}{
		{entry("198.51.100.7", "198.51.100.70"), "198.51.100.7"},
		{entry("198.51.100.70", "198.51.100.7"), "198.51.100.70"},
		{entry("", "198.51.100.7"), ""},
		{[]byte{1, 2, 3}, ""},
	} {
		got, ok := origSource(c.attrs)
		if c.want == "" {
			if ok {
				t.Errorf("found %s where there is no original source", got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(c.want) {
			t.Errorf("origSource = %v, %v; want %s", got, ok, c.want)
		}
	}
}

// TestDeleteConntrackFrom: the entries an address opened go; those others
// opened stay, also those opened to it and those from a neighbour that
// shares its port numbers.
func TestDeleteConntrackFrom(t *testing.T) {
	requiresConntrack(t)
	forgetTestNet2(t)
	t.Cleanup(func() { forgetTestNet2(t) })
	a, b, c := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("198.51.100.70")
	addFlow(t, a, c, 40001)
	addFlow(t, a, b, 40002)
	addFlow(t, b, a, 40001) // to a, from b
	addFlow(t, c, b, 40002)
	n, read, err := deleteConntrackFrom(a)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("deleted %d entries, want the 2 from %s", n, a)
	}
	// Linux 5.8 and later filter the dump (CTA_FILTER); CI's kernel does.
	if kernel.AtLeast(5, 8) && read != n {
		t.Errorf("the kernel sent %d entries for %d from %s: the dump was not filtered", read, n, a)
	}
	for addr, want := range map[netip.Addr]int{a: 0, b: 1, c: 1} {
		if got := flowsFrom(t, addr); got != want {
			t.Errorf("%d entries from %s left, want %d", got, addr, want)
		}
	}
	if n, _, err := deleteConntrackFrom(a); err != nil || n != 0 {
		t.Errorf("again: deleted %d, %v; want none and no error", n, err)
	}
}

// BenchmarkForgetConntrack: what forgetting one environment's entries
// costs beside a table of 5000 others, asking the kernel for them alone
// (filtered) or reading the whole table (walk, as before).
func BenchmarkForgetConntrack(b *testing.B) {
	requiresConntrack(b)
	forgetTestNet2(b)
	b.Cleanup(func() { forgetTestNet2(b) })
	a, peer := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.9")
	for i := range 5000 {
		addFlow(b, peer, a, uint16(10000+i))
	}
	walk := func(a netip.Addr) {
		f := &netlink.ConntrackFilter{}
		if err := f.AddIPNet(netlink.ConntrackOrigSrcIP, &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}); err != nil {
			b.Fatal(err)
		}
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			b.Fatal(err)
		}
	}
	filtered := func(a netip.Addr) {
		if _, _, err := deleteConntrackFrom(a); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		forget func(netip.Addr)
	}{{"filtered", filtered}, {"walk", walk}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				addFlow(b, a, peer, 53000)
				b.StartTimer()
				bc.forget(a)
			}
		})
	}
}
