package api

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	// Field names are built only for an error: this runs once per point.
	at := func(f string) string {
		if i < 0 {
			return f
		}
		return "[" + strconv.Itoa(i) + "]." + f
	}
	switch {
	case p.Seq == nil:
		return invalid(at("seq"), "required (the driver's sequence number, an integer >= 1)")
	case *p.Seq == 0:
		return invalid(at("seq"), "must be >= 1")
	case p.Lat == nil || *p.Lat < -90 || *p.Lat > 90:
		return checkLat(at("lat"), p.Lat)
	case p.Lng == nil || *p.Lng < -180 || *p.Lng > 180:
		return checkLng(at("lng"), p.Lng)
	case p.SpeedKmh != nil && (*p.SpeedKmh < 0 || *p.SpeedKmh > 1000):
		return invalid(at("speed_kmh"), "%v is outside 0..1000", *p.SpeedKmh)
	case p.Heading != nil && (*p.Heading < 0 || *p.Heading > 360):
		return invalid(at("heading"), "%v is outside 0..360", *p.Heading)
	}
	if err := checkTime("ts", p.TS, true); err != nil {
		return checkTime(at("ts"), p.TS, true)
	}
	return nil
}

// DecodePoints validates a driver body (one point or an array) whole: one
// bad point refuses the batch. Each point's value is its JSON as sent
// (compacted). An array is decoded in one pass: each point's bytes are cut
// from the body at the decoder's offsets, not decoded twice.
func DecodePoints(body []byte, maxPoints int) ([]engine.Point, error) {
	if !isArray(body) {
		var p point
		if err := strict(body, &p); err != nil {
			return nil, err
		}
		if err := p.check(-1); err != nil {
			return nil, err
		}
		return []engine.Point{{Seq: *p.Seq, Value: compact(body)}}, nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if _, err := d.Token(); err != nil { // [
		return nil, jsonError(err)
	}
	out := make([]engine.Point, 0, 64)
	for i := 0; d.More(); i++ {
		if i >= maxPoints {
			return nil, errorf(http.StatusRequestEntityTooLarge, "too_many_points", "more than %d points in one request", maxPoints)
		}
		start := d.InputOffset()
		var p point
		if err := d.Decode(&p); err != nil {
			err = jsonError(err)
			if ae, ok := err.(*apiError); ok {
				ae.message = fmt.Sprintf("point %d: %s", i, ae.message)
			}
			return nil, err
		}
		if err := p.check(i); err != nil {
			return nil, err
		}
		raw := bytes.TrimLeft(body[start:d.InputOffset()], " \t\r\n,")
		out = append(out, engine.Point{Seq: *p.Seq, Value: compact(raw)})
	}
	if _, err := d.Token(); err != nil { // ]
		return nil, jsonError(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errorf(http.StatusBadRequest, "bad_json", "the body holds more than one JSON value")
	}
	if len(out) == 0 {
		return nil, errorf(http.StatusBadRequest, "bad_json", "empty array: send at least one point")
	}
	return out, nil
}

// decodeSlot takes one of the driver decode slots, waiting at most 500 ms.
func (s *Server) decodeSlot(r *http.Request) bool {
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
	case <-r.Context().Done():
		return false
	}
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
	// A full lane is refused before its body costs any CPU; then at most
	// GOMAXPROCS-1 driver bodies decode at once, so that a flood of points
	// always leaves a core to the dispatcher, the warehouse and the
	// committer. Both waits are bounded.
	if s.e.LaneFull(engine.LaneDriver) {
		s.fail(w, r, s.e.RefuseFull(engine.LaneDriver))
		return
	}
	if !s.decodeSlot(r) {
		s.fail(w, r, s.e.RefuseFull(engine.LaneDriver))
		return
	}
	pts, err := DecodePoints(body, s.e.Config().Lanes[engine.LaneDriver].QueueBound)
	<-s.driverSlots
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
