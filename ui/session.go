package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"routehound/fleet"
)

const (
	sessionCookie = "rh_session"
	loginCookie   = "rh_login" // double-submit CSRF token of the login form
	csrfField     = "csrf"
)

// session is one logged-in browser.
type session struct {
	id      string
	role    string
	csrf    string
	expires time.Time
	// ctx ends with the session (logout, expiry, eviction): the table
	// streams it opened under /ui/v1 (api.MountSession) end with it.
	ctx    context.Context
	cancel context.CancelFunc
}

// Session resolves a request's dashboard session (its cookie) for the
// table streams and writes the api serves to sessions (api.MountSession):
// its role, its CSRF token, and a context that ends with it.
func (u *UI) Session(r *http.Request) (role, csrf string, ctx context.Context, ok bool) {
	s, ok := u.sessions.get(r)
	if !ok {
		return "", "", nil, false
	}
	return s.role, s.csrf, s.ctx, true
}

// canRead reports whether the session may read table: the tables of the
// phones' device ids (fleet.IsSecret) are the admin's only, as in the API.
func (s *session) canRead(table string) bool {
	return s.role == "admin" || !fleet.IsSecret(table)
}

// failSecret refuses a dashboard session a table of device ids.
func failSecret(w http.ResponseWriter, table string) {
	fail(w, http.StatusForbidden, "forbidden", "table "+strconv.Quote(table)+" holds the phones' device ids (their credentials): log in with an admin token to read it")
}

// sessions is the bounded session store. Policy when full: expired
// sessions are dropped first, then the one closest to expiring.
type sessions struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[string]*session
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{ttl: ttl, max: max, m: map[string]*session{}}
}

// randomToken is 256 random bits (crypto/rand, which does not fail).
func randomToken() string { return rand.Text() + rand.Text() }

// create starts a session for role.
func (s *sessions) create(role string, now time.Time) *session {
	ss := &session{id: randomToken(), role: role, csrf: randomToken(), expires: now.Add(s.ttl)}
	ss.ctx, ss.cancel = context.WithDeadline(context.Background(), ss.expires)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		for id, x := range s.m {
			if now.After(x.expires) {
				x.cancel()
				delete(s.m, id)
			}
		}
	}
	for len(s.m) >= s.max {
		var oldest *session
		for _, x := range s.m {
			if oldest == nil || x.expires.Before(oldest.expires) {
				oldest = x
			}
		}
		oldest.cancel()
		delete(s.m, oldest.id)
	}
	s.m[ss.id] = ss
	return ss
}

// get returns the request's live session.
func (s *sessions) get(r *http.Request) (*session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[c.Value]
	if !ok {
		return nil, false
	}
	if time.Now().After(ss.expires) {
		ss.cancel()
		delete(s.m, ss.id)
		return nil, false
	}
	return ss, true
}

// alive reports whether session id is still logged in at now (not ended
// by a logout, not expired, not evicted): a live stream asks it each frame.
func (s *sessions) alive(id string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	return ok && !now.After(ss.expires)
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	if ss, ok := s.m[id]; ok {
		ss.cancel()
		delete(s.m, id)
	}
	s.mu.Unlock()
}

// fail answers a refusal as JSON {"code","message"}, as the API does.
func fail(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}

// page wraps a GET page: without a session it redirects to the login.
func (u *UI) page(h func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := u.sessions.get(r)
		if !ok {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, s)
	}
}

// form wraps a state-changing POST: a session, a same-origin request and
// the session's CSRF token, or 403 and nothing done.
func (u *UI) form(h func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := u.sessions.get(r)
		if !ok {
			fail(w, http.StatusForbidden, "no_session", "log in first (no dashboard session)")
			return
		}
		if !sameOrigin(r) {
			fail(w, http.StatusForbidden, "cross_origin", "a cross-site request is refused")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			fail(w, http.StatusBadRequest, "bad_form", "the form could not be read: "+err.Error())
			return
		}
		got := r.PostForm.Get(csrfField)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
			fail(w, http.StatusForbidden, "csrf", "missing or wrong CSRF token; reload the page and try again")
			return
		}
		h(w, r, s)
	}
}

// sameOrigin reports whether a browser request comes from this site. A
// request without Origin and Sec-Fetch-Site (a same-origin GET, or not a
// browser) passes; the session cookie is SameSite=Strict besides.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	ou, err := url.Parse(o)
	if err != nil || ou.Host == "" {
		return false
	}
	return strings.EqualFold(ou.Host, r.Host)
}

func (u *UI) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, Secure: u.opt.Secure, SameSite: http.SameSiteStrictMode})
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	u.renderLogin(w, r, http.StatusOK, "")
}

func (u *UI) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	u.setCookie(w, loginCookie, tok, 600)
	w.Header().Set("Cache-Control", "no-store")
	render(w, r, status, loginPage(tok, msg))
}

// login checks the token (dashboard or admin) and starts a session.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if u.opt.Failures != nil {
		if retry, blocked := u.opt.Failures.Blocked(r); blocked {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int((retry+time.Second-1)/time.Second))))
			fail(w, http.StatusTooManyRequests, "too_many_failures", "too many failed logins from this address; try again later")
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		fail(w, http.StatusBadRequest, "bad_form", "the form could not be read: "+err.Error())
		return
	}
	c, err := r.Cookie(loginCookie)
	got := r.PostForm.Get(csrfField)
	if !sameOrigin(r) || err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(c.Value)) != 1 {
		fail(w, http.StatusForbidden, "csrf", "missing or wrong CSRF token; reload the login page and try again")
		return
	}
	role, ok := "", false
	if u.opt.Role != nil {
		role, ok = u.opt.Role(strings.TrimSpace(r.PostForm.Get("token")))
	}
	if !ok && u.opt.Failures != nil {
		u.opt.Failures.Failed(r) // an unknown token; a known one of another role guesses nothing
	}
	if !ok || (role != "dashboard" && role != "admin") {
		u.renderLogin(w, r, http.StatusUnauthorized, "Unknown token, or not a dashboard or admin token.")
		return
	}
	s := u.sessions.create(role, time.Now())
	u.setCookie(w, loginCookie, "", -1)
	u.setCookie(w, sessionCookie, s.id, int(u.opt.SessionTTL/time.Second))
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, s *session) {
	u.sessions.end(s.id)
	u.setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
