package netenv

import (
	"fmt"
	"net/netip"
)

// Hook is the netfilter hook a rule runs at.
type Hook uint8

// The hooks the policy uses.
const (
	// HookInput sees packets addressed to the host itself.
	HookInput Hook = iota + 1
	// HookForward sees packets the host routes between interfaces.
	HookForward
	// HookPostrouting sees packets leaving an interface; the policy uses it
	// for source NAT only.
	HookPostrouting
	// HookPrerouting sees packets as they arrive, before destination NAT
	// (the policy's chain runs ahead of it).
	HookPrerouting
)

func (h Hook) String() string {
	switch h {
	case HookInput:
		return "input"
	case HookForward:
		return "forward"
	case HookPostrouting:
		return "postrouting"
	case HookPrerouting:
		return "prerouting"
	}
	return "unknown"
}

// Action is what a matching rule does with a packet.
type Action uint8

// The actions. Continue is never part of a rule: it is the result of
// evaluating rules none of which matched, so the packet goes on to whatever
// else the host's firewall says (the policy adds no verdict of its own).
const (
	Continue Action = iota
	Accept
	Drop
	Masquerade
	// Pass ends the policy's rules for the packet without a verdict of
	// its own, like Continue, but by a rule: the rules after it do not
	// drop it, and the host's own firewall still decides (rendered as a
	// return from nubo's chain, so it overrides no host rule).
	Pass
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Masquerade:
		return "masquerade"
	case Pass:
		return "pass"
	}
	return "unknown"
}

// IfaceMatch matches an interface name; the zero value matches any.
type IfaceMatch struct {
	Name string
	Not  bool
}

func (m IfaceMatch) any() bool { return m.Name == "" }

func (m IfaceMatch) matches(name string) bool {
	return m.any() || (name == m.Name) != m.Not
}

// AddrMatch matches an IPv4 address against a prefix; the zero value
// matches any packet, IPv4 or not. A set match only ever matches IPv4.
type AddrMatch struct {
	Prefix netip.Prefix
	Not    bool
}

func (m AddrMatch) any() bool { return !m.Prefix.IsValid() }

func (m AddrMatch) matches(a netip.Addr) bool {
	if m.any() {
		return true
	}
	if !a.Is4() {
		return false
	}
	return m.Prefix.Contains(a) != m.Not
}

// Rule is one statement of the policy in backend-neutral form. Every set
// field must match for the rule to apply; backends render it field by field.
type Rule struct {
	Hook Hook
	In   IfaceMatch
	Out  IfaceMatch
	Src  AddrMatch
	Dst  AddrMatch
	// NotIPv4 matches every packet that is not IPv4. The policy is IPv4
	// only; this rule exists for backends that also see IPv6 (an nftables
	// inet table) so that nothing but IPv4 leaves an environment even if
	// IPv6 were enabled on the bridge. Backends that see IPv4 only skip it.
	NotIPv4 bool
	// Replies matches packets of connections already seen (conntrack state
	// established or related).
	Replies bool
	// TCPDstPort, when not 0, matches TCP packets to that port only.
	TCPDstPort uint16
	// DstLocal matches packets addressed to the host itself: any of its
	// addresses, as routing sees it.
	DstLocal bool
	Action   Action
	// Comment tells an operator reading the ruleset why the rule is there.
	Comment string
}

// Policy is the network policy of nubo's execution environments: the one
// place that says what an environment may reach. Firewall backends render
// Rules; they add nothing and leave nothing out except what Rule.NotIPv4
// allows.
type Policy struct {
	// Bridge is the host bridge every environment's veth is a port of.
	Bridge string
	// Subnet is where environments' addresses come from; its first host
	// address is the bridge's, the environments' gateway.
	Subnet netip.Prefix
	// HostPorts are the TCP ports of the gateway address environments may
	// connect to (Config.HostPorts).
	HostPorts []uint16
}

// Gateway is the bridge's address: the subnet's first host.
func (p Policy) Gateway() netip.Addr { return p.Subnet.Masked().Addr().Next() }

