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

// TestInvocationsWiden: busyAt invocations at once widen GOMAXPROCS; it
// stays wide while more than calmAt run, and is narrow again calmFor after
// they fell to calmAt; a burst within calmFor keeps it wide.
func TestInvocationsWiden(t *testing.T) {
	r := &recorder{cur: 2}
	g := NewWith(2, r.set)
	g.calmFor = 50 * time.Millisecond
	if g.busyAt != 8 || g.calmAt != 4 {
		t.Fatalf("busyAt %d, calmAt %d; want 8 and 4 for two CPUs", g.busyAt, g.calmAt)
	}
	var dones []func()
	start := func(n int) {
		for range n {
			dones = append(dones, g.Invocation())
		}
	}
	end := func(n int) {
		for range n {
			dones[len(dones)-1]()
			dones = dones[:len(dones)-1]
		}
	}
	start(7)
	if got := r.now(); got != 1 {
		t.Fatalf("7 invocations: GOMAXPROCS %d, want 1", got)
	}
	start(1)
	if got := r.now(); got != 2 {
		t.Fatalf("8 invocations: GOMAXPROCS %d, want 2", got)
	}
	end(3) // 5 left: above calmAt
	time.Sleep(3 * g.calmFor)
	if got := r.now(); got != 2 {
		t.Fatalf("5 invocations for a while: GOMAXPROCS %d, want 2", got)
	}
	end(1) // 4: calm starts
	time.Sleep(g.calmFor / 5)
	start(3) // a burst before calmFor has passed
	time.Sleep(2 * g.calmFor)
	if got := r.now(); got != 2 {
		t.Fatalf("7 invocations after a dip: GOMAXPROCS %d, want 2", got)
	}
	end(7)
	deadline := time.Now().Add(5 * time.Second)
	for r.now() != 1 && time.Now().Before(deadline) {
		time.Sleep(g.calmFor / 5)
	}
	if got := r.now(); got != 1 {
		t.Fatalf("no invocations: GOMAXPROCS %d, want 1", got)
	}
	// Bulk work keeps it wide through calm.
	done := g.Bulk()
	start(8)
	end(8)
	time.Sleep(3 * g.calmFor)
	if got := r.now(); got != 2 {
		t.Fatalf("bulk work after calm: GOMAXPROCS %d, want 2", got)
	}
	done()
	if got := r.now(); got != 1 {
		t.Fatalf("all done: GOMAXPROCS %d, want 1", got)
	}
}

// TestInvocationsConcurrent: invocations that start and end on many
// goroutines leave the governor narrow and its count at zero.
func TestInvocationsConcurrent(t *testing.T) {
	r := &recorder{cur: 4}
	g := NewWith(4, r.set)
	g.calmFor = time.Millisecond
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 200 {
				g.Invocation()()
			}
		})
	}
	wg.Wait()
	if n := g.running.Load(); n != 0 {
		t.Fatalf("%d invocations left running", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.now() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := r.now(); got != 2 {
		t.Fatalf("after the invocations: GOMAXPROCS %d, want 2", got)
	}
}
