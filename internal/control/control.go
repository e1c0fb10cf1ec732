// Package control is the Lambda control plane: it creates, reads, updates
// and deletes functions, versions, aliases, layers and the per-function
// settings, enforcing AWS's semantics (RevisionId checks, state transitions,
// immutable versions, limits) and storing everything in JetStream.
//
// Every method takes the caller's account id first; keys are namespaced by
// account, so one account can never reach another's resources — a reference
// to a foreign account's ARN gets the same 404 as a name that does not exist.
//
// Records (package store documents the buckets):
//
//	fn.<acct>.<name>      record: $LATEST config, aliases, tags, policies,
//	                      concurrency and event-invoke settings, version counter
//	ver.<acct>.<name>.<n> versionRecord: an immutable snapshot of a version
//	layer.<acct>.<name>   layerRecord: a layer's last version number
//	layer.<acct>.<name>.<n> storedLayer: version n of a layer
//
// Every write is a compare-and-set on the record's revision, retried on a lost
// race, so concurrent API calls never lose each other's writes.
//
// State machine of a function (what the SDK waiters poll):
//
//	create → State Pending → (prepare) → Active | Failed
//	update → LastUpdateStatus InProgress → (prepare) → Successful | Failed
//
// The transition runs in the background after the write returns; records
// left in a transient state by a crash are finished by Recover at start.
package control

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/store"
)

// Options configure the control plane.
type Options struct {
	Region string
	// AccountConcurrency is each account's concurrency limit (AWS default 1000).
	AccountConcurrency int
	// TransitionDelay keeps a new or updated function in Pending/InProgress
	// at least this long (tests use it to observe the transient states).
	TransitionDelay time.Duration
	// Prepare, if set, runs during the Pending/InProgress phase (for example to
	// unpack code ahead of the first invoke). An error makes the function Failed.
	Prepare func(ctx context.Context, v *Version) error
	// OnChange is called after any write to a function (environments of the
	// old configuration retire).
	OnChange func(account, name string)
	// CheckRuntime, if set, refuses a runtime this node cannot run, at
	// CreateFunction and at an UpdateFunctionConfiguration that sets one,
	// as AWS refuses a runtime it no longer supports (a function that
	// would otherwise become Active and then fail every invoke).
	CheckRuntime func(id string) error
	Logger       *slog.Logger
	Now          func() time.Time
}

// Service is the control plane.
type Service struct {
	st   *store.Store
	opts Options
	log  *slog.Logger

	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	cache  *invokeCache
	// afterWrite, in tests, runs between a record's store write and the
	// cache's update.
	afterWrite func(key string)
}

