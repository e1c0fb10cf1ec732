package agent

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// proc is a child process of the agent (the runtime or an extension).
type proc struct {
	name string
	pid  int
	done chan struct{}
	// reason is "exit status N" or "signal: killed", set before done closes.
	reason string
	status syscall.WaitStatus
	// reported is closed once the agent has told the Runtime API that the
	// process exited (runtime only).
	reported chan struct{}
}

// reaper collects exit statuses. As PID 1 of a pid namespace the agent
// inherits every orphan and must reap them all, so it waits for any child
// (wait4(-1)) and routes statuses to the procs it started; outside a pid
// namespace it waits for its own children only.
type reaper struct {
	mu      sync.Mutex
	byPid   map[int]*proc
	early   map[int]syscall.WaitStatus // reaped before registration
	initPid bool
}

func newReaper() *reaper {
	r := &reaper{byPid: map[int]*proc{}, early: map[int]syscall.WaitStatus{}, initPid: os.Getpid() == 1}
	if r.initPid {
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, unix.SIGCHLD)
		go func() {
			for range ch {
				r.reapAll()
			}
		}()
	}
	return r
}

func (r *reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		p, ok := r.byPid[pid]
		if ok {
			delete(r.byPid, pid)
		} else {
			r.early[pid] = ws
		}
		r.mu.Unlock()
		if ok {
			p.exited(ws)
		}
	}
}

func (p *proc) exited(ws syscall.WaitStatus) {
	p.status = ws
	if ws.Signaled() {
		// Worded like Go's os.ProcessState, which is what AWS shows in
		// Runtime.ExitError messages ("signal: killed").
		p.reason = "signal: " + ws.Signal().String()
	} else {
		p.reason = fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	close(p.done)
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
	if err != nil {
		return nil, err
	}
	p := &proc{name: s.name, pid: osp.Pid, done: make(chan struct{})}
	if r.initPid {
		if ws, ok := r.early[p.pid]; ok {
			delete(r.early, p.pid)
			go p.exited(ws)
		} else {
			r.byPid[p.pid] = p
		}
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

// signal sends sig to the process group of p.
func (p *proc) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
	_ = syscall.Kill(p.pid, sig)
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
