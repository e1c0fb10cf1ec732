package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// floorServer is one of hopfloor's least Lambda servers (bench/cmd/hopfloor)
// serving the echo bootstrap: it checks each request's SigV4 signature,
// hands the body to a runtime's pending /next and answers with its
// /response, reading and writing its connections as nubo serve does
// (package rawio), and does nothing else. relayed puts a process between
// it and the runtime, as nubo has its agent. Figure 1 measures it in the
// same blocks as nubo and the emulator: what no server, or no relayed
// server, can go below on this machine in that run.
type floorServer struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	url    string
	client *http.Client
	signer *v4.Signer
	creds  aws.Credentials
	exited chan struct{}
}

// startFloorServer starts hopfloor's "lambda" role with one runtime and
// waits for the URL it prints.
func startFloorServer(hopfloor, bootstrap string, relayed bool) (*floorServer, error) {
	args := []string{"lambda", bootstrap, "1", "sign", "raw"}
	if relayed {
		args = append(args, "relay")
	}
	cmd := exec.Command(hopfloor, args...)
	// One P in the server, the relay and the runtime, as nubo runs them at
	// figure 1's sequential load on a 2-CPU machine with the default
	// --memory: nubo serve narrowed by its governor to half the CPUs
	// (package procs), the agent with GOMAXPROCS=1, the runtime in a
	// cgroup of one CPU's quota (1769 MB), which the Go runtime follows.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe() // it serves until this closes
	if err != nil {
		return nil, err
	}
	if _, err := start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", hopfloor, err)
	}
	f := &floorServer{cmd: cmd, stdin: in, exited: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, Timeout: time.Minute},
		signer: v4.NewSigner(), creds: aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test", Source: "nubo-bench"}}
	lines := make(chan string, 1)
	go func() {
		// Wait only once its output is read to the end (os/exec).
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(line)
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(f.exited)
	}()
	select {
	case url := <-lines:
		if !strings.HasPrefix(url, "http://") {
			f.stop()
			return nil, fmt.Errorf("%s printed %q, not its URL", hopfloor, url)
		}
		f.url = url + "/invoke"
	case <-time.After(20 * time.Second):
		f.stop()
		return nil, fmt.Errorf("%s printed no URL in 20s", hopfloor)
	}
	return f, nil
}

// invoke times one request as nubo's are timed: from before signing to the
// last byte of the answer.
func (f *floorServer) invoke(ctx context.Context, payload []byte) (time.Duration, []byte, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(payload)
	if err := f.signer.SignHTTP(ctx, f.creds, req, hex.EncodeToString(sum[:]), "lambda", devRegion, time.Now()); err != nil {
		return 0, nil, err
	}
	return timedDo(f.client, req, t0, "hopfloor")
}

// stop closes its stdin, on which it exits (its runtimes and relays die
// with it), and kills its group should it not.
func (f *floorServer) stop() {
	f.client.CloseIdleConnections()
	f.stdin.Close()
	select {
	case <-f.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		<-f.exited
	}
}
