package control

import (
	"context"
	"crypto/rand"
	"errors"
	"sort"
	"strings"

	"github.com/nubo-dev/nubo/internal/arn"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
	"github.com/nubo-dev/nubo/internal/store"
)

// Function URLs: at most one per function (unqualified, it invokes
// $LATEST) and one per alias, kept in the function's record. Each has an
// id of 32 lowercase letters and digits, as AWS's have, and an index key
// url.<id> that names the function, so a request to the URL finds it
// without scanning. An index key that outlived its URL (the function was
// deleted and made again) is told apart by the record's generation and
// the id it holds.

// Function URL auth types and invoke modes.
const (
	URLAuthNone       = "NONE"
	URLAuthIAM        = "AWS_IAM"
	URLBuffered       = "BUFFERED"
	URLResponseStream = "RESPONSE_STREAM"
)

// URLConfig is a function URL's configuration.
type URLConfig struct {
	ID         string `json:"id"`
	AuthType   string `json:"authType"`
	Cors       *Cors  `json:"cors,omitempty"`
	InvokeMode string `json:"invokeMode"`
	Created    string `json:"created"`
	Modified   string `json:"modified"`
}

// Cors is a function URL's CORS configuration, as the API spells it.
type Cors struct {
	AllowCredentials *bool    `json:"AllowCredentials,omitempty"`
	AllowHeaders     []string `json:"AllowHeaders,omitempty"`
	AllowMethods     []string `json:"AllowMethods,omitempty"`
	AllowOrigins     []string `json:"AllowOrigins,omitempty"`
	ExposeHeaders    []string `json:"ExposeHeaders,omitempty"`
	MaxAge           *int     `json:"MaxAge,omitempty"`
}

// URLInput is CreateFunctionUrlConfig's and UpdateFunctionUrlConfig's body.
type URLInput struct {
	AuthType   *string `json:"AuthType"`
	Cors       *Cors   `json:"Cors"`
	InvokeMode *string `json:"InvokeMode"`
}

// URL is one function URL with what it belongs to.
type URL struct {
	Account     string
	Function    string
	Qualifier   string // "" for the function itself
	FunctionArn string
	Config      URLConfig
	// Public says a resource-based policy lets anyone invoke the URL
	// without signing (set by ResolveURL): an AuthType NONE URL answers
	// only then, as on AWS.
	Public bool
}

// urlIndex is the value of url.<id>.
type urlIndex struct {
	Account    string `json:"account"`
	Function   string `json:"function"`
	Qualifier  string `json:"qualifier"`
	Generation string `json:"generation"`
}

func urlKey(id string) string { return "url." + id }

// newURLID draws a function URL id: 32 of [a-z0-9].
func newURLID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 32)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// ValidURLID says whether id has the shape of a function URL id.
func ValidURLID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// urlRef resolves a function URL operation's function and qualifier: an
// alias must exist.
func (s *Service) urlRef(ctx context.Context, acct, fn, qualifier string) (name, q string, rec *record, err error) {
	name, q, err = s.refShape(acct, fn, qualifier, arn.QualifierFunctionURL)
	if err != nil {
		return "", "", nil, err
	}
	if rec, _, err = s.load(ctx, acct, name); err != nil {
		return "", "", nil, err
	}
	if q != "" {
		if _, ok := rec.Aliases[q]; !ok {
			return "", "", nil, s.aliasNotFound(acct, name, q)
		}
	}
	return name, q, rec, nil
}

func (s *Service) urlArn(acct, name, q string) string {
	if q == "" {
		return arn.Function(s.opts.Region, acct, name)
	}
	return arn.Qualified(s.opts.Region, acct, name, q)
}

