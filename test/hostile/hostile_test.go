// Package hostile_test is the hostile-function suite of nubo's isolation
// work: real functions (an aws-lambda-go probe, a Python handler and a
// /bin/sh runtime) run in the default namespace sandbox of a real
// in-process nubo and try what a malicious tenant would try — see
// processes of the host, write outside /tmp, mount, unshare, ptrace the
// agent, load modules, open raw sockets, read host secrets, reach the nubo
// API or another environment, exhaust disk, memory, CPU and pids. Each test
// asserts on what the function reports it could do, and, where the host
// side is the evidence (host uids, leftovers), on what the test sees on the
// host.
//
// Invariants of the suite:
//   - The functions report facts; the test decides. No expectation is
//     compiled into a function.
//   - Everything the suite starts is gone when it ends: TestMain checks,
//     after every server has closed, that no process of this run (uid
//     ≥ 2,000,000 in this run's cgroups, or carrying its run tag), no mount
//     or loop device under the servers' data dirs, and no cgroup of this
//     test process remain.
//   - Network traffic stays on the machine: the only listeners are on
//     127.0.0.1 or on the sandboxes' bridge address, and functions connect
//     only to those, to the host's own addresses and to each other.
package hostile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/runtimes"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/server/servertest"
	"github.com/nubo-dev/nubo/internal/testutil"
)

const (
	// runTagVar is set in every function's environment, so the host can
	// attribute processes (and any child a function starts) to this run.
	runTagVar = "NUBO_HOSTILE_RUN"
	// fnVar names the function a process belongs to.
	fnVar = "NUBO_HOSTILE_FN"
	// hostUIDBase is the lowest host uid a sandbox may run as (nsbox's
	// default base; servertest gives each server a higher range).
	hostUIDBase = 2_000_000
	sandboxUID  = 993
	zeroCaps    = "0000000000000000"
)

var (
	workDir string
	runTag  string

	dataDirsMu sync.Mutex
	dataDirs   []string

	buildOnce sync.Once
	buildErr  error
	probeZip  []byte
)

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "nubo-hostile-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b := make([]byte, 8)
	rand.Read(b)
	runTag = hex.EncodeToString(b)
	code := m.Run()
	os.RemoveAll(workDir)
	if os.Geteuid() == 0 {
		if left := waitNoLeftovers(10 * time.Second); len(left) > 0 {
			fmt.Fprintln(os.Stderr, "FAIL: the suite left things behind:\n\t"+strings.Join(left, "\n\t"))
			code = 1
		}
	}
	os.Exit(code)
}

// build compiles the probe once per run, statically (CGO_ENABLED=0), so it
// needs nothing of the sandbox's userland.
func build(t testing.TB) {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out := filepath.Join(workDir, "probe")
		cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build testdata/probe: %v\n%s", err, b)
			return
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			buildErr = err
			return
		}
		probeZip = ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: bin, Mode: 0o755})
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// inGuest reports whether the suite runs in microVMs, where the host sees
// the VMM and no sandbox process: host-side views are checked in
// internal/microvm instead.
func inGuest() bool { return os.Getenv("NUBO_TEST_ISOLATION") == "microvm" }

// suite is one running server shared by the subtests of TestHostile.
type suite struct {
	s       *servertest.Server
	apiPort string
}

