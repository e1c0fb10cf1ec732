// Package codecache keeps deployment packages unpacked on this node, so an
// environment's cold start only mounts a directory: function code under
// <dir>/code/<hex sha256>, each layer under <dir>/layer/<hex>, and each
// ordered combination of a function's layers merged under
// <dir>/opt/<hash of the layer hashes> (later layers win, as in Lambda's
// /opt).
//
// An account's own copy of an entry (Own, <entry>@<account>: hard links
// in directories of its own) is the one kind of entry nubo writes into
// after it is made: compiled Python bytecode, package pycache.
//
// Entries are immutable once made (they are addressed by content), built in
// a temporary directory and renamed into place, so a crash never leaves a
// half-unpacked entry that looks complete. Concurrent requests for the same
// entry build it once. Collect removes entries nothing refers to any more
// and nobody asked for lately.
package codecache

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/codezip"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/procs"
)

// Source fetches a zip by its hex SHA-256.
type Source interface {
	GetCode(ctx context.Context, hexSha string) ([]byte, error)
}

// Cache is the node's unpacked code.
type Cache struct {
	dir string
	src Source

	mu       sync.Mutex
	inflight map[string]*build
	// lastUse is when Code or Opt last returned each entry's path.
	lastUse map[string]time.Time
	now     func() time.Time

	// Procs is raised while a zip is unpacked or layers merged (bulk
	// work, see package procs); nil leaves GOMAXPROCS alone.
	Procs *procs.Governor
}

type build struct {
	done chan struct{}
	err  error
}

// New opens a cache under dir and removes half-built entries of an earlier run.
func New(dir string, src Source) (*Cache, error) {
	for _, sub := range []string{"code", "layer", "opt", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := removeTree(filepath.Join(dir, "tmp")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	// Everything below is read by the runtime's unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Cache{dir: dir, src: src, inflight: map[string]*build{}, lastUse: map[string]time.Time{}, now: time.Now}, nil
}

// once builds path with fn unless it exists, deduplicating concurrent
// callers. The use is recorded under mu together with the check, so
// Collect never removes an entry between the two.
func (c *Cache) once(path string, fn func(tmp string) error) error {
	c.mu.Lock()
	c.lastUse[path] = c.now()
	if _, err := os.Stat(path); err == nil {
		c.mu.Unlock()
		return nil
	}
	if b, ok := c.inflight[path]; ok {
		c.mu.Unlock()
		<-b.done
		return b.err
	}
	b := &build{done: make(chan struct{})}
	c.inflight[path] = b
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, path)
		c.mu.Unlock()
		close(b.done)
	}()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(c.dir, "tmp"), "build-")
	if err != nil {
		b.err = err
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		b.err = err
		return err
	}
	func() {
		defer c.Procs.Bulk()()
		err = fn(tmp)
	}()
	if err != nil {
		os.RemoveAll(tmp)
		b.err = err
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.RemoveAll(tmp)
		b.err = err
		return err
	}
	return nil
}

func (c *Cache) unzip(ctx context.Context, kind, hexSha string) (string, error) {
	if len(hexSha) != 64 || strings.Trim(hexSha, "0123456789abcdef") != "" {
		return "", fmt.Errorf("codecache: bad code hash %q", hexSha)
	}
	path := filepath.Join(c.dir, kind, hexSha)
	err := c.once(path, func(tmp string) error {
		zip, err := c.src.GetCode(ctx, hexSha)
		if err != nil {
			return err
		}
		_, err = codezip.Extract(zip, tmp, codezip.Limits{MaxUnzipped: function.MaxUnzippedBytes})
		return err
	})
	return path, err
}

// Code returns the directory holding a function's unpacked code.
func (c *Cache) Code(ctx context.Context, hexSha string) (string, error) {
	return c.unzip(ctx, "code", hexSha)
}

// Opt returns a directory with the layers merged in order, or "" when there
// are none.
func (c *Cache) Opt(ctx context.Context, layerHexes []string) (string, error) {
	if len(layerHexes) == 0 {
		return "", nil
	}
	dirs := make([]string, len(layerHexes))
	for i, h := range layerHexes {
		d, err := c.unzip(ctx, "layer", h)
		if err != nil {
			return "", err
		}
		dirs[i] = d
	}
	path := filepath.Join(c.dir, "opt", OptName(layerHexes))
	err := c.once(path, func(tmp string) error {
		for _, d := range dirs {
			if err := merge(d, tmp); err != nil {
				return err
			}
		}
		return nil
	})
	return path, err
}

