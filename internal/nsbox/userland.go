package nsbox

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// hostUserland lists the host's top-level system directories for the
// sandbox root: symlinks are recreated (merged-/usr hosts link /bin to
// usr/bin), directories are bound read-only. Nothing else of the host is
// visible: no /home, /root, /var, /etc, /run, /srv.
func hostUserland() ([]userlandEntry, error) {
	var out []userlandEntry
	for _, name := range []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		p := "/" + name
		st, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return nil, err
			}
			out = append(out, userlandEntry{Name: name, Link: target})
		} else if st.IsDir() {
			out = append(out, userlandEntry{Name: name, Bind: p})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("nsbox: the host has no /usr to build sandboxes from")
	}
	return out, nil
}

// writeEtc generates the sandboxes' /etc: the sandbox user and group as
// Lambda names them, name resolution, the dynamic linker's cache, and the
// OS identification. No host secret (shadow, keys, host names) is copied.
func writeEtc(dir string, host netip.Addr, resolv string, log *slog.Logger) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "ssl", "certs"), 0o755); err != nil {
		return "", err
	}
	ok := resolv != ""
	if !ok {
		resolv, ok = ResolvConf()
	}
	if !ok {
		log.Warn("nsbox: the host names no name server a sandbox can reach (an IPv4 one, not loopback or link-local): functions will have no DNS",
			"files", resolvFiles)
	}
	files := map[string]string{
		"passwd":        fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:%d:%d::/home/sbx_user1051:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n", SandboxUID, SandboxGID),
		"group":         fmt.Sprintf("root:x:0:\nsbx_user1051:x:%d:\nnogroup:x:65534:\n", SandboxGID),
		"hosts":         etcHosts(host),
		"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
		"hostname":      "sandbox\n",
		"resolv.conf":   resolv,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	// Copied, not bound: small, and a later change on the host must not
	// reach running sandboxes halfway.
	for _, name := range []string{"ld.so.cache", "ld.so.conf", "os-release", "mime.types", "protocols", "services"} {
		if b, err := os.ReadFile(filepath.Join("/etc", name)); err == nil {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				return "", err
			}
		}
	}
	if target, err := os.Readlink("/etc/os-release"); err == nil && !strings.HasPrefix(target, "/") {
		// Debian links it to ../usr/lib/os-release: copy the content instead.
		if b, err := os.ReadFile("/usr/lib/os-release"); err == nil {
			os.WriteFile(filepath.Join(dir, "os-release"), b, 0o644)
		}
	}
	os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(dir, "localtime"))
	return dir, nil
}

// etcHosts is the sandboxes' /etc/hosts: localhost, and HostName when
// the host has an address for them.
func etcHosts(host netip.Addr) string {
	s := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if host.IsValid() {
		s += host.String() + "\t" + HostName + "\n"
	}
	return s
}

// resolvFiles are where the host's resolvers are named, in order: the
// usual file, then systemd-resolved's list of its upstream servers, which
// is what a sandbox can use on a host whose /etc/resolv.conf names only
// the local stub (127.0.0.53, as on Ubuntu).
var resolvFiles = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// ResolvConf is the resolv.conf of sandboxes on this host (see
// resolvConf); ok is false when they would have no DNS.
func ResolvConf() (conf string, ok bool) { return resolvConf(resolvFiles...) }

// resolvConf keeps the host's name servers that a sandbox can reach, from
// the first of files that names one: IPv4 servers that are not loopback
// or another of the host's own addresses (out of reach by design) or
// link-local (dropped by the environments' firewall, as cloud metadata
// is); environments have no IPv6. ok is false when no file names one:
// sandboxes then have no DNS.
func resolvConf(files ...string) (conf string, ok bool) {
	own := hostAddrs()
	for _, path := range files {
		if conf, ok := resolvFile(path, own); ok {
			return conf, true
		}
	}
	return "", false
}

// hostAddrs are the host's own addresses: a resolver listening on one
// (dnsmasq on the LAN address, say) is the host, out of reach as well.
func hostAddrs() map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own[p.Addr().Unmap()] = true
		}
	}
	return own
}

func resolvFile(path string, own map[netip.Addr]bool) (conf string, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() && !own[a] {
				b.WriteString("nameserver " + fields[1] + "\n")
				ok = true
			}
		}
		if len(fields) >= 2 && (fields[0] == "search" || fields[0] == "options") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String(), ok
}
