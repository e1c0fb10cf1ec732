package runtimeapi

import (
	"encoding/json"
	"strings"
)

const (
	hdrExtName      = "Lambda-Extension-Name"
	hdrExtID        = "Lambda-Extension-Identifier"
	hdrExtFeatures  = "Lambda-Extension-Accept-Feature"
	hdrExtEventID   = "Lambda-Extension-Event-Identifier"
	hdrExtErrorType = "Lambda-Extension-Function-Error-Type"

	maxRegisterBody = 64 << 10
)

type extState int

const (
	extRegistered extState = iota // registered, event/next not called yet
	extActive                     // has called event/next at least once
	extInitError                  // posted /extension/init/error
	extExitError                  // posted /extension/exit/error
	extGone                       // process died, or its runtime went away
)

type extension struct {
	id, name    string
	external    bool
	subInvoke   bool
	subShutdown bool
	state       extState
	queue       []*extEvent // events not delivered yet, oldest first
	inflight    *extEvent   // delivered, event/next not called again yet
	waiter      *waiter
}

// extEvent is one INVOKE or SHUTDOWN event for one extension. It is done once
// the extension has called event/next after receiving it, or has gone away.
type extEvent struct {
	id   string
	body []byte
	done bool
}

func (ev *extEvent) doneLocked() bool { return ev.done }

func (e *extension) alive() bool { return e.state == extRegistered || e.state == extActive }

// stateName names e's state as the RIE does in InvalidExtensionState messages.
func (e *extension) stateName() string {
	switch e.state {
	case extRegistered:
		return "Registered"
	case extActive:
		if e.waiter != nil {
			return "Ready"
		}
		return "Running"
	case extInitError:
		return "InitError"
	case extExitError:
		return "ExitError"
	default:
		return "Exited"
	}
}

func (e *extension) enqueueLocked(body []byte) *extEvent {
	ev := &extEvent{id: newUUID(), body: body}
	e.queue = append(e.queue, ev)
	if e.waiter != nil {
		e.waiter.notify()
	}
	return ev
}

func (s *Server) sendInvokeEventLocked(c *call) []*extEvent {
	type tracing struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	body, _ := json.Marshal(struct {
		EventType          string  `json:"eventType"`
		DeadlineMs         int64   `json:"deadlineMs"`
		RequestID          string  `json:"requestId"`
		InvokedFunctionArn string  `json:"invokedFunctionArn"`
		Tracing            tracing `json:"tracing"`
	}{"INVOKE", c.inv.DeadlineMs, c.inv.RequestID, c.inv.InvokedFunctionARN, tracing{"X-Amzn-Trace-Id", c.inv.TraceID}})
	var events []*extEvent
	for _, e := range s.exts {
		if e.subInvoke && e.alive() {
			events = append(events, e.enqueueLocked(body))
		}
	}
	return events
}

// removeExtensionLocked takes e out of the lifecycle: its events count as
// done, a waiting event/next is answered 403, and an internal extension that
// is gone frees its name for the next runtime process.
func (s *Server) removeExtensionLocked(e *extension, st extState) {
	e.state = st
	for _, ev := range e.queue {
		ev.done = true
	}
	e.queue = nil
	if e.inflight != nil {
		e.inflight.done = true
		e.inflight = nil
	}
	if e.waiter != nil {
		e.waiter.superseded = "extension " + e.id + " is no longer active"
		e.waiter.notify()
		e.waiter = nil
	}
	if st == extGone && !e.external {
		delete(s.exts, e.id)
		delete(s.extByName, e.name)
	}
}

func (s *Server) dropInternalExtensionsLocked() {
	for _, e := range s.exts {
		if !e.external {
			s.removeExtensionLocked(e, extGone)
		}
	}
}

// failInitLocked records the first extension init failure; an invocation
// queued behind the init fails with it.
func (s *Server) failInitLocked(err *InitError) {
	if s.extInitErr != nil || s.shutdown {
		return
	}
	s.extInitErr = err
	if c := s.queued; c != nil {
		s.queued = nil
		s.finishLocked(c, nil, err)
	}
}

