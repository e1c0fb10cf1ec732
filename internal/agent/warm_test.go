package agent

import (
	"bytes"
	"encoding/json"
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

// TestKeeperFrames: the keeper's warm-up frames go through, and the
// ready-made JSON of the frames it only decodes names no field their types
// lack, and every field they have: the warm-up must decode what nubo serve
// really sends.
func TestKeeperFrames(t *testing.T) {
	if err := warmFrames(keeperFrames); err != nil {
		t.Fatal(err)
	}
	for _, w := range keeperFrames {
		raw, ok := w.h.(json.RawMessage)
		if !ok {
			continue
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(w.into); err != nil {
			t.Errorf("frame %v: %v", w.t, err)
		}
		again, err := json.Marshal(w.into)
		if err != nil {
			t.Fatal(err)
		}
		var fields, sent map[string]any
		json.Unmarshal(again, &fields)
		json.Unmarshal(raw, &sent)
		for k := range fields {
			if _, ok := sent[k]; !ok {
				t.Errorf("frame %v: the warm-up's JSON lacks %q", w.t, k)
			}
		}
	}
}
