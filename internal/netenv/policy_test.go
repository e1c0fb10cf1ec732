package netenv

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var testPolicy = Policy{Bridge: "nubo0", Subnet: netip.MustParsePrefix("10.213.0.0/16"), HostPorts: []uint16{5432}}

// TestPolicySemantics states the isolation requirements as packets and
// checks the rules do what they say. Every backend renders these same
// rules, and the root tests check the rendering against the kernel.
func TestPolicySemantics(t *testing.T) {
	envA := netip.MustParseAddr("10.213.0.5")
	envB := netip.MustParseAddr("10.213.0.9")
	gw := netip.MustParseAddr("10.213.0.1")
	host := netip.MustParseAddr("192.0.2.2")
	internet := netip.MustParseAddr("203.0.113.7")
	rules := testPolicy.Rules()
	cases := []struct {
		name string
		pkt  Packet
		want Action
	}{
		{"env to bridge address", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: gw}, Drop},
		{"env to a host address, before DNAT", Packet{Hook: HookPrerouting, In: "nubo0", Src: envA, Dst: host, DstLocal: true, TCPDstPort: 8080}, Drop},
		{"env to an opened host port, before DNAT", Packet{Hook: HookPrerouting, In: "nubo0", Src: envA, Dst: gw, DstLocal: true, TCPDstPort: 5432}, Pass},
		{"env egress, before DNAT", Packet{Hook: HookPrerouting, In: "nubo0", Src: envA, Dst: internet}, Continue},
		{"host traffic, before DNAT", Packet{Hook: HookPrerouting, In: "eth0", Src: internet, Dst: host, DstLocal: true}, Continue},
		{"env to an opened host port", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: gw, TCPDstPort: 5432}, Pass},
		{"env to another host port", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: gw, TCPDstPort: 5433}, Drop},
		{"env to an opened port at another host address", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: host, TCPDstPort: 5432}, Drop},
		{"spoofed source to an opened host port", Packet{Hook: HookInput, In: "nubo0", Src: netip.MustParseAddr("192.0.2.50"), Dst: gw, TCPDstPort: 5432}, Drop},
		{"env to other host address", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: host}, Drop},
		{"env to loopback-routed host address", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: netip.MustParseAddr("127.0.0.1")}, Drop},
		{"env reply to host (there should be none)", Packet{Hook: HookInput, In: "nubo0", Src: envA, Dst: gw, Reply: true}, Drop},
		{"env IPv6 to host", Packet{Hook: HookInput, In: "nubo0", Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("fe80::2")}, Drop},
		{"host traffic on another interface", Packet{Hook: HookInput, In: "eth0", Src: internet, Dst: host}, Continue},
		{"env to env routed", Packet{Hook: HookForward, In: "nubo0", Out: "nubo0", Src: envA, Dst: envB}, Drop},
		{"env to env reply", Packet{Hook: HookForward, In: "nubo0", Out: "nubo0", Src: envA, Dst: envB, Reply: true}, Drop},
		{"env to metadata", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: envA, Dst: netip.MustParseAddr("169.254.169.254")}, Drop},
		{"env to link-local", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: envA, Dst: netip.MustParseAddr("169.254.0.1")}, Drop},
		{"env spoofing a source", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: netip.MustParseAddr("192.0.2.50"), Dst: internet}, Drop},
		{"env IPv6 egress", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: netip.MustParseAddr("fd00::5"), Dst: netip.MustParseAddr("2001:db8::1")}, Drop},
		{"env egress", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: envA, Dst: internet}, Accept},
		{"env egress to the LAN", Packet{Hook: HookForward, In: "nubo0", Out: "eth0", Src: envA, Dst: netip.MustParseAddr("192.0.2.1")}, Accept},
		{"reply to env", Packet{Hook: HookForward, In: "eth0", Out: "nubo0", Src: internet, Dst: envA, Reply: true}, Accept},
		{"unsolicited to env", Packet{Hook: HookForward, In: "eth0", Out: "nubo0", Src: internet, Dst: envA}, Drop},
		{"other forwarding untouched", Packet{Hook: HookForward, In: "eth0", Out: "docker0", Src: internet, Dst: netip.MustParseAddr("172.17.0.2")}, Continue},
		{"egress masqueraded", Packet{Hook: HookPostrouting, Out: "eth0", Src: envA, Dst: internet}, Masquerade},
		{"host to env not masqueraded", Packet{Hook: HookPostrouting, Out: "nubo0", Src: gw, Dst: envA}, Continue},
		{"other host traffic not masqueraded", Packet{Hook: HookPostrouting, Out: "eth0", Src: host, Dst: internet}, Continue},
	}
	for _, c := range cases {
		if got := Evaluate(rules, c.pkt); got != c.want {
			t.Errorf("%s: %+v: got %v, want %v", c.name, c.pkt, got, c.want)
		}
	}
}

