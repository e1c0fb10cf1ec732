package api

import (
	"net/http"
	"strconv"

	"github.com/nubo-dev/nubo/internal/errdefs"
	"github.com/nubo-dev/nubo/internal/invoke"
)

func (a *API) routeInvoke() {
	a.mux.HandleFunc("POST /2015-03-31/functions/{fn}/invocations", a.invoke(false))
	a.mux.HandleFunc("POST /2014-11-13/functions/{fn}/invoke-async", a.invoke(true))
}

// invoke serves Invoke and the legacy InvokeAsync. The x-amzn-RequestId of
// the answer is the request id the function sees.
func (a *API) invoke(legacyAsync bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Invoker == nil {
			a.writeError(w, r, errdefs.New(errdefs.KindServiceUnavailable, "This nubo server runs no execution environments"))
			return
		}
		in := &invoke.Input{
			Account:        accountOf(r),
			FunctionName:   r.PathValue("fn"),
			Qualifier:      r.URL.Query().Get("Qualifier"),
			InvocationType: r.Header.Get("X-Amz-Invocation-Type"),
			LogType:        r.Header.Get("X-Amz-Log-Type"),
			ClientContext:  r.Header.Get("X-Amz-Client-Context"),
			TenantID:       r.Header.Get("X-Amz-Tenant-Id"),
			Payload:        bodyOf(r),
			RequestID:      RequestID(r),
		}
		if legacyAsync {
			in.InvocationType = invoke.TypeEvent
		}
		out, err := a.cfg.Invoker.Invoke(r.Context(), in)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		h := w.Header()
		if out.ExecutedVersion != "" && !legacyAsync && out.Status != http.StatusAccepted {
			h.Set("X-Amz-Executed-Version", out.ExecutedVersion)
		}
		if out.FunctionError != "" {
			h.Set("X-Amz-Function-Error", out.FunctionError)
		}
		if in.LogType == invoke.LogTypeTail && out.Status == http.StatusOK {
			h.Set("X-Amz-Log-Result", out.LogResult)
		}
		if len(out.Payload) > 0 {
			h.Set("Content-Type", out.ContentType)
		}
		h.Set("Content-Length", strconv.Itoa(len(out.Payload)))
		w.WriteHeader(out.Status)
		w.Write(out.Payload)
	}
}
