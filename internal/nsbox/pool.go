package nsbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"
)

// pool keeps things made ahead of demand — /tmp volumes, whole sandbox
// shells — one queue per /tmp size, so a cold start does not wait for them.
// Each item is handed out once; the pool refills in the background.
//
// How many are kept per size follows bursts, not the average rate: cold
// starts come in bursts (a deployment, a traffic spike), and a start that
// finds the pool empty pays for a whole shell on its request path. The
// pool keeps the largest number taken within any burstSpan of the last
// sizingWindow, plus spare items (floor) on top, at most max. Items beyond
// that are destroyed once the burst has left the window: an idle shell
// holds memory.
//
// Takes can also be announced before they come (expect): a function just
// deployed is usually invoked soon, by the tests a CI job runs next or by
// its first event, and every such first invoke is a cold start. Takes
// announced within expectWindow and not yet made count as a burst about to
// come, so a deployment of ten functions finds ten items ready, plus the
// floor, instead of the floor alone and refills beside its cold starts.
//
// A get that finds the pool empty waits for the next item made — by a
// refill already under way, or by one more maker it starts at once,
// whichever finishes first (the other item goes to the pool). On a loaded
// host a refill started earlier usually wins: it has had a head start.
type pool[T any] struct {
	name  string
	max   int // at most this many ready per size
	floor int // spare items kept beyond the recent burst
	// mk makes an item; urgent when a get waits for it, otherwise it is
	// made ahead and may yield the CPUs to the cold starts being served.
	mk      func(size int, urgent bool) (T, error)
	destroy func(T)
	log     func(msg string, args ...any)
	hold    func(p *pool[T], size int) // see newHeldPool; may be nil

	mu      sync.Mutex
	ready   map[int][]T         // per size, oldest first
	taken   map[int][]time.Time // recent takes per size, in order, for sizing
	expect  map[int][]time.Time // announced takes per size not yet made, in order
	filling map[int]int         // items being made per size (refills and gets)
	waiting map[int][]chan made[T]
	closed  bool
	wg      sync.WaitGroup // the refill loop and every maker
	kick    chan struct{}
}

// made is an item a waiting get receives, or why there is none.
type made[T any] struct {
	item T
	err  error
}

const (
	// defaultTmpMB is Lambda's default EphemeralStorage.
	defaultTmpMB = 512
	// burstSpan is what counts as one burst of takes; sizingWindow is how
	// long the largest burst is remembered.
	burstSpan    = time.Second
	sizingWindow = time.Minute
	// expectWindow is how long an announced take is waited for.
	expectWindow = 30 * time.Second
	// refillers bounds how many items the refill makes at once. Sandbox
	// shells overlap well (clone, mounts, network) except for cgroup v1
	// placement, which the kernel serialises; more makers than cores
	// only add contention with the cold starts being served.
	refillers = 4
	// trimEvery is how often ready items beyond the demand are destroyed.
	trimEvery = 10 * time.Second
)

var errPoolClosed = errors.New("nsbox: pool closed")

func newPool[T any](name string, max, floor int, mk func(size int, urgent bool) (T, error), destroy func(T), log func(string, ...any)) *pool[T] {
	return newHeldPool(name, max, floor, mk, destroy, log, nil)
}

// newHeldPool is newPool with a hold: the refill calls it before it makes
// each item ahead, and waits while it runs.
func newHeldPool[T any](name string, max, floor int, mk func(size int, urgent bool) (T, error), destroy func(T),
	log func(string, ...any), hold func(p *pool[T], size int)) *pool[T] {
	p := &pool[T]{name: name, max: max, floor: min(floor, max), mk: mk, destroy: destroy, log: log, hold: hold,
		ready: map[int][]T{}, taken: map[int][]time.Time{defaultTmpMB: nil}, expect: map[int][]time.Time{}, filling: map[int]int{},
		waiting: map[int][]chan made[T]{}, kick: make(chan struct{}, 1)}
	p.wg.Add(1)
	go p.refill()
	p.poke()
	return p
}

