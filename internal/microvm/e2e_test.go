package microvm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/microvm"
	"github.com/nubo-dev/nubo/internal/server"
	"github.com/nubo-dev/nubo/internal/server/servertest"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// The microVM tier end to end: a real nubo server with --isolation
// microvm, driven by the AWS SDK. Guests boot under TCG on the development
// machines (about 5 s each), so the whole file shares one server and
// boots one VM per account.

var (
	fnOnce sync.Once
	fnZip  []byte
	fnErr  error
)

func guestFnZip(t *testing.T) []byte {
	t.Helper()
	fnOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nubo-guestfn-")
		if err != nil {
			fnErr = err
			return
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bootstrap"), "./testdata/guestfn")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fnErr = err
			t.Logf("%s", out)
			return
		}
		body, err := os.ReadFile(filepath.Join(dir, "bootstrap"))
		if err != nil {
			fnErr = err
			return
		}
		fnZip = ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: body, Mode: 0o755})
	})
	if fnErr != nil {
		t.Fatal(fnErr)
	}
	return fnZip
}

func requireVMs(t *testing.T) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, microvm.QEMU)
	testutil.RequiresBinary(t, "mkfs.ext4")
	if _, err := microvm.FindKernel(); err != nil {
		if testutil.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func createFn(t *testing.T, ctx context.Context, c *lambda.Client, name string, acct string, mem int32) {
	t.Helper()
	_, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String("arn:aws:iam::" + acct + ":role/r"),
		Runtime:      types.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: guestFnZip(t)},
		MemorySize:   aws.Int32(mem),
		Timeout:      aws.Int32(30),
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	w := lambda.NewFunctionActiveV2Waiter(c)
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}, time.Minute); err != nil {
		t.Fatal(err)
	}
}

func invoke(t *testing.T, ctx context.Context, c *lambda.Client, name string, ev map[string]any) map[string]any {
	t.Helper()
	payload, _ := json.Marshal(ev)
	out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: payload})
	if err != nil {
		t.Fatalf("invoke %s: %v", name, err)
	}
	if out.FunctionError != nil {
		t.Fatalf("invoke %s: %s: %s", name, *out.FunctionError, out.Payload)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Payload, &m); err != nil {
		t.Fatalf("invoke %s: %v: %s", name, err, out.Payload)
	}
	return m
}

// upstream makes a network namespace standing for the outside world,
// connected to the host by a veth, and serves one line on TCP in it. It
// returns the service's address.
func upstream(t *testing.T) string {
	t.Helper()
	n := os.Getpid()%200 + 1
	hostIP, upIP := fmt.Sprintf("10.216.%d.1", n), fmt.Sprintf("10.216.%d.2", n)
	name := fmt.Sprintf("nmvup%d", n)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(orig)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	var ln net.Listener
	err = func() error {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			return err
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}); err != nil {
			return err
		}
		t.Cleanup(func() {
			if l, err := netlink.LinkByName(name); err == nil {
				netlink.LinkDel(l)
			}
		})
		host, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(hostIP + "/30")
		if err := netlink.AddrAdd(host, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(host); err != nil {
			return err
		}
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			return err
		}
		defer unix.Setns(orig, unix.CLONE_NEWNET)
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if name == "eth0" {
				a, _ := netlink.ParseAddr(upIP + "/30")
				if err := netlink.AddrAdd(l, a); err != nil {
					return err
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		ln, err = net.Listen("tcp", upIP+":0")
		return err
	}()
	if err != nil {
		t.Fatalf("upstream namespace: %v", err)
	}
	testutil.Serve(t, ln, func(c net.Conn) { fmt.Fprintf(c, "hello from upstream to %s\n", c.RemoteAddr()) })
	return ln.Addr().String()
}

