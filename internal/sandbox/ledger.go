package sandbox

import (
	"math"
	"sync"
	"time"
)

// Ledger is a node's memory budget for execution environments, in MB. The
// worker pool charges each environment's MemorySize to it, except where
// the backend charges memory of its own instead (see Charger): the
// microVM tier charges whole VMs. One ledger for both keeps a node that
// runs both tiers within its capacity once, not once per tier.
//
// Its lock is a leaf: callers may hold their own locks while they use it.
type Ledger struct {
	mu      sync.Mutex
	capMB   int
	usedMB  int
	refused time.Time // the last Take that did not fit
}

// NewLedger returns a ledger of capMB; 0 or less means no bound.
func NewLedger(capMB int) *Ledger { return &Ledger{capMB: capMB} }

// Take charges mb if it fits and reports whether it did (nothing always
// fits).
func (l *Ledger) Take(mb int) bool {
	if mb <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.capMB > 0 && l.usedMB+mb > l.capMB {
		l.refused = time.Now()
		return false
	}
	l.usedMB += mb
	return true
}

// Pressed reports whether a Take was refused within the last d: memory
// held for later use (an empty VM kept warm) should then be given back at
// once.
func (l *Ledger) Pressed(d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.refused.IsZero() && time.Since(l.refused) < d
}

// Add charges mb whether it fits or not (provisioned concurrency, which an
// administrator asked for).
func (l *Ledger) Add(mb int) {
	l.mu.Lock()
	l.usedMB += mb
	l.mu.Unlock()
}

// Give returns mb.
func (l *Ledger) Give(mb int) {
	l.mu.Lock()
	l.usedMB -= mb
	l.mu.Unlock()
}

// Free is what a Take may still charge; math.MaxInt without a bound.
func (l *Ledger) Free() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.capMB <= 0 {
		return math.MaxInt
	}
	return l.capMB - l.usedMB
}

// Used is what is charged.
func (l *Ledger) Used() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usedMB
}

// Charger is a Backend that charges the Ledger itself for the memory its
// sandboxes need (the microVM tier: each VM it boots, which holds several
// sandboxes and a kernel); the worker pool charges nothing for them.
type Charger interface {
	ChargesLedger() bool
}

// Charges reports whether b charges the ledger itself.
func Charges(b Backend) bool {
	c, ok := b.(Charger)
	return ok && c.ChargesLedger()
}
