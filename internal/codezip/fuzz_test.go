package codezip

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
)

func FuzzInspect(f *testing.F) {
	seeds := [][]ziptest.File{
		{{Name: "bootstrap", Body: []byte("#!/bin/sh"), Mode: 0o755}, {Name: "a/b/c.txt", Body: []byte("c")}},
		{{Name: "d/"}, {Name: "d/l", Symlink: "../x"}, {Name: "x", Body: []byte("x")}},
		{{Name: "l", Symlink: "../../etc"}},
		{{Name: "a", Symlink: "b"}, {Name: "a/x"}},
		{{Name: "f", Body: []byte("1")}, {Name: "f", Body: []byte("2")}},
		{{Name: "../x"}},
		{{Name: "lib", Symlink: "v/l"}, {Name: "up", Symlink: "lib/../.."}, {Name: "v/l/"}},
	}
	for _, s := range seeds {
		f.Add(ziptest.Zip(f, s...))
	}
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	lim := Limits{MaxUnzipped: 1 << 20, MaxFiles: 64}
	f.Fuzz(func(t *testing.T, z []byte) {
		in, ierr := Inspect(z, lim)
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		out, xerr := Extract(z, root, lim)
		if (ierr == nil) != (xerr == nil) {
			t.Fatalf("Inspect err %v, Extract err %v", ierr, xerr)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("Extract wrote next to its root: %v", ents)
		}
		if ierr != nil {
			if ierr.Error() != xerr.Error() {
				t.Fatalf("different errors: %v / %v", ierr, xerr)
			}
			if ents, _ := os.ReadDir(root); len(ents) != 0 {
				t.Fatalf("failed Extract left %v", ents)
			}
			return
		}
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("Inspect %+v, Extract %+v", in, out)
		}
		// What is on disk is what Info says, and every link the kernel can
		// resolve stays inside.
		realRoot, _ := filepath.EvalSymlinks(root)
		var files, dirs, links int
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case p == root:
			case d.Type() == fs.ModeSymlink:
				links++
				if r, err := filepath.EvalSymlinks(p); err == nil && r != realRoot && !strings.HasPrefix(r, realRoot+"/") {
					t.Fatalf("%s resolves outside to %s", p, r)
				}
			case d.IsDir():
				dirs++
			default:
				files++
			}
			return nil
		})
		if files != in.Files || dirs != in.Dirs || links != in.Symlinks {
			t.Fatalf("on disk %d files %d dirs %d links; Info %+v", files, dirs, links, in)
		}
	})
}
