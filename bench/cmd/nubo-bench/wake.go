package main

import (
	"errors"
	"runtime"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// idleWakeMicros is what handing work to a thread asleep on another CPU,
// idle for a while, costs on this machine: half the median round trip of
// one byte between two threads pinned to two different CPUs through a
// pair of pipes, each round after both have slept gap, in µs. same is the
// same round trip with both threads on one CPU, where nothing needs
// waking but the sleeping thread itself.
//
// A cold start through nubo hands its work from thread to thread many
// times (client, nubo serve's goroutines, the keeper, the runtime, the
// Runtime API and back), often across CPUs. On bare metal an idle CPU wakes in a
// few µs; in a guest whose vCPUs halt into the hypervisor each such wake
// costs the difference between cross and same, and a bare process started
// against the least Runtime API pays it far fewer times.
func idleWakeMicros(gap time.Duration, rounds int) (cross, same float64, err error) {
	cpus, err := allowedCPUs()
	if err != nil {
		return 0, 0, err
	}
	if len(cpus) < 2 {
		return 0, 0, errors.New("one CPU: nothing to wake across")
	}
	if cross, err = pingPong(cpus[0], cpus[1], gap, rounds); err != nil {
		return 0, 0, err
	}
	if same, err = pingPong(cpus[0], cpus[0], gap, rounds); err != nil {
		return 0, 0, err
	}
	return cross / 2, same / 2, nil
}

// machineWake records idleWakeMicros (2 ms sleeps, 50 rounds) in host
// under idle_cpu_wake_us_<when> and same_cpu_wake_us_<when>.
func machineWake(host map[string]any, when string) {
	cross, same, err := idleWakeMicros(2*time.Millisecond, 50)
	if err != nil {
		logf("hand-off to an idle CPU: %v", err)
		return
	}
	host["idle_cpu_wake_us_"+when], host["same_cpu_wake_us_"+when] = cross, same
	if when == "start" {
		logf("handing work to a thread on another, idle CPU costs %.1f µs here, on the same CPU %.1f", cross, same)
	}
}

// pingPong returns the median round trip in µs between a thread on CPU a
// and an echoing thread on CPU b, each round after a sleep of gap.
func pingPong(a, b int, gap time.Duration, rounds int) (float64, error) {
	var to, back [2]int
	if err := unix.Pipe2(to[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(back[:], unix.O_CLOEXEC); err != nil {
		unix.Close(to[0])
		unix.Close(to[1])
		return 0, err
	}
	defer unix.Close(back[0])
	defer unix.Close(to[0])
	echoed := make(chan error, 1)
	go func() {
		defer unix.Close(back[1])
		// Never unlocked: the thread, pinned, ends with the goroutine
		// rather than go back to the runtime's pool.
		runtime.LockOSThread()
		if err := pin(b); err != nil {
			echoed <- err
			return
		}
		echoed <- nil
		buf := make([]byte, 1)
		for {
			// Plain blocking reads and writes: the thread itself sleeps
			// in the kernel, as a process waiting for a request does.
			if n, err := unix.Read(to[0], buf); n != 1 || err != nil {
				return
			}
			if _, err := unix.Write(back[1], buf); err != nil {
				return
			}
		}
	}()
	if err := <-echoed; err != nil {
		unix.Close(to[1])
		return 0, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var mask unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mask); err != nil {
		unix.Close(to[1])
		return 0, err
	}
	defer unix.SchedSetaffinity(0, &mask)
	if err := pin(a); err != nil {
		unix.Close(to[1])
		return 0, err
	}
	buf := []byte{1}
	rtt := make([]float64, 0, rounds)
	ts := unix.NsecToTimespec(gap.Nanoseconds())
	for range rounds {
		_ = unix.Nanosleep(&ts, nil) // the thread sleeps, not just the goroutine
		t0 := time.Now()
		if _, err := unix.Write(to[1], buf); err != nil {
			unix.Close(to[1])
			return 0, err
		}
		if n, err := unix.Read(back[0], buf); n != 1 || err != nil {
			unix.Close(to[1])
			return 0, errors.Join(errors.New("echo thread gone"), err)
		}
		rtt = append(rtt, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	unix.Close(to[1]) // ends the echo thread
	sort.Float64s(rtt)
	return rtt[len(rtt)/2], nil
}

func pin(cpu int) error {
	var s unix.CPUSet
	s.Set(cpu)
	return unix.SchedSetaffinity(0, &s)
}

func allowedCPUs() ([]int, error) {
	var s unix.CPUSet
	if err := unix.SchedGetaffinity(0, &s); err != nil {
		return nil, err
	}
	var out []int
	for c := 0; c < len(s)*64 && len(out) < s.Count(); c++ {
		if s.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}
