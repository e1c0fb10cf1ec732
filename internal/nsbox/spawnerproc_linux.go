package nsbox

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
)

// runSpawner is the spawner's side (see spawner.go): it serves requests on
// fd 3 until nubo closes it. It runs during package initialisation, on the
// main thread, so every child is forked from the thread that lives as
// long as the process (a parent-death signal follows the thread).
//
// After its first request the spawner's root is its template
// (buildTemplate): a path of the host ("/proc/self/...", "/dev/...") no
// longer reaches the host. What it needs of the host is opened before
// (its executable, /dev/null, the host's /proc).
func runSpawner() {
	nameThread("nubo-spawner")
	// fd 3 (the socket), fd 4 (the executable, when started from one) and
	// whatever nubo itself inherited without close-on-exec would pass on
	// to every sandbox: none may. The spawner runs from its executable's
	// mapping, and sandboxes exec it through /proc/self/exe (opened below):
	// that descriptor is not needed at all.
	if os.Getenv(spawnerEnv) == "exe" {
		unix.Close(4)
	}
	agent.CloseOnExecFrom(3)
	var err error
	if spawnerExe, err = unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		spawnerDevNull, err = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nubo spawner:", err)
		os.Exit(1)
	}
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
		if template.err != nil {
			// Nothing may be cloned from a template half built: the
			// next request starts a new spawner, in a new namespace.
			fmt.Fprintln(os.Stderr, "nubo spawner:", template.err)
			os.Exit(1)
		}
	}
}

// spawnOne starts the sandbox a request describes: a child cloned in new
// user, mount, pid, net, uts and ipc namespaces with the sandbox's id maps,
// which replays the sandbox's init (buildInit) and execs the agent. It
// returns the child's pid and pidfd, and closes the request's descriptors
// (the child has its own copies).
func spawnOne(msg []byte, fds []int) (int, int, error) {
	defer closeAll(fds)
	var req spawnRequest
	if err := json.Unmarshal(msg, &req); err != nil {
		return 0, -1, fmt.Errorf("request: %w", err)
	}
	want := 1 + req.Files
	if req.Cgroup {
		want++
	}
	if req.Init == nil || req.Files < 2 || len(fds) != want || req.IDSize <= 0 || req.IDBase <= 0 || len(req.Args) == 0 {
		return 0, -1, fmt.Errorf("request: %d descriptors for %d files, ids %d+%d", len(fds), req.Files, req.IDBase, req.IDSize)
	}
	var sync [2]int
	if err := unix.Pipe2(sync[:], unix.O_CLOEXEC); err != nil {
		return 0, -1, err
	}
	defer unix.Close(sync[0])
	defer unix.Close(sync[1])
	if err := ensureTemplate(req.Init); err != nil {
		return 0, -1, err
	}
	in := initFDs{stderr: fds[0], conn: fds[1], release: fds[2], trees: map[int]int{},
		exe: spawnerExe, devNull: spawnerDevNull, syncR: sync[0], syncW: sync[1]}
	for i := 2; i < req.Files; i++ {
		in.trees[i] = fds[1+i]
	}
	p, err := buildInit(req.Init, in, req.Args, req.Env)
	if err != nil {
		return 0, -1, err
	}
	cg := -1
	if req.Cgroup {
		cg = fds[len(fds)-1]
	}
	pid, pidfd, err := forkInit(p, unix.CLONE_NEWUSER|unix.CLONE_NEWNS|unix.CLONE_NEWPID|
		unix.CLONE_NEWNET|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC, cg)
	if err != nil {
		return 0, -1, err
	}
	ids := []byte(fmt.Sprintf("0 %d %d\n", req.IDBase, req.IDSize))
	for _, f := range []string{"uid_map", "gid_map"} {
		if err == nil {
			err = writeAt(template.proc, fmt.Sprintf("%d/%s", pid, f), ids)
		}
	}
	if err == nil {
		_, err = unix.Write(sync[1], []byte{1})
	}
	if err != nil {
		// Not released: it dies, and the SIGCHLD loop reaps it.
		unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		unix.Close(pidfd)
		return 0, -1, fmt.Errorf("id maps: %w", err)
	}
	return pid, pidfd, nil
}

// The spawner's executable (the agent's, exec'd by every sandbox's init)
// and /dev/null (the agent's stdin and stdout), opened once.
var spawnerExe, spawnerDevNull = -1, -1

// writeAt writes b to the existing file name relative to the directory
// dir.
func writeAt(dir int, name string, b []byte) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	if n, err := unix.Write(fd, b); err != nil || n != len(b) {
		return &os.PathError{Op: "write", Path: name, Err: fmt.Errorf("%d of %d bytes: %v", n, len(b), err)}
	}
	return nil
}
