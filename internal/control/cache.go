package control

import (
	"context"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// invokeCache keeps function records and published versions for the
// invoke path, so a warm invocation reads no store. Control-plane reads
// stay authoritative (they go to the store); only InvokeTarget uses this.
//
// Correctness: this process drops an entry synchronously whenever it
// writes or deletes the key (mutate, create, delete, purge), and a KV watch
// drops entries that other nodes change. A cached record is never mutated:
// writers build new records.
type invokeCache struct {
	mu   sync.RWMutex
	recs map[string]*record  // fn key → record
	vers map[string]*Version // ver key → version
}

func newInvokeCache() *invokeCache {
	return &invokeCache{recs: map[string]*record{}, vers: map[string]*Version{}}
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
// just before a local write caches it just after that write's drop.
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
					c.drop(e.Key())
				}
			}
		}
	}()
}

// cachedRecord returns the record of a function, from the cache when it is there.
func (s *Service) cachedRecord(ctx context.Context, acct, name string) (*record, error) {
	key := fnKey(acct, name)
	s.cache.mu.RLock()
	rec := s.cache.recs[key]
	s.cache.mu.RUnlock()
	if rec != nil {
		return rec, nil
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	// Made before the record is shared, so readers need no lock for it.
	rec.latest = &Version{Account: acct, Generation: rec.Generation, Config: rec.Latest, CodeHex: rec.CodeHex, LayerHexes: rec.LayerHexes}
	rec.latest.digest = rec.latest.Config.Digest()
	s.cache.mu.Lock()
	s.cache.recs[key] = rec
	s.cache.mu.Unlock()
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
