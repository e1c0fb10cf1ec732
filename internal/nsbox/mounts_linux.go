package nsbox

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

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

// templateRoot appends the building of the template root at cfg.Root, in
// the spawner's own mount namespace (see buildTemplate): a tmpfs holding
// the host's userland, bound read-only, the mount points of what each
// sandbox brings (/etc, /var/task, /var/runtime, /opt, /tmp, /proc) and a
// minimal /dev. Every sandbox's mount namespace starts as a copy of it,
// its mounts locked there (a copy into a less privileged user namespace):
// the sandbox can neither unmount nor remount any of them.
func templateRoot(p *initProg, cfg *initConfig) error {
	// Nothing mounted here may propagate back to the host (or from it);
	// the mounts made below are private too, as is every sandbox's copy.
	p.call("make / private", unix.SYS_MOUNT, "", "/", nil, unix.MS_REC|unix.MS_PRIVATE, nil)
	root := cfg.Root
	p.call("root tmpfs", unix.SYS_MOUNT, "tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=755")
	at := func(s string) string { return filepath.Join(root, s) }
	for _, e := range cfg.Userland {
		if e.Link != "" {
			p.call("symlink /"+e.Name, unix.SYS_SYMLINKAT, e.Link, unix.AT_FDCWD, at(e.Name))
			continue
		}
		if err := bindRO(p, e.Bind, at(e.Name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"etc", "var", "var/task", "var/runtime", "opt", "tmp", "proc", "dev"} {
		mkdir(p, at(d), 0o755)
	}
	mountDev(p, at("dev"))
	return nil
}

// pivotToTemplate appends making the template at root the spawner's root:
// the host's is detached, so no sandbox cloned from here has it in its
// mount namespace, and none has to pivot (pivot_root visits every thread
// on the host: 0.2 ms of CPU per sandbox with 400 environments alive,
// docs/performance.md, session 26).
func pivotToTemplate(p *initProg, root string) {
	p.call("chdir to the template", unix.SYS_CHDIR, root)
	// pivot_root(".", ".") stacks the old root under the new one at "/";
	// detaching it leaves only the new root (no old-root directory needed).
	p.call("pivot_root", unix.SYS_PIVOT_ROOT, ".", ".")
	p.call("detach the host's root", unix.SYS_UMOUNT2, ".", unix.MNT_DETACH)
	p.call("chdir /", unix.SYS_CHDIR, "/")
	p.call("remount / read-only", unix.SYS_MOUNT, "", "/", nil, unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, nil)
}

// mountSandbox appends the sandbox's own mounts on the template it was
// cloned with: the trees the host sent, which trees maps from the
// configuration's mount indices (Etc, Certs, Runtime, Tmp) to the
// spawner's descriptors of them; proc, its /proc, made detached
// (earlyProc); and a private devpts and /dev/shm.
//
// Nothing mounted here propagates to the spawner, or from it: every mount
// of the template is private (templateRoot), and so is each copy of it.
func mountSandbox(p *initProg, cfg *initConfig, trees map[int]int, proc result) error {
	for _, m := range []struct {
		tree int
		dst  string
	}{{cfg.Etc, "/etc"}, {cfg.Certs, "/etc/ssl/certs"}, {cfg.Runtime, "/var/runtime"}, {cfg.Tmp, "/tmp"}} {
		if m.tree == 0 {
			continue
		}
		fd, ok := trees[m.tree]
		if !ok {
			return fmt.Errorf("mount tree %d for %s: no such file", m.tree, m.dst)
		}
		// Its mount point exists: in the template, or (/etc/ssl/certs) in
		// a tree moved before it.
		p.call("move_mount "+m.dst, unix.SYS_MOVE_MOUNT, fd, "", unix.AT_FDCWD, m.dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	}
	mountProc(p, "/proc", proc)
	p.call("mount devpts", unix.SYS_MOUNT, "devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	p.call("mount /dev/shm", unix.SYS_MOUNT, "shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k")
	p.call("chdir /", unix.SYS_CHDIR, "/")
	return nil
}

// mkdir appends the making of dir; one that exists already is fine.
func mkdir(p *initProg, dir string, mode uint32) {
	p.call("mkdir "+dir, unix.SYS_MKDIRAT, unix.AT_FDCWD, dir, uintptr(mode))
	p.allow(unix.EEXIST)
}

// touch appends the making of an empty file to bind another file on.
func touch(p *initProg, file string, mode uint32) {
	fd := p.call("create "+file, unix.SYS_OPENAT, unix.AT_FDCWD, file, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, uintptr(mode))
	p.call("close "+file, unix.SYS_CLOSE, fd)
}

// bindRO appends the binding of the host's src on dst, read-only, nosuid
// and nodev, with every mount below it (a /usr/local of its own, say): the
// template is built by the host's root, so one mount_setattr sets the
// flags on the whole tree and leaves its others (noexec, atime) as they
// are.
func bindRO(p *initProg, src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if st.IsDir() {
		mkdir(p, dst, 0o755)
	} else {
		touch(p, dst, 0o644)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	p.call("bind "+src+" on "+dst, unix.SYS_MOUNT, src, dst, nil, unix.MS_BIND|unix.MS_REC, nil)
	p.call("read-only "+dst, unix.SYS_MOUNT_SETATTR, unix.AT_FDCWD, dst, unix.AT_RECURSIVE, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	return nil
}

// mountProc appends attaching proc, the pid namespace's /proc, on dst,
// with the host-revealing parts masked (by the template's /dev/null, a
// bind of the host's).
func mountProc(p *initProg, dst string, proc result) {
	p.call("mount proc", unix.SYS_MOVE_MOUNT, proc, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	p.call("close proc", unix.SYS_CLOSE, proc)
	// Entries this kernel lacks (ENOENT), or has as the other kind of file
	// (ENOTDIR), are skipped, as the new /proc tells.
	skip := func() { p.allow(unix.ENOENT, unix.ENOTDIR) }
	for _, f := range readonlyProc {
		q := filepath.Join(dst, f)
		p.call("bind "+q, unix.SYS_MOUNT, q, q, nil, unix.MS_BIND|unix.MS_REC, nil)
		skip()
		p.call("read-only "+q, unix.SYS_MOUNT, "", q, nil, unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, nil)
		skip()
	}
	for _, f := range maskedFiles {
		q := filepath.Join(dst, f)
		p.call("mask "+q, unix.SYS_MOUNT, "/dev/null", q, nil, unix.MS_BIND, nil)
		skip()
	}
	for _, d := range maskedDirs {
		q := filepath.Join(dst, d)
		p.call("mask "+q, unix.SYS_MOUNT, "tmpfs", q, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
		skip()
	}
}

// mountDev appends the template's minimal /dev: the harmless character
// devices, the mount points of each sandbox's private devpts and /dev/shm
// (mountSandbox), and the usual symlinks. No block device exists there.
func mountDev(p *initProg, dst string) {
	p.call("mount /dev", unix.SYS_MOUNT, "tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755")
	for _, d := range devices {
		q := filepath.Join(dst, d)
		touch(p, q, 0o666)
		p.call("bind /dev/"+d, unix.SYS_MOUNT, "/dev/"+d, q, nil, unix.MS_BIND, nil)
	}
	mkdir(p, filepath.Join(dst, "pts"), 0o755)
	mkdir(p, filepath.Join(dst, "shm"), 0o1777)
	for _, l := range [][2]string{
		{"ptmx", "pts/ptmx"}, {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
	} {
		p.call("symlink /dev/"+l[0], unix.SYS_SYMLINKAT, l[1], unix.AT_FDCWD, filepath.Join(dst, l[0]))
	}
	p.call("remount /dev read-only", unix.SYS_MOUNT, "", dst, nil, unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755")
}
