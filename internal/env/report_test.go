package env

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// The REPORT line is what Lambda writes, to the byte: the appended form
// must equal the formatted one it replaced, rounding included.
func TestReportLine(t *testing.T) {
	cases := []struct {
		d       time.Duration
		mem     int
		maxMem  uint64
		initMs  float64
		errType string
	}{
		{1234567 * time.Nanosecond, 128, 17, 0, ""},
		{999 * time.Microsecond, 10240, 0, 0, ""},
		{5 * time.Microsecond, 128, 3, 12.345, ""},
		{3*time.Second + 5*time.Microsecond, 256, 70, 0.004, "Sandbox.Timedout"},
		{2500 * time.Microsecond, 128, 128, 0, "Runtime.OutOfMemory"},
		{1005 * time.Microsecond, 512, 9, 1.005, "Function.Unhandled"},
		{0, 128, 1, 0, ""},
	}
	for _, c := range cases {
		ms := float64(c.d.Microseconds()) / 1000
		want := fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB\tMax Memory Used: %d MB\t",
			"id-1", ms, int64(math.Ceil(ms)), c.mem, max(c.maxMem, 1))
		if c.initMs > 0 {
			want += fmt.Sprintf("Init Duration: %.2f ms\t", c.initMs)
		}
		switch c.errType {
		case "Sandbox.Timedout":
			want += "Status: timeout\t"
		case "Runtime.OutOfMemory":
			want += "Status: error\tError Type: Runtime.OutOfMemory\t"
		}
		if got := reportLine("id-1", c.d, c.mem, c.maxMem, c.initMs, c.errType); got != want {
			t.Errorf("reportLine(%v, %d, %d, %v, %q)\n got %q\nwant %q", c.d, c.mem, c.maxMem, c.initMs, c.errType, got, want)
		}
	}
}
