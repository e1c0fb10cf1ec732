package control

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nubo-dev/nubo/internal/store"
)

// testStore opens a store on an embedded NATS server of its own, for at
// most d; both end with the test.
func testStore(t *testing.T, d time.Duration) (context.Context, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return ctx, st
}
