package runtimeapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fuzzState is the state a server is put in before the fuzzed request.
type fuzzState struct {
	s      *Server
	h      http.Handler
	extID  string
	flight <-chan invokeOutcome // invocation "fz-0" delivered and unanswered
}

// serve runs one request through the handler directly.
func serve(h http.Handler, ctx context.Context, method, path string, hdr http.Header, body []byte, trailer http.Header) *httptest.ResponseRecorder {
	if hdr == nil {
		hdr = http.Header{}
	}
	r := (&http.Request{
		Method:  method,
		URL:     &url.URL{Path: path},
		Proto:   "HTTP/1.1",
		Header:  hdr,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Trailer: trailer,
		Host:    "127.0.0.1:9001",
	}).WithContext(ctx)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func (fs *fuzzState) invokeAsync(id string) <-chan invokeOutcome {
	ch := make(chan invokeOutcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := fs.s.Invoke(ctx, newInv(id, `{"n":1}`))
		ch <- invokeOutcome{res, err}
	}()
	return ch
}

func setupFuzzState(t *testing.T, state uint8) *fuzzState {
	s := New(Options{FunctionName: "fn", Extensions: []string{"ext"}, MaxResponseBytes: 4096})
	fs := &fuzzState{s: s, h: s.handler()}
	const next = "/2018-06-01/runtime/invocation/next"
	switch state % 5 {
	case 0: // fresh: runtime started, nothing called
	case 1: // runtime called /next, then went away
		serve(fs.h, cancelled(), "GET", next, nil, nil, nil)
	case 2: // invocation in flight
		fs.flight = fs.invokeAsync("fz-0")
		if rec := serve(fs.h, context.Background(), "GET", next, nil, nil, nil); rec.Code != 200 {
			t.Fatalf("setup /next: %d", rec.Code)
		}
	case 3: // init done with an external extension subscribed to INVOKE
		rec := serve(fs.h, context.Background(), "POST", "/2020-01-01/extension/register",
			http.Header{"Lambda-Extension-Name": {"ext"}}, []byte(`{"events":["INVOKE","SHUTDOWN"]}`), nil)
		fs.extID = rec.Header().Get("Lambda-Extension-Identifier")
		serve(fs.h, cancelled(), "GET", "/2020-01-01/extension/event/next", http.Header{"Lambda-Extension-Identifier": {fs.extID}}, nil, nil)
		serve(fs.h, cancelled(), "GET", next, nil, nil, nil)
	case 4: // answered, runtime not back in /next
		ch := fs.invokeAsync("fz-0")
		serve(fs.h, context.Background(), "GET", next, nil, nil, nil)
		serve(fs.h, context.Background(), "POST", "/2018-06-01/runtime/invocation/fz-0/response", nil, []byte("r"), nil)
		if o := <-ch; o.err != nil {
			t.Fatalf("setup invoke: %v", o.err)
		}
	}
	return fs
}

// normalInvoke plays one invocation as a well-behaved runtime would.
func (fs *fuzzState) normalInvoke(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ch := make(chan invokeOutcome, 1)
	go func() {
		res, err := fs.s.Invoke(ctx, newInv(id, `"in"`))
		ch <- invokeOutcome{res, err}
	}()
	rec := serve(fs.h, ctx, "GET", "/2018-06-01/runtime/invocation/next", nil, nil, nil)
	if rec.Code != 200 || rec.Header().Get("Lambda-Runtime-Aws-Request-Id") != id || rec.Body.String() != `"in"` {
		cancel()
		o := <-ch
		return fmt.Errorf("/next: %d %q (invoke: %w)", rec.Code, rec.Body.String(), o.err)
	}
	rec = serve(fs.h, ctx, "POST", "/2018-06-01/runtime/invocation/"+id+"/response", nil, []byte("out"), nil)
	o := <-ch
	if rec.Code != 202 || o.err != nil || string(o.res.Payload) != "out" {
		return fmt.Errorf("/response: %d %s (invoke: %+v %v)", rec.Code, rec.Body.String(), o.res, o.err)
	}
	return nil
}

// FuzzRuntimeAPI throws arbitrary requests at the handler in each state and
// then checks that the server still serves a normal invocation.
func FuzzRuntimeAPI(f *testing.F) {
	f.Add(uint8(0), "GET", "/2018-06-01/runtime/invocation/next", "", "", "", []byte(nil))
	f.Add(uint8(2), "POST", "/2018-06-01/runtime/invocation/{id}/response", "Lambda-Runtime-Function-Response-Mode", "bogus", "", []byte("x"))
	f.Add(uint8(2), "POST", "/2018-06-01/runtime/invocation/{id}/response", "Content-Type", "text/plain", "Function.Oops", []byte(`{"errorMessage":"m"}`))
	f.Add(uint8(2), "POST", "/2018-06-01/runtime/invocation/{id}/error", "Lambda-Runtime-Function-Error-Type", "Function.X", "", []byte("{}"))
	f.Add(uint8(2), "POST", "/2018-06-01/runtime/invocation/{id}/error", "Content-Type", errorWithCauseType, "", []byte(`{"errorCause":1}`))
	f.Add(uint8(2), "POST", "/2018-06-01/runtime/invocation/{id}/response", "", "", "", bytes.Repeat([]byte("z"), 5000))
	f.Add(uint8(4), "POST", "/2018-06-01/runtime/invocation/{id}/response", "", "", "", []byte("dup"))
	f.Add(uint8(0), "POST", "/2018-06-01/runtime/init/error", "Lambda-Runtime-Function-Error-Type", "Runtime.X", "", []byte("{}"))
	f.Add(uint8(1), "POST", "/2018-06-01/runtime/init/error", "", "", "", []byte("{}"))
	f.Add(uint8(3), "GET", "/2020-01-01/extension/event/next", "Lambda-Extension-Identifier", "{ext}", "", []byte(nil))
	f.Add(uint8(3), "POST", "/2020-01-01/extension/exit/error", "Lambda-Extension-Identifier", "{ext}", "", []byte("{}"))
	f.Add(uint8(3), "POST", "/2020-01-01/extension/init/error", "Lambda-Extension-Identifier", "{ext}", "", []byte("{}"))
	f.Add(uint8(0), "POST", "/2020-01-01/extension/register", "Lambda-Extension-Name", "ext", "", []byte(`{"events":["INVOKE"]}`))
	f.Add(uint8(0), "POST", "/2020-01-01/extension/register", "Lambda-Extension-Name", "x", "", []byte(`{"events":["SHUTDOWN"]}`))
	f.Add(uint8(4), "PUT", "/2022-07-01/telemetry", "", "", "", []byte("{}"))
	f.Add(uint8(1), "DELETE", "/2020-08-15/logs", "", "", "", []byte(nil))
	f.Add(uint8(0), "\x00", "\xff/../2018-06-01//runtime", "\r\n", "\n", "\x00", []byte{0})

	f.Fuzz(func(t *testing.T, state uint8, method, path, hdrKey, hdrVal, trailerType string, body []byte) {
		fs := setupFuzzState(t, state)
		path = strings.ReplaceAll(path, "{id}", "fz-0")
		hdr := http.Header{}
		if fs.extID != "" {
			hdr.Set("Lambda-Extension-Identifier", fs.extID)
			hdr.Set("Lambda-Extension-Function-Error-Type", "Extension.Fuzz")
		}
		if hdrKey != "" {
			hdr[hdrKey] = []string{strings.ReplaceAll(hdrVal, "{ext}", fs.extID)}
		}
		var trailer http.Header
		if trailerType != "" {
			trailer = http.Header{
				"Lambda-Runtime-Function-Error-Type": {trailerType},
				"Lambda-Runtime-Function-Error-Body": {base64.StdEncoding.EncodeToString(body)},
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		rec := serve(fs.h, ctx, method, path, hdr, body, trailer)
		cancel()
		switch rec.Code {
		case 200, 202:
		case 400, 403, 404, 405, 413:
			var doc errorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.ErrorType == "" {
				t.Fatalf("%d with body %q", rec.Code, rec.Body.String())
			}
		default:
			t.Fatalf("unexpected status %d", rec.Code)
		}

		if fs.flight != nil {
			// Finish the invocation that was in flight, if the fuzzed request
			// did not; it must end either way.
			serve(fs.h, context.Background(), "POST", "/2018-06-01/runtime/invocation/fz-0/response", nil, []byte("r"), nil)
			select {
			case <-fs.flight:
			case <-time.After(3 * time.Second):
				t.Fatal("in-flight invocation never ended")
			}
		}

		err := fs.normalInvoke("fz-1")
		if err == nil {
			return
		}
		// A request that failed the runtime's init is recovered from the way
		// the agent does: by resetting the runtime.
		var ie *InitError
		if !errors.As(err, &ie) || ie.Extension != "" {
			t.Fatalf("normal invoke after %s %q: %v", method, path, err)
		}
		fs.s.ResetRuntime()
		if err := fs.normalInvoke("fz-2"); err != nil {
			t.Fatalf("normal invoke after reset: %v", err)
		}
	})
}
