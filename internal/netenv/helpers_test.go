package netenv

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/nubo-dev/nubo/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary, re-executed, stand in for a sandbox's
// init: a process in a network namespace of its own (clone with
// CLONE_NEWNET, as the sandbox does) that brings lo up and waits.
const childEnv = "NUBO_NETENV_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	before := iptablesTables()
	code := m.Run()
	removeEmptyIptablesTables(before)
	os.Exit(code)
}

// iptablesTables lists the tables iptables-nft keeps in nftables (family
// ip), which the iptables backend's first rule creates if missing.
func iptablesTables() map[string]bool {
	have := map[string]bool{}
	if os.Geteuid() != 0 {
		return have
	}
	c, err := nftables.New()
	if err != nil {
		return have
	}
	tables, _ := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	for _, t := range tables {
		have[t.Name] = true
	}
	return have
}

// removeEmptyIptablesTables removes the iptables tables ("ip filter",
// "ip nat") these tests made, if they are still as iptables created them:
// built-in chains only, no rules, policy accept. The package itself never
// does this (a program adding its first iptables rule at that moment could
// lose it); a test run may, to leave the host as it found it.
func removeEmptyIptablesTables(before map[string]bool) {
	if os.Geteuid() != 0 {
		return
	}
	c, err := nftables.New()
	if err != nil {
		return
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return
	}
	for _, t := range tables {
		if before[t.Name] || (t.Name != "filter" && t.Name != "nat" && t.Name != "raw") {
			continue
		}
		pristine := true
		for _, ch := range chains {
			if ch.Table.Name != t.Name {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil || len(rules) > 0 || ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
				pristine = false
			}
		}
		if pristine {
			c.DelTable(t)
			_ = c.Flush()
		}
	}
}

func runChild() int {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	// Live until the test closes stdin or dies.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// testNS is a network namespace held by a child process, like a sandbox's.
type testNS struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	fd    int // open /proc/<pid>/ns/net
	// listeners hold the namespace alive as much as the process: stop
	// closes them.
	listeners []net.Listener
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	// No Pdeathsig: it fires when the forking thread exits, not the
	// process. The child leaves when its stdin closes, which includes the
	// test process dying.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &testNS{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, fd: -1}
	t.Cleanup(n.stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("namespace child: %q, %v", line, err)
	}
	n.fd, err = unix.Open(fmt.Sprintf("/proc/%d/ns/net", n.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stop ends the child; its namespace, and whatever is in it, goes away
// once the last reference (our fd) is closed.
func (n *testNS) stop() {
	if n.cmd == nil {
		return
	}
	for _, l := range n.listeners {
		l.Close()
	}
	n.stdin.Close()
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
	n.cmd = nil
}

func (n *testNS) do(t *testing.T, fn func(h *netlink.Handle) error) {
	t.Helper()
	err := inNetns(n.fd, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serve listens on every address of the namespace (host when n is nil)
// and answers each connection with the address it came from.
func serve(t *testing.T, n *testNS) int {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}
	var err error
	if n == nil {
		err = listen()
	} else {
		err = inNetns(n.fd, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n == nil {
		t.Cleanup(func() { ln.Close() })
	} else {
		n.listeners = append(n.listeners, ln)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// dial connects from inside n and returns the source address the server
// saw.
func dial(n *testNS, to netip.Addr, port int, timeout time.Duration) (string, error) {
	var seen string
	err := inNetns(n.fd, func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(to, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		seen = strings.TrimSpace(line)
		return err
	})
	return seen, err
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hostLinkNames lists the host's link names.
func hostLinkNames(t *testing.T) []string {
	t.Helper()
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// assertNothingLeft checks the host for every kind of object an instance
// named name with bridge bridge could leave.
func assertNothingLeft(t *testing.T, name, bridge string) {
	t.Helper()
	// A tap goes when the last copy of its file is closed, and a child
	// that another parallel test is forking holds a copy until it execs:
	// links get a moment to go.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var left []string
		for _, l := range hostLinkNames(t) {
			if l == bridge || strings.HasPrefix(l, name+"-") {
				left = append(left, l)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			for _, l := range left {
				t.Errorf("link %s left behind", l)
			}
			break
		}
	}
	// Whole words only: other parallel tests' bridges (nubotest10, …)
	// share the prefix.
	for _, f := range strings.Fields(run(t, "ip", "-o", "link")) {
		if strings.TrimSuffix(f, ":") == bridge {
			t.Errorf("ip link still shows %s", bridge)
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		for _, line := range strings.Split(run(t, "nft", "list", "tables"), "\n") {
			if l := strings.TrimSpace(line); l == "table inet "+name || l == "table bridge "+name {
				t.Errorf("nft %s left behind", l)
			}
		}
	}
	if _, err := exec.LookPath("iptables-save"); err == nil {
		if out := run(t, "iptables-save"); strings.Contains(out, strings.ToUpper(name)+"-") {
			t.Errorf("iptables rules left behind:\n%s", out)
		}
	}
}

// primaryIPv4 is the host's address on the interface of its default
// route, if it has one.
func primaryIPv4(t *testing.T) netip.Addr {
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() != 0 {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				return ip.Unmap()
			}
		}
	}
	return netip.Addr{}
}

func backendUsable(t *testing.T, backend string) {
	t.Helper()
	var err error
	switch backend {
	case BackendNftables:
		_, err = newNftables("probe", slog.New(slog.DiscardHandler))
	case BackendIptables:
		_, err = newIptables("probe", slog.New(slog.DiscardHandler))
	}
	if err != nil {
		// A CI machine has both.
		if testutil.InCI() {
			t.Fatalf("%s unusable: %v", backend, err)
		}
		t.Skipf("%s unusable: %v", backend, err)
	}
}
