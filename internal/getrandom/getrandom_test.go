package getrandom

import (
	"bytes"
	"testing"
)

func TestRead(t *testing.T) {
	a, b := make([]byte, 64), make([]byte, 64)
	Read(a)
	Read(b)
	if bytes.Equal(a, b) || bytes.Equal(a, make([]byte, 64)) {
		t.Fatalf("two reads gave %x and %x", a, b)
	}
	c := make([]byte, 64)
	urandom(c)
	if bytes.Equal(c, make([]byte, 64)) || bytes.Equal(c, a) {
		t.Fatalf("/dev/urandom gave %x", c)
	}
}
