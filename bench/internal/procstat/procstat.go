// Package procstat reads what processes have used from /proc: CPU time,
// context switches, and the process tree, for the benchmark programs'
// per-party accounting (nubo-bench's figure 2, hopfloor's floors).
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nubo-dev/nubo/internal/testutil"
)

// Use is what one process, or one party of processes, has used so far.
type Use struct {
	CPU      time.Duration
	Switches int64
}

// Add is a + b.
func (a Use) Add(b Use) Use { return Use{a.CPU + b.CPU, a.Switches + b.Switches} }

// Sub is a - b.
func (a Use) Sub(b Use) Use { return Use{a.CPU - b.CPU, a.Switches - b.Switches} }

// ParentMap reads every process's parent from /proc.
func ParentMap() map[int]int {
	m := map[int]int{}
	for pid, p := range testutil.Procs() {
		m[pid] = p.PPID
	}
	return m
}

// Descendants lists every process below pid (not pid itself).
func Descendants(pm map[int]int, pid int) []int {
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

// CPU is the CPU time (user + system) a process has used, from
// /proc/PID/stat, at the clock-tick resolution the kernel reports it.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	// After comm: state(0) ppid(1) … utime(11) stime(12).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	const ticks = 100 // USER_HZ, fixed at 100 on Linux
	return time.Duration(u+s) * time.Second / ticks, nil
}

// Of is a process's CPU time and the context switches of all its threads
// (from /proc/PID/task/*/status); zero for a process gone.
func Of(pid int) Use {
	var u Use
	u.CPU, _ = CPU(pid)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				u.Switches += n
			}
		}
	}
	return u
}

// Busy is the machine's busy CPU time so far, over all CPUs: user, nice,
// system, irq and softirq from /proc/stat's cpu line. Work no process is
// charged with (interrupts, softirqs) counts here; idle, iowait, steal
// (the hypervisor's, not this machine's work) and guest (already in user)
// do not.
func Busy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: no cpu line")
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait, steal, guest, guest_nice
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	const ticks = 100
	return time.Duration(busy) * time.Second / ticks, nil
}
