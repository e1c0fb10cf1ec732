package nsbox

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// pool keeps things made ahead of demand — /tmp volumes, whole sandbox
// shells — one queue per /tmp size, so a cold start does not wait for them.
// Each item is handed out once; the pool refills in the background. How
// many are kept per size follows demand: the number taken in the last
// minute, at least one of the default size, at most max.
type pool[T any] struct {
	name    string
	max     int
	mk      func(size int) (T, error)
	destroy func(T)
	log     func(msg string, args ...any)

	mu      sync.Mutex
	ready   map[int][]T
	taken   map[int][]time.Time // recent takes per size, for sizing
	filling map[int]int
	closed  bool
	wg      sync.WaitGroup
	kick    chan struct{}
}

// defaultTmpMB is Lambda's default EphemeralStorage.
const defaultTmpMB = 512

func newPool[T any](name string, max int, mk func(int) (T, error), destroy func(T), log func(string, ...any)) *pool[T] {
	p := &pool[T]{name: name, max: max, mk: mk, destroy: destroy, log: log, ready: map[int][]T{},
		taken: map[int][]time.Time{defaultTmpMB: nil}, filling: map[int]int{}, kick: make(chan struct{}, 1)}
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
	p.taken[size] = append(p.taken[size], time.Now())
	defer p.poke()
	q := p.ready[size]
	if len(q) == 0 {
		return item, false
	}
	item = q[len(q)-1]
	p.ready[size] = q[:len(q)-1]
	return item, true
}

// wantLocked is how many ready items of size to keep.
func (p *pool[T]) wantLocked(size int) int {
	cut := time.Now().Add(-time.Minute)
	recent := p.taken[size][:0]
	for _, t := range p.taken[size] {
		if t.After(cut) {
			recent = append(recent, t)
		}
	}
	p.taken[size] = recent
	n := len(recent)
	if size == defaultTmpMB {
		n = max(n, 1)
	}
	return min(n, p.max)
}

// refillers bounds how many items are made at once. Sandbox shells
// overlap well (clone, mounts, network) except for cgroup v1 placement,
// which the kernel serialises.
const refillers = 4

func (p *pool[T]) refill() {
	defer p.wg.Done()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	sem := make(chan struct{}, refillers)
	var makers sync.WaitGroup
	defer makers.Wait()
	for {
		select {
		case <-p.kick:
		case <-tick.C:
		}
		for {
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return
			}
			size := -1
			for s := range p.taken {
				if len(p.ready[s])+p.filling[s] < p.wantLocked(s) {
					size = s
					break
				}
			}
			if size < 0 {
				p.mu.Unlock()
				break
			}
			p.filling[size]++
			p.mu.Unlock()
			sem <- struct{}{}
			makers.Add(1)
			go func() {
				defer makers.Done()
				defer func() { <-sem }()
				item, err := p.mk(size)
				p.mu.Lock()
				p.filling[size]--
				closed := p.closed
				if err == nil && !closed {
					p.ready[size] = append(p.ready[size], item)
				}
				p.mu.Unlock()
				if err == nil && closed {
					p.destroy(item)
				}
				if err != nil {
					p.log("making a pooled "+p.name+" failed; retrying later", "err", err)
				}
			}()
		}
	}
}

// close stops refilling and destroys every ready item.
func (p *pool[T]) close() {
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = map[int][]T{}
	p.mu.Unlock()
	p.poke()
	p.wg.Wait()
	for _, q := range ready {
		for _, it := range q {
			p.destroy(it)
		}
	}
}

// newVolPool pools /tmp volumes under dir.
func newVolPool(dir string, max int, log func(string, ...any)) *pool[*tmpVolume] {
	var mu sync.Mutex
	seq := 0
	return newPool("tmp volume", max, func(size int) (*tmpVolume, error) {
		mu.Lock()
		seq++
		d := filepath.Join(dir, fmt.Sprintf("vol-%d", seq))
		mu.Unlock()
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		v, err := newTmpVolume(d, size, 0, 0)
		if err != nil {
			os.RemoveAll(d)
			return nil, err
		}
		v.dir = d
		return v, nil
	}, func(v *tmpVolume) { v.destroy() }, log)
}

// newShellPool pools sandbox shells of b.
func newShellPool(b *Backend, max int) *pool[*box] {
	return newPool("sandbox shell", max, func(size int) (*box, error) { return b.newShell(size, false) },
		func(s *box) { s.Destroy() }, b.log.Warn)
}
