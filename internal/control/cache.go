package control

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// invokeCache keeps function records and published versions for the
// invoke path, so a warm invocation reads no store. Control-plane reads
// stay authoritative (they go to the store); only InvokeTarget uses this.
//
// Correctness: every record is cached with the store revision it was read
// or written at, and an entry only ever gives way to a later revision;
// nothing older than the latest change the watch has reported is cached.
// This process puts the records it writes (create, mutate), so a new or
// changed function's first invocation reads no store either, and drops
// those it deletes; a KV watch drops entries that anyone (other nodes
// included) changed at a later revision than the one cached. A cached
// record is never mutated: writers build new records.
type invokeCache struct {
	mu   sync.RWMutex
	recs map[string]cachedRec // fn key → record
	vers map[string]*Version  // ver key → version
	// seen is the latest revision of each fn key the watch has reported
	// (and when): a record read or written before it must not be cached
	// after it. Entries older than seenTTL are forgotten (pruneLocked).
	seen map[string]seenRev
	// writing counts this process's writes of each fn key in flight
	// (beginWrite, endWrite): meanwhile nothing is cached for the key, so
	// the invoke path reads the store, where a client may already have
	// read the write (GetFunction says Active, Invoke must not say
	// Pending).
	writing   map[string]int
	lastPrune time.Time
	now       func() time.Time
}

type seenRev struct {
	rev uint64
	at  time.Time
}

// seenTTL is how long a reported revision is remembered: far longer than
// any read takes between loading a record and caching it. Remembered for
// ever, every function name ever changed on any node would stay.
const seenTTL = 10 * time.Minute

// cachedRec is a record and the store revision it has.
type cachedRec struct {
	rec *record
	rev uint64
}

func newInvokeCache() *invokeCache {
	return &invokeCache{recs: map[string]cachedRec{}, vers: map[string]*Version{}, seen: map[string]seenRev{},
		writing: map[string]int{}, now: time.Now}
}

// put caches rec at revision rev unless a later one is cached. rec must
// not be changed afterwards.
func (c *invokeCache) put(key string, rec *record, rev uint64, acct string) {
	// Made before the record is shared, so readers need no lock for it.
	rec.latest = &Version{Account: acct, Generation: rec.Generation, Config: rec.Latest, CodeHex: rec.CodeHex, LayerHexes: rec.LayerHexes}
	rec.latest.digest = rec.latest.Config.Digest()
	c.mu.Lock()
	if cur, ok := c.recs[key]; (!ok || cur.rev < rev) && rev >= c.seen[key].rev && c.writing[key] == 0 {
		c.recs[key] = cachedRec{rec, rev}
	}
	c.mu.Unlock()
}

// putWritten caches a record this process has just written at rev: a
// copy as the store holds it (through JSON), so the cache holds the same
// whether it was filled by this write or by a later read.
func (c *invokeCache) putWritten(key string, rec *record, rev uint64, acct string) {
	b, err := json.Marshal(rec)
	if err != nil {
		c.drop(key)
		return
	}
	var cp record
	if err := json.Unmarshal(b, &cp); err != nil {
		c.drop(key)
		return
	}
	c.put(key, &cp, rev, acct)
}

// beginWrite is called before this process writes key to the store: the
// record cached for it goes, and none is cached until endWrite.
func (c *invokeCache) beginWrite(key string) {
	c.mu.Lock()
	c.writing[key]++
	delete(c.recs, key)
	c.mu.Unlock()
}

// endWrite is called once the write of key has ended, at revision rev (0
// when it failed): a read from before it is not cached after it.
func (c *invokeCache) endWrite(key string, rev uint64) {
	c.mu.Lock()
	if c.writing[key]--; c.writing[key] <= 0 {
		delete(c.writing, key)
	}
	if rev > c.seen[key].rev {
		c.seen[key] = seenRev{rev, c.now()}
	}
	c.mu.Unlock()
}

// changed drops what a store update of key at rev makes stale: a record
// cached at an earlier revision, and a version.
func (c *invokeCache) changed(key string, rev uint64) {
	c.mu.Lock()
	if strings.HasPrefix(key, "fn.") && rev > c.seen[key].rev {
		c.seen[key] = seenRev{rev, c.now()}
	}
	if cur, ok := c.recs[key]; ok && cur.rev < rev {
		delete(c.recs, key)
	}
	delete(c.vers, key)
	c.pruneLocked()
	c.mu.Unlock()
}

// pruneLocked forgets revisions reported more than seenTTL ago, at most
// once a minute; c.mu held.
func (c *invokeCache) pruneLocked() {
	now := c.now()
	if now.Sub(c.lastPrune) < time.Minute {
		return
	}
	c.lastPrune = now
	for k, s := range c.seen {
		if now.Sub(s.at) > seenTTL {
			delete(c.seen, k)
		}
	}
}

func (c *invokeCache) drop(key string) {
	c.mu.Lock()
	delete(c.recs, key)
	delete(c.vers, key)
	c.mu.Unlock()
}

// dropPrefix removes every version entry under a prefix (a purge).
func (c *invokeCache) dropPrefix(prefix string) {
	c.mu.Lock()
	for k := range c.vers {
		if strings.HasPrefix(k, prefix) {
			delete(c.vers, k)
		}
	}
	c.mu.Unlock()
}

// watch drops entries changed by anyone (other nodes included) until ctx
// ends. It also closes the window in which a reader that loaded a record
// just before a local delete caches it just after that delete's drop.
func (c *invokeCache) watch(ctx context.Context, kv jetstream.KeyValue) {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-w.Updates():
				if e != nil {
					c.changed(e.Key(), e.Revision())
				}
			}
		}
	}()
}

// cachedRecord returns the record of a function, from the cache when it is there.
func (s *Service) cachedRecord(ctx context.Context, acct, name string) (*record, error) {
	key := fnKey(acct, name)
	s.cache.mu.RLock()
	c, ok := s.cache.recs[key]
	s.cache.mu.RUnlock()
	if ok {
		return c.rec, nil
	}
	rec, rev, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	s.cache.put(key, rec, rev, acct)
	return rec, nil
}

// cachedVersion returns a published version, from the cache when it is there.
func (s *Service) cachedVersion(ctx context.Context, acct, name, n string) (*Version, error) {
	key := verKey(acct, name, n)
	s.cache.mu.RLock()
	v := s.cache.vers[key]
	s.cache.mu.RUnlock()
	if v != nil {
		return v, nil
	}
	v, err := s.getVersion(ctx, acct, name, n)
	if err != nil {
		return nil, err
	}
	v.digest = v.Config.Digest()
	s.cache.mu.Lock()
	s.cache.vers[key] = v
	s.cache.mu.Unlock()
	return v, nil
}
