package nsbox

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestVolumeImageFromTemplate: a volume image is the template's file system
// byte for byte, as sparse as the template, and the template is made once
// per size however many volumes are asked for at once.
func TestVolumeImageFromTemplate(t *testing.T) {
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	m := newVolumeMaker(filepath.Join(dir, "templates"))
	const sizeMB = 64
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.image(filepath.Join(dir, "vol"+string(rune('a'+i))+".img"), sizeMB)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "templates"))
	if len(ents) != 1 {
		t.Fatalf("templates dir holds %d files; want 1 (one template per size)", len(ents))
	}
	tmpl, err := m.template(sizeMB)
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(tmpl)
	tmpl.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != sizeMB<<20 {
		t.Fatalf("template is %d bytes; want %d", len(want), sizeMB<<20)
	}
	if !bytes.Equal(want[1024+0x38:1024+0x3a], []byte{0x53, 0xef}) { // s_magic 0xEF53
		t.Fatalf("template has no ext4 superblock magic")
	}
	for i := range errs {
		p := filepath.Join(dir, "vol"+string(rune('a'+i))+".img")
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the template", p)
		}
		var st, tst syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(tmpl.Name(), &tst); err != nil {
			t.Fatal(err)
		}
		// Blocks are 512 bytes; allow a little for the file system's own
		// allocation granularity.
		if st.Blocks > tst.Blocks+64 || st.Blocks*512 > 4<<20 {
			t.Errorf("%s allocates %d KiB, the template %d KiB; want it as sparse", p, st.Blocks/2, tst.Blocks/2)
		}
	}
	// A second volume of the same name is refused, not overwritten.
	if err := m.image(filepath.Join(dir, "vola.img"), sizeMB); err == nil {
		t.Errorf("image over an existing file succeeded")
	}
}

// TestCopyDataKeepsHoles: data past holes lands at its offsets, and the
// holes stay holes.
func TestCopyDataKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const size = 16 << 20
	if err := src.Truncate(size); err != nil {
		t.Fatal(err)
	}
	chunks := map[int64][]byte{0: bytes.Repeat([]byte("a"), 5000), 4 << 20: []byte("middle"), size - 3: []byte("end")}
	for off, b := range chunks {
		if _, err := src.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := copyData(dst, src, size); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src.Name())
	got, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(got, want) {
		t.Fatal("copy differs from the source")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst.Name(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("copy allocates %d KiB of a 16 MiB file with 5 KB of data; want its holes kept", st.Blocks/2)
	}
}

// TestVolumeTemplateRetriedAfterFailure: a failed template is not kept; the
// next volume of the size makes it, and so does one after the template was
// removed.
func TestVolumeTemplateRetriedAfterFailure(t *testing.T) {
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	blocker := filepath.Join(dir, "templates")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := newVolumeMaker(blocker)
	if err := m.image(filepath.Join(dir, "a.img"), 32); err == nil {
		t.Fatal("image with no place for its template succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "a.img")); !os.IsNotExist(err) {
		t.Errorf("failed image left its file: %v", err)
	}
	os.Remove(blocker)
	if err := m.image(filepath.Join(dir, "b.img"), 32); err != nil {
		t.Fatalf("image after the failure: %v", err)
	}
	tmpl, err := m.template(32)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Close()
	os.Remove(tmpl.Name())
	if err := m.image(filepath.Join(dir, "c.img"), 32); err != nil {
		t.Fatalf("image after the template was removed: %v", err)
	}
	if _, err := os.Stat(tmpl.Name()); err != nil {
		t.Errorf("template not made again: %v", err)
	}
}

// TestVolumeTemplatesBounded: at most maxTemplates templates stay, the
// least recently used going first, and a volume of an evicted size still
// comes out whole (its template is made again).
func TestVolumeTemplatesBounded(t *testing.T) {
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	m := newVolumeMaker(filepath.Join(dir, "templates"))
	sizes := make([]int, maxTemplates+3)
	for i := range sizes {
		sizes[i] = 8 + i
		if err := m.image(filepath.Join(dir, fmt.Sprintf("v%d.img", i)), sizes[i]); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			continue
		}
		// The first size stays in use.
		if err := m.image(filepath.Join(dir, fmt.Sprintf("v%d-first.img", i)), sizes[0]); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(dir, "templates"))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name()] = true
	}
	if len(ents) != maxTemplates {
		t.Fatalf("%d templates kept, want %d: %v", len(ents), maxTemplates, have)
	}
	for _, size := range append([]int{sizes[0]}, sizes[len(sizes)-maxTemplates+1:]...) {
		if !have[fmt.Sprintf("tmp-%dM.img", size)] {
			t.Errorf("the template of %d MB, recently used, was evicted: %v", size, have)
		}
	}
	// An evicted size (the second) is made again.
	p := filepath.Join(dir, "again.img")
	if err := m.image(p, sizes[1]); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != sizes[1]<<20 || !bytes.Equal(b[1024+0x38:1024+0x3a], []byte{0x53, 0xef}) {
		t.Fatalf("volume of an evicted size: %d bytes, no ext4 superblock", len(b))
	}
}

