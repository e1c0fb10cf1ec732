package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// Get decodes the JSON value at key into v and returns its revision.
func (s *Store) Get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := s.Meta.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// Create stores v at key only if the key does not exist.
func (s *Store) Create(ctx context.Context, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	rev, err := s.Meta.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	return rev, nil
}

// Update stores v at key only if the key is still at revision rev.
func (s *Store) Update(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	n, err := s.Meta.Update(ctx, key, b, rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, ErrRevision
		}
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	return n, nil
}

// Put stores v at key unconditionally.
func (s *Store) Put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.Meta.Put(ctx, key, b); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Delete removes key (a missing key is not an error).
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := s.Meta.Delete(ctx, key, opts...)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return ErrRevision
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Keys lists the keys matching a subject-style filter such as "fn.111111111111.*".
func (s *Store) Keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := s.Meta.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", filter, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// PutCode stores a zip under name (the hex SHA-256 of its bytes, which the
// caller has computed), once: a complete object of that size is kept.
func (s *Store) PutCode(ctx context.Context, name string, zip []byte) error {
	if info, err := s.Code.GetInfo(ctx, name); err == nil && info.Size == uint64(len(zip)) {
		return nil
	}
	if _, err := s.Code.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(zip)); err != nil {
		return fmt.Errorf("store code %s: %w", name, err)
	}
	return nil
}

// GetCode returns the zip stored under a hex SHA-256.
func (s *Store) GetCode(ctx context.Context, sha string) ([]byte, error) {
	r, err := s.Code.Get(ctx, sha)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("code %s: %w", sha, err)
	}
	defer r.Close()
	return io.ReadAll(r)
}