func validateURLInput(in *URLInput, create bool) error {
	if in.AuthType == nil && create {
		return errdefs.Validation("1 validation error detected: Value null at 'authType' failed to satisfy constraint: Member must not be null")
	}
	if in.AuthType != nil && *in.AuthType != URLAuthNone && *in.AuthType != URLAuthIAM {
		return errdefs.Validation("1 validation error detected: Value '%s' at 'authType' failed to satisfy constraint: Member must satisfy enum value set: [NONE, AWS_IAM]", *in.AuthType)
	}
	if in.InvokeMode != nil && *in.InvokeMode != URLBuffered && *in.InvokeMode != URLResponseStream {
		return errdefs.Validation("1 validation error detected: Value '%s' at 'invokeMode' failed to satisfy constraint: Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]", *in.InvokeMode)
	}
	if c := in.Cors; c != nil {
		if c.MaxAge != nil && (*c.MaxAge < 0 || *c.MaxAge > 86400) {
			return errdefs.Validation("1 validation error detected: Value '%d' at 'cors.maxAge' failed to satisfy constraint: Member must have value less than or equal to 86400", *c.MaxAge)
		}
		for _, m := range c.AllowMethods {
			if len(m) > 6 || strings.TrimSpace(m) == "" {
				return errdefs.Validation("1 validation error detected: Value '[%s]' at 'cors.allowMethods' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 6]", m)
			}
		}
		if len(c.AllowOrigins) > 100 || len(c.AllowHeaders) > 100 || len(c.ExposeHeaders) > 100 || len(c.AllowMethods) > 6 {
			return errdefs.Validation("1 validation error detected: Value at 'cors' failed to satisfy constraint: Member must have length less than or equal to 100")
		}
	}
	return nil
}

// CreateFunctionURL implements CreateFunctionUrlConfig.
func (s *Service) CreateFunctionURL(ctx context.Context, acct, fn, qualifier string, in *URLInput) (*URL, error) {
	if err := validateURLInput(in, true); err != nil {
		return nil, err
	}
	name, q, rec, err := s.urlRef(ctx, acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	now := function.FormatTime(s.now())
	c := URLConfig{ID: newURLID(), AuthType: *in.AuthType, Cors: in.Cors, InvokeMode: URLBuffered, Created: now, Modified: now}
	if in.InvokeMode != nil {
		c.InvokeMode = *in.InvokeMode
	}
	// The index goes first, then the record, whose compare-and-set write
	// is the one that counts: a deletion that commits after it sees the
	// URL and drops the index; one before it makes the write fail, and
	// the index goes again. A crash in between leaves an index that
	// resolves to nothing.
	idx := urlIndex{Account: acct, Function: name, Qualifier: q, Generation: rec.Generation}
	if err := s.st.Put(ctx, urlKey(c.ID), idx); err != nil {
		return nil, err
	}
	wrote, err := s.mutate(ctx, acct, name, func(rec *record) error {
		if _, ok := rec.URLs[q]; ok {
			return errdefs.Conflict("Failed to create function url config for [functionArn = %s]. Error message:  FunctionUrlConfig exists for this Lambda function", s.urlArn(acct, name, q))
		}
		if q != "" {
			if _, ok := rec.Aliases[q]; !ok {
				return s.aliasNotFound(acct, name, q)
			}
		}
		if rec.URLs == nil {
			rec.URLs = map[string]*URLConfig{}
		}
		cc := c
		rec.URLs[q] = &cc
		return nil
	})
	if err != nil {
		s.dropURLIndex(ctx, c.ID)
		return nil, err
	}
	// The function was made anew meanwhile (the first read was of the
	// one before): the URL is the new one's.
	if wrote.Generation != idx.Generation {
		idx.Generation = wrote.Generation
		if err := s.st.Put(ctx, urlKey(c.ID), idx); err != nil {
			return nil, err
		}
	}
	return &URL{Account: acct, Function: name, Qualifier: q, FunctionArn: s.urlArn(acct, name, q), Config: c}, nil
}

func (s *Service) urlNotFound() error {
	return errdefs.NotFound("The resource you requested does not exist.")
}

// GetFunctionURL implements GetFunctionUrlConfig.
func (s *Service) GetFunctionURL(ctx context.Context, acct, fn, qualifier string) (*URL, error) {
	name, q, rec, err := s.urlRef(ctx, acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	c, ok := rec.URLs[q]
	if !ok {
		return nil, s.urlNotFound()
	}
	return &URL{Account: acct, Function: name, Qualifier: q, FunctionArn: s.urlArn(acct, name, q), Config: *c}, nil
}

// UpdateFunctionURL implements UpdateFunctionUrlConfig: what the input
// names changes, the rest stays.
func (s *Service) UpdateFunctionURL(ctx context.Context, acct, fn, qualifier string, in *URLInput) (*URL, error) {
	if err := validateURLInput(in, false); err != nil {
		return nil, err
	}
	name, q, _, err := s.urlRef(ctx, acct, fn, qualifier)
	if err != nil {
		return nil, err
	}
	var out URLConfig
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		cur, ok := rec.URLs[q]
		if !ok {
			return s.urlNotFound()
		}
		n := *cur
		if in.AuthType != nil {
			n.AuthType = *in.AuthType
		}
		if in.InvokeMode != nil {
			n.InvokeMode = *in.InvokeMode
		}
		if in.Cors != nil {
			n.Cors = in.Cors
		}
		n.Modified = function.FormatTime(s.now())
		rec.URLs[q] = &n
		out = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &URL{Account: acct, Function: name, Qualifier: q, FunctionArn: s.urlArn(acct, name, q), Config: out}, nil
}

// DeleteFunctionURL implements DeleteFunctionUrlConfig.
func (s *Service) DeleteFunctionURL(ctx context.Context, acct, fn, qualifier string) error {
	name, q, _, err := s.urlRef(ctx, acct, fn, qualifier)
	if err != nil {
		return err
	}
	var id string
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		c, ok := rec.URLs[q]
		if !ok {
			return s.urlNotFound()
		}
		id = c.ID
		delete(rec.URLs, q)
		return nil
	})
	if err != nil {
		return err
	}
	s.dropURLIndex(ctx, id)
	return nil
}

