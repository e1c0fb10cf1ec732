package nsbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
	"github.com/nubo-dev/nubo/internal/agentproto"
)

// takeHandover takes what a new shell's keeper handed over (the Runtime
// API's listener, the output pipes) and opens the sandbox's root, where
// the supervisor looks for extensions. The keeper has written (waitAgent).
func (s *box) takeHandover() error {
	k, err := agent.ReceiveHandover(s.conn)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	s.keeper = k
	// The pid is the sandbox's as long as its process lives: checked
	// through the pidfd once the root is open (see start).
	root, err := os.OpenFile(fmt.Sprintf("/proc/%d/root", s.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil && !pidfdUnreaped(s.pidfd) {
		root.Close()
		err = errors.New("the sandbox's keeper is gone")
	}
	if err != nil {
		return fmt.Errorf("sandbox %s: its root: %w", s.id, err)
	}
	s.root = root
	return nil
}

// supervise starts the supervising half of the sandbox's agent (package
// agent's Supervise), which package env then drives through Conn. Without
// a keeper (Config.WholeAgent) the agent in the sandbox is whole.
func (s *box) supervise() {
	if s.keeper == nil {
		return
	}
	// Under confineMu, against a Destroy running meanwhile (Backend.Close):
	// it reads up, and closes what the keeper handed over when there is no
	// supervisor to.
	s.confineMu.Lock()
	defer s.confineMu.Unlock()
	if s.destroyed {
		return
	}
	host, sup := agentproto.Pipe()
	s.up, s.supervised = host, make(chan struct{})
	log := s.b.log.With("env", s.id)
	go func() {
		defer close(s.supervised)
		if err := agent.Supervise(sup, s.keeper, s.listExtensions, log); err != nil {
			log.Debug("supervisor", "err", err)
		}
		sup.Close()
	}()
}

// listExtensions lists the executables in dir as the sandbox's processes
// see them: every path is resolved inside the sandbox's root
// (RESOLVE_IN_ROOT), so a symlink in the function's layers names a file
// of the sandbox, never one of the host.
func (s *box) listExtensions(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	how := &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(int(s.root.Fd()), dir, how)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("extensions %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("extensions %s: %w", dir, err)
	}
	var out []string
	for _, name := range names {
		p := path.Join(dir, name)
		fd, err := unix.Openat2(int(s.root.Fd()), p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}
