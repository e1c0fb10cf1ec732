package api

import (
	"bufio"
	"net/http"
	"strconv"
	"time"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/logs"
)

func (a *API) routeLogs() {
	a.mux.HandleFunc("GET /nubo/v1/logs", a.readLogs)
}

// readLogs streams a function's log events as text lines
// "<RFC3339 time>\t<log stream>\t<message>" (nubo's own API, used by
// `nubo logs`; SigV4-signed like every other call, scoped to the account).
func (a *API) readLogs(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Logs == nil {
		a.writeError(w, r, errdefs.New(errdefs.KindServiceUnavailable, "logs are not available"))
		return
	}
	q := r.URL.Query()
	name, _, err := a.ctl.ResolveName(accountOf(r), q.Get("function"), "")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	group := q.Get("group")
	if group == "" {
		group = "/aws/lambda/" + name
	}
	query := logs.Query{Account: accountOf(r), LogGroup: group}
	if s := q.Get("since"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			query.Since = a.cfg.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			query.Since = t
		} else {
			a.writeError(w, r, errdefs.InvalidParameter("since must be a duration (10m) or an RFC 3339 time"))
			return
		}
	}
	query.Follow, _ = strconv.ParseBool(q.Get("follow"))
	// Following waits for a group to appear; reading once says it is not
	// there, as CloudWatch Logs does (aws logs tail).
	if !query.Follow {
		ok, err := a.cfg.Logs.GroupExists(r.Context(), query.Account, group)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		if !ok {
			a.writeError(w, r, errdefs.NotFound("The specified log group does not exist."))
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	fl, _ := w.(http.Flusher)
	err = a.cfg.Logs.Read(r.Context(), query, func(e logs.Event) error {
		bw.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
		bw.WriteByte('\t')
		bw.WriteString(e.LogStream)
		bw.WriteByte('\t')
		bw.WriteString(e.Message)
		bw.WriteByte('\n')
		if bw.Buffered() > 32<<10 || query.Follow {
			if err := bw.Flush(); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
		}
		return nil
	})
	bw.Flush()
	if err != nil && r.Context().Err() == nil {
		a.log.Warn("reading logs", "err", err)
	}
}
