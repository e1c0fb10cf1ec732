package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/procs"
)

// TestLargeRequestIsBulk: a request whose body is larger than bulkBody, or
// of unknown length, is served with GOMAXPROCS wide (package procs), and
// narrow again once answered, even when it is refused; a small one leaves
// GOMAXPROCS alone.
func TestLargeRequestIsBulk(t *testing.T) {
	reg, err := account.NewRegistry([]account.Account{account.Dev()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sets []int
	gov := procs.NewWith(4, func(n int) int { mu.Lock(); sets = append(sets, n); mu.Unlock(); return 0 })
	a := New(Config{Accounts: reg, Procs: gov})
	serve := func(body []byte, length int64) int {
		r := httptest.NewRequest(http.MethodPost, "/2015-03-31/functions", bytes.NewReader(body))
		r.ContentLength = length
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		return w.Code
	}
	took := func() []int { mu.Lock(); defer mu.Unlock(); s := slices.Clone(sets); sets = nil; return s }
	took()

	if code := serve([]byte(`{}`), 2); code != http.StatusForbidden {
		t.Fatalf("unsigned small request: %d, want 403", code)
	}
	if s := took(); len(s) != 0 {
		t.Errorf("a small request set GOMAXPROCS %v", s)
	}
	big := bytes.Repeat([]byte("x"), bulkBody+1)
	for _, length := range []int64{int64(len(big)), -1} {
		if code := serve(big, length); code != http.StatusForbidden {
			t.Fatalf("unsigned large request (length %d): %d, want 403", length, code)
		}
		if s := took(); !slices.Equal(s, []int{4, 2}) {
			t.Errorf("large request (length %d) set GOMAXPROCS %v, want [4 2]", length, s)
		}
	}
}
