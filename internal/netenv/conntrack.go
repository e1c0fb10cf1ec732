package netenv

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Attributes of a conntrack dump request that asks the kernel to filter
// (Linux 5.8+, include/uapi/linux/netfilter/nfnetlink_conntrack.h):
// CTA_FILTER nests CTA_FILTER_ORIG_FLAGS, a mask of which fields of the
// request's CTA_TUPLE_ORIG an entry's original tuple must match.
const (
	ctaFilter          = 25
	ctaFilterOrigFlags = 1
	ctaFilterFlagIPSrc = 1 << 0 // CTA_FILTER_FLAG(CTA_IP_SRC)
)

// deleteConntrackFrom deletes the connection tracking entries whose
// original source is a. It returns how many it deleted and how many the
// kernel sent (all of the table's, if it ignored the filter).
//
// It asks the kernel for those entries alone. The table holds every
// connection the host tracks (every client of nubo serve's API among
// them, each kept two minutes in TIME_WAIT); the kernel still walks all
// of it, but the other entries are no longer copied to nubo serve and
// parsed there, one by one, for each environment that goes. A kernel that
// does not know the filter ignores it and sends the whole table; each
// entry's source is checked here, so that kernel is only slower.
func deleteConntrackFrom(a netip.Addr) (deleted, read int, err error) {
	a = a.Unmap()
	if !a.Is4() {
		return 0, 0, fmt.Errorf("conntrack: %s is not IPv4", a)
	}
	req := conntrackRequest(nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(nl.CTA_IP_V4_SRC, a.AsSlice())
	req.AddData(tuple)
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(ctaFilterFlagIPSrc))
	req.AddData(filter)
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil && !errors.Is(err, nl.ErrDumpInterrupted) {
		return 0, 0, err
	}
	// An interrupted dump may have missed entries; delete what came.
	dumpErr := err
	var errs []error
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		attrs := m[nl.SizeofNfgenmsg:]
		if src, ok := origSource(attrs); !ok || src != a {
			continue
		}
		// The entry's own attributes name it, CTA_ID included: an entry
		// that went meanwhile (ENOENT) is not someone else's.
		del := conntrackRequest(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		del.AddRawData(attrs)
		switch _, err := del.Execute(unix.NETLINK_NETFILTER, 0); {
		case err == nil:
			deleted++
		case !errors.Is(err, syscall.ENOENT):
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		err = fmt.Errorf("conntrack: %d entries from %s not deleted: %w", len(errs), a, errs[0])
	}
	return deleted, len(msgs), errors.Join(err, dumpErr)
}

// conntrackRequest starts a request of type op on the IPv4 conntrack
// table.
func conntrackRequest(op, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(int(netlink.ConntrackTable)<<8|op, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0})
	return req
}

// origSource reads an entry's original source address from its
// attributes (CTA_TUPLE_ORIG, CTA_TUPLE_IP, CTA_IP_V4_SRC).
func origSource(attrs []byte) (netip.Addr, bool) {
	for _, path := range []uint16{nl.CTA_TUPLE_ORIG, nl.CTA_TUPLE_IP} {
		next, ok := nested(attrs, path)
		if !ok {
			return netip.Addr{}, false
		}
		attrs = next
	}
	v, ok := nested(attrs, nl.CTA_IP_V4_SRC)
	if !ok {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(v)
}

// nested returns the value of the attribute of type typ among attrs.
func nested(attrs []byte, typ uint16) ([]byte, bool) {
	list, err := nl.ParseRouteAttr(attrs)
	if err != nil {
		return nil, false
	}
	for _, at := range list {
		if at.Attr.Type&nl.NLA_TYPE_MASK == typ {
			return at.Value, true
		}
	}
	return nil, false
}
