package microvm

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestGuestAgentDrop: the guest agent removes a tree it was sent, read-only
// directories and all, and takes it again afterwards.
func TestGuestAgentDrop(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "lib", "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(src, "lib"), 0o555)
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "lib"), 0o755) })
	g := &guestAgent{scratch: t.TempDir(), puts: map[string]*sync.Mutex{}}
	send := func() {
		t.Helper()
		r, w := io.Pipe()
		go func() { w.CloseWithError(writeTar(w, src)) }()
		if err := g.put(r, "/code/a"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(keyDir(g.scratch, "/code/a"), "lib", "bootstrap")); err != nil {
			t.Fatalf("after put: %v", err)
		}
	}
	send()
	if err := g.drop("/code/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keyDir(g.scratch, "/code/a")); !os.IsNotExist(err) {
		t.Fatalf("after drop: %v", err)
	}
	if err := g.drop("/code/never"); err != nil {
		t.Fatalf("drop of a tree never sent: %v", err)
	}
	send()
}
