// Package codezip checks and extracts deployment packages: the zip files
// users upload as function code or layer content. Every byte of a package is
// hostile input; this package is the one place that turns it into files.
//
// What a package must satisfy (Inspect and Extract apply the same checks, in
// the same order, so they always agree on accept or reject and on the error):
//   - It is a readable zip; no entry is encrypted or uses a compression method
//     other than store and deflate; every CRC matches.
//   - Entry names are relative, slash-separated paths: no leading '/', no
//     '\\' (zip names never use it, and Windows tools that emit it make
//     paths that differ between unzippers), no NUL, no ".." component at all
//     (even "a/../b", which would stay inside, has no honest use), no
//     component over 255 bytes, no path over 4095 bytes. "." components and
//     repeated slashes are dropped.
//   - A path never runs through a symlink or a file of the package: entry
//     "a/x" after symlink "a" is refused, so nothing is ever written through a
//     link even in principle.
//   - Symlinks (unix mode S_IFLNK; the target is the entry's content) have a
//     relative target of at most 4095 bytes that, resolved from the link's
//     directory the way the kernel would, following the package's other
//     links, never climbs above the root. Dangling targets inside the root
//     are allowed. Absolute targets are refused.
//   - Only regular files, directories and symlinks; no devices, pipes,
//     sockets.
//   - Duplicates: a regular file named twice takes the later entry's content
//     and mode (as Info-ZIP's unzip -o does); a directory named twice is one
//     directory; any other repetition (a symlink named twice, a file and a
//     directory of the same name) is refused.
//   - Size: the bytes really decompressed, counted as they are read, never
//     exceed Limits.MaxUnzipped. The declared sizes are summed first as a
//     cheap early rejection (archive/zip refuses to read past an entry's
//     declared size, so the declared sum also bounds the real one), but the
//     counting does not depend on that.
//   - Count: files, directories (including implied ones) and symlinks
//     together never exceed Limits.MaxFiles, which bounds inodes and work.
//
// Extract writes regular files as 0644, or 0755 when the zip gave them any
// execute bit, and directories as 0755, whatever the zip says: the runtime
// runs as another uid, so everything must be readable by others, and code is
// never writable by anyone but its owner (Lambda's /var/task is read-only).
// setuid, setgid and sticky bits are dropped. Zips from non-unix tools carry
// no unix mode and get the same defaults. A "bootstrap" without an execute
// bit stays without one; the runtime reports that at init, as on AWS.
package codezip

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// DefaultMaxUnzipped is Lambda's limit on the unzipped size of a function's
// code and layers together.
const DefaultMaxUnzipped = 262144000

// DefaultMaxFiles bounds the files, directories and symlinks of one package.
// Lambda documents no such limit; this one is far above real packages (a
// large node_modules tree holds some tens of thousands) and only stops a
// package made of millions of tiny entries.
const DefaultMaxFiles = 100000

// Limits bounds what a package may unpack to. Zero fields take the defaults.
type Limits struct {
	MaxUnzipped int64
	MaxFiles    int
}

