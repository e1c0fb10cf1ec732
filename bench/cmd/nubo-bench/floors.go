package main

import (
	"fmt"
	"os/exec"
	"sort"
	"syscall"
	"time"
)

// timeExec times one fork+exec of argv to its exit: the floors the cold
// figures are read against (a process cannot start faster than the kernel
// runs it, nor a sandbox faster than its namespaces are made). wantOK says
// whether a non-zero exit is a failure: the echo bootstrap run outside
// Lambda exits 1 once its runtime is up, which is exactly the point timed.
func timeExec(wantOK bool, argv ...string) (time.Duration, error) {
	d, _, err := runExec(wantOK, argv...)
	return d, err
}

// runExec is timeExec, with the CPU time the process used (user + system,
// from its rusage: the parent's fork is not in it).
func runExec(wantOK bool, argv ...string) (wall, cpu time.Duration, err error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	t0 := time.Now()
	err = cmd.Run()
	wall = time.Since(t0)
	if err != nil {
		if _, exited := err.(*exec.ExitError); !exited || wantOK {
			return 0, 0, fmt.Errorf("%v: %w", argv, err)
		}
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// medianExecCPU is the median CPU time of n runs of argv (see runExec).
func medianExecCPU(n int, argv ...string) (time.Duration, error) {
	var cs []time.Duration
	for i := 0; i < n; i++ {
		_, c, err := runExec(false, argv...)
		if err != nil {
			return 0, err
		}
		cs = append(cs, c)
	}
	return quantile(sortedCopy(cs), 0.5), nil
}

// pageTouchMicros is what a process's first write to a fresh page of
// anonymous memory costs on this machine, in µs per 4 KiB page (the median
// of three rounds over 16 MiB, huge pages refused). Every process start
// pays it for each page it touches, so it sets the price of everything a
// sandbox's processes do once: about 0.1–0.5 µs on bare metal, far more in
// a guest whose hypervisor keeps shadow page tables.
func pageTouchMicros() (float64, error) {
	const size, page = 16 << 20, 4096
	var us []float64
	for r := 0; r < 3; r++ {
		m, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			return 0, err
		}
		syscall.Madvise(m, syscall.MADV_NOHUGEPAGE)
		t0 := time.Now()
		for o := 0; o < size; o += page {
			m[o] = 1
		}
		us = append(us, float64(time.Since(t0).Nanoseconds())/1e3/(size/page))
		if err := syscall.Munmap(m); err != nil {
			return 0, err
		}
	}
	sort.Float64s(us)
	return us[1], nil
}
