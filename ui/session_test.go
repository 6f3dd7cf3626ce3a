package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

func TestNothingWithoutASession(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	for _, p := range []string{"/ui/", "/ui/fleet", "/ui/routes", "/ui/warehouse", "/ui/tables", "/ui/tables/t1", "/ui/system", "/ui/live/table?table=t1&from=0", "/ui/nope"} {
		st, body, h := f.get(c, p)
		if st != http.StatusSeeOther || h.Get("Location") != "/ui/login" {
			t.Errorf("GET %s without a session: %d %q, want 303 to /ui/login", p, st, h.Get("Location"))
		}
		if strings.Contains(body, "data-lane") || strings.Contains(body, "data-key") {
			t.Errorf("GET %s without a session served data", p)
		}
	}
	st, _, h := f.get(c, "/")
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d %q, want 303 to /ui/", st, h.Get("Location"))
	}
	// A form POST without a session changes nothing.
	st, _, _ = f.post(c, "/ui/tables/t1/put", url.Values{"key": {"k"}, "value": {"1"}, "csrf": {"x"}})
	if st != http.StatusForbidden {
		t.Errorf("POST without a session: %d, want 403", st)
	}
	if n := f.keys("t1"); n != 0 {
		t.Errorf("table t1 has %d keys after refused POST", n)
	}
}

func TestLogin(t *testing.T) {
	f := newFixture(t, Options{Secure: true})
	c := f.client()
	st, body, h := f.get(c, "/ui/login")
	if st != 200 || !strings.Contains(body, `name="token"`) {
		t.Fatalf("login form: %d\n%s", st, body)
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("no CSP: %q", h.Get("Content-Security-Policy"))
	}
	csrf := csrfOf(t, body)

	// Without the login form's token: 403.
	if st, _, _ := f.post(f.client(), "/ui/login", url.Values{"token": {dashToken}}); st != http.StatusForbidden {
		t.Errorf("login without csrf: %d, want 403", st)
	}
	// Wrong token, and a token of another role: 401, the form, no session.
	for _, tok := range []string{"wrong-token-wrong-token", driverToken} {
		st, body, h = f.post(c, "/ui/login", url.Values{"token": {tok}, "csrf": {csrf}})
		if st != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) {
			t.Errorf("login with %q: %d, want 401 with the form", tok, st)
		}
		for _, ck := range h.Values("Set-Cookie") {
			if strings.HasPrefix(ck, sessionCookie+"=") {
				t.Errorf("a refused login set a session: %s", ck)
			}
		}
		csrf = csrfOf(t, body)
	}
	if st, _, _ := f.get(c, "/ui/"); st != http.StatusSeeOther {
		t.Fatalf("after failed logins /ui/ answers %d, want 303", st)
	}
	st, _, h = f.post(c, "/ui/login", url.Values{"token": {adminToken}, "csrf": {csrf}})
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/" {
		t.Fatalf("admin login: %d %q", st, h.Get("Location"))
	}
	var cookie string
	for _, ck := range h.Values("Set-Cookie") {
		if strings.HasPrefix(ck, sessionCookie+"=") {
			cookie = ck
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Secure", "Path=/ui/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
}

func TestLogoutEndsSession(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	csrf := f.login(c, dashToken)
	if st, _, _ := f.post(c, "/ui/logout", url.Values{}); st != http.StatusForbidden {
		t.Errorf("logout without csrf: %d, want 403", st)
	}
	if st, _, _ := f.get(c, "/ui/"); st != 200 {
		t.Fatalf("session ended by a refused logout: %d", st)
	}
	st, _, h := f.post(c, "/ui/logout", url.Values{"csrf": {csrf}})
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/login" {
		t.Fatalf("logout: %d %q", st, h.Get("Location"))
	}
	if st, _, _ := f.get(c, "/ui/"); st != http.StatusSeeOther {
		t.Errorf("after logout /ui/ answers %d, want 303", st)
	}
}

