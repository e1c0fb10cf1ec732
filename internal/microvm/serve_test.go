package microvm_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/netenv"
	"github.com/nubo-dev/nubo/internal/server/servertest"
	"github.com/nubo-dev/nubo/internal/testutil"
)

// serveProc is a real `nubo serve` process.
type serveProc struct {
	cmd   *exec.Cmd
	addr  chan string
	done  chan struct{}
	mu    sync.Mutex
	lines bytes.Buffer
}

var servingRE = regexp.MustCompile(`msg="nubo serving" listen=(\S+)`)

func buildNubo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nubo")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/nubo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startServe(t *testing.T, bin string, args ...string) (*serveProc, string) {
	t.Helper()
	p := &serveProc{cmd: exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...),
		addr: make(chan string, 1), done: make(chan struct{})}
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				p.addr <- m[1]
			}
		}
		io.Copy(io.Discard, pipe)
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("nubo serve log:\n%s", p.log())
		}
	})
	select {
	case a := <-p.addr:
		return p, a
	case <-p.done:
	case <-time.After(60 * time.Second):
	}
	t.Fatalf("nubo serve did not start:\n%s", p.log())
	return nil, ""
}

func (p *serveProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines.String()
}

// childQEMUs lists QEMU processes whose parent is pid.
func childQEMUs(pid int) []string {
	var out []string
	for child, p := range testutil.Procs() {
		if p.PPID != pid {
			continue
		}
		if cmd, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/cmdline"); err == nil && bytes.HasPrefix(cmd, []byte("qemu-system")) {
			out = append(out, strconv.Itoa(child))
		}
	}
	return out
}

// tierLeftovers lists what of the microVM tier under data (and of the
// network named net) remains on the host.
func tierLeftovers(data, net string, pids ...int) []string {
	var out []string
	if ents, _ := os.ReadDir(filepath.Join(data, "microvm")); len(ents) > 0 {
		for _, e := range ents {
			out = append(out, "file: "+filepath.Join(data, "microvm", e.Name()))
		}
	}
	if b, err := exec.Command("ip", "-o", "link").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], net+"-") {
				out = append(out, "link: "+f[1])
			}
		}
	}
	for _, pid := range pids {
		prefix := fmt.Sprintf("nubo-%d-", pid)
		for _, c := range []string{"memory", "pids", "cpu", "unified", ""} {
			if m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", c, "*", prefix+"*")); len(m) > 0 {
				out = append(out, "cgroup: "+m[0])
			}
			if m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", c, prefix+"*")); len(m) > 0 {
				out = append(out, "cgroup: "+m[0])
			}
		}
		out = append(out, childQEMUs(pid)...)
	}
	return out
}

// TestServeKill9AndStop: a `nubo serve --isolation microvm` killed with
// kill -9 takes its VMs with it (their QEMUs die with nubo); the next start
// on the same data dir removes what the killed one left, and a SIGTERM then
// leaves nothing of the tier: no QEMU, tap, cgroup, image or VM file.
func TestServeKill9AndStop(t *testing.T) {
	requireVMs(t)
	bin := buildNubo(t)
	data := t.TempDir()
	slot := os.Getpid()%200 + 1
	net := fmt.Sprintf("nm%x", slot)
	vmmBase := 1_950_000 + slot*1000
	args := []string{"--isolation", "microvm", "--microvm-accel", "tcg", "--log-level", "debug", "--data-dir", data, "--net-name", net,
		"--subnet", fmt.Sprintf("10.233.%d.0/24", slot), "--sandbox-uid-base", strconv.Itoa(50_000_000 + slot*64_000),
		"--microvm-uid-base", strconv.Itoa(vmmBase)}
	// Whatever happens to the servers, their network goes (a killed one
	// leaves its bridge and firewall table for the next start to remove).
	t.Cleanup(func() { netenv.CleanupStale(netenv.Config{Name: net}) })
	p, addr := startServe(t, bin, args...)
	ctx := servertest.Ctx(t, 5*time.Minute)
	c := servertest.Client("http://"+addr, "test", "test")
	createFn(t, ctx, c, "k9", "000000000000", 128)
	invoke(t, ctx, c, "k9", nil)
	if q := childQEMUs(p.cmd.Process.Pid); len(q) != 1 {
		t.Fatalf("want one QEMU child of nubo, found %v\n%s", q, p.log())
	}
	p.cmd.Process.Kill()
	<-p.done
	deadline := time.Now().Add(10 * time.Second)
	for len(childQEMUs(p.cmd.Process.Pid)) > 0 || qemuOrphans(vmmBase) {
		if time.Now().After(deadline) {
			t.Fatal("QEMU outlived a nubo killed with kill -9")
		}
		time.Sleep(100 * time.Millisecond)
	}
	killed := tierLeftovers(data, net, p.cmd.Process.Pid)
	t.Logf("left by kill -9 for the next start: %v", killed)

	q, addr := startServe(t, bin, args...)
	// Serving means the backend is up: it removed the killed run's VM
	// directories, taps and cgroups first.
	// (The new server builds its own images at once: those are not the
	// killed run's, which went with the rest of its directory.)
	var left []string
	for _, l := range tierLeftovers(data, net, p.cmd.Process.Pid) {
		if !strings.HasSuffix(l, "/microvm/images") {
			left = append(left, l)
		}
	}
	if len(left) > 0 {
		t.Errorf("the restart did not remove what the killed nubo left: %v", left)
	}
	c = servertest.Client("http://"+addr, "test", "test")
	// The function survived in the store; a new VM runs it.
	invoke(t, ctx, c, "k9", nil)
	q.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-q.done:
	case <-time.After(60 * time.Second):
		t.Fatal("nubo serve did not stop after SIGTERM")
	}
	time.Sleep(200 * time.Millisecond)
	left = tierLeftovers(data, net, p.cmd.Process.Pid, q.cmd.Process.Pid)
	if _, err := exec.Command("ip", "link", "show", net+"0").Output(); err == nil {
		left = append(left, "bridge: "+net+"0")
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); bytes.Contains(out, []byte("inet "+net+"\n")) {
		left = append(left, "nft table: inet "+net)
	}
	if len(left) > 0 || qemuOrphans(vmmBase) {
		t.Fatalf("left behind after SIGTERM: %v (QEMU of ours running: %v)\n%s", left, qemuOrphans(vmmBase), q.log())
	}
}

// qemuOrphans reports a QEMU running as one of the VMM uids from base on.
func qemuOrphans(base int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.HasPrefix(cmd, []byte("qemu-system")) {
			continue
		}
		status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				if uid, _ := strconv.Atoi(f[1]); uid > base && uid < base+1000 {
					return true
				}
			}
		}
	}
	return false
}
