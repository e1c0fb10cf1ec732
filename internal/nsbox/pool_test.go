package nsbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedMaker makes ints, each only once the test releases it.
type gatedMaker struct {
	calls     atomic.Int32
	release   chan struct{}
	destroyed atomic.Int32
	err       error
}

func newGatedMaker() *gatedMaker { return &gatedMaker{release: make(chan struct{}, 100)} }

func (g *gatedMaker) mk(int, bool) (int, error) {
	n := g.calls.Add(1)
	<-g.release
	return int(n), g.err
}

func (g *gatedMaker) destroy(int) { g.destroyed.Add(1) }

func nolog(string, ...any) {}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolWantFollowsBursts(t *testing.T) {
	p := &pool[int]{max: 16, floor: 2, taken: map[int][]time.Time{}}
	now := time.Now()
	at := func(ago ...time.Duration) []time.Time {
		var ts []time.Time
		for _, a := range ago {
			ts = append(ts, now.Add(-a))
		}
		return ts
	}
	ms := time.Millisecond
	for _, c := range []struct {
		name  string
		size  int
		taken []time.Time
		want  int
	}{
		{"default size unused keeps the floor", defaultTmpMB, nil, 2},
		{"other size unused keeps nothing", 1024, nil, 0},
		{"ten starts in 300 ms", defaultTmpMB, at(300*ms, 270*ms, 240*ms, 200*ms, 160*ms, 130*ms, 90*ms, 60*ms, 30*ms, 0), 12},
		{"the same burst 40 s ago still counts", defaultTmpMB, at(40300*ms, 40200*ms, 40100*ms, 40000*ms), 6},
		{"a burst older than the window does not", defaultTmpMB, at(61*time.Second, 61*time.Second, 61*time.Second), 2},
		{"spread-out starts are not a burst", 1024, at(5*time.Second, 3*time.Second, time.Second), 3},
		{"capped", defaultTmpMB, at(make([]time.Duration, 40)...), 16},
	} {
		t.Run(c.name, func(t *testing.T) {
			p.taken[c.size] = c.taken
			if got := p.wantLocked(c.size, now); got != c.want {
				t.Errorf("want %d, got %d", c.want, got)
			}
		})
	}
	if n := len(p.taken[defaultTmpMB]); n != 40 {
		t.Errorf("recent takes pruned: %d left of 40", n)
	}
	p.taken[defaultTmpMB] = at(61*time.Second, 0)
	p.wantLocked(defaultTmpMB, now)
	if n := len(p.taken[defaultTmpMB]); n != 1 {
		t.Errorf("takes older than the window kept: %d, want 1", n)
	}
}

// Announced takes count as a burst about to come until they are taken or
// expectWindow passes; each take fulfils one.
func TestPoolWantCountsAnnouncedTakes(t *testing.T) {
	p := &pool[int]{max: 16, floor: 2, taken: map[int][]time.Time{defaultTmpMB: nil}, expect: map[int][]time.Time{}}
	for range 10 {
		p.announce(defaultTmpMB)
	}
	p.announce(1024)
	now := time.Now()
	if got := p.wantLocked(defaultTmpMB, now); got != 12 {
		t.Errorf("ten announced: got %d, want 12", got)
	}
	if got := p.wantLocked(1024, now); got != 1 {
		t.Errorf("an announced size unused so far: got %d, want 1 (no floor)", got)
	}
	for range 4 {
		p.noteTakeLocked(defaultTmpMB)
	}
	if got, n := p.wantLocked(defaultTmpMB, now), len(p.expect[defaultTmpMB]); got != 8 || n != 6 {
		t.Errorf("four of ten taken: got %d with %d expected, want 8 with 6", got, n)
	}
	// The four takes are a burst of their own: they keep the want at 6
	// once the rest are no longer expected.
	if got := p.wantLocked(defaultTmpMB, now.Add(expectWindow+time.Second)); got != 6 {
		t.Errorf("the rest not taken in time: got %d, want 6", got)
	}
	if _, ok := p.expect[defaultTmpMB]; ok {
		t.Error("expired announcements kept")
	}
	if got := p.wantLocked(1024, now.Add(expectWindow+time.Second)); got != 0 {
		t.Errorf("an announced size never used, in the end: got %d, want 0", got)
	}
	// A take passes over announcements that lapsed but were not yet
	// pruned: it fulfils a live one.
	p.expect[defaultTmpMB] = []time.Time{now.Add(-expectWindow - time.Second), now}
	p.noteTakeLocked(defaultTmpMB)
	if n := len(p.expect[defaultTmpMB]); n != 0 {
		t.Errorf("a take after a lapsed and a live announcement: %d left, want 0", n)
	}
	// At most max expected at once, over all sizes.
	for i := range 40 {
		p.announce(2048 + i)
	}
	total := 0
	for _, q := range p.expect {
		total += len(q)
	}
	if total != 16 {
		t.Errorf("forty sizes announced: %d expected, want the cap 16", total)
	}
	// Lapsed announcements do not count towards the cap, pruned or not.
	for s, q := range p.expect {
		for i := range q {
			q[i] = q[i].Add(-expectWindow - time.Second)
		}
		p.expect[s] = q
	}
	p.announce(4096)
	if n := len(p.expect[4096]); n != 1 {
		t.Errorf("announced once all others lapsed: %d expected of it, want 1", n)
	}
}

