package control

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/codezip"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/store"
)

// FunctionInfo is what GetFunction reports; the API edge turns CodeHex into
// a signed download URL.
type FunctionInfo struct {
	Configuration *function.Config
	CodeHex       string
	Tags          map[string]string
	Reserved      *int
}

// codeLocks serialise puts of the same content. store.PutCode uploads an
// object that is not there yet and replaces one that is, purging the old
// chunks: two concurrent puts of one zip (two functions created from the
// same package at once) would both upload, and the later would purge the
// chunks an environment was reading to unpack the code, which then fails
// with a timeout. Once one put has finished, the others find the object
// and skip the upload. Striped by the first byte of the hash.
var codeLocks [256]sync.Mutex

// putCode stores a zip in the object store once (see codeLocks) and
// returns its object name.
func (s *Service) putCode(ctx context.Context, code *codeInfo) (string, error) {
	mu := &codeLocks[code.sum[0]]
	mu.Lock()
	defer mu.Unlock()
	name := hex.EncodeToString(code.sum[:])
	return name, s.st.PutCode(ctx, name, code.zip)
}

// codeInfo is a checked deployment package. Its SHA-256 is computed once:
// it is both CodeSha256 (base64) and the object name (hex).
type codeInfo struct {
	zip      []byte
	sum      [sha256.Size]byte
	sha64    string
	unzipped int64
}

func inspectZip(zip []byte) (*codeInfo, error) {
	info, err := codezip.Inspect(zip, codezip.Limits{MaxUnzipped: function.MaxUnzippedBytes})
	if err != nil {
		return nil, err
	}
	c := &codeInfo{zip: zip, sum: sha256.Sum256(zip), unzipped: info.UnzippedSize}
	c.sha64 = base64.StdEncoding.EncodeToString(c.sum[:])
	return c, nil
}

// resolvedLayers are a function's layers looked up by ARN.
type resolvedLayers struct {
	refs     []function.LayerRef
	hexes    []string
	unzipped int64
}

func (s *Service) resolveLayers(ctx context.Context, acct string, arns []string) (*resolvedLayers, error) {
	if len(arns) > function.MaxLayers {
		return nil, errdefs.InvalidParameter("Cannot reference more than %d layers.", function.MaxLayers)
	}
	out := &resolvedLayers{}
	for _, a := range arns {
		lv, err := s.layerVersionByArn(ctx, acct, a)
		if err != nil {
			return nil, err
		}
		out.refs = append(out.refs, function.LayerRef{Arn: lv.LayerVersionArn, CodeSize: lv.Content.CodeSize})
		out.hexes = append(out.hexes, lv.CodeHex)
		out.unzipped += lv.Unzipped
	}
	return out, nil
}

func checkTotalSize(code, layers int64) error {
	if total := code + layers; total > function.MaxUnzippedBytes {
		return errdefs.InvalidParameter("Function code combined with layers exceeds the maximum allowed size of %d bytes. The actual size is %d bytes.", function.MaxUnzippedBytes, total)
	}
	return nil
}

