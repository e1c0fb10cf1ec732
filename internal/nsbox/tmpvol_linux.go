package nsbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// tmpVolume is an environment's /tmp: an ext4 file system in a sparse
// image on a loop device. Its size is EphemeralStorage, so a write past it
// fails with ENOSPC; it lives on disk, so it is not charged to the
// function's memory cgroup (a tmpfs would be); and it survives runtime
// restarts, going away only with the environment.
type tmpVolume struct {
	image string
	mount string
	// dir holds image and mount point when the volume came from the pool.
	dir string
}

// mkfsMu serialises loop device allocation: LOOP_CTL_GET_FREE hands the same
// free device to concurrent callers.
var loopMu sync.Mutex

func newTmpVolume(dir string, sizeMB, uid, gid int) (*tmpVolume, error) {
	v := &tmpVolume{image: filepath.Join(dir, "tmp.img"), mount: filepath.Join(dir, "tmp")}
	f, err := os.OpenFile(v.image, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(int64(sizeMB) << 20); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	// No journal (scratch space dies with the environment), no reserved
	// blocks (the function gets the whole size), lazy init (fast to make).
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
		"-E", fmt.Sprintf("lazy_itable_init=1,root_owner=%d:%d", uid, gid), v.image).CombinedOutput()
	if err != nil {
		os.Remove(v.image)
		return nil, fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Mkdir(v.mount, 0o700); err != nil {
		os.Remove(v.image)
		return nil, err
	}
	loop, err := attachLoop(v.image)
	if err != nil {
		v.destroy()
		return nil, err
	}
	defer loop.Close()
	if err := unix.Mount(loop.Name(), v.mount, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		v.destroy()
		return nil, fmt.Errorf("mount /tmp volume: %w", err)
	}
	// Sticky and world-writable, like /tmp; owned by the sandbox user.
	if err := os.Chmod(v.mount, 0o1777); err != nil {
		v.destroy()
		return nil, err
	}
	return v, nil
}

// own gives a pooled volume's root to the sandbox user that will use it.
func (v *tmpVolume) own(uid, gid int) error {
	if err := os.Chown(v.mount, uid, gid); err != nil {
		return err
	}
	return os.Chmod(v.mount, 0o1777)
}

// attachLoop binds image to a free loop device that frees itself when its
// last user goes (autoclear): after the unmount, nothing is left behind.
func attachLoop(image string) (*os.File, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer img.Close()
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
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
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

// destroy unmounts (the loop device then clears itself) and removes the image.
func (v *tmpVolume) destroy() error {
	var first error
	if v.dir != "" {
		defer os.RemoveAll(v.dir)
	}
	if err := unix.Unmount(v.mount, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		first = err
	}
	os.Remove(v.mount)
	if err := os.Remove(v.image); err != nil && !os.IsNotExist(err) && first == nil {
		first = err
	}
	return first
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
