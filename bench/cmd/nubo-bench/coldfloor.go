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
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// leastCold is the floor under a cold start: the function's process
// started outside any sandbox against the least Runtime API that can serve
// it, a server in this process whose first /next hands it the event and
// whose /response ends the sample. A sample is timed from before the fork
// to the response's last byte read: the function's own start, its init
// and its first invocation, and nothing else (no Lambda API, no SigV4, no
// isolation, no logs). No system that starts the function's process for
// each environment answers a first invoke sooner, so the cold p99 target
// reads against this series' own p99 on the same machine in the same run.
//
// Pinned, the process is started as nubo starts a runtime: on one CPU,
// under SCHED_BATCH (see nsbox's batchScheduling and cpuAffinity), which on
// a small guest makes a Go runtime start sooner (fewer threads woken and
// moved between CPUs).
type leastCold struct {
	bootstrap string
	payload   []byte
	pinned    bool

	srv  *http.Server
	addr string

	mu      sync.Mutex
	seq     int
	samples map[string]*coldSample // by request id, while running
}

// coldSample is one sample's invocation: handed to the first /next,
// answered once.
type coldSample struct {
	taken bool
	resp  chan []byte
}

func startLeastCold(bootstrap string, payload []byte, pinned bool) (*leastCold, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &leastCold{bootstrap: bootstrap, payload: payload, pinned: pinned, addr: ln.Addr().String(),
		samples: map[string]*coldSample{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", l.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", l.response)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", l.response)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go l.srv.Serve(ln)
	return l, nil
}

// next hands the sample's event to the runtime that asks first; a later
// /next (the runtime's, after its answer) waits until the process is
// killed.
func (l *leastCold) next(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	id := ""
	for k, s := range l.samples {
		if !s.taken {
			id, s.taken = k, true
			break
		}
	}
	l.mu.Unlock()
	if id == "" {
		<-r.Context().Done()
		return
	}
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(30*time.Second).UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:least-cold")
	h.Set("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(l.payload)))
	w.Write(l.payload)
}

func (l *leastCold) response(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	id := r.PathValue("id")
	l.mu.Lock()
	s := l.samples[id]
	l.mu.Unlock()
	if err != nil || s == nil {
		http.Error(w, "unknown request id", http.StatusBadRequest)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/error") {
		body = append([]byte("function error: "), body...)
	}
	select {
	case s.resp <- body:
	default:
	}
	w.WriteHeader(http.StatusAccepted)
}

// sample starts a new runtime process, waits for its first response and
// kills it. The response must be the event, echoed.
func (l *leastCold) sample(ctx context.Context) (time.Duration, []byte, error) {
	l.mu.Lock()
	l.seq++
	id := fmt.Sprintf("least-cold-%d", l.seq)
	s := &coldSample{resp: make(chan []byte, 1)}
	l.samples[id] = s
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.samples, id)
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
		return 0, nil, err
	}
	defer func() {
		_ = p.Kill()
		_, _ = p.Wait()
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case body := <-s.resp:
		return time.Since(t0), body, nil
	case <-timer.C:
		return 0, nil, errors.New("least cold start: no response within 10s")
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// start forks and execs the bootstrap and returns when it started; pinned,
// from a thread of its own set to one CPU under SCHED_BATCH, which the
// child inherits. That thread lasts until release (the child's parent-death
// signal follows the thread that forked it), then ends with its goroutine
// (it stays locked), so no other goroutine ever runs on it.
func (l *leastCold) start(attr *os.ProcAttr) (t0 time.Time, p *os.Process, release func(), err error) {
	if !l.pinned {
		t0 = time.Now()
		p, err = os.StartProcess(l.bootstrap, []string{l.bootstrap}, attr)
		return t0, p, func() {}, err
	}
	type started struct {
		t0  time.Time
		p   *os.Process
		err error
	}
	done, end := make(chan started, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			done <- started{err: err}
			return
		}
		// The last CPU allowed: any one would do, as nubo's placer's
		// homes do.
		cpu := -1
		for c := 0; c < len(set)*64; c++ {
			if set.IsSet(c) {
				cpu = c
			}
		}
		if cpu < 0 {
			done <- started{err: errors.New("no CPU allowed")}
			return
		}
		one := unix.CPUSet{}
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			done <- started{err: err}
			return
		}
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}, 0); err != nil {
			done <- started{err: fmt.Errorf("SCHED_BATCH: %w", err)}
			return
		}
		t0 := time.Now()
		p, err := os.StartProcess(l.bootstrap, []string{l.bootstrap}, attr)
		done <- started{t0, p, err}
		<-end
	}()
	s := <-done
	return s.t0, s.p, func() { close(end) }, s.err
}

func (l *leastCold) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	_ = l.srv.Close()
}
