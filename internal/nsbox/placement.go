package nsbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// placer homes sandboxes on CPUs. An environment entitled to at most one
// vCPU (MemorySize up to 1769 MB: its quota is one CPU or less) runs on
// one CPU, its home, rather than on all of them: its agent and runtime
// take turns, never run at once, and a wake-up on the CPU of the task
// that woke it costs no inter-processor interrupt; and a runtime that
// sizes itself by the CPUs it may use (the Go runtime's GOMAXPROCS, Node's
// availableParallelism, nproc) sees one, as its quota allows, and does not
// wake idle threads to look for work at every step. On a 2-core host a
// warm aws-lambda-go runtime then made 4–6 context switches per
// invocation at concurrency 4 instead of 11 (docs/performance.md,
// session 14).
//
// A home must not become a bottleneck while another CPU idles, which a
// fixed assignment cannot promise: the worker pool hands an invocation to
// the environment that went idle last, so the busy ones can be homed
// together. The placer therefore counts, per CPU, the environments in an
// invocation (busy) and homed there (homed). A new sandbox gets the CPU
// with the fewest busy, then fewest homed; an environment starting an
// invocation moves to the least busy CPU when its home has more busy
// environments than that one, but not twice within moveInterval: under
// steady load the counts change with every invocation, and an environment
// that followed each change would move at one invocation in ten (seen at
// concurrency 4), each move costing the host a system call per thread.
// Busy counts cannot tell a function that computes from one that waits,
// so an invocation that runs longer than widenAfter (counted from the end
// of init for a cold start) may use every CPU from then on; the next one
// starts at home again. That costs the host two walks of the sandbox's
// threads per long invocation, whether it computed or waited.
//
// A sandbox gets its home when it is made, before its function is known;
// one whose function is entitled to more than one vCPU is let onto every
// CPU when it gets the function (assign), before its runtime starts.
//
// The CPU numbers are indices into cpus, the CPUs nubo may run on.
type placer struct {
	cpus []int

	mu    sync.Mutex
	busy  []int
	homed []int
}

// newPlacer returns a placer over cpus, or nil when there is nothing to
// choose (fewer than two).
func newPlacer(cpus []int) *placer {
	if len(cpus) < 2 {
		return nil
	}
	return &placer{cpus: cpus, busy: make([]int, len(cpus)), homed: make([]int, len(cpus))}
}

// home homes a new sandbox and returns its CPU's index.
func (p *placer) home() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	best := 0
	for i := range p.cpus {
		if p.busy[i] < p.busy[best] || p.busy[i] == p.busy[best] && p.homed[i] < p.homed[best] {
			best = i
		}
	}
	p.homed[best]++
	return best
}

// leave forgets a sandbox homed at i (destroyed, or widened to every CPU).
func (p *placer) leave(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.homed[i]--
}

// moveInterval is the shortest time between two moves of a sandbox.
const moveInterval = time.Second

// begin counts an invocation of the environment homed at i and returns
// the home it should run it at: i, or, if it may move, a less busy CPU.
func (p *placer) begin(i int, mayMove bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	to := i
	for j := range p.cpus {
		if mayMove && p.busy[j] < p.busy[to] {
			to = j
		}
	}
	if to != i {
		p.homed[i]--
		p.homed[to]++
	}
	p.busy[to]++
	return to
}

// end counts the end of an invocation begun at home i.
func (p *placer) end(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy[i]--
}

// AllowedCPUs lists the CPUs the calling thread may run on (nubo's own
// affinity, which a cpuset or taskset may narrow); nil if it cannot tell.
func AllowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// widenAfter is how long an invocation runs at its home alone: one that
// runs longer may use every CPU until it ends (see widenLong).
const widenAfter = 50 * time.Millisecond

// InvocationStarted implements sandbox.Placed: the environment starts an
// invocation, at its home or at a less busy CPU it moves to first.
func (s *box) InvocationStarted() {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if s.home < 0 {
		return
	}
	now := time.Now()
	to := s.b.placer.begin(s.home, now.Sub(s.movedAt) >= moveInterval)
	s.running = to
	if to != s.home || s.wide {
		if to != s.home {
			s.home, s.movedAt = to, now
		}
		s.wide = false
		if err := s.pin([]int{s.b.placer.cpus[to]}); err != nil {
			s.b.log.Debug("moving a sandbox to its CPU", "env", s.id, "err", err)
		}
	}
	// After the pin: a timer of an earlier invocation that fired while it
	// ran must not take this one for long.
	s.startedAt = time.Now()
	if s.widen == nil {
		s.widen = time.AfterFunc(widenAfter, s.widenLong)
	} else {
		s.widen.Reset(widenAfter)
	}
}

// widenLong lets an invocation that has run for widenAfter use every CPU
// until it ends. The busy count placement goes by cannot tell a function
// that computes from one that waits: two that compute could otherwise
// share their home for as long as they run while another CPU idles. The
// next invocation starts at home again.
func (s *box) widenLong() {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if s.home < 0 || s.running < 0 || s.wide || time.Since(s.startedAt) < widenAfter {
		return // over, or a later invocation's timer
	}
	s.wide = true
	if err := s.pin(s.b.placer.cpus); err != nil {
		s.b.log.Debug("widening a long invocation to every CPU", "env", s.id, "err", err)
	}
}

// InvocationEnded implements sandbox.Placed. It counts the end even when
// the sandbox was destroyed meanwhile.
func (s *box) InvocationEnded() {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if s.widen != nil {
		s.widen.Stop()
	}
	if s.running >= 0 {
		s.b.placer.end(s.running)
		s.running = -1
	}
}

// unplace lets the sandbox run on every CPU nubo may use: its function is
// entitled to more than one vCPU. The agent has not started the runtime
// yet, which inherits the agent's affinity.
func (s *box) unplace() {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if s.home < 0 {
		return
	}
	s.b.placer.leave(s.home)
	s.home = -1
	if err := s.pin(s.b.placer.cpus); err != nil {
		s.b.log.Warn("widening a sandbox to every CPU", "env", s.id, "err", err)
	}
}

// pin sets the affinity of every thread of every process in the sandbox
// to cpus. A thread cloned while the threads are listed may have copied
// the old affinity, so they are listed again until no new one shows up
// (three times at most: a process cloning without end keeps some threads
// where they were, which only runs them where they ran before).
func (s *box) pin(cpus []int) error {
	if s.pidfd == nil || !pidfdUnreaped(s.pidfd) {
		return errors.New("the sandbox's agent is gone") // its pid may name another process now
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	var errs []error
	seen := map[int]bool{}
	for range 3 {
		fresh := 0
		for _, tid := range treeThreads(s.pid) {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			fresh++
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			}
		}
		if fresh == 0 {
			break
		}
	}
	return errors.Join(errs...)
}

// treeThreads lists the threads of pid and of all its descendants.
func treeThreads(pid int) []int {
	var tids []int
	procs := []int{pid}
	for len(procs) > 0 {
		p := procs[len(procs)-1]
		procs = procs[:len(procs)-1]
		ts, kids, err := threadsOf(p)
		if err != nil {
			continue // gone meanwhile
		}
		tids = append(tids, ts...)
		procs = append(procs, kids...)
	}
	return tids
}

// threadsOf lists pid's threads and its children. Children are listed
// per thread that forked them, and a process may fork from any thread.
func threadsOf(pid int) (tids, kids []int, err error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, t := range ents {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		tids = append(tids, tid)
		b, err := os.ReadFile(dir + t.Name() + "/children")
		if err != nil {
			continue // a thread that ended meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return tids, kids, nil
}
