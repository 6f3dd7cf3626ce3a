package api_test

// The OpenAPI document (docs/openapi.yaml) is checked here two ways: it
// loads and validates as OpenAPI 3.1, and every answer the HTTP
// integration tests receive through fixture.send is validated against it
// (checkAnswer), so that the reference cannot drift from the code.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"routehound/api"
	"routehound/config"
	"routehound/docs"
	"routehound/uplink"
)

var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// openAPI loads and validates docs/openapi.yaml once per test binary.
func openAPI() (*openapi3.T, routers.Router, error) {
	spec.once.Do(func() {
		// The trail's exports (api/history.go): GPX is XML, read as text
		// (the history tests parse it); GeoJSON is JSON.
		openapi3filter.RegisterBodyDecoder("application/gpx+xml", openapi3filter.PlainBodyDecoder)
		openapi3filter.RegisterBodyDecoder("application/geo+json", openapi3filter.JSONBodyDecoder)
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(docs.OpenAPI)
		if err != nil {
			spec.err = fmt.Errorf("loading docs/openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(loader.Context, openapi3.EnableSchemaFormatValidation()); err != nil {
			spec.err = fmt.Errorf("validating docs/openapi.yaml: %w", err)
			return
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			spec.err = fmt.Errorf("routing docs/openapi.yaml: %w", err)
			return
		}
		spec.doc, spec.router = doc, r
		// GET /v1/client.js answers JavaScript: a string, read whole.
		openapi3filter.RegisterBodyDecoder("text/javascript", openapi3filter.FileBodyDecoder)
	})
	return spec.doc, spec.router, spec.err
}

// routingRequest is req as the document's router should see it: a key of
// /v1/tables/{table}/keys/{key} may hold '/', which the server takes as
// part of the key ({key...}) and an OpenAPI path parameter cannot, so the
// key's slashes are escaped for the lookup only.
func routingRequest(req *http.Request) *http.Request {
	p := req.URL.EscapedPath()
	const pre = "/v1/tables/"
	if !strings.HasPrefix(p, pre) {
		return req
	}
	table, rest, ok := strings.Cut(p[len(pre):], "/keys/")
	if !ok || strings.Contains(table, "/") || !strings.Contains(rest, "/") {
		return req
	}
	u := *req.URL
	u.RawPath = pre + table + "/keys/" + strings.ReplaceAll(rest, "/", "%2F")
	pu, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return req
	}
	u.Path = pu
	r2 := req.Clone(req.Context())
	r2.URL = &u
	return r2
}

// checkAnswer validates one answer to req against docs/openapi.yaml. The
// route must be documented: a path or method the document does not list
// is allowed only as the server's generic refusal of it (404 not_found for
// an unknown /v1/ path, 405 method_not_allowed with Allow naming exactly
// the documented methods), and a status an operation does not list fails.
// An event stream's body (text/event-stream) is not read here; its route,
// status and headers are still checked.
func checkAnswer(req *http.Request, status int, header http.Header, body []byte) error {
	doc, router, err := openAPI()
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(routingRequest(req))
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		return checkGenericRefusal(doc, req, status, header, body, http.StatusMethodNotAllowed, "method_not_allowed")
	case errors.Is(err, routers.ErrPathNotFound):
		if !strings.HasPrefix(req.URL.Path, "/v1/") && !strings.HasPrefix(req.URL.Path, "/ui/v1/") {
			return fmt.Errorf("%s %s is not in docs/openapi.yaml", req.Method, req.URL.Path)
		}
		return checkGenericRefusal(doc, req, status, header, body, http.StatusNotFound, "not_found")
	case err != nil:
		return fmt.Errorf("finding %s %s in docs/openapi.yaml: %w", req.Method, req.URL.Path, err)
	}
	if status == http.StatusTooManyRequests && bytes.Contains(body, []byte(`"too_many_failures"`)) {
		// Common to every authenticated operation (info.description).
		if sec := route.Operation.Security; sec != nil && len(*sec) == 0 {
			return fmt.Errorf("%s %s: too_many_failures on an operation without authentication", req.Method, req.URL.Path)
		}
		if header.Get("Retry-After") == "" {
			return fmt.Errorf("%s %s: 429 too_many_failures without Retry-After", req.Method, req.URL.Path)
		}
		return validateError(doc, header, body, "too_many_failures")
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt == "text/event-stream" {
		opts.ExcludeResponseBody = true
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                opts,
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s (operation %s) answered %d %s: %w", req.Method, req.URL.Path,
			route.Operation.OperationID, status, bytes.TrimSpace(body), err)
	}
	seen.Store(route.Operation.OperationID+" "+strconv.Itoa(status), true)
	return nil
}

