// Package codecache keeps deployment packages unpacked on this node, so an
// environment's cold start only mounts a directory: function code under
// <dir>/code/<hex sha256>, each layer under <dir>/layer/<hex>, and each
// ordered combination of a function's layers merged under
// <dir>/opt/<hash of the layer hashes> (later layers win, as in Lambda's
// /opt).
//
// Entries are immutable once made (they are addressed by content), built in
// a temporary directory and renamed into place, so a crash never leaves a
// half-unpacked entry that looks complete. Concurrent requests for the same
// entry build it once.
package codecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nubo-dev/nubo/internal/codezip"
	"github.com/nubo-dev/nubo/internal/function"
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
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	// Everything below is read by the runtime's unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &Cache{dir: dir, src: src, inflight: map[string]*build{}}, nil
}

// once builds path with fn unless it exists, deduplicating concurrent callers.
func (c *Cache) once(path string, fn func(tmp string) error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	c.mu.Lock()
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
	if err := fn(tmp); err != nil {
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
	sum := sha256.Sum256([]byte(strings.Join(layerHexes, ",")))
	path := filepath.Join(c.dir, "opt", hex.EncodeToString(sum[:]))
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