// TestVolumeTemplatesConcurrent: many sizes at once, each asked for twice,
// all come out (an eviction waits for no template being made), and the
// templates kept fall back to the bound.
func TestVolumeTemplatesConcurrent(t *testing.T) {
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	m := newVolumeMaker(filepath.Join(dir, "templates"))
	var wg sync.WaitGroup
	errs := make(chan error, 2*(maxTemplates+6))
	for i := range maxTemplates + 6 {
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- m.image(filepath.Join(dir, fmt.Sprintf("v%d-%d.img", i, j)), 8+i)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := m.image(filepath.Join(dir, "last.img"), 64); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	n := len(m.templates)
	m.mu.Unlock()
	if n > maxTemplates {
		t.Fatalf("%d templates kept after the burst, want at most %d", n, maxTemplates)
	}
}

// TestVolumeLeavesNoImage: a volume is a mounted file system owned by the
// uid asked for, and its image is gone from disk once volume returns (the
// loop device holds it); closing the volume clears the loop device.
func TestVolumeLeavesNoImage(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresBinary(t, "mkfs.ext4")
	dir := t.TempDir()
	m := newVolumeMaker(filepath.Join(dir, "templates"))
	image := filepath.Join(dir, "vols", "a.img")
	v, err := m.volume(image, 64, 4242, 4243)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(image); !os.IsNotExist(err) {
		t.Errorf("image still on disk after volume: %v", err)
	}
	root := fmt.Sprintf("/proc/self/fd/%d", v.tree.Fd())
	var st syscall.Stat_t
	if err := syscall.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 4242 || st.Gid != 4243 || st.Mode&0o7777 != 0o1777 {
		t.Errorf("volume root is %d:%d mode %o; want 4242:4243 mode 1777", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), bytes.Repeat([]byte("x"), 1<<20), 0o600); err != nil {
		t.Fatalf("write to the volume: %v", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(root, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("volume is file system type %#x; want ext4", fs.Type)
	}
	loops := loopsBacking(t, image)
	if len(loops) != 1 {
		t.Fatalf("%d loop devices back %s; want 1", len(loops), image)
	}
	// loops[0] is /sys/block/loopN/loop/backing_file.
	dev := filepath.Base(filepath.Dir(filepath.Dir(loops[0])))
	if opts, err := os.ReadFile("/proc/fs/ext4/" + dev + "/options"); err != nil {
		t.Errorf("options of the volume's file system: %v", err)
	} else if !slices.Contains(strings.Fields(strings.ReplaceAll(string(opts), ",", " ")), "nobarrier") {
		t.Errorf("volume mounted with cache flushes (options %q); want nobarrier", opts)
	}
	// The device's logical block size is the file system's (1 KiB at 64
	// MB, as mkfs makes it; 4 KiB from 512 MB): mounting then changes no
	// block size.
	if b, err := os.ReadFile("/sys/block/" + dev + "/queue/logical_block_size"); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(int(fs.Bsize)) {
		t.Errorf("logical block size of %s: %q (%v), want the file system's %d", dev, b, err, fs.Bsize)
	}
	if err := v.destroy(); err != nil {
		t.Fatal(err)
	}
	// The loop device clears itself once its last user is gone, which
	// the kernel does asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for len(loopsBacking(t, image)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("loop device still backs %s after destroy", image)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loopsBacking lists the loop devices whose backing file is path (sysfs
// names a deleted one with a " (deleted)" suffix).
func loopsBacking(t *testing.T, path string) []string {
	t.Helper()
	ents, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			continue // cleared meanwhile
		}
		if strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)") == path {
			out = append(out, e)
		}
	}
	return out
}

// BenchmarkVolume makes and drops /tmp volumes of Lambda's smallest and
// largest ephemeral storage (templates made before the clock starts):
//
//	go test -run '^$' -bench Volume ./internal/nsbox
func BenchmarkVolume(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresBinary(b, "mkfs.ext4")
	for _, sizeMB := range []int{512, 10240} {
		b.Run(fmt.Sprintf("%dMB", sizeMB), func(b *testing.B) {
			dir := b.TempDir()
			m := newVolumeMaker(filepath.Join(dir, "templates"))
			tmpl, err := m.template(sizeMB)
			if err != nil {
				b.Fatal(err)
			}
			tmpl.Close()
			for i := 0; b.Loop(); i++ {
				v, err := m.volume(filepath.Join(dir, "vols", fmt.Sprintf("%d.img", i)), sizeMB, 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				v.destroy()
			}
		})
	}
}
