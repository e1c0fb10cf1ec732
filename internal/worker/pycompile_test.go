package worker

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDirKey: a directory's key stays while its contents change and
// differs for one made again in its place.
func TestDirKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "code")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	k := dirKey(dir)
	if err := os.Mkdir(filepath.Join(dir, "__pycache__"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := dirKey(dir); got != k {
		t.Errorf("key changed with the contents: %s, then %s", k, got)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := dirKey(dir); got == k {
		t.Errorf("a directory made again has the old one's key %s", k)
	}
}