func newSuite(t *testing.T) *suite {
	t.Helper()
	testutil.RequiresRoot(t)
	build(t)
	// NUBO_TEST_ISOLATION=microvm runs the suite inside the account's
	// microVMs (docs/microvm.md says what applies there).
	var opts []servertest.Option
	if iso := os.Getenv("NUBO_TEST_ISOLATION"); iso != "" {
		opts = append(opts, func(c *server.Config) { c.Isolation = iso })
	}
	s := servertest.Start(t, opts...)
	// Sandboxes run as unprivileged host ids that must traverse the data
	// dir's parents, which t.TempDir makes 0700 (servertest leaves that to
	// its callers).
	for d, i := filepath.Dir(s.DataDir), 0; i < 2; d, i = filepath.Dir(d), i+1 {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dataDirsMu.Lock()
	dataDirs = append(dataDirs, s.DataDir)
	dataDirsMu.Unlock()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return &suite{s: s, apiPort: port}
}

// fnSpec describes a function to create; zero values take the probe's.
type fnSpec struct {
	client    *lambda.Client
	name      string
	zip       []byte
	runtime   types.Runtime
	handler   string
	memoryMB  int32
	ephemeral int32
	timeout   int32
}

// fn is a created function.
type fn struct {
	c    *lambda.Client
	name string
}

func ctx(t testing.TB) context.Context { return servertest.Ctx(t, 90*time.Second) }

func (su *suite) create(t testing.TB, sp fnSpec) fn {
	t.Helper()
	if sp.client == nil {
		sp.client = su.s.Dev()
	}
	if sp.zip == nil {
		sp.zip = probeZip
	}
	if sp.runtime == "" {
		sp.runtime = types.RuntimeProvidedal2023
	}
	if sp.handler == "" {
		sp.handler = "bootstrap"
	}
	if sp.memoryMB == 0 {
		sp.memoryMB = 128
	}
	if sp.ephemeral == 0 {
		sp.ephemeral = 512
	}
	if sp.timeout == 0 {
		sp.timeout = 15
	}
	_, err := sp.client.CreateFunction(ctx(t), &lambda.CreateFunctionInput{
		FunctionName:     aws.String(sp.name),
		Role:             aws.String("arn:aws:iam::000000000000:role/hostile"),
		Runtime:          sp.runtime,
		Handler:          aws.String(sp.handler),
		Code:             &types.FunctionCode{ZipFile: sp.zip},
		MemorySize:       aws.Int32(sp.memoryMB),
		Timeout:          aws.Int32(sp.timeout),
		EphemeralStorage: &types.EphemeralStorage{Size: aws.Int32(sp.ephemeral)},
		Environment:      &types.Environment{Variables: map[string]string{runTagVar: runTag, fnVar: sp.name}},
	})
	if err != nil {
		t.Fatalf("CreateFunction %s: %v", sp.name, err)
	}
	w := lambda.NewFunctionActiveV2Waiter(sp.client, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx(t), &lambda.GetFunctionInput{FunctionName: aws.String(sp.name)}, 30*time.Second); err != nil {
		t.Fatalf("waiting for %s to be Active: %v", sp.name, err)
	}
	return fn{c: sp.client, name: sp.name}
}

// raw invokes f and returns the SDK's answer; an API error fails t.
func (f fn) raw(t testing.TB, payload any) *lambda.InvokeOutput {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.c.Invoke(ctx(t), &lambda.InvokeInput{FunctionName: aws.String(f.name), Payload: b})
	if err != nil {
		t.Fatalf("Invoke %s: %v", f.name, err)
	}
	return out
}

// try is call for goroutines other than the test's: it returns the
// failure instead of ending the test.
func (f fn) try(payload any, v any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := f.c.Invoke(c, &lambda.InvokeInput{FunctionName: aws.String(f.name), Payload: b})
	if err != nil {
		return fmt.Errorf("Invoke %s: %w", f.name, err)
	}
	if out.FunctionError != nil {
		return fmt.Errorf("Invoke %s: function error %s: %s", f.name, aws.ToString(out.FunctionError), out.Payload)
	}
	return json.Unmarshal(out.Payload, v)
}

// call invokes f, requires success, and decodes the report into v.
func (f fn) call(t testing.TB, payload any, v any) {
	t.Helper()
	out := f.raw(t, payload)
	if out.FunctionError != nil {
		t.Fatalf("Invoke %s %v: function error %s: %s", f.name, payload, aws.ToString(out.FunctionError), out.Payload)
	}
	if err := json.Unmarshal(out.Payload, v); err != nil {
		t.Fatalf("Invoke %s: report %q: %v", f.name, out.Payload, err)
	}
}

type op = map[string]any

// proc is a process as a function sees it.
type proc struct {
	Pid     int    `json:"pid"`
	PPid    int    `json:"ppid"`
	Cmdline string `json:"cmdline"`
}

type status struct {
	Token                               string
	Pid, PPid, UID, EUID, GID, EGID     int
	Hostname                            string
	Procs                               []proc
	UIDMap                              string
	CapInh, CapPrm, CapEff, CapBnd      string
	CapAmb, NoNewPrivs, Seccomp, Groups string
}

// oneOf reports whether got is one of want.
func oneOf(got string, want ...string) bool {
	for _, w := range want {
		if got == w {
			return true
		}
	}
	return false
}

// checkProcTree asserts that procs is exactly the sandbox's own tree: pid 1
// is nubo's agent (its parent is outside the namespace, so it shows 0), and
// every other process descends from it.
func checkProcTree(t *testing.T, procs []proc, self int) {
	t.Helper()
	byPid := map[int]proc{}
	for _, p := range procs {
		byPid[p.Pid] = p
	}
	one, ok := byPid[1]
	switch {
	case !ok:
		t.Errorf("no pid 1 visible: %+v", procs)
	case !strings.Contains(one.Cmdline, "nubo-agent"):
		t.Errorf("pid 1 is %q, not nubo's agent (a host init would be systemd or init)", one.Cmdline)
	case one.PPid != 0:
		t.Errorf("pid 1 has parent %d inside the namespace; want 0 (parent outside)", one.PPid)
	}
	if _, ok := byPid[self]; !ok {
		t.Errorf("the function's own pid %d is not in /proc: %+v", self, procs)
	}
	for _, p := range procs {
		if p.Pid == 1 {
			continue
		}
		// Walk up: every ancestor must be visible and the chain end at 1.
		seen := map[int]bool{}
		cur := p
		for cur.Pid != 1 {
			if seen[cur.Pid] {
				t.Errorf("parent loop at %+v", cur)
				break
			}
			seen[cur.Pid] = true
			parent, ok := byPid[cur.PPid]
			if !ok {
				t.Errorf("process %d (%q) has parent %d outside the sandbox's tree", p.Pid, p.Cmdline, cur.PPid)
				break
			}
			cur = parent
		}
		for _, host := range []string{"systemd", "/sbin/init", "sshd", "containerd", "dockerd", "kthreadd"} {
			if strings.Contains(p.Cmdline, host) {
				t.Errorf("host process visible: %d %q", p.Pid, p.Cmdline)
			}
		}
	}
	if len(procs) > 8 {
		t.Errorf("%d processes visible; the sandbox should only show its agent and runtime: %+v", len(procs), procs)
	}
}

// TestHostile runs the suite against one server. The inspection subtests
// run in parallel, each with functions of its own; the resource-exhaustion
// subtests run one after another, so their measurements do not disturb
// each other.
func TestHostile(t *testing.T) {
	su := newSuite(t)
	t.Run("inspect", func(t *testing.T) {
		t.Run("Processes", su.testProcesses)
		t.Run("ReadOnlyFileSystem", su.testReadOnly)
		t.Run("DeniedSyscalls", su.testSyscalls)
		t.Run("AgentOutOfReach", su.testAgent)
		t.Run("Devices", su.testDevices)
		t.Run("KernelTunables", su.testTunables)
		t.Run("HostSecrets", su.testSecrets)
		t.Run("Credentials", su.testCredentials)
		t.Run("HostUIDs", su.testHostUIDs)
		t.Run("Hostname", su.testHostname)
		t.Run("Python", su.testPython)
		t.Run("Shell", su.testShell)
		t.Run("NetworkToHost", su.testNetworkToHost)
		t.Run("NetworkBetweenEnvironments", su.testNetworkBetweenEnvs)
		t.Run("TmpPrivate", su.testTmpPrivate)
	})
	t.Run("TmpQuota", su.testTmpQuota)
	t.Run("CPUProportionalToMemory", su.testCPU)
	t.Run("MemoryHog", su.testMemoryHog)
	t.Run("ForkBomb", su.testForkBomb)
}

func (su *suite) testProcesses(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "procs"})
	var st status
	f.call(t, op{"op": "status"}, &st)
	if st.PPid != 1 {
		t.Errorf("the runtime's parent is %d; want the agent, pid 1", st.PPid)
	}
	checkProcTree(t, st.Procs, st.Pid)
	// Exactly the agent and the runtime: the probe starts no children.
	if len(st.Procs) != 2 {
		t.Errorf("visible processes %+v; want only the agent and the runtime", st.Procs)
	}
}

func (su *suite) testReadOnly(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "readonly"})
	var r struct{ Writes map[string]string }
	f.call(t, op{"op": "writes"}, &r)
	if len(r.Writes) == 0 {
		t.Fatal("no write attempts reported")
	}
	for path, errno := range r.Writes {
		if path == "/tmp" {
			if errno != "" {
				t.Errorf("creating a file in /tmp: %s; /tmp must be writable", errno)
			}
			continue
		}
		want := []string{"EROFS", "EACCES", "EPERM"}
		if path == "/proc" {
			// procfs has no way to create a file: the lookup fails first.
			want = append(want, "ENOENT")
		}
		if !oneOf(errno, want...) {
			t.Errorf("write at %s: %q; want one of %v", path, errno, want)
		}
	}
	for _, must := range []string{"/", "/var/task", "/opt", "/etc", "/usr", "/var/runtime", "/etc/passwd", "/var/task/bootstrap"} {
		if _, ok := r.Writes[must]; !ok {
			t.Errorf("no attempt reported for %s", must)
		}
	}
}

