package netenv

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// spoofCase is a frame a VM writes into its tap and whether a guarded
// port lets it into the bridge.
type spoofCase struct {
	name  string
	frame []byte
	pass  bool
}

// spoofCases are frames from l's VM to the host (the bridge's MAC or
// broadcast), each tagged with a marker naming it. The IPv4 ones are
// addressed to an unused address of the environments' subnet, not to the
// host: the policy drops IPv4 to a host address at prerouting, which with
// br_netfilter runs before the bridge passes the frame up, where the test
// looks for it; and routed back to the bridge, such a frame never leaves
// the machine.
func spoofCases(m *Manager, l *Link) []spoofCase {
	own, ownIP := l.MAC(), l.Addr()
	other := l.Addr().Next() // another environment's address
	otherMAC := macFor(other)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mark := func(name string) []byte { return []byte("NBSPOOF:" + name + ";") }
	unused := lastHost(m.cfg.Subnet)
	udp := func(name string, src netip.Addr) []byte { return ipv4UDP(src, unused, mark(name)) }
	cs := []spoofCase{
		{name: "ipv4-own", pass: true,
			frame: ethFrame(m.brMAC, own, unix.ETH_P_IP, udp("ipv4-own", ownIP))},
		{name: "ipv4-foreign-ip",
			frame: ethFrame(m.brMAC, own, unix.ETH_P_IP, udp("ipv4-foreign-ip", other))},
		{name: "ipv4-foreign-mac",
			frame: ethFrame(m.brMAC, otherMAC, unix.ETH_P_IP, udp("ipv4-foreign-mac", ownIP))},
		{name: "arp-own", pass: true,
			frame: ethFrame(bcast, own, unix.ETH_P_ARP, arpRequest(own, ownIP, m.Gateway(), mark("arp-own")))},
		{name: "arp-foreign-ip",
			frame: ethFrame(bcast, own, unix.ETH_P_ARP, arpRequest(own, other, m.Gateway(), mark("arp-foreign-ip")))},
		{name: "arp-foreign-sender-mac",
			frame: ethFrame(bcast, own, unix.ETH_P_ARP, arpRequest(otherMAC, ownIP, m.Gateway(), mark("arp-foreign-sender-mac")))},
		{name: "arp-foreign-mac",
			frame: ethFrame(bcast, otherMAC, unix.ETH_P_ARP, arpRequest(otherMAC, ownIP, m.Gateway(), mark("arp-foreign-mac")))},
		{name: "ipv6",
			frame: ethFrame(m.brMAC, own, unix.ETH_P_IPV6, ipv6NoNext(mark("ipv6")))},
	}
	// An 802.1Q-tagged IPv4 packet with the right addresses: the kernel
	// moves the tag out of the frame before the bridge sees it.
	tagged := append([]byte{0, 5, 0x08, 0x00}, udp("vlan", ownIP)...)
	cs = append(cs, spoofCase{name: "vlan", frame: ethFrame(m.brMAC, own, unix.ETH_P_8021Q, tagged)})
	return cs
}

func ethFrame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	b = binary.BigEndian.AppendUint16(b, etherType)
	return append(b, payload...)
}

func ipv4UDP(src, dst netip.Addr, payload []byte) []byte {
	h := make([]byte, 20, 28+len(payload))
	h[0], h[8], h[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(h[2:], uint16(28+len(payload)))
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	h = binary.BigEndian.AppendUint16(h, 40000)                  // source port
	h = binary.BigEndian.AppendUint16(h, 9)                      // discard
	h = binary.BigEndian.AppendUint16(h, uint16(8+len(payload))) // length
	h = binary.BigEndian.AppendUint16(h, 0)                      // no checksum
	return append(h, payload...)
}

// ipv6NoNext is a well-formed IPv6 packet (br_netfilter, when loaded,
// drops malformed ones itself) from a link-local address with no next
// header.
func ipv6NoNext(payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = 59, 64
	src, dst := netip.MustParseAddr("fe80::1").As16(), netip.MustParseAddr("ff02::1").As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	return append(h, payload...)
}

// arpRequest asks for tpa; trailer rides along as padding.
func arpRequest(sha net.HardwareAddr, spa, tpa netip.Addr, trailer []byte) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	s, d := spa.As4(), tpa.As4()
	b = append(b, sha...)
	b = append(b, s[:]...)
	b = append(b, make([]byte, 6)...)
	b = append(b, d[:]...)
	return append(b, trailer...)
}

