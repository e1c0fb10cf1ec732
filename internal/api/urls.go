package api

import (
	"net/http"

	"github.com/nubo-dev/nubo/internal/control"
)

// routeURLs adds the function URL configuration operations. The URLs
// themselves are served by serveURL (urlinvoke.go).
func (a *API) routeURLs() {
	m := a.mux
	m.HandleFunc("POST /2021-10-31/functions/{fn}/url", a.createURL)
	m.HandleFunc("GET /2021-10-31/functions/{fn}/url", a.getURL)
	m.HandleFunc("PUT /2021-10-31/functions/{fn}/url", a.updateURL)
	m.HandleFunc("DELETE /2021-10-31/functions/{fn}/url", a.deleteURL)
	m.HandleFunc("GET /2021-10-31/functions/{fn}/urls", a.listURLs)
}

// urlConfigOut is a function URL configuration as the API answers it.
type urlConfigOut struct {
	FunctionUrl      string        `json:"FunctionUrl"`
	FunctionArn      string        `json:"FunctionArn"`
	AuthType         string        `json:"AuthType"`
	Cors             *control.Cors `json:"Cors,omitempty"`
	CreationTime     string        `json:"CreationTime"`
	LastModifiedTime string        `json:"LastModifiedTime,omitempty"`
	InvokeMode       string        `json:"InvokeMode"`
}

// functionURL is where a function URL answers: on the host and scheme the
// client used, under urlPath. (AWS's form, <id>.lambda-url.<region>.on.aws,
// needs a wildcard DNS name; nubo answers it too, by Host, where an
// operator has one.)
func functionURL(r *http.Request, id string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + urlPath + id + "/"
}

func urlOut(r *http.Request, u *control.URL, modified bool) urlConfigOut {
	o := urlConfigOut{FunctionUrl: functionURL(r, u.Config.ID), FunctionArn: u.FunctionArn, AuthType: u.Config.AuthType,
		Cors: u.Config.Cors, CreationTime: u.Config.Created, InvokeMode: u.Config.InvokeMode}
	if modified {
		o.LastModifiedTime = u.Config.Modified
	}
	return o
}

func (a *API) createURL(w http.ResponseWriter, r *http.Request) {
	var in control.URLInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.ctl.CreateFunctionURL(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, urlOut(r, u, false))
}

func (a *API) getURL(w http.ResponseWriter, r *http.Request) {
	u, err := a.ctl.GetFunctionURL(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, urlOut(r, u, true))
}

func (a *API) updateURL(w http.ResponseWriter, r *http.Request) {
	var in control.URLInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.ctl.UpdateFunctionURL(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, urlOut(r, u, true))
}

func (a *API) deleteURL(w http.ResponseWriter, r *http.Request) {
	if err := a.ctl.DeleteFunctionURL(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Qualifier")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listURLs(w http.ResponseWriter, r *http.Request) {
	n, err := maxItems(r, 50)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	us, next, err := a.ctl.ListFunctionURLs(r.Context(), accountOf(r), r.PathValue("fn"), r.URL.Query().Get("Marker"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]urlConfigOut, len(us))
	for i := range us {
		out[i] = urlOut(r, &us[i], true)
	}
	writeJSON(w, http.StatusOK, page("FunctionUrlConfigs", out, next))
}
