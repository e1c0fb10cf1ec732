package control

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
)

// minUnreserved is the share of the account limit AWS keeps unreserved.
const minUnreserved = 100

// PutFunctionConcurrency implements PutFunctionConcurrency.
func (s *Service) PutFunctionConcurrency(ctx context.Context, acct, fn string, n *int) (int, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return 0, err
	}
	if q != "" {
		return 0, errdefs.InvalidParameter("Reserved concurrency applies to a function, not to a version or alias")
	}
	if n == nil {
		return 0, errdefs.Validation("1 validation error detected: Value null at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must not be null")
	}
	if *n < 0 {
		return 0, errdefs.Validation("1 validation error detected: Value '%d' at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must have value greater than or equal to 0", *n)
	}
	// The rule spans every function of the account, so the check and the
	// write must not interleave with another function's: two concurrent
	// requests could each see room for themselves and together overcommit.
	mu := reserveLock(acct)
	mu.Lock()
	defer mu.Unlock()
	others, err := s.reservedTotal(ctx, acct, name)
	if err != nil {
		return 0, err
	}
	if s.opts.AccountConcurrency-others-*n < minUnreserved {
		return 0, errdefs.InvalidParameter("Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [%d].", minUnreserved)
	}
	v := *n
	_, err = s.mutate(ctx, acct, name, func(rec *record) error { rec.Reserved = &v; return nil })
	return v, err
}

// reserveLocks serialise reserved-concurrency changes per account inside
// this process (one nubo process writes an account's records, as for
// publishLocks).
var reserveLocks sync.Map // acct → *sync.Mutex

func reserveLock(acct string) *sync.Mutex {
	m, _ := reserveLocks.LoadOrStore(acct, &sync.Mutex{})
	return m.(*sync.Mutex)
}

// reservedTotal sums reserved concurrency over the account, except one function.
func (s *Service) reservedTotal(ctx context.Context, acct, except string) (int, error) {
	recs, err := s.allRecords(ctx, acct)
	if err != nil {
		return 0, err
	}
	total := 0
	for name, rec := range recs {
		if name != except && rec.Reserved != nil {
			total += *rec.Reserved
		}
	}
	return total, nil
}

func (s *Service) allRecords(ctx context.Context, acct string) (map[string]*record, error) {
	keys, err := s.st.Keys(ctx, "fn."+acct+".*")
	if err != nil {
		return nil, err
	}
	out := map[string]*record{}
	for _, k := range keys {
		_, name := splitFnKey(k)
		if rec, _, err := s.load(ctx, acct, name); err == nil {
			out[name] = rec
		}
	}
	return out, nil
}

// GetFunctionConcurrency returns the reserved concurrency, nil when unset.
func (s *Service) GetFunctionConcurrency(ctx context.Context, acct, fn string) (*int, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	return rec.Reserved, nil
}

// DeleteFunctionConcurrency implements DeleteFunctionConcurrency.
func (s *Service) DeleteFunctionConcurrency(ctx context.Context, acct, fn string) error {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return err
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error { rec.Reserved = nil; return nil })
	return err
}

// Provisioned concurrency statuses.
const (
	ProvisionedInProgress = "IN_PROGRESS"
	ProvisionedReady      = "READY"
	ProvisionedFailed     = "FAILED"
)

// Provisioned is AWS's provisioned-concurrency config of one qualifier.
type Provisioned struct {
	FunctionArn string `json:"FunctionArn,omitempty"`
	Requested   int    `json:"RequestedProvisionedConcurrentExecutions"`
	Available   int    `json:"AvailableProvisionedConcurrentExecutions"`
	Allocated   int    `json:"AllocatedProvisionedConcurrentExecutions"`
	Status      string `json:"Status"`
	Reason      string `json:"StatusReason,omitempty"`
	Modified    string `json:"LastModified"`
}

