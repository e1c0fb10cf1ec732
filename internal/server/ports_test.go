package server

import (
	"net"
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

// TestCheckHostPorts: nubo's own API and metrics ports cannot be opened to
// environments.
func TestCheckHostPorts(t *testing.T) {
	api := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9000}
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{HostPorts: "5432,6379"}, true},
		{Config{HostPorts: "5432,9000"}, false},
		{Config{HostPorts: "9100", MetricsListen: "127.0.0.1:9100"}, false},
		{Config{HostPorts: "9100", MetricsListen: "127.0.0.1:0"}, true},
		{Config{HostPorts: "x"}, false},
	} {
		if err := checkHostPorts(c.cfg, api); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok %v", c.cfg, err, c.ok)
		}
	}
}
