package control

import (
	"log/slog"
	"testing"
	"time"
)

// TestInvokeCacheRevisions: two services on one store stand for two nodes.
// A record a node writes is cached at once (its first invocation reads no
// store) and stays cached when the watch reports that same write; a write
// by the other node replaces it; an older revision never displaces a newer
// one; a delete empties it.
func TestInvokeCacheRevisions(t *testing.T) {
	ctx, st := testStore(t, 30*time.Second)
	a := New(st, Options{Logger: slog.New(slog.DiscardHandler)})
	defer a.Close()
	b := New(st, Options{Logger: slog.New(slog.DiscardHandler)})
	defer b.Close()
	const acct, name = "000000000000", "cached"
	key := fnKey(acct, name)
	cached := func(s *Service) (cachedRec, bool) {
		s.cache.mu.RLock()
		defer s.cache.mu.RUnlock()
		c, ok := s.cache.recs[key]
		return c, ok
	}
	// waitFor polls cond for up to 5 s.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("after 5 s: %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	rec := &record{Generation: "g1", CodeHex: "c1"}
	rec.Latest.FunctionName, rec.Latest.Handler = name, "one"
	if err := a.createRecord(ctx, acct, name, rec); err != nil {
		t.Fatal(err)
	}
	_, rev, err := a.load(ctx, acct, name)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := cached(a)
	if !ok || c.rev != rev || c.rec.Latest.Handler != "one" || c.rec.latest == nil || c.rec.latest.digest == "" {
		t.Fatalf("after create: cached %v %+v; want revision %d, handler one, $LATEST made", ok, c, rev)
	}
	// b's write reaches a through the watch; a's own create must not
	// have been dropped by it before (the watch saw that event first).
	if _, err := b.mutate(ctx, acct, name, func(r *record) error { r.Latest.Handler = "two"; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor("a's cache still holds the record b replaced", func() bool {
		c, ok := cached(a)
		return !ok || c.rev > rev
	})
	got, err := a.cachedRecord(ctx, acct, name)
	if err != nil || got.Latest.Handler != "two" {
		t.Fatalf("a after b's update: %+v, %v; want handler two", got, err)
	}
	// a's own update is cached at its revision and survives its event.
	if _, err := a.mutate(ctx, acct, name, func(r *record) error { r.Latest.Handler = "three"; return nil }); err != nil {
		t.Fatal(err)
	}
	c3, _ := cached(a)
	if c3.rec.Latest.Handler != "three" {
		t.Fatalf("after a's update: cached handler %q; want three", c3.rec.Latest.Handler)
	}
	// A marker written after that update: once a's watch has dropped it,
	// it has seen the update's own event too (one watch, in order).
	marker := fnKey(acct, "marker")
	a.cache.mu.Lock()
	a.cache.vers[marker] = &Version{}
	a.cache.mu.Unlock()
	if _, err := st.Create(ctx, marker, &record{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a's watch to report the marker", func() bool {
		a.cache.mu.RLock()
		defer a.cache.mu.RUnlock()
		_, ok := a.cache.vers[marker]
		return !ok
	})
	if c, ok := cached(a); !ok || c.rev != c3.rev {
		t.Fatalf("a's own update was dropped by its own event: cached %v at %d; want revision %d", ok, c.rev, c3.rev)
	}
	// An older revision read late never displaces the newer one.
	old := &record{Generation: "g1"}
	old.Latest.Handler = "stale"
	a.cache.put(key, old, rev, acct)
	if c, _ := cached(a); c.rec.Latest.Handler != "three" {
		t.Fatalf("a stale put replaced the cached record: handler %q", c.rec.Latest.Handler)
	}
	if err := a.deleteRecord(ctx, acct, name); err != nil {
		t.Fatal(err)
	}
	if _, ok := cached(a); ok {
		t.Fatal("the record is still cached after its delete")
	}
	waitFor("b's cache to drop the deleted record", func() bool { _, ok := cached(b); return !ok })
	// A write that lost the race to the delete, put after the watch
	// reported the delete, must not bring the record back.
	waitFor("a's watch to report the delete", func() bool {
		a.cache.mu.RLock()
		defer a.cache.mu.RUnlock()
		return a.cache.seen[key].rev > c3.rev
	})
	a.cache.put(key, c3.rec, c3.rev, acct)
	if _, ok := cached(a); ok {
		t.Fatal("a record older than the reported delete was cached")
	}
}

// TestSeenForgotten: a reported revision keeps an older read from being
// cached while it is recent, and is forgotten seenTTL later, so the cache
// does not keep an entry for every function name ever changed.
func TestSeenForgotten(t *testing.T) {
	c := newInvokeCache()
	clock := time.Now()
	c.now = func() time.Time { return clock }
	const old, young = "fn.000000000000.old", "fn.000000000000.young"
	c.changed(old, 5)
	c.put(old, &record{}, 4, "000000000000")
	if _, ok := c.recs[old]; ok {
		t.Fatal("a read older than the reported revision was cached")
	}
	clock = clock.Add(seenTTL / 2)
	c.changed(young, 7)
	if len(c.seen) != 2 {
		t.Fatalf("%d revisions remembered, want 2", len(c.seen))
	}
	clock = clock.Add(seenTTL/2 + 2*time.Minute)
	c.changed("ver.000000000000.young.1", 8) // any report prunes
	if _, ok := c.seen[old]; ok {
		t.Fatal("a revision reported more than seenTTL ago is still remembered")
	}
	if _, ok := c.seen[young]; !ok {
		t.Fatal("a recent revision was forgotten")
	}
	c.put(young, &record{}, 6, "000000000000")
	if _, ok := c.recs[young]; ok {
		t.Fatal("a read older than a remembered revision was cached")
	}
}

// TestInvokeCacheDuringWrite: between this process's store write of a
// record and the cache's update, a client may already have read the new
// record (GetFunction reads the store: Active); the invoke path must not
// answer from the record cached before the write (Pending).
func TestInvokeCacheDuringWrite(t *testing.T) {
	ctx, st := testStore(t, 30*time.Second)
	s := New(st, Options{Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	const acct, name = "000000000000", "written"
	rec := &record{Generation: "g1"}
	rec.Latest.FunctionName, rec.Latest.Handler = name, "before"
	if err := s.createRecord(ctx, acct, name, rec); err != nil {
		t.Fatal(err)
	}
	if got, err := s.cachedRecord(ctx, acct, name); err != nil || got.Latest.Handler != "before" {
		t.Fatalf("cached after create: %+v, %v", got, err)
	}
	var during string
	s.afterWrite = func(string) {
		got, err := s.cachedRecord(ctx, acct, name)
		if err != nil {
			t.Errorf("during the write: %v", err)
			return
		}
		during = got.Latest.Handler
	}
	if _, err := s.mutate(ctx, acct, name, func(r *record) error { r.Latest.Handler = "after"; return nil }); err != nil {
		t.Fatal(err)
	}
	s.afterWrite = nil
	if during != "after" {
		t.Errorf("the invoke path read handler %q once the store held the write, want after", during)
	}
	if got, err := s.cachedRecord(ctx, acct, name); err != nil || got.Latest.Handler != "after" {
		t.Fatalf("cached after the write: %+v, %v", got, err)
	}
	s.cache.mu.RLock()
	c, ok := s.cache.recs[fnKey(acct, name)]
	s.cache.mu.RUnlock()
	if !ok || c.rec.Latest.Handler != "after" {
		t.Errorf("the write's record is not cached: %v %+v", ok, c)
	}
}
