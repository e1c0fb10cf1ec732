package codezip

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/errdefs"
)

type file = ziptest.File

// forEachWriter runs f once with openat2 and once with the per-component
// fallback, so both ways of reaching directories are exercised.
func forEachWriter(t *testing.T, f func(t *testing.T)) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) {
			old := noOpenat2
			noOpenat2 = walk
			defer func() { noOpenat2 = old }()
			f(t)
		})
	}
}

// sandbox returns an empty extraction root inside a parent that holds one
// other, empty directory; noEscape checks that the parent still holds
// exactly these two and that "outside" is still empty.
func sandbox(t *testing.T) (root string, noEscape func()) {
	t.Helper()
	parent := t.TempDir()
	root = filepath.Join(parent, "root")
	outside := filepath.Join(parent, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, func() {
		t.Helper()
		ents, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !reflect.DeepEqual(names, []string{"outside", "root"}) {
			t.Errorf("something was written next to the root: %v", names)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("something was written outside the root: %v", ents)
		}
	}
}

func isEmpty(t *testing.T, dir string) bool {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) == 0
}

func TestExtractValid(t *testing.T) {
	mod := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	z := ziptest.Zip(t,
		file{Name: "bootstrap", Body: []byte("#!/bin/sh\n"), Mode: 0o755},
		file{Name: "src/"},
		file{Name: "src/handler.py", Body: []byte("def h(e, c): return 1\n")},
		file{Name: "src/pkg/deep/mod.py", Body: []byte("x = 1\n"), Mode: 0o600}, // too private: made 0644
		file{Name: "bin/tool", Body: []byte("\x7fELF"), Mode: 0o700},            // owner-only exec: made 0755
		file{Name: "bin/suid", Body: []byte("s"), Mode: os.ModeSetuid | 0o4755}, // setuid dropped
		file{Name: "world", Body: []byte("w"), Mode: 0o666},                     // group/other write dropped
		file{Name: "private/", Mode: 0o700},                                     // dirs always 0755
		file{Name: "./dot/./x", Body: []byte("dot")},                            // "." components dropped
		file{Name: "lib/", Mode: 0o777},
		file{Name: "lib/libz.so.1", Body: []byte("lib")},
		file{Name: "lib/libz.so", Symlink: "libz.so.1"},
		file{Name: "src/shared", Symlink: "../lib"},
		file{Name: "dangling", Symlink: "not/there"},
		file{Name: "empty", Body: nil},
	)
	forEachWriter(t, func(t *testing.T) {
		root, noEscape := sandbox(t)
		got, err := Extract(z, root, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		noEscape()
		want := Info{
			Files:        9,
			Dirs:         7, // src, src/pkg, src/pkg/deep, bin, private, dot, lib
			Symlinks:     3,
			UnzippedSize: int64(len("#!/bin/sh\n") + len("def h(e, c): return 1\n") + len("x = 1\n") + 4 + 1 + 1 + 3 + 3 + len("libz.so.1") + len("../lib") + len("not/there")),
			Executables:  []string{"bootstrap", "bin/tool", "bin/suid"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Extract info\n got %+v\nwant %+v", got, want)
		}
		in, err := Inspect(z, Limits{})
		if err != nil || !reflect.DeepEqual(in, got) {
			t.Errorf("Inspect = %+v, %v; Extract said %+v", in, err, got)
		}

		modes := map[string]os.FileMode{
			"bootstrap":           0o755,
			"src":                 fs.ModeDir | 0o755,
			"src/handler.py":      0o644,
			"src/pkg":             fs.ModeDir | 0o755,
			"src/pkg/deep":        fs.ModeDir | 0o755,
			"src/pkg/deep/mod.py": 0o644,
			"bin":                 fs.ModeDir | 0o755,
			"bin/tool":            0o755,
			"bin/suid":            0o755,
			"world":               0o644,
			"private":             fs.ModeDir | 0o755,
			"dot":                 fs.ModeDir | 0o755,
			"dot/x":               0o644,
			"lib":                 fs.ModeDir | 0o755,
			"lib/libz.so.1":       0o644,
			"lib/libz.so":         fs.ModeSymlink,
			"src/shared":          fs.ModeSymlink,
			"dangling":            fs.ModeSymlink,
			"empty":               0o644,
		}
		seen := map[string]bool{}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			seen[rel] = true
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			wantMode, ok := modes[rel]
			if !ok {
				t.Errorf("unexpected %s", rel)
				return nil
			}
			m := fi.Mode()
			if m.Type() == fs.ModeSymlink {
				m = fs.ModeSymlink
			}
			if m != wantMode {
				t.Errorf("%s: mode %v, want %v", rel, m, wantMode)
			}
			if !fi.IsDir() && !fi.ModTime().Equal(mod) {
				t.Errorf("%s: mtime %v, want %v", rel, fi.ModTime(), mod)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != len(modes) {
			t.Errorf("extracted %d paths, want %d", len(seen), len(modes))
		}
		if b, err := os.ReadFile(filepath.Join(root, "src/shared/libz.so")); err != nil || string(b) != "lib" {
			t.Errorf("through the links: %q %v", b, err)
		}
		if tg, _ := os.Readlink(filepath.Join(root, "src/shared")); tg != "../lib" {
			t.Errorf("link target %q", tg)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "src/pkg/deep/mod.py")); string(b) != "x = 1\n" {
			t.Errorf("content %q", b)
		}
	})
}

// windowsZip builds entries the way Windows tools do: no unix mode at all.
func windowsZip(t *testing.T, names ...string) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, n := range names {
		h := &zip.FileHeader{Name: n, Method: zip.Deflate}
		if strings.HasSuffix(n, "/") {
			h.ExternalAttrs = 0x10 // MS-DOS directory
		}
		fw, err := w.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(n, "/") {
			fw.Write([]byte(n))
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractWindowsZip(t *testing.T) {
	z := windowsZip(t, "bootstrap", "app/", "app/main.js")
	root, _ := sandbox(t)
	info, err := Extract(z, root, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Files != 2 || info.Dirs != 1 || len(info.Executables) != 0 {
		t.Errorf("info %+v", info)
	}
	for p, want := range map[string]os.FileMode{"bootstrap": 0o644, "app": fs.ModeDir | 0o755, "app/main.js": 0o644} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
}

func TestDuplicates(t *testing.T) {
	z := ziptest.Zip(t,
		file{Name: "a/"},
		file{Name: "f", Body: []byte("first"), Mode: 0o755},
		file{Name: "a/"},
		file{Name: "f", Body: []byte("second")},
	)
	forEachWriter(t, func(t *testing.T) {
		root, _ := sandbox(t)
		info, err := Extract(z, root, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want := Info{Files: 1, Dirs: 1, UnzippedSize: int64(len("first") + len("second"))}
		if !reflect.DeepEqual(info, want) {
			t.Errorf("info %+v, want %+v", info, want)
		}
		fi, _ := os.Stat(filepath.Join(root, "f"))
		b, _ := os.ReadFile(filepath.Join(root, "f"))
		if string(b) != "second" || fi.Mode() != 0o644 {
			t.Errorf("later entry must win: %q %v", b, fi.Mode())
		}
	})
}

// patchCentral edits the n-th central directory record of z in place.
func patchCentral(t *testing.T, z []byte, n int, edit func(rec []byte)) []byte {
	t.Helper()
	z = bytes.Clone(z)
	off := 0
	for i := 0; ; i++ {
		j := bytes.Index(z[off:], []byte("PK\x01\x02"))
		if j < 0 {
			t.Fatalf("central record %d not found", n)
		}
		off += j
		if i == n {
			edit(z[off : off+46])
			return z
		}
		off += 4
	}
}

// zipWithMethod writes one entry whose method id is set as given, with the
// body stored raw.
func zipWithMethod(t *testing.T, method uint16) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "f", Method: zip.Store}
	fw, err := w.CreateHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte("data"))
	w.Close()
	return patchCentral(t, buf.Bytes(), 0, func(rec []byte) { binary.LittleEndian.PutUint16(rec[10:], method) })
}

func TestRejections(t *testing.T) {
	valid := ziptest.Zip(t, file{Name: "a", Body: bytes.Repeat([]byte("hello "), 100)}, file{Name: "b", Body: []byte("x")})
	long := strings.Repeat("n", 256)
	deep := strings.Repeat("d/", 2048) + "f"
	many := make([]file, 11)
	for i := range many {
		many[i] = file{Name: string(rune('a'+i)) + ".txt"}
	}
	cases := []struct {
		name string
		zip  []byte
		lim  Limits
		msg  string // "" means the invalid-zip message
	}{
		{"garbage", []byte("this is not a zip file at all"), Limits{}, ""},
		{"empty input", nil, Limits{}, ""},
		{"truncated", valid[:len(valid)-10], Limits{}, ""},
		{"truncated data", append(append([]byte{}, valid[:40]...), valid[len(valid)-120:]...), Limits{}, ""},
		{"crc", patchCentral(t, valid, 1, func(r []byte) { r[16] ^= 0xff }), Limits{}, ""},
		{"encrypted", patchCentral(t, valid, 0, func(r []byte) { r[8] |= 1 }), Limits{}, ""},
		{"bzip2 method", zipWithMethod(t, 12), Limits{}, ""},
		{"absolute", ziptest.Zip(t, file{Name: "/etc/passwd"}), Limits{}, ""},
		{"dotdot", ziptest.Zip(t, file{Name: "../evil"}), Limits{}, ""},
		{"inner dotdot", ziptest.Zip(t, file{Name: "a/../../evil"}), Limits{}, ""},
		{"harmless dotdot", ziptest.Zip(t, file{Name: "a/../b"}), Limits{}, ""},
		{"backslash", ziptest.Zip(t, file{Name: `..\..\evil`}), Limits{}, ""},
		{"NUL", ziptest.Zip(t, file{Name: "a\x00b"}), Limits{}, ""},
		{"long component", ziptest.Zip(t, file{Name: long}), Limits{}, ""},
		{"long path", ziptest.Zip(t, file{Name: deep}), Limits{}, ""},
		{"unnamed file", ziptest.Zip(t, file{Name: "./"}, file{Name: "."}), Limits{}, ""},
		{"device", ziptest.Zip(t, file{Name: "dev", Mode: os.ModeDevice | 0o644}), Limits{}, ""},
		{"fifo", ziptest.Zip(t, file{Name: "p", Mode: os.ModeNamedPipe | 0o644}), Limits{}, ""},
		{"abs symlink", ziptest.Zip(t, file{Name: "l", Symlink: "/etc/passwd"}), Limits{}, ""},
		{"escaping symlink", ziptest.Zip(t, file{Name: "l", Symlink: "../outside"}), Limits{}, ""},
		{"deep escaping symlink", ziptest.Zip(t, file{Name: "d/l", Symlink: "../../outside"}), Limits{}, ""},
		{"escape via dot dir", ziptest.Zip(t, file{Name: "l", Symlink: "./../x"}), Limits{}, ""},
		{"escape via another link", ziptest.Zip(t,
			file{Name: "d/l1", Symlink: ".."},
			file{Name: "l2", Symlink: "d/l1/../outside"}), Limits{}, ""},
		{"escape via later link", ziptest.Zip(t,
			file{Name: "l2", Symlink: "a/.."},
			file{Name: "a", Symlink: "."}), Limits{}, ""},
		{"chain escape", ziptest.Zip(t, file{Name: "a", Symlink: "b"}, file{Name: "b", Symlink: ".."}), Limits{}, ""},
		{"link loop", ziptest.Zip(t, file{Name: "a", Symlink: "b"}, file{Name: "b", Symlink: "a"}), Limits{}, ""},
		{"self loop", ziptest.Zip(t, file{Name: "a", Symlink: "a/x"}), Limits{}, ""},
		{"empty link", ziptest.Zip(t, file{Name: "l", Symlink: ""}, file{Name: "m", Mode: os.ModeSymlink}), Limits{}, ""},
		{"long link", ziptest.Zip(t, file{Name: "l", Symlink: strings.Repeat("a/", 2048)}), Limits{}, ""},
		{"write through link", ziptest.Zip(t,
			file{Name: "sub/"},
			file{Name: "a", Symlink: "sub"},
			file{Name: "a/x", Body: []byte("x")}), Limits{}, ""},
		{"write through escaping link", ziptest.Zip(t,
			file{Name: "a", Symlink: "../outside"},
			file{Name: "a/x", Body: []byte("x")}), Limits{}, ""},
		{"link over dir", ziptest.Zip(t, file{Name: "a/x"}, file{Name: "a", Symlink: "b"}), Limits{}, ""},
		{"link twice", ziptest.Zip(t, file{Name: "a", Symlink: "b"}, file{Name: "a", Symlink: "b"}), Limits{}, ""},
		{"file then dir", ziptest.Zip(t, file{Name: "a"}, file{Name: "a/"}), Limits{}, ""},
		{"file then child", ziptest.Zip(t, file{Name: "a"}, file{Name: "a/b"}), Limits{}, ""},
		{"dir then file", ziptest.Zip(t, file{Name: "a/"}, file{Name: "a"}), Limits{}, ""},
		{"link then file", ziptest.Zip(t, file{Name: "a", Symlink: "b"}, file{Name: "a"}), Limits{}, ""},
		{"too many entries", ziptest.Zip(t, many...), Limits{MaxFiles: 10},
			"Deployment package must contain at most 10 files, directories and symlinks."},
		{"too many implied dirs", ziptest.Zip(t, file{Name: "a/b/c/d/e/f/g/h/i/j/k"}), Limits{MaxFiles: 10},
			"Deployment package must contain at most 10 files, directories and symlinks."},
		{"too big", valid, Limits{MaxUnzipped: 600}, "Unzipped size must be smaller than 600 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.msg
			if want == "" {
				want = msgInvalidZip
			}
			check := func(op string, err error) {
				t.Helper()
				var e *errdefs.Error
				if !errors.As(err, &e) || e.Kind != errdefs.KindInvalidParameter || e.Message != want {
					t.Errorf("%s: err = %v, want InvalidParameter %q", op, err, want)
				}
			}
			_, err := Inspect(c.zip, c.lim)
			check("Inspect", err)
			forEachWriter(t, func(t *testing.T) {
				root, noEscape := sandbox(t)
				info, xerr := Extract(c.zip, root, c.lim)
				check("Extract", xerr)
				if xerr != nil && err != nil && xerr.Error() != err.Error() {
					t.Errorf("Inspect and Extract disagree: %v / %v", err, xerr)
				}
				if !reflect.DeepEqual(info, Info{}) {
					t.Errorf("info on failure: %+v", info)
				}
				if !isEmpty(t, root) {
					t.Errorf("Extract left files behind")
				}
				noEscape()
			})
		})
	}
}

// TestSymlinksInside checks links the package may keep, and that every one
// that resolves on disk resolves inside the root according to the kernel.
func TestSymlinksInside(t *testing.T) {
	z := ziptest.Zip(t,
		file{Name: "vendor/lib/x.so", Body: []byte("so")},
		file{Name: "lib", Symlink: "vendor/lib"},
		file{Name: "up", Symlink: "lib/../.."}, // vendor/lib/../.. is the root
		file{Name: "d/l1", Symlink: ".."},
		file{Name: "d/self", Symlink: "."},
		file{Name: "d/root", Symlink: "l1/d/l1"},
		file{Name: "d/e/f/back", Symlink: "../../../lib/x.so"},
		file{Name: "dangling", Symlink: "nothing/../here"},
	)
	forEachWriter(t, func(t *testing.T) {
		root, noEscape := sandbox(t)
		info, err := Extract(z, root, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		noEscape()
		if info.Symlinks != 7 {
			t.Errorf("info %+v", info)
		}
		realRoot, _ := filepath.EvalSymlinks(root)
		for _, l := range []string{"lib", "up", "d/l1", "d/self", "d/root", "d/e/f/back"} {
			p, err := filepath.EvalSymlinks(filepath.Join(root, l))
			if err != nil {
				t.Errorf("%s: %v", l, err)
				continue
			}
			if p != realRoot && !strings.HasPrefix(p, realRoot+"/") {
				t.Errorf("%s resolves to %s, outside %s", l, p, realRoot)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(root, "d/e/f/back")); string(b) != "so" {
			t.Errorf("back: %q", b)
		}
	})
}

func TestExtractCleansUpAfterLateFailure(t *testing.T) {
	// Many good entries, then one whose CRC is wrong: the failure comes
	// only when its content is read, after the others were written.
	var files []file
	for i := range 20 {
		files = append(files, file{Name: "dir" + string(rune('a'+i)) + "/f", Body: bytes.Repeat([]byte{byte(i)}, 1000), Mode: 0o755})
	}
	files = append(files, file{Name: "l", Symlink: "dira/f"}, file{Name: "zlast", Body: []byte("broken")})
	z := ziptest.Zip(t, files...)
	z = patchCentral(t, z, len(files)-1, func(r []byte) { r[16] ^= 1 })
	forEachWriter(t, func(t *testing.T) {
		root, noEscape := sandbox(t)
		_, err := Extract(z, root, Limits{})
		if !errdefs.Is(err, errdefs.KindInvalidParameter) {
			t.Fatalf("err = %v", err)
		}
		if !isEmpty(t, root) {
			t.Errorf("files left after a failed extraction")
		}
		noEscape()
	})
}

func TestExtractNeedsEmptyDir(t *testing.T) {
	root, _ := sandbox(t)
	keep := filepath.Join(root, "keep")
	os.WriteFile(keep, []byte("mine"), 0o644)
	_, err := Extract(ziptest.Zip(t, file{Name: "a"}), root, Limits{})
	if err == nil || errdefs.KindOf(err) != errdefs.KindUnknown {
		t.Fatalf("err = %v, want a plain (server-side) error", err)
	}
	if b, _ := os.ReadFile(keep); string(b) != "mine" {
		t.Errorf("existing content touched")
	}
	if _, err := Extract(ziptest.Zip(t, file{Name: "a"}), filepath.Join(root, "missing"), Limits{}); err == nil {
		t.Errorf("missing dir accepted")
	}
}

// zerosZip writes one entry of n zero bytes through the streaming writer,
// so building it needs no n-byte buffer.
func zerosZip(t *testing.T, n int64) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	fw, err := w.Create("zeros")
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(chunk)))
		fw.Write(chunk[:k])
		n -= k
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBombHonest(t *testing.T) {
	z := zerosZip(t, 300<<20)
	if len(z) > 1<<20 {
		t.Fatalf("zip of zeros is %d bytes", len(z))
	}
	_, err := Inspect(z, Limits{})
	if !errdefs.Is(err, errdefs.KindInvalidParameter) || err.Error() != "Unzipped size must be smaller than 262144000 bytes" {
		t.Fatalf("Inspect: %v", err)
	}
	root, _ := sandbox(t)
	if _, err := Extract(z, root, Limits{}); err == nil || err.Error() != "Unzipped size must be smaller than 262144000 bytes" {
		t.Fatalf("Extract: %v", err)
	}
	if !isEmpty(t, root) {
		t.Errorf("Extract wrote something")
	}
	// Just under the limit passes, and the count is the real size.
	small := zerosZip(t, 1<<20)
	info, err := Inspect(small, Limits{MaxUnzipped: 1 << 20})
	if err != nil || info.UnzippedSize != 1<<20 {
		t.Errorf("exactly at the limit: %+v %v", info, err)
	}
	if _, err := Inspect(small, Limits{MaxUnzipped: 1<<20 - 1}); !errdefs.Is(err, errdefs.KindInvalidParameter) {
		t.Errorf("one byte over: %v", err)
	}
}

func TestBombLyingHeader(t *testing.T) {
	// 64 MiB of zeros whose central directory claims 100 bytes: the
	// declared sizes pass the early check, the content must not.
	honest := zerosZip(t, 64<<20)
	for _, declared := range []uint32{100, 0} {
		z := patchCentral(t, honest, 0, func(r []byte) { binary.LittleEndian.PutUint32(r[24:], declared) })
		start := time.Now()
		_, err := Inspect(z, Limits{MaxUnzipped: 1 << 20})
		if !errdefs.Is(err, errdefs.KindInvalidParameter) {
			t.Fatalf("declared %d: Inspect accepted a lying header: %v", declared, err)
		}
		forEachWriter(t, func(t *testing.T) {
			root, noEscape := sandbox(t)
			if _, err := Extract(z, root, Limits{MaxUnzipped: 1 << 20}); !errdefs.Is(err, errdefs.KindInvalidParameter) {
				t.Fatalf("Extract: %v", err)
			}
			if !isEmpty(t, root) {
				t.Errorf("left files")
			}
			noEscape()
		})
		// Stopping early means not inflating 64 MiB.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	}
	// A header claiming more than the content is just as broken.
	z := patchCentral(t, zerosZip(t, 1000), 0, func(r []byte) { binary.LittleEndian.PutUint32(r[24:], 5000) })
	_, err := Inspect(z, Limits{})
	if !errdefs.Is(err, errdefs.KindInvalidParameter) || messageOf(err) != msgInvalidZip {
		t.Errorf("oversized claim: %v", err)
	}
	// A declared size over the limit is refused as too big from the headers
	// alone, before anything is inflated (the content here would only show
	// a size mismatch).
	_, err = Inspect(z, Limits{MaxUnzipped: 4000})
	if err == nil || err.Error() != "Unzipped size must be smaller than 4000 bytes" {
		t.Errorf("declared over the limit: %v", err)
	}
}

// endless yields zeros and records how much it handed out. It gives up
// after 64 MiB so that a counter that never stops fails the test instead of
// hanging it.
type endless struct{ served int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.served >= 64<<20 {
		return 0, io.EOF
	}
	clear(p)
	e.served += int64(len(p))
	return len(p), nil
}

type sink struct{ n int64 }

func (s *sink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }

func TestCounterStopsAtLimit(t *testing.T) {
	// The counter must not rely on any header: fed a stream that never
	// ends, it stops once the limit is crossed and writes nothing beyond it.
	src, dst := &endless{}, &sink{}
	c := counter{max: 100000}
	err := c.copy(dst, src, 0)
	if !errdefs.Is(err, errdefs.KindInvalidParameter) || err.Error() != "Unzipped size must be smaller than 100000 bytes" {
		t.Fatalf("err = %v", err)
	}
	if dst.n > 100000 {
		t.Errorf("wrote %d bytes past a limit of 100000", dst.n)
	}
	if src.served > 100000+int64(len(c.buf)) {
		t.Errorf("read %d bytes", src.served)
	}
	// The total runs across entries.
	c = counter{max: 10}
	if err := c.copy(nil, strings.NewReader("123456"), 6); err != nil {
		t.Fatal(err)
	}
	if err := c.copy(nil, strings.NewReader("12345"), 5); !errdefs.Is(err, errdefs.KindInvalidParameter) {
		t.Errorf("second entry: %v", err)
	}
	// A failing destination is not the package's fault.
	c = counter{max: 10}
	err = c.copy(failWriter{}, strings.NewReader("abc"), 3)
	var we writeError
	if !errors.As(err, &we) || errdefs.KindOf(err) != errdefs.KindUnknown {
		t.Errorf("write failure: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

// messageOf is what the client would see: the message without the cause.
func messageOf(err error) string {
	var e *errdefs.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return ""
}

func TestEmptyZip(t *testing.T) {
	z := ziptest.Zip(t)
	info, err := Inspect(z, Limits{})
	if err != nil || !reflect.DeepEqual(info, Info{}) {
		t.Errorf("empty zip: %+v %v", info, err)
	}
}

func TestHashes(t *testing.T) {
	// FIPS 180-2 test vector for "abc".
	if got := HexSHA256([]byte("abc")); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HexSHA256 = %s", got)
	}
	if got := SHA256Base64([]byte("abc")); got != "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=" {
		t.Errorf("SHA256Base64 = %s", got)
	}
}

// smallReads reads at most 32 KiB at a time, as a decompressor does.
type smallReads struct{ r io.Reader }

func (s smallReads) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), 32<<10)])
}

