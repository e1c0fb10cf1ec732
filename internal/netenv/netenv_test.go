package netenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Each root test owns an instance number n and, with it, names and ranges
// no other test (and no real nubo, whose Name is "nubo" and subnet
// 10.213.0.0/16) uses: Name "nbt<n>", bridge "nubotest<n>", environments in
// 10.214.<n>.0/24, an upstream network 10.215.<n>.0/30, a link-local
// address 169.254.213.<n> routed to the upstream. Tests run in parallel.

const (
	dropWait = 400 * time.Millisecond // a dropped SYN: wait this long
	okWait   = 3 * time.Second
)

// world is a host with a Manager, two environments A and B, and an
// "upstream" namespace standing for the outside world: connected to the
// host by a veth of its own, it also holds a link-local address
// (169.254.213.<n>) the host routes to it, so a policy that failed to drop
// link-local traffic would be seen reaching it rather than leaving the
// machine.
type world struct {
	n        int
	cfg      Config
	m        *Manager
	a, b, up *testNS
	la, lb   *Link

	upHost, upAddr, linkLocal netip.Addr
	hostIP                    netip.Addr // the host's primary address, if any
	hostPort, aPort, bPort    int
	upPort                    int
}

func testConfig(t *testing.T, n int, backend string, fw Firewall) Config {
	return Config{
		Name:     fmt.Sprintf("nbt%d", n),
		Bridge:   fmt.Sprintf("nubotest%d", n),
		Subnet:   netip.MustParsePrefix(fmt.Sprintf("10.214.%d.0/24", n)),
		Backend:  backend,
		Firewall: fw,
		Logger:   testLogger(t),
	}
}

// newManager is New with a cleanup that removes everything even when the
// test fails before Close.
func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	t.Cleanup(func() {
		if err := CleanupStale(cfg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func newWorld(t *testing.T, n int, backend string, fw Firewall) *world {
	testutil.RequiresRoot(t)
	if backend != "" {
		backendUsable(t, backend)
	}
	w := &world{
		n:         n,
		cfg:       testConfig(t, n, backend, fw),
		upHost:    netip.MustParseAddr(fmt.Sprintf("10.215.%d.1", n)),
		upAddr:    netip.MustParseAddr(fmt.Sprintf("10.215.%d.2", n)),
		linkLocal: netip.MustParseAddr(fmt.Sprintf("169.254.213.%d", n)),
		hostIP:    primaryIPv4(t),
	}
	w.m = newManager(t, w.cfg)
	w.a, w.b, w.up = newTestNS(t), newTestNS(t), newTestNS(t)
	var err error
	if w.la, err = w.m.Attach(w.a.fd, fmt.Sprintf("nubo-%d0000000a", n)); err != nil {
		t.Fatal(err)
	}
	if w.lb, err = w.m.Attach(w.b.fd, fmt.Sprintf("nubo-%d0000000b", n)); err != nil {
		t.Fatal(err)
	}
	w.wireUpstream(t)
	w.hostPort = serve(t, nil)
	w.aPort = serve(t, w.a)
	w.bPort = serve(t, w.b)
	w.upPort = serve(t, w.up)
	return w
}

func (w *world) wireUpstream(t *testing.T) {
	t.Helper()
	name := fmt.Sprintf("nbt%dup", w.n)
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(w.up.fd)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, mustAddr(w.upHost, 30)); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	// The route dies with the veth.
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: mustAddr(w.linkLocal, 32).IPNet, Gw: w.upAddr.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	w.up.do(t, func(h *netlink.Handle) error {
		eth, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(eth, mustAddr(w.upAddr, 30)); err != nil {
			return err
		}
		if err := h.AddrAdd(lo, mustAddr(w.linkLocal, 32)); err != nil {
			return err
		}
		if err := h.LinkSetUp(eth); err != nil {
			return err
		}
		// Lets the upstream answer (and open connections to) the
		// environments' own addresses, for when nothing masquerades.
		return h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: mustAddr(w.cfg.Subnet.Addr(), w.cfg.Subnet.Bits()).IPNet, Gw: w.upHost.AsSlice()})
	})
}