func (s *Service) provisionedRef(ctx context.Context, acct, fn, qualifier string) (string, string, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return "", "", err
	}
	if q == "" {
		return "", "", errdefs.Validation("1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null")
	}
	if q == function.Latest {
		return "", "", errdefs.InvalidParameter("Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
	}
	if _, _, err := s.Lookup(ctx, acct, name, q); err != nil {
		return "", "", err
	}
	return name, q, nil
}

// PutProvisionedConcurrencyConfig stores the config; the execution layer
// keeps that many environments of the version ready.
func (s *Service) PutProvisionedConcurrencyConfig(ctx context.Context, acct, fn, qualifier string, n int) (*Provisioned, error) {
	name, q, err := s.provisionedRef(ctx, acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, errdefs.Validation("1 validation error detected: Value '%d' at 'provisionedConcurrentExecutions' failed to satisfy constraint: Member must have value greater than or equal to 1", n)
	}
	p := &Provisioned{Requested: n, Status: ProvisionedInProgress, Modified: function.FormatTime(s.now())}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if rec.Reserved != nil && n > *rec.Reserved {
			return errdefs.InvalidParameter("Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function")
		}
		if rec.Provisioned == nil {
			rec.Provisioned = map[string]*Provisioned{}
		}
		rec.Provisioned[q] = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// GetProvisionedConcurrencyConfig implements GetProvisionedConcurrencyConfig.
func (s *Service) GetProvisionedConcurrencyConfig(ctx context.Context, acct, fn, qualifier string) (*Provisioned, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	p, ok := rec.Provisioned[q]
	if !ok {
		return nil, errdefs.New(errdefs.KindProvisionedNotFound, "No Provisioned Concurrency Config found for this function")
	}
	return p, nil
}

// DeleteProvisionedConcurrencyConfig implements DeleteProvisionedConcurrencyConfig.
func (s *Service) DeleteProvisionedConcurrencyConfig(ctx context.Context, acct, fn, qualifier string) error {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return err
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if _, ok := rec.Provisioned[q]; !ok {
			return errdefs.New(errdefs.KindProvisionedNotFound, "No Provisioned Concurrency Config found for this function")
		}
		delete(rec.Provisioned, q)
		return nil
	})
	return err
}

// ListProvisionedConcurrencyConfigs implements ListProvisionedConcurrencyConfigs.
func (s *Service) ListProvisionedConcurrencyConfigs(ctx context.Context, acct, fn, marker string, maxItems int) ([]Provisioned, string, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, "", err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	var items []Provisioned
	for q, p := range rec.Provisioned {
		c := *p
		c.FunctionArn = s.qualArn(acct, name, q)
		items = append(items, c)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].FunctionArn < items[j].FunctionArn })
	return paginate(items, marker, maxItems, func(p Provisioned) string { return p.FunctionArn })
}

// ProvisionedTarget is one provisioned-concurrency config, for the worker.
type ProvisionedTarget struct {
	Account, Name, Qualifier string
	Requested, Available     int
	Status                   string
}

// AllProvisioned lists every provisioned-concurrency config of every account.
func (s *Service) AllProvisioned(ctx context.Context) ([]ProvisionedTarget, error) {
	keys, err := s.st.Keys(ctx, "fn.*.*")
	if err != nil {
		return nil, err
	}
	var out []ProvisionedTarget
	for _, k := range keys {
		acct, name := splitFnKey(k)
		rec, _, err := s.load(ctx, acct, name)
		if err != nil {
			continue
		}
		for q, p := range rec.Provisioned {
			out = append(out, ProvisionedTarget{Account: acct, Name: name, Qualifier: q, Requested: p.Requested, Available: p.Available, Status: p.Status})
		}
	}
	return out, nil
}

