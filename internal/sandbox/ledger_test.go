package sandbox

import "testing"

func TestLedger(t *testing.T) {
	l := NewLedger(1000)
	if !l.Take(600) || l.Take(500) || !l.Take(400) || l.Used() != 1000 {
		t.Fatalf("600, then 500 refused, then 400: used %d; want 1000", l.Used())
	}
	if !l.Take(0) || l.Take(1) {
		t.Error("a full ledger: nothing must fit, 0 always")
	}
	l.Add(200) // provisioned concurrency goes beyond the capacity
	l.Give(600)
	if l.Used() != 600 || l.Take(401) || !l.Take(400) {
		t.Errorf("after Add 200 and Give 600: used %d; want 600 with room for 400 exactly", l.Used())
	}
	if u := NewLedger(0); !u.Take(1<<30) || !u.Take(1<<30) {
		t.Error("a ledger of no capacity must not bound")
	}
}