func TestSessionsExpireAndAreBounded(t *testing.T) {
	s := newSessions(time.Hour, 3)
	old := s.create("dashboard", time.Now().Add(-2*time.Hour)) // expired an hour ago
	req := func(id string) *http.Request {
		r, _ := http.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: id})
		return r
	}
	if _, ok := s.get(req(old.id)); ok {
		t.Fatal("an expired session is still valid")
	}
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, s.create("dashboard", time.Now().Add(time.Duration(i)*time.Second)).id)
	}
	if len(s.m) != 3 {
		t.Fatalf("%d sessions kept, bound is 3", len(s.m))
	}
	if _, ok := s.get(req(ids[0])); ok {
		t.Error("the oldest session survived past the bound")
	}
	if _, ok := s.get(req(ids[4])); !ok {
		t.Error("the newest session was dropped")
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	csrf := f.login(c, dashToken)
	for _, form := range []url.Values{
		{"key": {"k"}, "value": {"1"}},
		{"key": {"k"}, "value": {"1"}, "csrf": {"wrong"}},
	} {
		if st, body, _ := f.post(c, "/ui/tables/t1/put", form); st != http.StatusForbidden || !strings.Contains(body, `"code":"csrf"`) {
			t.Errorf("put with %v: %d %s, want 403 csrf", form, st, body)
		}
	}
	// The right token from another site: refused too.
	req, _ := http.NewRequest("POST", f.srv.URL+"/ui/tables/t1/put", strings.NewReader(url.Values{"key": {"k"}, "value": {"1"}, "csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin put: %d, want 403", resp.StatusCode)
	}
	if n := f.keys("t1"); n != 0 {
		t.Fatalf("refused POSTs wrote %d keys", n)
	}
	if st, _, _ := f.post(c, "/ui/tables/t1/put", url.Values{"key": {"k"}, "value": {"1"}, "csrf": {csrf}}); st != http.StatusSeeOther {
		t.Fatalf("put with csrf: %d, want 303", st)
	}
	if n := f.keys("t1"); n != 1 {
		t.Fatalf("put with csrf: %d keys, want 1", n)
	}
}

func TestLiveRefusesCrossSiteAndIsBounded(t *testing.T) {
	f := newFixture(t, Options{MaxLive: 1})
	c := f.client()
	f.login(c, dashToken)
	for _, hdr := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
		{"Sec-Fetch-Site": "cross-site"},
	} {
		req, _ := http.NewRequest("GET", f.srv.URL+"/ui/live/channels", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("live with %v: %d, want 403", hdr, resp.StatusCode)
		}
	}
	ls := f.live(c, "/ui/live/channels")
	ls.next(t, 5*time.Second)
	f.waitFor(func() bool { return f.u.LiveConnections() == 1 }, "one live connection counted")
	resp, err := c.Get(f.srv.URL + "/ui/live/channels")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second live connection over max_live=1: %d, want 429", resp.StatusCode)
	}
}

// TestDeviceTablesAdminOnly (issue 18): the tables of the phones' device
// ids are the admin's only on the dashboard too: a dashboard session gets
// 403 on their page, on their live stream and on a (refused) form post that
// would render them; an admin session reads them.
func TestDeviceTablesAdminOnly(t *testing.T) {
	f := newFixture(t, Options{})
	const id = "secret-phone-7q2x"
	if err := f.e.PutPhoneRecord(context.Background(), fleet.TableDeviceStatus, id, []byte(`{"device":"`+id+`"}`)); err != nil {
		t.Fatal(err)
	}
	dash, admin := f.client(), f.client()
	csrf := f.login(dash, dashToken)
	f.login(admin, adminToken)
	lsn := f.e.DurableLSN()
	for _, p := range []string{"/ui/tables/device_status", "/ui/tables/devices", "/ui/tables/quarantine",
		fmt.Sprintf("/ui/live/table?table=device_status&from=%d", lsn)} {
		st, body, _ := f.get(dash, p)
		if st != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) || strings.Contains(body, id) {
			t.Errorf("dashboard GET %s: %d %s", p, st, body)
		}
	}
	st, body, _ := f.post(dash, "/ui/tables/device_status/put", url.Values{"key": {"k"}, "value": {"1"}, "csrf": {csrf}})
	if st != http.StatusForbidden || strings.Contains(body, id) {
		t.Errorf("dashboard POST to device_status: %d %s", st, body)
	}
	if st, body, _ := f.get(admin, "/ui/tables/device_status"); st != http.StatusOK || !strings.Contains(body, id) {
		t.Errorf("admin GET device_status: %d", st)
	}
	f.live(admin, fmt.Sprintf("/ui/live/table?table=device_status&from=%d", lsn))
}

