package netenv

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// BenchmarkAttachDetach measures wiring one environment and unwiring it:
// what preparing a sandbox costs on the network side. attach-µs is
// Attach alone; the rest is Detach, dominated by the kernel's RCU grace
// periods when a netdevice goes and by the walk of the conntrack table.
func BenchmarkAttachDetach(b *testing.B) {
	testutil.RequiresRoot(b)
	cfg := Config{Name: "nbtb", Bridge: "nubotestb", Subnet: netip.MustParsePrefix("10.214.200.0/24"), Firewall: NewFake()}
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = CleanupStale(cfg) }()
	defer m.Close()
	ns := newTestNS(b)
	var attach time.Duration
	for b.Loop() {
		start := time.Now()
		l, err := m.Attach(ns.fd, "bench")
		if err != nil {
			b.Fatal(err)
		}
		attach += time.Since(start)
		if err := m.Detach(l); err != nil {
			b.Fatal(err)
		}
		m.bg.Wait() // the conntrack flush would otherwise compete with the next Attach
	}
	b.ReportMetric(float64(attach.Microseconds())/float64(b.N), "attach-µs")
}
