package microvm

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "lib", "deep"), 0o755)
	os.WriteFile(filepath.Join(src, "bootstrap"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "lib", "deep", "data.txt"), []byte("hello"), 0o644)
	os.Symlink("deep/data.txt", filepath.Join(src, "lib", "link"))
	var buf bytes.Buffer
	if err := writeTar(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := readTar(&buf, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "lib", "link")); err != nil || string(b) != "hello" {
		t.Fatalf("through the symlink: %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dst, "bootstrap")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bootstrap: %v, %v", st, err)
	}
}

// TestTarCannotEscape: a deployment package's symlink cannot carry a later
// entry outside the directory the guest unpacks into.
func TestTarCannotEscape(t *testing.T) {
	outside := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "esc/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	err := readTar(&buf, filepath.Join(t.TempDir(), "dst"))
	if err == nil {
		t.Fatal("an entry through an escaping symlink was written")
	}
	if _, serr := os.Stat(filepath.Join(outside, "pwned")); serr == nil {
		t.Fatal("a file was written outside the directory")
	}
}

// FuzzGuestAnswer: what a (possibly compromised) guest answers is parsed
// without panicking and never read past the line.
func FuzzGuestAnswer(f *testing.F) {
	f.Add([]byte(`{"paths":{"TaskRoot":"/var/task"}}` + "\nrest"))
	f.Add([]byte(`{"error":"x"}` + "\n"))
	f.Add([]byte(`{"stats":{"MemoryPeak":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var resp response
		err := readJSONLine(r, &resp)
		if i := bytes.IndexByte(b, '\n'); err == nil && i >= 0 && r.Len() != len(b)-i-1 {
			t.Fatalf("read %d bytes past the line", len(b)-i-1-r.Len())
		}
	})
}

// FuzzReadTar: code arrives in the guest as tar; whatever the bytes, the
// unpacking stays inside its directory.
func FuzzReadTar(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
	tw.Write([]byte("hi"))
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../x"})
	tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		dst := filepath.Join(base, "dst")
		readTar(bytes.NewReader(b), dst)
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.Name() != "dst" {
				t.Fatalf("wrote %s outside the directory", e.Name())
			}
		}
		if strings.Contains(dst, "..") {
			t.Fatal("bad test")
		}
	})
}