// linkLocal is 169.254.0.0/16: cloud metadata services (169.254.169.254),
// link-local DNS and NTP endpoints of clouds, none of which a function may
// reach.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// Rules returns the policy's rules, in order, per hook. Within a hook the
// first matching rule decides; a packet matching none continues unchanged.
func (p Policy) Rules() []Rule {
	br := IfaceMatch{Name: p.Bridge}
	notBr := IfaceMatch{Name: p.Bridge, Not: true}
	var rules []Rule
	// The operator's openings to the host (Config.HostPorts), ahead of
	// the drop below: TCP from an environment's address to the gateway
	// address and those ports only. Passed, not accepted: a host firewall
	// that drops them still does (the operator opens them there too). The
	// host's answers leave by the output hook, which the policy does not
	// filter.
	gw := AddrMatch{Prefix: netip.PrefixFrom(p.Gateway(), 32)}
	hostPorts := func(h Hook) {
		for _, port := range p.HostPorts {
			rules = append(rules, Rule{Hook: h, In: br, Src: AddrMatch{Prefix: p.Subnet}, Dst: gw, TCPDstPort: port,
				Action: Pass, Comment: fmt.Sprintf("nubo: environment to host port %d", port)})
		}
	}
	// A connection to a host address can leave the input hook's view:
	// destination NAT at prerouting (Docker's published ports, for one)
	// turns it into forwarded traffic to another address, which the
	// egress rule below would accept. So it is dropped before any DNAT,
	// by what the destination was when it arrived.
	hostPorts(HookPrerouting)
	rules = append(rules, Rule{Hook: HookPrerouting, In: br, DstLocal: true, Action: Drop, Comment: "nubo: environment to host, before DNAT"})
	hostPorts(HookInput)
	return append(rules, []Rule{
		// Everything an environment sends to the host itself that the
		// prerouting drop left — broadcasts and multicast, the host ports
		// passed there — arrives at the input hook with the bridge as input
		// interface; the drop here is also the backstop for unicast to a
		// host address. Nothing on the host talks to environments over IP
		// (the agent's channel is a socket pair), so there are no replies
		// to let through either.
		{Hook: HookInput, In: br, Action: Drop, Comment: "nubo: environment to host"},

		// Ports are isolated at L2 already; this catches what is routed
		// back out of the bridge by the host (an environment using the
		// gateway for another environment's address) and, with
		// br_netfilter, bridged IP traffic, which also shows up here with
		// the bridge as both interfaces.
		{Hook: HookForward, In: br, Out: br, Action: Drop, Comment: "nubo: environment to environment"},
		{Hook: HookForward, In: br, NotIPv4: true, Action: Drop, Comment: "nubo: environments are IPv4 only"},
		{Hook: HookForward, In: br, Dst: AddrMatch{Prefix: linkLocal}, Action: Drop, Comment: "nubo: environment to link-local and metadata"},
		// A source outside the subnet would leave un-NATed (masquerading
		// matches the subnet only): a function able to forge one must not
		// get it onto the host's network.
		{Hook: HookForward, In: br, Src: AddrMatch{Prefix: p.Subnet, Not: true}, Action: Drop, Comment: "nubo: spoofed environment source"},
		{Hook: HookForward, In: br, Action: Accept, Comment: "nubo: environment egress"},
		{Hook: HookForward, Out: br, Replies: true, Action: Accept, Comment: "nubo: replies to environment egress"},
		// Environments accept no connections from anywhere: Lambda
		// functions are not reachable inbound.
		{Hook: HookForward, Out: br, Action: Drop, Comment: "nubo: unsolicited traffic to environments"},

		{Hook: HookPostrouting, Out: notBr, Src: AddrMatch{Prefix: p.Subnet}, Action: Masquerade, Comment: "nubo: environment egress NAT"},
	}...)
}

// Packet describes a packet for Evaluate.
type Packet struct {
	Hook Hook
	// In and Out are interface names; In is empty for locally generated
	// packets, Out empty at the input hook.
	In, Out  string
	Src, Dst netip.Addr
	// Reply is true for a packet of a connection conntrack has already seen
	// (established or related).
	Reply bool
	// TCPDstPort is the destination port of a TCP packet, 0 for any other.
	TCPDstPort uint16
	// DstLocal is true when Dst is an address of the host.
	DstLocal bool
}

// Evaluate returns what rules do with pkt: the action of the first rule of
// pkt's hook that matches, or Continue. It is the reference semantics every
// backend must render faithfully; Fake uses it, and so do the tests.
func Evaluate(rules []Rule, pkt Packet) Action {
	for _, r := range rules {
		if r.Hook != pkt.Hook {
			continue
		}
		if !r.In.matches(pkt.In) || !r.Out.matches(pkt.Out) {
			continue
		}
		if r.NotIPv4 && pkt.Src.Is4() && pkt.Dst.Is4() {
			continue
		}
		if !r.Src.matches(pkt.Src) || !r.Dst.matches(pkt.Dst) {
			continue
		}
		if r.Replies && !pkt.Reply {
			continue
		}
		if r.TCPDstPort != 0 && pkt.TCPDstPort != r.TCPDstPort {
			continue
		}
		if r.DstLocal && !pkt.DstLocal {
			continue
		}
		return r.Action
	}
	return Continue
}
