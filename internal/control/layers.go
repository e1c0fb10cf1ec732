package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/store"
)

// LayerVersion is AWS's GetLayerVersionResponse plus nubo's bookkeeping.
type LayerVersion struct {
	Content                 *LayerContent `json:"Content,omitempty"`
	LayerArn                string        `json:"LayerArn"`
	LayerVersionArn         string        `json:"LayerVersionArn"`
	Description             string        `json:"Description"`
	CreatedDate             string        `json:"CreatedDate"`
	Version                 int64         `json:"Version"`
	CompatibleRuntimes      []string      `json:"CompatibleRuntimes,omitempty"`
	LicenseInfo             string        `json:"LicenseInfo,omitempty"`
	CompatibleArchitectures []string      `json:"CompatibleArchitectures,omitempty"`

	CodeHex  string `json:"-"`
	Unzipped int64  `json:"-"`
}

// LayerContent is where a layer version's zip is.
type LayerContent struct {
	Location   string `json:"Location,omitempty"`
	CodeSha256 string `json:"CodeSha256"`
	CodeSize   int64  `json:"CodeSize"`
}

// layerRecord is a layer's head: the last version number given out (never
// reused). Each version is a record of its own (layerVersionKey), so a
// layer takes any number of versions: held in one record, they outgrew the
// store's largest value after about 2500 publishes and every later one
// failed. Versions holds those of data written before that change, read
// and deleted as before but never added to.
type layerRecord struct {
	LastVersion int64                   `json:"lastVersion"`
	Versions    map[string]*storedLayer `json:"versions,omitempty"`
}

// storedLayer keeps the fields LayerVersion hides from JSON.
type storedLayer struct {
	LayerVersion
	Hex      string `json:"codeHex"`
	Unzipped int64  `json:"unzipped"`
}

func (sl *storedLayer) view() *LayerVersion {
	lv := sl.LayerVersion
	lv.CodeHex, lv.Unzipped = sl.Hex, sl.Unzipped
	return &lv
}

func layerKey(acct, name string) string { return "layer." + acct + "." + name }

// layerVersionKey is where version n of a layer is stored: one token more
// than the heads, so the filter "layer.<acct>.*" lists heads only (names
// have no dots).
func layerVersionKey(acct, name string, n int64) string {
	return layerKey(acct, name) + "." + strconv.FormatInt(n, 10)
}

// isLayerVersionKey tells a version's key from a head's.
func isLayerVersionKey(k string) bool { return strings.Count(k, ".") == 3 }

// PublishLayerInput is PublishLayerVersion's body.
type PublishLayerInput struct {
	Description             string         `json:"Description"`
	Content                 *function.Code `json:"Content"`
	CompatibleRuntimes      []string       `json:"CompatibleRuntimes"`
	LicenseInfo             string         `json:"LicenseInfo"`
	CompatibleArchitectures []string       `json:"CompatibleArchitectures"`
}

func (s *Service) layerName(acct, raw string) (string, error) {
	region, a, name, err := arn.ParseLayerName(raw)
	if err != nil {
		return "", err
	}
	if (a != "" && a != acct) || (region != "" && region != s.opts.Region) {
		return "", errdefs.NotFound("Layer not found: %s", raw)
	}
	return name, nil
}