// seen holds the documented answers ("operationId status") that the tests
// received and validated.
var seen sync.Map

// TestMain runs the tests; with ROUTEHOUND_OPENAPI_COVERAGE set it then
// lists the documented answers that no test received.
func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv("ROUTEHOUND_OPENAPI_COVERAGE") != "" {
		if doc, _, err := openAPI(); err == nil {
			var all, missing []string
			for path, item := range doc.Paths.Map() {
				for method, op := range item.Operations() {
					for st := range op.Responses.Map() {
						k := op.OperationID + " " + st
						all = append(all, k)
						if _, ok := seen.Load(k); !ok {
							missing = append(missing, fmt.Sprintf("%s (%s %s)", k, method, path))
						}
					}
				}
			}
			slices.Sort(missing)
			fmt.Printf("openapi coverage: %d of %d documented answers received and validated; not received:\n  %s\n",
				len(all)-len(missing), len(all), strings.Join(missing, "\n  "))
		}
	}
	os.Exit(code)
}

// checkGenericRefusal checks the answer to an undocumented path or method.
func checkGenericRefusal(doc *openapi3.T, req *http.Request, status int, header http.Header, body []byte, want int, code string) error {
	what := fmt.Sprintf("%s %s (not in docs/openapi.yaml)", req.Method, req.URL.Path)
	if status != want {
		return fmt.Errorf("%s answered %d %s; an undocumented route may only answer %d %s", what, status, bytes.TrimSpace(body), want, code)
	}
	if err := validateError(doc, header, body, code); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if want != http.StatusMethodNotAllowed {
		return nil
	}
	// Allow must name exactly the methods the document lists for the path.
	var item *openapi3.PathItem
	for path, pi := range doc.Paths.Map() {
		if templateMatches(path, req.URL.EscapedPath()) {
			item = pi
		}
	}
	if item == nil {
		return fmt.Errorf("%s: 405 for a path the document does not list", what)
	}
	var documented []string
	for m := range item.Operations() {
		documented = append(documented, strings.ToUpper(m))
	}
	var allow []string
	for _, m := range strings.Split(header.Get("Allow"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			allow = append(allow, m)
		}
	}
	slices.Sort(documented)
	slices.Sort(allow)
	if !slices.Equal(documented, allow) {
		return fmt.Errorf("%s: Allow %v, the document lists %v", what, allow, documented)
	}
	return nil
}

// templateMatches reports whether an OpenAPI path template matches path,
// its last parameter of /keys/{key} taking the rest (as the server does).
func templateMatches(template, path string) bool {
	ts, ps := strings.Split(template, "/"), strings.Split(path, "/")
	if strings.HasSuffix(template, "/keys/{key}") && len(ps) > len(ts) {
		ps = append(ps[:len(ts)-1], strings.Join(ps[len(ts)-1:], "/"))
	}
	if len(ts) != len(ps) {
		return false
	}
	for i := range ts {
		if strings.HasPrefix(ts[i], "{") {
			if ps[i] == "" {
				return false
			}
		} else if ts[i] != ps[i] {
			return false
		}
	}
	return true
}

