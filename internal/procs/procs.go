// Package procs sizes nubo serve's Go scheduler (GOMAXPROCS) to the work
// it is doing.
//
// Relaying invocations one or a few at a time is short work on a handful
// of goroutines: one reads a client's request, another the runtime's
// reply, a third writes it back. With one scheduler slot (P) they run one
// after another on one thread; with two, each hand-over may wake a second
// thread, and nubo serve takes a CPU its functions would have used. On
// this project's 2-CPU machine one P cut nubo serve's CPU per warm
// invocation by a quarter or more (docs/performance.md, session 19).
//
// Two kinds of work want every P instead:
//   - bulk work: a 40 MB zip to decode, hash, store and unpack holds its
//     P for hundreds of milliseconds, and with one P every invocation
//     waits behind it;
//   - many invocations at once: at 64 concurrent invocations one P made
//     nubo serve's CPU per invocation double and its throughput halve.
//
// A Governor therefore keeps GOMAXPROCS at half the CPUs nubo may use
// (at least one), and raises it to all of them while any bulk work is
// under way and once busyAt or more invocations run at once. A crowd is
// over when no more than calmAt run calmFor after their number first
// fell to calmAt (else it is looked at again calmFor later), so crowds
// change GOMAXPROCS at most once per calmFor; each change stops the
// world for a moment. It manages nothing when GOMAXPROCS
// is set in the environment: the operator's choice stands. Once it has
// set GOMAXPROCS, the Go runtime no longer follows changes of the CPU
// limit of nubo serve's cgroup.
package procs

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Governor raises GOMAXPROCS for bulk work and for many invocations at
// once, and lowers it afterwards. There is one per process (GOMAXPROCS is
// the process's); a nil *Governor manages nothing.
type Governor struct {
	narrow, wide int
	set          func(int) int
	// Invocations: wide from busyAt at once, narrow again when no more
	// than calmAt run calmFor after they first fell to calmAt.
	busyAt, calmAt int64
	calmFor        time.Duration

	running atomic.Int64 // invocations under way
	loaded  atomic.Bool  // wide for the invocations

	mu   sync.Mutex
	bulk int // bulk jobs under way
	cur  int // GOMAXPROCS as last set
	calm *time.Timer
}

// New returns a Governor for this process, or nil when the environment
// sets GOMAXPROCS or when there is a single CPU to use. It lowers
// GOMAXPROCS at once.
func New() *Governor {
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return nil
	}
	return NewWith(runtime.GOMAXPROCS(0), runtime.GOMAXPROCS)
}

// NewWith returns a Governor of a scheduler of wide Ps at most, sized
// through set (runtime.GOMAXPROCS, or a recorder in tests); nil when wide
// is below 2. It calls set with the narrow size at once.
func NewWith(wide int, set func(int) int) *Governor {
	if wide < 2 {
		return nil
	}
	g := &Governor{narrow: max(1, wide/2), wide: wide, set: set,
		busyAt: int64(4 * wide), calmAt: int64(2 * wide), calmFor: time.Second}
	g.cur = g.narrow
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
	g.resizeLocked()
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.bulk--
			g.resizeLocked()
			g.mu.Unlock()
		})
	}
}

// InvocationStarted counts an invocation under way until its
// InvocationEnded. Below busyAt at once the pair costs an atomic addition
// each way and an atomic load, and allocates nothing.
func (g *Governor) InvocationStarted() {
	if g == nil {
		return
	}
	if g.running.Add(1) >= g.busyAt && !g.loaded.Load() {
		g.mu.Lock()
		if g.running.Load() >= g.busyAt {
			g.loadLocked()
		}
		g.mu.Unlock()
	}
}

// InvocationEnded ends what one InvocationStarted began.
func (g *Governor) InvocationEnded() {
	if g == nil {
		return
	}
	if g.running.Add(-1) > g.calmAt || !g.loaded.Load() {
		return
	}
	g.mu.Lock()
	g.armCalmLocked()
	g.mu.Unlock()
}

// armCalmLocked schedules a calm check unless one is pending.
func (g *Governor) armCalmLocked() {
	if g.calm == nil {
		g.calm = time.AfterFunc(g.calmFor, g.calmed)
	}
}

// calmed ends the crowd calmFor after invocations fell to calmAt, unless
// more than calmAt run now; then it looks again calmFor later.
func (g *Governor) calmed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running.Load() > g.calmAt {
		g.calm.Reset(g.calmFor)
		return
	}
	g.calm = nil
	g.loaded.Store(false)
	// An InvocationStarted that reached busyAt between the load above and the
	// store saw loaded still set and left the widening to us.
	if g.running.Load() >= g.busyAt {
		g.loadLocked()
	}
	g.resizeLocked()
}

// loadLocked marks a crowd under way and widens for it. The crowd may
// have thinned to calmAt already: its InvocationEnded calls, seeing no
// crowd marked, armed no calm check, so one is armed here.
func (g *Governor) loadLocked() {
	g.loaded.Store(true)
	g.resizeLocked()
	if g.running.Load() <= g.calmAt {
		g.armCalmLocked()
	}
}

// resizeLocked sets GOMAXPROCS for the work under way.
func (g *Governor) resizeLocked() {
	want := g.narrow
	if g.bulk > 0 || g.loaded.Load() {
		want = g.wide
	}
	if want != g.cur {
		g.cur = want
		g.set(want)
	}
}

// Sizes returns the GOMAXPROCS kept for light work and for heavy.
func (g *Governor) Sizes() (narrow, wide int) {
	if g == nil {
		n := runtime.GOMAXPROCS(0)
		return n, n
	}
	return g.narrow, g.wide
}
