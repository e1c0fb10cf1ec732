// Tests of the nubo binary as an operator runs it: flags, startup failures,
// signals, the data-dir lock, durability across kill -9, and an external
// NATS server.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/server/servertest"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// binary is the nubo built once for every test of this package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nubo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "nubo")
	// As make builds it: with the sandbox agent embedded.
	build := exec.Command("bash", "../../scripts/build.sh", binary)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running nubo (or other) process with its stderr collected.
type proc struct {
	cmd   *exec.Cmd
	addr  string
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan string
	done  chan struct{}
	err   error // from Wait, valid after done
}

var servingRE = regexp.MustCompile(`msg="nubo serving" listen=(\S+)`)

// spawn starts name with args, collecting stderr and watching for nubo's
// "serving" line. The process is killed at the end of the test if needed.
func spawn(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), ready: make(chan string, 1), done: make(chan struct{})}
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.buf.WriteString(line + "\n")
			p.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				select {
				case p.ready <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pipe)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// wait returns the exit code, failing the test after d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %v; stderr:\n%s", p.cmd.Path, d, p.stderr())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

// startNubo starts `nubo serve` on a free loopback port and waits until it
// serves. These tests are about the command and the control plane's state,
// so they run without execution (--isolation none): no host network, cgroups
// or firewall rules to collide with another nubo on the machine.
func startNubo(t *testing.T, args ...string) *proc {
	t.Helper()
	p := spawn(t, binary, append([]string{"serve", "--listen", "127.0.0.1:0", "--isolation", "none"}, args...)...)
	select {
	case p.addr = <-p.ready:
	case <-p.done:
		t.Fatalf("nubo serve exited before serving: %v\n%s", p.err, p.stderr())
	case <-time.After(20 * time.Second):
		t.Fatalf("nubo serve not serving after 20s:\n%s", p.stderr())
	}
	return p
}

func (p *proc) client() *lambda.Client { return servertest.Client("http://"+p.addr, "test", "test") }

// runExit runs nubo expecting it to exit by itself.
func runExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := spawn(t, binary, args...)
	code := p.wait(t, 20*time.Second)
	return code, p.stderr()
}

func oneLine(t *testing.T, stderr string) string {
	t.Helper()
	s := strings.TrimRight(stderr, "\n")
	if s == "" || strings.Contains(s, "\n") {
		t.Errorf("stderr is not one line:\n%s", stderr)
	}
	return s
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--bogus"},
		{"serve", "--listen"},
		{"serve", "--state-transition-delay", "soon"},
		{"serve", "--log-level", "loud"},
		{"serve", "unexpected"},
		{"serve", "--timer-slack", "-1ms"},
		{"serve", "--timer-slack", "1s"},
	} {
		code, stderr := runExit(t, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		line := oneLine(t, stderr)
		if !strings.HasPrefix(line, "nubo serve: ") {
			t.Errorf("%v: %q does not say who complains", args, line)
		}
	}
	code, stderr := runExit(t, "serve", "--bogus")
	if code != 2 || !strings.Contains(stderr, "-bogus") {
		t.Errorf("--bogus: %d %q", code, stderr)
	}
	// Help is not an error, and goes to stdout... or at least exits 0.
	if code, _ := runExit(t, "serve", "-h"); code != 0 {
		t.Errorf("serve -h: exit %d", code)
	}
	if code, _ := runExit(t, "nonsense"); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
}

func TestBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := filepath.Join(t.TempDir(), "data")
	code, stderr := runExit(t, "serve", "--isolation", "none", "--listen", ln.Addr().String(), "--data-dir", data)
	if code == 0 {
		t.Fatalf("exit 0 on a busy port")
	}
	line := oneLine(t, stderr)
	if !strings.Contains(line, "listen "+ln.Addr().String()) || !strings.Contains(line, "address already in use") {
		t.Errorf("busy port: %q", line)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("a failed start touched the data dir: %v", err)
	}
}

func TestUnusableDataDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{filepath.Join(file, "data"): "not a directory"}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cases[filepath.Join(ro, "data")] = "permission denied"
	}
	for data, why := range cases {
		code, stderr := runExit(t, "serve", "--isolation", "none", "--listen", "127.0.0.1:0", "--data-dir", data)
		if code == 0 {
			t.Errorf("%s: exit 0", data)
		}
		line := oneLine(t, stderr)
		if !strings.Contains(line, data) || !strings.Contains(line, why) {
			t.Errorf("%s: unclear error %q", data, line)
		}
	}
}

func TestSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startNubo(t, "--data-dir", t.TempDir())
			c := p.client()
			if _, err := c.ListFunctions(ctx(t), &lambda.ListFunctionsInput{}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			p.cmd.Process.Signal(sig)
			if code := p.wait(t, 10*time.Second); code != 0 {
				t.Errorf("exit %d after %v; stderr:\n%s", code, sig, p.stderr())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to stop", d)
			}
			if !strings.Contains(p.stderr(), "shutting down") {
				t.Errorf("no shutdown line:\n%s", p.stderr())
			}
		})
	}
}

func TestDataDirInUse(t *testing.T) {
	data := t.TempDir()
	first := startNubo(t, "--data-dir", data)
	code, stderr := runExit(t, "serve", "--isolation", "none", "--listen", "127.0.0.1:0", "--data-dir", data)
	if code == 0 {
		t.Fatalf("a second nubo on %s started", data)
	}
	if line := oneLine(t, stderr); !strings.Contains(line, "in use") || !strings.Contains(line, data) {
		t.Errorf("second nubo: %q", line)
	}
	// The first one is unaffected.
	if _, err := first.client().ListFunctions(ctx(t), &lambda.ListFunctionsInput{}); err != nil {
		t.Errorf("first nubo after the refused second: %v", err)
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func codeZip(t testing.TB, body string) []byte {
	return ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: []byte("#!/bin/sh\n# " + body + "\n"), Mode: 0o755})
}

func sha64(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

const role = "arn:aws:iam::000000000000:role/r"

func create(t *testing.T, c *lambda.Client, name string, zip []byte, mutate ...func(*lambda.CreateFunctionInput)) {
	t.Helper()
	in := &lambda.CreateFunctionInput{FunctionName: aws.String(name), Role: aws.String(role), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: zip}}
	for _, m := range mutate {
		m(in)
	}
	if _, err := c.CreateFunction(ctx(t), in); err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
}

// settled waits until State is Active and LastUpdateStatus Successful.
func settled(t *testing.T, c *lambda.Client, name string) *lambda.GetFunctionOutput {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g, err := c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(name)})
		if err != nil {
			t.Fatalf("GetFunction %s: %v", name, err)
		}
		if g.Configuration.State == types.StateActive && g.Configuration.LastUpdateStatus == types.LastUpdateStatusSuccessful {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s/%s", name, g.Configuration.State, g.Configuration.LastUpdateStatus)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func download(t *testing.T, loc string) []byte {
	t.Helper()
	resp, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("download: %d %s", resp.StatusCode, b)
	}
	return b
}

