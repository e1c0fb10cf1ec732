package worker

import (
	"time"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/sandbox"
)

// expectStart tells v's backend, when it makes sandboxes ahead
// (sandbox.Expecting), that an environment of v is likely to start soon:
// v was just deployed or changed, no environment of it is alive, and its
// first invoke will be a cold start. Each pool key is announced once
// within expectRemembered, whatever writes to the function follow (its
// state, tags, concurrency).
func (p *Pool) expectStart(v *control.Version) {
	b, ok := p.backendOf(v.Account).(sandbox.Expecting)
	if !ok {
		return
	}
	k := key(v)
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for old, at := range p.expected {
		if now.Sub(at) > expectRemembered {
			delete(p.expected, old)
		}
	}
	_, live := p.groups[k]
	_, told := p.expected[k]
	if !live && !told && len(p.expected) < maxExpected {
		p.expected[k] = now
	} else {
		told = true
	}
	p.mu.Unlock()
	if !told {
		c := &v.Config
		b.Expect(sandbox.Spec{Account: v.Account, MemoryMB: c.MemorySize, EphemeralMB: c.EphemeralStorage.Size,
			NoNetwork: c.NuboNetwork == "none"})
	}
}

const (
	// expectRemembered is how long an announced key is not announced
	// again: longer than the backend waits for what it was told to expect.
	expectRemembered = time.Minute
	// maxExpected bounds the keys remembered: a deployment of more
	// functions than that within expectRemembered is a burst the backend's
	// own bound caps long before.
	maxExpected = 4096
)
