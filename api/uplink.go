package api

import "net/http"

// The log shipper's status (package uplink, wired by the appliance): GET
// /v1/uplink, admin only. The api does not import the uplink; the
// appliance hands it a function answering the status.

func (s *Server) uplinkRoutes() {
	s.mux.HandleFunc("/v1/uplink", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.uplinkStatus, RoleAdmin),
	}))
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