// startMixed starts a server whose default isolation is microvm, where
// account B overrides it in the accounts file and runs on the host's
// namespace backend; more changes the configuration further.
func startMixed(t *testing.T, more func(*server.Config)) *servertest.Server {
	t.Helper()
	accts := filepath.Join(t.TempDir(), "accounts.json")
	acctB := servertest.AccountB
	acctB.Isolation = "namespace"
	raw, _ := json.Marshal([]any{servertest.AccountA, acctB})
	if err := os.WriteFile(accts, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return servertest.Start(t, func(c *server.Config) {
		c.Isolation = "microvm"
		c.MicroVMIdleTimeout = time.Hour
		c.AccountsFile = accts
		if more != nil {
			more(c)
		}
	})
}

func TestAccountsGetTheirOwnVMs(t *testing.T) {
	requireVMs(t)
	s := startMixed(t, nil)
	ctx := servertest.Ctx(t, 8*time.Minute)
	dev, a := s.Dev(), s.A()
	createFn(t, ctx, dev, "one", "000000000000", 128)
	createFn(t, ctx, dev, "two", "000000000000", 128)
	createFn(t, ctx, a, "one", servertest.AccountA.AccountID, 128)
	createFn(t, ctx, s.B(), "one", servertest.AccountB.AccountID, 128)

	start := time.Now()
	dev1 := invoke(t, ctx, dev, "one", nil)
	t.Logf("first invoke (VM boot + sandbox): %v: %v", time.Since(start).Round(time.Millisecond), dev1)
	start = time.Now()
	dev2 := invoke(t, ctx, dev, "two", nil)
	t.Logf("second function of the account (same VM, new sandbox): %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	a1 := invoke(t, ctx, a, "one", nil)
	t.Logf("other account (its own VM): %v", time.Since(start).Round(time.Millisecond))
	onHost := invoke(t, ctx, s.B(), "one", nil)
	start = time.Now()
	warm := invoke(t, ctx, dev, "one", nil)
	t.Logf("warm invoke: %v", time.Since(start).Round(time.Millisecond))

	host, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	hostID := strings.TrimSpace(string(host))
	id := func(m map[string]any) string { s, _ := m["bootId"].(string); return s }
	switch {
	case id(dev1) == "" || strings.HasPrefix(id(dev1), "error"):
		t.Fatalf("no boot id: %v", dev1)
	case id(dev1) == hostID:
		t.Fatalf("function ran on the host (boot id %s)", hostID)
	case id(dev1) != id(dev2):
		t.Fatalf("two functions of one account ran in different VMs: %s vs %s", id(dev1), id(dev2))
	case id(dev1) == id(a1):
		t.Fatalf("two accounts share a VM (boot id %s)", id(a1))
	case id(warm) != id(dev1):
		t.Fatalf("warm invoke in another VM: %s vs %s", id(warm), id(dev1))
	case id(onHost) != hostID:
		t.Fatalf("account B (isolation namespace) ran in a VM: boot id %s, host %s", id(onHost), hostID)
	}
	streamThroughVM(t, ctx, dev)

	// Inside the guest the sandbox is on cgroup v2 (the host here is v1).
	if cg, _ := dev1["cgroup"].(string); !strings.HasPrefix(cg, "0::/") {
		t.Errorf("guest sandbox cgroup %q: want a cgroup v2 path", cg)
	}
	if uid, _ := dev1["uid"].(float64); uid != 993 {
		t.Errorf("function uid %v, want 993", dev1["uid"])
	}

	// Egress: from the sandbox in the guest, through the guest's NAT, the
	// VM's tap on the host bridge and the host's NAT, to the outside.
	up := upstream(t)
	if r := invoke(t, ctx, dev, "one", map[string]any{"op": "connect", "addr": up}); !strings.HasPrefix(fmt.Sprint(r["line"]), "hello from upstream") {
		t.Errorf("a function in a microVM could not reach %s: %v", up, r)
	} else {
		t.Logf("egress from the guest: %v", r["line"])
	}
	// Not to the host: the nubo API is on the host's loopback, which the
	// guest's 127.0.0.1 is not, and the host bridge's address is filtered.
	apiPort := s.URL[strings.LastIndexByte(s.URL, ':')+1:]
	if r := invoke(t, ctx, dev, "one", map[string]any{"op": "connect", "addr": "127.0.0.1:" + apiPort}); r["err"] == "" {
		t.Errorf("a function in a microVM reached the nubo API at 127.0.0.1:%s: %v", apiPort, r)
	}

	// What a hostile function tries is refused inside the guest too.
	// SIGKILL to its PID namespace's init (the agent) is dropped by the
	// kernel: the environment must live on.
	invoke(t, ctx, dev, "one", map[string]any{"op": "kill1"})
	if after := invoke(t, ctx, dev, "one", nil); id(after) != id(dev1) {
		t.Errorf("after kill(1): %v", after)
	}
	if r := invoke(t, ctx, dev, "one", map[string]any{"op": "mount"}); r["err"] == "" {
		t.Errorf("mount from the function succeeded")
	}
	if r := invoke(t, ctx, dev, "one", map[string]any{"op": "read", "path": "/run/nubo/nubo"}); !strings.HasPrefix(r["body"].(string), "error") {
		t.Errorf("the function can read the guest agent's binary")
	}

	// The VMM is confined: another user, its own namespaces.
	procs := childQEMUs(os.Getpid())
	if len(procs) < 2 {
		t.Fatalf("want at least 2 QEMU processes (one per account), found %v", procs)
	}
	for _, p := range procs {
		status, _ := os.ReadFile("/proc/" + p + "/status")
		if bytes.Contains(status, []byte("\nUid:\t0\t")) {
			t.Errorf("QEMU %s runs as root", p)
		}
		if cg, _ := os.ReadFile("/proc/" + p + "/cgroup"); !bytes.Contains(cg, []byte("vm-")) {
			t.Errorf("QEMU %s is not in a VM cgroup of its own:\n%s", p, cg)
		}
		for _, ns := range []string{"mnt", "net", "pid"} {
			mine, _ := os.Readlink("/proc/self/ns/" + ns)
			its, _ := os.Readlink("/proc/" + p + "/ns/" + ns)
			if its == "" || its == mine {
				t.Errorf("QEMU %s shares the host's %s namespace", p, ns)
			}
		}
	}

	s.Close()
	// After the server stops, no QEMU and no VM file remains.
	deadline := time.Now().Add(10 * time.Second)
	for len(childQEMUs(os.Getpid())) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := childQEMUs(os.Getpid()); len(left) > 0 {
		t.Fatalf("QEMU still running after Close: %v", left)
	}
	if left, _ := os.ReadDir(filepath.Join(s.DataDir, "microvm")); len(left) > 0 {
		t.Fatalf("VM files left in %s: %v", filepath.Join(s.DataDir, "microvm"), left)
	}
}

// TestIdleEnvironmentsYieldTheirVM: on a node with room for one VM, an
// account whose VM holds only an idle environment gives way to another
// account's first invoke: the idle environment is shut down, its VM
// stopped, and the other account's VM boots. Before, that invoke was
// throttled although nothing was running.
func TestIdleEnvironmentsYieldTheirVM(t *testing.T) {
	requireVMs(t)
	s := servertest.Start(t, func(c *server.Config) {
		c.Isolation = "microvm"
		c.MicroVMIdleTimeout = time.Hour
		c.CapacityMB = 1500 // one 1024 MB VM, not two
	})
	ctx := servertest.Ctx(t, 8*time.Minute)
	dev, a := s.Dev(), s.A()
	createFn(t, ctx, dev, "one", "000000000000", 128)
	createFn(t, ctx, a, "one", servertest.AccountA.AccountID, 128)
	id := func(m map[string]any) string { s, _ := m["bootId"].(string); return s }
	first := id(invoke(t, ctx, dev, "one", nil))
	other := id(invoke(t, ctx, a, "one", nil))
	again := id(invoke(t, ctx, dev, "one", nil))
	if first == "" || other == "" || again == "" || first == other || again == other || again == first {
		t.Fatalf("boot ids %q, then the other account %q, then the first again %q: want three VMs, one after the other", first, other, again)
	}
	if n := len(childQEMUs(os.Getpid())); n != 1 {
		t.Errorf("%d QEMU processes run; want 1 (room for one VM)", n)
	}
}

// TestTiersShareTheNodeCapacity: on a node running both tiers, namespace
// environments and microVMs charge one memory budget. An idle namespace
// environment gives way to a VM; a VM then holding the memory throttles a
// namespace function that would not fit beside it (each tier used to count
// only itself, and the node took twice its capacity), and gives way to its
// retry once its idle environment is gone.
func TestTiersShareTheNodeCapacity(t *testing.T) {
	requireVMs(t)
	s := startMixed(t, func(c *server.Config) {
		c.CapacityMB = 1500 // one 1024 MB VM or one 1024 MB function, not both
	})
	ctx := servertest.Ctx(t, 8*time.Minute)
	dev, b := s.Dev(), s.B()
	createFn(t, ctx, dev, "one", "000000000000", 128)
	createFn(t, ctx, b, "big", servertest.AccountB.AccountID, 1024)
	invoke(t, ctx, b, "big", nil)
	invoke(t, ctx, dev, "one", nil) // the VM: B's idle environment makes room
	_, err := b.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("big")})
	var tooMany *types.TooManyRequestsException
	if !errors.As(err, &tooMany) {
		t.Fatalf("a 1024 MB namespace function beside a 1024 MB VM on a 1500 MB node: %v; want TooManyRequestsException", err)
	}
	// That throttle shut down the VM's idle environment, and the VM,
	// emptied on a full node, stops at once: a retry, as SDKs make after
	// a 429, finds the room.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := b.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("big")})
		if err == nil {
			break
		}
		if !errors.As(err, &tooMany) || time.Now().After(deadline) {
			t.Fatalf("retrying the namespace function: %v; want success once the idle VM is gone", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its QEMU stops in the background.
	for stop := time.Now().Add(20 * time.Second); len(childQEMUs(os.Getpid())) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(stop) {
			t.Fatalf("QEMU %v still runs 20 s after the VM was stopped for room", childQEMUs(os.Getpid()))
		}
	}
}

// streamThroughVM: a runtime that streams its response (the invoke
// tests' testdata/streamfn) has its parts reach an InvokeWithResponseStream
// caller as written from inside the account's microVM too: Chunk frames
// cross the guest agent's connection like any other.
func streamThroughVM(t *testing.T, ctx context.Context, c *lambda.Client) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bootstrap"), "../invoke/testdata/streamfn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build streamfn: %v\n%s", err, out)
	}
	body, err := os.ReadFile(filepath.Join(dir, "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{
		FunctionName: aws.String("streamer"), Role: aws.String("arn:aws:iam::000000000000:role/r"),
		Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Timeout: aws.Int32(30),
		Code: &types.FunctionCode{ZipFile: ziptest.Zip(t, ziptest.File{Name: "bootstrap", Body: body, Mode: 0o755})},
	}); err != nil {
		t.Fatal(err)
	}
	if err := lambda.NewFunctionActiveV2Waiter(c).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("streamer")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	r, err := servertest.InvokeStream(t, ctx, c, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("streamer"),
		Payload: []byte(`{"parts":3,"ms":500}`)})
	if err != nil {
		t.Fatal(err)
	}
	got, first, done, complete := r.Payload, r.First, r.Done, r.Complete
	if string(got) != "part-0\npart-1\npart-2\n" || complete == nil || complete.ErrorCode != nil {
		t.Fatalf("streamed from the VM: %q, InvokeComplete %+v", got, complete)
	}
	if done-first < 700*time.Millisecond {
		t.Errorf("first part after %v, end after %v: parts from the VM were not passed on as written", first, done)
	}
	t.Logf("stream from the VM: first part after %v, end after %v", first.Round(time.Millisecond), done.Round(time.Millisecond))
}
