package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/nubo-dev/nubo/internal/async"
)

// Events is the async queue's operator surface (package async).
type Events interface {
	Failed(ctx context.Context, acct, fn string) ([]async.DeadLetter, error)
	Replay(ctx context.Context, acct, fn string, ids []string) (int, error)
	Stats(ctx context.Context, acct, fn string) (*async.Stats, error)
}

// nubo's own routes behind `nubo events`, scoped to the signing account.
func (a *API) routeEvents() {
	a.mux.HandleFunc("GET /nubo/v1/events/failed", a.eventsFailed)
	a.mux.HandleFunc("POST /nubo/v1/events/replay", a.eventsReplay)
	a.mux.HandleFunc("GET /nubo/v1/events/stats", a.eventsStats)
}

func (a *API) eventsFunction(w http.ResponseWriter, r *http.Request) (string, bool) {
	if a.cfg.Events == nil {
		a.writeError(w, r, &apiError{status: 503, code: "ServiceException", message: "asynchronous invocation is not enabled"})
		return "", false
	}
	name, _, err := a.ctl.ResolveName(accountOf(r), r.URL.Query().Get("function"), "")
	if err != nil {
		a.writeError(w, r, err)
		return "", false
	}
	if _, _, err := a.ctl.Lookup(r.Context(), accountOf(r), name, ""); err != nil {
		a.writeError(w, r, err)
		return "", false
	}
	return name, true
}

func (a *API) eventsFailed(w http.ResponseWriter, r *http.Request) {
	fn, ok := a.eventsFunction(w, r)
	if !ok {
		return
	}
	items, err := a.cfg.Events.Failed(r.Context(), accountOf(r), fn)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if items == nil {
		items = []async.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"Failed": items})
}

func (a *API) eventsReplay(w http.ResponseWriter, r *http.Request) {
	fn, ok := a.eventsFunction(w, r)
	if !ok {
		return
	}
	var ids []string
	if s := r.URL.Query().Get("requestIds"); s != "" {
		ids = strings.Split(s, ",")
	}
	n, err := a.cfg.Events.Replay(r.Context(), accountOf(r), fn, ids)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"Replayed": n})
}

func (a *API) eventsStats(w http.ResponseWriter, r *http.Request) {
	fn, ok := a.eventsFunction(w, r)
	if !ok {
		return
	}
	st, err := a.cfg.Events.Stats(r.Context(), accountOf(r), fn)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
