package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// rollup is a process's memory from /proc/PID/smaps_rollup, in KiB. PSS
// charges each shared page to its sharers in equal parts, so summing PSS
// over processes never counts a page twice; RSS does.
type rollup struct{ RSS, PSS int64 }

func smapsRollup(pid int) (rollup, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return rollup{}, err
	}
	defer f.Close()
	var r rollup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "Rss:":
			r.RSS = v
		case "Pss:":
			r.PSS = v
		}
	}
	return r, sc.Err()
}

func meminfo(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+":") {
			fs := strings.Fields(l)
			if len(fs) >= 2 {
				return strconv.ParseInt(fs[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", key)
}

// memAvailableKiB is the median of several readings of MemAvailable a
// little apart: one reading on a shared machine catches whatever a
// neighbour allocates that instant.
func memAvailableKiB() (int64, error) {
	var vs []int64
	for i := 0; i < 7; i++ {
		v, err := meminfo("MemAvailable")
		if err != nil {
			return 0, err
		}
		vs = append(vs, v)
		time.Sleep(100 * time.Millisecond)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs[len(vs)/2], nil
}

func hostInfo() map[string]any {
	h := map[string]any{"cores": cores()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if i := strings.IndexByte(l, ':'); i >= 0 {
					h["cpu"] = strings.TrimSpace(l[i+1:])
				}
				break
			}
		}
	}
	if v, err := meminfo("MemTotal"); err == nil {
		h["mem_total_kib"] = v
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h["loadavg_at_start"] = strings.TrimSpace(string(b))
	}
	return h
}

// cgroupCPU is the CPU time used by everything that ever ran in the cgroup
// of pid (cgroup v1 cpuacct.usage, or v2 cpu.stat usage_usec): for a
// sandbox's agent, the whole environment, the processes that exited too.
func cgroupCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "cpuacct" {
				continue
			}
			for _, mnt := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
				if v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", mnt, parts[2], "cpuacct.usage")); err == nil {
					ns, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
					return time.Duration(ns), err
				}
			}
		}
		if parts[1] == "" {
			if v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[2], "cpu.stat")); err == nil {
				for _, l := range strings.Split(string(v), "\n") {
					if us, ok := strings.CutPrefix(l, "usage_usec "); ok {
						n, err := strconv.ParseInt(strings.TrimSpace(us), 10, 64)
						return time.Duration(n) * time.Microsecond, err
					}
				}
			}
		}
	}
	return 0, fmt.Errorf("no cpu accounting for pid %d", pid)
}

// isAgent reports whether pid is a sandbox's agent: its argv[0] is
// "nubo-agent".
func isAgent(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	arg0, _, _ := bytes.Cut(b, []byte{0})
	return string(arg0) == "nubo-agent"
}