// CreateFunction creates a function in state Pending and returns its
// configuration (or version 1's, with Publish).
func (s *Service) CreateFunction(ctx context.Context, acct string, in *function.CreateInput) (*function.Config, error) {
	r, err := arn.ParseCreateFunctionName(in.FunctionName)
	if err != nil {
		return nil, err
	}
	if r.Qualifier != "" {
		return nil, errdefs.InvalidParameter("Unsupported FunctionName: function names in CreateFunction cannot carry a qualifier")
	}
	if (r.AccountID != "" && r.AccountID != acct) || (r.Region != "" && r.Region != s.opts.Region) {
		return nil, errdefs.InvalidParameter("The function ARN must name this account and region")
	}
	in.FunctionName = r.Name
	if in.Code == nil {
		return nil, errdefs.Validation("1 validation error detected: Value null at 'code' failed to satisfy constraint: Member must not be null")
	}
	cfg := function.NewConfig(in)
	if err := function.Validate(cfg, len(in.Layers)); err != nil {
		return nil, err
	}
	if err := s.checkRuntime(cfg.Runtime); err != nil {
		return nil, err
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	if err := function.CheckCodeSource(in.Code.ZipFile, in.Code.S3Bucket, in.Code.S3Key, in.Code.ImageUri); err != nil {
		return nil, err
	}
	code, err := inspectZip(in.Code.ZipFile)
	if err != nil {
		return nil, err
	}
	layers, err := s.resolveLayers(ctx, acct, in.Layers)
	if err != nil {
		return nil, err
	}
	if err := checkTotalSize(code.unzipped, layers.unzipped); err != nil {
		return nil, err
	}
	if _, _, err := s.load(ctx, acct, r.Name); err == nil {
		return nil, errdefs.Conflict("Function already exist: %s", r.Name)
	}
	hexName, err := s.putCode(ctx, code)
	if err != nil {
		return nil, err
	}
	cfg.FunctionArn = s.fnArn(acct, r.Name)
	cfg.CodeSha256 = code.sha64
	cfg.CodeSize = int64(len(code.zip))
	cfg.Layers = layers.refs
	cfg.LastModified = function.FormatTime(s.now())
	cfg.RevisionId = newRevision()
	cfg.State, cfg.StateReason, cfg.StateReasonCode = function.StatePending, "The function is being created.", "Creating"
	cfg.LastUpdateStatus = function.UpdateSuccessful
	rec := &record{
		Latest: *cfg, CodeHex: hexName, CodeUnzipped: code.unzipped, LayerHexes: layers.hexes,
		Generation: newRevision(), Tags: in.Tags,
	}
	if err := s.createRecord(ctx, acct, r.Name, rec); err != nil {
		return nil, err
	}
	if s.opts.OnChange != nil {
		s.opts.OnChange(acct, r.Name)
	}
	s.startTransition(acct, r.Name, rec.Generation)
	if in.Publish {
		v, err := s.publish(ctx, acct, r.Name, "", "", "", true)
		if err != nil {
			return nil, err
		}
		v.State, v.StateReason, v.StateReasonCode = cfg.State, cfg.StateReason, cfg.StateReasonCode
		return v, nil
	}
	return cfg, nil
}

// createRecord stores a new function's record. Versions of an earlier
// function of the same name may survive a crash during its deletion and must
// not leak into the new one, so they are purged first — but only once this
// request is sure to be the creator: a concurrent CreateFunction that lost
// the race would otherwise purge the winner's freshly published versions.
func (s *Service) createRecord(ctx context.Context, acct, name string, rec *record) error {
	mu := publishLock(acct, name)
	mu.Lock()
	defer mu.Unlock()
	if _, _, err := s.load(ctx, acct, name); err == nil {
		return errdefs.Conflict("Function already exist: %s", name)
	} else if !errdefs.Is(err, errdefs.KindNotFound) {
		return err
	}
	if err := s.purgeVersions(ctx, acct, name); err != nil {
		return err
	}
	rev, err := s.st.Create(ctx, fnKey(acct, name), rec)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return errdefs.Conflict("Function already exist: %s", name)
		}
		return err
	}
	s.cache.putWritten(fnKey(acct, name), rec, rev, acct)
	return nil
}

func (s *Service) purgeVersions(ctx context.Context, acct, name string) error {
	keys, err := s.st.Keys(ctx, verKey(acct, name, "*"))
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.st.Delete(ctx, k, 0); err != nil {
			return err
		}
	}
	s.cache.dropPrefix(verKey(acct, name, ""))
	return nil
}

// getVersion reads a published version.
func (s *Service) getVersion(ctx context.Context, acct, name, n string) (*Version, error) {
	var v Version
	if _, err := s.st.Get(ctx, verKey(acct, name, n), &v); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.notFound(acct, name, n)
		}
		return nil, err
	}
	return &v, nil
}

