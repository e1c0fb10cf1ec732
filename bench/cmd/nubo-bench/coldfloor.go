package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/nsbox"
)

// leastCold is the floor under a cold start: the function's process
// started outside any sandbox against the least Runtime API that can serve
// it, a server in this process whose first /next hands it the event and
// whose /response ends the sample. A sample is timed from before the fork
// to the response's last byte read: the function's own start, its init
// and its first invocation, and nothing else (no Lambda API, no SigV4, no
// isolation, no logs).
//
// Pinned, the process is started as nubo starts a runtime: on one CPU,
// under SCHED_OTHER, with nubo's timer slack (see nsbox's
// normalScheduling, cpuAffinity and timerSlack), which on a small guest
// makes a Go runtime start sooner and steadier (fewer threads woken and
// moved between CPUs).
// No system that starts the function's process for each environment
// answers a first invoke sooner than the faster of the two.
type leastCold struct {
	bootstrap string
	payload   []byte
	pinned    bool

	srv  *http.Server
	addr string

	mu  sync.Mutex
	seq int
	cur *coldSample // the sample running; nil between samples
}

// coldSample is one sample's invocation: handed to the first /next of its
// own process, answered once.
type coldSample struct {
	id    string
	taken bool // guarded by leastCold.mu
	resp  chan []byte
}

// sampleKey keys the sample that was running when a connection was
// accepted: the process of a sample connects only after the sample began,
// so a process being killed (whose second /next may still arrive) never
// gets the next sample's event.
type sampleKey struct{}

func startLeastCold(bootstrap string, payload []byte, pinned bool) (*leastCold, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &leastCold{bootstrap: bootstrap, payload: payload, pinned: pinned, addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", l.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", l.answer(false))
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", l.answer(true))
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", l.answer(true))
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			l.mu.Lock()
			defer l.mu.Unlock()
			return context.WithValue(ctx, sampleKey{}, l.cur)
		}}
	go l.srv.Serve(ln)
	return l, nil
}

// next hands the event of the connection's sample to its runtime's first
// /next; any other /next (the runtime's, after its answer) waits until the
// process is killed.
func (l *leastCold) next(w http.ResponseWriter, r *http.Request) {
	s, _ := r.Context().Value(sampleKey{}).(*coldSample)
	l.mu.Lock()
	give := s != nil && !s.taken
	if give {
		s.taken = true
	}
	l.mu.Unlock()
	if !give {
		<-r.Context().Done()
		return
	}
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", s.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(30*time.Second).UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:least-cold")
	h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(l.payload)))
	w.Write(l.payload)
}

// answer ends the connection's sample with the runtime's response; a
// failure (of the invocation or of init) ends it with a body that is not
// the event, so the sample fails at once. An invocation id must be the
// sample's.
func (l *leastCold) answer(failed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		s, _ := r.Context().Value(sampleKey{}).(*coldSample)
		if id := r.PathValue("id"); err != nil || s == nil || (id != "" && id != s.id) {
			http.Error(w, "unknown request id", http.StatusBadRequest)
			return
		}
		if failed {
			body = append([]byte("runtime error: "), body...)
		}
		select {
		case s.resp <- body: // the first answer only
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// sample starts a new runtime process, waits for its first response and
// kills it. The response must be the event, echoed.
func (l *leastCold) sample(ctx context.Context) (time.Duration, []byte, error) {
	_, d, body, err := l.sampleAt(ctx)
	return d, body, err
}

// sampleAt is sample that also says when the sample began: just before
// the fork, d before the response's last byte was read.
func (l *leastCold) sampleAt(ctx context.Context) (time.Time, time.Duration, []byte, error) {
	l.mu.Lock()
	l.seq++
	s := &coldSample{id: fmt.Sprintf("least-cold-%d", l.seq), resp: make(chan []byte, 1)}
	l.cur = s
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.cur = nil
		l.mu.Unlock()
	}()
	attr := &os.ProcAttr{
		Dir: "/",
		Env: []string{"AWS_LAMBDA_RUNTIME_API=" + l.addr, "_HANDLER=bootstrap", "AWS_LAMBDA_FUNCTION_NAME=least-cold",
			"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST", "AWS_REGION=us-east-1",
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []*os.File{nil, nil, nil},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	t0, p, release, err := l.start(attr)
	defer release()
	if err != nil {
		return time.Time{}, 0, nil, err
	}
	defer func() {
		_ = p.Kill()
		_, _ = p.Wait()
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case body := <-s.resp:
		return t0, time.Since(t0), body, nil
	case <-timer.C:
		return t0, 0, nil, errors.New("least cold start: no response within 10s")
	case <-ctx.Done():
		return t0, 0, nil, ctx.Err()
	}
}

// start forks and execs the bootstrap from a thread of its own, which the
// child inherits its CPUs, policy and timer slack from when pinned. The
// thread lasts until release, as the child's parent-death signal follows
// the thread that forked it, then ends with its goroutine (which stays
// locked), so no other goroutine ever runs on a thread set so.
func (l *leastCold) start(attr *os.ProcAttr) (t0 time.Time, p *os.Process, release func(), err error) {
	type started struct {
		t0  time.Time
		p   *os.Process
		err error
	}
	done, end := make(chan started, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		if l.pinned {
			if err := pinAsRuntime(); err != nil {
				done <- started{err: err}
				return
			}
		}
		t0 := time.Now()
		p, err := os.StartProcess(l.bootstrap, []string{l.bootstrap}, attr)
		done <- started{t0, p, err}
		<-end
	}()
	s := <-done
	return s.t0, s.p, func() { close(end) }, s.err
}

// pinAsRuntime sets the calling thread as nubo sets a sandbox: its last
// allowed CPU (any one would do, as the placer's homes do), SCHED_OTHER
// (by sched_setscheduler, which keeps the nice value) and nubo's timer
// slack.
func pinAsRuntime() error {
	cpus := nsbox.AllowedCPUs()
	if len(cpus) == 0 {
		return errors.New("no CPU allowed")
	}
	if err := pin(cpus[len(cpus)-1]); err != nil {
		return err
	}
	var param int32 // struct sched_param: priority 0, as SCHED_OTHER requires
	if _, _, e := unix.Syscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_NORMAL, uintptr(unsafe.Pointer(&param))); e != 0 {
		return fmt.Errorf("SCHED_OTHER: %w", e)
	}
	return unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(nsbox.DefaultTimerSlack.Nanoseconds()), 0, 0, 0)
}

func (l *leastCold) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	_ = l.srv.Close()
}