func (p *pool[T]) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// take returns a ready item of size, or ok=false when none is ready.
func (p *pool[T]) take(size int) (item T, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.poke()
	p.noteTakeLocked(size)
	return p.popLocked(size)
}

// get returns a ready item of size or, when none is ready, the next one
// made: see pool. It fails only when the maker it started failed first,
// when ctx ends, or when the pool is closed.
func (p *pool[T]) get(ctx context.Context, size int) (item T, err error) {
	p.mu.Lock()
	defer p.poke()
	p.noteTakeLocked(size)
	if item, ok := p.popLocked(size); ok {
		p.mu.Unlock()
		return item, nil
	}
	if p.closed {
		p.mu.Unlock()
		return item, errPoolClosed
	}
	w := make(chan made[T], 1)
	p.waiting[size] = append(p.waiting[size], w)
	p.startMakerLocked(size, w)
	p.mu.Unlock()
	select {
	case m := <-w:
		return m.item, m.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if p.dropWaiterLocked(size, w) {
		p.mu.Unlock()
		return item, ctx.Err()
	}
	p.mu.Unlock()
	// Served meanwhile: the item is not wasted.
	if m := <-w; m.err == nil {
		p.deliver(size, m.item, nil, nil, false)
	}
	return item, ctx.Err()
}

func (p *pool[T]) noteTakeLocked(size int) {
	now := time.Now()
	p.taken[size] = append(p.taken[size], now)
	if q := p.expectedLocked(size, now); len(q) > 0 {
		p.setExpectedLocked(size, q[1:])
	}
}

// expectedLocked drops the announcements of size that lapsed (fulfilled
// by nothing) and returns the rest, oldest first.
func (p *pool[T]) expectedLocked(size int, now time.Time) []time.Time {
	q := p.expect[size]
	i := 0
	for i < len(q) && !q[i].After(now.Add(-expectWindow)) {
		i++
	}
	p.setExpectedLocked(size, q[i:])
	return q[i:]
}

func (p *pool[T]) setExpectedLocked(size int, q []time.Time) {
	if len(q) == 0 {
		delete(p.expect, size)
	} else {
		p.expect[size] = q
	}
}

// announce says that one take of size is expected soon (see pool); the
// first take of that size that follows fulfils it, whoever makes it. At
// most max takes are expected at once, over all sizes: announcing is
// free, the items made for it are not.
func (p *pool[T]) announce(size int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	now, n := time.Now(), 0
	for s := range p.expect {
		n += len(p.expectedLocked(s, now))
	}
	if n >= p.max {
		return
	}
	if _, ok := p.taken[size]; !ok {
		p.taken[size] = nil // the refill sizes the sizes it has seen
	}
	p.expect[size] = append(p.expect[size], now)
	p.poke()
}

func (p *pool[T]) popLocked(size int) (item T, ok bool) {
	q := p.ready[size]
	if len(q) == 0 {
		return item, false
	}
	// The newest: the oldest are the ones trimmed.
	item = q[len(q)-1]
	p.ready[size] = q[:len(q)-1]
	return item, true
}

func (p *pool[T]) dropWaiterLocked(size int, w chan made[T]) bool {
	ws := p.waiting[size]
	for i, x := range ws {
		if x == w {
			p.waiting[size] = append(ws[:i:i], ws[i+1:]...)
			return true
		}
	}
	return false
}

// startMakerLocked makes one item of size in the background. Its item goes
// to the oldest waiting get, else to the pool; its error goes to own, the
// get that started it, if that still waits.
func (p *pool[T]) startMakerLocked(size int, own chan made[T]) {
	p.filling[size]++
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		item, err := p.mk(size, true)
		p.deliver(size, item, err, own, true)
	}()
}

