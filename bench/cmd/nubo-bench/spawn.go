package main

import (
	"os/exec"
	"runtime"
	"time"
)

// Every long-lived child (nubo, the emulator, the crun helper) asks for a
// parent-death signal so it cannot outlive a benchmark that is killed. The
// kernel sends that signal when the *thread* that forked the child exits,
// not the process, and a Go program does not choose its threads; so every
// such child is started from one goroutine locked to its own thread for
// the whole run, which never exits before the process does.
var spawns = make(chan func())

func init() {
	go func() {
		runtime.LockOSThread()
		for f := range spawns {
			f()
		}
	}()
}

// start runs cmd.Start on the spawning thread and returns the time just
// before it, so a figure that counts from process start does not count the
// hand-over to that thread.
func start(cmd *exec.Cmd) (time.Time, error) {
	var t0 time.Time
	done := make(chan error, 1)
	spawns <- func() {
		t0 = time.Now()
		done <- cmd.Start()
	}
	err := <-done
	return t0, err
}
