package netenv

import (
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// TestAttachTap: a VM's tap is an isolated, non-learning, non-flooding
// port of the bridge with a static entry for the VM's MAC, and it goes
// with Detach and its file.
func TestAttachTap(t *testing.T) {
	testutil.RequiresRoot(t)
	m := newManager(t, testConfig(t, 41, "", NewFake()))
	l, f, err := m.AttachTap("vm-111111111111-1")
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName(l.HostIface())
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MasterIndex != m.brIndex {
		t.Errorf("tap %s is not a port of the bridge", l.HostIface())
	}
	if v, err := readSysctl("net/ipv6/conf/" + l.HostIface() + "/disable_ipv6"); ipv6Present() && (err != nil || v != "1") {
		t.Errorf("IPv6 on the tap %s: disable_ipv6 %q, %v", l.HostIface(), v, err)
	}
	p, err := netlink.LinkGetProtinfo(link)
	if err != nil {
		t.Fatal(err)
	}
	if p.Learning || !p.Isolated || p.Flood {
		t.Errorf("tap port: learning %v, isolated %v, flood %v; want false, true, false", p.Learning, p.Isolated, p.Flood)
	}
	fdb, err := netlink.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range fdb {
		if n.HardwareAddr.String() == l.MAC().String() && n.State&netlink.NUD_PERMANENT != 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no static bridge entry for the VM's MAC %s: %+v", l.MAC(), fdb)
	}
	if !l.Prefix().Contains(l.Gateway()) {
		t.Errorf("address %s and gateway %s are not on one subnet", l.Prefix(), l.Gateway())
	}
	fake := m.fw.(*Fake)
	if g, ok := fake.Guard(l.HostIface()); !ok || g.Addr != l.Addr() || g.MAC.String() != l.MAC().String() {
		t.Errorf("guard of %s: %+v, %v; want %s %s", l.HostIface(), g, ok, l.MAC(), l.Addr())
	}
	if err := m.Detach(l); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Guard(l.HostIface()); ok {
		t.Errorf("guard of %s outlived Detach", l.HostIface())
	}
	f.Close()
	if _, err := netlink.LinkByName(l.HostIface()); err == nil {
		t.Errorf("tap %s outlived Detach and its file", l.HostIface())
	}
}
