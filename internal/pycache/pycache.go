// Package pycache owns the bytecode nubo compiles ahead for Python
// functions.
//
// A function's code and layers are read-only in its environments, as on
// Lambda, so CPython cannot cache what it compiles there: a package shipped
// without .pyc files is compiled again at every cold start. Importing a
// vendored boto3 without them took 0.85–0.90 s here, with them 0.46–0.49 s
// (docs/performance.md, "Where it stands (session 16)").
//
// nubo compiles each function code's sources once per account and
// interpreter, in a sandbox of its own: the runtime of that sandbox is the
// embedded compiler script (runtimes.Compiler), which parses and compiles
// but runs none of the function's code, and answers with a zip of .pyc
// files. The sandbox is untrusted like every other, so Apply writes a file
// from that zip into the account's copy of the unpacked code
// (codecache.Own) only when it is where CPython looks for the bytecode of
// a source that exists there — NAME.py's __pycache__/NAME.TAG.pyc — and
// when its header names that source's modification time and size, as
// CPython checks before using it. Nothing already there is replaced, and
// no path leaves the directory. What the bytecode does is the compiler's
// word, so it reaches the functions of that account only.
package pycache

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Limits bound what one archive may cost: the bytes of one file, the bytes
// decompressed in all (whether their files are kept or not), and the
// entries.
const (
	MaxFileBytes  = 32 << 20
	MaxTotalBytes = 256 << 20
	MaxFiles      = 100_000
)

// headerLen is a .pyc's header: magic, flags, source mtime, source size.
const headerLen = 16

// Apply writes the .pyc files of archive for CPython's cache tag (e.g.
// "cpython-311") into dirs, which maps an archive's top-level name ("task",
// "opt") to the host directory it stands for. It returns how many files it
// wrote; entries that fail the checks above are skipped (so is every
// entry after a name seen before, or once MaxTotalBytes are decompressed),
// and the error reports only an archive that cannot be read, a directory
// that cannot be written, or ctx's end.
func Apply(ctx context.Context, archive []byte, tag string, dirs map[string]string) (int, error) {
	if tag == "" || strings.ContainsAny(tag, "/\x00") {
		return 0, fmt.Errorf("pycache: cache tag %q", tag)
	}
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return 0, fmt.Errorf("pycache: %w", err)
	}
	if len(zr.File) > MaxFiles {
		return 0, fmt.Errorf("pycache: %d files in the archive, at most %d", len(zr.File), MaxFiles)
	}
	roots := map[string]*os.Root{}
	defer func() {
		for _, r := range roots {
			r.Close()
		}
	}()
	seen := map[string]bool{}
	written, budget := 0, int64(MaxTotalBytes)
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		if seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		top, rel, ok := strings.Cut(f.Name, "/")
		dir, isDir := dirs[top]
		if !ok || !isDir || dir == "" {
			continue
		}
		src, cache, ok := sourceOf(rel, tag)
		if !ok || f.UncompressedSize64 > MaxFileBytes {
			continue
		}
		root := roots[top]
		if root == nil {
			if root, err = os.OpenRoot(dir); err != nil {
				return written, fmt.Errorf("pycache: %w", err)
			}
			roots[top] = root
		}
		info, ok := plainSource(root, src)
		if !ok {
			continue
		}
		body, err := readEntry(f, info, &budget)
		if budget < 0 {
			break
		}
		if err != nil {
			continue
		}
		if err := write(root, cache, body); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return written, fmt.Errorf("pycache: %s: %w", cache, err)
		}
		written++
	}
	return written, nil
}

// PartialComment is the comment of an archive whose compiler stopped
// before it had compiled every source (a limit of its time or size): the
// rest is left for another run.
const PartialComment = "partial"

// Partial reports whether archive says its compiler stopped short (see
// PartialComment).
func Partial(archive []byte) bool {
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	return zr != nil && (err == nil || errors.Is(err, zip.ErrInsecurePath)) && zr.Comment == PartialComment
}