// deniedSyscalls lists, per attempt of the probe, the errnos that count as
// "refused", and what refuses it without a seccomp filter (capabilities,
// kernel settings), which tells a reader of a failure which layer is
// missing.
var deniedSyscalls = map[string]struct {
	ok     []string
	stopBy string
}{
	"mount":                  {[]string{"EPERM"}, "no CAP_SYS_ADMIN"},
	"unshare_user":           {[]string{"EPERM"}, "seccomp only: creating a user namespace needs no privilege"},
	"clone_newuser":          {[]string{"EPERM"}, "seccomp only: creating a user namespace needs no privilege"},
	"unshare_mnt":            {[]string{"EPERM"}, "no CAP_SYS_ADMIN"},
	"ptrace_traceme":         {[]string{"EPERM"}, "seccomp only: PTRACE_TRACEME needs no privilege"},
	"ptrace_attach_pid1":     {[]string{"EPERM", "EACCES"}, "seccomp, or an agent the runtime cannot trace (other uid or not dumpable)"},
	"pidfd_getfd_agent":      {[]string{"EPERM", "EACCES", "ESRCH"}, "seccomp, or an agent the runtime cannot trace"},
	"process_vm_readv_agent": {[]string{"EPERM", "EACCES", "ESRCH"}, "seccomp, or an agent the runtime cannot trace"},
	"init_module":            {[]string{"EPERM", "ENOSYS"}, "no CAP_SYS_MODULE"},
	"kexec_load":             {[]string{"EPERM", "ENOSYS"}, "no CAP_SYS_BOOT"},
	"bpf":                    {[]string{"EPERM", "ENOSYS", "EACCES"}, "kernel.unprivileged_bpf_disabled"},
	"perf_event_open":        {[]string{"EPERM", "EACCES", "ENOSYS", "ENOENT"}, "seccomp only: perf_event_paranoid 2 allows user-space counting of oneself"},
	"keyctl":                 {[]string{"EPERM", "EACCES", "ENOSYS"}, "seccomp only: the keyring needs no privilege"},
	"socket_raw":             {[]string{"EPERM", "EACCES"}, "no CAP_NET_RAW"},
	"socket_packet":          {[]string{"EPERM", "EACCES", "EAFNOSUPPORT"}, "no CAP_NET_RAW"},
	"reboot":                 {[]string{"EPERM"}, "no CAP_SYS_BOOT"},
	"mknod_char":             {[]string{"EPERM"}, "no CAP_MKNOD"},
	"sethostname":            {[]string{"EPERM"}, "no CAP_SYS_ADMIN"},
	"chroot":                 {[]string{"EPERM"}, "no CAP_SYS_CHROOT"},
	"open_by_handle_at":      {[]string{"EPERM"}, "no CAP_DAC_READ_SEARCH"},
}

func (su *suite) testSyscalls(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "syscalls"})
	var r struct{ Syscalls map[string]string }
	f.call(t, op{"op": "syscalls"}, &r)
	for name, d := range deniedSyscalls {
		got, ok := r.Syscalls[name]
		if !ok {
			t.Errorf("%s: not attempted", name)
			continue
		}
		if !oneOf(got, d.ok...) {
			if got == "" {
				got = "succeeded"
			}
			t.Errorf("%s: %s; want one of %v (refused by: %s)", name, got, d.ok, d.stopBy)
		}
	}
	t.Logf("errnos: %v", r.Syscalls)
	// The function still works after all that.
	var st status
	f.call(t, op{"op": "status"}, &st)
}

// testAgent checks that the runtime cannot reach into the agent, pid 1,
// which holds nubo's connection to the host: through /proc/1/mem a
// function could rewrite the agent and speak to the host in its name.
// These are open(2) calls, outside any seccomp filter's reach; only an
// agent the runtime may not trace (not dumpable, or another uid) stops them.
func (su *suite) testAgent(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "agent"})
	var r struct{ Agent map[string]string }
	f.call(t, op{"op": "agent"}, &r)
	t.Logf("attempts on pid 1: %v", r.Agent)
	if got := r.Agent["proc1_mem_rw"]; !oneOf(got, "EPERM", "EACCES") {
		t.Errorf("opening the agent's /proc/1/mem read-write: %q (then %s); want EACCES", got, r.Agent["proc1_mem_read"])
	}
	for _, k := range []string{"proc1_environ", "proc1_fd"} {
		if got := r.Agent[k]; !oneOf(got, "EPERM", "EACCES") {
			t.Errorf("%s: %q; want EACCES", k, got)
		}
	}
	// The runtime starts with stdin, stdout and stderr only: never the
	// agent's connection to the host, nor anything nubo inherited.
	if got, ok := r.Agent["inherited_fds"]; !ok || got != "" {
		t.Errorf("the runtime started with descriptors beyond 0-2: %q", got)
	}
	checkAgentThreads(t, f.name)
}

// checkAgentThreads reads, from the host, every thread of the agent of
// function name (the parent of its runtime): each must hold what the
// runtime holds — the sandbox user, no capability in any set, no_new_privs
// and the seccomp filter. The agent is the process that built the sandbox
// as root; credentials, the bounding set and seccomp are per thread, and
// the runtime is forked from whichever thread the Go scheduler picks.
func checkAgentThreads(t *testing.T, name string) {
	t.Helper()
	if inGuest() {
		t.Log("in a microVM the host sees no sandbox process: checked from inside only")
		return
	}
	pids := hostPidsWithEnv(fnVar + "=" + name)
	if len(pids) == 0 {
		t.Errorf("%s: no host process found", name)
		return
	}
	fields := func(path string) map[string]string {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
		return m
	}
	rt := fields(fmt.Sprintf("/proc/%d/status", pids[0]))
	agent := rt["PPid"]
	tasks, err := os.ReadDir("/proc/" + agent + "/task")
	if err != nil || len(tasks) == 0 {
		t.Errorf("agent %s: no threads readable: %v", agent, err)
		return
	}
	for _, task := range tasks {
		st := fields("/proc/" + agent + "/task/" + task.Name() + "/status")
		if st == nil {
			continue // exited meanwhile
		}
		if st["Uid"] != rt["Uid"] || st["Gid"] != rt["Gid"] {
			t.Errorf("agent thread %s: Uid %q Gid %q; want the runtime's %q %q", task.Name(), st["Uid"], st["Gid"], rt["Uid"], rt["Gid"])
		}
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if st[k] != zeroCaps {
				t.Errorf("agent thread %s: %s = %q; want %s", task.Name(), k, st[k], zeroCaps)
			}
		}
		if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
			t.Errorf("agent thread %s: NoNewPrivs %q Seccomp %q; want 1 and 2", task.Name(), st["NoNewPrivs"], st["Seccomp"])
		}
	}
	t.Logf("agent %s: checked %d threads against the runtime (Uid %s)", agent, len(tasks), rt["Uid"])
}

func (su *suite) testDevices(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "devices"})
	var r struct {
		Entries    []string
		Blocks     []string
		Present    map[string]bool
		Sys        bool
		SysBlock   []string
		KcoreBytes int
	}
	f.call(t, op{"op": "devices"}, &r)
	if len(r.Entries) == 0 {
		t.Fatal("no /dev entries reported")
	}
	for _, p := range []string{"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/loop-control", "/dev/fuse", "/dev/net/tun"} {
		if r.Present[p] {
			t.Errorf("%s exists in the sandbox", p)
		}
	}
	if len(r.Blocks) > 0 {
		t.Errorf("block devices in /dev: %v", r.Blocks)
	}
	if len(r.SysBlock) > 0 {
		t.Errorf("/sys/dev/block lists host block devices: %v", r.SysBlock)
	}
	if r.KcoreBytes != 0 {
		t.Errorf("/proc/kcore gave %d bytes; want it masked", r.KcoreBytes)
	}
	// Beyond the named ones: every character device is one of the
	// harmless set DESIGN.md §4 allows.
	allowed := map[string]bool{"null": true, "zero": true, "full": true, "random": true, "urandom": true, "tty": true, "ptmx": true}
	for _, e := range r.Entries {
		path, mode, _ := strings.Cut(e, " ")
		if strings.HasPrefix(mode, "D") {
			name := strings.TrimPrefix(path, "/dev/")
			if !allowed[name] && !strings.HasPrefix(name, "pts/") {
				t.Errorf("unexpected device %s (%s)", path, mode)
			}
		}
	}
	t.Logf("/dev: %v; /sys mounted: %v", r.Entries, r.Sys)
}

