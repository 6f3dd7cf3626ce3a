package api

import (
	"errors"
	"fmt"
	"net/http"

	"routehound/engine"
)

// The admin's repairs (admin token only), mounted under /v1/admin/.

func (s *Server) adminRoutes() {
	s.mux.HandleFunc("/v1/admin/drivers/{driver}/reset", s.methods(map[string]http.HandlerFunc{
		"POST": s.allow(engine.LaneTables, s.resetDriver, RoleAdmin),
	}))
}

// resetDriver serves POST /v1/admin/drivers/{driver}/reset: it deletes the
// driver's latest position and forgets its seq marks (engine.ResetDriver),
// so that its next point is taken whatever its seq. It repairs a driver
// whose seq went wrong (a phone that jumped far ahead, say); the driver's
// history stays in the log.
func (s *Server) resetDriver(w http.ResponseWriter, r *http.Request) {
	driver := r.PathValue("driver")
	if err := checkName("driver", driver); err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return
	}
	res, err := s.e.ResetDriver(r.Context(), driver)
	if errors.Is(err, engine.ErrNotFound) {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "driver %s has no stored position: nothing to reset", driver))
		return
	}
	if err != nil {
		s.fail(w, r, fmt.Errorf("resetting driver %s: %w", driver, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"driver": driver, "lsn": res.LSN})
}