// sourceOf parses "DIR/__pycache__/NAME.TAG.pyc" (DIR may be empty or
// several components) into its source "DIR/NAME.py" and the file itself,
// both as clean relative paths.
func sourceOf(rel, tag string) (src, cache string, ok bool) {
	parts := strings.Split(rel, "/")
	n := len(parts)
	if n < 2 || parts[n-2] != "__pycache__" {
		return "", "", false
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return "", "", false
		}
	}
	name, ok := strings.CutSuffix(parts[n-1], "."+tag+".pyc")
	if !ok || name == "" {
		return "", "", false
	}
	src = strings.Join(append(parts[:n-2:n-2], name+".py"), "/")
	return src, rel, true
}

// plainSource returns the source's information when it is a regular file
// reached through real directories only: a symbolic link in the function's
// code could otherwise lead the write into another directory of it.
func plainSource(root *os.Root, src string) (fs.FileInfo, bool) {
	parts := strings.Split(src, "/")
	for i := 1; i < len(parts); i++ {
		fi, err := root.Lstat(strings.Join(parts[:i], "/"))
		if err != nil || !fi.IsDir() {
			return nil, false
		}
	}
	fi, err := root.Lstat(src)
	if err != nil || !fi.Mode().IsRegular() {
		return nil, false
	}
	return fi, true
}

// readEntry reads one entry, trusting none of its sizes: its header
// first, which must match the source described by info (see matches),
// then the rest. Every byte decompressed is taken from budget.
func readEntry(f *zip.File, info fs.FileInfo, budget *int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	head := make([]byte, headerLen)
	n, err := io.ReadFull(rc, head)
	*budget -= int64(n)
	if err != nil {
		return nil, err
	}
	if !matches(head, info) {
		return nil, errors.New("not a .pyc of its source")
	}
	limit := max(min(MaxFileBytes-headerLen, *budget), 0)
	rest, err := io.ReadAll(io.LimitReader(rc, limit+1))
	*budget -= int64(len(rest))
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 || int64(len(rest)) > limit {
		return nil, errors.New("empty, too large, or past the budget")
	}
	return append(head, rest...), nil
}

// matches reports whether head is the header of a timestamp-checked .pyc
// of the source described by info (PEP 552: magic ending in CR LF, flags
// 0, the source's modification time and size, each a little-endian 32-bit
// word: what CPython checks before it uses the file).
func matches(head []byte, info fs.FileInfo) bool {
	if len(head) < headerLen || head[2] != '\r' || head[3] != '\n' {
		return false
	}
	le := binary.LittleEndian
	return le.Uint32(head[4:]) == 0 &&
		le.Uint32(head[8:]) == uint32(info.ModTime().Unix()) &&
		le.Uint32(head[12:]) == uint32(info.Size())
}

// tmpSeq names write's temporary files.
var tmpSeq atomic.Uint64

// write creates cache with body unless it exists (fs.ErrExist), through a
// temporary file renamed into place, so that an import running meanwhile
// sees the whole file or none.
func write(root *os.Root, cache string, body []byte) error {
	dir := cache[:strings.LastIndexByte(cache, '/')] // ends in __pycache__ (sourceOf)
	if fi, err := root.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return fs.ErrExist
		}
	} else if err := root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	} else if err == nil {
		// Whatever nubo's umask: the function's user must enter it.
		if err := root.Chmod(dir, 0o755); err != nil {
			return err
		}
	}
	if _, err := root.Lstat(cache); err == nil {
		return fs.ErrExist
	}
	tmp := dir + "/.nubo-" + strconv.FormatUint(tmpSeq.Add(1), 10) + "-" + strconv.Itoa(os.Getpid()) + ".tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(body)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if _, serr := root.Lstat(cache); serr == nil {
			err = fs.ErrExist
		} else {
			err = root.Rename(tmp, cache)
		}
	}
	if err != nil {
		root.Remove(tmp)
	}
	return err
}