func (su *suite) testTunables(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "tunables"})
	var r struct{ Tunables, Modes map[string]string }
	f.call(t, op{"op": "tunables"}, &r)
	for _, p := range []string{"/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern", "/proc/sys/net/ipv4/ip_forward"} {
		if errno, ok := r.Tunables[p]; !ok || errno == "" {
			t.Errorf("writing %s: succeeded (or not tried: %v); want EROFS/EACCES", p, ok)
		}
	}
	// /proc/sysrq-trigger: refused, or masked by /dev/null (a character
	// device, where the real entry is a regular file) so a write goes
	// nowhere.
	if errno, ok := r.Tunables["/proc/sysrq-trigger"]; !ok {
		t.Error("/proc/sysrq-trigger: not tried")
	} else if mode := r.Modes["/proc/sysrq-trigger"]; errno == "" && !strings.HasPrefix(mode, "Dc") {
		t.Errorf("/proc/sysrq-trigger (mode %s) accepted a write and is not masked", mode)
	}
	t.Logf("tunable writes: %v; modes %v", r.Tunables, r.Modes)
	var st status
	f.call(t, op{"op": "status"}, &st)
	if st.Hostname == "pwned" {
		t.Error("the hostname write took effect")
	}
}

func (su *suite) testSecrets(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "secrets"})
	var r struct {
		Shadow, Gshadow, Root, Home string
		HomeEntries, Etc, Top       []string
		Paths                       map[string]string
	}
	f.call(t, op{"op": "secrets"}, &r)
	if !oneOf(r.Shadow, "ENOENT", "EACCES") {
		t.Errorf("/etc/shadow: %q; want absent or unreadable", r.Shadow)
	}
	if !oneOf(r.Gshadow, "ENOENT", "EACCES") {
		t.Errorf("/etc/gshadow: %q; want absent or unreadable", r.Gshadow)
	}
	if !oneOf(r.Root, "ENOENT", "EACCES") {
		t.Errorf("/root: %q; want absent or unreadable", r.Root)
	}
	hostHome, _ := os.ReadDir("/home")
	for _, h := range hostHome {
		for _, e := range r.HomeEntries {
			if e == h.Name() {
				t.Errorf("host home directory %s visible in the sandbox", e)
			}
		}
	}
	for _, e := range r.Etc {
		if oneOf(e, "shadow", "gshadow", "sudoers", "ssh", "machine-id") {
			t.Errorf("/etc/%s is in the sandbox's /etc", e)
		}
	}
	for _, e := range r.Top {
		if oneOf(e, "home", "root", "srv", "run", "mnt", "media", "boot", "snap") {
			t.Errorf("host directory /%s is in the sandbox's root: %v", e, r.Top)
		}
	}
	t.Logf("sandbox root %v; /etc %v; /etc/shadow %q, /root %q, /home %q", r.Top, r.Etc, r.Shadow, r.Root, r.Home)
	for _, p := range []string{"/etc/ssh", "/var/lib", "/run", "/var/run/docker.sock", "/run/containerd"} {
		if v, ok := r.Paths[p]; !ok || v != "ENOENT" {
			t.Errorf("%s: %q; want absent", p, v)
		}
	}
}

func (su *suite) testCredentials(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "creds"})
	var st status
	f.call(t, op{"op": "status"}, &st)
	if st.UID != sandboxUID || st.EUID != sandboxUID {
		t.Errorf("uid %d euid %d; want %d", st.UID, st.EUID, sandboxUID)
	}
	if st.GID == 0 || st.EGID == 0 {
		t.Errorf("gid %d egid %d; want non-root", st.GID, st.EGID)
	}
	for name, v := range map[string]string{"CapInh": st.CapInh, "CapPrm": st.CapPrm, "CapEff": st.CapEff, "CapBnd": st.CapBnd, "CapAmb": st.CapAmb} {
		if v != zeroCaps {
			t.Errorf("%s = %q; want %s", name, v, zeroCaps)
		}
	}
	if st.NoNewPrivs != "1" {
		t.Errorf("NoNewPrivs = %q; want 1", st.NoNewPrivs)
	}
	if st.Seccomp != "2" {
		t.Errorf("Seccomp = %q; want 2 (a filter) — the seccomp filter is not loaded", st.Seccomp)
	}
	for _, g := range strings.Fields(st.Groups) {
		if g == "0" {
			t.Errorf("supplementary groups %q include root", st.Groups)
		}
	}
}

// hostProc is a process as the host sees it.
type hostProc struct {
	pid, ppid int
	uids      []int
	cmdline   string
}

func readHostProc(pid int) (hostProc, bool) {
	p := hostProc{pid: pid}
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return p, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			for _, f := range strings.Fields(v) {
				n, _ := strconv.Atoi(f)
				p.uids = append(p.uids, n)
			}
		}
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			p.ppid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	cmd, _ := os.ReadFile(dir + "/cmdline")
	p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	return p, true
}

// hostPidsWithEnv lists host processes whose environment holds kv.
func hostPidsWithEnv(kv string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(env, []byte{0}) {
			if string(v) == kv {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func (su *suite) testHostUIDs(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "hostuids"})
	var st status
	f.call(t, op{"op": "status"}, &st)
	if st.UID != sandboxUID {
		t.Errorf("uid inside %d; want %d", st.UID, sandboxUID)
	}
	// The inside view of the mapping: sandbox ids 0–999 onto a high range.
	fields := strings.Fields(st.UIDMap)
	if len(fields) != 3 || fields[0] != "0" {
		t.Fatalf("uid_map inside = %q; want one line \"0 <base> <count>\"", st.UIDMap)
	}
	base, _ := strconv.Atoi(fields[1])
	if inGuest() {
		// The mapping is the guest kernel's; the host sees only the VMM
		// (its own unprivileged uid, checked by the microvm package).
		if base < 1000 {
			t.Errorf("sandbox uid 0 maps to guest uid %d; want an unprivileged range", base)
		}
		return
	}
	if base < hostUIDBase {
		t.Errorf("sandbox uid 0 maps to host uid %d; want ≥ %d", base, hostUIDBase)
	}

	// While the function sleeps, look at it from the host.
	done := make(chan struct{})
	go func() {
		defer close(done)
		var s struct{ Token string }
		if err := f.try(op{"op": "sleep", "ms": 1500}, &s); err != nil {
			t.Error(err)
		}
	}()
	var pids []int
	deadline := time.Now().Add(1200 * time.Millisecond)
	for len(pids) == 0 && time.Now().Before(deadline) {
		pids = hostPidsWithEnv(fnVar + "=hostuids")
		time.Sleep(50 * time.Millisecond)
	}
	if len(pids) == 0 {
		<-done
		t.Fatal("no host process carries the function's environment")
	}
	for _, pid := range pids {
		p, ok := readHostProc(pid)
		if !ok {
			continue
		}
		for _, u := range p.uids {
			if u < hostUIDBase || u != base+sandboxUID {
				t.Errorf("host pid %d (%q) runs as host uids %v; want all %d (sandbox base %d + %d)", pid, p.cmdline, p.uids, base+sandboxUID, base, sandboxUID)
				break
			}
		}
		// Its parent is the agent: the same mapping seen from the host.
		agent, ok := readHostProc(p.ppid)
		if !ok {
			continue
		}
		m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", agent.pid))
		if mf := strings.Fields(string(m)); len(mf) != 3 || mf[0] != "0" || mf[1] != strconv.Itoa(base) {
			t.Errorf("agent %d uid_map %q; want \"0 %d 1000\"", agent.pid, m, base)
		}
		for _, u := range agent.uids {
			if u < hostUIDBase {
				t.Errorf("agent %d runs as host uid %v", agent.pid, agent.uids)
				break
			}
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cg), "/nubo-") {
			t.Errorf("function process %d is in no nubo cgroup:\n%s", pid, cg)
		}
	}
	<-done
}

