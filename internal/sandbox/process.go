package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Process is the development backend: each environment is a plain child
// process of nubo, with no isolation at all. It exists so nubo runs where
// namespaces are unavailable; never use it for code you do not trust.
type Process struct {
	// Dir holds per-environment scratch directories.
	Dir string
	Log *slog.Logger

	mu   sync.Mutex
	live map[*procSandbox]struct{}
}

// NewProcess returns the development backend.
func NewProcess(dir string, log *slog.Logger) (*Process, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Process{Dir: dir, Log: log, live: map[*procSandbox]struct{}{}}, nil
}

// Name implements Backend.
func (p *Process) Name() string { return "process" }

// SeesHostCode implements HostCode: a process runs in the host's code
// directories.
func (p *Process) SeesHostCode() bool { return true }

type procSandbox struct {
	id    string
	b     *Process
	cmd   *exec.Cmd
	conn  *os.File
	paths Paths
	dir   string
	done  chan struct{}
	once  sync.Once
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before the agent binds it; acceptable for development.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Create implements Backend.
func (p *Process) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	dir := filepath.Join(p.Dir, spec.ID)
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	host := os.NewFile(uintptr(fds[0]), "agent-host")
	child := os.NewFile(uintptr(fds[1]), "agent-child")
	defer child.Close()
	self, err := os.Executable()
	if err != nil {
		host.Close()
		return nil, err
	}
	cmd := exec.Command(self, "agent")
	cmd.Env = []string{AgentEnv + "=" + AgentInInit, "PATH=" + os.Getenv("PATH")}
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		host.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	s := &procSandbox{id: spec.ID, b: p, cmd: cmd, conn: host, dir: dir, done: make(chan struct{}),
		paths: Paths{TaskRoot: spec.CodeDir, OptDir: spec.LayersDir, RuntimeDir: spec.RuntimeDir, TmpDir: tmp,
			RuntimeAPI: "127.0.0.1:" + strconv.Itoa(port), HostTaskRoot: spec.CodeDir, HostOptDir: spec.LayersDir}}
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	p.mu.Lock()
	p.live[s] = struct{}{}
	p.mu.Unlock()
	return s, nil
}

// Close implements Backend.
func (p *Process) Close() error {
	p.mu.Lock()
	live := make([]*procSandbox, 0, len(p.live))
	for s := range p.live {
		live = append(live, s)
	}
	p.mu.Unlock()
	for _, s := range live {
		s.Destroy()
	}
	return nil
}

func (s *procSandbox) ID() string               { return s.id }
func (s *procSandbox) Conn() io.ReadWriteCloser { return s.conn }
func (s *procSandbox) Paths() Paths             { return s.paths }
func (s *procSandbox) Done() <-chan struct{}    { return s.done }
func (s *procSandbox) AfterInit() error         { return nil }

// Freeze and Thaw are no-ops: without a cgroup there is nothing that stops
// a process group reliably without also stopping the agent.
func (s *procSandbox) Freeze() error { return nil }
func (s *procSandbox) Thaw() error   { return nil }

// Stats reports the largest peak RSS among the agent's descendants.
func (s *procSandbox) Stats() (Stats, error) {
	var peak uint64
	for _, pid := range descendants(s.cmd.Process.Pid) {
		if v := vmHWM(pid); v > peak {
			peak = v
		}
	}
	return Stats{MemoryPeak: peak}, nil
}

func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", out[i], out[i]))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func vmHWM(pid int) uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Destroy implements Sandbox.
func (s *procSandbox) Destroy() error {
	s.once.Do(func() {
		// The agent's process group holds the agent; the runtime and
		// extensions have groups of their own, so kill every descendant.
		for _, pid := range descendants(s.cmd.Process.Pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		s.conn.Close()
		<-s.done
		os.RemoveAll(s.dir)
		s.b.mu.Lock()
		delete(s.b.live, s)
		s.b.mu.Unlock()
	})
	return nil
}
