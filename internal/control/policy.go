package control

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nubo-dev/nubo/internal/errdefs"
)

// Statement is one statement of a function's resource policy. nubo stores
// and reports policies so infrastructure tools round-trip them; access is
// decided by accounts, not by these statements.
type Statement struct {
	Sid       string         `json:"Sid"`
	Effect    string         `json:"Effect"`
	Principal any            `json:"Principal"`
	Action    string         `json:"Action"`
	Resource  string         `json:"Resource"`
	Condition map[string]any `json:"Condition,omitempty"`
}

// PermissionInput is AddPermission's body.
type PermissionInput struct {
	StatementId         string `json:"StatementId"`
	Action              string `json:"Action"`
	Principal           string `json:"Principal"`
	SourceArn           string `json:"SourceArn"`
	SourceAccount       string `json:"SourceAccount"`
	EventSourceToken    string `json:"EventSourceToken"`
	RevisionId          string `json:"RevisionId"`
	PrincipalOrgID      string `json:"PrincipalOrgID"`
	FunctionUrlAuthType string `json:"FunctionUrlAuthType"`
}

func principal(p string) any {
	switch {
	case p == "*":
		return "*"
	case strings.HasSuffix(p, ".amazonaws.com") || strings.HasSuffix(p, ".amazonaws.com.cn"):
		return map[string]string{"Service": p}
	case len(p) == 12 && strings.Trim(p, "0123456789") == "":
		return map[string]string{"AWS": "arn:aws:iam::" + p + ":root"}
	}
	return map[string]string{"AWS": p}
}

func policyDoc(stmts []Statement) string {
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Id": "default", "Statement": stmts})
	return string(b)
}

// AddPermission implements AddPermission and returns the statement as JSON.
func (s *Service) AddPermission(ctx context.Context, acct, fn, qualifier string, in *PermissionInput) (string, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return "", err
	}
	var missing []string
	for f, v := range map[string]string{"statementId": in.StatementId, "action": in.Action, "principal": in.Principal} {
		if v == "" {
			missing = append(missing, "Value null at '"+f+"' failed to satisfy constraint: Member must not be null")
		}
	}
	if len(missing) > 0 {
		return "", errdefs.Validation("%d validation error detected: %s", len(missing), strings.Join(missing, "; "))
	}
	if _, _, err := s.Lookup(ctx, acct, name, q); err != nil {
		return "", err
	}
	resource := s.fnArn(acct, name)
	if q != "" {
		resource = s.qualArn(acct, name, q)
	}
	st := Statement{Sid: in.StatementId, Effect: "Allow", Principal: principal(in.Principal), Action: in.Action, Resource: resource}
	cond := map[string]any{}
	if in.SourceAccount != "" {
		cond["StringEquals"] = map[string]string{"AWS:SourceAccount": in.SourceAccount}
	}
	if in.SourceArn != "" {
		cond["ArnLike"] = map[string]string{"AWS:SourceArn": in.SourceArn}
	}
	if in.PrincipalOrgID != "" {
		cond["StringEquals"] = map[string]string{"aws:PrincipalOrgID": in.PrincipalOrgID}
	}
	if in.FunctionUrlAuthType != "" {
		cond["StringEquals"] = map[string]string{"lambda:FunctionUrlAuthType": in.FunctionUrlAuthType}
	}
	if len(cond) > 0 {
		st.Condition = cond
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if err := checkRevision(in.RevisionId, rec.Latest.RevisionId); err != nil {
			return err
		}
		for _, e := range rec.Policies[q] {
			if e.Sid == in.StatementId {
				return errdefs.Conflict("The statement id (%s) provided already exists. Please specify a new statement id, or remove the existing statement.", in.StatementId)
			}
		}
		if rec.Policies == nil {
			rec.Policies = map[string][]Statement{}
		}
		rec.Policies[q] = append(rec.Policies[q], st)
		if len(policyDoc(rec.Policies[q])) > 20480 {
			return errdefs.New(errdefs.KindInvalidParameter, "The final policy size (%d) is bigger than the limit (20480).", len(policyDoc(rec.Policies[q])))
		}
		rec.Latest.RevisionId = newRevision()
		return nil
	})
	if err != nil {
		return "", err
	}
	return mustJSON(st), nil
}

// GetPolicy returns the policy document and the function's RevisionId.
func (s *Service) GetPolicy(ctx context.Context, acct, fn, qualifier string) (string, string, error) {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return "", "", err
	}
	rec, _, err := s.load(ctx, acct, name)
	if err != nil {
		return "", "", err
	}
	if len(rec.Policies[q]) == 0 {
		return "", "", errdefs.NotFound("The resource you requested does not exist.")
	}
	return policyDoc(rec.Policies[q]), rec.Latest.RevisionId, nil
}

// RemovePermission implements RemovePermission.
func (s *Service) RemovePermission(ctx context.Context, acct, fn, qualifier, sid, revisionID string) error {
	name, q, err := s.ref(acct, fn, qualifier)
	if err != nil {
		return err
	}
	_, err = s.mutate(ctx, acct, name, func(rec *record) error {
		if err := checkRevision(revisionID, rec.Latest.RevisionId); err != nil {
			return err
		}
		stmts := rec.Policies[q]
		for i, e := range stmts {
			if e.Sid == sid {
				rec.Policies[q] = append(stmts[:i:i], stmts[i+1:]...)
				if len(rec.Policies[q]) == 0 {
					delete(rec.Policies, q)
				}
				rec.Latest.RevisionId = newRevision()
				return nil
			}
		}
		return errdefs.NotFound("Statement %s is not found in resource policy.", sid)
	})
	return err
}
