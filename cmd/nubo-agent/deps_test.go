package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLean keeps heavy packages out of the agent: every sandbox starts it,
// and each package linked costs its initialisers and the pages it touches
// at every start (docs/performance.md, session 15: net/http and
// crypto/tls added 4–5 ms to a Go process's start on the benchmark host).
func TestLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	banned := map[string]bool{"net/http": true, "crypto/tls": true, "crypto/x509": true, "crypto/rand": true,
		"regexp": true, "compress/flate": true, "math/big": true}
	for _, p := range strings.Fields(string(out)) {
		if banned[p] {
			t.Errorf("the agent links %s", p)
		}
	}
}
