package microvm

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// fakeBackend boots nothing: guests are ready at once.
func fakeBackend(t *testing.T, idle time.Duration) (*Backend, *atomic.Int32) {
	boots := new(atomic.Int32)
	b := &Backend{
		cfg: BackendConfig{Dir: t.TempDir(), MemoryMB: 1024, GuestOverheadMB: 256, IdleTimeout: idle, Ledger: sandbox.NewLedger(0)},
		log: slog.New(slog.DiscardHandler), guests: map[string][]*guest{}, uids: map[int]bool{},
	}
	b.bootVM = func(g *guest) {
		boots.Add(1)
		close(g.ready)
	}
	return b, boots
}

func TestVMSizingAndSharing(t *testing.T) {
	b, boots := fakeBackend(t, time.Hour)
	// 1024 MB guests keep 256 for themselves: two 300 MB functions fit.
	g1, _ := b.reserve("111111111111", 300)
	g2, _ := b.reserve("111111111111", 300)
	g3, _ := b.reserve("111111111111", 300)
	if g1 != g2 {
		t.Fatal("two small functions of one account got two VMs")
	}
	if g3 == g1 {
		t.Fatal("a third 300 MB function was put in a full 1024 MB VM")
	}
	other, _ := b.reserve("222222222222", 128)
	if other == g1 || other == g3 {
		t.Fatal("two accounts share a VM")
	}
	big, _ := b.reserve("333333333333", 3008)
	if big.memMB != 3008+256 {
		t.Fatalf("a 3008 MB function got a %d MB VM; want %d", big.memMB, 3008+256)
	}
	for _, g := range []*guest{g1, g3, other, big} {
		<-g.ready
	}
	if n := boots.Load(); n != 4 {
		t.Fatalf("%d boots, want 4", n)
	}
	// Freed room is reused before a new VM starts.
	b.release(g1, 300)
	if g4, _ := b.reserve("111111111111", 300); g4 != g1 {
		t.Fatal("freed room in the account's VM was not reused")
	}
}

func TestIdleVMStops(t *testing.T) {
	b, _ := fakeBackend(t, 50*time.Millisecond)
	g, _ := b.reserve("111111111111", 128)
	<-g.ready
	b.release(g, 128)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.guests["111111111111"])
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle VM was not stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A VM that gets a sandbox again before the timeout stays.
	g2, _ := b.reserve("111111111111", 128)
	b.release(g2, 128)
	g3, _ := b.reserve("111111111111", 128)
	if g3 != g2 {
		t.Fatal("a VM reserved again before its idle timeout was replaced")
	}
	time.Sleep(100 * time.Millisecond)
	b.mu.Lock()
	n := len(b.guests["111111111111"])
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("a busy VM was stopped (%d VMs)", n)
	}
}

func TestVMCapacity(t *testing.T) {
	b, _ := fakeBackend(t, time.Hour)
	b.cfg.Ledger = sandbox.NewLedger(2048)
	a, err := b.reserve("111111111111", 128)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := b.reserve("222222222222", 128)
	if err != nil {
		t.Fatal(err)
	}
	<-a.ready
	<-bb.ready
	// Two 1024 MB VMs fill 2048 MB: a third account is refused...
	if _, err := b.reserve("333333333333", 128); !errdefs.Is(err, errdefs.KindThrottled) || !errors.Is(err, sandbox.ErrNoRoom) {
		t.Fatalf("third VM beyond capacity: %v, want TooManyRequests and ErrNoRoom", err)
	}
	if used := b.cfg.Ledger.Used(); used != 2048 {
		t.Fatalf("ledger holds %d MB; want the two VMs' 2048", used)
	}
	// ...until a VM is idle: then that one stops for it (at once, as the
	// ledger has just refused a charge).
	b.release(bb, 128)
	c, err := b.reserve("333333333333", 128)
	if err != nil {
		t.Fatalf("with an idle VM to stop: %v", err)
	}
	<-c.ready
	b.mu.Lock()
	_, stillB := b.guests["222222222222"]
	b.mu.Unlock()
	if stillB {
		t.Fatal("the idle VM was not stopped to make room")
	}
	// Room in an existing VM of the account needs no capacity.
	if g, err := b.reserve("111111111111", 128); err != nil || g != a {
		t.Fatalf("a second sandbox in the account's VM: %v (same VM: %v)", err, g == a)
	}
	b.stops.Wait()
}