func (l Limits) withDefaults() Limits {
	if l.MaxUnzipped <= 0 {
		l.MaxUnzipped = DefaultMaxUnzipped
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Info describes a valid package.
type Info struct {
	Files    int // regular files (a file named twice counts once)
	Dirs     int // directories, including those only implied by a path
	Symlinks int
	// UnzippedSize is the number of bytes decompressed: file contents,
	// including those of superseded duplicates, and symlink targets.
	UnzippedSize int64
	// Executables lists, in zip order, the files extracted as executable.
	Executables []string
}

const msgInvalidZip = "Could not unzip uploaded file. Please check your file, then try to upload again."

// errInvalid is the client's answer to any malformed package; cause goes to
// the log only.
func errInvalid(cause error) error {
	e := errdefs.InvalidParameter(msgInvalidZip)
	e.Err = cause
	return e
}

func errInvalidf(format string, args ...any) error {
	return errInvalid(fmt.Errorf(format, args...))
}

func errTooBig(limit int64) error { return UnzippedSizeError(limit) }

// UnzippedSizeError is AWS's answer when code and layers together unzip to
// more than limit bytes. Callers summing Info.UnzippedSize over a function's
// code and its layers use it so the text matches the per-package check.
func UnzippedSizeError(limit int64) error {
	return errdefs.InvalidParameter("Unzipped size must be smaller than %d bytes", limit)
}

func errTooManyFiles(limit int) error {
	return errdefs.InvalidParameter("Deployment package must contain at most %d files, directories and symlinks.", limit)
}

// Inspect applies every check of the package doc without writing anything.
func Inspect(zipBytes []byte, lim Limits) (Info, error) {
	p, err := validate(zipBytes, lim.withDefaults())
	if err != nil {
		return Info{}, err
	}
	for _, e := range p.entries {
		if e.kind != kindFile {
			continue
		}
		if err := p.readEntry(e, nil); err != nil {
			return Info{}, err
		}
	}
	return p.info(), nil
}

// SHA256Base64 is Lambda's CodeSha256: the base64 of the SHA-256 of the zip.
func SHA256Base64(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// HexSHA256 is the hex SHA-256 of b, the key packages are stored under.
func HexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// counter counts decompressed bytes across all entries of one package.
type counter struct {
	total, max int64
	buf        []byte
}

// copy moves src to dst (nil discards), counting every byte decompressed
// before it is written anywhere. Read errors mean a broken package; write
// errors are returned wrapped in writeError so the caller can tell them apart.
//
// What goes to a file goes in writes of up to writeChunk, as large as its
// declared size (the zip's, which only sizes the buffer: a smaller file
// does not make every package take writeChunk of fresh memory, dear to
// touch on a guest); other destinations (a symlink's target) get 32 KiB
// at a time.
func (c *counter) copy(dst io.Writer, src io.Reader, declared uint64) error {
	size := 32 << 10
	if _, ok := dst.(interface{ Fd() uintptr }); ok { // a file
		size = int(min(max(declared, uint64(size)), writeChunk))
	}
	if len(c.buf) < size {
		c.buf = make([]byte, size)
	}
	buf, fill := c.buf[:size], 0
	for {
		n, rerr := src.Read(buf[fill:])
		if n > 0 {
			c.total += int64(n)
			if c.total > c.max {
				return errTooBig(c.max)
			}
			fill += n
		}
		if dst == nil {
			fill = 0
		} else if fill > 0 && (fill == len(buf) || rerr == io.EOF) {
			if _, werr := dst.Write(buf[:fill]); werr != nil {
				return writeError{werr}
			}
			fill = 0
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return errInvalid(rerr)
		}
	}
}

// writeChunk is the size of copy's writes to a file. On Linux 6.18 and
// ext4 here, the page cache kept a file in folios as large as the writes
// that brought it, and the function's runtime, exec'd from the file,
// started with fewer page faults and less CPU from large folios: written
// in 2 MiB writes (a huge page's size) it reached main as a copy written
// at once did, in 32 KiB writes it took about 60 more faults and 2 ms more
// CPU (docs/performance.md, session 24). The gain lasts while the pages
// stay cached; pages read back later get the folio sizes readahead picks.
const writeChunk = 2 << 20

// writeError marks a failure of the destination, not of the package.
type writeError struct{ err error }

func (w writeError) Error() string { return w.err.Error() }
func (w writeError) Unwrap() error { return w.err }

// readEntry decompresses a file entry into dst (nil: discard), counting it.
func (p *pkg) readEntry(e *entry, dst io.Writer) error {
	rc, err := e.f.Open()
	if err != nil {
		return errInvalid(fmt.Errorf("%s: %w", e.f.Name, err))
	}
	defer rc.Close()
	return p.count.copy(dst, rc, e.f.UncompressedSize64)
}

// readLink reads a symlink entry's target, counting it like any content.
func (p *pkg) readLink(e *entry) (string, error) {
	rc, err := e.f.Open()
	if err != nil {
		return "", errInvalid(fmt.Errorf("%s: %w", e.f.Name, err))
	}
	defer rc.Close()
	var b bytes.Buffer
	if err := p.count.copy(&b, io.LimitReader(rc, maxLinkTarget+1), 0); err != nil {
		return "", err
	}
	if b.Len() > maxLinkTarget {
		return "", errInvalidf("%s: symlink target longer than %d bytes", e.f.Name, maxLinkTarget)
	}
	return b.String(), nil
}
