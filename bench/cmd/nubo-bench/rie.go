package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nubo-dev/nubo/bench/internal/procstat"
)

// rieProcess is one aws-lambda-rie serving the echo bootstrap on loopback.
// The emulator runs a single runtime and serves one invoke at a time (an
// overlapping request crashes it), so it is only ever driven sequentially.
type rieProcess struct {
	cmd     *exec.Cmd
	url     string
	client  *http.Client
	started time.Time
	exited  chan struct{}
}

type rieOptions struct {
	bin       string
	bootstrap string
	logPath   string
}

// startRIE starts the emulator. It does not wait for it: the cold figure
// counts from here.
func startRIE(o rieOptions) (*rieProcess, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cmd := exec.Command(o.bin,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		o.bootstrap)
	// The emulator takes its working directory as the task root and sets
	// AWS_LAMBDA_RUNTIME_API for the runtime itself; an inherited value
	// would point the runtime elsewhere.
	cmd.Dir = filepath.Dir(o.bootstrap)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Its own group, so stopping it can reach the runtime too (the emulator
	// starts the runtime in yet another group, which stop handles).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(o.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	r := &rieProcess{cmd: cmd, url: "http://" + addr + "/2015-03-31/functions/function/invocations",
		client: &http.Client{Transport: tr, Timeout: time.Minute}, exited: make(chan struct{})}
	if r.started, err = start(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	go func() {
		cmd.Wait()
		logf.Close()
		close(r.exited)
	}()
	return r, nil
}

// cpuShare is the CPU time and context switches used so far by this
// benchmark, the emulator and
// the runtime below it.
func (r *rieProcess) cpuShare() cpuShare {
	var s cpuShare
	s.machine.CPU, _ = procstat.Busy()
	s.client = procstat.Of(os.Getpid())
	pid := r.cmd.Process.Pid
	s.server = procstat.Of(pid)
	for _, p := range procstat.Descendants(procstat.ParentMap(), pid) {
		s.runtime = s.runtime.Add(procstat.Of(p))
	}
	return s
}

// firstResponse retries the first invoke until the emulator listens and
// answers, and returns the time from process start to that answer.
func (r *rieProcess) firstResponse(ctx context.Context, payload []byte) (time.Duration, error) {
	deadline := r.started.Add(20 * time.Second)
	for {
		_, body, err := r.invoke(ctx, payload)
		if err == nil {
			d := time.Since(r.started)
			if !sameJSON(body, payload) {
				return 0, errMismatch
			}
			return d, nil
		}
		select {
		case <-r.exited:
			return 0, fmt.Errorf("aws-lambda-rie exited before answering: %w", err)
		default:
		}
		if !isConnRefused(err) || time.Now().After(deadline) {
			return 0, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func isConnRefused(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "connection reset"))
}

func (r *rieProcess) invoke(ctx context.Context, payload []byte) (time.Duration, []byte, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return timedDo(r.client, req, t0, "aws-lambda-rie")
}

// timedDo sends req and reads its answer whole, timed from t0 to the
// answer's last byte; a status other than 200 is an error, named for who.
func timedDo(c *http.Client, req *http.Request, t0 time.Time, who string) (time.Duration, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("%s: HTTP %d: %s", who, resp.StatusCode, trim(b))
	}
	return d, b, nil
}

// errRIEInitRace marks an emulator cold start that failed because the
// emulator started its runtime before its own Runtime API listened (under
// load it can): the runtime exits on "connection refused" and the
// emulator answers 502. rieCold tells it by the emulator's log.
var errRIEInitRace = errors.New("the emulator's runtime failed its init")

// stop kills the emulator and the runtime it started (which lives in its
// own process group) and waits for the emulator to be reaped.
func (r *rieProcess) stop() {
	r.client.CloseIdleConnections()
	pid := r.cmd.Process.Pid
	kids := procstat.Descendants(procstat.ParentMap(), pid)
	syscall.Kill(-pid, syscall.SIGKILL)
	for _, k := range kids {
		syscall.Kill(-k, syscall.SIGKILL)
		syscall.Kill(k, syscall.SIGKILL)
	}
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		logf("aws-lambda-rie (pid %d) not reaped 10s after SIGKILL", pid)
	}
}