// extRegister serves POST /extension/register.
func (s *Server) extRegister(w responseWriter, r *request) {
	name := r.Header.Get(hdrExtName)
	if name == "" {
		renderError(w, statusForbidden, errExtInvalidName, "Empty extension name")
		return
	}
	wantAccount := false
	for f := range strings.SplitSeq(r.Header.Get(hdrExtFeatures), ",") {
		if strings.TrimSpace(f) == "accountId" {
			wantAccount = true
		}
	}
	body, err := readLimited(r.Body, maxRegisterBody)
	if err != nil {
		renderError(w, statusForbidden, errInvalidReqFormat, "%s", err.Error())
		return
	}
	var req struct {
		Events            []string `json:"events"`
		ConfigurationKeys []string `json:"configurationKeys"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		renderError(w, statusForbidden, errInvalidReqFormat, "%s", err.Error())
		return
	}
	if len(req.ConfigurationKeys) != 0 {
		renderError(w, statusForbidden, errInvalidReqFormat, "configurationKeys are deprecated; use environment variables instead")
		return
	}
	external := s.expected[name]
	var subInvoke, subShutdown bool
	for _, ev := range req.Events {
		switch {
		case ev == "INVOKE":
			subInvoke = true
		case ev == "SHUTDOWN" && external:
			subShutdown = true
		case ev == "SHUTDOWN":
			// The runtime process is signalled directly at shutdown; its own
			// (internal) extensions cannot subscribe.
			renderError(w, statusForbidden, errExtInvalidEvent, "%s: ShutdownEventNotSupportedForInternalExtension", ev)
			return
		default:
			renderError(w, statusForbidden, errExtInvalidEvent, "%s: ErrorInvalidEventType", ev)
			return
		}
	}

	s.mu.Lock()
	if old := s.extByName[name]; old != nil {
		from := old.stateName()
		s.mu.Unlock()
		if external {
			renderExtensionTransition(w, from, "Registered", name)
		} else {
			renderError(w, statusForbidden, errExtInvalidState, "Extension with this name already registered")
		}
		return
	}
	if s.shutdown || s.rt != rtStarted {
		s.mu.Unlock()
		renderError(w, statusForbidden, errExtRegClosed, "Extension registration closed already")
		return
	}
	if len(s.exts) >= maxExtensions {
		s.mu.Unlock()
		renderError(w, statusForbidden, errExtTooMany, "Extension limit (%d) reached", maxExtensions)
		return
	}
	e := &extension{id: newUUID(), name: name, external: external, subInvoke: subInvoke, subShutdown: subShutdown}
	s.exts[e.id] = e
	s.extByName[name] = e
	s.broadcastLocked()
	s.mu.Unlock()
	s.log.Debug("extension registered", "name", name, "external", external, "invoke", subInvoke, "shutdown", subShutdown)

	resp := struct {
		AccountID       string `json:"accountId,omitempty"`
		FunctionName    string `json:"functionName"`
		FunctionVersion string `json:"functionVersion"`
		Handler         string `json:"handler"`
	}{FunctionName: s.opts.FunctionName, FunctionVersion: s.opts.FunctionVersion, Handler: s.opts.Handler}
	if wantAccount {
		resp.AccountID = s.opts.AccountID
	}
	w.Header().Set(hdrExtID, e.id)
	renderJSON(w, statusOK, resp)
}

// extID validates the Lambda-Extension-Identifier header, answering 403 when
// it is missing or not a UUID.
func extID(w responseWriter, r *request) (string, bool) {
	v := r.Header.Get(hdrExtID)
	if v == "" {
		renderError(w, statusForbidden, errExtMissingID, "Missing Lambda-Extension-Identifier header")
		return "", false
	}
	id, ok := parseUUID(v)
	if !ok {
		renderError(w, statusForbidden, errExtInvalidID, "Invalid Lambda-Extension-Identifier")
		return "", false
	}
	return id, true
}

// extNext serves GET /extension/event/next: it acknowledges the event the
// extension received last, then blocks until the next one.
func (s *Server) extNext(w responseWriter, r *request) {
	id, ok := extID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	s.mu.Lock()
	e := s.exts[id]
	if e == nil {
		s.mu.Unlock()
		renderError(w, statusForbidden, errExtUnknownID, "Unknown extension %s", id)
		return
	}
	if !e.alive() {
		from := e.stateName()
		s.mu.Unlock()
		renderExtensionTransition(w, from, "Ready", id)
		return
	}
	if e.inflight != nil {
		e.inflight.done = true
		e.inflight = nil
	}
	e.state = extActive
	if e.waiter != nil {
		e.waiter.superseded = "superseded by a newer /extension/event/next request"
		e.waiter.notify()
	}
	wt := newWaiter()
	e.waiter = wt
	s.broadcastLocked()
	for {
		if wt.superseded != "" {
			s.mu.Unlock()
			renderError(w, statusForbidden, errExtInvalidState, "%s", wt.superseded)
			return
		}
		if len(e.queue) > 0 && ctx.Err() == nil {
			ev := e.queue[0]
			e.queue = e.queue[1:]
			e.inflight, e.waiter = ev, nil
			s.broadcastLocked()
			s.mu.Unlock()
			w.Header().Set(hdrExtEventID, ev.id)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(statusOK)
			_, _ = w.Write(ev.body)
			return
		}
		s.mu.Unlock()
		select {
		case <-wt.wake:
		case <-ctx.Done():
			s.mu.Lock()
			if e.waiter == wt {
				e.waiter = nil
				s.broadcastLocked()
			}
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
	}
}

// extError serves POST /extension/init/error and /extension/exit/error.
func (s *Server) extError(w responseWriter, r *request, isInit bool) {
	id, ok := extID(w, r)
	if !ok {
		return
	}
	errType := r.Header.Get(hdrExtErrorType)
	if errType == "" {
		renderError(w, statusForbidden, errExtMissingHeader, "%s not found", hdrExtErrorType)
		return
	}
	// The body is informational; an unreadable or oversized one is dropped.
	body, err := s.readBody(r.Body, s.maxBody)
	if err != nil {
		body = nil
	}
	ct := r.Header.Get("Content-Type")

	s.mu.Lock()
	e := s.exts[id]
	if e == nil {
		s.mu.Unlock()
		renderError(w, statusForbidden, errExtUnknownID, "Unknown %s", hdrExtID)
		return
	}
	initErr := &InitError{Payload: body, ContentType: ct, Extension: e.name, ExtensionErrorType: errType}
	switch {
	case isInit && e.state == extInitError:
		// Repeating an init error changes nothing, as in the RIE.
	case isInit && e.state == extRegistered:
		s.removeExtensionLocked(e, extInitError)
		initErr.Type = typeExtInitError
		s.failInitLocked(initErr)
	case !isInit && e.alive():
		if e.state == extRegistered {
			initErr.Type = typeExtExitError
			s.failInitLocked(initErr)
		}
		s.removeExtensionLocked(e, extExitError)
	default:
		from, to := e.stateName(), "InitError"
		if !isInit {
			to = "Exited"
		}
		s.mu.Unlock()
		renderExtensionTransition(w, from, to, id)
		return
	}
	s.broadcastLocked()
	s.mu.Unlock()
	s.log.Warn("extension reported an error", "name", e.name, "init", isInit, "errorType", errType)
	renderAccepted(w)
}
