package nsbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maskedFiles are /proc entries that reveal or change host kernel state;
// /dev/null is bound over them (the list runc and Docker mask, plus keys).
var maskedFiles = []string{"kcore", "sysrq-trigger", "keys", "timer_list", "sched_debug", "latency_stats", "kallsyms", "kmsg", "kpagecount", "kpageflags", "kpagecgroup", "config.gz", "vmallocinfo", "mtrr"}

// maskedDirs get an empty read-only tmpfs.
var maskedDirs = []string{"acpi", "scsi", "firmware", "driver"}

// readonlyProc stay visible but cannot be written: kernel tunables and
// interfaces that are not namespaced.
var readonlyProc = []string{"sys", "bus", "fs", "irq"}

// devices are bound from the host's /dev: a user namespace cannot mknod.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// buildRoot assembles the sandbox's root on a tmpfs and pivots into it.
func buildRoot(cfg *initConfig) error {
	// Nothing we mount may propagate back to the host (or from it).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := cfg.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=755"); err != nil {
		return fmt.Errorf("root tmpfs: %w", err)
	}
	at := func(p string) string { return filepath.Join(root, p) }
	for _, e := range cfg.Userland {
		if e.Link != "" {
			if err := os.Symlink(e.Link, at(e.Name)); err != nil {
				return err
			}
			continue
		}
		if err := bindRO(e.Bind, at(e.Name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"var/task", "var/runtime", "opt", "tmp", "proc", "dev"} {
		if err := os.MkdirAll(at(d), 0o755); err != nil {
			return err
		}
	}
	for _, m := range []struct{ src, dst string }{
		{cfg.Etc, "etc"}, {cfg.Certs, "etc/ssl/certs"}, {cfg.Runtime, "var/runtime"}, {cfg.Tmp, "tmp"},
	} {
		if m.src == "" {
			continue
		}
		if err := attach(m.src, at(m.dst)); err != nil {
			return err
		}
	}
	if err := mountProc(at("proc")); err != nil {
		return err
	}
	if err := mountDev(at("dev")); err != nil {
		return err
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root under the new one at "/";
	// detaching it leaves only the new root (no old-root directory needed).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount / read-only: %w", err)
	}
	return nil
}

// attach moves a detached mount tree passed by the host (its fd as
// /proc/self/fd/N) onto dst; its flags were set by the host.
func attach(src, dst string) error {
	fd, err := strconv.Atoi(strings.TrimPrefix(src, "/proc/self/fd/"))
	if err != nil {
		return fmt.Errorf("mount source %q: not a passed mount", src)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount %s: %w", dst, err)
	}
	return nil
}

// bindRO binds src on dst read-only. Remounting a bind read-only inside a
// user namespace must repeat the flags the kernel locked on the source
// mount (nosuid, nodev, noexec, atime), or it fails with EPERM.
func bindRO(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if st.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else if _, serr := os.Stat(dst); errors.Is(serr, os.ErrNotExist) {
		err = os.WriteFile(dst, nil, 0o644)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dst, &sfs); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	for _, m := range []struct{ st, ms uintptr }{
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(sfs.Flags)&m.st != 0 {
			flags |= m.ms
		}
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", dst, err)
	}
	return nil
}

// mountProc mounts the pid namespace's /proc with the host-revealing parts
// masked. The masks are mounted before pivot_root, while the host's
// /dev/null is still reachable.
func mountProc(dst string) error {
	if err := unix.Mount("proc", dst, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	for _, f := range readonlyProc {
		p := filepath.Join(dst, f)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
	}
	for _, f := range maskedFiles {
		p := filepath.Join(dst, f)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			continue
		}
		if err := unix.Mount("/dev/null", p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, d := range maskedDirs {
		p := filepath.Join(dst, d)
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			continue
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0"); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// mountDev makes a minimal /dev: the harmless character devices, a private
// devpts, /dev/shm, and the usual symlinks. No block device exists there.
func mountDev(dst string) error {
	if err := unix.Mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range devices {
		p := filepath.Join(dst, d)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	pts := filepath.Join(dst, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	shm := filepath.Join(dst, "shm")
	if err := os.Mkdir(shm, 0o1777); err != nil {
		return err
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return fmt.Errorf("remount /dev read-only: %w", err)
	}
	return nil
}