// The refill makes what was announced ahead of the first take, for a size
// never taken too, and keeps sizing that size while it waits.
func TestPoolMakesAnnouncedAhead(t *testing.T) {
	g := newGatedMaker()
	for range 100 {
		g.release <- struct{}{}
	}
	p := newPool("thing", 8, 1, g.mk, g.destroy, nolog)
	defer p.close()
	waitFor(t, "the floor", func() bool { return p.readyLen(defaultTmpMB) == 1 })
	for range 3 {
		p.announce(defaultTmpMB)
	}
	waitFor(t, "three more", func() bool { return p.readyLen(defaultTmpMB) == 4 })
	p.announce(1024)
	p.announce(1024)
	waitFor(t, "two of the other size", func() bool { return p.readyLen(1024) == 2 })
	time.Sleep(20 * time.Millisecond)
	if n := g.calls.Load(); n != 6 {
		t.Errorf("%d made, want 6", n)
	}
	p.mu.Lock()
	_, sized := p.taken[1024]
	p.mu.Unlock()
	if !sized {
		t.Error("the announced size was dropped from sizing while its takes are expected")
	}
}

// A get that finds the pool empty takes whichever item is made first:
// here the refill's, started before it, while its own maker still runs.
func TestPoolGetTakesFirstItemMade(t *testing.T) {
	g := newGatedMaker()
	p := newPool("thing", 4, 1, g.mk, g.destroy, nolog)
	waitFor(t, "the refill's maker", func() bool { return g.calls.Load() == 1 })
	// The pool is empty: the get starts a maker of its own and waits.
	got := make(chan int, 1)
	go func() {
		it, err := p.get(context.Background(), defaultTmpMB)
		if err != nil {
			t.Error(err)
		}
		got <- it
	}()
	waitFor(t, "the get's own maker", func() bool { return g.calls.Load() >= 2 })
	g.release <- struct{}{}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("get did not return once an item was made")
	}
	// The other maker's item is not lost: it becomes a ready one.
	g.release <- struct{}{}
	waitFor(t, "the second item in the pool", func() bool { return p.readyLen(defaultTmpMB) >= 1 })
	for range 10 {
		g.release <- struct{}{}
	}
	p.close()
	if d, c := g.destroyed.Load(), g.calls.Load(); d != c-1 {
		t.Errorf("%d made, 1 handed out, %d destroyed", c, d)
	}
}

func TestPoolGetFailsWithItsMaker(t *testing.T) {
	g := newGatedMaker()
	g.err = errors.New("no shell today")
	for range 100 {
		g.release <- struct{}{}
	}
	p := newPool("thing", 4, 1, g.mk, g.destroy, nolog)
	defer p.close()
	if _, err := p.get(context.Background(), defaultTmpMB); !errors.Is(err, g.err) {
		t.Fatalf("get: %v, want %v", err, g.err)
	}
}

func TestPoolGetCancelledKeepsItem(t *testing.T) {
	g := newGatedMaker()
	p := newPool("thing", 4, 1, g.mk, g.destroy, nolog)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := p.get(ctx, 2048)
		errc <- err
	}()
	waitFor(t, "the get's maker", func() bool { return g.calls.Load() >= 2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("get: %v, want context.Canceled", err)
	}
	for range 10 {
		g.release <- struct{}{}
	}
	waitFor(t, "the cancelled get's item in the pool", func() bool { return p.readyLen(2048) >= 1 })
	p.close()
}

func TestPoolCloseFailsWaitersAndDestroysLateItems(t *testing.T) {
	g := newGatedMaker()
	p := newPool("thing", 4, 1, g.mk, g.destroy, nolog)
	errc := make(chan error, 1)
	go func() {
		_, err := p.get(context.Background(), defaultTmpMB)
		errc <- err
	}()
	waitFor(t, "the get's maker", func() bool { return g.calls.Load() >= 2 })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.close()
	}()
	if err := <-errc; !errors.Is(err, errPoolClosed) {
		t.Fatalf("get during close: %v, want errPoolClosed", err)
	}
	for range 10 {
		g.release <- struct{}{}
	}
	wg.Wait()
	if d, c := g.destroyed.Load(), g.calls.Load(); d != c {
		t.Errorf("%d made after close, %d destroyed", c, d)
	}
	if _, err := p.get(context.Background(), defaultTmpMB); !errors.Is(err, errPoolClosed) {
		t.Errorf("get after close: %v", err)
	}
}

// TestQuietSettle: a refill waits for a pause in cold starts, but not past
// its deadline, and not when the pool has run dry.
func TestQuietSettle(t *testing.T) {
	var q quiet
	never := func() bool { return false }
	t0 := time.Now()
	q.settle(20*time.Millisecond, t0.Add(time.Second), never)
	if d := time.Since(t0); d > 10*time.Millisecond {
		t.Fatalf("nothing ever in progress: settle took %v", d)
	}

	q.enter()
	done := make(chan time.Time)
	go func() {
		q.settle(20*time.Millisecond, time.Now().Add(5*time.Second), never)
		done <- time.Now()
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("settled while a cold start was in progress")
	default:
	}
	left := time.Now()
	q.leave()
	at := <-done
	if d := at.Sub(left); d < 20*time.Millisecond {
		t.Fatalf("settled %v after the last cold start, before the 20ms gap", d)
	}

	q.enter()
	t0 = time.Now()
	q.settle(20*time.Millisecond, t0.Add(30*time.Millisecond), never)
	if d := time.Since(t0); d < 30*time.Millisecond || d > time.Second {
		t.Fatalf("busy until the deadline of 30ms: settle took %v", d)
	}
	t0 = time.Now()
	q.settle(20*time.Millisecond, t0.Add(5*time.Second), func() bool { return true })
	if d := time.Since(t0); d > 10*time.Millisecond {
		t.Fatalf("pool dry: settle took %v", d)
	}
	q.leave()
}
