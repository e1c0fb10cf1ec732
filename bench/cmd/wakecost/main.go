// Command wakecost measures one message each way between two processes
// over a socketpair, as nubo serve and an agent exchange an Invoke and its
// Result, read and written two ways in alternating blocks:
//
//   - poller: each end an *os.File in Go's network poller, read and
//     written raw (rawio.WrapFile), as nubo's agent connection was until
//     session 21;
//   - quiet: each end a rawio.Quiet, which the poller waits on through an
//     epoll instance watching its input only, as it is now.
//
// The poller watches every descriptor for output too, and a Unix socket
// signals room to write whenever its peer reads; so in the first way each
// read wakes the other process for nothing, inside the read. It prints
// the round trip's quantiles and those of the sender's write, which wakes
// the peer (the round trip holds the peer's reads, and so any useless
// wake-up), for each gap between round trips: with a gap both processes
// sleep between messages, as nubo's do between sequential invokes. The
// first round trip of each block, which follows the other way's block,
// is not counted.
//
//	go run ./bench/cmd/wakecost [-n 3000] [-gaps 0,200us]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nubo-dev/nubo/internal/rawio"
)

// open returns descriptor fd read and written the given way.
func open(fd int, way string) io.ReadWriter {
	if way == "quiet" {
		q, err := rawio.NewQuiet(fd, way)
		if err != nil {
			panic(err)
		}
		return q
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		panic(err)
	}
	return rawio.WrapFile(os.NewFile(uintptr(fd), way))
}

const size = 100

// echo is the child: it sends back each message from descriptor 3.
func echo(way string) {
	c := open(3, way)
	b := make([]byte, size)
	for {
		if _, err := io.ReadFull(c, b); err != nil {
			os.Exit(0)
		}
		if _, err := c.Write(b); err != nil {
			os.Exit(0)
		}
	}
}

type peer struct {
	way       string
	c         io.ReadWriter
	rtt, send []time.Duration
}

func start(way string) *peer {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	child := os.NewFile(uintptr(fds[1]), "child")
	cmd := exec.Command(os.Args[0], "echo", way)
	cmd.ExtraFiles = []*os.File{child}
	// One P, as nubo runs its agents (and nubo serve at this load).
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	child.Close()
	return &peer{way: way, c: open(fds[0], way)}
}

// block makes n+1 round trips and counts the last n.
func (p *peer) block(n int, gap time.Duration) {
	b := make([]byte, size)
	for i := range n + 1 {
		if gap > 0 {
			time.Sleep(gap)
		}
		t := time.Now()
		if _, err := p.c.Write(b); err != nil {
			panic(err)
		}
		w := time.Since(t)
		if _, err := io.ReadFull(p.c, b); err != nil {
			panic(err)
		}
		if i > 0 {
			p.rtt = append(p.rtt, time.Since(t))
			p.send = append(p.send, w)
		}
	}
}

// quantile returns d's f-quantile in µs.
func quantile(d []time.Duration, f float64) string {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return fmt.Sprintf("%.1f", float64(d[int(f*float64(len(d)-1))].Nanoseconds())/1000)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "echo" {
		echo(os.Args[2])
		return
	}
	// One P here too, as nubo serve runs at this load: with two, each
	// sleep between round trips costs a hand-off between threads that
	// swamps what is measured.
	runtime.GOMAXPROCS(1)
	n := flag.Int("n", 3000, "round trips per way and gap")
	gaps := flag.String("gaps", "0,200us", "pauses between round trips, comma-separated")
	flag.Parse()
	fmt.Printf("%-8s %-7s %6s %8s %8s %8s %10s %10s\n", "gap", "way", "n", "rtt p50", "rtt p90", "rtt p99", "write p50", "write p90")
	for _, g := range strings.Split(*gaps, ",") {
		gap, err := time.ParseDuration(g)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wakecost:", err)
			os.Exit(2)
		}
		ways := []*peer{start("poller"), start("quiet")}
		for _, p := range ways {
			p.block(50, gap) // warm-up, not counted
			p.rtt, p.send = nil, nil
		}
		for done := 0; done < *n; done += 100 {
			for _, p := range ways {
				p.block(min(100, *n-done), gap)
			}
		}
		for _, p := range ways {
			fmt.Printf("%-8s %-7s %6d %8s %8s %8s %10s %10s\n", gap, p.way, len(p.rtt),
				quantile(p.rtt, .5), quantile(p.rtt, .9), quantile(p.rtt, .99), quantile(p.send, .5), quantile(p.send, .9))
		}
	}
	fmt.Println("(µs; one P in each process)")
}
