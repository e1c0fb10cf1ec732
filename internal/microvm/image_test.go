package microvm

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

func TestUserlandClosure(t *testing.T) {
	files, err := userlandFiles([]string{"/usr/sbin/mkfs.ext4"})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(files, "\n")
	for _, want := range []string{"/usr/sbin/mke2fs", "libext2fs.so", "libc.so.6", "ld-linux-x86-64.so.2"} {
		if !strings.Contains(joined, want) {
			t.Errorf("closure of mkfs.ext4 lacks %s:\n%s", want, joined)
		}
	}
	for _, f := range files {
		if strings.HasPrefix(f, "/lib/") || strings.HasPrefix(f, "/lib64/") || strings.HasPrefix(f, "/home") {
			t.Errorf("closure holds %s: paths must be real, never through merged-/usr links", f)
		}
	}
}

func TestBuildUserland(t *testing.T) {
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	start := time.Now()
	img, err := BuildUserland(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	t.Logf("image %s: %d MiB in %v", img, st.Size()>>20, time.Since(start))
	again, err := BuildUserland(dir)
	if err != nil || again != img {
		t.Fatalf("second build: %v, %s (want the cached %s)", err, again, img)
	}
	if out, err := exec.Command("debugfs", "-R", "ls -l /usr/sbin", img).CombinedOutput(); err == nil && !strings.Contains(string(out), "mke2fs") {
		t.Fatalf("image lacks /usr/sbin/mke2fs:\n%s", out)
	}
}

func TestGuestModulesInDependencyOrder(t *testing.T) {
	kernel, err := FindKernel()
	if err != nil {
		t.Skip(err)
	}
	files, order, err := moduleFiles(kernelRelease(kernel))
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(order)
	if len(files) != len(names) {
		t.Fatalf("%d files, %d names", len(files), len(names))
	}
	pos := map[string]int{}
	for i, n := range names {
		pos[n] = i
	}
	// Dependencies first: virtio_ring before virtio before virtio_net;
	// nf_conntrack before nft_ct.
	for _, want := range []string{"virtio_net.ko", "nft_masq.ko", "nft_fib_inet.ko"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("%s is not loaded: %v", want, names)
		}
	}
	for _, pair := range [][2]string{{"virtio_ring.ko", "virtio.ko"}, {"virtio.ko", "virtio_net.ko"}, {"nf_conntrack.ko", "nft_ct.ko"}, {"nf_tables.ko", "nft_masq.ko"}, {"nft_fib.ko", "nft_fib_inet.ko"}, {"nft_fib_ipv4.ko", "nft_fib_inet.ko"}} {
		a, okA := pos[pair[0]]
		b, okB := pos[pair[1]]
		if okA && okB && a > b {
			t.Errorf("%s loads after %s: %v", pair[0], pair[1], names)
		}
	}
	t.Logf("%d modules: %v", len(names), names)
}
