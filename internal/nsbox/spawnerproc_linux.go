package nsbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
)

// runSpawner is the spawner's side (see spawner.go): it serves requests on
// fd 3 until nubo closes it. It runs during package initialisation, on the
// main thread, so every child is forked from the thread that lives as
// long as the process (a parent-death signal follows the thread).
func runSpawner() {
	nameThread("nubo-spawner")
	// fd 3 (the socket), fd 4 (the executable, when started from one) and
	// whatever nubo itself inherited without close-on-exec would pass on
	// to every sandbox: none may. The spawner runs from its executable's
	// mapping; that descriptor is not needed at all.
	if os.Getenv(spawnerEnv) == "exe" {
		unix.Close(4)
	}
	agent.CloseOnExecFrom(3)
	// Children are reaped as they end (nubo follows each through its
	// pidfd): no zombies, and no thread blocked in a wait per child.
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		for range chld {
			for {
				pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	f := os.NewFile(3, "spawner")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nubo spawner:", err)
		os.Exit(1)
	}
	conn := c.(*net.UnixConn)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxSpawnFDs*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			os.Exit(0) // nubo closed the socket (or is gone)
		}
		fds, err := parseRights(oob[:oobn])
		var rep spawnReply
		var pidfd int = -1
		if err != nil {
			rep.Err = err.Error()
		} else {
			rep.Pid, pidfd, err = spawnOne(buf[:n], fds)
			if err != nil {
				rep.Err = err.Error()
			}
		}
		msg, _ := json.Marshal(rep)
		var rights []byte
		if pidfd >= 0 {
			rights = unix.UnixRights(pidfd)
		}
		_, _, werr := conn.WriteMsgUnix(msg, rights, nil)
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		if werr != nil {
			os.Exit(0)
		}
	}
}

// spawnOne starts the init stage a request describes from this very
// executable, in new namespaces with the sandbox's id maps; it returns the
// child's pid and pidfd. It closes the request's descriptors.
func spawnOne(msg []byte, fds []int) (int, int, error) {
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", i))
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var req spawnRequest
	if err := json.Unmarshal(msg, &req); err != nil {
		return 0, -1, fmt.Errorf("request: %w", err)
	}
	want := 1 + req.Files
	if req.Cgroup {
		want++
	}
	if req.Files < 0 || len(fds) != want || req.IDSize <= 0 || req.IDBase <= 0 {
		return 0, -1, fmt.Errorf("request: %d descriptors for %d files, ids %d+%d", len(fds), req.Files, req.IDBase, req.IDSize)
	}
	pidfd := -1
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: req.Args, Env: req.Env, Stderr: files[0],
		ExtraFiles: files[1 : 1+req.Files]}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: req.IDBase, Size: req.IDSize}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: req.IDBase, Size: req.IDSize}},
		GidMappingsEnableSetgroups: true,
		// Become the namespace's root (host id IDBase) once the maps are
		// written: the unmapped host root would be "nobody" without
		// capabilities inside.
		Credential: &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:  syscall.SIGKILL,
		PidFD:      &pidfd,
	}
	// On cgroup v2 the child is cloned straight into its cgroup; on v1
	// nubo moves it there before it releases it.
	if req.Cgroup {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fds[len(fds)-1]
	}
	if err := cmd.Start(); err != nil {
		return 0, -1, err
	}
	if pidfd < 0 {
		// A kernel without CLONE_PIDFD (before 5.2): nubo cannot follow
		// the child safely.
		cmd.Process.Kill()
		cmd.Process.Release()
		return 0, -1, errors.New("no pidfd for the child (Linux 5.2 or later is needed)")
	}
	// os keeps a duplicate of the pidfd; this process never waits through
	// it (the SIGCHLD loop reaps).
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, pidfd, nil
}
