package nsbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// The spawner's template root (see templateRoot): built on its first
// request, in the mount namespace of its own it was started in, and its
// root from then on. Every sandbox's mount namespace starts as a copy of
// it, so a sandbox's init adds only what is its own (mountSandbox) and
// never pivots: before, each init built a root of its own on a tmpfs
// (about 40 mount calls) and pivoted into it, and pivot_root visits every
// thread on the host (docs/performance.md, session 26).
var template struct {
	built bool
	// The configuration it was built from.
	root string
	land []userlandEntry
	err  error
	// proc is the host's /proc, opened before the pivot, for the
	// sandboxes' id maps: the spawner's own /proc is the template's then.
	proc int
}

// ensureTemplate builds the template from cfg on the first call; later
// calls must ask for the same one.
func ensureTemplate(cfg *initConfig) error {
	if template.built {
		if cfg.Root != template.root || !slices.Equal(cfg.Userland, template.land) {
			return errors.New("template: a sandbox asks for another root or userland than the spawner's")
		}
		return template.err
	}
	template.built, template.root, template.land = true, cfg.Root, slices.Clone(cfg.Userland)
	template.err = buildTemplate(cfg)
	return template.err
}

// buildTemplate builds the template root at cfg.Root and pivots the
// spawner into it. Its /proc is a proc of a pid namespace of its own,
// empty once the child that mounted it has exited: each sandbox mounts
// its own over it (mountSandbox), but a user namespace may mount a proc
// only where one is fully visible already (the kernel's
// mount_too_revealing), and the sandbox, cloned from here, has no other.
func buildTemplate(cfg *initConfig) error {
	capLastCap() // read now, from the host's /proc
	var err error
	if template.proc, err = unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	p := &initProg{errFD: 2}
	if err := templateRoot(p, cfg); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if err := p.runHere(); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if err := templateProc(filepath.Join(cfg.Root, "proc")); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	p = &initProg{errFD: 2}
	pivotToTemplate(p, cfg.Root)
	if err := p.runHere(); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	return nil
}

// templateProc mounts on dst a proc of a new pid namespace, through a
// child cloned into it: the child is that namespace's first process, and
// a proc mounted from it is of that namespace.
func templateProc(dst string) error {
	p := &initProg{errFD: 2}
	fs := p.call("template proc: fsopen", unix.SYS_FSOPEN, "proc", unix.FSOPEN_CLOEXEC)
	p.call("template proc: create", unix.SYS_FSCONFIG, fs, unix.FSCONFIG_CMD_CREATE, nil, nil, 0)
	// nosuid, nodev and noexec, as each sandbox's own; not read-only,
	// which the kernel would then demand of theirs too.
	m := p.call("template proc: fsmount", unix.SYS_FSMOUNT, fs, unix.FSMOUNT_CLOEXEC,
		unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	p.call("template proc: attach", unix.SYS_MOVE_MOUNT, m, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	p.call("template proc: done", unix.SYS_EXIT_GROUP, 0)
	_, pidfd, err := forkInit(p, unix.CLONE_NEWPID, -1)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	// Readable once the child has exited (the spawner's SIGCHLD loop reaps
	// it, and its status with it): what it did is read from dst.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			break
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err != nil {
		return err
	}
	if st.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("no proc on %s (the child's error is on the spawner's stderr)", dst)
	}
	return nil
}
