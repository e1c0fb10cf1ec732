package procs

import (
	"sync"
	"testing"
	"time"
)

// recorder stands in for runtime.GOMAXPROCS.
type recorder struct {
	mu  sync.Mutex
	cur int
	log []int
}

func (r *recorder) set(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur
	r.cur = n
	r.log = append(r.log, n)
	return old
}

func (r *recorder) now() int { r.mu.Lock(); defer r.mu.Unlock(); return r.cur }

func TestBulkWidensUntilLastDone(t *testing.T) {
	r := &recorder{cur: 8}
	g := NewWith(8, r.set)
	if got := r.now(); got != 4 {
		t.Fatalf("after New: GOMAXPROCS %d, want 4", got)
	}
	a := g.Bulk()
	if got := r.now(); got != 8 {
		t.Fatalf("during bulk: %d, want 8", got)
	}
	b := g.Bulk()
	a()
	a() // a second call must not end b's bulk
	if got := r.now(); got != 8 {
		t.Fatalf("one bulk job left: %d, want 8", got)
	}
	b()
	if got := r.now(); got != 4 {
		t.Fatalf("after the last bulk job: %d, want 4", got)
	}
	want := []int{4, 8, 4}
	if len(r.log) != len(want) {
		t.Fatalf("sets %v, want %v (no set while already wide)", r.log, want)
	}
	for i := range want {
		if r.log[i] != want[i] {
			t.Fatalf("sets %v, want %v", r.log, want)
		}
	}
}

func TestBulkConcurrent(t *testing.T) {
	r := &recorder{cur: 2}
	g := NewWith(2, r.set)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			done := g.Bulk()
			if got := r.now(); got != 2 {
				t.Errorf("during bulk: %d, want 2", got)
			}
			done()
		})
	}
	wg.Wait()
	if got := r.now(); got != 1 {
		t.Fatalf("after all: %d, want 1", got)
	}
}

func TestNothingToManage(t *testing.T) {
	r := &recorder{cur: 1}
	if g := NewWith(1, r.set); g != nil {
		t.Fatal("a governor for one CPU")
	}
	if len(r.log) != 0 {
		t.Fatalf("set %v with one CPU", r.log)
	}
	var g *Governor
	g.Bulk()() // a nil governor manages nothing
	if n, w := g.Sizes(); n != w {
		t.Fatalf("nil governor sizes %d, %d", n, w)
	}
}

func TestEnvironmentWins(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if g := New(); g != nil {
		t.Fatal("New managed GOMAXPROCS the environment set")
	}
}

// TestInvocationsWiden: busyAt invocations at once widen GOMAXPROCS; the
// calm check after a dip to calmAt keeps it wide while more than calmAt
// run, and narrows it once no more do. The timer is not left to fire:
// calmFor is an hour and the test calls calmed itself.
func TestInvocationsWiden(t *testing.T) {
	r := &recorder{cur: 2}
	g := NewWith(2, r.set)
	g.calmFor = time.Hour
	if g.busyAt != 8 || g.calmAt != 4 {
		t.Fatalf("busyAt %d, calmAt %d; want 8 and 4 for two CPUs", g.busyAt, g.calmAt)
	}
	var dones []func()
	start := func(n int) {
		for range n {
			g.InvocationStarted()
			dones = append(dones, g.InvocationEnded)
		}
	}
	end := func(n int) {
		for range n {
			dones[len(dones)-1]()
			dones = dones[:len(dones)-1]
		}
	}
	armed := func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.calm != nil }
	start(7)
	if got := r.now(); got != 1 {
		t.Fatalf("7 invocations: GOMAXPROCS %d, want 1", got)
	}
	start(1)
	if got := r.now(); got != 2 {
		t.Fatalf("8 invocations: GOMAXPROCS %d, want 2", got)
	}
	end(3) // 5 left: above calmAt
	if armed() {
		t.Fatal("calm check armed with 5 invocations running")
	}
	end(1) // 4: at calmAt
	if !armed() {
		t.Fatal("no calm check armed at calmAt")
	}
	start(3) // 7 by the time the check comes
	g.calmed()
	if got := r.now(); got != 2 || !armed() {
		t.Fatalf("7 invocations at the calm check: GOMAXPROCS %d, check armed %v; want 2, armed again", got, armed())
	}
	end(7)
	g.calmed()
	if got := r.now(); got != 1 || armed() {
		t.Fatalf("no invocations at the calm check: GOMAXPROCS %d, check armed %v; want 1, none", got, armed())
	}
	// A crowd that has reached busyAt again by the check stays wide.
	start(8)
	end(4)
	start(4)
	g.calmed()
	if got := r.now(); got != 2 {
		t.Fatalf("8 invocations at the calm check: GOMAXPROCS %d, want 2", got)
	}
	end(8)
	g.calmed()
	// Bulk work keeps it wide through a calm check.
	done := g.Bulk()
	start(8)
	end(8)
	g.calmed()
	if got := r.now(); got != 2 {
		t.Fatalf("bulk work at the calm check: GOMAXPROCS %d, want 2", got)
	}
	done()
	if got := r.now(); got != 1 {
		t.Fatalf("all done: GOMAXPROCS %d, want 1", got)
	}
	g.mu.Lock()
	if g.calm != nil {
		g.calm.Stop()
	}
	g.mu.Unlock()
}

