package netenv

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
)

// DefaultName is the instance name of a nubo daemon.
const DefaultName = "nubo"

// DefaultSubnet is where environments' addresses come from unless
// Config.Subnet says otherwise.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

// Config configures a Manager. The zero value is usable.
type Config struct {
	// Name scopes every object the Manager creates, so that several
	// instances (a daemon and its tests) can share a host: host veths are
	// "<Name>-<id>", the nftables tables are "inet <Name>" and "bridge
	// <Name>" (tap guards), the iptables
	// chains are "<NAME>-INPUT", "<NAME>-FORWARD" and "<NAME>-POSTROUTING",
	// and the bridge defaults to "<Name>0". At most 8 lowercase letters and
	// digits, starting with a letter (no "-", so no instance's veth prefix
	// is another's). Default "nubo".
	Name string
	// Bridge is the host bridge's name. Default "<Name>0". An existing link
	// of that name that nubo did not create is never touched: New fails.
	Bridge string
	// Subnet is the IPv4 prefix environments get addresses from; its first
	// host address is the bridge's (the environments' gateway). Default
	// 10.213.0.0/16. Pick another when that range is in use on the host or
	// on a network the host must reach: New refuses a subnet that overlaps
	// any address or route the host has, because environments' traffic to
	// the overlapped range would go to the bridge instead.
	Subnet netip.Prefix
	// MTU of the bridge and every veth. Default: the smallest MTU among the
	// interfaces carrying the host's default routes (so environments need
	// no path MTU discovery to leave the host), else 1500.
	MTU int
	// Backend picks the firewall: "auto" (nftables, else iptables; the
	// default), "nftables" or "iptables". Which one is used is logged.
	Backend string
	// Firewall, when set, is used instead of Backend (a Fake in tests).
	Firewall Firewall
	// HostPorts are TCP ports of the host that environments may connect
	// to, at the bridge's address (the gateway, host.nubo.internal in
	// their /etc/hosts): an operator's opening for services on the host,
	// such as a database in development or CI. Every environment of the
	// instance gets it. Empty (the default): the host is out of reach.
	HostPorts []uint16
	Logger    *slog.Logger
}

// maxHostPorts bounds HostPorts: each is a rule every connection attempt
// to the host is checked against.
const maxHostPorts = 64

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Bridge == "" {
		c.Bridge = c.Name + "0"
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if c.Backend == "" {
		c.Backend = BackendAuto
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// maxNameLen leaves room in a 15-byte interface name for "-" and a short
// environment id of at least 6 characters.
const maxNameLen = 8

func (c Config) validate() error {
	if err := checkName(c.Name); err != nil {
		return err
	}
	if err := checkIfname(c.Bridge); err != nil {
		return fmt.Errorf("netenv: bridge: %w", err)
	}
	if strings.HasPrefix(c.Bridge, c.Name+"-") {
		return fmt.Errorf("netenv: bridge %q must not look like an environment's veth (%s-*)", c.Bridge, c.Name)
	}
	s := c.Subnet
	if !s.Addr().Is4() {
		return fmt.Errorf("netenv: subnet %s: must be IPv4", s)
	}
	if s != s.Masked() {
		return fmt.Errorf("netenv: subnet %s: host bits set (did you mean %s?)", s, s.Masked())
	}
	if s.Bits() < 8 || s.Bits() > 30 {
		return fmt.Errorf("netenv: subnet %s: prefix length must be between 8 and 30", s)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("netenv: MTU %d out of range", c.MTU)
	}
	if len(c.HostPorts) > maxHostPorts {
		return fmt.Errorf("netenv: %d host ports: at most %d", len(c.HostPorts), maxHostPorts)
	}
	for i, p := range c.HostPorts {
		if p == 0 {
			return fmt.Errorf("netenv: host port 0")
		}
		if slices.Contains(c.HostPorts[:i], p) {
			return fmt.Errorf("netenv: host port %d given twice", p)
		}
	}
	return nil
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("netenv: name %q: want 1 to %d characters", name, maxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("netenv: name %q: want lowercase letters and digits, starting with a letter", name)
		}
	}
	return nil
}

// checkIfname applies the kernel's rules for interface names (dev_valid_name).
func checkIfname(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("%q: want 1 to 15 bytes", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q: not a valid interface name", name)
	}
	if strings.ContainsAny(name, "/: \t\n\r\v\f") {
		return fmt.Errorf("%q: contains '/', ':' or whitespace", name)
	}
	return nil
}

// vethName is the host end's name for environment id: "<name>-" and the
// last alphanumeric characters of id that fit in 15 bytes (ids tend to end
// in their random part, e.g. "nubo-3f2a9c01b7de").
func vethName(name, id string) string {
	var b strings.Builder
	for _, r := range id {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	short := b.String()
	if room := 15 - len(name) - 1; len(short) > room {
		short = short[len(short)-room:]
	}
	return name + "-" + short
}