// validateError checks body against the document's Error schema and code.
func validateError(doc *openapi3.T, header http.Header, body []byte, code string) error {
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", header.Get("Content-Type"))
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("body %s is not JSON: %w", bytes.TrimSpace(body), err)
	}
	schema := doc.Components.Schemas["Error"].Value
	if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("body %s does not match Error: %w", bytes.TrimSpace(body), err)
	}
	if got := v.(map[string]any)["code"]; got != code {
		return fmt.Errorf("code %v, want %s", got, code)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The document itself
// ---------------------------------------------------------------------------

// TestOpenAPIDocument: the document loads and validates as OpenAPI 3.1;
// every operation names its roles (x-roles) consistently with its security;
// and every operation the server routes is in it.
func TestOpenAPIDocument(t *testing.T) {
	doc, _, err := openAPI()
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	roles := map[string]bool{"driver": true, "dispatch": true, "warehouse": true, "dashboard": true, "admin": true}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			raw, ok := op.Extensions["x-roles"]
			if !ok {
				t.Errorf("%s has no x-roles", name)
				continue
			}
			list, ok := raw.([]any)
			if !ok {
				t.Errorf("%s: x-roles %v is not a list", name, raw)
				continue
			}
			for _, r := range list {
				s, _ := r.(string)
				if !roles[s] {
					t.Errorf("%s: x-roles names %v, not a role", name, r)
				}
				if !strings.Contains(op.Description, "`"+s+"`") {
					t.Errorf("%s: the description does not name role `%s`", name, s)
				}
			}
			open := op.Security != nil && len(*op.Security) == 0
			if open != (len(list) == 0) {
				t.Errorf("%s: open (security: []) is %v but x-roles is %v", name, open, list)
			}
			if !open {
				if op.Responses.Status(http.StatusUnauthorized) == nil || op.Responses.Status(http.StatusForbidden) == nil {
					t.Errorf("%s needs a token but documents no 401 or 403", name)
				}
			}
			for _, st := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
				if r := op.Responses.Status(st); r != nil && r.Value.Headers["Retry-After"] == nil {
					t.Errorf("%s: %d without Retry-After", name, st)
				}
			}
		}
	}
	// The routes the server serves (api/server.go, api/tables.go,
	// MountHub), each with its methods.
	for _, c := range []struct{ path, methods string }{
		{"/v1/drivers/{driver}/locations", "POST"},
		{"/v1/drivers/stream", "GET"},
		{"/v1/assignments/{route}", "GET PUT"},
		{"/v1/loading-events", "GET POST"},
		{"/v1/drivers/{driver}/trail", "GET"},
		{"/v1/assignments/{route}/history", "GET"},
		{"/v1/log", "GET"},
		{"/v1/tables", "GET"},
		{"/v1/tables/{table}", "GET"},
		{"/v1/tables/{table}/keys/{key}", "DELETE GET PUT"},
		{"/v1/tables/{table}/events", "GET"},
		{"/v1/ws", "GET"},
		{"/healthz", "GET"},
		{"/readyz", "GET"},
		{"/metrics", "GET"},
		{"/v1/openapi.yaml", "GET"},
		{"/v1/client.js", "GET"},
		{"/v1/devices/{id}", "DELETE GET PUT"},
		{"/v1/admin/drivers/{driver}/reset", "POST"},
		{"/v1/uplink", "GET"},
		{"/v1/admin/promote", "POST"},
		{"/v1/admin/backup", "GET"},
		{"/ui/v1/tables/{table}/keys/{key}", "DELETE PUT"},
		{"/ui/v1/tables/{table}/events", "GET"},
		{"/ui/v1/ws", "GET"},
	} {
		item := doc.Paths.Value(c.path)
		if item == nil {
			t.Errorf("%s is not documented", c.path)
			continue
		}
		var got []string
		for m := range item.Operations() {
			got = append(got, m)
		}
		slices.Sort(got)
		if strings.Join(got, " ") != c.methods {
			t.Errorf("%s documents %v, the server serves %s", c.path, got, c.methods)
		}
	}
}