func TestPolicyRulesComplete(t *testing.T) {
	for _, r := range testPolicy.Rules() {
		if r.Hook == 0 || r.Action == Continue || !strings.HasPrefix(r.Comment, "nubo: ") {
			t.Errorf("incomplete rule %+v", r)
		}
		if r.Hook != HookPostrouting && r.Action == Masquerade {
			t.Errorf("masquerade outside postrouting: %+v", r)
		}
	}
}

func TestFakeVerdict(t *testing.T) {
	f := NewFake()
	pkt := Packet{Hook: HookInput, In: "nubo0", Src: netip.MustParseAddr("10.213.0.5"), Dst: netip.MustParseAddr("10.213.0.1")}
	if _, err := f.Verdict(pkt); err != ErrNotInstalled {
		t.Fatalf("verdict before Setup: %v", err)
	}
	if err := f.Setup(testPolicy); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Verdict(pkt); err != nil || got != Drop {
		t.Fatalf("verdict = %v, %v; want drop", got, err)
	}
	if p, ok := f.Installed(); !ok || !reflect.DeepEqual(p, testPolicy) {
		t.Fatalf("installed = %+v, %v", p, ok)
	}
	if err := f.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Installed(); ok {
		t.Fatal("policy still installed after Teardown")
	}
	if s, td := f.Calls(); s != 1 || td != 1 {
		t.Fatalf("calls = %d, %d", s, td)
	}
}

