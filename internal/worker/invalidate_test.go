package worker

import (
	"context"
	"slices"
	"testing"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/function"
)

// TestInvalidateRetiresOnlyNamedKeys: Invalidate retires the groups whose
// keys it is given and no other. A group made after the caller judged the
// keys (here: a provisioned version's, pinned) must survive a change
// notification that raced with its making; retired, it would spin down
// every environment made for it, and its provisioned concurrency would
// never become ready.
func TestInvalidateRetiresOnlyNamedKeys(t *testing.T) {
	p := New(Config{})
	defer p.Close()
	v1 := &control.Version{Account: "000000000000", Generation: "g1", Config: function.Config{FunctionName: "fn", Version: "1", MemorySize: 128}}
	v2 := &control.Version{Account: "000000000000", Generation: "g1", Config: function.Config{FunctionName: "fn", Version: "2", MemorySize: 128}}
	for _, v := range []*control.Version{v1, v2} {
		// n = 0: the group exists, no environment is started.
		if _, err := p.Provision(context.Background(), v, 0); err != nil {
			t.Fatal(err)
		}
	}
	p.mu.Lock()
	for _, g := range p.groups {
		g.pinned = 1 // as Provision leaves a provisioned group
	}
	p.mu.Unlock()
	k1, k2 := key(v1), key(v2)

	p.Invalidate("000000000000", "fn", map[string]bool{})
	p.Invalidate("000000000000", "fn", map[string]bool{k1: true})
	p.mu.Lock()
	g1, g2 := p.groups[k1], p.groups[k2]
	p.mu.Unlock()
	if g2 == nil || g2.retired {
		t.Errorf("the group not named was retired (or dropped): %+v", g2)
	}
	if g1 == nil || !g1.retired {
		t.Errorf("the group named stale is not retired: %+v", g1)
	}
	if keys := p.Keys("000000000000", "fn"); !slices.Contains(keys, k2) {
		t.Errorf("keys after invalidation: %v", keys)
	}
}