// bridgeSees writes each case's frame into the tap (behind a zeroed
// virtio-net header: the tap has IFF_VNET_HDR) and reports which of them
// the bridge passed up to the host, as seen by a packet socket on the
// bridge device.
func bridgeSees(t *testing.T, m *Manager, tap *os.File, cs []spoofCase) map[string]bool {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: m.brIndex}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000}); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if _, err := tap.Write(append(make([]byte, 10), c.frame...)); err != nil {
			t.Fatalf("write %s: %v", c.name, err)
		}
	}
	seen := map[string]bool{}
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout
		}
		for _, c := range cs {
			if bytes.Contains(buf[:n], []byte("NBSPOOF:"+c.name+";")) {
				seen[c.name] = true
			}
		}
	}
	return seen
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestTapSpoofing: frames a VM forges — another MAC or IPv4 address as
// source, IPv6, VLAN tags — never enter the bridge from a guarded tap,
// while its own do. The control runs the same frames through an unguarded
// tap (the Fake filters nothing), where all of them arrive: the test can
// tell a drop from a frame that would never have arrived anyway.
func TestTapSpoofing(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		name    string
		n       int
		backend string
		guarded bool
	}{
		{"unguarded", 42, "", false},
		{BackendNftables, 43, BackendNftables, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fw Firewall
			if tc.guarded {
				backendUsable(t, tc.backend)
			} else {
				fw = NewFake()
			}
			m := newManager(t, testConfig(t, tc.n, tc.backend, fw))
			l, f, err := m.AttachTap("vm-spoof")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cs := spoofCases(m, l)
			seen := bridgeSees(t, m, f, cs)
			for _, c := range cs {
				want := c.pass || !tc.guarded
				if seen[c.name] != want {
					t.Errorf("%s: bridge saw the frame: %v, want %v", c.name, seen[c.name], want)
				}
			}
			if !tc.guarded {
				return
			}
			// The drops were the guard's (its counters), and the frames
			// that passed did so past a guard that names this tap.
			rs := run(t, "nft", "list", "table", "bridge", m.cfg.Name)
			if !strings.Contains(rs, nftTapChain(l.HostIface())) || !strings.Contains(rs, nftTapComment(l.HostIface())) {
				t.Errorf("no guard for %s:\n%s", l.HostIface(), rs)
			}
		})
	}
}

// TestTapGuardLifecycle: Detach removes a tap's guard and leaves the
// others; Close removes the table; a killed nubo's guards go with
// CleanupStale.
func TestTapGuardLifecycle(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	backendUsable(t, BackendNftables)
	testutil.RequiresBinary(t, "nft")
	cfg := testConfig(t, 44, BackendNftables, nil)
	bridgeRules := func() string {
		return run(t, "nft", "list", "table", "bridge", cfg.Name)
	}

	m := newManager(t, cfg)
	l1, f1, err := m.AttachTap("vm-one")
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	l2, f2, err := m.AttachTap("vm-two")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	rs := bridgeRules()
	for _, l := range []*Link{l1, l2} {
		if !strings.Contains(rs, nftTapChain(l.HostIface())) || !strings.Contains(rs, l.Addr().String()) {
			t.Errorf("no guard for %s (%s):\n%s", l.HostIface(), l.Addr(), rs)
		}
	}
	if err := m.Detach(l1); err != nil {
		t.Fatal(err)
	}
	rs = bridgeRules()
	if strings.Contains(rs, nftTapChain(l1.HostIface())) || strings.Contains(rs, nftTapComment(l1.HostIface())) {
		t.Errorf("guard of %s outlived Detach:\n%s", l1.HostIface(), rs)
	}
	if !strings.Contains(rs, nftTapChain(l2.HostIface())) {
		t.Errorf("Detach of %s took %s's guard:\n%s", l1.HostIface(), l2.HostIface(), rs)
	}
	// The name again, guarded anew.
	l3, f3, err := m.AttachTap("vm-one")
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if rs := bridgeRules(); strings.Count(rs, nftTapComment(l3.HostIface())) != 1 {
		t.Errorf("want one jump to %s's guard:\n%s", l3.HostIface(), rs)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// The taps go with the VMM's files.
	f1.Close()
	f2.Close()
	f3.Close()
	assertNothingLeft(t, cfg.Name, cfg.Bridge)

	// Killed with a tap attached: only CleanupStale is left to remove the
	// guard.
	m, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, f, err := m.AttachTap("vm-crashed")
	if err != nil {
		t.Fatal(err)
	}
	m.nl.Close() // all a SIGKILL would free
	f.Close()    // the VMM died too
	if rs := bridgeRules(); !strings.Contains(rs, nftTapChain(l.HostIface())) {
		t.Fatalf("no guard before the crash:\n%s", rs)
	}
	if err := CleanupStale(cfg); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, cfg.Name, cfg.Bridge)
	if _, err := netlink.LinkByName(l.HostIface()); err == nil {
		t.Errorf("tap %s outlived its file and CleanupStale", l.HostIface())
	}
}

// lastHost is the last address of p before its broadcast address: one the
// tests' environments (allocated from the start) never get.
func lastHost(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= 1<<(32-p.Bits()) - 2
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