// TestOpenAPIErrorCodes: every (status, code) the api's source can answer
// is documented on some operation with that status, and every code of the
// ErrorCode enum is one the source answers: the list of stable codes
// cannot go stale either way.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc, _, err := openAPI()
	if err != nil {
		t.Fatal(err)
	}
	// (status, code) pairs the document gives on some operation.
	documented := map[string]bool{
		"405 method_not_allowed": true, // on every path (info.description), checked by checkGenericRefusal
		"429 too_many_failures":  true, // on every authenticated path (info.description), checked by checkAnswer
		"404 not_found":          true,
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for st, r := range op.Responses.Map() {
				for _, c := range responseCodes(r.Value) {
					documented[st+" "+c] = true
				}
			}
		}
	}
	statusByName := map[string]int{}
	for s := 100; s < 600; s++ {
		if txt := http.StatusText(s); txt != "" {
			statusByName["Status"+strings.NewReplacer(" ", "", "-", "", "'", "").Replace(txt)] = s
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`errorf\(http\.(Status\w+),\s*"([a-z_]+)"`)
	inSource := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			st, ok := statusByName[string(m[1])]
			if !ok {
				t.Errorf("%s: unknown status name %s", f, m[1])
				continue
			}
			inSource[string(m[2])] = true
			if pair := strconv.Itoa(st) + " " + string(m[2]); !documented[pair] {
				t.Errorf("%s answers %s, which no operation in docs/openapi.yaml documents", f, pair)
			}
		}
	}
	if len(inSource) < 20 {
		t.Fatalf("found only %d codes in the api's source; the pattern no longer matches how errors are made", len(inSource))
	}
	for _, c := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		if !inSource[c.(string)] {
			t.Errorf("ErrorCode lists %q, which the api's source never answers", c)
		}
	}
	for c := range inSource {
		if !slices.Contains(doc.Components.Schemas["ErrorCode"].Value.Enum, any(c)) {
			t.Errorf("the api answers code %q, missing from ErrorCode", c)
		}
	}
}

// responseCodes returns the error codes a response lists: the enum of the
// code property in its allOf beside the Error schema.
func responseCodes(r *openapi3.Response) []string {
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		return nil
	}
	var out []string
	for _, part := range mt.Schema.Value.AllOf {
		if part.Ref != "" {
			continue // Error itself: its code admits every ErrorCode
		}
		if p := part.Value.Properties["code"]; p != nil {
			for _, e := range p.Value.Enum {
				out = append(out, e.(string))
			}
		}
	}
	return out
}

