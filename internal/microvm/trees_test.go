package microvm

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// treeGuest is a guest whose requests are recorded, not sent; drops wait
// for release when it is set.
type treeGuest struct {
	*guest
	mu      sync.Mutex
	ops     []string
	release chan struct{}
}

func newTreeGuest(t *testing.T) *treeGuest {
	b, _ := fakeBackend(t, time.Hour)
	g, err := b.reserve("111111111111", 128)
	if err != nil {
		t.Fatal(err)
	}
	<-g.ready
	tg := &treeGuest{guest: g}
	g.rpc = func(_ context.Context, req request, _ func(io.Writer) error) (response, error) {
		tg.mu.Lock()
		tg.ops = append(tg.ops, req.Op+" "+req.Key)
		rel := tg.release
		tg.mu.Unlock()
		if req.Op == opDrop && rel != nil {
			<-rel
		}
		return response{}, nil
	}
	return tg
}

func (tg *treeGuest) opsNow() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.ops)
}

// settle waits until no drop is under way.
func (tg *treeGuest) settle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		tg.putMu.Lock()
		n := len(tg.dropping)
		tg.putMu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("drops never finished")
		}
	}
}

func (tg *treeGuest) mustPut(t *testing.T, dir string) {
	t.Helper()
	if _, err := tg.put(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
}

// TestGuestTreesDropped: a guest keeps the trees its sandboxes use and the
// maxIdleTrees most recently used others; the rest are dropped, each tree
// is sent once while kept, and one dropped is sent again when a sandbox
// needs it, after its drop has finished.
func TestGuestTreesDropped(t *testing.T) {
	tg := newTreeGuest(t)
	tg.mustPut(t, "/code/live") // a sandbox that stays
	for i := range maxIdleTrees + 3 {
		dir := fmt.Sprintf("/code/v%d", i)
		tg.mustPut(t, dir)
		tg.unref(dir) // its sandbox ends
		time.Sleep(time.Millisecond)
	}
	tg.settle(t)
	var drops []string
	puts := map[string]int{}
	for _, op := range tg.opsNow() {
		var o, k string
		fmt.Sscan(op, &o, &k)
		switch o {
		case opDrop:
			drops = append(drops, k)
		case opPut:
			puts[k]++
		}
	}
	if want := []string{"/code/v0", "/code/v1", "/code/v2"}; !slices.Equal(drops, want) {
		t.Fatalf("dropped %v, want the least recently used %v", drops, want)
	}
	for k, n := range puts {
		if n != 1 {
			t.Errorf("%s sent %d times", k, n)
		}
	}
	// The tree in use was never a candidate; taking a kept one again
	// sends nothing.
	tg.mustPut(t, "/code/v6")
	if n := len(tg.opsNow()); n != 1+maxIdleTrees+3+3 {
		t.Fatalf("%d requests, want no new one for a kept tree", n)
	}
	// A dropped tree is sent again; a put racing its drop waits for it.
	tg.mu.Lock()
	tg.release = make(chan struct{})
	tg.mu.Unlock()
	tg.unref("/code/v6")
	tg.mustPut(t, "/code/v7") // one more idle tree: v3 is dropped, held
	tg.unref("/code/v7")
	done := make(chan struct{})
	go func() {
		defer close(done)
		tg.mustPut(t, "/code/v3")
	}()
	select {
	case <-done:
		t.Fatal("the put of a tree being dropped did not wait for the drop")
	case <-time.After(50 * time.Millisecond):
	}
	close(tg.release)
	<-done
	ops := tg.opsNow()
	if last := ops[len(ops)-1]; last != opPut+" /code/v3" {
		t.Fatalf("last request %q, want the put of /code/v3 after its drop; all: %v", last, ops)
	}
	tg.settle(t)
}

// TestGuestTreesLongUseCountsAsRecent: a tree a sandbox used for a long
// time is, when that sandbox ends, the most recently used, not the oldest
// (the time it was taken would make it the first to go).
func TestGuestTreesLongUseCountsAsRecent(t *testing.T) {
	tg := newTreeGuest(t)
	tg.mustPut(t, "/code/long")
	for i := range maxIdleTrees {
		time.Sleep(time.Millisecond)
		dir := fmt.Sprintf("/code/short%d", i)
		tg.mustPut(t, dir)
		tg.unref(dir)
	}
	time.Sleep(time.Millisecond)
	tg.unref("/code/long") // one idle tree too many
	tg.settle(t)
	ops := tg.opsNow()
	if last := ops[len(ops)-1]; last != opDrop+" /code/short0" {
		t.Fatalf("last request %q, want the drop of /code/short0; all: %v", last, ops)
	}
}
