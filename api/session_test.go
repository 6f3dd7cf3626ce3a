package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/api"
	"routehound/internal/apptest"
)

// The dashboard's browser sessions on the table streams and writes
// (api/session.go): under /ui/v1 with the session cookie, same-origin
// only; /v1 never takes the cookie.

var csrfAttr = regexp.MustCompile(`data-csrf="([^"]+)"`)

// dashSession is a logged-in dashboard session: its cookie and the CSRF
// token its pages carry.
type dashSession struct {
	cookie string // "rh_session=…"
	csrf   string
}

// loginSession logs in at /ui/login as the browser does (the login form's
// double-submit token, same origin) and reads the session's CSRF token from
// a table page.
func (f *fixture) loginSession(t *testing.T, role api.Role) dashSession {
	t.Helper()
	noRedirect := &http.Client{Transport: f.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(f.url + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var login *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "rh_login" {
			login = c
		}
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if login == nil || m == nil {
		t.Fatalf("login page: no rh_login cookie or csrf field (status %d)", res.StatusCode)
	}
	form := url.Values{"csrf": {string(m[1])}, "token": {tok(role)}}
	req, _ := http.NewRequest("POST", f.url+"/ui/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.url)
	req.AddCookie(login)
	res, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var s dashSession
	for _, c := range res.Cookies() {
		if c.Name == "rh_session" && c.Value != "" {
			s.cookie = c.Name + "=" + c.Value
		}
	}
	if res.StatusCode != http.StatusSeeOther || s.cookie == "" {
		t.Fatalf("login as %s: %d, no session cookie", role, res.StatusCode)
	}
	page := f.sessionDo(t, "GET", "/ui/tables/anything", s.cookie, "")
	mm := csrfAttr.FindSubmatch(page.body)
	if page.status != http.StatusOK || mm == nil {
		t.Fatalf("table page: %d, no data-csrf", page.status)
	}
	s.csrf = string(mm[1])
	return s
}

// sessionDo sends a request with a cookie (and hdr: name, value pairs)
// and no bearer token; an answer under /ui/v1 must match docs/openapi.yaml.
func (f *fixture) sessionDo(t *testing.T, method, path, cookie, body string, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if strings.HasPrefix(path, api.SessionPrefix+"/") {
		if err := checkAnswer(req, res.StatusCode, res.Header, raw); err != nil {
			t.Fatalf("%s %s: the answer does not match docs/openapi.yaml: %v", method, path, err)
		}
	}
	return resp{status: res.StatusCode, header: res.Header, body: raw}
}

// dialSessionWS opens /ui/v1/ws with hdr.
func (f *fixture) dialSessionWS(hdr ...string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+api.SessionPrefix+"/ws", &websocket.DialOptions{HTTPHeader: h})
}

// wantWSRefused: the handshake was answered status with the JSON code.
func wantWSRefused(t *testing.T, what string, res *http.Response, err error, status int, code string) {
	t.Helper()
	if err == nil || res == nil {
		t.Fatalf("%s: the handshake was accepted (%v), want %d %s", what, err, status, code)
	}
	var e struct{ Code, Message string }
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != status || json.Unmarshal(raw, &e) != nil || e.Code != code || e.Message == "" {
		t.Fatalf("%s: %d %s, want %d {code %q, message}", what, res.StatusCode, raw, status, code)
	}
}

// TestSessionTableEndpoints: a dashboard session reaches the table streams
// and writes under /ui/v1 from its own origin; a cross-origin request with
// the cookie, or one that proves no origin, is refused with cross_origin
// and does nothing; no cookie is 401 as before; /v1 does not take the
// cookie at all.
func TestSessionTableEndpoints(t *testing.T) {
	f := newFixture(t)
	s := f.loginSession(t, api.RoleDashboard)
	origin := f.url
	keyPath := api.SessionPrefix + "/tables/notes/keys/gate"
	events := api.SessionPrefix + "/tables/notes/events"
	written := func(t *testing.T) bool {
		t.Helper()
		return f.do(t, "GET", "/v1/tables/notes/keys/gate", tok(api.RoleDashboard), nil).status == http.StatusOK
	}

	t.Run("no cookie", func(t *testing.T) {
		wantError(t, f.sessionDo(t, "PUT", keyPath, "", `1`, "Origin", origin), http.StatusUnauthorized, "unauthorized")
		wantError(t, f.sessionDo(t, "GET", events, "", "", "Origin", origin), http.StatusUnauthorized, "unauthorized")
		wantError(t, f.sessionDo(t, "PUT", keyPath, "rh_session=not-a-session", `1`, "Origin", origin), http.StatusUnauthorized, "unauthorized")
		_, res, err := f.dialSessionWS("Origin", origin)
		wantWSRefused(t, "WebSocket without a cookie", res, err, http.StatusUnauthorized, "unauthorized")
		// /v1 takes bearer tokens only: the cookie, even same-origin, is no credential there.
		wantError(t, f.sessionDo(t, "PUT", "/v1/tables/notes/keys/gate", s.cookie, `1`, "Origin", origin), http.StatusUnauthorized, "unauthorized")
		wantError(t, f.sessionDo(t, "GET", "/v1/tables/notes/events", s.cookie, "", api.SessionCSRFHeader, s.csrf), http.StatusUnauthorized, "unauthorized")
		if written(t) {
			t.Fatal("a request without a session wrote")
		}
	})

	t.Run("cross origin", func(t *testing.T) {
		for name, hdr := range map[string][]string{
			"another origin":          {"Origin", "http://evil.example"},
			"another port":            {"Origin", strings.Replace(origin, "127.0.0.1:", "127.0.0.1:1", 1)},
			"origin null":             {"Origin", "null"},
			"cross-site fetch":        {"Sec-Fetch-Site", "cross-site", api.SessionCSRFHeader, s.csrf},
			"same-site fetch":         {"Sec-Fetch-Site", "same-site", "Origin", origin},
			"no origin, no token":     {},
			"no origin, wrong token":  {api.SessionCSRFHeader, "guess"},
			"cross origin with token": {"Origin", "http://evil.example", api.SessionCSRFHeader, s.csrf},
		} {
			wantError(t, f.sessionDo(t, "PUT", keyPath, s.cookie, `1`, hdr...), http.StatusForbidden, "cross_origin")
			wantError(t, f.sessionDo(t, "DELETE", keyPath, s.cookie, "", hdr...), http.StatusForbidden, "cross_origin")
			if st, r := f.openSSE(t, events, "", append([]string{"Cookie", s.cookie}, hdr...)...); st != nil {
				t.Fatalf("%s: the event stream was opened", name)
			} else {
				wantError(t, r, http.StatusForbidden, "cross_origin")
			}
			// A WebSocket handshake needs the Origin: a CSRF header is not enough.
			_, res, err := f.dialSessionWS(append([]string{"Cookie", s.cookie}, hdr...)...)
			wantWSRefused(t, name+": WebSocket", res, err, http.StatusForbidden, "cross_origin")
		}
		_, res, err := f.dialSessionWS("Cookie", s.cookie, api.SessionCSRFHeader, s.csrf)
		wantWSRefused(t, "WebSocket without Origin", res, err, http.StatusForbidden, "cross_origin")
		if written(t) {
			t.Fatal("a cross-origin request with the session cookie wrote")
		}
	})

	t.Run("same origin", func(t *testing.T) {
		c, res, err := f.dialSessionWS("Cookie", s.cookie, "Origin", origin)
		if err != nil {
			t.Fatalf("same-origin WebSocket: %v (%v)", err, res)
		}
		ws := wrapWS(t, c)
		rows, _ := ws.subscribe(t, "notes")
		if len(rows) != 0 {
			t.Fatalf("snapshot %v, want none", rows)
		}
		sse := f.mustSSE(t, events, "", "Cookie", s.cookie, api.SessionCSRFHeader, s.csrf, "Sec-Fetch-Site", "same-origin")
		if ev := sse.next(t); ev.event != "snapshot" {
			t.Fatalf("first event %v, want the snapshot", ev)
		}

		r := f.sessionDo(t, "PUT", keyPath, s.cookie, `{"open": true}`, "Origin", origin, "If-Match", `"0"`)
		if r.status != http.StatusCreated {
			t.Fatalf("same-origin PUT: %d %s", r.status, r.body)
		}
		// If-Match as on /v1: a stale version is refused.
		wantError(t, f.sessionDo(t, "PUT", keyPath, s.cookie, `2`, "Origin", origin, "If-Match", `"7"`), http.StatusConflict, "version_conflict")
		lsn := num[uint64](t, object(t, r)["lsn"])
		if fr := ws.next(t); fr.Type != "change" || fr.Key != "gate" || fr.LSN != lsn {
			t.Fatalf("WebSocket frame %v, want the change of gate at %d", fr, lsn)
		}
		wantChange(t, sse.next(t), "put", "gate", `{"open":true}`, lsn)

		r = f.sessionDo(t, "DELETE", keyPath, s.cookie, "", "Origin", origin, "If-Match", `"1"`)
		if r.status != http.StatusOK {
			t.Fatalf("same-origin DELETE: %d %s", r.status, r.body)
		}
		if fr := ws.next(t); fr.Type != "change" || fr.Op != "delete" || fr.Key != "gate" {
			t.Fatalf("WebSocket frame %v, want the delete of gate", fr)
		}
		if ev := sse.next(t); ev.event != "delete" {
			t.Fatalf("event %v, want the delete", ev)
		}

		// Writes over the session's WebSocket go through the tables lane too.
		ws.send(t, map[string]any{"op": "put", "table": "notes", "key": "k2", "value": 1, "id": "r1"})
		for fr := ws.next(t); fr.Type != "ack"; fr = ws.next(t) {
			if fr.Type != "change" {
				t.Fatalf("frame %v, want the put's change and ack", fr)
			}
		}
	})

	t.Run("role", func(t *testing.T) {
		// The session's role has the API role's permissions: the phones'
		// device ids are admin's only.
		st, r := f.openSSE(t, api.SessionPrefix+"/tables/devices/events", "", "Cookie", s.cookie, "Origin", origin)
		if st != nil {
			t.Fatal("a dashboard session opened the devices table")
		}
		wantError(t, r, http.StatusForbidden, "forbidden")
		admin := f.loginSession(t, api.RoleAdmin)
		f.mustSSE(t, api.SessionPrefix+"/tables/devices/events", "", "Cookie", admin.cookie, "Origin", origin).close()
		wantError(t, f.sessionDo(t, "GET", api.SessionPrefix+"/nope", admin.cookie, ""), http.StatusNotFound, "not_found")
		wantError(t, f.sessionDo(t, "POST", keyPath, admin.cookie, "1", "Origin", origin), http.StatusMethodNotAllowed, "method_not_allowed")
	})

	t.Run("logout ends the streams", func(t *testing.T) {
		s := f.loginSession(t, api.RoleDashboard)
		c, _, err := f.dialSessionWS("Cookie", s.cookie, "Origin", origin)
		if err != nil {
			t.Fatal(err)
		}
		ws := wrapWS(t, c)
		ws.subscribe(t, "notes")
		sse := f.mustSSE(t, events, "", "Cookie", s.cookie, "Origin", origin)
		sse.next(t)
		form := url.Values{"csrf": {s.csrf}}
		req, _ := http.NewRequest("POST", f.url+"/ui/logout", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", s.cookie)
		req.Header.Set("Origin", origin)
		noRedirect := &http.Client{Transport: f.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := noRedirect.Do(req)
		if err != nil || res.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %v %v", res, err)
		}
		res.Body.Close()
		select {
		case err := <-ws.done:
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("WebSocket ended with %v, want a policy-violation close (session ended)", err)
			}
		case <-time.After(streamWait):
			t.Fatal("the session's WebSocket outlived its logout")
		}
		select {
		case <-sse.done:
		case <-time.After(streamWait):
			t.Fatal("the session's event stream outlived its logout")
		}
		wantError(t, f.sessionDo(t, "PUT", keyPath, s.cookie, `1`, "Origin", origin), http.StatusUnauthorized, "unauthorized")
	})
}

// TestSSEOverHTTP2: an event stream over HTTP/2 (which cannot be hijacked)
// streams on the handler's goroutine: the snapshot, then changes; over
// HTTP/1.1 the same server hijacks (TestSession… and the stream tests).
func TestSSEOverHTTP2(t *testing.T) {
	s := apptest.Start(t, apptest.Options{})
	ts := httptest.NewUnstartedServer(s.App.API)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*streamWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/tables/h2/events", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token(t, "dashboard"))
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET events over TLS: %d %s %q", res.StatusCode, res.Proto, res.Header.Get("Content-Type"))
	}
	events := make(chan sseEvent, 16)
	go readSSE(ctx, res.Body, events)
	next := func() sseEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-ctx.Done():
			t.Fatal("no event over HTTP/2")
		}
		return sseEvent{}
	}
	if ev := next(); ev.event != "snapshot" {
		t.Fatalf("first event %v, want the snapshot", ev)
	}
	put, _ := http.NewRequestWithContext(ctx, "PUT", s.URL+"/v1/tables/h2/keys/k", strings.NewReader(`{"n":1}`))
	put.Header.Set("Authorization", "Bearer "+s.Token(t, "dashboard"))
	put.Header.Set("Content-Type", "application/json")
	pr, err := s.Client.Do(put)
	if err != nil || pr.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", pr, err)
	}
	pr.Body.Close()
	if ev := next(); ev.event != "put" || !ev.hasID {
		t.Fatalf("event %v, want the put", ev)
	}
}
