// Command timing is the bootstrap of nubo-bench's cold start parts: an
// aws-lambda-go handler that answers with when its process reached main
// (its main package's initialisation, after every other package's) and
// when its handler ran (wall clock, Unix ns), so the benchmark can split a
// cold start at the runtime's main and at its handler, and with the CPU
// time its process had used by main. It is not a
// figure's function (those answer with the event, see bench/echo).
//
// There is no fork time: the main thread's schedstat (its time on a CPU
// and runnable since the fork) would give one, but on this project's
// machine its sum put the fork of a pinned bare start before the moment
// the benchmark called fork in 5 of 8 starts, by up to 2 ms: the
// scheduler's clock is not the wall clock to the millisecond.
package main

import (
	"context"
	"encoding/json"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

// atMain is the wall clock, the process's CPU time (user and system: the
// kernel's split of the two is by clock ticks, too coarse for a start of
// a few ms) and its minor page faults (getrusage) when the main package is
// initialised.
var atMain, cpuAtMain, faultsAtMain = func() (int64, int64, int64) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Now().UnixNano(), ru.Utime.Nano() + ru.Stime.Nano(), ru.Minflt
}()

// handle answers {"main_ns":…,"cpu_ns":…,"minflt":…,"handler_ns":…}, put together by
// hand, so that between its two readings of the clock the handler does no
// more than the echo function of the figures.
func handle(context.Context, json.RawMessage) (json.RawMessage, error) {
	now := time.Now().UnixNano()
	b := append([]byte(`{"main_ns":`), strconv.FormatInt(atMain, 10)...)
	b = append(b, `,"cpu_ns":`...)
	b = strconv.AppendInt(b, cpuAtMain, 10)
	b = append(b, `,"minflt":`...)
	b = strconv.AppendInt(b, faultsAtMain, 10)
	b = append(b, `,"handler_ns":`...)
	b = strconv.AppendInt(b, now, 10)
	return append(b, '}'), nil
}

func main() {
	lambda.Start(handle)
}
