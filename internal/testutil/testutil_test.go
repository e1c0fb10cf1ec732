package testutil

import "testing"

// TestSlot: claims held at once differ, and a claim is free again once
// its test has ended.
func TestSlot(t *testing.T) {
	a, b := Slot(t, "selftest-pair", 2), Slot(t, "selftest-pair", 2)
	if a == b {
		t.Fatalf("two claims got slot %d", a)
	}
	var inner int
	t.Run("holder", func(t *testing.T) { inner = Slot(t, "selftest-one", 1) })
	if again := Slot(t, "selftest-one", 1); again != inner {
		t.Fatalf("slot %d was not freed (got %d)", inner, again)
	}
}