// writes records each write.
type writes [][]byte

func (w *writes) Write(p []byte) (int, error) {
	*w = append(*w, bytes.Clone(p))
	return len(p), nil
}

func (w writes) sizes() []int {
	var s []int
	for _, b := range w {
		s = append(s, len(b))
	}
	return s
}

// TestCopyWritesLargeChunks: a file's bytes reach it whole and in writes of
// writeChunk, however small the reads they come in (a decompressor's are
// 32 KiB at most), so that the page cache keeps them in large folios.
func TestCopyWritesLargeChunks(t *testing.T) {
	const size = 2*writeChunk + 12345
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got writes
	c := &counter{max: size}
	// The data comes with io.EOF on its last read.
	if err := c.copy(&recordingFile{File: f, w: &got}, smallReads{iotest.DataErrReader(bytes.NewReader(data))}, size); err != nil {
		t.Fatal(err)
	}
	if want := []int{writeChunk, writeChunk, 12345}; !slices.Equal(got.sizes(), want) {
		t.Errorf("writes of %v bytes, want %v", got.sizes(), want)
	}
	if back, err := os.ReadFile(f.Name()); err != nil || !bytes.Equal(back, data) {
		t.Errorf("the file holds %d bytes (%v), not the %d copied", len(back), err, size)
	}
	// One byte more than allowed is refused, and only whole chunks before
	// the limit was passed were written.
	got = nil
	c = &counter{max: size - 1}
	err = c.copy(&recordingFile{File: f, w: &got}, smallReads{bytes.NewReader(data)}, size)
	if !errdefs.Is(err, errdefs.KindInvalidParameter) {
		t.Errorf("a package over its limit: err = %v", err)
	}
	if want := []int{writeChunk, writeChunk}; !slices.Equal(got.sizes(), want) {
		t.Errorf("before the refusal, writes of %v bytes, want %v", got.sizes(), want)
	}
	// A smaller file goes in one write, from a buffer its own size.
	got = nil
	c = &counter{max: size}
	const small = 100 << 10
	if err := c.copy(&recordingFile{File: f, w: &got}, smallReads{bytes.NewReader(data[:small])}, small); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.sizes(), []int{small}) || len(c.buf) != small {
		t.Errorf("a %d-byte file: writes of %v bytes from a %d-byte buffer", small, got.sizes(), len(c.buf))
	}
}

// recordingFile passes writes on to a file and records them.
type recordingFile struct {
	*os.File
	w *writes
}

func (r *recordingFile) Write(p []byte) (int, error) {
	r.w.Write(p)
	return r.File.Write(p)
}