// dnatHostPort stands for a service published on a host address by
// destination NAT, as Docker publishes a container's port: connections to
// the host's upstream-side address at the returned port are rewritten, at
// prerouting, to the upstream's server. The rule is the test's own (an
// nftables table of its own) and goes with it.
func (w *world) dnatHostPort(t *testing.T) int {
	t.Helper()
	testutil.RequiresBinary(t, "nft")
	table := fmt.Sprintf("nbt%ddnat", w.n)
	port := 18000 + w.n
	rules := fmt.Sprintf(`table ip %s {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport %d dnat to %s:%d
	}
}
`, table, w.upHost, port, w.upAddr, w.upPort)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("nft", "delete", "table", "ip", table).Run() })
	return port
}

// udpArrives sends a datagram from inside n to a host listener on port
// and reports whether it arrived.
func udpArrives(t *testing.T, n *testNS, to netip.Addr, port int) bool {
	t.Helper()
	udp, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if err := inNetns(n.fd, func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(to, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("over UDP"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	udp.SetReadDeadline(time.Now().Add(dropWait))
	_, _, err = udp.ReadFrom(make([]byte, 64))
	return err == nil
}

func mustAddr(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

// probe is one connection attempt and what the policy says of it.
type probe struct {
	name   string
	from   *testNS
	to     netip.Addr
	port   int
	reach  bool
	seenAs netip.Addr // when reach: the source the server must see
}

// check runs the probes concurrently (drops cost a timeout each).
func check(t *testing.T, probes ...probe) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(probes))
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait := dropWait
			if p.reach {
				wait = okWait
			}
			seen, err := dial(p.from, p.to, p.port, wait)
			switch {
			case p.reach && err != nil:
				errs[i] = fmt.Sprintf("%s: %s:%d unreachable: %v", p.name, p.to, p.port, err)
			case p.reach && seen != p.seenAs.String():
				errs[i] = fmt.Sprintf("%s: server saw %s, want %s", p.name, seen, p.seenAs)
			case !p.reach && err == nil:
				errs[i] = fmt.Sprintf("%s: %s:%d reachable (server saw %s)", p.name, p.to, p.port, seen)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
}

// routeViaGateway makes A send to B's address (and B to A's) through the
// host rather than on-link. Port isolation stops the on-link path; this
// path only the forward rule stops.
func (w *world) routeViaGateway(t *testing.T) {
	for _, p := range []struct {
		ns   *testNS
		peer netip.Addr
	}{{w.a, w.lb.Addr()}, {w.b, w.la.Addr()}} {
		p.ns.do(t, func(h *netlink.Handle) error {
			eth, err := h.LinkByName(EnvIface)
			if err != nil {
				return err
			}
			return h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: mustAddr(p.peer, 32).IPNet, Gw: w.m.Gateway().AsSlice()})
		})
	}
}

// TestPolicyWithoutFirewall is the control for the enforcement tests: the
// same world with a Fake firewall (nothing in the kernel) reaches
// everything the policy forbids — so a test that sees it blocked is seeing
// the policy — except environment to environment on-link, which port
// isolation alone stops.
func TestPolicyWithoutFirewall(t *testing.T) {
	t.Parallel()
	fake := NewFake()
	w := newWorld(t, 1, "", fake)
	if w.m.Backend() != "fake" {
		t.Fatalf("firewall %s", w.m.Backend())
	}
	if p, ok := fake.Installed(); !ok || !reflect.DeepEqual(p, w.m.Policy()) {
		t.Fatalf("fake got %+v, %v", p, ok)
	}
	a := w.la.Addr()
	probes := []probe{
		{"env to env, on-link (port isolation)", w.a, w.lb.Addr(), w.bPort, false, netip.Addr{}},
		{"env to bridge address", w.a, w.m.Gateway(), w.hostPort, true, a},
		{"env to upstream, not masqueraded", w.a, w.upAddr, w.upPort, true, a},
		{"env to link-local", w.a, w.linkLocal, w.upPort, true, a},
	}
	if w.hostIP.IsValid() {
		probes = append(probes, probe{"env to host's primary address", w.a, w.hostIP, w.hostPort, true, a})
	}
	probes = append(probes, probe{"env to a port the host publishes by DNAT", w.a, w.upHost, w.dnatHostPort(t), true, a})
	check(t, probes...)
	// The control for testHostPorts' UDP check.
	if !udpArrives(t, w.a, w.m.Gateway(), w.hostPort) {
		t.Error("with no policy, a UDP datagram from an environment did not reach the host")
	}
	w.routeViaGateway(t)
	check(t,
		probe{"env to env, via the gateway", w.a, w.lb.Addr(), w.bPort, true, a},
		probe{"upstream to env", w.up, a, w.aPort, true, w.upAddr},
	)
	if err := w.m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Installed(); ok {
		t.Error("Close left the policy installed")
	}
	assertNothingLeft(t, w.cfg.Name, w.cfg.Bridge)
}

func TestPolicyNftables(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2, BackendNftables, nil)
	testEnforced(t, w)
}

