package agent

import (
	"log/slog"
	"testing"
	"time"
)

// TestWarmUp: the warm-up really runs an invocation through a Runtime API
// of its own (an error says which step did not), and leaves nothing
// behind: its listener is closed, so a second one runs the same way.
func TestWarmUp(t *testing.T) {
	for i := range 2 {
		t0 := time.Now()
		if err := warmUp(slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("warm-up %d: %v", i, err)
		}
		t.Logf("warm-up %d took %v", i, time.Since(t0))
	}
}
