// Package ziptest builds deployment packages in memory for tests of other
// packages: regular files with unix modes, directories and symlinks, the way
// Info-ZIP's zip records them (creator "unix", mode in the high 16 bits of
// the external attributes).
package ziptest

import (
	"archive/zip"
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// File is one entry of a zip built by Zip.
type File struct {
	// Name is the slash-separated path inside the zip; a trailing "/" makes
	// a directory entry.
	Name string
	Body []byte
	// Mode holds the permission bits; 0 means 0644 for files and 0755 for
	// directories. Type bits other than ModeSymlink are passed through, so
	// tests can build entries nubo must refuse (devices, pipes).
	Mode os.FileMode
	// Symlink, when set, makes the entry a symlink to this target (the zip
	// stores the target as the entry's content).
	Symlink string
}

// Zip builds a zip of files, in order, and fails t on any error.
func Zip(t testing.TB, files ...File) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	// A fixed time keeps the bytes, and so CodeSha256, reproducible.
	mod := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: mod}
		body := f.Body
		switch {
		case f.Symlink != "":
			h.SetMode(os.ModeSymlink | 0o777)
			body = []byte(f.Symlink)
		case strings.HasSuffix(f.Name, "/"):
			m := f.Mode
			if m.Perm() == 0 {
				m |= 0o755
			}
			h.SetMode(m | os.ModeDir)
			h.Method = zip.Store
		default:
			m := f.Mode
			if m.Perm() == 0 {
				m |= 0o644
			}
			h.SetMode(m)
		}
		fw, err := w.CreateHeader(h)
		if err != nil {
			t.Fatalf("ziptest: %s: %v", f.Name, err)
		}
		if _, err := fw.Write(body); err != nil {
			t.Fatalf("ziptest: %s: %v", f.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("ziptest: %v", err)
	}
	return buf.Bytes()
}
