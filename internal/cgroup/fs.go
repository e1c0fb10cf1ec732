package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysfs is the set of operations whose effect the kernel interprets; reads
// stay plain file reads. Tests swap it for a small emulation of cgroupfs.
type sysfs struct {
	write func(path, data string) error
	mkdir func(path string) error
	rmdir func(path string) error
}

var realSys = &sysfs{
	write: writeFile,
	mkdir: func(p string) error { return os.Mkdir(p, 0o755) },
	rmdir: func(p string) error {
		if err := unix.Rmdir(p); err != nil {
			return &fs.PathError{Op: "rmdir", Path: p, Err: err}
		}
		return nil
	},
}

// writeFile writes data with a single write(2): cgroupfs parses each write
// as one value, and O_TRUNC keeps plain-file fakes faithful.
//
// Plain system calls, here and in readFile, not package os: an *os.File
// adds a fcntl pair and, cgroupfs files being pollable, an epoll
// registration and its removal to every open, more system calls than the
// write itself, some twenty times per environment made.
func writeFile(path, data string) error {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0) })
	if err != nil {
		return fmt.Errorf("cgroup: writing %q: %w", data, &fs.PathError{Op: "open", Path: path, Err: err})
	}
	_, err = retryEINTR(func() (int, error) { return unix.Write(fd, []byte(data)) })
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("cgroup: writing %q: %w", data, &fs.PathError{Op: "write", Path: path, Err: err})
	}
	return nil
}

// readFile reads a whole (small) file; see writeFile.
func readFile(path string) ([]byte, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, b[len(b):cap(b)]) })
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readString(path string) (string, error) {
	b, err := readFile(path)
	return strings.TrimSpace(string(b)), err
}

func readUint(path string) (uint64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: parse %s: %w", path, err)
	}
	return v, nil
}

func readInt(path string) (int64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: parse %s: %w", path, err)
	}
	return v, nil
}

// readKeyed returns the value of key in a flat-keyed file ("key value"
// lines, e.g. memory.events, cpu.stat, memory.oom_control); found is false
// when the kernel does not provide that key.
func readKeyed(path, key string) (v uint64, found bool, err error) {
	b, err := readFile(path)
	if err != nil {
		return 0, false, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || k != key {
			continue
		}
		v, err = strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("cgroup: parse %s %s: %w", path, key, err)
		}
		return v, true, nil
	}
	return 0, false, nil
}

// readProcs parses one cgroup.procs file. The pids are in the reader's pid
// namespace, which is the daemon's.
func readProcs(dir string) ([]int, error) {
	b, err := readFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup: parse %s/cgroup.procs: %w", dir, err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// subdirs lists the child cgroups of dir.
func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// treeProcs collects the processes of every dir and its descendants, sorted
// and without duplicates (v1 lists the same process in each hierarchy). A
// dir that does not exist contributes nothing.
func treeProcs(dirs ...string) ([]int, error) {
	var out []int
	var walk func(string) error
	walk = func(d string) error {
		pids, err := readProcs(d)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, pids...)
		subs, err := subdirs(d)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, s := range subs {
			if err := walk(s); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range dirs {
		if err := walk(d); err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

var errTimeout = errors.New("timed out")

// poll calls cond until it reports true, backing off from 100µs to 10ms: a
// freeze of an idle cgroup completes within microseconds, and cold starts
// are the product, so the first checks come quickly.
func poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	d := 100 * time.Microsecond
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(d)
		d = min(d*2, 10*time.Millisecond)
	}
}

// removeDir removes one cgroup directory. rmdir answers EBUSY while a task
// is still attached; right after SIGKILL the kernel may need a moment to
// finish the exits (the cgroup is unlinked in the exit path, after the
// signal is delivered), so EBUSY is retried briefly. A missing dir is done.
func (s *sysfs) removeDir(dir string) error {
	var err error
	perr := poll(rmdirTimeout, func() (bool, error) {
		err = s.rmdir(dir)
		switch {
		case err == nil || errors.Is(err, fs.ErrNotExist):
			err = nil
			return true, nil
		case errors.Is(err, syscall.EBUSY):
			return false, nil
		}
		return false, err
	})
	if errors.Is(perr, errTimeout) {
		return err
	}
	return perr
}

// removeTree removes dir and every cgroup below it, deepest first (a
// cgroup with children cannot be removed).
func (s *sysfs) removeTree(dir string) error {
	subs, err := subdirs(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, sub := range subs {
		errs = append(errs, s.removeTree(sub))
	}
	errs = append(errs, s.removeDir(dir))
	return errors.Join(errs...)
}

// killAll SIGKILLs every process procs reports until none is left.
//
// Each round first freezes the cgroup: while frozen no task can fork a new
// one behind our back, and none can exit and have its pid reused by an
// unrelated process between reading cgroup.procs and kill(2). SIGKILL to a
// task frozen by the v1 freezer takes effect only once it is thawed, so the
// round ends with a thaw. A freeze that fails (a task stuck in
// uninterruptible sleep) does not stop the kill; the round then just races.
func killAll(timeout time.Duration, procs func() ([]int, error), freeze, thaw func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup: processes %v survive SIGKILL", pids)
		}
		frozen := freeze() == nil
		if frozen {
			if pids, err = procs(); err != nil {
				_ = thaw()
				return err
			}
		}
		for _, pid := range pids {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				if frozen {
					_ = thaw()
				}
				return fmt.Errorf("cgroup: kill %d: %w", pid, err)
			}
		}
		if frozen {
			if err := thaw(); err != nil {
				return err
			}
		}
		// Dying tasks leave cgroup.procs as they finish exiting.
		_ = poll(min(100*time.Millisecond, time.Until(deadline)), func() (bool, error) {
			p, err := procs()
			return len(p) == 0, err
		})
	}
}

// keptFile is a cgroup file read on every invocation (the memory figures
// of REPORT): opened once and re-read from offset 0, which makes the
// kernel generate its content afresh, instead of an open, a read and a
// close (and the poller's attempt to register the descriptor) each time.
type keptFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
	fd   uintptr // f's, taken without f.Fd(), which would make f blocking
	buf  [512]byte
}

func (k *keptFile) read() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f == nil {
		f, err := os.Open(k.path)
		if err != nil {
			return "", err
		}
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return "", err
		}
		rc.Control(func(fd uintptr) { k.fd = fd })
		k.f = f
	}
	// One pread(2), raw (it never sleeps: the kernel makes the content on
	// the spot; package rawio tells why raw), and no second call to find
	// the end: these files are one record each, which a read from offset 0
	// returns whole to a buffer that holds it (the longest, v2's
	// memory.events, is about 200 bytes).
	r, _, errno := syscall.RawSyscall6(unix.SYS_PREAD64, k.fd, uintptr(unsafe.Pointer(&k.buf[0])), uintptr(len(k.buf)), 0, 0, 0)
	if errno != 0 {
		return "", &os.PathError{Op: "pread", Path: k.path, Err: errno}
	}
	return string(k.buf[:int(r)]), nil
}

func (k *keptFile) uint() (uint64, error) {
	s, err := k.read()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup: parse %s: %w", k.path, err)
	}
	return v, nil
}

func (k *keptFile) keyed(key string) (uint64, error) {
	s, err := k.read()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(s, "\n") {
		if kk, val, ok := strings.Cut(strings.TrimSpace(line), " "); ok && kk == key {
			v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cgroup: parse %s %s: %w", k.path, key, err)
			}
			return v, nil
		}
	}
	return 0, nil
}

func (k *keptFile) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f != nil {
		k.f.Close()
		k.f = nil
	}
}