func (su *suite) testHostname(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "hostname"})
	var st status
	f.call(t, op{"op": "status"}, &st)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if st.Hostname == "" || st.Hostname == host {
		t.Errorf("hostname inside %q; host's is %q: want a private one", st.Hostname, host)
	}
}

// pythonRuntime is the first Python runtime nubo offers on this host.
func pythonRuntime(t *testing.T) types.Runtime {
	t.Helper()
	rts, err := runtimes.Detect("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range rts {
		if rt.Family == runtimes.FamilyPython {
			return types.Runtime(rt.ID)
		}
	}
	if testutil.InCI() {
		t.Fatal("no Python runtime on this host; CI images have one")
	}
	t.Skip("no Python runtime on this host")
	return ""
}

func (su *suite) testPython(t *testing.T) {
	t.Parallel()
	rt := pythonRuntime(t)
	src, err := os.ReadFile("testdata/python/lambda_function.py")
	if err != nil {
		t.Fatal(err)
	}
	f := su.create(t, fnSpec{name: "python", runtime: rt, handler: "lambda_function.handler",
		zip: ziptest.Zip(t, ziptest.File{Name: "lambda_function.py", Body: src})})
	var r struct {
		UID, GID, Pid              int
		Hostname                   string
		Procs                      []proc
		Writes, Denied             map[string]string
		CapEff, CapBnd, NoNewPrivs string
		Seccomp                    string
	}
	f.call(t, op{}, &r)
	if r.UID != sandboxUID {
		t.Errorf("uid %d; want %d", r.UID, sandboxUID)
	}
	checkProcTree(t, r.Procs, r.Pid)
	for dir, errno := range r.Writes {
		if dir == "/tmp" {
			if errno != "" {
				t.Errorf("/tmp: %s; want writable", errno)
			}
		} else if !oneOf(errno, "EROFS", "EACCES", "EPERM") {
			t.Errorf("write at %s: %q; want EROFS or EACCES", dir, errno)
		}
	}
	if len(r.Writes) < 7 {
		t.Errorf("writes: %v", r.Writes)
	}
	for name, errno := range r.Denied {
		want := []string{"EPERM", "EACCES"}
		if name == "shadow" {
			want = []string{"ENOENT", "EACCES"}
		}
		if !oneOf(errno, want...) {
			t.Errorf("%s: %q; want one of %v", name, errno, want)
		}
	}
	if r.CapEff != zeroCaps || r.CapBnd != zeroCaps || r.NoNewPrivs != "1" {
		t.Errorf("CapEff %q CapBnd %q NoNewPrivs %q; want no capabilities and no_new_privs", r.CapEff, r.CapBnd, r.NoNewPrivs)
	}
	if r.Seccomp != "2" {
		t.Errorf("Seccomp %q in the Python runtime; want 2 (the filter is inherited by every runtime)", r.Seccomp)
	}
	if host, _ := os.Hostname(); r.Hostname == host {
		t.Errorf("hostname %q is the host's", r.Hostname)
	}
}

func (su *suite) testShell(t *testing.T) {
	t.Parallel()
	testutil.RequiresBinary(t, "curl")
	src, err := os.ReadFile("testdata/shell/bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	f := su.create(t, fnSpec{name: "shell", zip: ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: src, Mode: 0o755})})
	var r map[string]any
	f.call(t, op{}, &r)
	if r["uid"] != strconv.Itoa(sandboxUID) {
		t.Errorf("id -u = %v; want %d", r["uid"], sandboxUID)
	}
	if host, _ := os.Hostname(); r["hostname"] == host || r["hostname"] == "" {
		t.Errorf("hostname %v; host's is %q", r["hostname"], host)
	}
	if pid1, _ := r["pid1"].(string); !strings.Contains(pid1, "nubo-agent") {
		t.Errorf("pid 1 is %q; want nubo's agent", pid1)
	}
	// The agent, the shell, and at most the pipeline that counted.
	if n, _ := r["nprocs"].(float64); n < 2 || n > 6 {
		t.Errorf("%v processes visible to the shell", r["nprocs"])
	}
	for _, k := range []string{"write_etc", "write_usr", "write_task", "write_root", "read_shadow", "list_root", "hostname_set", "mount"} {
		if r[k] != "no" {
			t.Errorf("%s: %v; want no", k, r[k])
		}
	}
	if r["write_tmp"] != "yes" {
		t.Errorf("touch /tmp/ok: %v; want yes", r["write_tmp"])
	}
}

// hostAddrs lists the host's own non-loopback IPv4 addresses, leaving out
// those of bridges: other nubo servers on this host (parallel test
// packages) come and go with bridges of their own, and an address that
// vanishes between listing and dialling would send the attempt out through
// the environment's NAT egress instead of testing the host.
func hostAddrs(t *testing.T) []net.IP {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var out []net.IP
	for _, i := range ifs {
		if _, err := os.Stat(filepath.Join("/sys/class/net", i.Name, "bridge")); err == nil {
			continue
		}
		as, _ := i.Addrs()
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				out = append(out, n.IP)
			}
		}
	}
	return out
}

// isHostAddr reports whether ip is one of the host's addresses, bridges
// included.
func isHostAddr(t *testing.T, ip string) bool {
	t.Helper()
	as, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// hostService listens on addr:0 for the duration of the test; it stands for
// any service of the host an environment must not reach.
func hostService(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	testutil.Serve(t, ln, func(net.Conn) {})
	return ln.Addr().String()
}

type netReport struct {
	Addrs   []string
	Gateway string
	IPv6Off map[string]string
	Token   string
	Port    int
}

// external lists the non-loopback addresses of a net report.
func (n netReport) external() []string {
	var out []string
	for _, a := range n.Addrs {
		_, cidr, _ := strings.Cut(a, " ")
		ip, _, err := net.ParseCIDR(cidr)
		if err == nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			out = append(out, ip.String())
		}
	}
	return out
}

