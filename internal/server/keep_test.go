package server

import (
	"testing"

	"github.com/nubo-dev/nubo/internal/codecache"
	"github.com/nubo-dev/nubo/internal/control"
)

// TestKeepUnpacked: an account's own copy of unpacked code is kept while
// that account refers to the code, not while another does.
func TestKeepUnpacked(t *testing.T) {
	code, layer := "c0de", "1a7e"
	refs := &control.CodeRefs{Zips: map[string]bool{code: true, layer: true}, Layers: [][]string{{layer}},
		Accounts: map[string]*control.CodeRefs{"111111111111": {Zips: map[string]bool{code: true, layer: true}, Layers: [][]string{{layer}}}}}
	keep := keepUnpacked(refs)
	opt := codecache.OptName([]string{layer})
	for _, c := range []struct {
		kind, name string
		want       bool
	}{
		{"code", code, true},
		{"code", "0ther", false},
		{"code", code + "@111111111111", true},
		{"code", code + "@222222222222", false},
		{"layer", layer, true},
		{"opt", opt, true},
		{"opt", opt + "@111111111111", true},
		{"opt", opt + "@222222222222", false},
		{"opt", codecache.OptName([]string{code}) + "@111111111111", false},
	} {
		if got := keep(c.kind, c.name); got != c.want {
			t.Errorf("keep(%s, %s) = %v, want %v", c.kind, c.name, got, c.want)
		}
	}
}