// deliver hands an item on (see startMakerLocked): one just made (fresh:
// its maker was counted in filling), or one a cancelled get gives back. An
// item arriving after close is destroyed.
func (p *pool[T]) deliver(size int, item T, err error, own chan made[T], fresh bool) {
	p.mu.Lock()
	if fresh {
		p.filling[size]--
	}
	switch {
	case err != nil:
		served := own != nil && p.dropWaiterLocked(size, own)
		p.mu.Unlock()
		if served {
			own <- made[T]{err: err}
		} else {
			p.log("making a pooled "+p.name+" failed; retrying later", "err", err)
		}
		return
	case p.closed:
		p.mu.Unlock()
		p.destroy(item)
		return
	}
	if ws := p.waiting[size]; len(ws) > 0 {
		w := ws[0]
		p.waiting[size] = ws[1:]
		p.mu.Unlock()
		w <- made[T]{item: item}
		return
	}
	p.ready[size] = append(p.ready[size], item)
	p.mu.Unlock()
}

// wantLocked is how many items of size to keep: the largest burst of
// takes in the window, or the takes announced and still expected if they
// are more, plus the spare floor, at most max. The floor alone is kept
// for the default size when neither applies; another size not taken
// within the window gets no floor (only what is expected of it).
func (p *pool[T]) wantLocked(size int, now time.Time) int {
	es := p.expectedLocked(size, now)
	cut := now.Add(-sizingWindow)
	ts := p.taken[size]
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	ts = ts[i:]
	p.taken[size] = ts
	peak := 0
	for lo, hi := 0, 0; hi < len(ts); hi++ {
		for ts[hi].Sub(ts[lo]) >= burstSpan {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	if peak == 0 && size != defaultTmpMB {
		return min(len(es), p.max)
	}
	return min(max(peak, len(es))+p.floor, p.max)
}

func (p *pool[T]) refill() {
	defer p.wg.Done()
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	sem := make(chan struct{}, refillers)
	for {
		trim := false
		select {
		case <-p.kick:
		case <-tick.C:
			trim = true
		}
		for {
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return
			}
			now := time.Now()
			size := -1
			var extra []T
			for s := range p.taken {
				want := p.wantLocked(s, now)
				// Waiting gets each have a maker of their own in filling.
				have := len(p.ready[s]) + p.filling[s] - len(p.waiting[s])
				if have < want && size < 0 {
					size = s
				}
				if trim && len(p.ready[s]) > want {
					n := len(p.ready[s]) - want
					extra = append(extra, p.ready[s][:n]...)
					p.ready[s] = append(p.ready[s][:0:0], p.ready[s][n:]...)
				}
				if len(p.taken[s]) == 0 && len(p.expect[s]) == 0 && s != defaultTmpMB && len(p.ready[s])+p.filling[s]+len(p.waiting[s]) == 0 {
					delete(p.taken, s)
				}
			}
			trim = false
			if size >= 0 {
				p.filling[size]++
			}
			p.mu.Unlock()
			for _, it := range extra {
				p.destroy(it)
			}
			if size < 0 {
				break
			}
			if p.hold != nil {
				p.hold(p, size)
			}
			// Bounded: a burst must not start a maker per take at once.
			sem <- struct{}{}
			p.mu.Lock()
			if p.closed {
				p.filling[size]--
				p.mu.Unlock()
				return
			}
			p.wg.Add(1)
			p.mu.Unlock()
			go func() {
				defer p.wg.Done()
				defer func() { <-sem }()
				item, err := p.mk(size, false)
				p.deliver(size, item, err, nil, true)
			}()
		}
	}
}

// close stops refilling, fails every waiting get and destroys every ready
// item; items still being made are destroyed as they arrive.
func (p *pool[T]) close() {
	p.mu.Lock()
	p.closed = true
	ready, waiting := p.ready, p.waiting
	p.ready, p.waiting = map[int][]T{}, map[int][]chan made[T]{}
	p.mu.Unlock()
	for _, ws := range waiting {
		for _, w := range ws {
			w <- made[T]{err: errPoolClosed}
		}
	}
	p.poke()
	p.wg.Wait()
	for _, q := range ready {
		for _, it := range q {
			p.destroy(it)
		}
	}
}

// newVolPool pools /tmp volumes under dir.
func newVolPool(m *volumeMaker, dir string, max int, log func(string, ...any)) *pool[*tmpVolume] {
	var mu sync.Mutex
	seq := 0
	return newPool("tmp volume", max, 1, func(size int, _ bool) (*tmpVolume, error) {
		mu.Lock()
		seq++
		image := filepath.Join(dir, fmt.Sprintf("vol-%d.img", seq))
		mu.Unlock()
		return m.volume(image, size, 0, 0)
	}, func(v *tmpVolume) { v.destroy() }, log)
}

// newShellPool pools sandbox shells of b.
//
// Before it makes a shell ahead, the refill waits for a pause in cold
// starts (refillGap), as long as more than one shell of that size is still
// ready, and for at most refillHoldoff: making a shell takes 10–20 ms of
// CPU in nubo and in the shell, and on a small host a refill run beside a
// cold start slows that very start (measured: the echo runtime's init took
// 13 ms instead of 3 with four refills beside it).
func newShellPool(b *Backend, max int) *pool[*box] {
	return newHeldPool("sandbox shell", max, shellFloor, func(size int, urgent bool) (*box, error) {
		return b.newShell(size, false, urgent)
	}, func(s *box) { s.Destroy() }, b.log.Warn, func(p *pool[*box], size int) {
		b.starting.settle(refillGap, time.Now().Add(refillHoldoff), func() bool { return p.readyLen(size) <= 1 })
	})
}

const (
	// refillGap is the pause in cold starts that refills wait for;
	// refillHoldoff bounds the wait (it holds up every refill).
	refillGap     = 20 * time.Millisecond
	refillHoldoff = 250 * time.Millisecond
)

// readyLen is how many items of size are ready.
func (p *pool[T]) readyLen(size int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[size])
}

