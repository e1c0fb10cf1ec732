package nsbox

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestPlacerNeedsTwoCPUs(t *testing.T) {
	if p := newPlacer([]int{3}); p != nil {
		t.Errorf("a placer over one CPU: %+v, want none", p)
	}
}

func TestPlacerHomes(t *testing.T) {
	p := newPlacer([]int{0, 2, 5})
	// New sandboxes spread over the CPUs.
	var homes []int
	for range 4 {
		homes = append(homes, p.home())
	}
	if want := []int{0, 1, 2, 0}; !slices.Equal(homes, want) {
		t.Fatalf("homes %v, want %v", homes, want)
	}
	// A busy CPU gets no new sandbox while another is less busy, however
	// many sandboxes that one holds.
	p.begin(0, false)
	p.begin(1, false)
	if h := p.home(); h != 2 {
		t.Errorf("home with CPUs 0 and 1 busy: %d, want 2", h)
	}
	if want := []int{2, 1, 2}; !slices.Equal(p.homed, want) {
		t.Errorf("homed %v, want %v", p.homed, want)
	}
	p.leave(2)
	if want := []int{2, 1, 1}; !slices.Equal(p.homed, want) {
		t.Errorf("homed after leave %v, want %v", p.homed, want)
	}
}

func TestPlacerMovesOffABusierHome(t *testing.T) {
	p := newPlacer([]int{0, 1})
	a, b, c, d := p.home(), p.home(), p.home(), p.home() // 0, 1, 0, 1
	// a and c busy together on CPU 0 while CPU 1 idles: c moves.
	if got := p.begin(a, true); got != a {
		t.Fatalf("a, alone: began at %d, want its home %d", got, a)
	}
	if got := p.begin(c, true); got != 1 {
		t.Fatalf("c, beside busy a at home: began at %d, want CPU 1", got)
	}
	if want := []int{1, 3}; !slices.Equal(p.homed, want) {
		t.Errorf("homed %v, want %v", p.homed, want)
	}
	if want := []int{1, 1}; !slices.Equal(p.busy, want) {
		t.Errorf("busy %v, want %v", p.busy, want)
	}
	// Equally busy: b stays, and so does d when its home is no busier.
	if got := p.begin(b, true); got != b {
		t.Errorf("b began at %d, want its home %d", got, b)
	}
	p.end(a)
	if got := p.begin(d, true); got != 0 {
		t.Errorf("d, its home busier than CPU 0: began at %d, want 0", got)
	}
	// One that may not move yet stays home, however busy.
	if got := p.begin(1, false); got != 1 {
		t.Errorf("began at %d, want home 1 (not allowed to move)", got)
	}
	p.end(1)
	p.end(0)
	p.end(1)
	p.end(1)
	if want := []int{0, 0}; !slices.Equal(p.busy, want) {
		t.Errorf("busy at the end %v, want none", p.busy)
	}
}

// treeThreads finds the threads of a process and of its children.
func TestTreeThreads(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	tids := treeThreads(os.Getpid())
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if !slices.Contains(tids, tid) {
			// A thread started after the listing may be missing; the
			// main one may not.
			if tid == os.Getpid() {
				t.Errorf("the process itself (%d) is not among %v", tid, tids)
			}
		}
	}
	if !slices.Contains(tids, cmd.Process.Pid) {
		t.Errorf("the child %d is not among %v", cmd.Process.Pid, tids)
	}
}

// A box's invocations count at its home; one that runs past widenAfter
// is let onto every CPU and the next starts at home again; a sandbox
// widened for a big function counts nowhere. (No process: the moves
// themselves fail and are only logged.)
func TestBoxPlacement(t *testing.T) {
	b := &Backend{placer: newPlacer([]int{0, 1}), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s := &box{b: b, home: b.placer.home(), running: -1}
	s.InvocationStarted()
	if !slices.Equal(b.placer.busy, []int{1, 0}) {
		t.Fatalf("busy %v during an invocation at home 0", b.placer.busy)
	}
	wide := false
	for deadline := time.Now().Add(widenAfter + 2*time.Second); !wide && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.placeMu.Lock()
		wide = s.wide
		s.placeMu.Unlock()
	}
	if !wide {
		t.Errorf("an invocation past widenAfter is not let onto every CPU")
	}
	s.InvocationEnded()
	s.InvocationStarted()
	s.placeMu.Lock()
	wide = s.wide
	s.placeMu.Unlock()
	if wide {
		t.Errorf("the next invocation does not start at home")
	}
	s.InvocationEnded()
	s.InvocationEnded() // a second end counts nothing
	if !slices.Equal(b.placer.busy, []int{0, 0}) || !slices.Equal(b.placer.homed, []int{1, 0}) {
		t.Fatalf("after the invocations: busy %v homed %v", b.placer.busy, b.placer.homed)
	}
	s.unplace()
	s.InvocationStarted()
	if !slices.Equal(b.placer.busy, []int{0, 0}) || !slices.Equal(b.placer.homed, []int{0, 0}) {
		t.Errorf("a sandbox on every CPU counts: busy %v homed %v", b.placer.busy, b.placer.homed)
	}
	s.InvocationEnded()
}