// TestIptablesRendering checks each rule's iptables form carries every
// match of the rule, so that no rule is rendered broader than stated.
func TestIptablesRendering(t *testing.T) {
	for _, r := range testPolicy.Rules() {
		args, ok := iptArgs("NUBO-X", r)
		if r.NotIPv4 {
			if ok {
				t.Errorf("NotIPv4 rule rendered: %v", args)
			}
			continue
		}
		s := " " + strings.Join(args, " ") + " "
		want := []string{" -A NUBO-X "}
		neg := func(not bool) string {
			if not {
				return "! "
			}
			return ""
		}
		if !r.In.any() {
			want = append(want, " "+neg(r.In.Not)+"-i "+r.In.Name+" ")
		}
		if !r.Out.any() {
			want = append(want, " "+neg(r.Out.Not)+"-o "+r.Out.Name+" ")
		}
		if !r.Src.any() {
			want = append(want, " "+neg(r.Src.Not)+"-s "+r.Src.Prefix.String()+" ")
		}
		if !r.Dst.any() {
			want = append(want, " "+neg(r.Dst.Not)+"-d "+r.Dst.Prefix.String()+" ")
		}
		if r.Replies {
			want = append(want, " --ctstate RELATED,ESTABLISHED ")
		}
		if r.TCPDstPort != 0 {
			want = append(want, fmt.Sprintf(" -p tcp --dport %d ", r.TCPDstPort))
		}
		if r.DstLocal {
			want = append(want, " -m addrtype --dst-type LOCAL ")
		}
		verdict := strings.ToUpper(r.Action.String())
		if r.Action == Pass {
			verdict = "RETURN"
		}
		want = append(want, " -j "+verdict+" ")
		for _, w := range want {
			if !strings.Contains(s, w) {
				t.Errorf("rule %q rendered as %q: missing %q", r.Comment, s, w)
			}
		}
		if n := strings.Count(s, " -i ") + strings.Count(s, " -o ") + strings.Count(s, " -s ") + strings.Count(s, " -d "); n != len(want)-2-boolInt(r.Replies)-boolInt(r.TCPDstPort != 0)-boolInt(r.DstLocal) {
			t.Errorf("rule %q rendered with extra matches: %q", r.Comment, s)
		}
		if r.TCPDstPort == 0 && strings.Contains(s, " -p ") {
			t.Errorf("rule %q rendered with extra matches: %q", r.Comment, s)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestSplitIptablesLine(t *testing.T) {
	cases := map[string][]string{
		`-A FORWARD -j NUBO-FORWARD`: {"-A", "FORWARD", "-j", "NUBO-FORWARD"},
		`-A NUBO-INPUT -i nubo0 -m comment --comment "nubo: environment to host" -j DROP`: {
			"-A", "NUBO-INPUT", "-i", "nubo0", "-m", "comment", "--comment", "nubo: environment to host", "-j", "DROP"},
		`-A X -m comment --comment "a \"q\" b\\c" -j ACCEPT`: {"-A", "X", "-m", "comment", "--comment", `a "q" b\c`, "-j", "ACCEPT"},
		`-A X -m comment --comment "" -j ACCEPT`:             {"-A", "X", "-m", "comment", "--comment", "", "-j", "ACCEPT"},
		``:                                                   nil,
	}
	for line, want := range cases {
		got, err := splitIptablesLine(line)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("split(%q) = %q, %v; want %q", line, got, err, want)
		}
	}
	if _, err := splitIptablesLine(`-A X --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
	if !jumpsTo([]string{"-A", "FORWARD", "-i", "x", "-j", "NUBO-FORWARD"}, "NUBO-") ||
		jumpsTo([]string{"-A", "FORWARD", "-j", "NUBOT-FORWARD"}, "NUBO-") {
		t.Error("jumpsTo misjudges")
	}
}

// TestNftPortRuleIPv4First: a host port's rule reads the TCP port only
// after it has required IPv4 and TCP, whether or not it also matches an
// address (an inet table sees IPv6 too).
func TestNftPortRuleIPv4First(t *testing.T) {
	for _, r := range []Rule{
		{Hook: HookInput, In: IfaceMatch{Name: "nubo0"}, Src: AddrMatch{Prefix: testPolicy.Subnet},
			Dst: AddrMatch{Prefix: netip.PrefixFrom(testPolicy.Gateway(), 32)}, TCPDstPort: 5432, Action: Pass},
		{Hook: HookInput, In: IfaceMatch{Name: "nubo0"}, TCPDstPort: 5432, Action: Pass},
	} {
		ipv4, tcp := -1, -1
		es := nftExprs(r)
		for i, e := range es {
			m, ok := e.(*expr.Meta)
			if !ok || i+1 >= len(es) {
				continue
			}
			c, ok := es[i+1].(*expr.Cmp)
			if !ok || c.Op != expr.CmpOpEq || len(c.Data) != 1 {
				continue
			}
			switch {
			case m.Key == expr.MetaKeyNFPROTO && c.Data[0] == unix.NFPROTO_IPV4 && ipv4 < 0:
				ipv4 = i
			case m.Key == expr.MetaKeyL4PROTO && c.Data[0] == unix.IPPROTO_TCP:
				tcp = i
			}
		}
		port := -1
		for i, e := range es {
			if p, ok := e.(*expr.Payload); ok && p.Base == expr.PayloadBaseTransportHeader {
				port = i
			}
		}
		if ipv4 < 0 || tcp < 0 || port < 0 || ipv4 > port || tcp > port {
			t.Errorf("rule %+v: IPv4 check at %d, TCP at %d, port read at %d", r, ipv4, tcp, port)
		}
		if v, ok := es[len(es)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictReturn {
			t.Errorf("rule %+v: a pass must return, ends with %#v", r, es[len(es)-1])
		}
	}
}

// TestNftDstLocal: "destination is a host address" renders as nft's own
// `fib daddr type local`: the address type of the route to the
// destination, compared with RTN_LOCAL in host byte order.
func TestNftDstLocal(t *testing.T) {
	es := nftExprs(Rule{Hook: HookPrerouting, In: IfaceMatch{Name: "nubo0"}, DstLocal: true, Action: Drop})
	for i, e := range es {
		f, ok := e.(*expr.Fib)
		if !ok {
			continue
		}
		if !f.FlagDADDR || !f.ResultADDRTYPE || f.FlagSADDR || f.FlagIIF || f.FlagOIF || f.ResultOIF || f.ResultOIFNAME {
			t.Fatalf("fib %+v: want daddr, type", f)
		}
		c, ok := es[i+1].(*expr.Cmp)
		if !ok || c.Op != expr.CmpOpEq || c.Register != f.Register || !bytes.Equal(c.Data, binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)) {
			t.Fatalf("fib compared by %#v, want eq RTN_LOCAL", es[i+1])
		}
		return
	}
	t.Fatalf("no fib expression in %#v", es)
}
