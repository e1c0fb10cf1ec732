package control

import (
	"context"
	"sort"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
)

// AliasInput is CreateAlias's and UpdateAlias's body.
type AliasInput struct {
	Name            string                  `json:"Name"`
	FunctionVersion *string                 `json:"FunctionVersion"`
	Description     *string                 `json:"Description"`
	RoutingConfig   *function.RoutingConfig `json:"RoutingConfig"`
	RevisionId      string                  `json:"RevisionId"`
}

func (s *Service) aliasArn(acct, name, alias string) string {
	return arn.Qualified(s.opts.Region, acct, name, alias)
}

// checkAliasTarget validates an alias's versions against the function.
func (s *Service) checkAliasTarget(ctx context.Context, acct, name, version string, rc *function.RoutingConfig) error {
	if version != function.Latest {
		if !isVersionNumber(version) {
			return errdefs.Validation("1 validation error detected: Value '%s' at 'functionVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)", version)
		}
		if _, err := s.getVersion(ctx, acct, name, version); err != nil {
			return err
		}
	}
	if rc == nil || len(rc.AdditionalVersionWeights) == 0 {
		return nil
	}
	if len(rc.AdditionalVersionWeights) > 1 {
		return errdefs.InvalidParameter("Number of items in AdditionalVersionWeights cannot be greater than 1")
	}
	for v, w := range rc.AdditionalVersionWeights {
		if w < 0 || w > 1 {
			return errdefs.Validation("1 validation error detected: Value '%v' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]", w)
		}
		if !isVersionNumber(v) {
			return errdefs.InvalidParameter("Invalid function version %s. Function version %s is not a published version.", v, v)
		}
		if version == function.Latest {
			return errdefs.InvalidParameter("$LATEST is not supported for an alias pointing to more than 1 version")
		}
		if v == version {
			return errdefs.InvalidParameter("Invalid function version %s. Function version %s is already included in routing configuration.", v, v)
		}
		if _, err := s.getVersion(ctx, acct, name, v); err != nil {
			return err
		}
	}
	return nil
}

// CreateAlias implements CreateAlias.
func (s *Service) CreateAlias(ctx context.Context, acct, fn string, in *AliasInput) (*function.Alias, error) {
	name, q, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	if q != "" {
		return nil, errdefs.InvalidParameter("Qualifiers are not supported by CreateAlias")
	}
	if !arn.ValidAliasName(in.Name) {
		return nil, errdefs.Validation("1 validation error detected: Value '%s' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)", in.Name)
	}
	if in.FunctionVersion == nil || *in.FunctionVersion == "" {
		return nil, errdefs.Validation("1 validation error detected: Value null at 'functionVersion' failed to satisfy constraint: Member must not be null")
	}
	if err := s.checkAliasTarget(ctx, acct, name, *in.FunctionVersion, in.RoutingConfig); err != nil {
		return nil, err
	}
	al := &function.Alias{
		AliasArn: s.aliasArn(acct, name, in.Name), Name: in.Name, FunctionVersion: *in.FunctionVersion,
		RoutingConfig: in.RoutingConfig, RevisionId: newRevision(),
	}
	if in.Description != nil {
		al.Description = *in.Description
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if _, ok := rec.Aliases[in.Name]; ok {
			return errdefs.Conflict("Alias already exists: %s", al.AliasArn)
		}
		if rec.Aliases == nil {
			rec.Aliases = map[string]*function.Alias{}
		}
		rec.Aliases[in.Name] = al
		return nil
	})
	if err != nil {
		return nil, err
	}
	return al, nil
}

func (s *Service) aliasNotFound(acct, name, alias string) error {
	return errdefs.NotFound("Alias not found: %s", s.aliasArn(acct, name, alias))
}

// GetAlias implements GetAlias.
func (s *Service) GetAlias(ctx context.Context, acct, fn, alias string) (*function.Alias, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, err
	}
	al, ok := rec.Aliases[alias]
	if !ok {
		return nil, s.aliasNotFound(acct, name, alias)
	}
	return al, nil
}

// UpdateAlias implements UpdateAlias.
func (s *Service) UpdateAlias(ctx context.Context, acct, fn, alias string, in *AliasInput) (*function.Alias, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, err
	}
	cur, err := s.GetAlias(ctx, acct, fn, alias)
	if err != nil {
		return nil, err
	}
	version, rc := cur.FunctionVersion, cur.RoutingConfig
	if in.FunctionVersion != nil {
		version = *in.FunctionVersion
	}
	if in.RoutingConfig != nil {
		rc = in.RoutingConfig
	}
	if err := s.checkAliasTarget(ctx, acct, name, version, rc); err != nil {
		return nil, err
	}
	var out *function.Alias
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		al, ok := rec.Aliases[alias]
		if !ok {
			return s.aliasNotFound(acct, name, alias)
		}
		if err := checkRevision(in.RevisionId, al.RevisionId); err != nil {
			return err
		}
		n := *al
		n.FunctionVersion = version
		n.RoutingConfig = rc
		if rc != nil && len(rc.AdditionalVersionWeights) == 0 {
			n.RoutingConfig = nil
		}
		if in.Description != nil {
			n.Description = *in.Description
		}
		n.RevisionId = newRevision()
		rec.Aliases[alias] = &n
		out = &n
		return nil
	})
	return out, err
}

// DeleteAlias implements DeleteAlias; deleting a missing alias succeeds.
func (s *Service) DeleteAlias(ctx context.Context, acct, fn, alias string) error {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return err
	}
	var url *URLConfig
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		url = rec.URLs[alias]
		delete(rec.Aliases, alias)
		delete(rec.Provisioned, alias)
		delete(rec.EventInvoke, alias)
		delete(rec.Policies, alias)
		delete(rec.URLs, alias)
		return nil
	})
	if err == nil && url != nil {
		s.dropURLIndex(ctx, url.ID)
	}
	return err
}

// ListAliases implements ListAliases, optionally only those pointing at version.
func (s *Service) ListAliases(ctx context.Context, acct, fn, version, marker string, maxItems int) ([]function.Alias, string, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, "", err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	var items []function.Alias
	for _, al := range rec.Aliases {
		if version == "" || al.FunctionVersion == version {
			items = append(items, *al)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	return paginate(items, marker, maxItems, func(a function.Alias) string { return a.Name })
}
