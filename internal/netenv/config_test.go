package netenv

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Name != "nubo" || c.Bridge != "nubo0" || c.Subnet != DefaultSubnet || c.Backend != BackendAuto || c.Logger == nil {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	bad := []Config{
		{Name: "Nubo"},
		{Name: "nubo-x"},
		{Name: "1nubo"},
		{Name: "waytoolong"},
		{Bridge: "a-bridge-name-too-long"},
		{Bridge: "br/0"},
		{Bridge: "nubo-x"}, // looks like a veth of instance nubo
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Subnet: netip.MustParsePrefix("10.213.0.1/16")},
		{Subnet: netip.MustParsePrefix("10.213.0.0/31")},
		{Subnet: netip.MustParsePrefix("10.0.0.0/7")},
		{MTU: 100},
		{HostPorts: []uint16{0}},
		{HostPorts: []uint16{5432, 6379, 5432}},
		{HostPorts: make([]uint16, 65)},
	}
	for _, b := range bad {
		if err := b.withDefaults().validate(); err == nil {
			t.Errorf("accepted %+v", b)
		}
	}
}

func TestVethName(t *testing.T) {
	cases := map[[2]string]string{
		{"nubo", "nubo-3f2a9c01b7de"}:                    "nubo-2a9c01b7de",
		{"nubo", "abc"}:                                  "nubo-abc",
		{"nbt1", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}: "nbt1-c04fd430c8",
		{"abcdefgh", "0123456789"}:                       "abcdefgh-456789",
	}
	for in, want := range cases {
		got := vethName(in[0], in[1])
		if got != want || len(got) > 15 || checkIfname(got) != nil {
			t.Errorf("vethName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
	if got := vethName("nubo", "--"); !strings.HasPrefix(got, "nubo-") {
		t.Errorf("vethName of punctuation = %q", got)
	}
}

func TestIPAM(t *testing.T) {
	a := newIPAM(netip.MustParsePrefix("10.214.0.0/29")) // 8 addresses, 5 usable
	if g := (Policy{Subnet: netip.MustParsePrefix("10.214.0.0/29")}).Gateway(); g != netip.MustParseAddr("10.214.0.1") {
		t.Fatalf("gateway %s", g)
	}
	var got []netip.Addr
	for range 5 {
		ip, err := a.alloc()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip)
	}
	for i, ip := range got {
		if want := netip.AddrFrom4([4]byte{10, 214, 0, byte(2 + i)}); ip != want {
			t.Errorf("alloc %d = %s, want %s", i, ip, want)
		}
	}
	if _, err := a.alloc(); err != ErrExhausted {
		t.Fatalf("alloc from a full subnet: %v", err)
	}
	// Round robin: a released address comes back only after the others.
	a.release(got[1])
	a.release(got[3])
	if ip, _ := a.alloc(); ip != got[1] {
		t.Fatalf("after wrap got %s, want %s", ip, got[1])
	}
	if ip, _ := a.alloc(); ip != got[3] {
		t.Fatalf("got %s, want %s", ip, got[3])
	}
	a.release(got[0])
	a.release(got[4])
	if ip, _ := a.alloc(); ip != got[4] {
		t.Fatalf("round robin: got %s, want %s (the next in line, not the lowest)", ip, got[4])
	}
	if n := a.inUse(); n != 4 {
		t.Fatalf("in use %d", n)
	}
}
