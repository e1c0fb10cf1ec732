package nsbox

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// tmpVolume is an environment's /tmp: an ext4 file system in a sparse
// image on a loop device. Its size is EphemeralStorage, so a write past it
// fails with ENOSPC; it lives on disk, so it is not charged to the
// function's memory cgroup (a tmpfs would be); and it survives runtime
// restarts, going away only with the environment.
//
// The file system is a detached mount (fsmount): it is in no mount table
// until the sandbox's init moves it onto its /tmp. The host's mount
// table does not grow with the environments, which every new sandbox's
// mount namespace would copy, and a nubo that is killed leaves no mount
// behind: the descriptors close, the mount goes, the loop device clears.
type tmpVolume struct {
	tree *os.File // the detached mount
}

// loopMu serialises loop device allocation: LOOP_CTL_GET_FREE hands the
// same free device to concurrent callers.
var loopMu sync.Mutex

// volumeMaker makes /tmp volumes from templates: one empty file system per
// size, made by mkfs.ext4 once, whose few written blocks every new volume
// copies into a sparse image of its own.
//
// Running mkfs.ext4 for every environment cost about a sixth of all CPU
// during a burst of first invokes: a process start, and a scan of the
// host's mount table (which holds every live environment's /tmp) to make
// sure the image is not mounted. A 512 MB file system without a journal
// or resize blocks is 60 KB of data in six extents; copying it takes one
// copy_file_range per extent.
//
// At most maxTemplates are kept, the least recently used going first: a
// template's metadata grows with its size (about 230 KB on disk at 10 GB), and
// functions may ask for any of 9729 sizes.
type volumeMaker struct {
	dir string // where the templates live

	mu        sync.Mutex
	templates map[int]*volumeTemplate
}

// maxTemplates bounds the templates kept (see volumeMaker).
const maxTemplates = 8

// volumeTemplate is the template of one size: its path once made. Only a
// success is kept: a failed mkfs (a full disk, a kill under memory
// pressure) is tried again by the next volume of the size.
type volumeTemplate struct {
	mu   sync.Mutex
	path string
	used time.Time // guarded by volumeMaker.mu
}

func newVolumeMaker(dir string) *volumeMaker {
	return &volumeMaker{dir: dir, templates: map[int]*volumeTemplate{}}
}

// template opens the empty file system of sizeMB, making it when there is
// none yet (or it was removed since). Open, it can be copied whatever
// happens to its name meanwhile.
func (m *volumeMaker) template(sizeMB int) (*os.File, error) {
	m.mu.Lock()
	t := m.templates[sizeMB]
	if t == nil {
		t = &volumeTemplate{}
		m.templates[sizeMB] = t
	}
	t.used = time.Now()
	m.mu.Unlock()
	f, made, err := t.open(m.dir, sizeMB)
	if made {
		// With no template's lock held: evict takes others' one at a time.
		m.evict(sizeMB)
	}
	return f, err
}

// open opens the template, making it first if need be (made).
func (t *volumeTemplate) open(dir string, sizeMB int) (f *os.File, made bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path != "" {
		if f, err := os.Open(t.path); err == nil {
			return f, false, nil
		}
		t.path = ""
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	path := filepath.Join(dir, fmt.Sprintf("tmp-%dM.img", sizeMB))
	part := path + ".part"
	os.Remove(part)
	if err := mkfsImage(part, sizeMB); err != nil {
		return nil, false, err
	}
	if err := os.Rename(part, path); err != nil {
		os.Remove(part)
		return nil, false, err
	}
	if f, err = os.Open(path); err != nil {
		return nil, false, err
	}
	t.path = path
	return f, true, nil
}

// evict removes the least recently used templates beyond maxTemplates,
// never keep's. A template being made or opened (its lock held) is passed
// over, never waited for: the caller holds no template's lock, and a cold
// start must not wait for another size's mkfs.
func (m *volumeMaker) evict(keep int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.templates) > maxTemplates {
		sizes := make([]int, 0, len(m.templates))
		for size := range m.templates {
			if size != keep {
				sizes = append(sizes, size)
			}
		}
		sort.Slice(sizes, func(i, j int) bool { return m.templates[sizes[i]].used.Before(m.templates[sizes[j]].used) })
		evicted := false
		for _, size := range sizes {
			t := m.templates[size]
			if !t.mu.TryLock() {
				continue
			}
			// Those who opened it keep their copy.
			if t.path != "" {
				os.Remove(t.path)
				t.path = ""
			}
			t.mu.Unlock()
			delete(m.templates, size)
			evicted = true
			break
		}
		if !evicted {
			return
		}
	}
}

// mkfsImage makes an empty ext4 file system in a new sparse image: no
// journal (scratch space dies with the environment), no reserved blocks
// (the function gets the whole size), root owned by root until the volume
// is given to its user (own). The inode tables are not initialised lazily:
// on a sparse image mkfs.ext4 punches them and marks them zeroed, where
// lazy initialisation would have the kernel write megabytes of zeros into
// every volume after its mount.
func mkfsImage(path string, sizeMB int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(sizeMB) << 20)
	f.Close()
	if err == nil {
		var out []byte
		// No journal (the volume dies with its sandbox) and no blocks
		// reserved for growing the file system, which no volume does:
		// they were most of the data every volume copies and the loop
		// device flushes (316 KiB of 60 at 512 MB; 4.2 MiB of 160 KiB at
		// 10 GB).
		out, err = exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode",
			"-E", "lazy_itable_init=0,root_owner=0:0", path).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// image writes a new volume image at path: the template's data blocks in
