package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nubo-dev/nubo/internal/control"
)

// FuzzURLEvent: whatever an unauthenticated caller sends a function URL
// (method, path, query, headers, body), the event the function gets is
// JSON of payload format 2.0 that carries the path and, as text or
// base64, the body.
func FuzzURLEvent(f *testing.F) {
	f.Add("POST", "/a/b", "x=1&x=2&y", "Cookie: a=b; c=d\nContent-Type: application/json", []byte(`{"k":1}`))
	f.Add("GET", "/", "%zz=%", "Content-Type: image/png", []byte{0, 255, 254})
	f.Add("PUT", "/ü/%2F", "", "X-A: 1\nX-A: 2", []byte("plain"))
	f.Fuzz(func(t *testing.T, method, path, query, headers string, body []byte) {
		r := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
		r.Method = method
		r.URL.Path, r.URL.RawQuery = path, query
		for _, line := range strings.Split(headers, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				r.Header.Add(k, strings.TrimSpace(v))
			}
		}
		ev := urlEvent(r, "abc", path, body, "anonymous", nil, "rid", time.Unix(0, 0))
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("event does not marshal: %v", err)
		}
		var back struct {
			Version, RawPath, Body string
			IsBase64Encoded        bool
		}
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("event is not JSON: %v: %s", err, b)
		}
		if back.Version != "2.0" || (utf8.ValidString(path) && back.RawPath != path) {
			t.Fatalf("event version %q path %q; want 2.0, %q", back.Version, back.RawPath, path)
		}
		if len(body) > 0 && !back.IsBase64Encoded && utf8.Valid(body) && back.Body != string(body) {
			t.Fatalf("text body %q came as %q", body, back.Body)
		}
	})
}

// FuzzURLResponse: whatever a function answers its URL with, the HTTP
// response has a valid status, and a structured answer's body is what it
// said (decoded from base64 when it said so).
func FuzzURLResponse(f *testing.F) {
	f.Add([]byte(`{"statusCode":201,"headers":{"a":"b"},"cookies":["c=d"],"body":"hi"}`))
	f.Add([]byte(`{"statusCode":200,"isBase64Encoded":true,"body":"AAE="}`))
	f.Add([]byte(`{"statusCode":99999}`))
	f.Add([]byte(`"just a string"`))
	f.Add([]byte(`{"statusCode":200,"headers":{"content-length":"5","\n":"x"}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		w := httptest.NewRecorder()
		writeURLResponse(w, payload)
		if w.Code < 100 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		var resp urlResponse
		if json.Unmarshal(payload, &resp) != nil || resp.StatusCode == nil {
			if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), payload) {
				t.Fatalf("bare answer %q gave %d %q; want 200 and itself", payload, w.Code, w.Body.Bytes())
			}
		}
	})
}

// TestURLAnswersAndEvents: the cases the fuzz targets cannot judge.
func TestURLAnswersAndEvents(t *testing.T) {
	// A 1xx is no final answer.
	w := httptest.NewRecorder()
	writeURLResponse(w, []byte(`{"statusCode":101,"headers":{"upgrade":"websocket"}}`))
	if w.Code != http.StatusBadGateway {
		t.Errorf("statusCode 101: %d; want 502", w.Code)
	}
	// Any origin never gets credentials.
	yes := true
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Origin", "https://evil.example")
	w = httptest.NewRecorder()
	corsHeaders(w, r, &control.Cors{AllowOrigins: []string{"*"}, AllowCredentials: &yes})
	if w.Header().Get("Access-Control-Allow-Origin") != "*" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("wildcard with credentials: %v; want * and no credentials", w.Header())
	}
	r.Header.Set("Origin", "https://app.example")
	w = httptest.NewRecorder()
	corsHeaders(w, r, &control.Cors{AllowOrigins: []string{"https://app.example"}, AllowCredentials: &yes})
	if w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" || w.Header().Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("named origin with credentials: %v", w.Header())
	}
	// The raw path as sent; binary without a content type as base64.
	r = httptest.NewRequest("POST", "/lambda-url/"+strings.Repeat("a", 32)+"/a%2Fb/%C3%BC?q=%zz&k=v", bytes.NewReader([]byte{0xff, 0}))
	id, raw, ok := urlTarget(r)
	if !ok || id != strings.Repeat("a", 32) || raw != "/a%2Fb/%C3%BC" {
		t.Fatalf("urlTarget: %q %q %v", id, raw, ok)
	}
	ev := urlEvent(r, id, raw, []byte{0xff, 0}, "anonymous", nil, "rid", time.Unix(0, 0))
	rc := ev["requestContext"].(map[string]any)["http"].(map[string]any)
	if ev["rawPath"] != "/a%2Fb/%C3%BC" || rc["path"] != "/a/b/ü" || ev["isBase64Encoded"] != true || ev["body"] != "/wA=" {
		t.Errorf("event: %v", ev)
	}
	// AWS's event has these keys, as null: handlers may index them.
	for _, k := range []string{"pathParameters", "stageVariables"} {
		if v, ok := ev[k]; !ok || v != nil {
			t.Errorf("event[%q] = %v, %v; want null", k, v, ok)
		}
	}
	if q, _ := ev["queryStringParameters"].(map[string]string); q["k"] != "v" {
		t.Errorf("a bad escape lost the other parameters: %v", ev["queryStringParameters"])
	}
}
