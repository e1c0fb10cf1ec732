package server

import (
	"slices"
	"testing"
)

// TestParsePorts: --host-ports takes a comma-separated list of TCP ports.
func TestParsePorts(t *testing.T) {
	good := map[string][]uint16{"": nil, "5432": {5432}, " 5432, 6379 ,": {5432, 6379}, "65535": {65535}}
	for in, want := range good {
		if got, err := parsePorts(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("parsePorts(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "65536", "-1", "http", "5432;6379", "1e3"} {
		if got, err := parsePorts(in); err == nil {
			t.Errorf("parsePorts(%q) = %v; want an error", in, got)
		}
	}
}
