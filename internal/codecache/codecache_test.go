package codecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/codezip/ziptest"
	"github.com/nubo-dev/nubo/internal/procs"
)

// zips is a Source of zips by their hex SHA-256.
type zips map[string][]byte

func (z zips) GetCode(_ context.Context, h string) ([]byte, error) {
	if b, ok := z[h]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("no zip %s", h)
}

func (z zips) add(t *testing.T, files ...ziptest.File) string {
	b := ziptest.Zip(t, files...)
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	z[h] = b
	return h
}

// TestCollect: entries nothing keeps go once nobody asked for them within
// the grace (counted from the last use, or from the build after a
// restart); kept, recently used and rebuilt ones stay usable, and an entry
// collected is built again when asked for.
func TestCollect(t *testing.T) {
	src := zips{}
	a := src.add(t, ziptest.File{Name: "bootstrap", Body: []byte("a"), Mode: 0o755})
	b := src.add(t, ziptest.File{Name: "ro/bootstrap", Body: []byte("b"), Mode: 0o555}, ziptest.File{Name: "ro/", Mode: 0o555 | os.ModeDir})
	l1 := src.add(t, ziptest.File{Name: "bin/tool", Body: []byte("l1"), Mode: 0o755})
	l2 := src.add(t, ziptest.File{Name: "bin/tool", Body: []byte("l2"), Mode: 0o755})
	dir := t.TempDir()
	c, err := New(dir, src)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	c.now = func() time.Time { return clock }
	ctx := context.Background()
	for _, h := range []string{a, b} {
		if _, err := c.Code(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	optDir, err := c.Opt(ctx, []string{l1, l2})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(optDir, "bin/tool")); string(got) != "l2" {
		t.Fatalf("merged layers: bin/tool is %q, want the later layer's", got)
	}
	// Builds are dated now; move them an hour back, as after a restart.
	for _, k := range Kinds {
		ents, _ := os.ReadDir(filepath.Join(dir, k))
		for _, e := range ents {
			old := clock.Add(-time.Hour)
			os.Chtimes(filepath.Join(dir, k, e.Name()), old, old)
		}
	}
	const grace = 30 * time.Minute
	keepA := func(kind, name string) bool { return kind == "code" && name == a }
	collect := func(want int) {
		t.Helper()
		n, err := c.Collect(keepA, grace)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("collected %d entries, want %d", n, want)
		}
	}
	// Everything was used just now.
	collect(0)
	clock = clock.Add(20 * time.Minute)
	if _, err := c.Code(ctx, b); err != nil { // b in use again
		t.Fatal(err)
	}
	clock = clock.Add(20 * time.Minute)
	// 40 minutes on: the layers and the merged /opt go; a is kept, b was
	// used 20 minutes ago.
	collect(3)
	for _, p := range []string{filepath.Join(dir, "code", a, "bootstrap"), filepath.Join(dir, "code", b, "ro/bootstrap")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("kept entry: %v", err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "layer")); len(ents) != 0 {
		t.Fatalf("%d layers left", len(ents))
	}
	clock = clock.Add(time.Hour)
	collect(1) // b, read-only directories and all
	if _, err := os.Stat(filepath.Join(dir, "code", b)); !os.IsNotExist(err) {
		t.Fatalf("b after its collection: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d entries left in tmp", len(ents))
	}
	// Asked for again, they are built again.
	if p, err := c.Code(ctx, b); err != nil {
		t.Fatal(err)
	} else if got, _ := os.ReadFile(filepath.Join(p, "ro/bootstrap")); string(got) != "b" {
		t.Fatalf("rebuilt b: %q", got)
	}
	if p, err := c.Opt(ctx, []string{l1, l2}); err != nil || p != optDir {
		t.Fatalf("rebuilt /opt: %q, %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(optDir, "bin/tool")); err != nil {
		t.Fatal(err)
	}
	// A kept entry stays however old; the rebuilt ones go.
	clock = clock.Add(24 * time.Hour)
	collect(4)
	if _, err := os.Stat(filepath.Join(dir, "code", a)); err != nil {
		t.Fatal(err)
	}
}

// TestOwn: an account's copy of an entry has the entry's files (the same
// inodes, so the same modification times) in directories of its own: what
// is added to it stays out of the entry and out of other accounts' copies.
func TestOwn(t *testing.T) {
	src := zips{}
	h := src.add(t, ziptest.File{Name: "app.py", Body: []byte("x = 1\n")},
		ziptest.File{Name: "pkg/", Mode: 0o755 | os.ModeDir}, ziptest.File{Name: "pkg/mod.py", Body: []byte("y = 2\n")})
	c, err := New(t.TempDir(), src)
	if err != nil {
		t.Fatal(err)
	}
	code, err := c.Code(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Own(code, "111111111111")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Own(code, "222222222222")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Own(code, "111111111111"); err != nil || again != a {
		t.Errorf("a second Own: %s, %v; want %s", again, err, a)
	}
	for _, f := range []string{"app.py", "pkg/mod.py"} {
		shared, _ := os.Stat(filepath.Join(code, f))
		mine, err := os.Stat(filepath.Join(a, f))
		if err != nil || !os.SameFile(shared, mine) {
			t.Errorf("%s in the copy: %v, not the entry's file", f, err)
		}
	}
	if err := os.Mkdir(filepath.Join(a, "pkg", "__pycache__"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{code, b} {
		if _, err := os.Stat(filepath.Join(d, "pkg", "__pycache__")); !os.IsNotExist(err) {
			t.Errorf("added to one account's copy, seen in %s: %v", d, err)
		}
	}
	if entry, owner := Owned(filepath.Base(a)); entry != h || owner != "111111111111" {
		t.Errorf("Owned(%s) = %q, %q", filepath.Base(a), entry, owner)
	}
	for _, bad := range []struct{ dir, owner string }{{code, ""}, {code, "../x"}, {a, "3"}, {t.TempDir(), "3"}} {
		if _, err := c.Own(bad.dir, bad.owner); err == nil {
			t.Errorf("Own(%s, %q): no error", bad.dir, bad.owner)
		}
	}
}

// wideSource is a Source that records the GOMAXPROCS its governor had set
// while it was read.
type wideSource struct {
	zips
	cur  *int
	seen []int
}

func (w *wideSource) GetCode(ctx context.Context, h string) ([]byte, error) {
	w.seen = append(w.seen, *w.cur)
	return w.zips.GetCode(ctx, h)
}

// TestBuildIsBulk: unpacking a zip, merging layers and copying an entry
// for an owner run with GOMAXPROCS wide (package procs), and it is narrow
// again afterwards; an entry already built widens nothing.
func TestBuildIsBulk(t *testing.T) {
	cur, sets := 0, 0
	gov := procs.NewWith(2, func(n int) int { cur = n; sets++; return 0 })
	src := &wideSource{zips: zips{}, cur: &cur}
	h := src.add(t, ziptest.File{Name: "app.py", Body: []byte("x = 1\n")})
	l := src.add(t, ziptest.File{Name: "bin/tool", Body: []byte("l"), Mode: 0o755})
	c, err := New(t.TempDir(), src)
	if err != nil {
		t.Fatal(err)
	}
	c.Procs = gov
	ctx := context.Background()
	code, err := c.Code(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Opt(ctx, []string{l}); err != nil {
		t.Fatal(err)
	}
	if len(src.seen) != 2 || src.seen[0] != 2 || src.seen[1] != 2 {
		t.Errorf("GOMAXPROCS while zips were read: %v, want [2 2]", src.seen)
	}
	if cur != 1 {
		t.Errorf("GOMAXPROCS after the builds: %d, want 1", cur)
	}
	before := sets
	if _, err := c.Own(code, "111111111111"); err != nil {
		t.Fatal(err)
	}
	if sets != before+2 || cur != 1 {
		t.Errorf("Own set GOMAXPROCS %d times, ending at %d; want 2 times, ending at 1", sets-before, cur)
	}
	before = sets
	if _, err := c.Code(ctx, h); err != nil {
		t.Fatal(err)
	}
	if sets != before {
		t.Errorf("a built entry set GOMAXPROCS %d times", sets-before)
	}
}
