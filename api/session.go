package api

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"

	"routehound/engine"
	"routehound/hub"
)

// The dashboard's browser sessions reach the table streams and the table
// writes under /ui/v1/ (SessionPrefix), never under /v1/.
//
// Why not the session cookie on /v1: the cookie is ambient (the browser
// sends it with any request to its path, whoever made the page), while
// everything under /v1 authenticates with a bearer token a page must hold
// (the Authorization header, or the WebSocket token subprotocol), which is
// why /v1 checks no Origin. Accepting the cookie there would make every
// /v1 endpoint a CSRF and cross-site WebSocket target the day one of them
// forgot the Origin check, and would widen the cookie's Path from /ui/ to
// /. So the cookie keeps its Path (/ui/) and SameSite=Strict, /v1 keeps no
// ambient credential at all, and the few endpoints the table page needs
// are mounted again under /ui/v1/ with the same handlers (the same code as
// /v1: subscriptions, limits, redaction, If-Match), behind allowSession:
//
//   - a live session (the rh_session cookie; 401 unauthorized without one);
//   - a same-origin request: Sec-Fetch-Site, when sent, must be
//     same-origin; Origin, when sent, must name this host; and one of the
//     two proofs must be there: an Origin naming this host, or, for a
//     request that is not a WebSocket handshake (a browser sends no Origin
//     on a same-origin GET), the session's CSRF token in the
//     X-RouteHound-CSRF header, which a cross-site page can neither read
//     nor send without a CORS preflight that nothing here answers.
//     Otherwise 403 cross_origin, and nothing is done;
//   - the session's role (dashboard or admin) maps to the API role of the
//     same name, with the same permissions (a secret table is admin's).
//
// A stream opened by a session ends when the session does (logout, expiry,
// eviction): Session.Context.
const SessionPrefix = "/ui/v1"

// SessionCSRFHeader carries the session's CSRF token on a request that has
// no Origin header (a same-origin GET: the SSE stream).
const SessionCSRFHeader = "X-RouteHound-CSRF"

// Session is a dashboard session as the api sees it.
type Session struct {
	Role Role
	CSRF string // the session's CSRF token
	// Context ends when the session does (logout, expiry, eviction):
	// streams it opened end with it. nil: never.
	Context context.Context
}

// SessionFunc resolves a request's dashboard session (its cookie).
type SessionFunc func(r *http.Request) (Session, bool)

// MountSession serves the table streams and writes to the dashboard's
// browser sessions under SessionPrefix (see above): SSE per table, the
// WebSocket, and PUT/DELETE of a key, for dashboard and admin sessions.
func (s *Server) MountSession(h *hub.Hub, session SessionFunc) {
	read := []Role{RoleDashboard, RoleAdmin}
	sse, ws := s.sseHandler(h), s.wsHandler(h)
	s.mux.Handle(SessionPrefix+"/tables/{table}/events", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowSession(session, noLane, sse, read...),
	}))
	s.mux.Handle(SessionPrefix+"/ws", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowSession(session, noLane, ws, read...),
	}))
	s.mux.Handle(SessionPrefix+"/tables/{table}/keys/{key...}", s.methods(map[string]http.HandlerFunc{
		"PUT":    s.allowSession(session, engine.LaneTables, func(w http.ResponseWriter, r *http.Request, _ Role) { s.putKey(w, r) }, read...),
		"DELETE": s.allowSession(session, engine.LaneTables, func(w http.ResponseWriter, r *http.Request, _ Role) { s.deleteKey(w, r) }, read...),
	}))
	s.mux.HandleFunc(SessionPrefix+"/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no endpoint %s", r.URL.Path))
	})
}

// sessionKey keys the session's Context in a request's context.
type sessionKey struct{}

// sessionContext is the Context of the session a request came with (nil
// for a bearer request, or a session that never ends).
func sessionContext(r *http.Request) context.Context {
	c, _ := r.Context().Value(sessionKey{}).(context.Context)
	return c
}

// allowSession is allowRole for a dashboard session: 401 without a live
// session, 403 cross_origin for a request that does not prove it comes
// from this origin, 403 forbidden for another role.
func (s *Server) allowSession(session SessionFunc, lane engine.Lane, h func(http.ResponseWriter, *http.Request, Role), roles ...Role) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss, ok := session(r)
		if !ok {
			s.refuse(w, r, lane, errorf(http.StatusUnauthorized, "unauthorized", "no dashboard session: log in at /ui/login (or use /v1 with a bearer token)"))
			return
		}
		if err := checkSessionOrigin(r, ss.CSRF); err != nil {
			s.refuse(w, r, lane, err)
			return
		}
		for _, x := range roles {
			if ss.Role == x {
				if ss.Context != nil {
					r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, ss.Context))
				}
				h(w, r, ss.Role)
				return
			}
		}
		s.refuse(w, r, lane, errorf(http.StatusForbidden, "forbidden", "a %s session cannot use this endpoint", ss.Role))
	}
}

// checkSessionOrigin refuses a session request that may come from another
// site (see SessionPrefix): 403 cross_origin.
func checkSessionOrigin(r *http.Request, csrf string) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return errorf(http.StatusForbidden, "cross_origin", "a %s request is refused with a dashboard session", site)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return errorf(http.StatusForbidden, "cross_origin", "a request from origin %q is refused with a dashboard session", o)
		}
		return nil
	}
	if headerHasToken(r.Header, "Upgrade", "websocket") {
		return errorf(http.StatusForbidden, "cross_origin", "a WebSocket handshake with a dashboard session needs the Origin header")
	}
	got := r.Header.Get(SessionCSRFHeader)
	if got == "" || csrf == "" || subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
		return errorf(http.StatusForbidden, "cross_origin", "a dashboard session request needs the Origin header of this site or the page's %s header", SessionCSRFHeader)
	}
	return nil
}