func TestPolicyIptables(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3, BackendIptables, nil)
	testEnforced(t, w)
}

func testEnforced(t *testing.T, w *world) {
	if got := w.m.Backend(); got != w.cfg.Backend {
		t.Fatalf("firewall %s, want %s", got, w.cfg.Backend)
	}
	if v, err := readSysctl("net/ipv4/ip_forward"); err != nil || v != "1" {
		t.Fatalf("ip_forward = %q, %v", v, err)
	}
	checkWiring(t, w)

	probes := []probe{
		{"env to upstream, masqueraded", w.a, w.upAddr, w.upPort, true, w.upHost},
		{"env B to upstream", w.b, w.upAddr, w.upPort, true, w.upHost},
		{"env to env, on-link", w.a, w.lb.Addr(), w.bPort, false, netip.Addr{}},
		{"env to bridge address", w.a, w.m.Gateway(), w.hostPort, false, netip.Addr{}},
		{"env to host's upstream-side address", w.a, w.upHost, w.hostPort, false, netip.Addr{}},
		{"env to link-local", w.a, w.linkLocal, w.upPort, false, netip.Addr{}},
		{"env to a port the host publishes by DNAT", w.a, w.upHost, w.dnatHostPort(t), false, netip.Addr{}},
	}
	if w.hostIP.IsValid() {
		probes = append(probes, probe{"env to host's primary address", w.a, w.hostIP, w.hostPort, false, netip.Addr{}})
	}
	check(t, probes...)
	w.routeViaGateway(t)
	check(t,
		probe{"env to env, via the gateway", w.a, w.lb.Addr(), w.bPort, false, netip.Addr{}},
		probe{"env B to env A, via the gateway", w.b, w.la.Addr(), w.aPort, false, netip.Addr{}},
		probe{"upstream to env", w.up, w.la.Addr(), w.aPort, false, netip.Addr{}},
		probe{"env to upstream still", w.a, w.upAddr, w.upPort, true, w.upHost},
	)

	checkRuleset(t, w)
	// Setup again (a restart without Close) replaces rather than adds.
	before := withoutCounters(ruleset(t, w.cfg))
	if err := w.m.fw.Setup(w.m.Policy()); err != nil {
		t.Fatal(err)
	}
	if after := withoutCounters(ruleset(t, w.cfg)); after != before {
		t.Errorf("second Setup changed the ruleset:\n%s\n---\n%s", before, after)
	}

	checkDetach(t, w)
	if err := w.m.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, w.cfg.Name, w.cfg.Bridge)
	if err := w.m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.m.Attach(w.a.fd, "late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach after Close: %v", err)
	}
}