// A live stream ends with its session (issue 18): at logout, and at
// expiry, the open stream gets a reload (which lands on the login form) and
// ends, instead of streaming on for as long as the browser stays.
func TestLiveStreamEndsWithItsSession(t *testing.T) {
	for _, how := range []string{"logout", "expiry"} {
		t.Run(how, func(t *testing.T) {
			ttl := time.Hour
			if how == "expiry" {
				ttl = 1500 * time.Millisecond
			}
			f := newFixture(t, Options{SessionTTL: ttl})
			c := f.client()
			csrf := f.login(c, dashToken)
			_, body, _ := f.get(c, "/ui/")
			ls := f.live(c, liveOf(t, body))
			ls.next(t, 5*time.Second) // streaming
			if how == "logout" {
				if st, _, _ := f.post(c, "/ui/logout", url.Values{"csrf": {csrf}}); st != http.StatusSeeOther {
					t.Fatalf("logout: %d", st)
				}
			}
			wait := 5 * time.Second
			if how == "expiry" {
				wait += ttl
			}
			deadline := time.After(wait)
			for {
				select {
				case m, ok := <-ls.frames:
					if !ok {
						t.Fatal("the stream ended without a reload")
					}
					if m.event != "reload" {
						continue
					}
					if _, ok := <-ls.frames; ok {
						t.Fatal("the stream went on after the reload")
					}
					return
				case <-deadline:
					t.Fatalf("the live stream outlived the session's %s", how)
				}
			}
		})
	}
}

// A legacy positions value (stored with its device id before issue 18)
// shows on a dashboard session's table page and live stream without the
// id; an admin session's shows it as stored.
func TestLegacyPositionsWithoutDeviceID(t *testing.T) {
	f := newFixture(t, Options{})
	const id = "legacy-phone-4k8w"
	fix := int64(1763899200000)
	legacy := func() {
		t.Helper()
		fix += 1000
		if _, err := f.e.SubmitPhonePoint(context.Background(), engine.PhonePoint{Driver: "anna", Device: id, FixMs: fix, Lat: 52.5, Lng: 13.4,
			Value: []byte(`{"lat":52.5,"lng":13.4,"device":"` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	legacy()
	dash, admin := f.client(), f.client()
	f.login(dash, dashToken)
	f.login(admin, adminToken)
	_, body, _ := f.get(dash, "/ui/tables/positions")
	if strings.Contains(body, id) || !strings.Contains(body, "52.5") {
		t.Fatalf("dashboard positions page:\n%s", body)
	}
	if _, body, _ := f.get(admin, "/ui/tables/positions"); !strings.Contains(body, id) {
		t.Fatal("the admin's positions page lost the stored value")
	}
	ls := f.live(dash, liveOf(t, body))
	legacy()
	fr, m := ls.next(t, 5*time.Second)
	if len(fr.Upsert) == 0 || strings.Contains(m.data, id) || !strings.Contains(m.data, "52.5") {
		t.Fatalf("dashboard live frame: %s", m.data)
	}
}