// TestOpenAPIValidatorCatchesDrift: the hook in fixture.send fails on an
// answer that does not match the document, so that its passing means
// something.
func TestOpenAPIValidatorCatchesDrift(t *testing.T) {
	req := func(method, path string) *http.Request {
		r, err := http.NewRequest(method, "http://127.0.0.1:1"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	jsonHdr := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	row := `{"key":"k","value":{"a":1},"version":1,"lsn":7}`
	for _, c := range []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   string
		ok     bool
	}{
		{"a valid row", req("GET", "/v1/tables/t/keys/k"), 200, jsonHdr("ETag", `"1"`), row, true},
		{"a key with slashes", req("GET", "/v1/tables/t/keys/a/b/c"), 200, jsonHdr("ETag", `"1"`), row, true},
		{"a row without its ETag", req("GET", "/v1/tables/t/keys/k"), 200, jsonHdr(), row, false},
		{"a row with an extra field", req("GET", "/v1/tables/t/keys/k"), 200, jsonHdr("ETag", `"1"`), `{"key":"k","value":1,"version":1,"lsn":7,"x":1}`, false},
		{"a row without lsn", req("GET", "/v1/tables/t/keys/k"), 200, jsonHdr("ETag", `"1"`), `{"key":"k","value":1,"version":1}`, false},
		{"a string version", req("GET", "/v1/tables/t/keys/k"), 200, jsonHdr("ETag", `"1"`), `{"key":"k","value":1,"version":"1","lsn":7}`, false},
		{"an undocumented status", req("GET", "/v1/tables/t/keys/k"), 418, jsonHdr(), `{"code":"not_found","message":"m"}`, false},
		{"a code not listed for the status", req("GET", "/v1/tables/t/keys/k"), 404, jsonHdr(), `{"code":"version_conflict","message":"m"}`, false},
		{"a code not listed at all", req("GET", "/v1/tables/t/keys/k"), 404, jsonHdr(), `{"code":"nope","message":"m"}`, false},
		{"an error without message", req("GET", "/v1/tables/t/keys/k"), 404, jsonHdr(), `{"code":"not_found"}`, false},
		{"a 429 without Retry-After", req("PUT", "/v1/tables/t/keys/k"), 429, jsonHdr(), `{"code":"lane_full","message":"m"}`, false},
		{"a 429 with Retry-After", req("PUT", "/v1/tables/t/keys/k"), 429, jsonHdr("Retry-After", "1"), `{"code":"lane_full","message":"m"}`, true},
		{"a 401 without WWW-Authenticate", req("GET", "/v1/log"), 401, jsonHdr(), `{"code":"unauthorized","message":"m"}`, false},
		{"text where JSON is documented", req("GET", "/v1/log"), 200, http.Header{"Content-Type": {"text/plain"}}, `{"records":[],"next":null}`, false},
		{"a bad committed_at", req("GET", "/v1/log"), 200, jsonHdr(), `{"records":[{"lsn":1,"table":"t","key":"k","op":"put","value":1,"version":1,"actor":"tables","committed_at":"yesterday"}],"next":null}`, false},
		{"a bad op", req("GET", "/v1/log"), 200, jsonHdr(), `{"records":[{"lsn":1,"table":"t","key":"k","op":"upsert","value":1,"version":1,"actor":"tables","committed_at":"2026-11-23T10:00:00Z"}],"next":null}`, false},
		{"a valid log page", req("GET", "/v1/log"), 200, jsonHdr(), `{"records":[{"lsn":1,"table":"t","key":"k","op":"put","value":1,"version":1,"actor":"tables","committed_at":"2026-11-23T10:00:00.123Z"}],"next":1}`, true},
		{"an undocumented /v1 path answering 200", req("GET", "/v1/nope"), 200, jsonHdr(), `{}`, false},
		{"an undocumented /v1 path answering 404", req("GET", "/v1/nope"), 404, jsonHdr(), `{"code":"not_found","message":"m"}`, true},
		{"an undocumented path outside /v1", req("GET", "/nope"), 404, jsonHdr(), `{"code":"not_found","message":"m"}`, false},
		{"an undocumented method answering 405 with the documented Allow", req("PATCH", "/v1/tables/t/keys/k"), 405, jsonHdr("Allow", "GET, PUT, DELETE"), `{"code":"method_not_allowed","message":"m"}`, true},
		{"a 405 whose Allow lists an undocumented method", req("PATCH", "/v1/tables/t/keys/k"), 405, jsonHdr("Allow", "GET, PUT, DELETE, POST"), `{"code":"method_not_allowed","message":"m"}`, false},
		{"an undocumented method answering 200", req("PATCH", "/v1/tables/t/keys/k"), 200, jsonHdr(), row, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkAnswer(c.req, c.status, c.header, []byte(c.body))
			if c.ok && err != nil {
				t.Fatalf("refused a valid answer: %v", err)
			}
			if !c.ok && err == nil {
				t.Fatal("accepted an answer that does not match the document")
			}
		})
	}
}

// TestWebSocketHandshakeRefusals: the two WebSocket endpoints refuse a
// request that is not a WebSocket handshake as the document says (the
// answers are validated by fixture.send).
func TestWebSocketHandshakeRefusals(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		path string
		role api.Role
	}{{"/v1/ws", api.RoleDashboard}, {"/v1/drivers/stream", api.RoleDriver}} {
		r := f.do(t, "GET", c.path, tok(c.role), nil)
		wantError(t, r, http.StatusUpgradeRequired, "upgrade_required")
		if r.header.Get("Upgrade") != "websocket" {
			t.Errorf("%s: 426 without Upgrade: websocket (%q)", c.path, r.header.Get("Upgrade"))
		}
		r = f.do(t, "GET", c.path, tok(c.role), nil, "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "12")
		wantError(t, r, http.StatusBadRequest, "bad_handshake")
		if r.header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("%s: bad version answered without Sec-WebSocket-Version: 13", c.path)
		}
		r = f.do(t, "GET", c.path, tok(c.role), nil, "Connection", "keep-alive, Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13")
		wantError(t, r, http.StatusBadRequest, "bad_handshake") // no Sec-WebSocket-Key
	}
}