// must(call())(t) returns call's value, failing t on its error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestKill9Durability: every write answered 2xx survives SIGKILL right
// after the answer.
func TestKill9Durability(t *testing.T) {
	data := t.TempDir()
	p := startNubo(t, "--data-dir", data)
	c := p.client()
	z1, z2, z3, zl := codeZip(t, "one"), codeZip(t, "two"), codeZip(t, "three"), codeZip(t, "layer")

	create(t, c, "f1", z1, func(in *lambda.CreateFunctionInput) {
		in.MemorySize, in.Timeout = aws.Int32(256), aws.Int32(10)
		in.Environment = &types.Environment{Variables: map[string]string{"STAGE": "one"}}
		in.Tags = map[string]string{"t": "1"}
	})
	create(t, c, "f2", z2)
	create(t, c, "f3", z3)
	for _, n := range []string{"f1", "f2", "f3"} {
		settled(t, c, n)
	}
	v1 := must(c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("f1")}))(t)
	must(c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("f1"), Description: aws.String("second")}))(t)
	settled(t, c, "f1")
	v2 := must(c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("f1")}))(t)
	if aws.ToString(v1.Version) != "1" || aws.ToString(v2.Version) != "2" {
		t.Fatalf("versions %s %s", aws.ToString(v1.Version), aws.ToString(v2.Version))
	}
	alias := must(c.CreateAlias(ctx(t), &lambda.CreateAliasInput{FunctionName: aws.String("f1"), Name: aws.String("live"), FunctionVersion: aws.String("1"),
		RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.25}}}))(t)
	must(c.PutFunctionConcurrency(ctx(t), &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("f2"), ReservedConcurrentExecutions: aws.Int32(5)}))(t)
	must(c.TagResource(ctx(t), &lambda.TagResourceInput{Resource: aws.String("arn:aws:lambda:us-east-1:000000000000:function:f3"), Tags: map[string]string{"k": "v"}}))(t)
	must(c.PutFunctionEventInvokeConfig(ctx(t), &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("f1"),
		MaximumRetryAttempts: aws.Int32(0), MaximumEventAgeInSeconds: aws.Int32(300)}))(t)
	layer := must(c.PublishLayerVersion(ctx(t), &lambda.PublishLayerVersionInput{LayerName: aws.String("lib"), Content: &types.LayerVersionContentInput{ZipFile: zl}}))(t)
	last := must(c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("f3"),
		MemorySize: aws.Int32(1024), Environment: &types.Environment{Variables: map[string]string{"LAST": "write"}},
		Layers: []string{aws.ToString(layer.LayerVersionArn)}}))(t)
	// No grace: the process dies the moment the last answer arrived.
	p.cmd.Process.Kill()
	p.wait(t, 10*time.Second)

	p = startNubo(t, "--data-dir", data)
	c = p.client()

	fs := must(c.ListFunctions(ctx(t), &lambda.ListFunctionsInput{}))(t)
	var names []string
	for _, f := range fs.Functions {
		names = append(names, aws.ToString(f.FunctionName))
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"f1", "f2", "f3"}) {
		t.Errorf("functions after kill -9: %v", names)
	}

	g1 := settled(t, c, "f1")
	if cf := g1.Configuration; aws.ToInt32(cf.MemorySize) != 256 || aws.ToInt32(cf.Timeout) != 10 || aws.ToString(cf.Description) != "second" ||
		cf.Environment == nil || cf.Environment.Variables["STAGE"] != "one" || aws.ToString(cf.CodeSha256) != sha64(z1) {
		t.Errorf("f1 config: %+v", cf)
	}
	if g1.Tags["t"] != "1" || len(g1.Tags) != 1 {
		t.Errorf("f1 tags %v", g1.Tags)
	}
	if b := download(t, aws.ToString(g1.Code.Location)); !bytes.Equal(b, z1) {
		t.Errorf("f1 code differs after restart")
	}
	vs := must(c.ListVersionsByFunction(ctx(t), &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("f1")}))(t)
	var got []string
	for _, v := range vs.Versions {
		got = append(got, aws.ToString(v.Version)+"/"+aws.ToString(v.Description)+"/"+aws.ToString(v.RevisionId))
	}
	want := []string{"$LATEST/second/" + aws.ToString(g1.Configuration.RevisionId), "1//" + aws.ToString(v1.RevisionId), "2/second/" + aws.ToString(v2.RevisionId)}
	if !slices.Equal(got, want) {
		t.Errorf("f1 versions %v, want %v", got, want)
	}
	al := must(c.GetAlias(ctx(t), &lambda.GetAliasInput{FunctionName: aws.String("f1"), Name: aws.String("live")}))(t)
	if aws.ToString(al.FunctionVersion) != "1" || al.RoutingConfig == nil || al.RoutingConfig.AdditionalVersionWeights["2"] != 0.25 ||
		aws.ToString(al.RevisionId) != aws.ToString(alias.RevisionId) {
		t.Errorf("alias: %+v", al)
	}
	ei := must(c.GetFunctionEventInvokeConfig(ctx(t), &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("f1")}))(t)
	if aws.ToInt32(ei.MaximumRetryAttempts) != 0 || aws.ToInt32(ei.MaximumEventAgeInSeconds) != 300 {
		t.Errorf("event invoke config: %+v", ei)
	}

	g2 := settled(t, c, "f2")
	if g2.Concurrency == nil || aws.ToInt32(g2.Concurrency.ReservedConcurrentExecutions) != 5 {
		t.Errorf("f2 concurrency %+v", g2.Concurrency)
	}
	if b := download(t, aws.ToString(g2.Code.Location)); !bytes.Equal(b, z2) {
		t.Errorf("f2 code differs after restart")
	}

	// f3's last update was InProgress at the kill; the restart finishes it.
	g3 := settled(t, c, "f3")
	cf3 := g3.Configuration
	if aws.ToInt32(cf3.MemorySize) != 1024 || cf3.Environment == nil || cf3.Environment.Variables["LAST"] != "write" ||
		len(cf3.Layers) != 1 || aws.ToString(cf3.Layers[0].Arn) != aws.ToString(layer.LayerVersionArn) || aws.ToString(cf3.LastModified) != aws.ToString(last.LastModified) {
		t.Errorf("f3 config: %+v", cf3)
	}
	if g3.Tags["k"] != "v" {
		t.Errorf("f3 tags %v", g3.Tags)
	}
	if b := download(t, aws.ToString(g3.Code.Location)); !bytes.Equal(b, z3) {
		t.Errorf("f3 code differs after restart")
	}
	lv := must(c.GetLayerVersion(ctx(t), &lambda.GetLayerVersionInput{LayerName: aws.String("lib"), VersionNumber: aws.Int64(1)}))(t)
	if aws.ToString(lv.Content.CodeSha256) != sha64(zl) {
		t.Errorf("layer %+v", lv.Content)
	}
	if b := download(t, aws.ToString(lv.Content.Location)); !bytes.Equal(b, zl) {
		t.Errorf("layer code differs after restart")
	}
	// Still writable, and numbering continues where it was.
	v3 := must(c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("f3")}))(t)
	if aws.ToString(v3.Version) != "1" {
		t.Errorf("f3's first version is %s", aws.ToString(v3.Version))
	}
	must(c.UpdateFunctionConfiguration(ctx(t), &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("f1"), Description: aws.String("third")}))(t)
	settled(t, c, "f1")
	if v := must(c.PublishVersion(ctx(t), &lambda.PublishVersionInput{FunctionName: aws.String("f1")}))(t); aws.ToString(v.Version) != "3" {
		t.Errorf("f1's next version is %s", aws.ToString(v.Version))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestKill9WhilePending: a function killed in Pending (and one killed in
// InProgress) is finished by the next start instead of staying stuck.
func TestKill9WhilePending(t *testing.T) {
	data := t.TempDir()
	p := startNubo(t, "--data-dir", data)
	c := p.client()
	create(t, c, "upd", codeZip(t, "upd"))
	settled(t, c, "upd")
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)

	p = startNubo(t, "--data-dir", data, "--state-transition-delay", "10m")
	c = p.client()
	zip := codeZip(t, "pending")
	create(t, c, "pend", zip)
	u := must(c.UpdateFunctionCode(ctx(t), &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("upd"), ZipFile: zip}))(t)
	g := must(c.GetFunction(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String("pend")}))(t)
	if g.Configuration.State != types.StatePending || u.LastUpdateStatus != types.LastUpdateStatusInProgress {
		t.Fatalf("before the kill: %s / %s", g.Configuration.State, u.LastUpdateStatus)
	}
	p.cmd.Process.Kill()
	p.wait(t, 10*time.Second)

	p = startNubo(t, "--data-dir", data)
	c = p.client()
	if g := settled(t, c, "pend"); aws.ToString(g.Configuration.CodeSha256) != sha64(zip) || g.Configuration.StateReasonCode != "" {
		t.Errorf("pend after restart: %+v", g.Configuration)
	}
	if g := settled(t, c, "upd"); aws.ToString(g.Configuration.CodeSha256) != sha64(zip) {
		t.Errorf("upd after restart: %s", aws.ToString(g.Configuration.CodeSha256))
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestExternalNATS keeps state in a separate nats-server (Debian's): a
// function created through one nubo is there for the next, even on a fresh
// data dir.
func TestExternalNATS(t *testing.T) {
	natsBin := testutil.RequiresBinary(t, "nats-server")
	port := freePort(t)
	ns := spawn(t, natsBin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", t.TempDir())
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not listening: %v\n%s", err, ns.stderr())
		}
		select {
		case <-ns.done:
			t.Fatalf("nats-server exited: %v\n%s", ns.err, ns.stderr())
		case <-time.After(20 * time.Millisecond):
		}
	}
	natsURL := "nats://" + addr

	p := startNubo(t, "--data-dir", t.TempDir(), "--nats-url", natsURL)
	if !strings.Contains(p.stderr(), "nats="+natsURL) {
		t.Errorf("nubo does not say it uses %s:\n%s", natsURL, p.stderr())
	}
	zip := codeZip(t, "external")
	c := p.client()
	create(t, c, "ext", zip)
	before := settled(t, c, "ext")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("nubo exit %d:\n%s", code, p.stderr())
	}

	p = startNubo(t, "--data-dir", t.TempDir(), "--nats-url", natsURL)
	c = p.client()
	g := settled(t, c, "ext")
	if aws.ToString(g.Configuration.CodeSha256) != sha64(zip) || aws.ToString(g.Configuration.RevisionId) != aws.ToString(before.Configuration.RevisionId) {
		t.Errorf("after restart: %+v", g.Configuration)
	}
	if b := download(t, aws.ToString(g.Code.Location)); !bytes.Equal(b, zip) {
		t.Errorf("code differs")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("nubo exit %d", code)
	}
	ns.cmd.Process.Signal(syscall.SIGTERM)
	ns.wait(t, 10*time.Second)
}

// TestRelativeDataDir: a relative --data-dir is made absolute once, at
// start: the start-up clean-up compares sandbox paths with the kernel's
// mount table, which holds absolute ones.
func TestRelativeDataDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	p := startNubo(t, "--data-dir", "state")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr())
	}
	if want := "data_dir=" + filepath.Join(dir, "state"); !strings.Contains(p.stderr(), want) {
		t.Errorf("no %q in the log:\n%s", want, p.stderr())
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "LOCK")); err != nil {
		t.Errorf("state not in the directory named relative to the working one: %v", err)
	}
}
