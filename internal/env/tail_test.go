package env

import (
	"bytes"
	"strings"
	"testing"
)

// TestTailBuffer: the tail is the last 4 KB of everything written, in
// writes of every size, and the buffer stays small however much is
// written (it held the whole invocation's output before).
func TestTailBuffer(t *testing.T) {
	var all bytes.Buffer
	tb := &tailBuffer{}
	line := strings.Repeat("x", 97) + "\n"
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16 KB
	for i := range 3000 {
		switch i % 4 {
		case 0:
			addTail(tb, line)
			all.WriteString(line)
		case 1:
			addTail(tb, []byte{byte('a' + i%26)})
			all.WriteByte(byte('a' + i%26))
		case 2:
			b := []byte(strings.Repeat(string(rune('A'+i%26)), i%300))
			addTail(tb, b)
			all.Write(b)
		case 3:
			if i%100 == 3 {
				addTail(tb, big)
				all.Write(big)
			}
		}
		want := all.Bytes()
		if len(want) > tailLimit {
			want = want[len(want)-tailLimit:]
		}
		if !bytes.Equal(tb.bytes(), want) {
			t.Fatalf("after write %d: tail differs from the last %d bytes written", i, len(want))
		}
		if cap(tb.b) > 4*tailLimit+len(big) {
			t.Fatalf("after write %d (%d bytes in all): the buffer holds %d bytes", i, all.Len(), cap(tb.b))
		}
	}
	if all.Len() < 40*tailLimit {
		t.Fatalf("only %d bytes written", all.Len())
	}
}