// TestOpenAPIServed: GET /v1/openapi.yaml answers the embedded document,
// open (no token), as application/yaml.
func TestOpenAPIServed(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "GET", "/v1/openapi.yaml", "", nil)
	wantStatus(t, r, http.StatusOK)
	if ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); ct != "application/yaml" {
		t.Fatalf("Content-Type %q, want application/yaml", r.header.Get("Content-Type"))
	}
	if !bytes.Equal(r.body, docs.OpenAPI) {
		t.Fatalf("served %d bytes, not the embedded document (%d bytes)", len(r.body), len(docs.OpenAPI))
	}
	// It loads as the same document from what was served.
	if _, err := openapi3.NewLoader().LoadFromData(r.body); err != nil {
		t.Fatalf("the served document does not load: %v", err)
	}
	// A token does not matter; a wrong method is refused like elsewhere.
	wantStatus(t, f.do(t, "GET", "/v1/openapi.yaml", tok("driver"), nil), http.StatusOK)
	wantError(t, f.do(t, "POST", "/v1/openapi.yaml", "", `{}`), http.StatusMethodNotAllowed, "method_not_allowed")
}

// ---------------------------------------------------------------------------
// Stream messages
// ---------------------------------------------------------------------------

// wantSchema checks one JSON message against a component schema of the
// document (the SSE data and WebSocket messages, which fixture.send does
// not see).
func wantSchema(t testing.TB, name string, msg []byte) {
	t.Helper()
	doc, _, err := openAPI()
	if err != nil {
		t.Fatal(err)
	}
	ref := doc.Components.Schemas[strings.TrimPrefix(name, "#/components/schemas/")]
	if ref == nil {
		t.Fatalf("docs/openapi.yaml has no schema %s", name)
	}
	var v any
	if err := json.Unmarshal(msg, &v); err != nil {
		t.Fatalf("message %s is not JSON: %v", msg, err)
	}
	if err := ref.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()); err != nil {
		t.Fatalf("message %s does not match %s in docs/openapi.yaml: %v", msg, name, err)
	}
}

// sseSchema is the schema the document names for an SSE event type
// (x-sse-events of GET /v1/tables/{table}/events).
func sseSchema(t testing.TB, event string) string {
	t.Helper()
	doc, _, err := openAPI()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := doc.Paths.Value("/v1/tables/{table}/events").Get.Extensions["x-sse-events"].(map[string]any)
	s, ok := m[event].(string)
	if !ok {
		t.Fatalf("event type %q is not in x-sse-events of docs/openapi.yaml", event)
	}
	return s
}