// Own returns a copy of dir (an entry Code or Opt returned) for owner's
// environments alone: the same files, hard links to them, in directories
// of its own, as the entry "NAME@OWNER". What nubo writes into the copy
// later (compiled Python bytecode, package pycache) reaches no other
// owner's environments, although the entry's bytes are shared by every
// function with the same zip. owner is an account id.
func (c *Cache) Own(dir, owner string) (string, error) {
	if owner == "" || strings.Trim(owner, "0123456789") != "" {
		return "", fmt.Errorf("codecache: owner %q", owner)
	}
	rel, err := filepath.Rel(c.dir, dir)
	kind, name, ok := strings.Cut(rel, string(filepath.Separator))
	if err != nil || !ok || !slices.Contains(Kinds, kind) || name == "" || strings.ContainsAny(name, "@"+string(filepath.Separator)) {
		return "", fmt.Errorf("codecache: %s is no entry of the cache", dir)
	}
	path := filepath.Join(c.dir, kind, name+"@"+owner)
	err = c.once(path, func(tmp string) error { return merge(dir, tmp) })
	return path, err
}

// Owned splits the name of an entry Own made into the entry's and the
// owner's; for any other entry, owner is "".
func Owned(name string) (entry, owner string) {
	entry, owner, _ = strings.Cut(name, "@")
	return entry, owner
}

// OptName is the name of the entry holding these layers merged.
func OptName(layerHexes []string) string {
	sum := sha256.Sum256([]byte(strings.Join(layerHexes, ",")))
	return hex.EncodeToString(sum[:])
}

// Kinds of entries, each a directory of the cache: "code" and "layer"
// entries are named by their zip's hex SHA-256, "opt" ones by OptName.
var Kinds = []string{"code", "layer", "opt"}

// Collect removes the entries keep refuses that nobody asked for within
// grace, nor were built within it, and returns how many it removed and
// the first error met (an entry it could not remove stays; the others go). The
// caller keeps what the store refers to; grace must outlast any
// environment started from an entry (the worker's longest lifetime, and
// an invocation still running at its end), because an environment's
// /var/task and /opt are these very directories. Each goes first into
// tmp, under mu, so that it is whole or gone for a concurrent Code or Opt.
func (c *Cache) Collect(keep func(kind, name string) bool, grace time.Duration) (int, error) {
	now := c.now()
	var doomed []string
	var firstErr error
	for _, kind := range Kinds {
		ents, err := os.ReadDir(filepath.Join(c.dir, kind))
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		for _, e := range ents {
			if keep(kind, e.Name()) {
				continue
			}
			path := filepath.Join(c.dir, kind, e.Name())
			c.mu.Lock()
			used, ok := c.lastUse[path]
			if info, err := e.Info(); err == nil && (!ok || info.ModTime().After(used)) {
				used = info.ModTime()
			}
			_, building := c.inflight[path]
			if building || now.Sub(used) < grace {
				c.mu.Unlock()
				continue
			}
			gone, err := os.MkdirTemp(filepath.Join(c.dir, "tmp"), "gc-")
			if err == nil {
				if err = os.Rename(path, filepath.Join(gone, e.Name())); err == nil {
					delete(c.lastUse, path)
				} else {
					os.Remove(gone)
				}
			}
			c.mu.Unlock()
			if err != nil {
				// This one stays; the others may still go.
				firstErr = cmp.Or(firstErr, err)
				continue
			}
			doomed = append(doomed, gone)
		}
	}
	c.mu.Lock()
	for path, t := range c.lastUse {
		if now.Sub(t) >= grace {
			if _, err := os.Lstat(path); err != nil {
				delete(c.lastUse, path) // a build that failed
			}
		}
	}
	c.mu.Unlock()
	removed := 0
	for _, d := range doomed {
		if err := removeTree(d); err != nil {
			firstErr = cmp.Or(firstErr, err) // tmp is cleared at the next start
			continue
		}
		removed++
	}
	return removed, firstErr
}

// removeTree removes dir and everything in it, also directories a zip
// made read-only.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// merge copies the tree src over dst; files of src replace files of dst.
// Hard links keep it cheap (the entries are immutable).
func merge(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if rel == "." {
				return nil
			}
			if st, err := os.Lstat(target); err == nil && !st.IsDir() {
				os.Remove(target)
			}
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.RemoveAll(target)
			return os.Symlink(link, target)
		default:
			os.RemoveAll(target)
			if err := os.Link(p, target); err == nil {
				return nil
			}
			return copyFile(p, target)
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Runtime writes nubo's runtime interface clients into <dir>/runtime and
// returns that directory.
func (c *Cache) Runtime(files map[string][]byte) (string, error) {
	dir := filepath.Join(c.dir, "runtime")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if old, err := os.ReadFile(p); err == nil && string(old) == string(b) {
			continue
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, p); err != nil {
			return "", err
		}
	}
	return dir, nil
}