// SetProvisionedStatus records how many environments of a provisioned
// config are ready (the worker reports it).
func (s *Service) SetProvisionedStatus(ctx context.Context, acct, name, q string, available int, status, reason string) error {
	_, err := s.mutate(ctx, acct, name, func(rec *record) error {
		p, ok := rec.Provisioned[q]
		if !ok {
			return errStale
		}
		if p.Available == available && p.Status == status && p.Reason == reason {
			return errStale
		}
		p.Available, p.Allocated, p.Status, p.Reason = available, available, status, reason
		return nil
	})
	if errors.Is(err, errStale) {
		return nil
	}
	return err
}

// EventInvoke is AWS's FunctionEventInvokeConfig. LastModified is an epoch
// number, unlike every other timestamp of the API.
type EventInvoke struct {
	LastModified             float64            `json:"LastModified"`
	FunctionArn              string             `json:"FunctionArn"`
	MaximumRetryAttempts     *int               `json:"MaximumRetryAttempts,omitempty"`
	MaximumEventAgeInSeconds *int               `json:"MaximumEventAgeInSeconds,omitempty"`
	DestinationConfig        *DestinationConfig `json:"DestinationConfig,omitempty"`
}

// DestinationConfig names where async results go.
type DestinationConfig struct {
	OnSuccess *Destination `json:"OnSuccess,omitempty"`
	OnFailure *Destination `json:"OnFailure,omitempty"`
}

// Destination is one target ARN.
type Destination struct {
	Destination string `json:"Destination,omitempty"`
}

// EventInvokeInput is the body of Put/UpdateFunctionEventInvokeConfig.
type EventInvokeInput struct {
	MaximumRetryAttempts     *int               `json:"MaximumRetryAttempts"`
	MaximumEventAgeInSeconds *int               `json:"MaximumEventAgeInSeconds"`
	DestinationConfig        *DestinationConfig `json:"DestinationConfig"`
}

func (s *Service) checkEventInvoke(acct string, in *EventInvokeInput) error {
	var v []string
	if r := in.MaximumRetryAttempts; r != nil && (*r < 0 || *r > 2) {
		bound := "less than or equal to 2"
		if *r < 0 {
			bound = "greater than or equal to 0"
		}
		v = append(v, "Value '"+itoa(*r)+"' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value "+bound)
	}
	if a := in.MaximumEventAgeInSeconds; a != nil && (*a < 60 || *a > 21600) {
		bound := "less than or equal to 21600"
		if *a < 60 {
			bound = "greater than or equal to 60"
		}
		v = append(v, "Value '"+itoa(*a)+"' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value "+bound)
	}
	if len(v) == 1 {
		return errdefs.Validation("1 validation error detected: %s", v[0])
	} else if len(v) > 1 {
		return errdefs.Validation("%d validation errors detected: %s", len(v), strings.Join(v, "; "))
	}
	if dc := in.DestinationConfig; dc != nil {
		for _, d := range []*Destination{dc.OnSuccess, dc.OnFailure} {
			if d == nil || d.Destination == "" {
				continue
			}
			r, err := arn.ParseFunction(d.Destination)
			if err != nil || !strings.HasPrefix(d.Destination, "arn:") {
				return errdefs.InvalidParameter("The destination ARN %s is invalid. nubo delivers to Lambda function ARNs only.", d.Destination)
			}
			if r.AccountID != acct {
				return errdefs.InvalidParameter("The destination ARN %s must name a function of this account.", d.Destination)
			}
		}
	}
	return nil
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func (s *Service) eventInvokeNotFound(acct, name, q string) error {
	return errdefs.NotFound("The function %s doesn't have an EventInvokeConfig", s.qualArn(acct, name, q))
}

// PutFunctionEventInvokeConfig replaces (replace=true, PUT) or merges into
// (POST, Update…) the event-invoke config of a qualifier.
func (s *Service) PutFunctionEventInvokeConfig(ctx context.Context, acct, fn, qualifier string, in *EventInvokeInput, replace bool) (*EventInvoke, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	// Looked up as the caller named it: a missing function is reported by
	// that ARN, not by the $LATEST the config is stored under.
	named := q
	if q == "" {
		q = function.Latest
	}
	if err := s.checkEventInvoke(acct, in); err != nil {
		return nil, err
	}
	if _, _, err := s.Lookup(ctx, acct, name, named); err != nil {
		return nil, err
	}
	var out *EventInvoke
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		cur, ok := rec.EventInvoke[q]
		if !replace && !ok {
			return s.eventInvokeNotFound(acct, name, q)
		}
		n := &EventInvoke{}
		if !replace {
			c := *cur
			n = &c
		}
		if in.MaximumRetryAttempts != nil || replace {
			n.MaximumRetryAttempts = in.MaximumRetryAttempts
		}
		if in.MaximumEventAgeInSeconds != nil || replace {
			n.MaximumEventAgeInSeconds = in.MaximumEventAgeInSeconds
		}
		if in.DestinationConfig != nil || replace {
			n.DestinationConfig = in.DestinationConfig
		}
		if n.DestinationConfig == nil {
			n.DestinationConfig = &DestinationConfig{}
		}
		n.FunctionArn = s.qualArn(acct, name, q)
		n.LastModified = float64(s.now().UnixMilli()) / 1000
		if rec.EventInvoke == nil {
			rec.EventInvoke = map[string]*EventInvoke{}
		}
		rec.EventInvoke[q] = n
		out = n
		return nil
	})
	return out, err
}

