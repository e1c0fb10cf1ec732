package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
)

// FakeManager is an in-memory Manager for the tests of packages that use
// cgroups. It validates names and Resources like the real managers, records
// every call, and never touches the kernel: Kill forgets the pids it was
// given, it does not signal them.
type FakeManager struct {
	mu      sync.Mutex
	groups  map[string]*FakeCgroup
	order   []string
	cleaned int
	closed  bool
	// CreateErr, when set, is returned by Create.
	CreateErr error
}

// NewFake returns an empty FakeManager.
func NewFake() *FakeManager { return &FakeManager{groups: map[string]*FakeCgroup{}} }

// Version reports 2.
func (m *FakeManager) Version() int { return 2 }

// Create records a new FakeCgroup whose first Set is r.
func (m *FakeManager) Create(name string, r Resources) (Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.CreateErr != nil {
		return nil, m.CreateErr
	}
	if m.closed {
		return nil, errors.New("cgroup: manager closed")
	}
	if g, dup := m.groups[name]; dup && !g.Deleted() {
		return nil, fmt.Errorf("cgroup: environment %q: %w", name, fs.ErrExist)
	}
	g := &FakeCgroup{name: name, fail: map[string]error{}}
	g.sets = []Resources{r}
	g.calls = []string{fmt.Sprintf("Create %+v", r)}
	m.groups[name] = g
	m.order = append(m.order, name)
	return g, nil
}

// CleanupStale counts its calls.
func (m *FakeManager) CleanupStale() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleaned++
	return nil
}

// Close kills and deletes every cgroup not yet deleted.
func (m *FakeManager) Close() error {
	m.mu.Lock()
	m.closed = true
	gs := make([]*FakeCgroup, 0, len(m.groups))
	for _, g := range m.groups {
		gs = append(gs, g)
	}
	m.mu.Unlock()
	for _, g := range gs {
		if !g.Deleted() {
			_ = g.Kill()
			_ = g.Delete()
		}
	}
	return nil
}

// Get returns the cgroup created last under name, or nil.
func (m *FakeManager) Get(name string) *FakeCgroup {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.groups[name]
}

// Names lists the names passed to Create, in order.
func (m *FakeManager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.order)
}

// Cleaned reports how often CleanupStale ran; Closed whether Close ran.
func (m *FakeManager) Cleaned() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cleaned
}

// Closed reports whether Close ran.
func (m *FakeManager) Closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// FakeCgroup is the Cgroup of a FakeManager.
type FakeCgroup struct {
	mu      sync.Mutex
	name    string
	sets    []Resources
	calls   []string
	procs   []int
	frozen  bool
	killed  bool
	deleted bool
	stats   Stats
	fail    map[string]error
}

// FailOn makes the method named method ("AddProc", "Set", "Freeze", "Thaw",
// "Stats", "ResetPeak", "Kill", "Delete") return err from now on; nil clears.
func (g *FakeCgroup) FailOn(method string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		delete(g.fail, method)
		return
	}
	g.fail[method] = err
}

// record logs a call and returns the injected failure, if any; g.mu held.
func (g *FakeCgroup) record(call, method string) error {
	g.calls = append(g.calls, call)
	if g.deleted && method != "Delete" {
		return fmt.Errorf("cgroup: %s: %w", g.name, fs.ErrNotExist)
	}
	return g.fail[method]
}

// Calls returns the log of calls, e.g. "Create {...}", "Set {...}",
// "Freeze", "Thaw", "AddProc 42".
func (g *FakeCgroup) Calls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// Resources returns the limits last applied; History every one in order.
func (g *FakeCgroup) Resources() Resources {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sets[len(g.sets)-1]
}

// History returns every Resources applied, Create's first.
func (g *FakeCgroup) History() []Resources {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sets)
}

// Frozen, Killed and Deleted report the fake's state.
func (g *FakeCgroup) Frozen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.frozen
}

// Killed reports whether Kill succeeded at least once.
func (g *FakeCgroup) Killed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.killed
}

// Deleted reports whether Delete succeeded.
func (g *FakeCgroup) Deleted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deleted
}

// SetStats sets what Stats returns (Pids is overridden by the recorded
// procs when any were added).
func (g *FakeCgroup) SetStats(s Stats) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stats = s
}

func (g *FakeCgroup) Name() string { return g.name }

func (g *FakeCgroup) Paths() map[string]string { return map[string]string{"": "/fake/" + g.name} }

func (g *FakeCgroup) AddProc(pid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record(fmt.Sprintf("AddProc %d", pid), "AddProc"); err != nil {
		return err
	}
	if !slices.Contains(g.procs, pid) {
		g.procs = append(g.procs, pid)
	}
	return nil
}

func (g *FakeCgroup) OpenDir() (*os.File, error) {
	return nil, fmt.Errorf("cgroup: fake has no directory: %w", errors.ErrUnsupported)
}

func (g *FakeCgroup) Set(r Resources) error {
	if err := r.validate(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record(fmt.Sprintf("Set %+v", r), "Set"); err != nil {
		return err
	}
	g.sets = append(g.sets, r)
	return nil
}

func (g *FakeCgroup) Freeze() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("Freeze", "Freeze"); err != nil {
		return err
	}
	g.frozen = true
	return nil
}

func (g *FakeCgroup) Thaw() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("Thaw", "Thaw"); err != nil {
		return err
	}
	g.frozen = false
	return nil
}

func (g *FakeCgroup) Stats() (Stats, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("Stats", "Stats"); err != nil {
		return Stats{}, err
	}
	s := g.stats
	if len(g.procs) > 0 {
		s.Pids = uint64(len(g.procs))
	}
	return s, nil
}

func (g *FakeCgroup) ResetPeak() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("ResetPeak", "ResetPeak"); err != nil {
		return err
	}
	g.stats.MemoryPeak = g.stats.MemoryCurrent
	return nil
}

func (g *FakeCgroup) Procs() ([]int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.procs)
	slices.Sort(out)
	return out, nil
}

func (g *FakeCgroup) Kill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("Kill", "Kill"); err != nil {
		return err
	}
	g.procs = nil
	g.killed = true
	return nil
}

func (g *FakeCgroup) Delete() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.record("Delete", "Delete"); err != nil {
		return err
	}
	if len(g.procs) > 0 {
		return fmt.Errorf("cgroup: delete %s: processes %v remain (Kill first)", g.name, g.procs)
	}
	g.deleted = true
	return nil
}

var (
	_ Manager = (*FakeManager)(nil)
	_ Cgroup  = (*FakeCgroup)(nil)
	_ Manager = (*v1Manager)(nil)
	_ Manager = (*v2Manager)(nil)
	_ Cgroup  = (*v1Cgroup)(nil)
	_ Cgroup  = (*v2Cgroup)(nil)
)

// Confine records the call ("Confine [pids] milli").
func (g *FakeCgroup) Confine(pids []int, cpuMilli int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.record(fmt.Sprintf("Confine %v %d", pids, cpuMilli), "Confine")
}

// MemoryPeak returns the peak of the stats set with SetStats.
func (g *FakeCgroup) MemoryPeak() (uint64, error) {
	st, err := g.Stats()
	return st.MemoryPeak, err
}

// Memory returns the peak and OOM kills of the stats set with SetStats.
func (g *FakeCgroup) Memory() (peak, oomKills uint64, err error) {
	st, err := g.Stats()
	return st.MemoryPeak, st.OOMKills, err
}