func (su *suite) testNetworkToHost(t *testing.T) {
	t.Parallel()
	f := su.create(t, fnSpec{name: "net-host"})
	var n netReport
	f.call(t, op{"op": "net"}, &n)
	// The environment's interface has no IPv6, which would reach the
	// bridge around the IPv4 rules: turned off before it came up, so no
	// link-local address either.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		if v := n.IPv6Off["eth0"]; v != "1" {
			t.Errorf("eth0's disable_ipv6 is %q, want 1 (report %+v)", v, n)
		}
	}
	for _, a := range n.Addrs {
		if strings.HasPrefix(a, "eth0 ") && strings.Contains(a, ":") {
			t.Errorf("eth0 has an IPv6 address: %s", a)
		}
	}
	svc := hostService(t, "127.0.0.1")
	_, svcPort, _ := net.SplitHostPort(svc)
	targets := []string{"127.0.0.1:" + su.apiPort, svc}
	for _, ip := range hostAddrs(t) {
		targets = append(targets, net.JoinHostPort(ip.String(), su.apiPort), net.JoinHostPort(ip.String(), svcPort))
	}
	if n.Gateway != "" {
		targets = append(targets, net.JoinHostPort(n.Gateway, su.apiPort))
		// The bridge address belongs to the host: a service listening on
		// it is exactly what environment→host filtering must stop.
		if isHostAddr(t, n.Gateway) {
			targets = append(targets, hostService(t, n.Gateway))
		}
	}
	var r struct{ Connect map[string]string }
	f.call(t, op{"op": "connect", "targets": targets}, &r)
	for _, tg := range targets {
		res, ok := r.Connect[tg]
		switch {
		case !ok:
			t.Errorf("%s: not tried", tg)
		case res == "connected":
			t.Errorf("the function connected to %s (nubo API port %s)", tg, su.apiPort)
		case !strings.HasPrefix(tg, "127.") && strings.Contains(res, "connection refused"):
			// A reset from a host address means the SYN reached the
			// host's TCP stack: any service on a wildcard address there
			// would have answered. The policy drops such packets.
			t.Errorf("%s answered with a reset: environment→host traffic reaches the host (%s)", tg, res)
		}
	}
	t.Logf("environment addresses %v, gateway %q, disable_ipv6 %v; attempts: %v", n.Addrs, n.Gateway, n.IPv6Off, r.Connect)
}

func (su *suite) testNetworkBetweenEnvs(t *testing.T) {
	t.Parallel()
	a := su.create(t, fnSpec{client: su.s.A(), name: "net-listen"})
	b := su.create(t, fnSpec{client: su.s.B(), name: "net-dial"})
	var l netReport
	a.call(t, op{"op": "listen", "port": 0}, &l)
	if l.Port == 0 {
		t.Fatalf("listener reported no port: %+v", l)
	}
	port := strconv.Itoa(l.Port)
	// Loopback is per network namespace: B's 127.0.0.1 is not A's.
	targets := []string{"127.0.0.1:" + port}
	for _, ip := range l.external() {
		targets = append(targets, net.JoinHostPort(ip, port))
	}
	var r struct{ Connect map[string]string }
	b.call(t, op{"op": "connect", "targets": targets}, &r)
	for _, tg := range targets {
		if r.Connect[tg] == "connected" {
			t.Errorf("a function of account B connected to account A's environment at %s", tg)
		}
	}
	t.Logf("A listens on %v port %s; B's attempts: %v", l.Addrs, port, r.Connect)
	// With only loopback there is nothing to isolate yet: DESIGN.md §4
	// gives every environment a veth to the bridge.
	var bn netReport
	b.call(t, op{"op": "net"}, &bn)
	if len(l.external()) == 0 || bn.Gateway == "" {
		t.Errorf("environments have no network besides loopback (A: %v; B gateway %q): netenv is not wired, environment→environment isolation could not be exercised", l.Addrs, bn.Gateway)
	}
}

type tmpReport struct {
	Token  string
	Exists bool
	Err    string
}

func (su *suite) testTmpPrivate(t *testing.T) {
	t.Parallel()
	a := su.create(t, fnSpec{client: su.s.A(), name: "tmp-a"})
	b := su.create(t, fnSpec{client: su.s.B(), name: "tmp-b"})
	// A marker in the host's /tmp: no sandbox may see it.
	hostMarker := "nubo-hostile-host-" + runTag
	hostPath := filepath.Join(os.TempDir(), hostMarker)
	if err := os.WriteFile(hostPath, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(hostPath) })
	marker := "marker-" + runTag

	var w tmpReport
	a.call(t, op{"op": "tmpwrite", "name": marker}, &w)
	if w.Err != "" {
		t.Fatalf("A writing /tmp/%s: %s", marker, w.Err)
	}
	var c tmpReport
	a.call(t, op{"op": "tmpcheck", "name": marker}, &c)
	if c.Token == w.Token && !c.Exists {
		t.Errorf("A's own marker vanished from its warm environment")
	}
	b.call(t, op{"op": "tmpcheck", "name": marker}, &c)
	if c.Exists {
		t.Errorf("B (other function, other account) sees A's /tmp marker")
	}
	for _, f := range []fn{a, b} {
		f.call(t, op{"op": "tmpcheck", "name": hostMarker}, &c)
		if c.Exists {
			t.Errorf("%s sees the host's /tmp/%s", f.name, hostMarker)
		}
	}
	// Two concurrent invocations of A: one of them runs in a second
	// environment, which must have a /tmp of its own.
	res := make([]tmpReport, 2)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.try(op{"op": "tmpcheck", "name": marker, "ms": 1500}, &res[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	others := 0
	for _, r := range res {
		if r.Token == w.Token {
			if !r.Exists {
				t.Errorf("A's first environment lost its marker")
			}
			continue
		}
		others++
		if r.Exists {
			t.Errorf("a second environment of A (token %s) sees the first one's /tmp marker", r.Token)
		}
	}
	if others == 0 {
		t.Errorf("two concurrent invocations ran in one environment: %+v", res)
	}
}

func (su *suite) testTmpQuota(t *testing.T) {
	f := su.create(t, fnSpec{name: "tmpquota", ephemeral: 512, timeout: 60})
	var r struct {
		WrittenMB, SizeMB float64
		Err               string
	}
	start := time.Now()
	f.call(t, op{"op": "fill", "mb": 600}, &r)
	t.Logf("wrote %.0f MB of 600 into a %.0f MB /tmp in %v: %q", r.WrittenMB, r.SizeMB, time.Since(start).Round(time.Millisecond), r.Err)
	if r.Err != "ENOSPC" {
		t.Errorf("writing 600 MB into a 512 MB /tmp ended with %q; want ENOSPC", r.Err)
	}
	if r.WrittenMB > 512 {
		t.Errorf("wrote %.0f MB; the cap is 512 MB", r.WrittenMB)
	}
	// ext4's own metadata takes a little; most of the space is usable.
	if r.WrittenMB < 400 {
		t.Errorf("wrote only %.0f MB before ENOSPC; want most of 512 MB", r.WrittenMB)
	}
	var st status
	f.call(t, op{"op": "status"}, &st)
	var w tmpReport
	f.call(t, op{"op": "tmpwrite", "name": "after-fill"}, &w)
	if w.Err != "" {
		t.Errorf("writing to /tmp after the fill (file removed): %s", w.Err)
	}
}

type burnReport struct{ CPUMs, WallMs int64 }

// cpuLimit reads, from the host, the CPU quota of the cgroup that process
// pid is in, in vCPUs (cgroup v1 cfs quota/period, or v2 cpu.max).
func cpuLimit(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var candidates []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			candidates = append(candidates, filepath.Join("/sys/fs/cgroup", parts[2], "cpu.max"))
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				for _, mnt := range []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"} {
					candidates = append(candidates, filepath.Join("/sys/fs/cgroup", mnt, parts[2], "cpu.cfs_quota_us"))
				}
			}
		}
	}
	for _, c := range candidates {
		v, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		if filepath.Base(c) == "cpu.max" {
			q, p, _ := strings.Cut(strings.TrimSpace(string(v)), " ")
			qn, err1 := strconv.ParseFloat(q, 64)
			pn, err2 := strconv.ParseFloat(p, 64)
			if err1 != nil || err2 != nil || pn == 0 {
				return -1 // "max": unlimited
			}
			return qn / pn
		}
		per, err := os.ReadFile(filepath.Join(filepath.Dir(c), "cpu.cfs_period_us"))
		if err != nil {
			continue
		}
		qn, _ := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
		pn, _ := strconv.ParseFloat(strings.TrimSpace(string(per)), 64)
		if qn < 0 || pn == 0 {
			return -1
		}
		return qn / pn
	}
	t.Fatalf("no CPU controller file found for pid %d among %v", pid, candidates)
	return 0
}