// GetFunctionEventInvokeConfig implements GetFunctionEventInvokeConfig.
func (s *Service) GetFunctionEventInvokeConfig(ctx context.Context, acct, fn, qualifier string) (*EventInvoke, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	if q == "" {
		q = function.Latest
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	ei, ok := rec.EventInvoke[q]
	if !ok {
		return nil, s.eventInvokeNotFound(acct, name, q)
	}
	return ei, nil
}

// DeleteFunctionEventInvokeConfig implements DeleteFunctionEventInvokeConfig.
func (s *Service) DeleteFunctionEventInvokeConfig(ctx context.Context, acct, fn, qualifier string) error {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return err
	}
	if q == "" {
		q = function.Latest
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if _, ok := rec.EventInvoke[q]; !ok {
			return s.eventInvokeNotFound(acct, name, q)
		}
		delete(rec.EventInvoke, q)
		return nil
	})
	return err
}

// ListFunctionEventInvokeConfigs implements ListFunctionEventInvokeConfigs.
func (s *Service) ListFunctionEventInvokeConfigs(ctx context.Context, acct, fn, marker string, maxItems int) ([]EventInvoke, string, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, "", err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	var items []EventInvoke
	for _, ei := range rec.EventInvoke {
		items = append(items, *ei)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].FunctionArn < items[j].FunctionArn })
	return paginate(items, marker, maxItems, func(e EventInvoke) string { return e.FunctionArn })
}

// EventInvokeFor returns the effective event-invoke config of a qualifier
// (nil when none is set), for the async invoker.
func (s *Service) EventInvokeFor(ctx context.Context, acct, name, q string) (*EventInvoke, error) {
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	if q == "" {
		q = function.Latest
	}
	return rec.EventInvoke[q], nil
}

// checkTags applies AWS's tag limits.
func checkTags(tags map[string]string) error {
	if len(tags) > 50 {
		return errdefs.InvalidParameter("Number of tags exceeds resource tag limit.")
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || len(v) > 256 {
			return errdefs.InvalidParameter("Invalid tag: keys must be 1-128 and values at most 256 characters")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return errdefs.InvalidParameter("Tag keys starting with 'aws:' are reserved for system use")
		}
	}
	return nil
}

// tagTarget resolves a tag API resource, which must be an unqualified
// function ARN (arn.ParseResource words the refusals as AWS does).
func (s *Service) tagTarget(acct, resource string) (string, error) {
	r, err := arn.ParseResource(resource)
	if err != nil {
		return "", err
	}
	if r.AccountID != acct || r.Region != s.opts.Region {
		return "", errdefs.NotFound("Function not found: %s", resource)
	}
	return r.Name, nil
}

