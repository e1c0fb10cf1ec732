package netenv

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CleanupStale removes everything a Manager with cfg's Name could have
// left behind, in this process or in one killed with SIGKILL: veths named
// "<Name>-*", links carrying the Name's bridge alias (the bridge, whatever
// Config.Bridge was then), the nftables tables "inet <Name>" and "bridge
// <Name>" (the latter holds VMs' tap guards), the iptables
// chains "<NAME>-*" and every jump into them — both firewall backends,
// whichever was in use. Links go first, so no environment is left wired
// without rules. Namespaces are not this package's: they live as long as
// the sandboxes' processes, and deleting a host veth takes the other end
// out of its namespace. New calls CleanupStale itself.
func CleanupStale(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := checkName(cfg.Name); err != nil {
		return err
	}
	log := cfg.Logger
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netenv: netlink: %w", err)
	}
	defer h.Close()
	found, err := removeLinks(h, cfg)
	if errors.Is(err, ErrInUse) {
		// A live nubo's network: touch nothing of it, rules included.
		return err
	}
	errs := []error{err}
	for _, mk := range []func(string, *slog.Logger) (Firewall, error){newNftables, newIptables} {
		fw, err := mk(cfg.Name, log)
		if err != nil {
			continue // a backend this host lacks left nothing
		}
		objs, err := fw.(interface{ teardown() ([]string, error) }).teardown()
		found = append(found, objs...)
		errs = append(errs, err)
	}
	if len(found) > 0 {
		log.Info("netenv: removed what an earlier run left", "objects", found)
	}
	return errors.Join(errs...)
}

// removeLinks deletes cfg's veths (by name prefix: "<Name>-") and bridge
// (by alias). A veth is only ever matched if it is a veth, and a bridge
// only by the alias nubo gave it.
func removeLinks(h *netlink.Handle, cfg Config) (removed []string, err error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("netenv: list links: %w", err)
	}
	var (
		errs    []error
		bridges []netlink.Link
	)
	prefix := cfg.Name + "-"
	ours := func(alias string) bool {
		return alias == bridgeAlias(cfg.Name) || strings.HasPrefix(alias, bridgeAlias(cfg.Name)+" owner ")
	}
	for _, l := range links {
		if a := l.Attrs(); ours(a.Alias) {
			if owner := liveOwner(a.Alias); owner != "" {
				return nil, fmt.Errorf("netenv: network %q (bridge %s) belongs to a running nubo (process %s); give this one another --net-name and --subnet: %w",
					cfg.Name, a.Name, owner, ErrInUse)
			}
		}
	}
	for _, l := range links {
		a := l.Attrs()
		switch {
		case ours(a.Alias):
			bridges = append(bridges, l)
		case l.Type() == "veth" && strings.HasPrefix(a.Name, prefix):
			if err := h.LinkDel(l); err != nil && !isGone(err) {
				errs = append(errs, fmt.Errorf("netenv: delete %s: %w", a.Name, err))
				continue
			}
			removed = append(removed, "link "+a.Name)
		}
	}
	// Bridges after their ports, which deleting a bridge would only have
	// detached.
	for _, l := range bridges {
		if err := h.LinkDel(l); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("netenv: delete %s: %w", l.Attrs().Name, err))
			continue
		}
		removed = append(removed, "link "+l.Attrs().Name)
	}
	return removed, errors.Join(errs...)
}
