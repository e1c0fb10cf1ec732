package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
)

// mountEntry is the part of a /proc/self/mountinfo line this package needs.
type mountEntry struct {
	root      string // the path within the filesystem that is mounted
	point     string
	fstype    string
	superOpts []string
}

// v1Controllers are the controller names a v1 "cgroup" mount can carry in
// its super options (name=... hierarchies carry none).
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true,
	"devices": true, "freezer": true, "net_cls": true, "net_prio": true,
	"blkio": true, "perf_event": true, "hugetlb": true, "pids": true,
	"rdma": true, "misc": true,
}

func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f)
}

// parseMountinfo keeps cgroup and cgroup2 mounts. Format (proc(5)):
// id parent major:minor root point options [optional...] - fstype source superopts
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		p := strings.Fields(post)
		if len(f) < 5 || len(p) < 1 {
			return nil, fmt.Errorf("cgroup: malformed mountinfo line %q", sc.Text())
		}
		if p[0] != "cgroup" && p[0] != "cgroup2" {
			continue
		}
		e := mountEntry{root: unescapeMount(f[3]), point: unescapeMount(f[4]), fstype: p[0]}
		if len(p) >= 3 {
			e.superOpts = strings.Split(p[2], ",")
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescapeMount undoes the kernel's octal escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func detectMode(mounts []mountEntry) Mode {
	var v1, v2 bool
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			v2 = true
		case "cgroup":
			for _, o := range m.superOpts {
				if v1Controllers[o] {
					v1 = true
				}
			}
		}
	}
	switch {
	case v1 && v2:
		return ModeHybrid
	case v1:
		return ModeV1
	case v2:
		return ModeV2
	}
	return ModeNone
}

// v1Mounts maps each v1 controller to the first mount carrying it;
// co-mounted controllers (cpu,cpuacct) share an entry.
func v1Mounts(mounts []mountEntry) map[string]mountEntry {
	out := map[string]mountEntry{}
	for _, m := range mounts {
		if m.fstype != "cgroup" {
			continue
		}
		for _, o := range m.superOpts {
			if _, seen := out[o]; v1Controllers[o] && !seen {
				out[o] = m
			}
		}
	}
	return out
}

// procCgroup is a parsed /proc/<pid>/cgroup: the path per v1 controller and
// the unified ("0::") path.
type procCgroup struct {
	v1      map[string]string
	unified string
	hasV2   bool
}

func readProcCgroup() (procCgroup, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return procCgroup{}, err
	}
	return parseProcCgroup(b)
}

func parseProcCgroup(b []byte) (procCgroup, error) {
	pc := procCgroup{v1: map[string]string{}}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		// hierarchy-ID:controller-list:path; the path may itself hold ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return pc, fmt.Errorf("cgroup: malformed /proc/self/cgroup line %q", line)
		}
		if parts[0] == "0" && parts[1] == "" {
			pc.unified, pc.hasV2 = parts[2], true
			continue
		}
		for c := range strings.SplitSeq(parts[1], ",") {
			if c != "" {
				pc.v1[c] = parts[2]
			}
		}
	}
	return pc, nil
}

// relToMount turns a cgroup path from /proc/self/cgroup into a path inside
// a mount whose root is mountRoot (a container may mount only a subtree of
// the hierarchy; the kernel then shows that subtree as the mount's root).
func relToMount(cgPath, mountRoot string) string {
	cgPath = path.Clean("/" + cgPath)
	mountRoot = path.Clean("/" + mountRoot)
	if mountRoot == "/" {
		return cgPath
	}
	if cgPath == mountRoot {
		return "/"
	}
	if strings.HasPrefix(cgPath, mountRoot+"/") {
		return cgPath[len(mountRoot):]
	}
	return cgPath
}

// procStartTime returns field 22 of /proc/<pid>/stat, the process start
// time in clock ticks since boot: with the pid it names one process for the
// life of the machine, where a pid alone can be reused.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may contain spaces and parentheses; it ends at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("cgroup: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("cgroup: short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ownerAlive reports whether the process that created a root named with pid
// and start still runs.
func ownerAlive(pid int, start uint64) bool {
	st, err := procStartTime(pid)
	return err == nil && st == start
}

// selfIdentity names this process in root directory names.
func selfIdentity() (int, uint64, error) {
	pid := os.Getpid()
	st, err := procStartTime(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("cgroup: reading own start time: %w", err)
	}
	return pid, st, nil
}
