package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agentproto"
	"github.com/nubo-dev/nubo/internal/rawio"
)

// A namespace sandbox's agent is split in two (see docs/performance.md,
// "Where it stands (session 22)"): inside the sandbox, as its PID 1, the
// keeper starts, signals and reaps the runtime and extensions (Keep); in
// nubo serve, the supervisor serves the Runtime API on a listener the
// keeper made in the sandbox's network namespace and handed over, reads
// the children's output from pipes handed over with it, and runs the
// phases (Supervise). An invocation then goes from nubo serve to the
// runtime and back with no process in between: two wake-ups of a process
// fewer per invocation. The keeper is on no invocation's path; it hears
// from nubo serve when a runtime starts or must die.

// handoverByte is the one byte the keeper's descriptors travel with.
const handoverByte = 'H'

// Keep runs a sandbox's keeper on fd, its connection to nubo serve, until
// nubo serve closes it; then it kills every child. It first hands over,
// with one byte on fd, a listener on the address RuntimeAPIEnv names and
// the read ends of the pipes every child writes its stdout and stderr
// to, and then says Ready.
//
// A keeper made ahead of demand warms up first (warm): the first Spawn
// comes with a cold start, and its frames' code, encoding/json's caches
// for them and a process start are then paid for while the keeper waits,
// as the whole agent warms its own (warmUp). A keeper an invocation waits
// for does not: its warm-up would come before its Ready, on that cold
// start's path, and cost more than it saves the first Spawn.
func Keep(fd int, warm bool, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := becomeAgent(); err != nil {
		return err
	}
	k := &keeper{reap: newReaper(), procs: map[int]*proc{}}
	if warm {
		if err := warmFrames(keeperFrames); err != nil {
			log.Debug("warm-up of frames", "err", err)
		}
		if err := k.reap.warm(); err != nil {
			log.Debug("warm-up of process starts", "err", err)
		}
	}
	addr := os.Getenv(RuntimeAPIEnv)
	os.Unsetenv(RuntimeAPIEnv)
	pipes, err := handOver(fd, addr)
	if err != nil {
		return fmt.Errorf("keeper: hand over: %w", err)
	}
	k.pipes = pipes
	k.conn = agentproto.NewConn(HostConn(fd, log))
	defer k.killAll()
	if err := k.conn.Send(agentproto.TReady, nil, nil); err != nil {
		return err
	}
	for {
		f, err := k.conn.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch f.Type {
		case agentproto.TSpawn:
			var sp agentproto.Spawn
			if err := f.Decode(&sp); err != nil {
				return fmt.Errorf("keeper: Spawn: %w", err)
			}
			k.spawn(&sp)
		case agentproto.TSignal:
			var sg agentproto.Signal
			if err := f.Decode(&sg); err != nil {
				return fmt.Errorf("keeper: Signal: %w", err)
			}
			k.mu.Lock()
			p := k.procs[sg.ID]
			k.mu.Unlock()
			if p != nil {
				p.signal(syscall.Signal(sg.Signal))
			}
		default:
			log.Warn("unexpected frame", "type", f.Type)
		}
	}
}

// keeper is the sandbox's half of a supervised agent.
type keeper struct {
	conn  *agentproto.Conn
	reap  *reaper
	pipes [2]*os.File // the output pipes' write ends
	mu    sync.Mutex
	procs map[int]*proc // by Spawn ID, until they end
}

// spawn starts one process and reports it; its end is reported when it
// comes, always after.
func (k *keeper) spawn(sp *agentproto.Spawn) {
	p, err := k.reap.start(procSpec{name: sp.Name, argv: sp.Argv, env: sp.Env, dir: sp.Dir,
		uid: sp.UID, gid: sp.GID, stdout: k.pipes[0], stderr: k.pipes[1]})
	if err != nil {
		_ = k.conn.Send(agentproto.TSpawned, &agentproto.Spawned{ID: sp.ID, Error: err.Error()}, nil)
		return
	}
	k.mu.Lock()
	k.procs[sp.ID] = p
	k.mu.Unlock()
	_ = k.conn.Send(agentproto.TSpawned, &agentproto.Spawned{ID: sp.ID, Pid: p.pid}, nil)
	go func() {
		<-p.done
		k.mu.Lock()
		delete(k.procs, sp.ID)
		k.mu.Unlock()
		_ = k.conn.Send(agentproto.TExited, &agentproto.Exited{ID: sp.ID, Reason: p.reason}, nil)
	}()
}

