package control

import (
	"context"
	"hash/fnv"
	"strconv"
	"sync"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
)

// publishLocks serialise, per function name inside this process, everything
// that writes or removes version keys: publishing (the version key is
// written before the record claims its number, so a crash in between only
// leaves a key the next publish overwrites, which is safe only while one
// publisher at a time picks the number), and the purge of leftover version
// keys by CreateFunction and DeleteFunction (a purge racing a publish would
// delete a version that was just answered 201).
//
// A fixed set of locks, chosen by a hash of the name: one lock per name
// ever seen would grow with every function created (names that share a
// lock only wait for each other; no caller holds two).
var publishLocks [256]sync.Mutex

func publishLock(acct, name string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(acct))
	h.Write([]byte{'/'})
	h.Write([]byte(name))
	return &publishLocks[h.Sum32()%uint32(len(publishLocks))]
}

// PublishVersion implements PublishVersion.
func (s *Service) PublishVersion(ctx context.Context, acct, fn, codeSha, description, revisionID string) (*function.Config, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	if q != "" {
		return nil, errdefs.InvalidParameter("Qualifiers are not supported by PublishVersion")
	}
	return s.publish(ctx, acct, name, codeSha, description, revisionID, false)
}

// publish snapshots $LATEST as the next version. An unchanged $LATEST
// returns the last published version instead of a new one (AWS's rule).
// During create (allowPending) the Pending state does not block it.
func (s *Service) publish(ctx context.Context, acct, name, codeSha, description, revisionID string, allowPending bool) (*function.Config, error) {
	mu := publishLock(acct, name)
	mu.Lock()
	defer mu.Unlock()

	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	if !allowPending {
		if err := s.busy(rec); err != nil {
			return nil, err
		}
	}
	if err := checkRevision(revisionID, rec.Latest.RevisionId); err != nil {
		return nil, err
	}
	if codeSha != "" && codeSha != rec.Latest.CodeSha256 {
		return nil, errdefs.InvalidParameter("CodeSHA256 (%s) is different from current CodeSHA256 in $LATEST (%s). Please try again with the CodeSHA256 in $LATEST.", codeSha, rec.Latest.CodeSha256)
	}
	digest := rec.Latest.Digest()
	if digest == rec.LastPublished && rec.LastVersion > 0 {
		if v, err := s.getVersion(ctx, acct, name, strconv.Itoa(rec.LastVersion)); err == nil {
			return &v.Config, nil
		}
	}
	n := strconv.Itoa(rec.LastVersion + 1)
	c := rec.Latest.Clone()
	c.Version = n
	c.FunctionArn = s.qualArn(acct, name, n)
	c.RevisionId = newRevision()
	c.LastModified = function.FormatTime(s.now())
	c.State, c.StateReason, c.StateReasonCode = function.StateActive, "", ""
	c.LastUpdateStatus, c.LastUpdateStatusReason, c.LastUpdateStatusReasonCode = function.UpdateSuccessful, "", ""
	if description != "" {
		c.Description = description
	}
	v := &Version{Account: acct, Generation: rec.Generation, Config: *c, CodeHex: rec.CodeHex, LayerHexes: rec.LayerHexes}
	s.cache.drop(verKey(acct, name, n))
	if err := s.st.Put(ctx, verKey(acct, name, n), v); err != nil {
		return nil, err
	}
	_, err = s.mutate(ctx, acct, name, func(r *record) error {
		if r.Generation != rec.Generation {
			return s.notFound(acct, name, "")
		}
		r.LastVersion++
		r.LastPublished = digest
		if r.VersionSizes == nil {
			r.VersionSizes = map[string]int64{}
		}
		r.VersionSizes[n] = c.CodeSize
		// Publishing changes the function's revision, as in AWS.
		r.Latest.RevisionId = newRevision()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListVersionsByFunction lists $LATEST then every published version.
func (s *Service) ListVersionsByFunction(ctx context.Context, acct, fn, marker string, maxItems int) ([]function.Config, string, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, "", err
	}
	if q != "" {
		return nil, "", errdefs.InvalidParameter("Qualifiers are not supported by ListVersionsByFunction")
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	vs, err := s.versions(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	items := []function.Config{latestListed(rec.Latest)}
	for _, v := range vs {
		items = append(items, v.Config)
	}
	return paginate(items, marker, maxItems, func(c function.Config) string { return versionOrder(c.Version) })
}
