package api

import (
	"net/http"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/function"
)

// maxPage is the most functions or versions one list response holds: AWS
// accepts MaxItems up to 10000 but answers at most 50 per page.
const maxPage = 50

func (a *API) routeFunctions() {
	m := a.mux
	m.HandleFunc("POST /2015-03-31/functions", a.createFunction)
	m.HandleFunc("GET /2015-03-31/functions", a.listFunctions)
	m.HandleFunc("GET /2015-03-31/functions/{fn}", a.getFunction)
	m.HandleFunc("DELETE /2015-03-31/functions/{fn}", a.deleteFunction)
	m.HandleFunc("GET /2015-03-31/functions/{fn}/configuration", a.getFunctionConfiguration)
	m.HandleFunc("PUT /2015-03-31/functions/{fn}/configuration", a.updateFunctionConfiguration)
	m.HandleFunc("PUT /2015-03-31/functions/{fn}/code", a.updateFunctionCode)
	m.HandleFunc("POST /2015-03-31/functions/{fn}/versions", a.publishVersion)
	m.HandleFunc("GET /2015-03-31/functions/{fn}/versions", a.listVersions)
	m.HandleFunc("POST /2015-03-31/functions/{fn}/aliases", a.createAlias)
	m.HandleFunc("GET /2015-03-31/functions/{fn}/aliases", a.listAliases)
	m.HandleFunc("GET /2015-03-31/functions/{fn}/aliases/{alias}", a.getAlias)
	m.HandleFunc("PUT /2015-03-31/functions/{fn}/aliases/{alias}", a.updateAlias)
	m.HandleFunc("DELETE /2015-03-31/functions/{fn}/aliases/{alias}", a.deleteAlias)
}

func (a *API) createFunction(w http.ResponseWriter, r *http.Request) {
	var in function.CreateInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	cfg, err := a.ctl.CreateFunction(r.Context(), accountOf(r), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, cfg)
}

func (a *API) getFunction(w http.ResponseWriter, r *http.Request) {
	info, err := a.ctl.GetFunction(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := map[string]any{
		"Configuration": info.Configuration,
		"Code":          map[string]string{"RepositoryType": "S3", "Location": a.codeURL(r, accountOf(r), info.CodeHex)},
	}
	if len(info.Tags) > 0 {
		out["Tags"] = info.Tags
	}
	if info.Reserved != nil {
		out["Concurrency"] = map[string]int{"ReservedConcurrentExecutions": *info.Reserved}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getFunctionConfiguration(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.ctl.GetFunctionConfiguration(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (a *API) updateFunctionConfiguration(w http.ResponseWriter, r *http.Request) {
	var in function.UpdateConfigInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	cfg, err := a.ctl.UpdateFunctionConfiguration(r.Context(), accountOf(r), r.PathValue("fn"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (a *API) updateFunctionCode(w http.ResponseWriter, r *http.Request) {
	var in function.UpdateCodeInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	cfg, err := a.ctl.UpdateFunctionCode(r.Context(), accountOf(r), r.PathValue("fn"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (a *API) listFunctions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := maxItems(r, 10000)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	fv := q.Get("FunctionVersion")
	if fv != "" && fv != "ALL" {
		a.writeError(w, r, errdefs.Validation("1 validation error detected: Value '%s' at 'functionVersion' failed to satisfy constraint: Member must satisfy enum value set: [ALL]", fv))
		return
	}
	items, next, err := a.ctl.ListFunctions(r.Context(), accountOf(r), q.Get("Marker"), min(n, maxPage), fv == "ALL")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page("Functions", items, next))
}

func (a *API) deleteFunction(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteFunction(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) publishVersion(w http.ResponseWriter, r *http.Request) {
	var in struct{ CodeSha256, Description, RevisionId string }
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	cfg, err := a.ctl.PublishVersion(r.Context(), accountOf(r), r.PathValue("fn"), in.CodeSha256, in.Description, in.RevisionId)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, cfg)
}

func (a *API) listVersions(w http.ResponseWriter, r *http.Request) {
	n, err := maxItems(r, 10000)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	items, next, err := a.ctl.ListVersionsByFunction(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Marker"), min(n, maxPage))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page("Versions", items, next))
}

func (a *API) createAlias(w http.ResponseWriter, r *http.Request) {
	var in control.AliasInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	al, err := a.ctl.CreateAlias(r.Context(), accountOf(r), r.PathValue("fn"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, al)
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request) {
	al, err := a.ctl.GetAlias(r.Context(), accountOf(r), r.PathValue("fn"), r.PathValue("alias"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, al)
}

func (a *API) updateAlias(w http.ResponseWriter, r *http.Request) {
	var in control.AliasInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	al, err := a.ctl.UpdateAlias(r.Context(), accountOf(r), r.PathValue("fn"), r.PathValue("alias"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, al)
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteAlias(r.Context(), accountOf(r), r.PathValue("fn"), r.PathValue("alias")); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

func (a *API) listAliases(w http.ResponseWriter, r *http.Request) {
	n, err := maxItems(r, 10000)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	items, next, err := a.ctl.ListAliases(r.Context(), accountOf(r), r.PathValue("fn"), q.Get("FunctionVersion"), q.Get("Marker"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page("Aliases", items, next))
}
