package netenv

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Fake is an in-memory Firewall for tests. It installs nothing in the
// kernel: it records the policy it was given and answers, through Verdict,
// what the real backends would do with a packet (both evaluate the same
// Policy.Rules, see Evaluate). Pass it as Config.Firewall to run a Manager
// without touching the host's packet filter.
type Fake struct {
	mu        sync.Mutex
	policy    *Policy
	guards    map[string]FakeGuard
	setups    int
	teardowns int
	// SetupErr and TeardownErr, when set, are returned by Setup and Teardown.
	SetupErr, TeardownErr error
}

// NewFake returns a Fake with nothing installed.
func NewFake() *Fake { return &Fake{} }

// Name reports "fake".
func (f *Fake) Name() string { return "fake" }

// Setup records p as installed.
func (f *Fake) Setup(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups++
	if f.SetupErr != nil {
		return f.SetupErr
	}
	f.policy = &p
	return nil
}

// Teardown forgets the installed policy.
func (f *Fake) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teardowns++
	if f.TeardownErr != nil {
		return f.TeardownErr
	}
	f.policy = nil
	f.guards = nil
	return nil
}

// FakeGuard is a tap guard a Fake records.
type FakeGuard struct {
	MAC  net.HardwareAddr
	Addr netip.Addr
}

// GuardTap records iface's guard (see TapGuard); nothing is filtered.
func (f *Fake) GuardTap(iface string, mac net.HardwareAddr, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.guards == nil {
		f.guards = map[string]FakeGuard{}
	}
	f.guards[iface] = FakeGuard{MAC: mac, Addr: addr}
	return nil
}

// UnguardTap forgets iface's guard.
func (f *Fake) UnguardTap(iface string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.guards, iface)
	return nil
}

// Guard returns the guard recorded for iface, if any.
func (f *Fake) Guard(iface string) (FakeGuard, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.guards[iface]
	return g, ok
}

// Installed returns the policy in force, if any.
func (f *Fake) Installed() (Policy, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.policy == nil {
		return Policy{}, false
	}
	return *f.policy, true
}

// Calls reports how many times Setup and Teardown were called.
func (f *Fake) Calls() (setups, teardowns int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.setups, f.teardowns
}

// ErrNotInstalled is returned by Verdict when no policy is installed.
var ErrNotInstalled = errors.New("netenv: no policy installed")

// Verdict returns what the installed policy does with pkt.
func (f *Fake) Verdict(pkt Packet) (Action, error) {
	p, ok := f.Installed()
	if !ok {
		return Continue, ErrNotInstalled
	}
	return Evaluate(p.Rules(), pkt), nil
}
