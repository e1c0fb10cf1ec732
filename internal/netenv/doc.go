// Package netenv owns the network of nubo's execution environments, host
// side: one bridge, the firewall policy, addresses, and a veth pair per
// environment.
//
// The sandbox creates each environment's network namespace itself
// (clone with CLONE_NEWNET; the namespace lives exactly as long as the
// sandbox's processes, nothing bind-mounts it) and brings its lo up. Given
// that namespace (Attach), a Manager adds a veth pair: the host
// end "<Name>-<short id>" becomes an isolated port of the bridge, the other
// end is created directly inside the namespace as eth0 with an address from
// the subnet, a default route via the bridge's address (the subnet's first
// host) and the bridge's MTU. Detach deletes the host end, which takes the
// other end with it; when the namespace dies first, the kernel has already
// deleted both.
//
// A function configured with no network (a nubo setting: the sandbox's
// Spec.NoNetwork) gets a namespace with only lo: the sandbox simply does
// not call Attach, and nothing in this package is involved.
//
// # Policy
//
// Policy.Rules is the one statement of what an environment may reach; the
// nftables and iptables backends render it, the Fake evaluates it:
//
//   - environment to environment: dropped, twice over — bridge ports are
//     isolated (IFLA_BRPORT_ISOLATED, so no frame, ARP included, passes
//     between environments), and traffic the host would route from the
//     bridge back to it is dropped at forward;
//   - environment to the host itself (the nubo API, anything listening on
//     any host address, broadcasts): dropped for everything arriving on
//     the bridge — at prerouting, before any destination NAT, whatever is
//     addressed to a host address (a port the host publishes by DNAT, as
//     Docker does, would otherwise become forwarded egress), and at input
//     the rest — except TCP from an environment's address to the
//     operator's host ports (Config.HostPorts, none by default) at the
//     bridge's address, which the policy passes on to the host's own
//     firewall rather than accepts;
//   - environment to 169.254.0.0/16 (cloud metadata): dropped;
//   - everything else from the subnet: forwarded, masqueraded behind the
//     address of whatever interface it leaves by; replies come back;
//   - nothing from outside may open a connection to an environment.
//
// Environments are IPv4 only: IPv6 is disabled on eth0 (from its creation:
// the environment's namespace defaults to IPv6 off before the veth is
// made), on the bridge and on the host veth ends, so they have no IPv6
// address or route at all.
// DNS follows from the policy: a resolver on the host (127.0.0.53) is out of
// reach, so the sandbox's resolv.conf must name resolvers reachable by
// egress.
//
// # Firewall backends
//
// New picks the backend (Config.Backend; "auto" tries nftables first and
// falls back to iptables) and logs which one is in use. nftables: one table
// "inet <Name>" with chains input and forward (filter, priority -10),
// prerouting (filter, priority raw: ahead of conntrack and DNAT) and postrouting
// (nat), replaced and removed atomically, and, once a VM's tap
// is attached, a table "bridge <Name>" guarding taps against spoofed
// sources (see AttachTap and TapGuard). iptables: chains
// <NAME>-INPUT, <NAME>-FORWARD (filter), <NAME>-POSTROUTING (nat) and
// <NAME>-PREROUTING (raw), each entered by one jump inserted first in
// the built-in chain; it cannot
// filter bridge ports, so taps go unguarded (logged once). Neither touches
// anything else on the host; with iptables-nft, the host's iptables tables
// ("ip filter", "ip nat", "ip raw") may be created by the first rule
// and, as with any iptables user, stay after ours are gone.
//
// New sets net.ipv4.ip_forward=1 (logged when it changes) and leaves it on.
//
// # Invariants
//
//   - Everything the package creates is named after Config.Name (default
//     "nubo"): links "<Name>-*" plus a bridge marked by its alias, tables
//     "inet <Name>" and "bridge <Name>", chains "<NAME>-*". CleanupStale finds and removes all
//     of it, whichever backend a crashed run used; New calls it first, Close
//     removes the same set. Several instances with different Names share a
//     host without touching each other's objects; two with one Name do not.
//   - Attach and Detach change no firewall rule: the policy is fixed per
//     bridge and subnet, so wiring an environment is a few netlink messages
//     and can be done ahead, when the sandbox is prepared. AttachTap and
//     Detach of a tap add and remove that tap's guard (one nftables
//     transaction each).
//   - Links go away before rules (Close, CleanupStale): an environment is
//     never wired while unfiltered.
//   - Addresses are allocated round robin in memory and never reused while
//     attached; the bridge keeps one fixed MAC address.
//   - A Manager is safe for concurrent use.
package netenv
