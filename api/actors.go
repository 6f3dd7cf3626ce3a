package api

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/oklog/ulid/v2"

	"routehound/engine"
	"routehound/wal"
)

// point is a driver location update as sent. Pointers tell a missing field
// from a zero one.
type point struct {
	Seq      *uint64  `json:"seq"`
	Lat      *float64 `json:"lat"`
	Lng      *float64 `json:"lng"`
	TS       *string  `json:"ts"`
	SpeedKmh *float64 `json:"speed_kmh"`
	Heading  *float64 `json:"heading"`
}

func (p *point) check(i int) error {
	at := func(f string) string {
		if i < 0 {
			return f
		}
		return fmt.Sprintf("[%d].%s", i, f)
	}
	if p.Seq == nil {
		return invalid(at("seq"), "required (the driver's sequence number, an integer >= 1)")
	}
	if *p.Seq == 0 {
		return invalid(at("seq"), "must be >= 1")
	}
	if err := checkLat(at("lat"), p.Lat); err != nil {
		return err
	}
	if err := checkLng(at("lng"), p.Lng); err != nil {
		return err
	}
	if err := checkTime(at("ts"), p.TS, true); err != nil {
		return err
	}
	if p.SpeedKmh != nil && (*p.SpeedKmh < 0 || *p.SpeedKmh > 1000) {
		return invalid(at("speed_kmh"), "%v is outside 0..1000", *p.SpeedKmh)
	}
	if p.Heading != nil && (*p.Heading < 0 || *p.Heading > 360) {
		return invalid(at("heading"), "%v is outside 0..360", *p.Heading)
	}
	return nil
}

// DecodePoints validates a driver body (one point or an array) whole: one
// bad point refuses the batch. Each point's value is its JSON as sent.
func DecodePoints(body []byte, maxPoints int) ([]engine.Point, error) {
	var raws []json.RawMessage
	if isArray(body) {
		if err := strict(body, &raws); err != nil {
			return nil, err
		}
		if len(raws) == 0 {
			return nil, errorf(http.StatusBadRequest, "bad_json", "empty array: send at least one point")
		}
		if len(raws) > maxPoints {
			return nil, errorf(http.StatusRequestEntityTooLarge, "too_many_points", "%d points in one request; at most %d", len(raws), maxPoints)
		}
	} else {
		raws = []json.RawMessage{body}
	}
	out := make([]engine.Point, len(raws))
	for i, raw := range raws {
		idx := i
		if !isArray(body) {
			idx = -1
		}
		var p point
		if err := strict(raw, &p); err != nil {
			if ae, ok := err.(*apiError); ok && idx >= 0 {
				ae.message = fmt.Sprintf("point %d: %s", idx, ae.message)
			}
			return nil, err
		}
		if err := p.check(idx); err != nil {
			return nil, err
		}
		out[i] = engine.Point{Seq: *p.Seq, Value: compact(raw)}
	}
	return out, nil
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
	pts, err := DecodePoints(body, s.e.Config().Lanes[engine.LaneDriver].QueueBound)
	if err != nil {
		s.refuse(w, r, engine.LaneDriver, err)
		return
	}
	ack, err := s.e.SubmitPoints(r.Context(), driver, pts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"accepted": ack.Accepted, "duplicates": ack.Duplicates, "durable_seq": ack.DurableSeq,
	})
}

type stop struct {
	ID  *string  `json:"id"`
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
	ETA *string  `json:"eta"`
}

type assignment struct {
	Driver *string `json:"driver"`
	Stops  *[]stop `json:"stops"`
	Note   *string `json:"note"`
}

func (a *assignment) check() error {
	if a.Driver == nil {
		return invalid("driver", "required")
	}
	if err := checkName("driver", *a.Driver); err != nil {
		return err
	}
	if a.Stops == nil {
		return invalid("stops", "required (an array, possibly empty)")
	}
	for i, st := range *a.Stops {
		f := func(n string) string { return fmt.Sprintf("stops[%d].%s", i, n) }
		if st.ID == nil || *st.ID == "" {
			return invalid(f("id"), "required")
		}
		if err := checkLat(f("lat"), st.Lat); err != nil {
			return err
		}
		if err := checkLng(f("lng"), st.Lng); err != nil {
			return err
		}
		if err := checkTime(f("eta"), st.ETA, false); err != nil {
			return err
		}
	}
	return nil
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
	var a assignment
	if err := strict(body, &a); err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	if err := a.check(); err != nil {
		s.refuse(w, r, engine.LaneDispatch, err)
		return
	}
	value := compact(body)
	wr := engine.Write{Table: engine.TableAssignments, Key: route, Value: value, IfVersion: wal.AnyVersion,
		IdemKey: key, Fingerprint: engine.Fingerprint([]byte(route), value, []byte(r.Header.Get("If-Match")))}
	if conditional {
		wr.IfVersion = ver
	}
	res, err := s.e.Put(r.Context(), engine.LaneDispatch, wr)
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
	s.writeKey(w, r, engine.TableAssignments, route)
}

type loadingEvent struct {
	Terminal *string `json:"terminal"`
	Dock     *string `json:"dock"`
	Shipment *string `json:"shipment"`
	Kind     *string `json:"kind"`
	Pallets  *int64  `json:"pallets"`
	TS       *string `json:"ts"`
}

var loadingKinds = map[string]bool{"arrived": true, "loaded": true, "unloaded": true, "departed": true, "exception": true}

func (e *loadingEvent) check() error {
	for _, f := range []struct {
		name string
		v    *string
	}{{"terminal", e.Terminal}, {"dock", e.Dock}, {"shipment", e.Shipment}} {
		if f.v == nil || *f.v == "" {
			return invalid(f.name, "required (a non-empty string)")
		}
		if len(*f.v) > 256 {
			return invalid(f.name, "longer than 256 characters")
		}
	}
	if e.Kind == nil || !loadingKinds[*e.Kind] {
		return invalid("kind", "must be one of arrived, loaded, unloaded, departed, exception")
	}
	if e.Pallets == nil || *e.Pallets < 0 {
		return invalid("pallets", "required (an integer >= 0)")
	}
	return checkTime("ts", e.TS, true)
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
	var ev loadingEvent
	if err := strict(body, &ev); err != nil {
		s.refuse(w, r, engine.LaneWarehouse, err)
		return
	}
	if err := ev.check(); err != nil {
		s.refuse(w, r, engine.LaneWarehouse, err)
		return
	}
	// A ULID: unique and time-ordered without a shared counter (48 bits of
	// milliseconds, 80 random bits). A retry keeps the first write's id.
	id := ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String()
	value := compact(body)
	res, err := s.e.Put(r.Context(), engine.LaneWarehouse, engine.Write{Table: engine.TableLoading, Key: id, Value: value,
		IfVersion: 0, IdemKey: key, Fingerprint: engine.Fingerprint(value)})
	if err != nil {
		s.fail(w, r, laneError(engine.LaneWarehouse, err))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": res.Key, "lsn": res.LSN})
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
