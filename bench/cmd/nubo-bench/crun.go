package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// crunHelperArg makes the benchmark binary the crun helper: a process in a
// private mount namespace that runs `crun run` on request and times only
// crun. It lives for the whole figure, so the namespace set-up is paid once
// and never measured.
const crunHelperArg = "__crun-helper"

// cgroupUnified is where a hybrid cgroup host mounts its v2 hierarchy.
// crun 1.8 refuses hybrid mode when that hierarchy carries controllers
// (here hugetlb); unmounting it in a private mount namespace makes crun see
// a plain v1 host without touching the host's own mounts.
const cgroupUnified = "/sys/fs/cgroup/unified"

// makeBundle writes a minimal OCI bundle running /bin/true: crun's own
// default spec with the process replaced, and a rootfs holding only
// /bin/true and the shared objects it loads.
func makeBundle(crun, dir string) error {
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	files, err := withLibs("/bin/true")
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := copyInto(rootfs, f); err != nil {
			return err
		}
	}
	// rootfs/bin/true is what the container runs, wherever the host keeps
	// true (a merged-/usr host resolves /bin/true through a symlink).
	if err := copyFile(files[0], filepath.Join(rootfs, "bin", "true")); err != nil {
		return err
	}
	cmd := exec.Command(crun, "spec")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("crun spec: %v: %s", err, out)
	}
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("crun spec output: %w", err)
	}
	proc, ok := spec["process"].(map[string]any)
	if !ok {
		return errors.New("crun spec output has no process")
	}
	proc["args"] = []string{"/bin/true"}
	proc["terminal"] = false
	if b, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// withLibs returns the real path of bin followed by the shared objects the
// dynamic loader maps for it (as ldd lists them), the loader included.
func withLibs(bin string) ([]string, error) {
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, err
	}
	files := []string{real}
	out, err := exec.Command("ldd", real).Output()
	if err != nil {
		// A static binary: ldd says so and exits non-zero.
		return files, nil
	}
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				files = append(files, f)
			}
		}
	}
	return files, nil
}

// copyInto copies the host file at abs to the same path under root, and,
// when abs is reached through symlinked directories (/lib64 → usr/lib64),
// to its resolved path as well.
func copyInto(root, abs string) error {
	if err := copyFile(abs, filepath.Join(root, abs)); err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		return copyFile(real, filepath.Join(root, real))
	}
	return nil
}

// copyFile copies src to dst in one write. The page cache keeps a file in
// folios as large as the writes that brought it, and a program exec'd from
// small folios takes more page faults and CPU to start (docs/performance.md,
// session 24): the peers' and floors' programs are written as nubo's code
// cache writes a function's, so neither side starts with that handicap.
func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, st.Mode().Perm())
}

// crunHelper is the parent's handle on the helper process.
type crunHelper struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	seq  int
	name string
}

func startCrunHelper(crun, bundle string) (*crunHelper, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, crunHelperArg, crun, bundle)
	// CLONE_NEWNS through Unshareflags: the Go runtime also makes every
	// mount private in the child before exec, so the unmount below cannot
	// propagate back to the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if _, err := start(cmd); err != nil {
		return nil, err
	}
	h := &crunHelper{cmd: cmd, in: in, out: bufio.NewReader(out), name: fmt.Sprintf("nubo-bench-%d", os.Getpid())}
	// The helper says "ready" once its namespace is set up, or why not.
	line, err := h.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		h.stop()
		return nil, fmt.Errorf("crun helper: %q %v", strings.TrimSpace(line), err)
	}
	return h, nil
}

// run asks for one `crun run` and returns crun's wall time.
func (h *crunHelper) run() (time.Duration, error) {
	h.seq++
	if _, err := fmt.Fprintf(h.in, "%s-%d\n", h.name, h.seq); err != nil {
		return 0, err
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("crun helper: %w", err)
	}
	line = strings.TrimSpace(line)
	if ns, ok := strings.CutPrefix(line, "ok "); ok {
		v, err := strconv.ParseInt(ns, 10, 64)
		return time.Duration(v), err
	}
	return 0, errors.New(strings.TrimPrefix(line, "err "))
}

func (h *crunHelper) stop() {
	h.in.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

// crunHelperMain runs in the helper process: args are crun and the bundle.
// Each line on stdin names a container; the reply is "ok <ns>" or
// "err <reason>". crun run removes the container when /bin/true exits; a
// failed run is deleted by force so no state is left in crun's root.
func crunHelperMain(args []string) int {
	if len(args) != 2 {
		fmt.Println("err usage: crun bundle")
		return 2
	}
	crun, bundle := args[0], args[1]
	if isMountpoint(cgroupUnified) {
		if err := unix.Unmount(cgroupUnified, unix.MNT_DETACH); err != nil {
			fmt.Printf("err umount %s: %v\n", cgroupUnified, err)
			return 1
		}
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		id := strings.TrimSpace(sc.Text())
		cmd := exec.Command(crun, "run", "--bundle", bundle, id)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			exec.Command(crun, "delete", "--force", id).Run()
			fmt.Printf("err crun run: %v: %s\n", err, strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", " | "))
			continue
		}
		fmt.Printf("ok %d\n", d.Nanoseconds())
	}
	return 0
}

func isMountpoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
