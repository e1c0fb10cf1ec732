package netenv

import (
	"errors"
	"fmt"
	"log/slog"
)

// Firewall installs a Policy in the host's packet filter. Implementations
// own a set of objects named after the instance name they were made with
// (an nftables table, or iptables chains and the jumps into them) and touch
// nothing else.
type Firewall interface {
	// Name is the backend's name ("nftables", "iptables", "fake").
	Name() string
	// Setup installs p, replacing whatever an earlier Setup under the same
	// instance name installed, in this process or an earlier one.
	Setup(p Policy) error
	// Teardown removes everything Setup installed under the instance name.
	// Finding nothing to remove is not an error.
	Teardown() error
}

// The Backend values of Config.
const (
	BackendAuto     = "auto"
	BackendNftables = "nftables"
	BackendIptables = "iptables"
)

// ErrUnavailable reports a firewall backend this host cannot use.
var ErrUnavailable = errors.New("firewall backend unavailable")

// newFirewall returns the backend named by backend, installed with p.
// "auto" prefers nftables and falls back to iptables when nftables cannot
// be used or refuses the ruleset (an old kernel without inet NAT, say); the
// choice and the reason for a fallback are logged.
func newFirewall(backend, name string, p Policy, log *slog.Logger) (Firewall, error) {
	install := func(fw Firewall, err error) (Firewall, error) {
		if err != nil {
			return nil, err
		}
		if err := fw.Setup(p); err != nil {
			// Setup may have got halfway (iptables applies table by table).
			_ = fw.Teardown()
			return nil, fmt.Errorf("%s: %w", fw.Name(), err)
		}
		return fw, nil
	}
	switch backend {
	case BackendNftables:
		return install(newNftables(name, log))
	case BackendIptables:
		return install(newIptables(name, log))
	case BackendAuto, "":
		fw, err := install(newNftables(name, log))
		if err == nil {
			return fw, nil
		}
		log.Warn("netenv: nftables unusable, falling back to iptables", "err", err)
		fw, err2 := install(newIptables(name, log))
		if err2 != nil {
			return nil, errors.Join(err, err2)
		}
		return fw, nil
	}
	return nil, fmt.Errorf("netenv: unknown firewall backend %q (want auto, nftables or iptables)", backend)
}
