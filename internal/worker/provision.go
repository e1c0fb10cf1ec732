package worker

import (
	"context"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/env"
)

// Provision keeps n initialised environments of version v (provisioned
// concurrency) and returns how many are ready. Environments busy with
// invocations count: they are the same provisioned capacity in use.
func (p *Pool) Provision(ctx context.Context, v *control.Version, n int) (int, error) {
	k := key(v)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, nil
	}
	g := p.groups[k]
	if g == nil {
		g = p.newGroupLocked(k, v)
	}
	g.pinned = n
	missing := n - len(g.idle) - g.busy - g.starting
	if missing > 0 {
		// Provisioned concurrency is what an administrator asked for: it
		// is charged even where idle environments cannot make room.
		if !p.evictLocked(missing * g.charge) {
			p.ledger.Add(missing * g.charge)
		}
		g.starting += missing
	}
	p.mu.Unlock()
	var firstErr error
	for i := 0; i < missing; i++ {
		e, err := p.createAs(ctx, v, "provisioned-concurrency")
		p.mu.Lock()
		g.starting--
		if err != nil {
			p.ledger.Give(g.charge)
			if firstErr == nil {
				firstErr = err
			}
		} else if p.closed || g.retired {
			p.ledger.Give(g.charge)
			p.shutdownAsync(e, "spindown")
		} else {
			// Least recently used end: on-demand invocations prefer the
			// most recently used environments, the provisioned ones wait.
			g.idle = append([]*env.Environment{e}, g.idle...)
		}
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ready := min(len(g.idle)+g.busy, n)
	return ready, firstErr
}

// Unpin drops the provisioned count of every group of a function whose key
// is not in keep; their environments then age out like on-demand ones.
func (p *Pool) Unpin(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, g := range p.groups {
		if g.pinned > 0 && !keep[k] {
			g.pinned = 0
			p.dropEmptyLocked(g)
		}
	}
}