// Lookup returns the runnable version named by a qualifier: "" or $LATEST,
// a version number, or an alias (its primary version; weighted routing is
// the invoker's business, see Alias).
func (s *Service) Lookup(ctx context.Context, acct, name, q string) (*Version, *function.Alias, error) {
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, nil, s.namedAs(err, acct, name, q)
	}
	return s.lookupIn(ctx, rec, acct, name, q)
}

func (s *Service) lookupIn(ctx context.Context, rec *record, acct, name, q string) (*Version, *function.Alias, error) {
	return s.resolveIn(ctx, rec, acct, name, q, s.getVersion)
}

// resolveIn resolves q within rec, reading published versions with get.
func (s *Service) resolveIn(ctx context.Context, rec *record, acct, name, q string,
	get func(ctx context.Context, acct, name, n string) (*Version, error)) (*Version, *function.Alias, error) {
	switch {
	case q == "" || q == function.Latest:
		if rec.latest != nil {
			return rec.latest, nil, nil
		}
		return &Version{Account: acct, Generation: rec.Generation, Config: rec.Latest, CodeHex: rec.CodeHex, LayerHexes: rec.LayerHexes}, nil, nil
	case isVersionNumber(q):
		v, err := get(ctx, acct, name, q)
		return v, nil, err
	}
	al, ok := rec.Aliases[q]
	if !ok {
		return nil, nil, s.notFound(acct, name, q)
	}
	v, _, err := s.resolveIn(ctx, rec, acct, name, al.FunctionVersion, get)
	return v, al, err
}

