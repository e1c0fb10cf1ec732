package kernel

import "testing"

func TestReleaseAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"6.1.0-18-amd64", true},
		{"5.10.0", true},
		{"5.15.153.1-microsoft-standard-WSL2", true},
		{"5.9.16", false},
		{"5.4.0-150-generic", false},
		{"4.19.0", false},
		{"10.0", true},
		{"6", false},
		{"", false},
	} {
		if got := releaseAtLeast(c.release, 5, 10); got != c.want {
			t.Errorf("releaseAtLeast(%q, 5, 10) = %v, want %v", c.release, got, c.want)
		}
	}
}

// TestAtLeast: the running kernel is at least 2.6, and not yet 1000.0.
func TestAtLeast(t *testing.T) {
	if !AtLeast(2, 6) || AtLeast(1000, 0) {
		t.Errorf("release %q: AtLeast(2, 6) = %v, AtLeast(1000, 0) = %v", release(), AtLeast(2, 6), AtLeast(1000, 0))
	}
}