// a sparse file of its size, or, where the file system cannot say where
// a file's data is, a file system of its own from mkfs.ext4.
func (m *volumeMaker) image(path string, sizeMB int) error {
	src, err := m.template(sizeMB)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	err = dst.Truncate(int64(sizeMB) << 20)
	if err == nil {
		err = copyData(dst, src, int64(sizeMB)<<20)
	}
	dst.Close()
	if errors.Is(err, errNoSeekData) {
		os.Remove(path)
		return mkfsImage(path, sizeMB)
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

var errNoSeekData = errors.New("SEEK_DATA not supported")

// copyData copies the data extents of src (size bytes) to the same
// offsets of dst, leaving its holes holes.
func copyData(dst, src *os.File, size int64) error {
	sfd := int(src.Fd())
	// A file system without real SEEK_DATA support (the generic one of
	// NFSv3, 9p, some FUSE) calls the whole file data: copying that would
	// write every byte of the volume.
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return err
	}
	allocated := st.Blocks * 512
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return nil // only holes after off
		}
		if err == unix.EINVAL && off == 0 {
			return errNoSeekData
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if hole-data > allocated+1<<20 {
			return errNoSeekData
		}
		// io.CopyN between files is one copy_file_range in the kernel,
		// or a copy through a buffer where that cannot be.
		if _, err := src.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := dst.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(dst, src, hole-data); err != nil {
			return fmt.Errorf("copy template: %w", err)
		}
		off = hole
	}
	return nil
}

// volume makes a new /tmp volume, owned by uid:gid, from an image file
// at path that is gone again when it returns: the loop device holds the
// file open, and the kernel frees its blocks when the device clears, so
// nothing of the volume is left on disk after the sandbox, even one of a
// killed nubo.
func (m *volumeMaker) volume(image string, sizeMB, uid, gid int) (_ *tmpVolume, err error) {
	if err := os.MkdirAll(filepath.Dir(image), 0o700); err != nil {
		return nil, err
	}
	if err := m.image(image, sizeMB); err != nil {
		return nil, err
	}
	defer os.Remove(image)
	loop, err := attachLoop(image)
	if err != nil {
		return nil, err
	}
	defer loop.Close()
	v := &tmpVolume{}
	if v.tree, err = mountDetached(loop.Name()); err != nil {
		return nil, fmt.Errorf("mount /tmp volume: %w", err)
	}
	if err := v.own(uid, gid); err != nil {
		v.destroy()
		return nil, err
	}
	return v, nil
}

// mountDetached mounts the ext4 file system on dev as a detached mount,
// nosuid and nodev, without cache flushes.
func mountDetached(dev string) (*os.File, error) {
	fsfd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", dev); err != nil {
		return nil, fmt.Errorf("fsconfig source: %w", err)
	}
	// No cache flushes: the file system dies with its environment, so
	// nothing on it has to survive a power cut, and each flush goes
	// through the loop device to an fsync of the image, a flush of the
	// host's disk. With them, the mount alone waited for one (its
	// superblock write), and so did every fsync a function made in /tmp.
	if err := unix.FsconfigSetFlag(fsfd, "nobarrier"); err != nil {
		return nil, fmt.Errorf("fsconfig nobarrier: %w", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("fsmount: %w", err)
	}
	return os.NewFile(uintptr(mfd), "tmp volume"), nil
}

// own gives the volume's root to the sandbox user that will use it: sticky
// and world-writable, like /tmp. The root is reached through the mount's
// descriptor.
func (v *tmpVolume) own(uid, gid int) error {
	root := fmt.Sprintf("/proc/self/fd/%d", v.tree.Fd())
	if err := os.Chown(root, uid, gid); err != nil {
		return err
	}
	return os.Chmod(root, 0o777|os.ModeSticky)
}

// attachLoop binds image to a free loop device that frees itself when its
// last user goes (autoclear): once the file system is gone, nothing is
// left behind.
func attachLoop(image string) (*os.File, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	blockSize := ext4BlockSize(img)
	loopMu.Lock()
	defer loopMu.Unlock()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for attempt := 0; attempt < 8; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop-control: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Size: blockSize} // Size is the block size
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], image)
		if err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg); err != nil {
			dev.Close()
			if err == unix.EBUSY {
				continue // taken by someone else meanwhile
			}
			return nil, fmt.Errorf("loop configure: %w", err)
		}
		return dev, nil
	}
	return nil, fmt.Errorf("no free loop device")
}

// ext4BlockSize reads the block size of the ext4 file system in f from its
// superblock; 0 when f holds none. A loop device of that logical block
// size spares the mount two block size changes of the device (to 1 KiB to
// read the superblock, then to the file system's), each of which flushes
// and drops the device's cache and interrupts every CPU: about 0.04 ms of
// CPU per volume (docs/performance.md, session 26).
func ext4BlockSize(f *os.File) uint32 {
	var sb [64]byte // from byte 1024: s_log_block_size at 24, s_magic at 56
	if _, err := f.ReadAt(sb[:], 1024); err != nil {
		return 0
	}
	logSize := binary.LittleEndian.Uint32(sb[24:])
	// A loop device takes block sizes from 512 bytes to a page.
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 || logSize > 6 || 1024<<logSize > os.Getpagesize() {
		return 0
	}
	return 1024 << logSize
}

// destroy lets go of the mount: a detached one goes at once; one moved
// into a sandbox goes with the sandbox's mount namespace, and the loop
// device then clears itself and frees the image.
func (v *tmpVolume) destroy() error {
	if v.tree != nil {
		return v.tree.Close()
	}
	return nil
}

// unmountUnder detaches every mount below dir (leftovers of a killed run),
// deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			p := unescapeMount(fields[4])
			if p == dir || strings.HasPrefix(p, dir+"/") {
				points = append(points, p)
			}
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", points[i], err)
		}
	}
	return nil
}

// unescapeMount decodes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