// New returns a control plane over st.
func New(st *store.Store, opts Options) *Service {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountConcurrency == 0 {
		opts.AccountConcurrency = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{st: st, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, cache: newInvokeCache()}
	s.cache.watch(ctx, st.Meta)
	return s
}

// Close waits for background transitions to finish.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// SetOnChange sets the hook called after any write to a function.
func (s *Service) SetOnChange(fn func(account, name string)) { s.opts.OnChange = fn }

// SetCheckRuntime sets Options.CheckRuntime.
func (s *Service) SetCheckRuntime(fn func(id string) error) { s.opts.CheckRuntime = fn }

// checkRuntime applies Options.CheckRuntime to a runtime a request sets.
func (s *Service) checkRuntime(id string) error {
	if id == "" || s.opts.CheckRuntime == nil {
		return nil
	}
	return s.opts.CheckRuntime(id)
}

// Region is the region every ARN of this server names.
func (s *Service) Region() string { return s.opts.Region }

// record is everything about one function except its published versions.
type record struct {
	Latest function.Config `json:"latest"`
	// Code of $LATEST: object name (hex SHA-256) and unzipped size.
	CodeHex      string   `json:"codeHex"`
	CodeUnzipped int64    `json:"codeUnzipped"`
	LayerHexes   []string `json:"layerHexes,omitempty"`
	// Generation distinguishes a function from an earlier one of the same name.
	Generation    string `json:"generation"`
	LastVersion   int    `json:"lastVersion"`
	LastPublished string `json:"lastPublishedDigest,omitempty"`

	Aliases     map[string]*function.Alias `json:"aliases,omitempty"`
	Tags        map[string]string          `json:"tags,omitempty"`
	Reserved    *int                       `json:"reserved,omitempty"`
	Provisioned map[string]*Provisioned    `json:"provisioned,omitempty"`
	EventInvoke map[string]*EventInvoke    `json:"eventInvoke,omitempty"`
	Policies    map[string][]Statement     `json:"policies,omitempty"`
	// URLs are the function URLs, by qualifier ("" for the function's own).
	URLs map[string]*URLConfig `json:"urls,omitempty"`
	// VersionSizes remembers each published version's code size for usage figures.
	VersionSizes map[string]int64 `json:"versionSizes,omitempty"`

	// latest is $LATEST as a Version, made once when the record enters the
	// invoke cache (see cachedRecord); nil otherwise.
	latest *Version
}

// Version is a resolved, runnable version of a function: what an execution
// environment needs to start.
type Version struct {
	Account    string          `json:"account"`
	Generation string          `json:"generation"`
	Config     function.Config `json:"config"`
	CodeHex    string          `json:"codeHex"`
	LayerHexes []string        `json:"layerHexes,omitempty"`

	// digest memoises Config.Digest for versions the invoke cache holds,
	// which are never mutated; empty otherwise.
	digest string
}

// Digest is Config.Digest: a hash of everything the version freezes. The
// invoke path asks for it on every invocation (the worker's pool key), so
// cached versions answer from a memo instead of JSON and SHA-256.
func (v *Version) Digest() string {
	if v.digest != "" {
		return v.digest
	}
	return v.Config.Digest()
}

func fnKey(acct, name string) string { return "fn." + acct + "." + name }

// Store keys cannot hold '$', so $LATEST never appears in a key: only
// published versions have keys.
func verKey(acct, name string, n string) string { return "ver." + acct + "." + name + "." + n }

func (s *Service) now() time.Time { return s.opts.Now() }

func (s *Service) fnArn(acct, name string) string { return arn.Function(s.opts.Region, acct, name) }

func (s *Service) qualArn(acct, name, q string) string {
	return arn.Qualified(s.opts.Region, acct, name, q)
}

func newRevision() string { return uuid.NewString() }

// notFound is AWS's 404 for a function, named by the ARN the caller used
// (for a qualified reference, the qualified ARN).
func (s *Service) notFound(acct, name, q string) error {
	a := s.fnArn(acct, name)
	if q != "" {
		a = s.qualArn(acct, name, q)
	}
	return errdefs.NotFound("Function not found: %s", a)
}

// namedAs rewords a function's not-found error (load's, which names the
// unqualified ARN) for a reference with qualifier q: AWS names the ARN the
// caller used. Other errors pass unchanged.
func (s *Service) namedAs(err error, acct, name, q string) error {
	if q == "" || !errdefs.Is(err, errdefs.KindNotFound) {
		return err
	}
	return s.notFound(acct, name, q)
}

// ref resolves a FunctionName path value and optional ?Qualifier= for the
// caller's account. A reference to another account or region is reported as
// not found, exactly like a missing name.
func (s *Service) ref(acct, fn, qualifier string) (name, q string, err error) {
	return s.refShape(acct, fn, qualifier, arn.QualifierNumericLatestPublishedOrAlias)
}

// refShape is ref for an operation whose qualifier has another shape.
func (s *Service) refShape(acct, fn, qualifier string, shape arn.QualifierShape) (name, q string, err error) {
	r, err := arn.ParseFunction(fn)
	if err != nil {
		return "", "", err
	}
	q, err = arn.ResolveQualifierShape(r, qualifier, shape)
	if err != nil {
		return "", "", err
	}
	if (r.AccountID != "" && r.AccountID != acct) || (r.Region != "" && r.Region != s.opts.Region) {
		a := r.AccountID
		if a == "" {
			a = acct
		}
		reg := r.Region
		if reg == "" {
			reg = s.opts.Region
		}
		if q != "" {
			return "", "", errdefs.NotFound("Function not found: %s", arn.Qualified(reg, a, r.Name, q))
		}
		return "", "", errdefs.NotFound("Function not found: %s", arn.Function(reg, a, r.Name))
	}
	return r.Name, q, nil
}

// load reads a function record.
func (s *Service) load(ctx context.Context, acct, name string) (*record, uint64, error) {
	var rec record
	rev, err := s.st.Get(ctx, fnKey(acct, name), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, s.notFound(acct, name, "")
	}
	if err != nil {
		return nil, 0, err
	}
	return &rec, rev, nil
}

// mutate applies fn to the record under compare-and-set, retrying when
// another writer got there first. fn may return an error to abort.
func (s *Service) mutate(ctx context.Context, acct, name string, fn func(*record) error) (*record, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.load(ctx, acct, name)
		if err != nil {
			return nil, err
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		key := fnKey(acct, name)
		s.cache.beginWrite(key)
		nrev, err := s.st.Update(ctx, key, rec, rev)
		if s.afterWrite != nil {
			s.afterWrite(key)
		}
		s.cache.endWrite(key, nrev)
		if err != nil {
			if errors.Is(err, store.ErrRevision) && attempt < 50 {
				continue
			}
			return nil, err
		}
		s.cache.putWritten(key, rec, nrev, acct)
		if s.opts.OnChange != nil {
			s.opts.OnChange(acct, name)
		}
		return rec, nil
	}
}

// busy refuses writes while a function is in a transient state, as AWS does.
func (s *Service) busy(rec *record) error {
	c := &rec.Latest
	if c.State == function.StatePending {
		return errdefs.Conflict("The operation cannot be performed at this time. The function is currently in the following state: Pending")
	}
	if c.LastUpdateStatus == function.UpdateInProgress {
		return errdefs.Conflict("The operation cannot be performed at this time. An update is in progress for resource: %s", c.FunctionArn)
	}
	return nil
}

func checkRevision(want, have string) error {
	if want != "" && want != have {
		return errdefs.Precondition("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
	}
	return nil
}

// Recover finishes transitions interrupted by a crash; call once at start.
func (s *Service) Recover(ctx context.Context) error {
	keys, err := s.st.Keys(ctx, "fn.*.*")
	if err != nil {
		return err
	}
	for _, k := range keys {
		var rec record
		if _, err := s.st.Get(ctx, k, &rec); err != nil {
			continue
		}
		c := &rec.Latest
		if c.State == function.StatePending || c.LastUpdateStatus == function.UpdateInProgress {
			acct, name := splitFnKey(k)
			s.log.Info("finishing interrupted transition", "function", c.FunctionArn)
			s.startTransition(acct, name, rec.Generation)
		}
	}
	return nil
}

func splitFnKey(k string) (acct, name string) {
	// fn.<12 digits>.<name>
	if len(k) < 17 {
		return "", ""
	}
	return k[3:15], k[16:]
}

// startTransition moves a Pending/InProgress function to its final state in
// the background.
func (s *Service) startTransition(acct, name, generation string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if d := s.opts.TransitionDelay; d > 0 {
			select {
			case <-time.After(d):
			case <-s.ctx.Done():
				return // finished by Recover on the next start
			}
		}
		var prepErr error
		if s.opts.Prepare != nil {
			if v, err := s.latestVersion(s.ctx, acct, name); err == nil {
				prepErr = s.opts.Prepare(s.ctx, v)
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		_, err := s.mutate(s.ctx, acct, name, func(rec *record) error {
			if rec.Generation != generation {
				return errStale
			}
			c := &rec.Latest
			changed := false
			if c.State == function.StatePending {
				changed = true
				c.StateReason, c.StateReasonCode = "", ""
				c.State = function.StateActive
				if prepErr != nil {
					c.State, c.StateReason, c.StateReasonCode = function.StateFailed, prepErr.Error(), "InternalError"
				}
			}
			if c.LastUpdateStatus == function.UpdateInProgress {
				changed = true
				c.LastUpdateStatusReason, c.LastUpdateStatusReasonCode = "", ""
				c.LastUpdateStatus = function.UpdateSuccessful
				if prepErr != nil {
					c.LastUpdateStatus, c.LastUpdateStatusReason, c.LastUpdateStatusReasonCode = function.UpdateFailed, prepErr.Error(), "InternalError"
				}
			}
			if !changed {
				return errStale
			}
			c.RevisionId = newRevision()
			return nil
		})
		if err != nil && !errors.Is(err, errStale) && !errdefs.Is(err, errdefs.KindNotFound) && s.ctx.Err() == nil {
			s.log.Error("state transition failed", "account", acct, "function", name, "err", err)
		}
	}()
}

var errStale = errors.New("stale transition")

func (s *Service) latestVersion(ctx context.Context, acct, name string) (*Version, error) {
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	return &Version{Account: acct, Generation: rec.Generation, Config: rec.Latest, CodeHex: rec.CodeHex, LayerHexes: rec.LayerHexes}, nil
}
