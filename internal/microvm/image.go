package microvm

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// The guest's root file system is a read-only ext4 image of the part of the
// host's userland the runtimes need: their interpreters with the shared
// libraries they load (followed through ELF DT_NEEDED), the Python standard
// library, mkfs.ext4 for the sandboxes' /tmp volumes, CA certificates and
// the dynamic linker's cache. Nothing else of the host is in it — no /home,
// /root, /etc secrets, nor any account's code (that arrives over the
// host↔guest connection, per account).

// UserlandRoots are the host paths a guest image starts from; the closure
// of their shared libraries is added. Missing paths are skipped.
var UserlandRoots = []string{
	"/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/python3.12", "/usr/bin/python3.13",
	"/usr/lib/python3.11", "/usr/lib/python3.12", "/usr/lib/python3.13",
	"/usr/bin/node", "/usr/bin/nodejs",
	"/usr/sbin/mkfs.ext4", "/usr/sbin/mke2fs",
	// What Lambda's base images carry besides the shell and coreutils.
	"/usr/bin/curl",
	"/etc/ssl/certs", "/usr/share/ca-certificates",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/resolv.conf",
	"/etc/os-release", "/usr/lib/os-release", "/etc/mime.types", "/etc/protocols", "/etc/services",
	"/usr/share/zoneinfo/UTC",
}

// libDirs are where DT_NEEDED names are looked up, in order.
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"}

// imageVersion changes when the image layout does, so cached images go.
const imageVersion = "1"

// userlandFiles lists every host path of the guest image (files, symlinks
// and directories, each symlink's target included), sorted.
func userlandFiles(roots []string) ([]string, error) {
	set := map[string]bool{}
	var elfs []string
	var add func(p string) error
	add = func(p string) error {
		p = filepath.Clean(p)
		// Always the real parent: merged-/usr links (/lib → usr/lib) are
		// recreated at the image's top level, not followed into.
		if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
			p = filepath.Join(dir, filepath.Base(p))
		}
		if set[p] {
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return nil // an optional root
		}
		set[p] = true
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			return add(target)
		case st.IsDir():
			return filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
				if err != nil || q == p {
					return err
				}
				if d.IsDir() {
					set[q] = true
					return nil
				}
				return add(q)
			})
		case st.Mode().IsRegular():
			if isELF(p) {
				elfs = append(elfs, p)
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := add(r); err != nil {
			return nil, err
		}
	}
	// Shared libraries, to a fixed point.
	for len(elfs) > 0 {
		p := elfs[0]
		elfs = elfs[1:]
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		libs, _ := f.ImportedLibraries()
		if interp := elfInterp(f); interp != "" {
			if err := add(interp); err != nil {
				f.Close()
				return nil, err
			}
		}
		f.Close()
		for _, lib := range libs {
			for _, dir := range libDirs {
				if q := filepath.Join(dir, lib); exists(q) {
					if err := add(q); err != nil {
						return nil, err
					}
					break
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "\x7fELF"
}

func elfInterp(f *elf.File) string {
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return ""
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// essentialFiles lists the programs of Debian's Essential packages (a
// shell, coreutils, grep, sed, tar, …: what every Debian system has and
// what functions' scripts expect), without their documentation or /etc.
// Elsewhere than Debian it is empty, and the image holds the runtimes only.
func essentialFiles() []string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Essential} ${Package}\n").Output()
	if err != nil {
		return nil
	}
	var pkgs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "yes" {
			pkgs = append(pkgs, f[1])
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	list, err := exec.Command("dpkg", append([]string{"-L"}, pkgs...)...).Output()
	if err != nil && len(list) == 0 {
		return nil
	}
	var files []string
	for _, p := range strings.Split(string(list), "\n") {
		if !strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/bin/") && !strings.HasPrefix(p, "/sbin/") && !strings.HasPrefix(p, "/lib") {
			continue
		}
		skip := false
		for _, d := range []string{"/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/"} {
			skip = skip || strings.HasPrefix(p, d)
		}
		// Files and links to files only: a link to a directory (merged
		// /usr's /lib) would pull in all of it.
		if st, err := os.Stat(p); !skip && err == nil && !st.IsDir() {
			files = append(files, p)
		}
	}
	return files
}

// BuildUserland writes the guest's read-only root image into dir (reused
// while the host's files are unchanged) and returns its path.
func BuildUserland(dir string) (string, error) {
	files, err := userlandFiles(append(UserlandRoots, essentialFiles()...))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, imageVersion)
	var size int64
	for _, p := range files {
		st, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, p, st.Size(), st.Mode(), st.ModTime().UnixNano())
		size += st.Size() + 4096
	}
	name := "userland-" + hex.EncodeToString(h.Sum(nil))[:16] + ".ext4"
	img := filepath.Join(dir, name)
	if exists(img) {
		return img, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// Older images are of another host state: remove them.
	if old, _ := filepath.Glob(filepath.Join(dir, "userland-*.ext4")); len(old) > 0 {
		for _, o := range old {
			os.Remove(o)
		}
	}
	stage, err := os.MkdirTemp(dir, "stage-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	for _, p := range files {
		if err := stageCopy(p, filepath.Join(stage, p)); err != nil {
			return "", err
		}
	}
	// The guest's own mount points and merged-/usr links, where the host
	// has them as links.
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "mnt/scratch", "var", "etc"} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return "", err
		}
	}
	os.Chmod(filepath.Join(stage, "tmp"), 0o777|os.ModeSticky)
	for _, name := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + name); err == nil {
			os.Remove(filepath.Join(stage, name))
			if err := os.Symlink(target, filepath.Join(stage, name)); err != nil {
				return "", err
			}
		}
	}
	tmp := img + ".tmp"
	mb := size*5/4>>20 + 64
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "root_owner=0:0",
		"-d", stage, tmp, fmt.Sprintf("%dM", mb)).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("microvm: mkfs.ext4 of the guest userland: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return img, os.Rename(tmp, img)
}

// stageCopy copies one host path (file, symlink or directory) to dst.
func stageCopy(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	case st.IsDir():
		return os.MkdirAll(dst, st.Mode().Perm())
	case st.Mode().IsRegular():
		// A hard link where the stage shares the file system, else a copy.
		if err := os.Link(src, dst); err == nil {
			return nil
		}
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, st.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	return nil // sockets, devices: not part of a userland
}
