package api

import (
	"context"
	"errors"
	"net/http"
)

// The log shipper's status (package uplink, wired by the appliance): GET
// /v1/uplink, admin only. The api does not import the uplink; the
// appliance hands it a function answering the status.

func (s *Server) uplinkRoutes() {
	s.mux.HandleFunc("/v1/uplink", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.uplinkStatus, RoleAdmin),
	}))
	s.mux.HandleFunc("/v1/admin/promote", s.methods(map[string]http.HandlerFunc{
		"POST": s.allow(noLane, s.promoteStandby, RoleAdmin),
	}))
}

// PromoteFunc makes a warm standby the depot's writer (issue 20) and
// answers what to report (a JSON-encodable value). ErrNotStandby: this
// box is not a standby (a primary, or promoted already).
type PromoteFunc func(ctx context.Context) (any, error)

// ErrNotStandby answers a promotion of a box that follows no primary.
var ErrNotStandby = errors.New("api: this box is not a standby")

// SetPromote makes POST /v1/admin/promote call promote; without it the
// endpoint answers 409 not_standby.
func (s *Server) SetPromote(promote PromoteFunc) { s.promote.Store(&promote) }

func (s *Server) promoteStandby(w http.ResponseWriter, r *http.Request) {
	f := s.promote.Load()
	if f == nil {
		s.fail(w, r, errorf(http.StatusConflict, "not_standby", "this box is not a standby: it follows no primary (start it with serve --follow NATS_URL --depot NAME)"))
		return
	}
	res, err := (*f)(r.Context())
	switch {
	case errors.Is(err, ErrNotStandby):
		s.fail(w, r, errorf(http.StatusConflict, "not_standby", "this box is not a standby (promoted already, or a primary)"))
		return
	case err != nil:
		s.log.Error("promotion failed", "err", err)
		s.fail(w, r, errorf(http.StatusServiceUnavailable, "promote_failed", "the promotion failed: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// SetUplink makes GET /v1/uplink answer status() (a JSON-encodable
// value); without it the endpoint answers {"enabled": false}.
func (s *Server) SetUplink(status func() any) { s.uplink.Store(&status) }

func (s *Server) uplinkStatus(w http.ResponseWriter, r *http.Request) {
	if f := s.uplink.Load(); f != nil {
		writeJSON(w, http.StatusOK, (*f)())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"enabled": false})
}