func (su *suite) testCPU(t *testing.T) {
	small := su.create(t, fnSpec{name: "cpu-128", memoryMB: 128})
	big := su.create(t, fnSpec{name: "cpu-1769", memoryMB: 1769})
	// The first invocation pays the init, which runs unthrottled; the
	// quota applies from the second one on.
	for _, f := range []fn{small, big} {
		var st status
		f.call(t, op{"op": "status"}, &st)
	}
	var s, b burnReport
	small.call(t, op{"op": "burn", "ms": 1000}, &s)
	big.call(t, op{"op": "burn", "ms": 1000}, &b)
	rs := float64(s.CPUMs) / float64(max(s.WallMs, 1))
	rb := float64(b.CPUMs) / float64(max(b.WallMs, 1))
	t.Logf("measured inside: 128 MB got %d ms CPU in %d ms (%.3f vCPU); 1769 MB got %d ms CPU in %d ms (%.3f vCPU)", s.CPUMs, s.WallMs, rs, b.CPUMs, b.WallMs, rb)

	if inGuest() {
		// The guest's cgroup v2 sets the limits; the host sees the VMM.
		if rs > rb/4 {
			t.Errorf("inside a microVM 128 MB got %.3f vCPU and 1769 MB %.3f: not proportional to memory", rs, rb)
		}
		return
	}
	// The limits as the host set them: one vCPU per 1769 MB.
	for _, c := range []struct {
		f    fn
		want float64
	}{{small, 128.0 / 1769}, {big, 1}} {
		pids := hostPidsWithEnv(fnVar + "=" + c.f.name)
		if len(pids) == 0 {
			t.Errorf("%s: no host process found", c.f.name)
			continue
		}
		got := cpuLimit(t, pids[0])
		t.Logf("%s: cgroup CPU limit %.4f vCPU", c.f.name, got)
		if got < c.want*0.85 || got > c.want*1.15 {
			t.Errorf("%s: cgroup CPU limit %.4f vCPU; want %.4f (MemorySize/1769)", c.f.name, got, c.want)
		}
	}
	checkPlacement(t, su, small, big)
	// Inside, the quota is a ceiling: a busy host only lowers what each
	// gets, so the small function's share is bounded whatever the load,
	// and the big one must still clearly get more.
	if rs > 0.2 {
		t.Errorf("the 128 MB function got %.3f vCPU; its quota is 0.072", rs)
	}
	if rb < 2*rs || rb < 0.15 {
		t.Errorf("1769 MB got %.3f vCPU, 128 MB got %.3f: not proportional to memory", rb, rs)
	}
}

// checkPlacement checks the CPUs the functions' processes may run on: one
// (their home) for functions of at most one vCPU, every CPU nubo may use
// for a bigger one.
func checkPlacement(t *testing.T, su *suite, oneVCPU ...fn) {
	t.Helper()
	mine := procField(t, os.Getpid(), "Cpus_allowed_list")
	if !strings.ContainsAny(mine, ",-") {
		t.Logf("this host lets the test use one CPU (%s): nothing to place", mine)
		return
	}
	wide := su.create(t, fnSpec{name: "cpu-3538", memoryMB: 3538})
	// A long invocation may use every CPU while it runs.
	long := oneVCPU[len(oneVCPU)-1]
	burnt := make(chan error, 1)
	go func() { var b burnReport; burnt <- long.try(op{"op": "burn", "ms": 1500}, &b) }()
	allowed := func(f fn) []string {
		var out []string
		for _, pid := range hostPidsWithEnv(fnVar + "=" + f.name) {
			out = append(out, procField(t, pid, "Cpus_allowed_list"))
		}
		return out
	}
	var during []string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if during = allowed(long); len(during) > 0 && !slices.ContainsFunc(during, func(c string) bool { return c != mine }) {
			break
		}
	}
	if len(during) == 0 || slices.ContainsFunc(during, func(c string) bool { return c != mine }) {
		t.Errorf("%s, within a second of a 1.5 s invocation: its processes may run on CPUs %v, want all of %s", long.name, during, mine)
	}
	if err := <-burnt; err != nil {
		t.Fatal(err)
	}
	for _, f := range append(oneVCPU, wide) {
		// A short invocation: a long one runs on every CPU from 50 ms on,
		// and the next starts at home again. One that takes longer than
		// 50 ms on a loaded host is let out too: a few tries.
		var got []string
		for try := 0; try < 5; try++ {
			var st status
			f.call(t, op{"op": "status"}, &st)
			got = allowed(f)
			one := len(got) > 0 && !slices.ContainsFunc(got, func(c string) bool { return strings.ContainsAny(c, ",-") })
			if f.name == wide.name || one {
				break
			}
		}
		switch {
		case len(got) == 0:
			t.Errorf("%s: no host process found", f.name)
		case f.name == wide.name && slices.ContainsFunc(got, func(c string) bool { return c != mine }):
			t.Errorf("%s (2 vCPUs): its processes may run on CPUs %v, want all of %s", f.name, got, mine)
		case f.name != wide.name && slices.ContainsFunc(got, func(c string) bool { return strings.ContainsAny(c, ",-") }):
			t.Errorf("%s (at most 1 vCPU): its processes may run on CPUs %v, want one", f.name, got)
		}
	}
}

// procField is a field of /proc/PID/status.
func procField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, name)
	return ""
}

// keepAnswering invokes f until stop closes, and reports how many answers
// failed and how many succeeded.
func keepAnswering(t *testing.T, f fn, stop <-chan struct{}) (func() (ok, failed int), *sync.WaitGroup) {
	var mu sync.Mutex
	var okN, failedN int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := f.c.Invoke(c, &lambda.InvokeInput{FunctionName: aws.String(f.name), Payload: []byte(`{"op":"sleep","ms":50}`)})
			cancel()
			mu.Lock()
			if err != nil || out.FunctionError != nil {
				failedN++
			} else {
				okN++
			}
			mu.Unlock()
		}
	}()
	return func() (int, int) { mu.Lock(); defer mu.Unlock(); return okN, failedN }, &wg
}

