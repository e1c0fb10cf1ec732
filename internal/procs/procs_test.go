package procs

import (
	"sync"
	"testing"
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
	g := newGovernor(8, r.set)
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
	g := newGovernor(2, r.set)
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
	if g := newGovernor(1, r.set); g != nil {
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
