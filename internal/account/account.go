// Package account owns tenants: the accounts a nubo server serves and the
// access keys that authenticate as each. Every resource belongs to exactly
// one account, and an account is the isolation boundary: nothing of one
// account is visible to another.
//
// Accounts come from the --accounts file:
//
//	[{"accountId":"111111111111","name":"team-a",
//	  "accessKeys":[{"accessKeyId":"AKID...","secretAccessKey":"..."}]}]
//
// The development account 000000000000 (key "test", secret "test") exists
// only while the server listens on loopback and is never enabled otherwise.
package account

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// DevAccountID, DevAccessKey and DevSecret define the development account.
const (
	DevAccountID = "000000000000"
	DevAccessKey = "test"
	DevSecret    = "test"
)

// Account is one tenant.
type Account struct {
	AccountID  string      `json:"accountId"`
	Name       string      `json:"name"`
	AccessKeys []AccessKey `json:"accessKeys"`
	// Isolation overrides the server's --isolation for this account's
	// functions: "namespace" or "microvm" (its own microVMs); empty keeps
	// the server's.
	Isolation string `json:"isolation,omitempty"`
}

// AccessKey is a credential pair of an account.
type AccessKey struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

// Registry finds accounts by id and by access key. It is immutable after
// construction, so lookups need no locks.
type Registry struct {
	byID  map[string]*Account
	byKey map[string]keyEntry
}

type keyEntry struct {
	secret  string
	account *Account
}

// Dev returns the development account.
func Dev() Account {
	return Account{AccountID: DevAccountID, Name: "development",
		AccessKeys: []AccessKey{{AccessKeyID: DevAccessKey, SecretAccessKey: DevSecret}}}
}

// Load reads an accounts file.
func Load(path string) ([]Account, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("accounts file: %w", err)
	}
	return Parse(b)
}

// Parse decodes and checks the accounts file format.
func Parse(b []byte) ([]Account, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var accts []Account
	if err := dec.Decode(&accts); err != nil {
		return nil, fmt.Errorf("accounts file: %w", err)
	}
	return accts, nil
}

// NewRegistry checks accounts for duplicates and shape and indexes them.
func NewRegistry(accts []Account) (*Registry, error) {
	r := &Registry{byID: map[string]*Account{}, byKey: map[string]keyEntry{}}
	for i := range accts {
		a := &accts[i]
		if !validID(a.AccountID) {
			return nil, fmt.Errorf("accounts: accountId %q must be 12 digits", a.AccountID)
		}
		if _, dup := r.byID[a.AccountID]; dup {
			return nil, fmt.Errorf("accounts: accountId %s declared twice", a.AccountID)
		}
		switch a.Isolation {
		case "", "namespace", "microvm":
		default:
			return nil, fmt.Errorf("accounts: account %s: isolation %q: want namespace or microvm", a.AccountID, a.Isolation)
		}
		r.byID[a.AccountID] = a
		for _, k := range a.AccessKeys {
			if k.AccessKeyID == "" || k.SecretAccessKey == "" {
				return nil, fmt.Errorf("accounts: account %s has an access key with an empty id or secret", a.AccountID)
			}
			if _, dup := r.byKey[k.AccessKeyID]; dup {
				return nil, fmt.Errorf("accounts: access key %s declared twice", k.AccessKeyID)
			}
			r.byKey[k.AccessKeyID] = keyEntry{secret: k.SecretAccessKey, account: a}
		}
	}
	return r, nil
}

func validID(id string) bool {
	if len(id) != 12 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Secret returns the secret of an access key, for the SigV4 verifier.
func (r *Registry) Secret(accessKeyID string) (string, bool) {
	e, ok := r.byKey[accessKeyID]
	return e.secret, ok
}

// ByAccessKey returns the account owning an access key.
func (r *Registry) ByAccessKey(accessKeyID string) (*Account, bool) {
	e, ok := r.byKey[accessKeyID]
	return e.account, ok
}

// ByID returns an account.
func (r *Registry) ByID(id string) (*Account, bool) {
	a, ok := r.byID[id]
	return a, ok
}

// All returns every account id.
func (r *Registry) All() []string {
	ids := make([]string, 0, len(r.byID))
	for id := range r.byID {
		ids = append(ids, id)
	}
	return ids
}
