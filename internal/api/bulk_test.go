package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nubo-dev/nubo/internal/account"
	"github.com/nubo-dev/nubo/internal/invoke"
	"github.com/nubo-dev/nubo/internal/procs"
)

// TestLargeRequestIsBulk: a request whose body is larger than bulkBody,
// declared or as read, is served with GOMAXPROCS wide (package procs), and
// narrow again once answered, even when it is refused; a small one, also
// of unknown length, leaves GOMAXPROCS alone.
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

	for _, length := range []int64{2, -1} {
		if code := serve([]byte(`{}`), length); code != http.StatusForbidden {
			t.Fatalf("unsigned small request (length %d): %d, want 403", length, code)
		}
		if s := took(); len(s) != 0 {
			t.Errorf("a small request (length %d) set GOMAXPROCS %v", length, s)
		}
	}
	// Of unknown length and exactly bulkBody long: not yet bulk.
	if code := serve(bytes.Repeat([]byte("x"), bulkBody), -1); code != http.StatusForbidden {
		t.Fatalf("unsigned request of bulkBody bytes: %d, want 403", code)
	}
	if s := took(); len(s) != 0 {
		t.Errorf("a chunked body of bulkBody bytes set GOMAXPROCS %v", s)
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

// sizeInvoker is an Invoker that records the GOMAXPROCS its governor had
// set when each invocation started.
type sizeInvoker struct {
	cur  func() int
	seen []int
}

func (f *sizeInvoker) Invoke(_ context.Context, in *invoke.Input) (*invoke.Output, error) {
	f.seen = append(f.seen, f.cur())
	return &invoke.Output{Status: http.StatusOK, Payload: []byte(`{}`)}, nil
}

// TestLargeInvokeEndsBulkAtInvocation: a signed Invoke with a large
// payload reaches its invocation with GOMAXPROCS narrow again: the
// function's run is not the server's bulk work.
func TestLargeInvokeEndsBulkAtInvocation(t *testing.T) {
	reg, err := account.NewRegistry([]account.Account{account.Dev()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cur := 0
	gov := procs.NewWith(4, func(n int) int { mu.Lock(); cur = n; mu.Unlock(); return 0 })
	inv := &sizeInvoker{cur: func() int { mu.Lock(); defer mu.Unlock(); return cur }}
	a := New(Config{Accounts: reg, Procs: gov, Invoker: inv})
	payload := append(append([]byte(`{"k":"`), bytes.Repeat([]byte("x"), bulkBody)...), `"}`...)
	for _, path := range []string{"/2015-03-31/functions/f/invocations", "/2021-11-15/functions/f/response-streaming-invocations"} {
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(payload))
		sum := sha256.Sum256(payload)
		creds := aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		if len(inv.seen) == 0 || inv.seen[len(inv.seen)-1] != 2 {
			t.Errorf("%s: GOMAXPROCS at the invocation %v, want 2 (narrow)", path, inv.seen)
		}
		if got := inv.cur(); got != 2 {
			t.Errorf("%s: GOMAXPROCS after the answer %d, want 2", path, got)
		}
	}
}
