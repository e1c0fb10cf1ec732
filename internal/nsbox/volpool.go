package nsbox

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// volPool keeps /tmp volumes made ahead of demand, one queue per size, so
// a cold start does not wait for mkfs and a loop device (tens of
// milliseconds). A volume is handed over only once; the pool refills in the
// background. How many are kept per size follows demand: the number taken
// in the last minute, at least one for the default size, at most max.
type volPool struct {
	dir string
	max int

	mu      sync.Mutex
	ready   map[int][]*tmpVolume
	taken   map[int][]time.Time // recent takes per size, for sizing
	filling map[int]int
	seq     int
	closed  bool
	wg      sync.WaitGroup
	kick    chan struct{}
}

// defaultTmpMB is Lambda's default EphemeralStorage.
const defaultTmpMB = 512

func newVolPool(dir string, max int) *volPool {
	p := &volPool{dir: dir, max: max, ready: map[int][]*tmpVolume{}, taken: map[int][]time.Time{},
		filling: map[int]int{}, kick: make(chan struct{}, 1)}
	p.taken[defaultTmpMB] = nil
	p.wg.Add(1)
	go p.refill()
	p.poke()
	return p
}

func (p *volPool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// take returns a ready volume of sizeMB, or nil when none is ready.
func (p *volPool) take(sizeMB int) *tmpVolume {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.taken[sizeMB] = append(p.taken[sizeMB], time.Now())
	defer p.poke()
	q := p.ready[sizeMB]
	if len(q) == 0 {
		return nil
	}
	v := q[len(q)-1]
	p.ready[sizeMB] = q[:len(q)-1]
	return v
}

// want is how many ready volumes of size to keep.
func (p *volPool) wantLocked(size int) int {
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

func (p *volPool) refill() {
	defer p.wg.Done()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
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
			p.seq++
			dir := filepath.Join(p.dir, fmt.Sprintf("vol-%d", p.seq))
			p.mu.Unlock()
			v, err := p.make(dir, size)
			p.mu.Lock()
			p.filling[size]--
			if err == nil {
				if p.closed {
					v.destroy()
					os.RemoveAll(dir)
				} else {
					p.ready[size] = append(p.ready[size], v)
				}
			}
			p.mu.Unlock()
			if err != nil {
				break // try again at the next tick
			}
		}
	}
}

func (p *volPool) make(dir string, size int) (*tmpVolume, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	v, err := newTmpVolume(dir, size, 0, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	v.dir = dir
	return v, nil
}

// close stops refilling and destroys every ready volume.
func (p *volPool) close() {
	p.mu.Lock()
	p.closed = true
	ready := p.ready
	p.ready = map[int][]*tmpVolume{}
	p.mu.Unlock()
	p.poke()
	p.wg.Wait()
	for _, q := range ready {
		for _, v := range q {
			v.destroy()
			os.RemoveAll(v.dir)
		}
	}
}