// TestOpenAPIStreamMessages: what the SSE stream, the table WebSocket and
// the driver stream send matches the shapes docs/openapi.yaml documents,
// and the stream endpoints' HTTP refusals go through the validated send.
func TestOpenAPIStreamMessages(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.Hub.MaxSubscribersPerTable = 2 }})
	dash := tok(api.RoleDashboard)
	f.putKey(t, "oa", "a", `{"n":1}`)
	f.putKey(t, "oa", "b/c", `[1,"x",null]`)

	// SSE: the head, the snapshot (rows without id, then the end with id),
	// and live changes.
	s := f.mustSSE(t, "/v1/tables/oa/events", dash)
	head, err := http.NewRequest("GET", f.url+"/v1/tables/oa/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAnswer(head, http.StatusOK, s.header, nil); err != nil {
		t.Fatal(err)
	}
	check := func(ev sseEvent, event string, withID bool) {
		t.Helper()
		if ev.event != event || ev.hasID != withID {
			t.Fatalf("event %v; want event %s (id: %v)", ev, event, withID)
		}
		wantSchema(t, sseSchema(t, ev.event), []byte(ev.data))
	}
	check(s.next(t), "put", false)
	check(s.next(t), "put", false)
	check(s.next(t), "snapshot", true)
	f.putKey(t, "oa", "a", `"two"`)
	check(s.next(t), "put", true)
	f.deleteKey(t, "oa", "a")
	check(s.next(t), "delete", true)

	// Refusals of the SSE endpoint, validated by send: a bad from, a bad
	// table name, and the subscriber limit (2 here: s and s2 are open).
	wantError(t, f.do(t, "GET", "/v1/tables/oa/events?from=x", dash, nil), http.StatusBadRequest, "bad_parameter")
	wantError(t, f.do(t, "GET", "/v1/tables/a%20b/events", dash, nil), http.StatusBadRequest, "bad_name")
	s2 := f.mustSSE(t, "/v1/tables/oa/events?from=0", dash)
	check(s2.next(t), "put", true) // the log from LSN 0: the first put
	wantError(t, f.do(t, "GET", "/v1/tables/oa/events", dash, nil), http.StatusTooManyRequests, "too_many_subscribers")
	s.close()
	s2.close()

	// The table WebSocket: snapshot, change, ack, error.
	w := f.mustWS(t, dash)
	w.send(t, map[string]any{"op": "subscribe", "table": "oa"})
	for {
		fr := w.next(t)
		wantSchema(t, "WsServerMessage", []byte(fr.raw))
		wantSchema(t, "WsSnapshot", []byte(fr.raw))
		if fr.Last {
			break
		}
	}
	w.send(t, `{"op":"put","table":"oa","key":"k","value":{"v":1},"id":"r1"}`)
	for range 2 { // the change and the ack, in either order
		fr := w.next(t)
		wantSchema(t, "WsServerMessage", []byte(fr.raw))
		if fr.Type != "change" && fr.Type != "ack" {
			t.Fatalf("frame %v; want the change and the ack of the put", fr)
		}
		wantSchema(t, map[string]string{"change": "WsChange", "ack": "WsAck"}[fr.Type], []byte(fr.raw))
	}
	for _, msg := range []string{`{"op":"nope","id":"r2"}`, `{"op":"put","table":"positions","key":"k","value":1,"id":"r3"}`, `{"op":"subscribe","table":"a b"}`} {
		w.send(t, msg)
		fr := w.next(t)
		wantSchema(t, "WsServerMessage", []byte(fr.raw))
		wantSchema(t, "StreamError", []byte(fr.raw))
	}
	// With batch, changes come as "changes" frames.
	wb := f.mustWS(t, dash)
	wb.send(t, map[string]any{"op": "subscribe", "table": "oa", "batch": true, "from": 0})
	f.putKey(t, "oa", "k2", `{"v":2}`)
	for seen := 0; seen < 6; { // the log from LSN 0: oa's five writes above, then k2
		fr := wb.next(t)
		wantSchema(t, "WsServerMessage", []byte(fr.raw))
		wantSchema(t, "WsChanges", []byte(fr.raw))
		seen += len(fr.Changes)
	}

	// The driver stream: the ack at once, the durable_seq later, an error.
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	write := func(msg string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	read := func() []byte {
		t.Helper()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write(`{"driver":"van-9","points":[` + pointJSON(1) + `]}`)
	wantSchema(t, "DriverStreamAck", read())
	// The point becomes durable with the next fsync; a dispatch write
	// forces one now.
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-9", tok(api.RoleDispatch), assignJSON("van-9", ""), "Idempotency-Key", "oa-1"), http.StatusCreated)
	wantSchema(t, "DriverStreamDurable", read())
	write(`{"driver":"van-9","points":[{"seq":0}]}`)
	wantSchema(t, "StreamError", read())
}

// TestOpenAPIDocumentedRefusals: refusals the other tests do not make, so
// that their documented answers are received and validated too.
func TestOpenAPIDocumentedRefusals(t *testing.T) {
	f := newFixture(t)
	dash, disp := tok(api.RoleDashboard), tok(api.RoleDispatch)
	wantError(t, f.do(t, "GET", "/v1/tables/u/keys/a%01b", dash, nil), http.StatusBadRequest, "bad_key")
	wantError(t, f.do(t, "GET", "/v1/tables/a%20b/keys/k", dash, nil), http.StatusBadRequest, "bad_name")
	wantError(t, f.do(t, "GET", "/v1/assignments/a%20b", disp, nil), http.StatusBadRequest, "bad_name")
	// An Idempotency-Key reused for another write of a user table.
	wantStatus(t, f.do(t, "PUT", "/v1/tables/u/keys/k", dash, `1`, "Idempotency-Key", "oa-k"), http.StatusCreated)
	wantStatus(t, f.do(t, "PUT", "/v1/tables/u/keys/k", dash, `1`, "Idempotency-Key", "oa-k"), http.StatusCreated)
	wantError(t, f.do(t, "PUT", "/v1/tables/u/keys/k", dash, `2`, "Idempotency-Key", "oa-k"), http.StatusUnprocessableEntity, "idempotency_key_reused")
	wantError(t, f.do(t, "DELETE", "/v1/tables/u/keys/k", dash, nil, "Idempotency-Key", "oa-k"), http.StatusUnprocessableEntity, "idempotency_key_reused")
	// A key whose name holds '/' is one key (the rest of the path).
	wantStatus(t, f.do(t, "PUT", "/v1/tables/u/keys/x/y", dash, `{}`), http.StatusCreated)
	wantError(t, f.do(t, "GET", "/v1/tables/u/keys/x", dash, nil), http.StatusNotFound, "not_found")
	r := f.do(t, "DELETE", "/v1/tables/u/keys/x/y", dash, nil)
	wantStatus(t, r, http.StatusOK)
	if str(t, object(t, r, "key", "lsn")["key"]) != "x/y" {
		t.Fatalf("DELETE x/y: %s", r.body)
	}
}

// TestDriverStreamLaneFullSaysWhenToResend: a frame refused because the
// driver lane stayed full carries retry_after_ms (a frame has no
// Retry-After header), and the refusal matches its documented schema.
func TestDriverStreamLaneFullSaysWhenToResend(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Driver.QueueBound = 50
		c.Lanes.Driver.FlushWithin = time.Minute // nothing drains: the lane stays full
	}})
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	for _, frame := range []string{pointsJSON(1, 50), pointsJSON(51, 60)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-1","points":`+frame+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	_, ack, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSchema(t, "DriverStreamAck", ack)
	_, b, err := c.Read(ctx) // after the half-second wait for room
	if err != nil {
		t.Fatal(err)
	}
	wantSchema(t, "StreamError", b)
	var m struct {
		Code         string `json:"code"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Code != "lane_full" || m.RetryAfterMS < 1 {
		t.Fatalf("refusal %s (%v): want lane_full with retry_after_ms >= 1", b, err)
	}
}

// A central view's GET /v1/uplink, with a depot whose record was rejected,
// matches its schema (the rejected fields were once missing from it, and
// additionalProperties: false refused every central answer).
func TestOpenAPICentralStatus(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st := uplink.CentralStatus{Role: "central", URL: "nats://127.0.0.1:4222",
		Streams: []uplink.StreamStatus{{Stream: "RH", Connected: true}},
		Depots: []uplink.DepotPosition{{Depot: "north", Stream: "RH", StreamCreated: at, StreamSeq: 9, LSN: 7, At: at, Records: 7,
			Rejected: 1, LastRejected: &uplink.RejectedRecord{LSN: 5, StreamSeq: 6, Table: "bad table", Key: "k", Op: "put", Error: "a table name is 1 to 64 bytes"}}},
		Applied: 7, DurableLSN: 7}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	wantSchema(t, "#/components/schemas/CentralStatus", b)
}