// PublishLayerVersion implements PublishLayerVersion.
func (s *Service) PublishLayerVersion(ctx context.Context, acct, layer string, in *PublishLayerInput) (*LayerVersion, error) {
	name, err := s.layerName(acct, layer)
	if err != nil {
		return nil, err
	}
	if in.Content == nil {
		return nil, errdefs.Validation("1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null")
	}
	if len(in.CompatibleRuntimes) > 15 {
		return nil, errdefs.Validation("1 validation error detected: Value at 'compatibleRuntimes' failed to satisfy constraint: Member must have length less than or equal to 15")
	}
	for _, r := range in.CompatibleRuntimes {
		if !function.KnownRuntime(r) {
			return nil, errdefs.Validation("1 validation error detected: Value '[%s]' at 'compatibleRuntimes' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: %v]", r, function.Runtimes)
		}
	}
	if err := function.CheckCodeSource(in.Content.ZipFile, in.Content.S3Bucket, in.Content.S3Key, in.Content.ImageUri); err != nil {
		return nil, err
	}
	code, err := inspectZip(in.Content.ZipFile)
	if err != nil {
		return nil, err
	}
	hexName, err := s.putCode(ctx, code)
	if err != nil {
		return nil, err
	}
	n, err := s.nextLayerVersion(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	sl := &storedLayer{LayerVersion: LayerVersion{
		Content:                 &LayerContent{CodeSha256: code.sha64, CodeSize: int64(len(code.zip))},
		LayerArn:                arn.Layer(s.opts.Region, acct, name),
		LayerVersionArn:         arn.LayerVersion(s.opts.Region, acct, name, n),
		Description:             in.Description,
		CreatedDate:             function.FormatTime(s.now()),
		Version:                 n,
		CompatibleRuntimes:      in.CompatibleRuntimes,
		LicenseInfo:             in.LicenseInfo,
		CompatibleArchitectures: in.CompatibleArchitectures,
	}, Hex: hexName, Unzipped: code.unzipped}
	// The number is this call's alone: a crash before this write leaves a
	// gap, as AWS's numbering may.
	if _, err := s.st.Create(ctx, layerVersionKey(acct, name, n), sl); err != nil {
		return nil, err
	}
	return sl.view(), nil
}

// nextLayerVersion takes the layer's next version number.
func (s *Service) nextLayerVersion(ctx context.Context, acct, name string) (int64, error) {
	key := layerKey(acct, name)
	for attempt := 0; attempt < 50; attempt++ {
		var rec layerRecord
		rev, err := s.st.Get(ctx, key, &rec)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		rec.LastVersion++
		if rev == 0 {
			_, err = s.st.Create(ctx, key, &rec)
		} else {
			_, err = s.st.Update(ctx, key, &rec, rev)
		}
		if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrRevision) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return rec.LastVersion, nil
	}
	return 0, errdefs.New(errdefs.KindThrottled, "Too many concurrent publishes of layer %s", name)
}

func (s *Service) layerNotFound() error {
	return errdefs.NotFound("The resource you requested does not exist.")
}

// GetLayerVersion implements GetLayerVersion.
func (s *Service) GetLayerVersion(ctx context.Context, acct, layer string, version int64) (*LayerVersion, error) {
	name, err := s.layerName(acct, layer)
	if err != nil {
		return nil, err
	}
	var sl storedLayer
	_, err = s.st.Get(ctx, layerVersionKey(acct, name, version), &sl)
	if err == nil {
		return sl.view(), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	var rec layerRecord
	if _, err := s.st.Get(ctx, layerKey(acct, name), &rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.layerNotFound()
		}
		return nil, err
	}
	old, ok := rec.Versions[strconv.FormatInt(version, 10)]
	if !ok {
		return nil, s.layerNotFound()
	}
	return old.view(), nil
}

// GetLayerVersionByArn implements GetLayerVersionByArn.
func (s *Service) GetLayerVersionByArn(ctx context.Context, acct, a string) (*LayerVersion, error) {
	ref, err := arn.ParseLayerVersion(a)
	if err != nil {
		return nil, err
	}
	if ref.AccountID != acct || ref.Region != s.opts.Region {
		return nil, s.layerNotFound()
	}
	return s.GetLayerVersion(ctx, acct, ref.Name, ref.Version)
}

// layerVersionByArn resolves a function's layer reference.
func (s *Service) layerVersionByArn(ctx context.Context, acct, a string) (*LayerVersion, error) {
	lv, err := s.GetLayerVersionByArn(ctx, acct, a)
	if errdefs.Is(err, errdefs.KindNotFound) || errdefs.Is(err, errdefs.KindValidation) {
		return nil, errdefs.InvalidParameter("Layer version %s does not exist.", a)
	}
	return lv, err
}

