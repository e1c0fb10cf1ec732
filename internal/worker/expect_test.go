package worker

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// expectingBackend records what it is told to expect and makes nothing.
type expectingBackend struct {
	mu   sync.Mutex
	told []sandbox.Spec
}

func (b *expectingBackend) Name() string { return "expecting" }
func (b *expectingBackend) Create(context.Context, sandbox.Spec) (sandbox.Sandbox, error) {
	return nil, errors.New("not in this test")
}
func (b *expectingBackend) Close() error { return nil }
func (b *expectingBackend) Expect(s sandbox.Spec) {
	b.mu.Lock()
	b.told = append(b.told, s)
	b.mu.Unlock()
}

// TestExpectStart: a version's first start is announced once, with its
// /tmp size; a version with environments, or one already announced, is
// not; a new generation of the same function is.
func TestExpectStart(t *testing.T) {
	b := &expectingBackend{}
	p := New(Config{Backend: b})
	defer p.Close()
	v := func(gen string, tmp int) *control.Version {
		return &control.Version{Account: "000000000000", Generation: gen, Config: function.Config{FunctionName: "fn",
			Version: "$LATEST", MemorySize: 128, EphemeralStorage: function.EphemeralStorage{Size: tmp}}}
	}
	p.expectStart(v("g1", 512))
	p.expectStart(v("g1", 512)) // its state, tags, ...: the same key
	p.expectStart(v("g2", 1024))
	p.expectStart(v("g2", 1024))
	live := v("g3", 512)
	if _, err := p.Provision(context.Background(), live, 0); err != nil { // a group, as a live environment leaves
		t.Fatal(err)
	}
	p.mu.Lock()
	if g := p.groups[key(live)]; g != nil {
		g.pinned = 1
	}
	p.mu.Unlock()
	p.expectStart(live)
	p.mu.Lock()
	delete(p.groups, key(live)) // its environments gone, as the reaper leaves it
	p.mu.Unlock()
	p.expectStart(live) // a later write (tags) with the key as it was
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.told) != 2 || b.told[0].EphemeralMB != 512 || b.told[1].EphemeralMB != 1024 {
		t.Fatalf("told %+v, want the g1 version's 512 MB and the g2 version's 1024 MB", b.told)
	}

	q := New(Config{Backend: &sandbox.Process{}}) // not Expecting: nothing to tell
	defer q.Close()
	q.expectStart(v("g1", 512))
}
