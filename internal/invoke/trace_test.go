package invoke

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestNewTraceID: the header is X-Ray's, its epoch is now, and no two are
// alike.
func TestNewTraceID(t *testing.T) {
	re := regexp.MustCompile(`^Root=1-([0-9a-f]{8})-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$`)
	seen := map[string]bool{}
	for range 100 {
		before := time.Now().Unix()
		id := NewTraceID()
		m := re.FindStringSubmatch(id)
		if m == nil {
			t.Fatalf("trace id %q is not Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0", id)
		}
		if epoch, _ := strconv.ParseInt(m[1], 16, 64); epoch < before || epoch > time.Now().Unix() {
			t.Fatalf("trace id %q: epoch %d, want about %d", id, epoch, before)
		}
		if seen[id] {
			t.Fatalf("trace id %q made twice", id)
		}
		seen[id] = true
	}
}
