package codezip

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// noOpenat2 forces the component-by-component fallback; tests set it to
// exercise the path older kernels and strict seccomp profiles take.
var noOpenat2 = false

// Extract checks the package like Inspect and writes it into dir, which must
// exist and be empty. On any error dir is emptied again, so no half-written
// package remains.
//
// Writing is defended twice against symlink tricks. The tree checks already
// refuse every path through a link; on top of that every directory is
// reached with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) (or, without
// openat2, one O_NOFOLLOW openat per component), files are created with
// O_CREAT|O_EXCL|O_NOFOLLOW, and symlinks are created last, when nothing else
// is left to write.
func Extract(zipBytes []byte, dir string, lim Limits) (info Info, err error) {
	if err := ensureEmpty(dir); err != nil {
		return Info{}, err
	}
	p, err := validate(zipBytes, lim.withDefaults())
	if err != nil {
		return Info{}, err
	}
	rootFd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Info{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	w := &writer{root: rootFd, dir: dir, walk: noOpenat2, lastFd: -1}
	defer func() {
		w.close()
		if err != nil {
			info = Info{}
			if cerr := clearDir(dir); cerr != nil {
				err = fmt.Errorf("codezip: cleaning %s after %v: %w", dir, err, cerr)
			}
		}
	}()

	if err := w.mkdirs(p.root, ""); err != nil {
		return Info{}, err
	}
	for _, e := range p.entries {
		if e.kind != kindFile {
			continue
		}
		if e.superseded {
			// Still read: its bytes count and its CRC must hold, exactly as
			// Inspect sees it.
			err = p.readEntry(e, nil)
		} else {
			err = w.file(p, e)
		}
		if err != nil {
			return Info{}, err
		}
	}
	for _, e := range p.entries {
		if e.kind == kindSymlink {
			if err := w.symlink(e); err != nil {
				return Info{}, err
			}
		}
	}
	return p.info(), nil
}

// writer creates the package's tree below one directory fd.
type writer struct {
	root    int
	dir     string // for messages only
	walk    bool
	lastDir string // cache of the parent directory used last
	lastFd  int
}

func (w *writer) close() {
	if w.lastFd >= 0 {
		unix.Close(w.lastFd)
		w.lastFd = -1
	}
	unix.Close(w.root)
}

func (w *writer) pathErr(op, rel string, err error) error {
	return &os.PathError{Op: op, Path: filepath.Join(w.dir, rel), Err: err}
}

// parent returns an fd for the directory rel ("" is the root). The fd is
// owned by the writer.
func (w *writer) parent(rel string) (int, error) {
	if rel == "" {
		return w.root, nil
	}
	if w.lastFd >= 0 && w.lastDir == rel {
		return w.lastFd, nil
	}
	fd, err := w.openDir(rel)
	if err != nil {
		return -1, w.pathErr("open", rel, err)
	}
	if w.lastFd >= 0 {
		unix.Close(w.lastFd)
	}
	w.lastDir, w.lastFd = rel, fd
	return fd, nil
}

func (w *writer) openDir(rel string) (int, error) {
	if !w.walk {
		how := &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for {
			fd, err := unix.Openat2(w.root, rel, how)
			switch {
			case err == nil:
				return fd, nil
			case err == unix.EAGAIN || err == unix.EINTR:
				// RESOLVE_BENEATH lookups retry on a concurrent rename.
				continue
			case err == unix.ENOSYS || err == unix.EPERM:
				// No openat2 (kernel < 5.6) or a seccomp filter denying it.
				w.walk = true
			default:
				return -1, err
			}
			break
		}
	}
	cur := w.root
	for c := range strings.SplitSeq(rel, "/") {
		fd, err := unix.Openat(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if cur != w.root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// mkdirs creates n's subdirectories, parents first.
func (w *writer) mkdirs(n *node, rel string) error {
	for _, c := range n.order {
		if c.kind != kindDir {
			continue
		}
		crel := c.name
		if rel != "" {
			crel = rel + "/" + c.name
		}
		pfd, err := w.parent(rel)
		if err != nil {
			return err
		}
		if err := unix.Mkdirat(pfd, c.name, 0o700); err != nil {
			return w.pathErr("mkdir", crel, err)
		}
		// The mode is set on an fd, not through the umask, so it is exact.
		fd, err := unix.Openat(pfd, c.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return w.pathErr("open", crel, err)
		}
		err = unix.Fchmod(fd, 0o755)
		unix.Close(fd)
		if err != nil {
			return w.pathErr("chmod", crel, err)
		}
		if err := w.mkdirs(c, crel); err != nil {
			return err
		}
	}
	return nil
}

func splitPath(rel string) (dir, base string) {
	d, b := path.Split(rel)
	return strings.TrimSuffix(d, "/"), b
}

func (w *writer) file(p *pkg, e *entry) error {
	dir, base := splitPath(e.path)
	pfd, err := w.parent(dir)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return w.pathErr("create", e.path, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(w.dir, e.path))
	err = p.readEntry(e, f)
	var werr writeError
	if errors.As(err, &werr) {
		err = w.pathErr("write", e.path, werr.err)
	}
	mode := os.FileMode(0o644)
	if e.exec {
		mode = 0o755
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return w.setTime(pfd, base, e)
}

func (w *writer) symlink(e *entry) error {
	dir, base := splitPath(e.path)
	pfd, err := w.parent(dir)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(e.node.target, pfd, base); err != nil {
		return w.pathErr("symlink", e.path, err)
	}
	return w.setTime(pfd, base, e)
}

// setTime keeps the entry's modification time: Python compares a source's
// mtime with the one recorded in its .pyc, so a package shipped with
// __pycache__ only stays valid if the times survive extraction.
func (w *writer) setTime(pfd int, base string, e *entry) error {
	m := e.f.Modified
	if m.IsZero() {
		return nil
	}
	ts := unix.NsecToTimespec(m.UnixNano())
	if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return w.pathErr("utimes", e.path, err)
	}
	return nil
}

func ensureEmpty(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("codezip: extract into %s: directory not empty", dir)
	}
	return nil
}

// clearDir removes everything below dir. RemoveAll unlinks symlinks rather
// than following them.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
