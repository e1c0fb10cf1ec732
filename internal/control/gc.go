package control

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CollectCode deletes deployment packages no function, version or layer
// refers to any more, and returns how many it removed. Only objects older
// than grace go: a create or update stores its zip before the record that
// refers to it, and must not lose it in between.
func (s *Service) CollectCode(ctx context.Context, grace time.Duration) (int, error) {
	used := map[string]bool{}
	keys, err := s.st.Keys(ctx, ">")
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "fn."):
			var rec record
			if _, err := s.st.Get(ctx, k, &rec); err != nil {
				return 0, err // never collect on a partial view
			}
			used[rec.CodeHex] = true
			for _, h := range rec.LayerHexes {
				used[h] = true
			}
		case strings.HasPrefix(k, "ver."):
			var v Version
			if _, err := s.st.Get(ctx, k, &v); err != nil {
				return 0, err
			}
			used[v.CodeHex] = true
			for _, h := range v.LayerHexes {
				used[h] = true
			}
		case strings.HasPrefix(k, "layer.") && isLayerVersionKey(k):
			var sl storedLayer
			if _, err := s.st.Get(ctx, k, &sl); err != nil {
				return 0, err
			}
			used[sl.Hex] = true
		case strings.HasPrefix(k, "layer."):
			var lr layerRecord
			if _, err := s.st.Get(ctx, k, &lr); err != nil {
				return 0, err
			}
			for _, sl := range lr.Versions {
				used[sl.Hex] = true
			}
		}
	}
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
