package api

import (
	"net/http"

	"routehound/engine"
	"routehound/fleet"
)

// Geofences (issue 21): PUT/GET/DELETE /v1/fences/{id}, for dispatch and
// admin, kept in the built-in table `fences` (key = id, value =
// {"name","lat","lng","radius_m"}) and written through the dispatch lane.
// The fleet-events consumer derives fence.enter and fence.exit events
// from them and the drivers' points.

func (s *Server) fenceRoutes() {
	s.mux.HandleFunc("/v1/fences/{id}", s.methods(map[string]http.HandlerFunc{
		"GET":    s.allow(noLane, s.getFence, RoleDispatch, RoleAdmin),
		"PUT":    s.allow(engine.LaneDispatch, s.putFence, RoleDispatch, RoleAdmin),
		"DELETE": s.allow(engine.LaneDispatch, s.deleteFence, RoleDispatch, RoleAdmin),
	}))
}

func (s *Server) getFence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkName("fence", id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeKey(w, r, fleet.TableFences, id, false)
}

func (s *Server) putFence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkName("fence", id); err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	if _, err := fleet.DecodeFence(body); err != nil {
		s.refuse(w, r, engine.LaneDispatch, refusal(err))
		return
	}
	res, err := s.e.PutFence(r.Context(), id, fleet.Compact(body))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	w.Header().Set("ETag", etag(res.Version))
	writeJSON(w, status, map[string]any{"id": id, "version": res.Version, "lsn": res.LSN})
}

func (s *Server) deleteFence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkName("fence", id); err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	res, err := s.e.DeleteFence(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "lsn": res.LSN})
}
