package control

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CodeRefs is the code the store refers to: every zip (function code and
// layers) by its hex SHA-256, and every ordered list of layers a function
// or version uses.
type CodeRefs struct {
	Zips   map[string]bool
	Layers [][]string
	// Accounts holds, per account, what its functions and versions refer
	// to (their Accounts nil): what an account's own copies of unpacked
	// code are kept for (codecache.Own).
	Accounts map[string]*CodeRefs
}

// References reads every function, version and layer record and returns
// the code they refer to. An error means a partial view: nothing may be
// collected on it.
func (s *Service) References(ctx context.Context) (*CodeRefs, error) {
	refs := &CodeRefs{Zips: map[string]bool{}, Accounts: map[string]*CodeRefs{}}
	keys, err := s.st.Keys(ctx, ">")
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "fn."):
			var rec record
			if _, err := s.st.Get(ctx, k, &rec); err != nil {
				return nil, err
			}
			acct, _, _ := strings.Cut(strings.TrimPrefix(k, "fn."), ".")
			refs.add(acct, rec.CodeHex, rec.LayerHexes)
		case strings.HasPrefix(k, "ver."):
			var v Version
			if _, err := s.st.Get(ctx, k, &v); err != nil {
				return nil, err
			}
			refs.add(v.Account, v.CodeHex, v.LayerHexes)
		case strings.HasPrefix(k, "layer.") && isLayerVersionKey(k):
			var sl storedLayer
			if _, err := s.st.Get(ctx, k, &sl); err != nil {
				return nil, err
			}
			refs.Zips[sl.Hex] = true
		case strings.HasPrefix(k, "layer."):
			var lr layerRecord
			if _, err := s.st.Get(ctx, k, &lr); err != nil {
				return nil, err
			}
			for _, sl := range lr.Versions {
				refs.Zips[sl.Hex] = true
			}
		}
	}
	return refs, nil
}

// add records a function's or version's code and layers, for acct too.
func (r *CodeRefs) add(acct, code string, layers []string) {
	r.refer(code, layers)
	a := r.Accounts[acct]
	if a == nil {
		a = &CodeRefs{Zips: map[string]bool{}}
		r.Accounts[acct] = a
	}
	a.refer(code, layers)
}

func (r *CodeRefs) refer(code string, layers []string) {
	r.Zips[code] = true
	for _, h := range layers {
		r.Zips[h] = true
	}
	if len(layers) > 0 {
		r.Layers = append(r.Layers, layers)
	}
}

// CollectCode deletes deployment packages not in refs (References, read
// by the caller: a partial view must never be collected on), and returns
// how many it removed. Only objects older than grace go: a create or
// update stores its zip before the record that refers to it, and must not
// lose it in between.
func (s *Service) CollectCode(ctx context.Context, refs *CodeRefs, grace time.Duration) (int, error) {
	used := refs.Zips
	objs, err := s.st.Code.List(ctx)
	if err == jetstream.ErrNoObjectsFound {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, o := range objs {
		if used[o.Name] || time.Since(o.ModTime) < grace {
			continue
		}
		if err := s.st.Code.Delete(ctx, o.Name); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}
