package main

import (
	"errors"
	"runtime"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/nsbox"
)

// idleWakeMicros is what handing work to a thread asleep on another CPU,
// idle for gap, costs on this machine: the median time, in µs, from one
// thread's write of a byte to a pipe until a thread pinned to another CPU
// returns from its read of it, over rounds. same is the same hand-off with
// both threads on one CPU, where nothing but the sleeping thread itself
// needs waking.
//
// nubo's cold start passes its work from thread to thread more often than
// a bare start does (client, API handler, environment, supervisor, keeper,
// runtime, Runtime API and back). On bare metal an idle CPU wakes in a few
// µs; in a guest whose idle vCPUs halt into the hypervisor, each hand-off
// to one costs the difference between cross and same.
func idleWakeMicros(gap time.Duration, rounds int) (cross, same float64, err error) {
	cpus := nsbox.AllowedCPUs()
	if len(cpus) < 2 {
		return 0, 0, errors.New("one CPU: nothing to wake across")
	}
	if cross, err = handOffs(cpus[0], cpus[1], gap, rounds); err != nil {
		return 0, 0, err
	}
	if same, err = handOffs(cpus[0], cpus[0], gap, rounds); err != nil {
		return 0, 0, err
	}
	return cross, same, nil
}

// machineWake records idleWakeMicros (2 ms gaps, 50 rounds) in host
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

// handOffs returns the median time in µs from a write by a thread on CPU
// a, after a sleep of gap, until a thread on CPU b returns from its read,
// which it then answers, so that both sleep again before the next round.
//
// Each side runs on an OS thread of its own, locked and never unlocked:
// pinned, it ends with its goroutine rather than go back to Go's pool.
// Each closes the descriptors it uses once it is done, so neither reads
// one the other has closed (and the next pipe may have reused).
func handOffs(a, b int, gap time.Duration, rounds int) (float64, error) {
	var to, back [2]int
	if err := unix.Pipe2(to[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(back[:], unix.O_CLOEXEC); err != nil {
		unix.Close(to[0])
		unix.Close(to[1])
		return 0, err
	}
	base := time.Now()
	got := make([]time.Duration, 0, rounds) // when each read returned, by the echo side
	sent := make([]time.Duration, 0, rounds)
	echoed := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer unix.Close(to[0])
		defer unix.Close(back[1])
		if err := pin(b); err != nil {
			echoed <- err
			return
		}
		buf := make([]byte, 1)
		for {
			// Plain blocking reads and writes: the thread itself sleeps
			// in the kernel, as a process waiting for a request does.
			if n, err := unix.Read(to[0], buf); n != 1 || err != nil {
				echoed <- nil // the sender closed its end: done
				return
			}
			got = append(got, time.Since(base))
			if _, err := unix.Write(back[1], buf); err != nil {
				echoed <- err
				return
			}
		}
	}()
	pinged := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer unix.Close(back[0])
		defer unix.Close(to[1]) // first: ends the echo's loop
		if err := pin(a); err != nil {
			pinged <- err
			return
		}
		buf := []byte{1}
		ts := unix.NsecToTimespec(gap.Nanoseconds())
		for range rounds {
			_ = unix.Nanosleep(&ts, nil) // the thread sleeps, not just the goroutine
			sent = append(sent, time.Since(base))
			if _, err := unix.Write(to[1], buf); err != nil {
				pinged <- err
				return
			}
			if n, err := unix.Read(back[0], buf); n != 1 || err != nil {
				pinged <- errors.Join(errors.New("the echo thread is gone"), err)
				return
			}
		}
		pinged <- nil
	}()
	perr := <-pinged
	eerr := <-echoed
	if err := errors.Join(perr, eerr); err != nil {
		return 0, err
	}
	if len(got) != rounds || len(sent) != rounds {
		return 0, errors.New("hand-offs lost")
	}
	us := make([]float64, rounds)
	for i := range us {
		us[i] = float64((got[i] - sent[i]).Nanoseconds()) / 1e3
	}
	sort.Float64s(us)
	return us[rounds/2], nil
}

func pin(cpu int) error {
	var s unix.CPUSet
	s.Set(cpu)
	return unix.SchedSetaffinity(0, &s)
}