func isVersionNumber(q string) bool {
	if q == "" || len(q) > 10 {
		return false
	}
	for _, c := range q {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ResolveName parses a FunctionName path value for the caller's account.
func (s *Service) ResolveName(acct, fn, qualifier string) (name, q string, err error) {
	return s.ref(acct, fn, qualifier)
}

// GetFunction implements GetFunction.
func (s *Service) GetFunction(ctx context.Context, acct, fn, qualifier string) (*FunctionInfo, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, s.namedAs(err, acct, name, q)
	}
	v, _, err := s.lookupIn(ctx, rec, acct, name, q)
	if err != nil {
		return nil, err
	}
	cfg := v.Config
	return &FunctionInfo{Configuration: &cfg, CodeHex: v.CodeHex, Tags: rec.Tags, Reserved: rec.Reserved}, nil
}

// GetFunctionConfiguration implements GetFunctionConfiguration.
func (s *Service) GetFunctionConfiguration(ctx context.Context, acct, fn, qualifier string) (*function.Config, error) {
	info, err := s.GetFunction(ctx, acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	return info.Configuration, nil
}

// UpdateFunctionCode implements UpdateFunctionCode.
func (s *Service) UpdateFunctionCode(ctx context.Context, acct, fn string, in *function.UpdateCodeInput) (*function.Config, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	if q != "" {
		return nil, errdefs.InvalidParameter("Qualifiers are not supported by UpdateFunctionCode")
	}
	if err := function.CheckCodeSource(in.ZipFile, in.S3Bucket, in.S3Key, in.ImageUri); err != nil {
		return nil, err
	}
	code, err := inspectZip(in.ZipFile)
	if err != nil {
		return nil, err
	}
	if len(in.Architectures) > 0 {
		probe := function.Config{Role: "arn:aws:iam::000000000000:role/x", Runtime: "provided", Handler: "x",
			MemorySize: function.MinMemory, Timeout: 1, EphemeralStorage: function.EphemeralStorage{Size: function.MinEphemeral},
			PackageType: function.PackageZip, Architectures: in.Architectures}
		if err := function.Validate(&probe, 0); err != nil {
			return nil, err
		}
	}
	if in.DryRun {
		rec, _, err := s.load(ctx, acct, name)
		if err != nil {
			return nil, err
		}
		if err := checkRevision(in.RevisionId, rec.Latest.RevisionId); err != nil {
			return nil, err
		}
		c := rec.Latest
		c.CodeSha256, c.CodeSize = code.sha64, int64(len(code.zip))
		return &c, nil
	}
	var layerUnzipped int64
	if rec, _, err := s.load(ctx, acct, name); err == nil {
		layerUnzipped = s.layersUnzipped(ctx, acct, rec.Latest.Layers)
	}
	if err := checkTotalSize(code.unzipped, layerUnzipped); err != nil {
		return nil, err
	}
	hexName, err := s.putCode(ctx, code)
	if err != nil {
		return nil, err
	}
	rec, err := s.mutate(ctx, acct, name, func(rec *record) error {
		if err := s.busy(rec); err != nil {
			return err
		}
		if err := checkRevision(in.RevisionId, rec.Latest.RevisionId); err != nil {
			return err
		}
		c := &rec.Latest
		c.CodeSha256, c.CodeSize = code.sha64, int64(len(code.zip))
		if len(in.Architectures) > 0 {
			c.Architectures = in.Architectures
		}
		rec.CodeHex, rec.CodeUnzipped = hexName, code.unzipped
		s.markUpdating(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.startTransition(acct, name, rec.Generation)
	if in.Publish {
		return s.publishAfterUpdate(ctx, acct, name)
	}
	return &rec.Latest, nil
}

func (s *Service) markUpdating(c *function.Config) {
	c.LastModified = function.FormatTime(s.now())
	c.RevisionId = newRevision()
	c.LastUpdateStatus = function.UpdateInProgress
	c.LastUpdateStatusReason = "The function is being created."
	c.LastUpdateStatusReasonCode = "Creating"
}

func (s *Service) layersUnzipped(ctx context.Context, acct string, refs []function.LayerRef) int64 {
	var n int64
	for _, l := range refs {
		if lv, err := s.layerVersionByArn(ctx, acct, l.Arn); err == nil {
			n += lv.Unzipped
		}
	}
	return n
}

// publishAfterUpdate waits for the update to settle, then publishes; used by
// Publish=true on updates.
func (s *Service) publishAfterUpdate(ctx context.Context, acct, name string) (*function.Config, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _, err := s.load(ctx, acct, name)
		if err != nil {
			return nil, err
		}
		if s.busy(rec) == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, errdefs.Conflict("The operation cannot be performed at this time. An update is in progress for resource: %s", rec.Latest.FunctionArn)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return s.publish(ctx, acct, name, "", "", "", false)
}

// UpdateFunctionConfiguration implements UpdateFunctionConfiguration.
func (s *Service) UpdateFunctionConfiguration(ctx context.Context, acct, fn string, in *function.UpdateConfigInput) (*function.Config, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	if q != "" {
		return nil, errdefs.InvalidParameter("Qualifiers are not supported by UpdateFunctionConfiguration")
	}
	var layers *resolvedLayers
	if in.Layers != nil {
		if layers, err = s.resolveLayers(ctx, acct, *in.Layers); err != nil {
			return nil, err
		}
	}
	rec, err := s.mutate(ctx, acct, name, func(rec *record) error {
		if err := s.busy(rec); err != nil {
			return err
		}
		if err := checkRevision(in.RevisionId, rec.Latest.RevisionId); err != nil {
			return err
		}
		n := in.Apply(&rec.Latest)
		layerCount := len(n.Layers)
		if layers != nil {
			n.Layers, layerCount = layers.refs, len(layers.refs)
			if err := checkTotalSize(rec.CodeUnzipped, layers.unzipped); err != nil {
				return err
			}
		}
		if err := function.Validate(n, layerCount); err != nil {
			return err
		}
		if in.Runtime != nil {
			if err := s.checkRuntime(n.Runtime); err != nil {
				return err
			}
		}
		s.markUpdating(n)
		rec.Latest = *n
		if layers != nil {
			rec.LayerHexes = layers.hexes
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.startTransition(acct, name, rec.Generation)
	return &rec.Latest, nil
}

// ListFunctions implements ListFunctions; all includes every published version.
func (s *Service) ListFunctions(ctx context.Context, acct, marker string, maxItems int, all bool) ([]function.Config, string, error) {
	keys, err := s.st.Keys(ctx, "fn."+acct+".*")
	if err != nil {
		return nil, "", err
	}
	sort.Strings(keys)
	var items []function.Config
	for _, k := range keys {
		_, name := splitFnKey(k)
		rec, _, err := s.load(ctx, acct, name)
		if err != nil {
			continue // deleted meanwhile
		}
		if !all {
			items = append(items, rec.Latest)
		} else {
			items = append(items, latestListed(rec.Latest))
			vs, err := s.versions(ctx, acct, name)
			if err != nil {
				return nil, "", err
			}
			for _, v := range vs {
				items = append(items, v.Config)
			}
		}
	}
	// NUL sorts before every name character, so "api" and its versions come
	// before "api-v2" in key order just as they do in the list.
	return paginate(items, marker, maxItems, func(c function.Config) string { return c.FunctionName + "\x00" + versionOrder(c.Version) })
}

// latestListed is $LATEST as a list of versions shows it (ListFunctions
// with FunctionVersion=ALL, ListVersionsByFunction): its ARN qualified
// with $LATEST, as every other version's is with its number (the AWS CLI
// reference's list-versions-by-function example; moto does the same).
// Everywhere else $LATEST goes by the unqualified ARN.
func latestListed(c function.Config) function.Config {
	c.FunctionArn += ":" + function.Latest
	return c
}

// versions returns a function's published versions in ascending order.
func (s *Service) versions(ctx context.Context, acct, name string) ([]*Version, error) {
	keys, err := s.st.Keys(ctx, verKey(acct, name, "*"))
	if err != nil {
		return nil, err
	}
	var out []*Version
	for _, k := range keys {
		var v Version
		if _, err := s.st.Get(ctx, k, &v); err == nil {
			out = append(out, &v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i].Config.Version)
		b, _ := strconv.Atoi(out[j].Config.Version)
		return a < b
	})
	return out, nil
}

// versionOrder is a version's position as a string that sorts like the
// version list: $LATEST first, then numbers in numeric order ("2" < "10").
func versionOrder(v string) string {
	if v == function.Latest {
		return ""
	}
	return fmt.Sprintf("%020s", v)
}

// paginate returns the page after marker. A marker is the opaque key of the
// last item of the previous page. Keys must ascend in list order: when the
// marker's item was deleted meanwhile, the page starts at the first key
// after it.
func paginate[T any](items []T, marker string, maxItems int, key func(T) string) ([]T, string, error) {
	if maxItems == 0 {
		maxItems = 50
	}
	start := 0
	if marker != "" {
		raw, err := base64.RawURLEncoding.DecodeString(marker)
		if err != nil {
			return nil, "", errdefs.InvalidParameter("Invalid marker: %s", marker)
		}
		start = -1
		for i, it := range items {
			if key(it) == string(raw) {
				start = i + 1
				break
			}
		}
		if start < 0 {
			// The item was deleted meanwhile: continue after where it sorted.
			start = sort.Search(len(items), func(i int) bool { return key(items[i]) > string(raw) })
		}
	}
	end := min(start+maxItems, len(items))
	page := items[start:end]
	next := ""
	if end < len(items) && len(page) > 0 {
		next = base64.RawURLEncoding.EncodeToString([]byte(key(page[len(page)-1])))
	}
	if page == nil {
		page = []T{}
	}
	return page, next, nil
}

// DeleteFunction deletes a function, or one published version of it.
func (s *Service) DeleteFunction(ctx context.Context, acct, fn, qualifier string) error {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return err
	}
	switch {
	case q == function.Latest:
		return errdefs.InvalidParameter("$LATEST version cannot be deleted without deleting the function.")
	case q != "" && !isVersionNumber(q):
		return errdefs.InvalidParameter("Deletion of aliases is not supported")
	case q != "":
		return s.deleteVersion(ctx, acct, name, q)
	}
	if err := s.deleteRecord(ctx, acct, name); err != nil {
		return err
	}
	if s.opts.OnChange != nil {
		s.opts.OnChange(acct, name)
	}
	return nil
}

// deleteRecord removes a function's record and then its version keys, under
// the function's publish lock: a create and publish of the same name must not
// slip in between and lose its versions to this purge.
func (s *Service) deleteRecord(ctx context.Context, acct, name string) error {
	mu := publishLock(acct, name)
	mu.Lock()
	defer mu.Unlock()
	var urls map[string]*URLConfig
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.load(ctx, acct, name)
		if err != nil {
			return err
		}
		err = s.st.Delete(ctx, fnKey(acct, name), rev)
		s.cache.drop(fnKey(acct, name))
		if errors.Is(err, store.ErrRevision) && attempt < 50 {
			continue
		}
		if err != nil {
			return err
		}
		urls = rec.URLs
		break
	}
	for _, c := range urls {
		s.dropURLIndex(ctx, c.ID)
	}
	return s.purgeVersions(ctx, acct, name)
}

func (s *Service) deleteVersion(ctx context.Context, acct, name, n string) error {
	if _, err := s.getVersion(ctx, acct, name, n); err != nil {
		return err
	}
	_, err := s.mutate(ctx, acct, name, func(rec *record) error {
		var users []string
		for an, al := range rec.Aliases {
			if al.FunctionVersion == n {
				users = append(users, an)
			} else if al.RoutingConfig != nil {
				if _, ok := al.RoutingConfig.AdditionalVersionWeights[n]; ok {
					users = append(users, an)
				}
			}
		}
		if len(users) > 0 {
			sort.Strings(users)
			return errdefs.Conflict("Unable to delete version because the following aliases reference it: [%s]", strings.Join(users, ", "))
		}
		delete(rec.VersionSizes, n)
		delete(rec.Provisioned, n)
		delete(rec.EventInvoke, n)
		delete(rec.Policies, n)
		return nil
	})
	if err != nil {
		return err
	}
	err = s.st.Delete(ctx, verKey(acct, name, n), 0)
	s.cache.drop(verKey(acct, name, n))
	return err
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Target is everything the invoker needs about a qualifier, read in one
// record load: the version to run, the alias it came through, the
// function's reserved concurrency.
type Target struct {
	// Name and Qualifier are the function name and qualifier the caller
	// named (from the ARN or the Qualifier parameter; "" when unqualified).
	Name, Qualifier string
	Version         *Version
	Alias           *function.Alias
	Reserved        *int
	// Routed lists the alias's additional version and its weight, resolved.
	Additional *Version
	Weight     float64
}

// InvokeTarget resolves a function name and qualifier for an invocation.
func (s *Service) InvokeTarget(ctx context.Context, acct, fn, qualifier string) (*Target, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	rec, err := s.cachedRecord(ctx, acct, name)
	if err != nil {
		return nil, s.namedAs(err, acct, name, q)
	}
	v, al, err := s.resolveIn(ctx, rec, acct, name, q, s.cachedVersion)
	if err != nil {
		return nil, err
	}
	t := &Target{Name: name, Qualifier: q, Version: v, Alias: al, Reserved: rec.Reserved}
	if al != nil && al.RoutingConfig != nil {
		for ver, w := range al.RoutingConfig.AdditionalVersionWeights {
			if add, err := s.cachedVersion(ctx, acct, name, ver); err == nil {
				t.Additional, t.Weight = add, w
			}
		}
	}
	return t, nil
}
