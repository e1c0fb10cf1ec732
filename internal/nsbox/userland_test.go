package nsbox

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolvConf: a sandbox gets the host's name servers it can reach. A
// host whose resolv.conf names only systemd-resolved's stub (Ubuntu) has
// its upstream servers in the second file; with neither, there is no DNS.
func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stub := write("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.internal\n")
	upstream := write("upstream", "# resolved\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 2001:db8::53\nsearch example.internal\n")
	unusable := write("unusable", "nameserver 169.254.169.254\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n")
	direct := write("direct", "nameserver 192.0.2.53\n")
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		files []string
		want  string
		ok    bool
	}{
		{[]string{direct, upstream}, "nameserver 192.0.2.53\n", true},
		{[]string{stub, upstream}, "nameserver 10.0.0.2\nsearch example.internal\n", true},
		{[]string{missing, upstream}, "nameserver 10.0.0.2\nsearch example.internal\n", true},
		{[]string{unusable, direct}, "nameserver 192.0.2.53\n", true},
		{[]string{stub, missing}, "", false},
	}
	// One of the host's own addresses is the host: out of reach.
	if own := hostAddrs(); len(own) > 0 {
		for a := range own {
			if a.Is4() && !a.IsLoopback() {
				self := write("self", "nameserver "+a.String()+"\n")
				cases = append(cases, struct {
					files []string
					want  string
					ok    bool
				}{[]string{self, direct}, "nameserver 192.0.2.53\n", true})
				break
			}
		}
	}
	for i, c := range cases {
		got, ok := resolvConf(c.files...)
		if got != c.want || ok != c.ok {
			t.Errorf("case %d: %q, %v; want %q, %v", i, got, ok, c.want, c.ok)
		}
	}
}
