package api

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"

	"routehound/engine"
	"routehound/fleet"
)

// Role of a token.
type Role string

const (
	RoleDriver    Role = "driver"
	RoleDispatch  Role = "dispatch"
	RoleWarehouse Role = "warehouse"
	RoleDashboard Role = "dashboard"
	RoleAdmin     Role = "admin"
)

// Tokens maps tokens to roles. Tokens are kept hashed, so that the lookup
// time does not depend on how much of a guess matches a real token.
type Tokens struct {
	byHash map[[32]byte]Role
}

// NewTokens indexes token → role pairs.
func NewTokens(pairs map[string]Role) *Tokens {
	t := &Tokens{byHash: map[[32]byte]Role{}}
	for tok, role := range pairs {
		t.byHash[sha256.Sum256([]byte(tok))] = role
	}
	return t
}

// Role resolves a token.
func (t *Tokens) Role(token string) (Role, bool) {
	r, ok := t.byHash[sha256.Sum256([]byte(token))]
	return r, ok
}

// authenticate reads "Authorization: Bearer <token>": 401 when missing or
// unknown, counted against the source address; 429 too_many_failures for
// an address past its failures (FailureLimiter), whatever its token.
func (s *Server) authenticate(r *http.Request) (Role, error) {
	if retry, blocked := s.failures.Blocked(r); blocked {
		return "", tooManyFailures(retry)
	}
	role, err := s.bearer(r)
	if err != nil {
		s.failures.Failed(r)
	}
	return role, err
}

// wsTokenProtocol prefixes the WebSocket subprotocol that carries a bearer
// token (base64url, unpadded) for a client that cannot set Authorization
// on a WebSocket (a browser; /v1/client.js). The token is not ambient (a
// page must hold it), so it needs no Origin check, like the header.
const wsTokenProtocol = "routehound.bearer."

// bearer resolves the request's bearer token: the Authorization header,
// or on a WebSocket handshake without one, the token subprotocol.
func (s *Server) bearer(r *http.Request) (Role, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if tok, ok := wsProtocolToken(r); ok {
			h = "Bearer " + tok
		}
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if h == "" {
		return "", errorf(http.StatusUnauthorized, "unauthorized", "missing Authorization: Bearer <token>")
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errorf(http.StatusUnauthorized, "unauthorized", "Authorization must be Bearer <token>")
	}
	role, ok := s.tokens.Role(strings.TrimSpace(tok))
	if !ok {
		return "", errorf(http.StatusUnauthorized, "unauthorized", "unknown token")
	}
	return role, nil
}

// allow wraps h so that only the given roles reach it: 401 for a missing or
// unknown token, 403 for another role. lane names the ledger line refusals
// are counted on (noLane for none).
func (s *Server) allow(lane engine.Lane, h http.HandlerFunc, roles ...Role) http.HandlerFunc {
	return s.allowRole(lane, func(w http.ResponseWriter, r *http.Request, _ Role) { h(w, r) }, roles...)
}

// allowRole is allow for handlers whose answer depends on the caller's
// role (the secret tables, readable by admin only).
func (s *Server) allowRole(lane engine.Lane, h func(http.ResponseWriter, *http.Request, Role), roles ...Role) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		role, err := s.authenticate(r)
		if err != nil {
			s.refuse(w, r, lane, err)
			return
		}
		for _, x := range roles {
			if role == x {
				if role != RoleDriver && !unwatched(r.URL.Path) {
					// Someone for the driver limit to protect
					// (engine/elastic.go): a read or a write by another
					// actor; not a metrics scrape, a profile, a backup.
					s.e.NoteForeground()
				}
				h(w, r, role)
				return
			}
		}
		s.refuse(w, r, lane, errorf(http.StatusForbidden, "forbidden", "a %s token cannot use this endpoint", role))
	}
}

// checkRead refuses a non-admin read of a secret table (fleet.IsSecret:
// devices, device_status, quarantine): a device id is a phone's only
// credential. 403 forbidden, like any endpoint a role may not use.
func checkRead(role Role, table string) error {
	if role != RoleAdmin && fleet.IsSecret(table) {
		return errorf(http.StatusForbidden, "forbidden", "table %q holds the phones' device ids (their credentials): only an admin token reads it", table)
	}
	return nil
}

// noLane is the lane of endpoints whose refusals are on no actor's ledger
// line (reads, subscriptions, the admin's).
const noLane engine.Lane = 255

// refuse answers a refusal decided in the api and counts it on the lane's
// ledger line, so that bad input and auth failures show per actor.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, lane engine.Lane, err error) {
	if lane != noLane {
		reason := "error"
		if ae, ok := err.(*apiError); ok {
			reason = ae.code
		}
		s.e.Reject(lane, reason)
	}
	s.fail(w, r, err)
}

// wsProtocolToken reads the token of a WebSocket handshake's
// "routehound.bearer.<base64url(token)>" subprotocol. A value that does not
// decode counts as no token (the answer is then 401 missing Authorization).
func wsProtocolToken(r *http.Request) (string, bool) {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), wsTokenProtocol)
			if !ok {
				continue
			}
			tok, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil || len(tok) == 0 {
				return "", false
			}
			return string(tok), true
		}
	}
	return "", false
}

// unwatched reports whether path is an operator's tool (metrics, profiles,
// a backup, the uplink's status) rather than an actor at work: it does not
// make the elastic driver limit eligible (engine/elastic.go).
func unwatched(path string) bool {
	return path == "/metrics" || strings.HasPrefix(path, "/debug/pprof/") ||
		path == "/v1/admin/backup" || path == "/v1/uplink"
}