func (k *keeper) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		p.signal(syscall.SIGKILL)
	}
}

// handOver makes the Runtime API's listener on addr and the output pipes,
// sends the listener and the pipes' read ends to nubo serve over fd, and
// returns the pipes' write ends. Nothing of them stays open here but the
// write ends.
func handOver(fd int, addr string) (pipes [2]*os.File, err error) {
	ln, err := listenTCP(addr)
	if err != nil {
		return pipes, fmt.Errorf("runtime api %s: %w", addr, err)
	}
	defer unix.Close(ln)
	var p [2][2]int
	for i := range p {
		if err := unix.Pipe2(p[i][:], unix.O_CLOEXEC); err != nil {
			for j := range i {
				unix.Close(p[j][0])
				unix.Close(p[j][1])
			}
			return pipes, os.NewSyscallError("pipe2", err)
		}
	}
	err = unix.Sendmsg(fd, []byte{handoverByte}, unix.UnixRights(ln, p[0][0], p[1][0]), nil, 0)
	unix.Close(p[0][0])
	unix.Close(p[1][0])
	if err != nil {
		unix.Close(p[0][1])
		unix.Close(p[1][1])
		return pipes, os.NewSyscallError("sendmsg", err)
	}
	return [2]*os.File{os.NewFile(uintptr(p[0][1]), "stdout"), os.NewFile(uintptr(p[1][1]), "stderr")}, nil
}

