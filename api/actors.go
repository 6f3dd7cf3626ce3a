package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"

	"routehound/engine"
	"routehound/fleet"
)

// DecodePoints validates a driver body (one point or an array) whole:
// fleet.DecodePoints, refusals answered as the API answers them.
func DecodePoints(body []byte, maxPoints int) ([]engine.Point, error) {
	pts, err := fleet.DecodePoints(body, maxPoints)
	if err != nil {
		return nil, refusal(err)
	}
	return pts, nil
}

// decodeSlot takes one of the driver decode slots, waiting at most 500 ms
// (or until ctx ends).
func (s *Server) decodeSlot(ctx context.Context) bool {
	select {
	case s.driverSlots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case s.driverSlots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// admitDriverBody is the driver path's admission before a body is decoded,
// the same for a POST and a stream frame: a full lane makes it wait for
// room (bounded), then refuses it before its body costs any CPU; then it
// takes a decode slot, so that at most GOMAXPROCS-1 driver bodies decode
// at once and a flood of points always leaves a core to the dispatcher,
// the warehouse and the committer. Every wait is bounded. On nil the
// caller decodes and then releases the slot (<-s.driverSlots). A driver
// past its share of the engine's elastic limit is refused first
// (engine.AdmitPoints).
func (s *Server) admitDriverBody(ctx context.Context, driver string) error {
	if err := s.e.AdmitPoints(driver); err != nil {
		return err
	}
	if err := s.e.WaitRoom(ctx, engine.LaneDriver, 1, s.e.Config().RoomWait); errors.Is(err, engine.ErrLaneFull) {
		return s.e.RefuseFull(engine.LaneDriver)
	} else if err != nil {
		return err // the engine takes no writes now: its own answer, at once
	}
	if !s.decodeSlot(ctx) {
		return s.e.RefuseFull(engine.LaneDriver)
	}
	return nil
}

func (s *Server) postLocations(w http.ResponseWriter, r *http.Request) {
	driver := r.PathValue("driver")
	if err := checkName("driver", driver); err != nil {
		s.refuse(w, r, engine.LaneDriver, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.refuse(w, r, engine.LaneDriver, err)
		return
	}
	if err := s.admitDriverBody(r.Context(), driver); err != nil {
		s.fail(w, r, err)
		return
	}
	pts, err := DecodePoints(body, s.e.Config().Lanes[engine.LaneDriver].QueueBound)
	<-s.driverSlots
	if err != nil {
		s.refuse(w, r, engine.LaneDriver, err)
		return
	}
	ack, err := s.e.SubmitPoints(r.Context(), driver, pts) // waits for room itself (engine.Config.RoomWait)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"accepted": ack.Accepted, "duplicates": ack.Duplicates, "durable_seq": ack.DurableSeq,
	})
}

// assignmentAnswer is the dispatch answer; a retry answers it field for field.
type assignmentAnswer struct {
	Route       string `json:"route"`
	Version     uint64 `json:"version"`
	LSN         uint64 `json:"lsn"`
	CommittedAt string `json:"committed_at"`
}

func (s *Server) putAssignment(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	if err := checkName("route", route); err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	ver, conditional, err := ifMatch(r)
	if err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	if _, err := fleet.DecodeAssignment(body); err != nil {
		s.refuse(w, r, engine.LaneDispatch, refusal(err))
		return
	}
	value := fleet.Compact(body)
	o := engine.WriteOptions{IfVersion: engine.AnyVersion, IdemKey: key,
		Fingerprint: engine.Fingerprint([]byte(route), value, []byte(r.Header.Get("If-Match")))}
	if conditional {
		o.IfVersion = ver
	}
	res, err := s.e.PutAssignment(r.Context(), route, value, o)
	if err == nil {
		err = s.replicated(r.Context(), engine.LaneDispatch, res.LSN)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	w.Header().Set("ETag", etag(res.Version))
	writeJSON(w, status, assignmentAnswer{Route: res.Key, Version: res.Version, LSN: res.LSN, CommittedAt: rfc3339(res.CommittedAt)})
}

func (s *Server) getAssignment(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	if err := checkName("route", route); err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeKey(w, r, fleet.TableAssignments, route, false)
}

// getProgress answers a route's progress: its row of route_progress,
// which the fleet-events consumer derives from the log (issue 21), with
// the row's version as its ETag and its LSN in X-Progress-LSN.
func (s *Server) getProgress(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	if err := checkName("route", route); err != nil {
		s.fail(w, r, err)
		return
	}
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer snap.Close()
	st, found, err := snap.Get(fleet.TableRouteProgress, route)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !found {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no progress of route %q (no assignment, or the fleet-events consumer has not reached it yet)", route))
		return
	}
	w.Header().Set("ETag", etag(st.Version))
	w.Header().Set("X-Progress-LSN", strconv.FormatUint(st.LSN, 10))
	writeJSON(w, http.StatusOK, json.RawMessage(st.Value))
}

func (s *Server) postLoadingEvent(w http.ResponseWriter, r *http.Request) {
	key, err := idempotencyKey(r)
	if err != nil {
		s.refuse(w, r, engine.LaneWarehouse, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.refuse(w, r, engine.LaneWarehouse, err)
		return
	}
	if _, err := fleet.DecodeLoadingEvent(body); err != nil {
		s.refuse(w, r, engine.LaneWarehouse, refusal(err))
		return
	}
	// A ULID: unique and time-ordered without a shared counter (48 bits of
	// milliseconds, 80 random bits). A retry keeps the first write's id.
	id := ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String()
	value := fleet.Compact(body)
	res, err := s.e.AddLoadingEvent(r.Context(), id, value, engine.WriteOptions{IdemKey: key, Fingerprint: engine.Fingerprint(value)})
	if err == nil {
		err = s.replicated(r.Context(), engine.LaneWarehouse, res.LSN)
	}
	if err != nil {
		s.fail(w, r, laneError(engine.LaneWarehouse, err))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": res.Key, "lsn": res.LSN})
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
