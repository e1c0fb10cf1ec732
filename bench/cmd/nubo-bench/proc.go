package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// parentMap reads every process's parent from /proc.
func parentMap() map[int]int {
	m := map[int]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return m
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may hold spaces and parentheses: the fields that follow
		// start after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			m[pid] = ppid
		}
	}
	return m
}

// descendants lists every process below pid (not pid itself).
func descendants(pm map[int]int, pid int) []int {
	kids := map[int][]int{}
	for p, pp := range pm {
		kids[pp] = append(kids[pp], p)
	}
	var out []int
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range kids[p] {
			out = append(out, c)
			stack = append(stack, c)
		}
	}
	return out
}

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