// listenTCP listens on addr, an IPv4 address and port, with plain system
// calls: the keeper links none of package net's listening.
func listenTCP(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return -1, fmt.Errorf("not an IPv4 address and port: %q", addr)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(s)
		return -1, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Bind(s, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		unix.Close(s)
		return -1, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(s, unix.SOMAXCONN); err != nil {
		unix.Close(s)
		return -1, os.NewSyscallError("listen", err)
	}
	return s, nil
}

// Keeper is what nubo serve holds of a sandbox's keeper: the connection
// to it, and what it handed over (see ReceiveHandover).
type Keeper struct {
	conn *rawio.Quiet
	ln   net.Listener
	out  [2]*os.File
}

// ReceiveHandover takes the keeper's descriptors from conn, where the
// keeper has written (rawio.Quiet.WaitInput said so). conn stays the
// caller's, who closes it after the Keeper.
func ReceiveHandover(conn *rawio.Quiet) (*Keeper, error) {
	var b [1]byte
	n, fds, err := conn.ReceiveRights(b[:], 3)
	if err != nil {
		return nil, err
	}
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if n != 1 || b[0] != handoverByte || len(fds) != 3 {
		closeAll()
		return nil, fmt.Errorf("agent: no handover from the keeper (%d bytes, %d descriptors)", n, len(fds))
	}
	for _, fd := range fds {
		// In the poller: the listener's accepts and the relays' reads wait there.
		if err := unix.SetNonblock(fd, true); err != nil {
			closeAll()
			return nil, os.NewSyscallError("fcntl", err)
		}
	}
	lf := os.NewFile(uintptr(fds[0]), "runtime-api")
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		for _, fd := range fds[1:] {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("agent: the keeper's listener: %w", err)
	}
	return &Keeper{conn: conn, ln: ln,
		out: [2]*os.File{os.NewFile(uintptr(fds[1]), "stdout"), os.NewFile(uintptr(fds[2]), "stderr")}}, nil
}

// Addr is where the handed-over listener listens, in the sandbox.
func (k *Keeper) Addr() string { return k.ln.Addr().String() }

// Close closes what the keeper handed over, for a keeper never supervised
// (Supervise closes it itself).
func (k *Keeper) Close() {
	k.ln.Close()
	for _, f := range k.out {
		f.Close()
	}
}

// Supervise runs the supervising half of a sandbox's agent in nubo serve,
// over up (package env's connection; agentproto.Pipe), as Run does in an
// agent alone, with k's keeper starting the processes and listExtensions
// listing extensions as the sandbox sees them. It returns when up closes
// or after Shutdown, having closed what the keeper handed over and ended
// every goroutine it started. k's connection stays the caller's.
func Supervise(up io.ReadWriteCloser, k *Keeper, listExtensions func(dir string) ([]string, error), log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	kp := &keeperProcs{conn: agentproto.NewConn(k.conn), procs: map[int]*proc{}, waiting: map[int]chan agentproto.Spawned{}}
	go kp.read()
	// What the function's requests make the Runtime API say stays out of
	// nubo serve's log, as it stayed inside the sandbox with the whole
	// agent, unless the agent's debug log is asked for: a function must
	// not be able to flood the host's log.
	apiLog := slog.New(slog.DiscardHandler)
	if os.Getenv(DebugEnv) != "" {
		apiLog = log
	}
	a := &Agent{conn: agentproto.NewConn(up), log: log, apiLog: apiLog, procs: kp, listExtensions: listExtensions}
	a.listen = func(addr string) (net.Listener, error) {
		if addr != k.Addr() {
			return nil, fmt.Errorf("the sandbox listens on %s, not %s", k.Addr(), addr)
		}
		return k.ln, nil
	}
	var err error
	if a.out, err = newOutput(a.conn, k.out); err != nil {
		k.Close()
		return err
	}
	defer func() {
		a.cancelIdle()
		a.killAll()
		k.ln.Close() // ends the Runtime API's Serve and its connections
		a.out.close()
	}()
	if err := a.conn.Send(agentproto.TReady, nil, nil); err != nil {
		return err
	}
	return a.serve()
}

// keeperProcs starts processes through a keeper: the supervisor's
// procHost in nubo serve.
type keeperProcs struct {
	conn    *agentproto.Conn
	mu      sync.Mutex
	next    int
	procs   map[int]*proc                   // by Spawn ID, until they end
	waiting map[int]chan agentproto.Spawned // Spawns not answered yet
	gone    bool                            // the keeper's connection ended
}

// errKeeperGone is a spawn's error once the keeper is gone.
var errKeeperGone = errors.New("the sandbox's keeper is gone")

func (kp *keeperProcs) spawn(name string, argv, env []string, dir string, uid, gid int) (*proc, error) {
	kp.mu.Lock()
	if kp.gone {
		kp.mu.Unlock()
		return nil, errKeeperGone
	}
	kp.next++
	id := kp.next
	reply := make(chan agentproto.Spawned, 1)
	kp.waiting[id] = reply
	p := &proc{name: name, done: make(chan struct{})}
	kp.procs[id] = p
	kp.mu.Unlock()
	p.kill = func(sig syscall.Signal) {
		_ = kp.conn.Send(agentproto.TSignal, &agentproto.Signal{ID: id, Signal: int(sig)}, nil)
	}
	if err := kp.conn.Send(agentproto.TSpawn, &agentproto.Spawn{ID: id, Name: name, Argv: argv, Env: env, Dir: dir, UID: uid, GID: gid}, nil); err != nil {
		kp.forget(id)
		return nil, err
	}
	r := <-reply // read answers every Spawn, or ends them all when the keeper goes
	if r.Error != "" {
		kp.forget(id)
		return nil, errors.New(r.Error)
	}
	return p, nil
}

func (kp *keeperProcs) forget(id int) {
	kp.mu.Lock()
	delete(kp.procs, id)
	delete(kp.waiting, id)
	kp.mu.Unlock()
}

// read takes the keeper's frames until its connection ends; then every
// process counts as killed (the sandbox died with its PID 1).
func (kp *keeperProcs) read() {
	for {
		f, err := kp.conn.Receive()
		if err != nil {
			break
		}
		switch f.Type {
		case agentproto.TSpawned:
			var s agentproto.Spawned
			if f.Decode(&s) != nil {
				continue
			}
			kp.mu.Lock()
			reply := kp.waiting[s.ID]
			delete(kp.waiting, s.ID)
			if p := kp.procs[s.ID]; p != nil {
				p.pid = s.Pid
			}
			kp.mu.Unlock()
			if reply != nil {
				reply <- s
			}
		case agentproto.TExited:
			var e agentproto.Exited
			if f.Decode(&e) != nil {
				continue
			}
			kp.mu.Lock()
			p := kp.procs[e.ID]
			delete(kp.procs, e.ID)
			kp.mu.Unlock()
			if p != nil {
				p.ended(e.Reason)
			}
		}
	}
	kp.mu.Lock()
	kp.gone = true
	waiting, procs := kp.waiting, kp.procs
	kp.waiting, kp.procs = map[int]chan agentproto.Spawned{}, map[int]*proc{}
	kp.mu.Unlock()
	for _, reply := range waiting {
		reply <- agentproto.Spawned{Error: errKeeperGone.Error()}
	}
	for _, p := range procs {
		p.ended("signal: killed")
	}
}
