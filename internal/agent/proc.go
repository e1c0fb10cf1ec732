package agent

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// proc is a child process of the agent (the runtime or an extension).
type proc struct {
	name string
	pid  int
	done chan struct{}
	// reason is "exit status N" or "signal: killed", set before done closes.
	reason string
	// reported is closed once the agent has told the Runtime API that the
	// process exited (runtime only).
	reported chan struct{}
	// kill signals the process's group: directly, or through the keeper.
	kill func(syscall.Signal)
}

// reaper collects exit statuses. As PID 1 of a pid namespace the agent
// inherits every orphan and must reap them all, so it waits for any child
// (wait4(-1)) and routes statuses to the procs it started; outside a pid
// namespace it waits for its own children only.
//
// A status is routed under mu, and start holds mu from before the fork
// until the new proc is registered: a child that exits at once is reaped
// (reapLoop), but its status waits for the registration. Any other
// status (an orphan's, or a child whose exec failed) has no proc and is
// dropped: kept, it would grow the agent for every orphan a function
// leaves, and pass for a later child's exit once the pid comes round
// again. One window is left: an orphan's status reaped just before start
// takes mu is routed after it, and would go to the new child if that
// child got the orphan's pid, which takes the pid numbers wrapping round
// at that very moment.
type reaper struct {
	mu      sync.Mutex
	byPid   map[int]*proc
	initPid bool
	// forked wakes reapLoop, asleep for want of children, after a fork.
	forked chan struct{}
}

func newReaper() *reaper {
	r := &reaper{byPid: map[int]*proc{}, initPid: os.Getpid() == 1, forked: make(chan struct{}, 1)}
	if r.initPid {
		go r.reapLoop()
	}
	return r
}

// reapLoop reaps every child as it ends, asleep in wait4 in between. That
// keeps one thread; os/signal, to be told of SIGCHLD instead, starts three
// (one to take over from its receiver, which blocks in the runtime; the
// runtime's template thread, which its LockOSThread starts; one to take
// over from the thread it locks), each a clone and fresh stacks that every
// sandbox's agent paid for at its start (docs/performance.md, "Where it
// stands (session 18)"). With no child at all wait4 fails at once
// (ECHILD), so the loop waits for the next fork then: no orphan can come
// without one, as every process in the sandbox descends from a child the
// agent started.
func (r *reaper) reapLoop() {
	for r.reapNext(nil) {
	}
}

// reapNext reaps one child, or waits for the next fork if there is none.
// It returns false if stop is closed while it waits.
func (r *reaper) reapNext(stop <-chan struct{}) bool {
	var ws syscall.WaitStatus
	pid, err := syscall.Wait4(-1, &ws, 0, nil)
	switch {
	case err == nil && pid > 0:
		r.route(pid, ws)
	case err == syscall.EINTR:
	default: // ECHILD
		select {
		case <-r.forked:
		case <-stop:
			return false
		}
	}
	return true
}

// register makes p wait for the status reapNext routes to it. mu is held,
// and has been since before p's fork (see reaper).
func (r *reaper) register(p *proc) {
	r.byPid[p.pid] = p
}

// route hands a reaped status to the proc it belongs to, if any.
func (r *reaper) route(pid int, ws syscall.WaitStatus) {
	r.mu.Lock()
	p, ok := r.byPid[pid]
	delete(r.byPid, pid)
	r.mu.Unlock()
	if ok {
		p.exited(ws)
	}
}

func (p *proc) exited(ws syscall.WaitStatus) { p.ended(exitReason(ws)) }

// ended records why p ended and says it did.
func (p *proc) ended(reason string) {
	p.reason = reason
	close(p.done)
}

// exitReason words a wait status as Go's os.ProcessState does, which is
// what AWS shows in Runtime.ExitError messages ("signal: killed").
func exitReason(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

type procSpec struct {
	name   string
	argv   []string
	env    []string
	dir    string
	uid    int
	gid    int
	stdout *os.File
	stderr *os.File
}

// start launches a child in its own process group so a kill reaches every
// process it forked.
func (r *reaper) start(s procSpec) (*proc, error) {
	attr := &os.ProcAttr{
		Dir:   s.dir,
		Env:   s.env,
		Files: []*os.File{nil, s.stdout, s.stderr},
		Sys: &syscall.SysProcAttr{
			Setpgid: true,
			// Outside a pid namespace the runtime must not outlive a crashed
			// agent. The signal follows the forking thread, not the process:
			// the agent's threads last as long as it does (no goroutine of it
			// exits locked to its thread, which would end the thread).
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if s.uid != 0 || s.gid != 0 {
		attr.Sys.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid), NoSetGroups: false, Groups: []uint32{}}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	attr.Files[0] = devnull
	r.mu.Lock()
	defer r.mu.Unlock()
	osp, err := os.StartProcess(s.argv[0], s.argv, attr)
	select {
	case r.forked <- struct{}{}:
	default:
	}
	if err != nil {
		return nil, err
	}
	p := &proc{name: s.name, pid: osp.Pid, done: make(chan struct{})}
	p.kill = func(sig syscall.Signal) {
		_ = syscall.Kill(-p.pid, sig)
		_ = syscall.Kill(p.pid, sig)
	}
	if r.initPid {
		r.register(p)
		osp.Release()
	} else {
		go func() {
			st, err := osp.Wait()
			if err != nil {
				p.reason = err.Error()
				close(p.done)
				return
			}
			p.exited(st.Sys().(syscall.WaitStatus))
		}()
	}
	return p, nil
}

// warm runs the start of a process once, before the agent has a function:
// the fork, the child's set-up and Go's one-time checks (pidfd support)
// and the first touch of their code. Otherwise a cold start pays for all
// of it on its runtime's start, the agent's first (measured: 0.26 → 0.15
// ms for the first start of a new process; docs/performance.md, session
// 7). "/" is a directory: its exec fails, and no process is left (Go
// reaps a child whose exec failed).
func (r *reaper) warm() error {
	_, err := r.start(procSpec{name: "warm-up", argv: []string{"/"}, dir: "/"})
	if err == nil {
		return errors.New("agent: the exec of / succeeded")
	}
	if errors.Is(err, syscall.EACCES) {
		return nil
	}
	return err
}

// signal sends sig to the process group of p.
func (p *proc) signal(sig syscall.Signal) { p.kill(sig) }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