func (su *suite) testMemoryHog(t *testing.T) {
	hog := su.create(t, fnSpec{name: "hog", memoryMB: 128, timeout: 20})
	by := su.create(t, fnSpec{client: su.s.A(), name: "bystander-hog"})
	var st status
	by.call(t, op{"op": "status"}, &st)
	// Warm, so the hog runs under its CPU quota from its first
	// allocation (a cold start's first invocation gets it a few ms in):
	// unthrottled, it can reach its limit before the bystander's first
	// answer, and there would be nothing to observe.
	hog.call(t, op{"op": "status"}, &st)

	stop := make(chan struct{})
	counts, wg := keepAnswering(t, by, stop)
	out := hog.raw(t, op{"op": "hog", "mb": 512})
	okDuring, failedDuring := counts()
	close(stop)
	wg.Wait()

	if aws.ToString(out.FunctionError) != "Unhandled" {
		t.Errorf("FunctionError %q; want Unhandled (payload %s)", aws.ToString(out.FunctionError), out.Payload)
	}
	var e struct{ ErrorType, ErrorMessage string }
	json.Unmarshal(out.Payload, &e)
	t.Logf("hog answer: FunctionError %q, %s", aws.ToString(out.FunctionError), out.Payload)
	switch {
	case e.ErrorType == "Runtime.OutOfMemory":
	case e.ErrorType == "Runtime.ExitError" && strings.Contains(e.ErrorMessage, "signal: killed"):
	default:
		t.Errorf("error %q %q; want Runtime.OutOfMemory, or Runtime.ExitError naming signal: killed", e.ErrorType, e.ErrorMessage)
	}
	if failedDuring > 0 || okDuring == 0 {
		t.Errorf("the bystander answered %d times and failed %d times during the hog", okDuring, failedDuring)
	}
	by.call(t, op{"op": "status"}, &st)
	// The hog's own function recovers (a new runtime or environment).
	hog.call(t, op{"op": "status"}, &st)
}

func (su *suite) testForkBomb(t *testing.T) {
	bomb := su.create(t, fnSpec{name: "bomb", memoryMB: 1024, timeout: 30})
	by := su.create(t, fnSpec{client: su.s.B(), name: "bystander-bomb"})
	var st status
	by.call(t, op{"op": "status"}, &st)

	stop := make(chan struct{})
	counts, wg := keepAnswering(t, by, stop)
	out := bomb.raw(t, op{"op": "forkbomb", "n": 3000})
	// Counted from the host, while the children live: the function's own
	// report could be wrong or missing.
	children := hostPidsWithEnv(fnVar + "=bomb")
	okDuring, failedDuring := counts()
	close(stop)
	wg.Wait()
	var r struct {
		Started     int
		Err         string
		Ms          int64
		Threads     string
		VisiblePids int
	}
	if out.FunctionError != nil {
		// The runtime may die of the limit itself (a thread it could not
		// create); containment is then judged from the host alone.
		t.Logf("the bomb's runtime failed: %s", out.Payload)
	} else if err := json.Unmarshal(out.Payload, &r); err != nil {
		t.Fatalf("report %q: %v", out.Payload, err)
	} else {
		t.Logf("fork bomb: %d children in %d ms, stopped by %q; %d pids visible inside; runtime threads %s",
			r.Started, r.Ms, r.Err, r.VisiblePids, r.Threads)
		if r.Err != "EAGAIN" {
			t.Errorf("spawning stopped with %q; want EAGAIN from pids.max", r.Err)
		}
		if r.Started >= 1024 || r.VisiblePids > 1024 {
			t.Errorf("started %d children, %d pids visible: pids.max 1024 did not hold", r.Started, r.VisiblePids)
		}
		if r.Started < 500 {
			t.Errorf("only %d children before the limit; want close to 1024 (something else stopped the bomb)", r.Started)
		}
	}
	t.Logf("host sees %d processes of the bomb; bystander answered %d times, failed %d times", len(children), okDuring, failedDuring)
	if inGuest() {
		return // the bomb runs in the guest; the host sees only the VMM
	}
	// The agent does not carry the function's environment: everything
	// counted here is the runtime and its children, within pids.max with
	// the agent.
	if len(children) >= 1024 {
		t.Errorf("the host sees %d processes of the bomb: pids.max 1024 did not hold", len(children))
	}
	if len(children) < 500 {
		t.Errorf("the host sees only %d processes of the bomb; the bomb did not run", len(children))
	}
	for _, pid := range children {
		if p, ok := readHostProc(pid); ok && len(p.uids) > 0 && p.uids[0] < hostUIDBase {
			t.Errorf("bomb process %d runs as host uid %v", pid, p.uids)
			break
		}
	}
	if failedDuring > 0 || okDuring == 0 {
		t.Errorf("the bystander answered %d times and failed %d times during the bomb", okDuring, failedDuring)
	}
	by.call(t, op{"op": "status"}, &st)

	// Deleting the function retires its environment: every child goes,
	// even those in sessions of their own.
	if _, err := bomb.c.DeleteFunction(ctx(t), &lambda.DeleteFunctionInput{FunctionName: aws.String(bomb.name)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := hostPidsWithEnv(fnVar + "=bomb")
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			p, _ := readHostProc(left[0])
			t.Fatalf("%d processes of the bomb remain 15 s after DeleteFunction (e.g. pid %d %q)", len(left), left[0], p.cmdline)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitNoLeftovers polls leftovers until none remain or wait passes.
func waitNoLeftovers(wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		left := leftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leftovers lists what this run left on the host: processes of its
// sandboxes, mounts and loop devices under its data dirs, and the cgroups
// of this test process.
func leftovers() []string {
	var out []string
	self := os.Getpid()
	cgMark := fmt.Sprintf("/nubo-%d-", self)
	tag := []byte(runTagVar + "=" + runTag)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := "/proc/" + e.Name()
		why := ""
		if env, err := os.ReadFile(dir + "/environ"); err == nil && bytes.Contains(env, tag) {
			why = "carries this run's tag"
		} else if cg, err := os.ReadFile(dir + "/cgroup"); err == nil && bytes.Contains(cg, []byte(cgMark)) {
			why = "in a cgroup of this run"
		} else if p, ok := readHostProc(pid); ok && p.ppid == self {
			why = "child of the test (a sandbox init or agent)"
		}
		if why != "" {
			p, _ := readHostProc(pid)
			out = append(out, fmt.Sprintf("process %d uids %v (%s): %q", pid, p.uids, why, p.cmdline))
		}
	}
	dataDirsMu.Lock()
	dirs := append([]string(nil), dataDirs...)
	dataDirsMu.Unlock()
	under := func(p string) bool {
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && under(f[4]) {
				out = append(out, "mount "+f[4])
			}
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if f := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"); under(f) {
			out = append(out, fmt.Sprintf("loop device %s backed by %s", filepath.Base(filepath.Dir(filepath.Dir(l))), f))
		}
	}
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), cgMark[1:]) {
			out = append(out, "cgroup "+p)
			return fs.SkipDir
		}
		return nil
	})
	return out
}