// checkWiring looks at both ends of A's veth.
func checkWiring(t *testing.T, w *world) {
	t.Helper()
	host, err := netlink.LinkByName(w.la.HostIface())
	if err != nil {
		t.Fatal(err)
	}
	br, err := netlink.LinkByName(w.cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w.la.HostIface(), w.cfg.Name+"-") || len(w.la.HostIface()) > 15 {
		t.Errorf("host end %q", w.la.HostIface())
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("%s not a port of %s", w.la.HostIface(), w.cfg.Bridge)
	}
	if pi, err := netlink.LinkGetProtinfo(host); err != nil || !pi.Isolated {
		t.Errorf("port not isolated: %+v, %v", pi, err)
	}
	// Both ends were made with one queue each way (the other below).
	checkOneQueue(t, host)
	// The port is up and makes no IPv6 address (no link-local, no DAD).
	if v6, err := netlink.AddrList(host, netlink.FAMILY_V6); err != nil || len(v6) != 0 {
		t.Errorf("IPv6 addresses on the port %s: %v, %v", w.la.HostIface(), v6, err)
	}
	if ipv6Present() {
		if v, err := readSysctl("net/ipv6/conf/" + w.la.HostIface() + "/disable_ipv6"); err != nil || v != "1" {
			t.Errorf("IPv6 on the port %s: disable_ipv6 %q, %v", w.la.HostIface(), v, err)
		}
	}
	if br.Attrs().HardwareAddr.String() != w.m.brMAC.String() {
		t.Errorf("bridge MAC changed to %s with ports (set %s)", br.Attrs().HardwareAddr, w.m.brMAC)
	}
	if !w.cfg.Subnet.Contains(w.la.Addr()) || w.la.Addr() == w.lb.Addr() || w.la.Addr() == w.m.Gateway() {
		t.Errorf("addresses A %s B %s gateway %s", w.la.Addr(), w.lb.Addr(), w.m.Gateway())
	}
	w.a.do(t, func(h *netlink.Handle) error {
		eth, err := h.LinkByName(EnvIface)
		if err != nil {
			return err
		}
		checkOneQueue(t, eth)
		if eth.Attrs().MTU != w.m.MTU() || br.Attrs().MTU != w.m.MTU() {
			t.Errorf("MTU env %d bridge %d, want %d", eth.Attrs().MTU, br.Attrs().MTU, w.m.MTU())
		}
		addrs, err := h.AddrList(eth, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != w.la.Prefix().String() {
			t.Errorf("eth0 addresses %v, want only %s", addrs, w.la.Prefix())
		}
		v4, err := h.RouteList(eth, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var def bool
		for _, r := range v4 {
			if p, ok := prefixOf(r.Dst); (!ok || p.Bits() == 0) && net.IP(r.Gw).Equal(w.m.Gateway().AsSlice()) {
				def = true
			}
		}
		if !def {
			t.Errorf("no default route via %s: %v", w.m.Gateway(), v4)
		}
		v6, err := h.RouteList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, r := range v6 {
			if r.LinkIndex == eth.Attrs().Index {
				t.Errorf("IPv6 route on eth0: %v", r)
			}
		}
		if v, err := readSysctl("net/ipv6/conf/eth0/disable_ipv6"); err == nil && v != "1" {
			t.Errorf("IPv6 enabled on the environment's eth0")
		}
		return nil
	})
	if v, err := readSysctl("net/ipv6/conf/" + w.cfg.Bridge + "/disable_ipv6"); ipv6Present() && (err != nil || v != "1") {
		t.Errorf("IPv6 on the bridge: disable_ipv6 %q, %v", v, err)
	}
}

// checkOneQueue checks that a veth end was made with one queue each way,
// not cut down to one after registration (which waits for an RCU grace
// period under the routing lock; see wire).
func checkOneQueue(t *testing.T, l netlink.Link) {
	t.Helper()
	if a := l.Attrs(); a.NumTxQueues != 1 || a.NumRxQueues != 1 {
		t.Errorf("%s: %d tx and %d rx queues, want 1 and 1", a.Name, a.NumTxQueues, a.NumRxQueues)
	}
}

// ruleset is the installed ruleset as the backend's own tool prints it.
func ruleset(t *testing.T, cfg Config) string {
	t.Helper()
	if cfg.Backend == BackendNftables {
		testutil.RequiresBinary(t, "nft")
		return run(t, "nft", "list", "table", "inet", cfg.Name)
	}
	// Only this instance's lines: parallel tests have chains of their own.
	var b strings.Builder
	p := strings.ToUpper(cfg.Name) + "-"
	for _, tbl := range iptTables {
		for _, l := range strings.Split(run(t, "iptables", "-w", "5", "-t", tbl, "-S"), "\n") {
			if strings.Contains(l, p) {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

var counters = regexp.MustCompile(`packets \d+ bytes \d+`)

func withoutCounters(s string) string { return counters.ReplaceAllString(s, "") }

// checkRuleset reads the rules back through the backend's own tool: the
// kernel's view of what nftExprs and iptArgs produced.
func checkRuleset(t *testing.T, w *world) {
	t.Helper()
	br, sub := w.cfg.Bridge, w.cfg.Subnet.String()
	rs := ruleset(t, w.cfg)
	var want []string
	if w.cfg.Backend == BackendNftables {
		// nft prints "meta nfproto ipv4" only where the rule does not
		// imply it by an ip match.
		want = []string{
			"type filter hook input priority filter - 10; policy accept;",
			"type filter hook forward priority filter - 10; policy accept;",
			"type nat hook postrouting priority srcnat; policy accept;",
			"type filter hook prerouting priority raw; policy accept;",
			`iifname "` + br + `" fib daddr type local counter packets `,
			`iifname "` + br + `" counter packets `,
			`iifname "` + br + `" oifname "` + br + `" counter packets `,
			`iifname "` + br + `" meta nfproto != ipv4 counter packets `,
			`iifname "` + br + `" ip daddr 169.254.0.0/16 counter packets `,
			`iifname "` + br + `" ip saddr != ` + sub + ` counter packets `,
			`oifname "` + br + `" ct state established,related counter packets `,
			`oifname != "` + br + `" ip saddr ` + sub + ` counter packets `,
		}
		// The probes to host addresses met the drop ahead of DNAT first:
		// its counter shows the kernel really matched the rendered rule.
		if strings.Contains(rs, `iifname "`+br+`" fib daddr type local counter packets 0 bytes 0 drop`) {
			t.Errorf("the drop ahead of DNAT never counted a packet:\n%s", rs)
		}
	} else {
		p := strings.ToUpper(w.cfg.Name)
		want = []string{
			"-N " + p + "-INPUT", "-N " + p + "-FORWARD", "-N " + p + "-POSTROUTING", "-N " + p + "-PREROUTING",
			"-A " + p + "-PREROUTING -i " + br + ` -m addrtype --dst-type LOCAL -m comment --comment "nubo: environment to host, before DNAT" -j DROP`,
			"-A " + p + "-INPUT -i " + br + ` -m comment --comment "nubo: environment to host" -j DROP`,
			"-A " + p + "-FORWARD -i " + br + " -o " + br + " ",
			"-A " + p + "-FORWARD -d 169.254.0.0/16 -i " + br + " ",
			"-A " + p + "-FORWARD ! -s " + sub + " -i " + br + " ",
			"-A " + p + "-FORWARD -o " + br + " -m conntrack --ctstate RELATED,ESTABLISHED ",
			"-A " + p + "-POSTROUTING -s " + sub + " ! -o " + br + " ",
		}
		// As with nftables: the probes met the drop ahead of DNAT.
		if out := run(t, "iptables", "-w", "5", "-t", "raw", "-L", p+"-PREROUTING", "-v", "-x", "-n"); !regexp.MustCompile(`(?m)^\s*[1-9]\d*\s+\d+\s+DROP`).MatchString(out) {
			t.Errorf("the drop ahead of DNAT never counted a packet:\n%s", out)
		}
		// The jumps must come first in the built-in chains; only the
		// jumps of other instances (parallel tests, a real nubo), inserted
		// first later, may precede them.
		for _, c := range []struct{ table, chain string }{{"filter", "INPUT"}, {"filter", "FORWARD"}, {"nat", "POSTROUTING"}, {"raw", "PREROUTING"}} {
			other := regexp.MustCompile(`^-A ` + c.chain + ` -j [A-Z][A-Z0-9]*-` + c.chain + `$`)
			ours := "-A " + c.chain + " -j " + p + "-" + c.chain
			lines := strings.Split(strings.TrimSpace(run(t, "iptables", "-w", "5", "-t", c.table, "-S", c.chain)), "\n")
			found := false
			for _, l := range lines[1:] {
				if l == ours {
					found = true
					break
				}
				if !other.MatchString(l) {
					break
				}
			}
			if !found {
				t.Errorf("jump not first in %s: %q", c.chain, lines)
			}
		}
	}
	for _, s := range want {
		if !strings.Contains(rs, s) {
			t.Errorf("ruleset lacks %q:\n%s", s, rs)
		}
	}
}

func checkDetach(t *testing.T, w *world) {
	t.Helper()
	inUse := func() int {
		w.m.mu.Lock()
		defer w.m.mu.Unlock()
		return w.m.ipam.inUse()
	}
	if n := inUse(); n != 2 {
		t.Fatalf("%d addresses in use, want 2", n)
	}
	if n := conntrackFrom(t, w.la.Addr()); n == 0 {
		t.Fatalf("no conntrack entries from %s after the probes", w.la.Addr())
	}
	if err := w.m.Detach(w.la); err != nil {
		t.Fatal(err)
	}
	w.m.bg.Wait()
	if n := conntrackFrom(t, w.la.Addr()); n != 0 {
		t.Errorf("%d conntrack entries from %s survived Detach", n, w.la.Addr())
	}
	if _, err := netlink.LinkByName(w.la.HostIface()); err == nil {
		t.Errorf("host end %s still there", w.la.HostIface())
	}
	w.a.do(t, func(h *netlink.Handle) error {
		if _, err := h.LinkByName(EnvIface); err == nil {
			t.Errorf("eth0 still in the namespace")
		}
		return nil
	})
	if err := w.m.Detach(w.la); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if n := inUse(); n != 1 {
		t.Errorf("%d addresses in use after Detach, want 1", n)
	}
	// The sandbox dies first: its namespace takes both ends of the veth;
	// Detach still succeeds. Namespace teardown is asynchronous.
	w.b.stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := netlink.LinkByName(w.lb.HostIface()); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s outlived its namespace", w.lb.HostIface())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.m.Detach(w.lb); err != nil {
		t.Errorf("Detach after the namespace died: %v", err)
	}
	w.m.bg.Wait()
	if n := inUse(); n != 0 {
		t.Errorf("%d addresses in use, want 0", n)
	}
	// The namespace can be attached again (a sandbox reused).
	l, err := w.m.Attach(w.a.fd, "again")
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr() == w.la.Addr() {
		t.Errorf("address %s reused at once", l.Addr())
	}
	check(t, probe{"re-attached env to upstream", w.a, w.upAddr, w.upPort, true, w.upHost})
}

// conntrackFrom counts connection tracking entries opened from a.
func conntrackFrom(t *testing.T, a netip.Addr) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, netlink.InetFamily(unix.AF_INET))
	if err != nil {
		t.Fatalf("conntrack: %v", err)
	}
	n := 0
	for _, f := range flows {
		if f.Forward.SrcIP.Equal(a.AsSlice()) {
			n++
		}
	}
	return n
}

func TestAttachRefusals(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	m := newManager(t, testConfig(t, 4, "", NewFake()))
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if _, err := m.Attach(int(self.Fd()), "host"); err == nil {
		t.Fatal("attached the host's own namespace")
	}
	ns := newTestNS(t)
	l, err := m.Attach(ns.fd, "dup")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(ns.fd, "dup"); err == nil {
		t.Fatal("attached one id twice")
	}
	// A second namespace whose id ends like the first: another veth name.
	ns2 := newTestNS(t)
	l2, err := m.Attach(ns2.fd, "x-dup")
	if err != nil {
		t.Fatal(err)
	}
	if l2.HostIface() == l.HostIface() {
		t.Fatalf("two environments share %s", l.HostIface())
	}
	// A failed attach (eth0 exists in ns already) leaves nothing behind.
	m.mu.Lock()
	before := m.ipam.inUse()
	m.mu.Unlock()
	if _, err := m.Attach(ns.fd, "other"); err == nil {
		t.Fatal("attached a namespace that has an eth0 already")
	}
	m.mu.Lock()
	after := m.ipam.inUse()
	m.mu.Unlock()
	if after != before {
		t.Errorf("failed attach kept an address (%d -> %d)", before, after)
	}
	for _, name := range hostLinkNames(t) {
		if name == vethName("nbt4", "other") {
			t.Errorf("failed attach left %s", name)
		}
	}
}

func TestNewRefusals(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	// Someone else's bridge under our bridge name is left alone.
	cfg := testConfig(t, 5, "", NewFake())
	la := netlink.NewLinkAttrs()
	la.Name = cfg.Bridge
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(cfg.Bridge); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	if m, err := New(cfg); err == nil {
		m.Close()
		t.Fatal("New took over a foreign bridge")
	}
	if _, err := netlink.LinkByName(cfg.Bridge); err != nil {
		t.Fatalf("foreign bridge removed: %v", err)
	}

	// A subnet overlapping a host address is refused, and nothing is left.
	dl := netlink.NewLinkAttrs()
	dl.Name = "nbt5other"
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: dl}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(dl.Name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	d, err := netlink.LinkByName(dl.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(d, mustAddr(netip.MustParseAddr("10.216.5.1"), 24)); err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, 6, "", NewFake())
	cfg2.Subnet = netip.MustParsePrefix("10.216.0.0/16")
	if m, err := New(cfg2); !errors.Is(err, ErrSubnetOverlap) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("overlapping subnet: %v", err)
	}
	assertNothingLeft(t, cfg2.Name, cfg2.Bridge)
}

// TestCleanupStale simulates nubo killed with SIGKILL: a Manager with an
// attached environment is abandoned without Close. CleanupStale (and New,
// which calls it) removes what it left, with either backend, and leaves
// another instance alone.
func TestCleanupStale(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	for i, backend := range []string{BackendNftables, BackendIptables} {
		t.Run(backend, func(t *testing.T) {
			backendUsable(t, backend)
			n := 7 + 2*i
			other := newManager(t, testConfig(t, n+1, backend, nil))

			cfg := testConfig(t, n, backend, nil)
			crash := func() (*Link, *testNS) {
				m, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ns := newTestNS(t)
				l, err := m.Attach(ns.fd, "crashed")
				if err != nil {
					t.Fatal(err)
				}
				m.nl.Close() // all a SIGKILL would free
				return l, ns
			}
			t.Cleanup(func() { _ = CleanupStale(cfg) })

			l, ns := crash()
			if _, err := netlink.LinkByName(l.HostIface()); err != nil {
				t.Fatal(err)
			}
			if err := CleanupStale(cfg); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, cfg.Name, cfg.Bridge)
			// The sandbox outlived nubo; its end of the veth did not.
			ns.do(t, func(h *netlink.Handle) error {
				if _, err := h.LinkByName(EnvIface); err == nil {
					t.Error("eth0 still in the abandoned namespace")
				}
				return nil
			})

			// A restart finds the leftovers itself.
			l, _ = crash()
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := netlink.LinkByName(l.HostIface()); err == nil {
				t.Errorf("restart kept %s", l.HostIface())
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, cfg.Name, cfg.Bridge)

			// The other instance was untouched throughout.
			if _, err := netlink.LinkByName(other.Bridge()); err != nil {
				t.Errorf("other instance's bridge gone: %v", err)
			}
			if rs := ruleset(t, testConfig(t, n+1, backend, nil)); !strings.Contains(rs, "nubo: environment to host") {
				t.Errorf("other instance's rules gone:\n%s", rs)
			}
		})
	}
}

// TestSmallMTU: a host whose default route has an MTU below IPv6's
// minimum gives the bridge and every port that MTU, and such devices have
// no IPv6 (and no conf directory to turn it off in): environments and
// taps must still attach, with no IPv6 anywhere.
func TestSmallMTU(t *testing.T) {
	t.Parallel()
	testutil.RequiresRoot(t)
	cfg := testConfig(t, 45, "", NewFake())
	cfg.MTU = 1200
	m := newManager(t, cfg)
	ns := newTestNS(t)
	l, err := m.Attach(ns.fd, "small")
	if err != nil {
		t.Fatal(err)
	}
	tap, f, err := m.AttachTap("vm-111111111111-45")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, dev := range []string{cfg.Bridge, l.HostIface(), tap.HostIface()} {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		if link.Attrs().MTU != 1200 {
			t.Errorf("%s: MTU %d, want 1200", dev, link.Attrs().MTU)
		}
		if dev == l.HostIface() {
			checkOneQueue(t, link)
		}
		if v, err := readSysctl("net/ipv6/conf/" + dev + "/disable_ipv6"); err == nil {
			t.Errorf("%s has IPv6 at MTU 1200 (disable_ipv6 %q)", dev, v)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil || len(addrs) != 0 {
			t.Errorf("%s: IPv6 addresses %v, %v", dev, addrs, err)
		}
	}
	if err := m.Detach(l); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(tap); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, cfg.Name, cfg.Bridge)
}

// TestHostPorts: an operator's host ports (Config.HostPorts) are open to
// environments at the bridge's address, over TCP, and nothing else of the
// host is: not another port, not the same port at another host address.
func TestHostPortsNftables(t *testing.T) {
	t.Parallel()
	testHostPorts(t, 47, BackendNftables)
}

func TestHostPortsIptables(t *testing.T) {
	t.Parallel()
	testHostPorts(t, 48, BackendIptables)
}

func testHostPorts(t *testing.T, n int, backend string) {
	testutil.RequiresRoot(t)
	backendUsable(t, backend)
	open, closed := serve(t, nil), serve(t, nil)
	cfg := testConfig(t, n, backend, nil)
	cfg.HostPorts = []uint16{uint16(open)}
	m := newManager(t, cfg)
	ns := newTestNS(t)
	l, err := m.Attach(ns.fd, fmt.Sprintf("nubo-%d0000000a", n))
	if err != nil {
		t.Fatal(err)
	}
	probes := []probe{
		{"env to an opened host port", ns, m.Gateway(), open, true, l.Addr()},
		{"env to another host port", ns, m.Gateway(), closed, false, netip.Addr{}},
	}
	if ip := primaryIPv4(t); ip.IsValid() {
		probes = append(probes, probe{"env to the opened port at the host's primary address", ns, ip, open, false, netip.Addr{}})
	}
	check(t, probes...)
	// The opening is TCP's: a datagram to the same port number is dropped
	// (TestPolicyWithoutFirewall sees one arrive with no policy).
	if udpArrives(t, ns, m.Gateway(), open) {
		t.Errorf("a UDP datagram to the opened port's number reached the host")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, cfg.Name, cfg.Bridge)
}
