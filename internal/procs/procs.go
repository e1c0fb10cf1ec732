// Package procs sizes nubo serve's Go scheduler (GOMAXPROCS) to the work
// it is doing.
//
// Relaying invocations is short work on many goroutines: one reads a
// client's request, another the runtime's reply, a third writes it back.
// With one scheduler slot (P) they run one after another on one thread;
// with two, each hand-over may wake a second thread, and nubo serve takes
// a CPU its functions would have used. On this project's 2-CPU machine one
// P cut nubo serve's CPU per warm invocation by a quarter or more
// (docs/performance.md, session 19). Bulk work is the opposite: a 40 MB
// zip to decode, hash, store and unpack holds its P for hundreds of
// milliseconds, and with one P every invocation waits behind it.
//
// A Governor therefore keeps GOMAXPROCS at half the CPUs nubo may use
// (at least one) and raises it to all of them while any bulk work is under
// way. It manages nothing when GOMAXPROCS is set in the environment: the
// operator's choice stands.
package procs

import (
	"os"
	"runtime"
	"sync"
)

// Governor raises GOMAXPROCS for bulk work and lowers it afterwards. There
// is one per process (GOMAXPROCS is the process's); a nil *Governor
// manages nothing.
type Governor struct {
	narrow, wide int
	set          func(int) int

	mu   sync.Mutex
	bulk int // bulk jobs under way
}

// New returns a Governor for this process, or nil when the environment
// sets GOMAXPROCS or when there is a single CPU to use. It lowers
// GOMAXPROCS at once.
func New() *Governor {
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return nil
	}
	return newGovernor(runtime.GOMAXPROCS(0), runtime.GOMAXPROCS)
}

// NewWith returns a Governor of a scheduler of wide Ps at most, sized
// through set (runtime.GOMAXPROCS, or a recorder in tests); nil when wide
// is below 2. It calls set with the narrow size at once.
func NewWith(wide int, set func(int) int) *Governor { return newGovernor(wide, set) }

func newGovernor(wide int, set func(int) int) *Governor {
	if wide < 2 {
		return nil
	}
	g := &Governor{narrow: max(1, wide/2), wide: wide, set: set}
	g.set(g.narrow)
	return g
}

// Bulk marks the start of bulk work: GOMAXPROCS is wide until every
// Bulk's done has been called. done may be called more than once.
func (g *Governor) Bulk() (done func()) {
	if g == nil {
		return func() {}
	}
	g.mu.Lock()
	g.bulk++
	if g.bulk == 1 {
		g.set(g.wide)
	}
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.bulk--
			if g.bulk == 0 {
				g.set(g.narrow)
			}
			g.mu.Unlock()
		})
	}
}

// Sizes returns the GOMAXPROCS kept without bulk work and with it.
func (g *Governor) Sizes() (narrow, wide int) {
	if g == nil {
		n := runtime.GOMAXPROCS(0)
		return n, n
	}
	return g.narrow, g.wide
}
