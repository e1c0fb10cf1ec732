package api

import (
	"net/http"
	"strconv"

	"github.com/nubo-dev/nubo/internal/control"
	"github.com/nubo-dev/nubo/internal/errdefs"
)

func (a *API) routeLayers() {
	m := a.mux
	m.HandleFunc("GET /2018-10-31/layers", a.listLayers)
	m.HandleFunc("POST /2018-10-31/layers/{layer}/versions", a.publishLayerVersion)
	m.HandleFunc("GET /2018-10-31/layers/{layer}/versions", a.listLayerVersions)
	m.HandleFunc("GET /2018-10-31/layers/{layer}/versions/{n}", a.getLayerVersion)
	m.HandleFunc("DELETE /2018-10-31/layers/{layer}/versions/{n}", a.deleteLayerVersion)
}

func layerVersionNumber(r *http.Request) (int64, error) {
	s := r.PathValue("n")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, errdefs.InvalidParameter("Invalid layer version number: %s", s)
	}
	return n, nil
}

func (a *API) publishLayerVersion(w http.ResponseWriter, r *http.Request) {
	var in control.PublishLayerInput
	if err := decode(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	lv, err := a.ctl.PublishLayerVersion(r.Context(), accountOf(r), r.PathValue("layer"), &in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.withLayerLocation(r, lv)
	writeJSON(w, http.StatusCreated, lv)
}

func (a *API) withLayerLocation(r *http.Request, lv *control.LayerVersion) {
	lv.Content.Location = a.codeURL(r, accountOf(r), lv.CodeHex)
}

func (a *API) getLayerVersion(w http.ResponseWriter, r *http.Request) {
	n, err := layerVersionNumber(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	lv, err := a.ctl.GetLayerVersion(r.Context(), accountOf(r), r.PathValue("layer"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.withLayerLocation(r, lv)
	writeJSON(w, http.StatusOK, lv)
}

func (a *API) deleteLayerVersion(w http.ResponseWriter, r *http.Request) {
	n, err := layerVersionNumber(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.ctl.DeleteLayerVersion(r.Context(), accountOf(r), r.PathValue("layer"), n); err != nil {
		a.writeError(w, r, err)
		return
	}
	noContent(w)
}

// listLayers also serves GetLayerVersionByArn, which shares its path and is
// told apart by ?find=LayerVersion.
func (a *API) listLayers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("find") == "LayerVersion" {
		lv, err := a.ctl.GetLayerVersionByArn(r.Context(), accountOf(r), q.Get("Arn"))
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		a.withLayerLocation(r, lv)
		writeJSON(w, http.StatusOK, lv)
		return
	}
	n, err := maxItems(r, 50)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	items, next, err := a.ctl.ListLayers(r.Context(), accountOf(r), q.Get("CompatibleRuntime"), q.Get("CompatibleArchitecture"), q.Get("Marker"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, it := range items {
		it.LatestMatchingVersion.Content = nil // AWS lists no Content here
	}
	writeJSON(w, http.StatusOK, page("Layers", items, next))
}

func (a *API) listLayerVersions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := maxItems(r, 50)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	items, next, err := a.ctl.ListLayerVersions(r.Context(), accountOf(r), r.PathValue("layer"), q.Get("CompatibleRuntime"), q.Get("CompatibleArchitecture"), q.Get("Marker"), n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, lv := range items {
		lv.Content = nil
	}
	writeJSON(w, http.StatusOK, page("LayerVersions", items, next))
}
