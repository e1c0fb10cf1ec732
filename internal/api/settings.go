package api

import (
	"net/http"

	"github.com/nubo-dev/nubo/internal/control"
)

func (a *API) routeSettings() {
	m := a.mux
	m.HandleFunc("PUT /2017-10-31/functions/{fn}/concurrency", a.putConcurrency)
	m.HandleFunc("GET /2019-09-30/functions/{fn}/concurrency", a.getConcurrency)
	m.HandleFunc("DELETE /2017-10-31/functions/{fn}/concurrency", a.deleteConcurrency)

	m.HandleFunc("PUT /2019-09-30/functions/{fn}/provisioned-concurrency", a.putProvisioned)
	m.HandleFunc("GET /2019-09-30/functions/{fn}/provisioned-concurrency", a.getProvisioned)
	m.HandleFunc("DELETE /2019-09-30/functions/{fn}/provisioned-concurrency", a.deleteProvisioned)

	m.HandleFunc("PUT /2019-09-25/functions/{fn}/event-invoke-config", a.putEventInvoke(true))
	m.HandleFunc("POST /2019-09-25/functions/{fn}/event-invoke-config", a.putEventInvoke(false))
	m.HandleFunc("GET /2019-09-25/functions/{fn}/event-invoke-config", a.getEventInvoke)
	m.HandleFunc("DELETE /2019-09-25/functions/{fn}/event-invoke-config", a.deleteEventInvoke)
	m.HandleFunc("GET /2019-09-25/functions/{fn}/event-invoke-config/list", a.listEventInvoke)

	m.HandleFunc("POST /2017-03-31/tags/{arn}", a.tagResource)
	m.HandleFunc("DELETE /2017-03-31/tags/{arn}", a.untagResource)
	m.HandleFunc("GET /2017-03-31/tags/{arn}", a.listTags)

	m.HandleFunc("POST /2015-03-31/functions/{fn}/policy", a.addPermission)
	m.HandleFunc("GET /2015-03-31/functions/{fn}/policy", a.getPolicy)
	m.HandleFunc("DELETE /2015-03-31/functions/{fn}/policy/{sid}", a.removePermission)

	m.HandleFunc("GET /2016-08-19/account-settings", a.accountSettings)
}

func (a *API) putConcurrency(w http.ResponseWriter, r *http.Request) {
	var in struct{ ReservedConcurrentExecutions *int }
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	n, err := a.ctl.PutFunctionConcurrency(r.Context(), accountOf(r), r.PathValue("fn"), in.ReservedConcurrentExecutions)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"ReservedConcurrentExecutions": n})
}

func (a *API) getConcurrency(w http.ResponseWriter, r *http.Request) {
	n, err := a.ctl.GetFunctionConcurrency(r.Context(), accountOf(r), r.PathValue("fn"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := map[string]int{}
	if n != nil {
		out["ReservedConcurrentExecutions"] = *n
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) deleteConcurrency(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteFunctionConcurrency(r.Context(), accountOf(r), r.PathValue("fn")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) putProvisioned(w http.ResponseWriter, r *http.Request) {
	var in struct{ ProvisionedConcurrentExecutions int }
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	p, err := a.ctl.PutProvisionedConcurrencyConfig(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"), in.ProvisionedConcurrentExecutions)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, p)
}

// getProvisioned also serves ListProvisionedConcurrencyConfigs (?List=ALL).
func (a *API) getProvisioned(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("List") == "ALL" {
		n, err := maxItems(r, 50)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		items, next, err := a.ctl.ListProvisionedConcurrencyConfigs(r.Context(), accountOf(r), r.PathValue("fn"), q.Get("Marker"), n)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, page("ProvisionedConcurrencyConfigs", items, next))
		return
	}
	p, err := a.ctl.GetProvisionedConcurrencyConfig(r.Context(), accountOf(r), r.PathValue("fn"), q.Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (a *API) deleteProvisioned(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteProvisionedConcurrencyConfig(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) putEventInvoke(replace bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in control.EventInvokeInput
		if err := decode(r, &in); err != nil {
			a.writeError(w, r, err)
			return
		}
		ei, err := a.ctl.PutFunctionEventInvokeConfig(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"), &in, replace)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ei)
	}
}

func (a *API) getEventInvoke(w http.ResponseWriter, r *http.Request) {
	ei, err := a.ctl.GetFunctionEventInvokeConfig(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ei)
}

func (a *API) deleteEventInvoke(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteFunctionEventInvokeConfig(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) listEventInvoke(w http.ResponseWriter, r *http.Request) {
	n, err := maxItems(r, 50)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	items, next, err := a.ctl.ListFunctionEventInvokeConfigs(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Marker"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page("FunctionEventInvokeConfigs", items, next))
}

func (a *API) tagResource(w http.ResponseWriter, r *http.Request) {
	var in struct{ Tags map[string]string }
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.ctl.TagResource(r.Context(), accountOf(r), r.PathValue("arn"), in.Tags); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) untagResource(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.UntagResource(r.Context(), accountOf(r), r.PathValue("arn"), r.URL.Query()["tagKeys"]); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) listTags(w http.ResponseWriter, r *http.Request) {
	tags, err := a.ctl.ListTags(r.Context(), accountOf(r), r.PathValue("arn"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"Tags": tags})
}

func (a *API) addPermission(w http.ResponseWriter, r *http.Request) {
	var in control.PermissionInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	st, err := a.ctl.AddPermission(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"Statement": st})
}

func (a *API) getPolicy(w http.ResponseWriter, r *http.Request) {
	doc, rev, err := a.ctl.GetPolicy(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"Policy": doc, "RevisionId": rev})
}

func (a *API) removePermission(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := a.ctl.RemovePermission(r.Context(), accountOf(r), r.PathValue("fn"), q.Get("Qualifier"), r.PathValue("sid"), q.Get("RevisionId")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) accountSettings(w http.ResponseWriter, r *http.Request) {
	s, err := a.ctl.GetAccountSettings(r.Context(), accountOf(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}
