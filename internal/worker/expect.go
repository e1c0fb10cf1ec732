package worker

import (
	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// expectStart tells v's backend, when it makes sandboxes ahead
// (sandbox.Expecting), that an environment of v is likely to start soon:
// v was just deployed or changed (its pool key is not the one last
// announced for the function), no environment of it is alive, and its
// first invoke will be a cold start. Writes that leave the key as it is
// (the function's state, tags, concurrency) announce nothing.
func (p *Pool) expectStart(v *control.Version) {
	b, ok := p.backendOf(v.Account).(sandbox.Expecting)
	if !ok {
		return
	}
	k, fk := key(v), funcKey(v)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	_, live := p.groups[k]
	seen := p.expected[fk] == k
	if !seen {
		if len(p.expected) >= maxExpected {
			clear(p.expected) // at worst, a function's next write announces once more
		}
		p.expected[fk] = k // a live one's too: its next write is not a deployment
	}
	p.mu.Unlock()
	if !seen && !live {
		c := &v.Config
		b.Expect(sandbox.Spec{Account: v.Account, MemoryMB: c.MemorySize, EphemeralMB: c.EphemeralStorage.Size,
			NoNetwork: c.NuboNetwork == "none"})
	}
}

// maxExpected bounds the functions whose last announced key is
// remembered.
const maxExpected = 4096