// quiet counts work in progress and lets others wait for a pause in it.
type quiet struct {
	mu   sync.Mutex
	n    int
	last time.Time     // of the last enter or leave
	none chan struct{} // closed while n == 0; nil before first use
}

func (q *quiet) enter() {
	q.mu.Lock()
	if q.n == 0 {
		q.none = make(chan struct{})
	}
	q.n++
	q.last = time.Now()
	q.mu.Unlock()
}

func (q *quiet) leave() {
	q.mu.Lock()
	q.n--
	if q.n == 0 {
		close(q.none)
	}
	q.last = time.Now()
	q.mu.Unlock()
}

// settle returns once nothing has been in progress for gap, at deadline,
// or when stop, checked every few milliseconds, reports true.
func (q *quiet) settle(gap time.Duration, deadline time.Time, stop func() bool) {
	const poll = 5 * time.Millisecond
	for {
		d := time.Until(deadline)
		if d <= 0 || stop() {
			return
		}
		q.mu.Lock()
		n, none, since := q.n, q.none, time.Since(q.last)
		q.mu.Unlock()
		var busy <-chan struct{}
		if n > 0 {
			busy = none
		} else if since >= gap {
			return
		} else {
			d = min(d, gap-since)
		}
		t := time.NewTimer(min(d, poll))
		select {
		case <-busy:
		case <-t.C:
		}
		t.Stop()
	}
}

// shellFloor is the spare shells kept beyond the largest recent burst. A
// cold start that leaves more than one ready does not start refills at
// once (see newShellPool), so the floor is how many cold starts of a first
// burst find a shell without refills beside them. With 2, the third of ten
// back-to-back cold starts already ran beside refills (first ten of
// nubo-bench --figures 3 --cold 30, two runs each: mean 16.0 and 18.0 ms
// with 2, 10.9 and 12.0 ms with 4). An idle shell holds about 2.5 MiB, a
// mounted /tmp volume, an address, a veth and a uid slot; the floor
// applies to every /tmp size taken within the last minute.
const shellFloor = 4