// DeleteLayerVersion implements DeleteLayerVersion (idempotent). Functions
// already using the version keep working: their code is kept by hash.
func (s *Service) DeleteLayerVersion(ctx context.Context, acct, layer string, version int64) error {
	name, err := s.layerName(acct, layer)
	if err != nil {
		return err
	}
	// Deleted only if there: a delete of a key that never was would still
	// leave a marker in the store, one per number anybody asks to delete.
	var sl storedLayer
	if rev, err := s.st.Get(ctx, layerVersionKey(acct, name, version), &sl); err == nil {
		if err := s.st.Delete(ctx, layerVersionKey(acct, name, version), rev); err != nil && !errors.Is(err, store.ErrRevision) {
			return err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	key := layerKey(acct, name)
	for attempt := 0; attempt < 50; attempt++ {
		var rec layerRecord
		rev, err := s.st.Get(ctx, key, &rec)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v := strconv.FormatInt(version, 10)
		if _, ok := rec.Versions[v]; !ok {
			return nil
		}
		delete(rec.Versions, v)
		_, err = s.st.Update(ctx, key, &rec, rev)
		if errors.Is(err, store.ErrRevision) {
			continue
		}
		return err
	}
	return errdefs.New(errdefs.KindThrottled, "Too many concurrent changes to layer %s", name)
}

// LayerListItem is one entry of ListLayers.
type LayerListItem struct {
	LayerName             string        `json:"LayerName"`
	LayerArn              string        `json:"LayerArn"`
	LatestMatchingVersion *LayerVersion `json:"LatestMatchingVersion"`
}

func layerMatches(lv *LayerVersion, runtime, archi string) bool {
	okR, okA := runtime == "", archi == ""
	for _, r := range lv.CompatibleRuntimes {
		okR = okR || r == runtime
	}
	for _, a := range lv.CompatibleArchitectures {
		okA = okA || a == archi
	}
	return okR && okA
}

// layerVersions returns the layer's versions that match, newest first; at
// most limit of them when limit > 0.
func (s *Service) layerVersions(ctx context.Context, acct, name, runtime, archi string, limit int) ([]*LayerVersion, error) {
	var rec layerRecord
	if _, err := s.st.Get(ctx, layerKey(acct, name), &rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	keys, err := s.st.Keys(ctx, layerKey(acct, name)+".*")
	if err != nil {
		return nil, err
	}
	// Versions of the old layout come from the head read above; the
	// others are read one by one, newest first, as far as needed.
	type ver struct {
		n   int64
		old *storedLayer
	}
	vers := make([]ver, 0, len(keys)+len(rec.Versions))
	for _, k := range keys {
		if n, err := strconv.ParseInt(k[strings.LastIndexByte(k, '.')+1:], 10, 64); err == nil {
			vers = append(vers, ver{n: n})
		}
	}
	for v, sl := range rec.Versions {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			vers = append(vers, ver{n: n, old: sl})
		}
	}
	sort.Slice(vers, func(i, j int) bool { return vers[i].n > vers[j].n })
	var out []*LayerVersion
	for _, v := range vers {
		var lv *LayerVersion
		if v.old != nil {
			lv = v.old.view()
		} else {
			var sl storedLayer
			_, err := s.st.Get(ctx, layerVersionKey(acct, name, v.n), &sl)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			lv = sl.view()
		}
		if layerMatches(lv, runtime, archi) {
			out = append(out, lv)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// ListLayers implements ListLayers: each layer with its newest matching version.
func (s *Service) ListLayers(ctx context.Context, acct, runtime, archi, marker string, maxItems int) ([]LayerListItem, string, error) {
	keys, err := s.st.Keys(ctx, "layer."+acct+".*")
	if err != nil {
		return nil, "", err
	}
	sort.Strings(keys)
	var items []LayerListItem
	for _, k := range keys {
		name := k[len("layer.")+13:]
		vs, err := s.layerVersions(ctx, acct, name, runtime, archi, 1)
		if err != nil {
			return nil, "", err
		}
		if len(vs) == 0 {
			continue
		}
		items = append(items, LayerListItem{LayerName: name, LayerArn: vs[0].LayerArn, LatestMatchingVersion: vs[0]})
	}
	return paginate(items, marker, maxItems, func(i LayerListItem) string { return i.LayerName })
}

// ListLayerVersions implements ListLayerVersions, newest first.
func (s *Service) ListLayerVersions(ctx context.Context, acct, layer, runtime, archi, marker string, maxItems int) ([]*LayerVersion, string, error) {
	name, err := s.layerName(acct, layer)
	if err != nil {
		return nil, "", err
	}
	vs, err := s.layerVersions(ctx, acct, name, runtime, archi, 0)
	if err != nil {
		return nil, "", err
	}
	// Newest first, so the key counts down: padded MaxInt64 - version.
	return paginate(vs, marker, maxItems, func(l *LayerVersion) string {
		return fmt.Sprintf("%019d", math.MaxInt64-l.Version)
	})
}