// dropURLIndex removes a URL's index key; a failure leaves a key that
// resolves to nothing (see ResolveURL).
func (s *Service) dropURLIndex(ctx context.Context, id string) {
	var idx urlIndex
	if rev, err := s.st.Get(ctx, urlKey(id), &idx); err == nil {
		_ = s.st.Delete(ctx, urlKey(id), rev)
	}
}

// ListFunctionURLs implements ListFunctionUrlConfigs: the function's own
// URL first, then its aliases' by name.
func (s *Service) ListFunctionURLs(ctx context.Context, acct, fn, marker string, maxItems int) ([]URL, string, error) {
	name, _, err := s.ref(acct, fn, "")
	if err != nil {
		return nil, "", err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return nil, "", err
	}
	qs := make([]string, 0, len(rec.URLs))
	for q := range rec.URLs {
		qs = append(qs, q)
	}
	sort.Strings(qs)
	out := make([]URL, 0, len(qs))
	for _, q := range qs {
		out = append(out, URL{Account: acct, Function: name, Qualifier: q, FunctionArn: s.urlArn(acct, name, q), Config: *rec.URLs[q]})
	}
	return paginate(out, marker, maxItems, func(u URL) string { return u.Qualifier })
}

// ResolveURL finds the function URL with the given id; a URL that no
// longer exists is not found.
func (s *Service) ResolveURL(ctx context.Context, id string) (*URL, error) {
	if !ValidURLID(id) {
		return nil, s.urlNotFound()
	}
	var idx urlIndex
	if _, err := s.st.Get(ctx, urlKey(id), &idx); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.urlNotFound()
		}
		return nil, err
	}
	rec, _, err := s.load(ctx, idx.Account, idx.Function)
	if err != nil {
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return nil, s.urlNotFound()
		}
		return nil, err
	}
	c, ok := rec.URLs[idx.Qualifier]
	if rec.Generation != idx.Generation || !ok || c.ID != id {
		// Not removed here: with a replicated store, this read may be
		// older than the index (see CreateFunctionURL).
		return nil, s.urlNotFound()
	}
	return &URL{Account: idx.Account, Function: idx.Function, Qualifier: idx.Qualifier,
		FunctionArn: s.urlArn(idx.Account, idx.Function, idx.Qualifier), Config: *c,
		Public: publicURL(rec.Policies[idx.Qualifier])}, nil
}

// publicURL says whether a statement allows lambda:InvokeFunctionUrl to
// any principal for an AuthType NONE URL: what AddPermission with
// --principal '*' --function-url-auth-type NONE writes.
func publicURL(stmts []Statement) bool {
	for _, st := range stmts {
		if st.Effect != "Allow" || (st.Action != "lambda:InvokeFunctionUrl" && st.Action != "lambda:*") {
			continue
		}
		switch p := st.Principal.(type) {
		case string:
			if p != "*" {
				continue
			}
		case map[string]any:
			if p["AWS"] != "*" {
				continue
			}
		default:
			continue
		}
		if len(st.Condition) == 0 {
			return true
		}
		// As written (map[string]string) or read back from the store.
		var authType any
		n := -1
		switch eq := st.Condition["StringEquals"].(type) {
		case map[string]string:
			authType, n = eq["lambda:FunctionUrlAuthType"], len(eq)
		case map[string]any:
			authType, n = eq["lambda:FunctionUrlAuthType"], len(eq)
		}
		if len(st.Condition) == 1 && n == 1 && authType == URLAuthNone {
			return true
		}
	}
	return false
}
