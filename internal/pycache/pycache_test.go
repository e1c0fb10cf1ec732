package pycache

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const tag = "cpython-311"

// tree makes a function's code: sources, a directory reached through a
// symbolic link, and a .pyc the package shipped.
func tree(t testing.TB) (dir string, mtime time.Time) {
	dir = filepath.Join(t.TempDir(), "code")
	mtime = time.Unix(1_700_000_000, 0)
	for name, body := range map[string]string{
		"handler.py":                          "import pkg\n",
		"pkg/__init__.py":                     "x = 1\n",
		"pkg/sub/mod.py":                      "y = 2\n",
		"shipped.py":                          "z = 3\n",
		"__pycache__/shipped.cpython-311.pyc": "theirs",
		"data.txt":                            "not python\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("pkg", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir, mtime
}

// pyc is a .pyc header for a source of size bytes modified at mtime, and a
// body.
func pyc(mtime time.Time, size int) []byte {
	b := []byte{0xa7, 0x0d, '\r', '\n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[8:], uint32(mtime.Unix()))
	binary.LittleEndian.PutUint32(b[12:], uint32(size))
	return append(b, "code"...)
}

func archive(t testing.TB, files map[string][]byte) []byte {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w, err := z.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[n])
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestApply(t *testing.T) {
	dir, mt := tree(t)
	good := pyc(mt, len("x = 1\n"))
	arc := archive(t, map[string][]byte{
		"task/__pycache__/handler.cpython-311.pyc":      pyc(mt, len("import pkg\n")),
		"task/pkg/__pycache__/__init__.cpython-311.pyc": good,
		"task/pkg/sub/__pycache__/mod.cpython-311.pyc":  pyc(mt, len("y = 2\n")),
		// Refused, each for one reason:
		"task/__pycache__/shipped.cpython-311.pyc":            pyc(mt, len("z = 3\n")),                        // exists
		"task/__pycache__/data.cpython-311.pyc":               pyc(mt, 11),                                    // no data.py
		"task/__pycache__/missing.cpython-311.pyc":            good,                                           // no source
		"task/pkg/__pycache__/__init__.cpython-312.pyc":       good,                                           // another tag
		"task/pkg/__pycache__/__init__.cpython-311.opt-1.pyc": good,                                           // another name
		"task/link/__pycache__/__init__.cpython-311.pyc":      append(pyc(mt, len("x = 1\n")), "via link"...), // through a link
		"task/pkg/../__pycache__/handler.cpython-311.pyc":     good,                                           // not clean
		"task/pkg/mod.cpython-311.pyc":                        good,                                           // not in __pycache__
		"opt/__pycache__/handler.cpython-311.pyc":             good,                                           // no such directory given
		"other/__pycache__/handler.cpython-311.pyc":           good,                                           // unknown top
		"task/pkg/sub/__pycache__/x.cpython-311.pyc":          good,                                           // no x.py
		"task/pkg/__pycache__/__init__.cpython-311.pyc/x":     good,                                           // a directory
		"task/pkg/sub/__pycache__/mod.cpython-311.opt-2.pyc":  good,                                           // an optimised name
	})
	// Headers that name another source, or none, each refused.
	flags := pyc(mt, len("y = 2\n"))
	flags[4] = 1
	nocrlf := pyc(mt, len("y = 2\n"))
	nocrlf[2] = 'x'
	for what, body := range map[string][]byte{"size": pyc(mt, 7), "flags": flags, "magic": nocrlf,
		"header only": pyc(mt, len("y = 2\n"))[:16], "short": []byte("\xa7\r\r\n")} {
		n, err := Apply(context.Background(), archive(t, map[string][]byte{"task/pkg/sub/__pycache__/mod.cpython-311.pyc": body}), tag, map[string]string{"task": dir})
		if err != nil || n != 0 {
			t.Errorf("%s: wrote %d, %v", what, n, err)
		}
	}
	// A stale header: the source changed after compiling.
	stale := archive(t, map[string][]byte{"task/pkg/sub/__pycache__/mod.cpython-311.pyc": pyc(mt.Add(time.Second), 6)})
	if n, err := Apply(context.Background(), stale, tag, map[string]string{"task": dir}); err != nil || n != 0 {
		t.Fatalf("stale header: wrote %d, %v", n, err)
	}
	n, err := Apply(context.Background(), arc, tag, map[string]string{"task": dir, "opt": ""})
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("wrote %d files, want 3", n)
	}
	var got []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return nil
	})
	want := []string{"__pycache__/handler.cpython-311.pyc", "__pycache__/shipped.cpython-311.pyc", "data.txt",
		"handler.py", "link", "pkg/__init__.py", "pkg/__pycache__/__init__.cpython-311.pyc",
		"pkg/sub/__pycache__/mod.cpython-311.pyc", "pkg/sub/mod.py", "shipped.py"}
	if !slices.Equal(got, want) {
		t.Errorf("files:\n got %q\nwant %q", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pkg/__pycache__/__init__.cpython-311.pyc")); !bytes.Equal(b, good) {
		t.Errorf("written .pyc %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "__pycache__/shipped.cpython-311.pyc")); string(b) != "theirs" {
		t.Errorf("a shipped .pyc was replaced: %q", b)
	}
	fi, err := os.Stat(filepath.Join(dir, "pkg/sub/__pycache__/mod.cpython-311.pyc"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi, err)
	}
	if es, _ := os.ReadDir(filepath.Dir(dir)); len(es) != 1 {
		t.Errorf("wrote outside: %v", es)
	}
	// Again: everything exists now.
	if n, err := Apply(context.Background(), arc, tag, map[string]string{"task": dir}); err != nil || n != 0 {
		t.Errorf("second apply wrote %d, %v", n, err)
	}
}

func TestApplyRefuses(t *testing.T) {
	dir, _ := tree(t)
	if _, err := Apply(context.Background(), []byte("not a zip"), tag, map[string]string{"task": dir}); err == nil {
		t.Error("not a zip: no error")
	}
	for _, bad := range []string{"", "a/b", "x\x00"} {
		if _, err := Apply(context.Background(), archive(t, nil), bad, map[string]string{"task": dir}); err == nil {
			t.Errorf("tag %q: no error", bad)
		}
	}
	mt0 := time.Unix(1_700_000_000, 0)
	// A __pycache__ that is a link is not followed.
	if err := os.Symlink("../..", filepath.Join(dir, "pkg", "__pycache__")); err != nil {
		t.Fatal(err)
	}
	n, err := Apply(context.Background(), archive(t, map[string][]byte{"task/pkg/__pycache__/__init__.cpython-311.pyc": pyc(mt0, 6)}), tag, map[string]string{"task": dir})
	if err != nil || n != 0 {
		t.Errorf("__pycache__ a link: wrote %d, %v", n, err)
	}
	// A name seen twice: only its first entry counts, whatever it holds.
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for _, body := range [][]byte{pyc(mt0, 5), pyc(mt0, len("import pkg\n"))} {
		w, _ := z.Create("task/__pycache__/handler.cpython-311.pyc")
		w.Write(body)
	}
	z.Close()
	if n, err := Apply(context.Background(), buf.Bytes(), tag, map[string]string{"task": dir}); err != nil || n != 0 {
		t.Errorf("a name twice: wrote %d, %v", n, err)
	}
	// An ended context ends it.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ended, archive(t, map[string][]byte{"task/__pycache__/handler.cpython-311.pyc": pyc(mt0, 11)}), tag, map[string]string{"task": dir}); err == nil {
		t.Error("an ended context: no error")
	}
	// A __pycache__ that is a file is left alone.
	if err := os.WriteFile(filepath.Join(dir, "pkg/sub/__pycache__"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err = Apply(context.Background(), archive(t, map[string][]byte{"task/pkg/sub/__pycache__/mod.cpython-311.pyc": pyc(mt0, 6)}), tag, map[string]string{"task": dir})
	if err != nil || n != 0 {
		t.Errorf("__pycache__ a file: wrote %d, %v", n, err)
	}
}

func TestSourceOf(t *testing.T) {
	for rel, want := range map[string]string{
		"__pycache__/a.cpython-311.pyc":       "a.py",
		"p/q/__pycache__/a.b.cpython-311.pyc": "p/q/a.b.py",
		"__pycache__/.cpython-311.pyc":        "",
		"/__pycache__/a.cpython-311.pyc":      "",
		"p//__pycache__/a.cpython-311.pyc":    "",
		"./__pycache__/a.cpython-311.pyc":     "",
		"__pycache__/a.cpython-311.pyc.pyc":   "",
		"a.cpython-311.pyc":                   "",
	} {
		src, cache, ok := sourceOf(rel, tag)
		if ok != (want != "") || src != want || (ok && cache != rel) {
			t.Errorf("sourceOf(%q) = %q, %q, %v; want %q", rel, src, cache, ok, want)
		}
	}
}

// FuzzApply holds Apply to its promise whatever the archive: it writes
// only new files named for a source that exists, under real directories,
// never outside the directory, and never replaces or removes a file.
func FuzzApply(f *testing.F) {
	mt := time.Unix(1_700_000_000, 0)
	f.Add(archive(f, map[string][]byte{"task/pkg/__pycache__/__init__.cpython-311.pyc": pyc(mt, 6)}))
	f.Add(archive(f, map[string][]byte{"task/link/__pycache__/__init__.cpython-311.pyc": pyc(mt, 6),
		"task/../x/__pycache__/a.cpython-311.pyc": pyc(mt, 6)}))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, arc []byte) {
		dir, _ := tree(t)
		before := snapshot(t, dir)
		Apply(context.Background(), arc, tag, map[string]string{"task": dir})
		after := snapshot(t, dir)
		for p, body := range before {
			if after[p] != body {
				t.Fatalf("%s changed", p)
			}
		}
		for p := range after {
			if _, ok := before[p]; ok {
				continue
			}
			src, _, ok := sourceOf(filepath.ToSlash(p), tag)
			if !ok || strings.HasPrefix(p, "link") {
				t.Fatalf("wrote %s", p)
			}
			if _, ok := before[src]; !ok {
				t.Fatalf("wrote %s without %s", p, src)
			}
			info, err := os.Stat(filepath.Join(dir, src))
			if err != nil || !matches([]byte(after[p]), info) {
				t.Fatalf("wrote %s with a header not of %s", p, src)
			}
		}
		if es, _ := os.ReadDir(filepath.Dir(dir)); len(es) != 1 {
			t.Fatalf("wrote outside: %v", es)
		}
	})
}

// snapshot maps every regular file under dir to its contents.
func snapshot(t *testing.T, dir string) map[string]string {
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = string(b)
		return nil
	})
	return m
}