// TagResource implements TagResource.
func (s *Service) TagResource(ctx context.Context, acct, resource string, tags map[string]string) error {
	name, err := s.tagTarget(acct, resource)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		return errdefs.Validation("1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		merged := map[string]string{}
		for k, v := range rec.Tags {
			merged[k] = v
		}
		for k, v := range tags {
			merged[k] = v
		}
		if err := checkTags(merged); err != nil {
			return err
		}
		rec.Tags = merged
		return nil
	})
	return err
}

// UntagResource implements UntagResource.
func (s *Service) UntagResource(ctx context.Context, acct, resource string, keys []string) error {
	name, err := s.tagTarget(acct, resource)
	if err != nil {
		return err
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		for _, k := range keys {
			delete(rec.Tags, k)
		}
		return nil
	})
	return err
}

// ListTags implements ListTags.
func (s *Service) ListTags(ctx context.Context, acct, resource string) (map[string]string, error) {
	name, err := s.tagTarget(acct, resource)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	if rec.Tags == nil {
		return map[string]string{}, nil
	}
	return rec.Tags, nil
}

// AccountSettings is GetAccountSettings's response.
type AccountSettings struct {
	AccountLimit struct {
		TotalCodeSize                  int64 `json:"TotalCodeSize"`
		CodeSizeUnzipped               int64 `json:"CodeSizeUnzipped"`
		CodeSizeZipped                 int64 `json:"CodeSizeZipped"`
		ConcurrentExecutions           int   `json:"ConcurrentExecutions"`
		UnreservedConcurrentExecutions int   `json:"UnreservedConcurrentExecutions"`
	} `json:"AccountLimit"`
	AccountUsage struct {
		TotalCodeSize int64 `json:"TotalCodeSize"`
		FunctionCount int64 `json:"FunctionCount"`
	} `json:"AccountUsage"`
}

// GetAccountSettings reports the account's limits and real usage: code size
// sums every function's $LATEST, published versions and layer versions.
func (s *Service) GetAccountSettings(ctx context.Context, acct string) (*AccountSettings, error) {
	recs, err := s.allRecords(ctx, acct)
	if err != nil {
		return nil, err
	}
	out := &AccountSettings{}
	out.AccountLimit.TotalCodeSize = 80530636800
	out.AccountLimit.CodeSizeUnzipped = function.MaxUnzippedBytes
	out.AccountLimit.CodeSizeZipped = function.MaxZippedBytes
	out.AccountLimit.ConcurrentExecutions = s.opts.AccountConcurrency
	reserved := 0
	for _, rec := range recs {
		out.AccountUsage.FunctionCount++
		out.AccountUsage.TotalCodeSize += rec.Latest.CodeSize
		for _, sz := range rec.VersionSizes {
			out.AccountUsage.TotalCodeSize += sz
		}
		if rec.Reserved != nil {
			reserved += *rec.Reserved
		}
	}
	out.AccountLimit.UnreservedConcurrentExecutions = s.opts.AccountConcurrency - reserved
	keys, err := s.st.Keys(ctx, "layer."+acct+".*")
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		var lr layerRecord
		if _, err := s.st.Get(ctx, k, &lr); err == nil {
			for _, v := range lr.Versions {
				out.AccountUsage.TotalCodeSize += v.Content.CodeSize
			}
		}
	}
	if keys, err = s.st.Keys(ctx, "layer."+acct+".*.*"); err != nil {
		return nil, err
	}
	for _, k := range keys {
		var sl storedLayer
		if _, err := s.st.Get(ctx, k, &sl); err == nil {
			out.AccountUsage.TotalCodeSize += sl.Content.CodeSize
		}
	}
	return out, nil
}
