package microvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

const marker = "nubo-guest-ok"

// guestInitramfs is busybox and an init that prints the marker with the
// guest's boot id, then powers off.
func guestInitramfs(t *testing.T) string {
	t.Helper()
	bb := testutil.RequiresBinary(t, "busybox")
	body, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body[:min(len(body), 4096)], []byte{0x7f, 'E', 'L', 'F'}) || bytes.Contains(body, []byte("/lib64/ld-linux")) {
		t.Fatalf("%s is not a static busybox (install busybox-static)", bb)
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox mount -t proc proc /proc\n" +
		"/bin/busybox echo \"" + marker + " boot_id=$(/bin/busybox cat /proc/sys/kernel/random/boot_id)\"\n" +
		"/bin/busybox poweroff -f\n"
	path := filepath.Join(t.TempDir(), "initrd.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = WriteInitramfs(f, []File{
		{Name: "init", Mode: 0o755, Body: []byte(init)},
		{Name: "bin/busybox", Mode: 0o755, Body: body},
		{Name: "bin/sh", Link: "busybox"},
		{Name: "proc", Mode: os.ModeDir | 0o755},
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestInitramfsIsCpio(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, []File{
		{Name: "init", Mode: 0o755, Body: []byte("#!/bin/sh\n")},
		{Name: "a/b/c.txt", Mode: 0o644, Body: []byte("hello")},
		{Name: "bin/sh", Link: "busybox"},
	}); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	cpio := testutil.RequiresBinary(t, "cpio")
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = zr
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	for _, want := range []string{"init", "a/b/c.txt", "bin/sh -> busybox", "a/b"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
}

// TestBootGuest boots the guest kernel with nubo's initramfs on the
// accelerator DetectAccel picks (TCG on the development machines, whose
// KVM cannot run guests), twice: each boot reaches init, and the two have
// different boot ids (fresh guests). No QEMU remains afterwards.
func TestBootGuest(t *testing.T) {
	testutil.RequiresBinary(t, QEMU)
	kernel, err := FindKernel()
	if err != nil {
		if testutil.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	initrd := guestInitramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	acc := DetectAccel(ctx, kernel, initrd, marker, "")
	t.Logf("accelerator %s: %s", acc.Name, acc.Reason)
	var ids []string
	for i := 0; i < 2; i++ {
		start := time.Now()
		var console bytes.Buffer
		vm, line, err := BootUntil(ctx, Config{Kernel: kernel, Initrd: initrd, Accel: acc.Name, MemoryMB: 256, Console: &console}, marker, 90*time.Second)
		if err != nil {
			t.Fatalf("boot %d: %v\nconsole:\n%s", i, err, console.String())
		}
		t.Logf("boot %d reached init in %v: %s", i, time.Since(start).Round(time.Millisecond), line)
		_, id, _ := strings.Cut(line, "boot_id=")
		ids = append(ids, strings.TrimSpace(id))
		select {
		case <-vm.Done(): // the init powers off
		case <-time.After(30 * time.Second):
			vm.Kill()
			t.Fatal("guest did not power off")
		}
	}
	if ids[0] == "" || ids[0] == ids[1] {
		t.Fatalf("boot ids %q: want two different, non-empty ids", ids)
	}
	out, _ := exec.Command("pgrep", "-f", QEMU+" -M microvm").Output()
	if len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("QEMU still running: %s", out)
	}
}