// TestInvocationsConcurrent: 64 invocations under way at once on as many
// goroutines widen GOMAXPROCS; once all have ended, the calm check
// (calmFor 1 ms, its real timer) narrows it and the count is zero.
func TestInvocationsConcurrent(t *testing.T) {
	r := &recorder{cur: 4}
	g := NewWith(4, r.set)
	g.calmFor = time.Millisecond
	const n = 64
	var started, wg sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	for range n {
		wg.Go(func() {
			g.InvocationStarted()
			started.Done()
			<-release
			g.InvocationEnded()
		})
	}
	started.Wait()
	if got := r.now(); got != 4 {
		t.Fatalf("%d invocations under way: GOMAXPROCS %d, want 4", n, got)
	}
	close(release)
	wg.Wait()
	if c := g.running.Load(); c != 0 {
		t.Fatalf("%d invocations left running", c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.now() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := r.now(); got != 2 {
		t.Fatalf("after the invocations: GOMAXPROCS %d, want 2", got)
	}
}

// TestInvocationAllocatesNothing: the pair every invocation pays
// allocates nothing below busyAt.
func TestInvocationAllocatesNothing(t *testing.T) {
	r := &recorder{cur: 2}
	g := NewWith(2, r.set)
	if n := testing.AllocsPerRun(1000, func() { g.InvocationStarted(); g.InvocationEnded() }); n != 0 {
		t.Fatalf("%v allocations per invocation, want 0", n)
	}
}

// TestCrowdGoneBeforeWidening: a crowd that thins to calmAt while
// InvocationStarted widens for it (its InvocationEnded calls seeing the
// crowd not yet marked, and so arming nothing) still gets a calm check.
// The recorder's set, called as GOMAXPROCS widens, stands in for those
// ends.
func TestCrowdGoneBeforeWidening(t *testing.T) {
	var g *Governor
	r := &recorder{cur: 2}
	thin := func(n int) int {
		if n == 2 && g != nil {
			g.running.Add(-g.running.Load()) // every invocation ended meanwhile
		}
		return r.set(n)
	}
	g = NewWith(2, thin)
	g.calmFor = time.Hour
	for range g.busyAt {
		g.InvocationStarted()
	}
	g.mu.Lock()
	armed := g.calm != nil
	if armed {
		g.calm.Stop()
	}
	g.mu.Unlock()
	if r.now() != 2 || !armed {
		t.Fatalf("GOMAXPROCS %d, calm check armed %v; want 2, armed", r.now(), armed)
	}
	g.calmed()
	if got := r.now(); got != 1 {
		t.Fatalf("after the calm check: GOMAXPROCS %d, want 1", got)
	}
}
