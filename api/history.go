package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"routehound/fleet"
)

// The history endpoints answer other services from the SQLite replica
// (issue 22): a driver's trail (JSON, GPX, GeoJSON or CSV), loading
// events by dock, shipment, terminal, kind and time, and every version of
// a route's assignment. Each page is bounded by ?limit= (default 100, at
// most 1000) and http.max_page_bytes; its next cursor continues it. They
// read what the replica has applied (its LSN is in the answer), never the
// engine, so that a long history pull costs the writers no more than the
// replica's readers do.

// History is the read model the history endpoints ask (the SQLite
// replica, *replica.Replica). Every method may be called concurrently.
type History interface {
	// LSN is the position of the model: a query started after it
	// answers at least the state at LSN.
	LSN() uint64
	TrailHistory(ctx context.Context, q fleet.TrailQuery) ([]fleet.Position, bool, error)
	LoadingHistory(ctx context.Context, q fleet.LoadingQuery) ([]fleet.LoadingRow, bool, error)
	AssignmentHistory(ctx context.Context, route string, afterLSN uint64, limit int) ([]fleet.AssignmentVersion, bool, error)
}

// MountHistory serves the history endpoints from h; until it is mounted
// they answer 503 unavailable.
func (s *Server) MountHistory(h History) { s.history = h }

// historyGate bounds the CPU the history endpoints take from the writers:
// a long pull must not move the dispatch p99. Go has no goroutine
// priorities, so the bound is on the pulls themselves: at most `slots`
// run at once (GOMAXPROCS/4, at least one), and a slot is held after its
// request for three times as long as the request took (historyShare 0.25),
// so the pulls take at most a quarter of a core per slot however many
// clients pull. A request waits up to historyWait for a slot, then gets 429
// history_busy (BENCHMARKS.md, "History API": without the gate, four
// clients pulling flat out took the dispatch p99 on two cores from 14 to
// 110 ms).
type historyGate struct {
	slots chan struct{}
}

const (
	historyShare   = 0.25
	historyMaxRest = 250 * time.Millisecond
)

// historyWait is how long a request waits for a slot (a variable for the
// tests).
var historyWait = 2 * time.Second

func newHistoryGate() *historyGate {
	return &historyGate{slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/4))}
}

// admit waits for a slot; done releases it after the request's rest.
func (s *Server) admitHistory(w http.ResponseWriter, r *http.Request) (done func(), ok bool) {
	g := s.historyGate
	t := time.NewTimer(historyWait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
	case <-t.C:
		ae := errorf(http.StatusTooManyRequests, "history_busy", "the history endpoints are busy (they take a bounded share of the CPU so that writes keep their latency); retry after the Retry-After delay")
		ae.retry = time.Second
		s.fail(w, r, ae)
		return nil, false
	case <-r.Context().Done():
		s.fail(w, r, r.Context().Err())
		return nil, false
	}
	t0 := time.Now()
	return func() {
		rest := min(time.Duration(float64(time.Since(t0))*(1-historyShare)/historyShare), historyMaxRest)
		time.AfterFunc(rest, func() { <-g.slots })
	}, true
}

func (s *Server) historyRoutes() {
	read := []Role{RoleDashboard, RoleAdmin}
	s.mux.HandleFunc("/v1/drivers/{driver}/trail", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.getTrail, read...),
	}))
	s.mux.HandleFunc("/v1/assignments/{route}/history", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.getAssignmentHistory, read...),
	}))
}

// readQuery reads the query parameters of a history endpoint: only names
// in allowed, each at most once.
func readQuery(r *http.Request, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for k, vs := range r.URL.Query() {
		if !slices.Contains(allowed, k) {
			return nil, errorf(http.StatusBadRequest, "bad_parameter", "unknown parameter %q (this endpoint takes %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) != 1 {
			return nil, errorf(http.StatusBadRequest, "bad_parameter", "parameter %q is given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// The times a history query takes: those t.UnixNano() represents, after
// the epoch.
var (
	minHistoryTime = time.Unix(0, 0)
	maxHistoryTime = time.Unix(0, math.MaxInt64)
)

// timeRange reads since and until (RFC 3339): since <= t < until.
func timeRange(q map[string]string) (since, until time.Time, err error) {
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &since}, {"until", &until}} {
		v, ok := q[p.name]
		if !ok {
			continue
		}
		t, perr := time.Parse(time.RFC3339Nano, v)
		if perr != nil {
			return since, until, errorf(http.StatusBadRequest, "bad_time", "%s must be an RFC 3339 time (2026-11-23T08:00:00Z), not %q", p.name, v)
		}
		// The replica keeps times as Unix nanoseconds (int64): a time
		// outside 1970-01-01 .. 2262-04-11 would wrap (t.UnixNano()
		// overflows silently, 2600 becoming ~2015) and answer a wrong page.
		if !t.After(minHistoryTime) || t.After(maxHistoryTime) {
			return since, until, errorf(http.StatusBadRequest, "bad_time", "%s is out of range (after 1970-01-01T00:00:00Z, at most 2262-04-11T23:47:16Z)", p.name)
		}
		*p.dst = t
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return since, until, errorf(http.StatusBadRequest, "bad_range", "since (%s) must be before until (%s)", rfc3339(since), rfc3339(until))
	}
	return since, until, nil
}

// limitOf reads limit within 1..1000 (default 100).
func limitOf(q map[string]string) (int, error) {
	v, ok := q["limit"]
	if !ok {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, errorf(http.StatusBadRequest, "bad_parameter", "limit must be an integer from 1 to 1000")
	}
	return n, nil
}

// lsnCursor reads a cursor that is an LSN.
func lsnCursor(q map[string]string) (uint64, error) {
	v, ok := q["cursor"]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "bad_cursor", "cursor must be the next of a previous page")
	}
	return n, nil
}

// trailCursor is "<device time in Unix ns>.<seq>".
func trailCursor(q map[string]string) (*fleet.TrailCursor, error) {
	v, ok := q["cursor"]
	if !ok {
		return nil, nil
	}
	ts, seq, found := strings.Cut(v, ".")
	t, err1 := strconv.ParseInt(ts, 10, 64)
	n, err2 := strconv.ParseUint(seq, 10, 64)
	if !found || err1 != nil || err2 != nil || t < 0 {
		return nil, errorf(http.StatusBadRequest, "bad_cursor", "cursor must be the next of a previous page")
	}
	return &fleet.TrailCursor{TS: t, Seq: n}, nil
}

func encodeTrailCursor(c fleet.TrailCursor) string {
	return strconv.FormatInt(c.TS, 10) + "." + strconv.FormatUint(c.Seq, 10)
}

// openHistory is a history request's start: the replica to read, and a
// slot of the history gate (admitHistory). release gives the slot back;
// call it before the page goes to the network (writeHistoryPage), so a slow
// client does not hold the slot; calling it again does nothing. On !ok the
// answer was sent.
func (s *Server) openHistory(w http.ResponseWriter, r *http.Request) (src History, release func(), ok bool) {
	if s.history == nil {
		s.fail(w, r, errorf(http.StatusServiceUnavailable, "unavailable", "the history is read from the replica, which is not open"))
		return nil, nil, false
	}
	done, ok := s.admitHistory(w, r)
	if !ok {
		return nil, nil, false
	}
	return s.history, sync.OnceFunc(done), true
}

// committedAt is a commit time for JSON: null when unknown (a row from a
// replica rebuild).
func committedAt(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return rfc3339(t)
}

func deviceTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return rfc3339(t)
}

// Trail ----------------------------------------------------------------------

type trailPoint struct {
	Seq         uint64  `json:"seq"`
	Lat         float64 `json:"lat"`
	Lng         float64 `json:"lng"`
	SpeedKmh    float64 `json:"speed_kmh"`
	Heading     float64 `json:"heading"`
	TS          any     `json:"ts"`
	LSN         uint64  `json:"lsn"`
	CommittedAt any     `json:"committed_at"`
}

// getTrail answers GET /v1/drivers/{driver}/trail: the driver's kept
// points (the replica keeps [replica] trail_window, at most
// trail_max_points a driver) in device-time
// order, as JSON or exported (?format=gpx|geojson|csv, the next cursor in
// X-Next-Cursor).
func (s *Server) getTrail(w http.ResponseWriter, r *http.Request) {
	driver := r.PathValue("driver")
	if err := checkName("driver", driver); err != nil {
		s.fail(w, r, err)
		return
	}
	q, err := readQuery(r, "since", "until", "cursor", "limit", "format", "depot")
	if err == nil {
		driver, err = s.inDepot(q["depot"], driver)
	}
	var since, until time.Time
	if err == nil {
		since, until, err = timeRange(q)
	}
	var after *fleet.TrailCursor
	if err == nil {
		after, err = trailCursor(q)
	}
	limit := 0
	if err == nil {
		limit, err = limitOf(q)
	}
	format := q["format"]
	if err == nil && !slices.Contains([]string{"", "json", "gpx", "geojson", "csv"}, format) {
		err = errorf(http.StatusBadRequest, "bad_format", "format must be json, gpx, geojson or csv")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	src, release, ok := s.openHistory(w, r)
	if !ok {
		return
	}
	defer release()
	lsn := src.LSN()
	pts, more, err := src.TrailHistory(r.Context(), fleet.TrailQuery{Driver: driver, Since: since, Until: until, After: after, Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	budget := pageBudget{max: s.cfg.MaxPageBytes}
	for i := range pts {
		if !budget.fits(96) { // a point is about 160 bytes of JSON
			pts, more = pts[:i], true
			break
		}
	}
	var next any
	if more && len(pts) > 0 {
		next = encodeTrailCursor(fleet.CursorOf(pts[len(pts)-1]))
	}
	if format == "" || format == "json" {
		out := make([]trailPoint, len(pts))
		for i, p := range pts {
			out[i] = trailPoint{Seq: p.Seq, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh, Heading: p.Heading,
				TS: deviceTime(p.TS), LSN: p.LSN, CommittedAt: committedAt(p.CommittedAt)}
		}
		s.writeHistoryJSON(w, release, map[string]any{"driver": driver, "lsn": lsn, "points": out, "next": next})
		return
	}
	var body []byte
	var ctype string
	switch format {
	case "gpx":
		body, err = trailGPX(driver, pts)
		ctype = "application/gpx+xml"
	case "geojson":
		body, err = trailGeoJSON(driver, pts)
		ctype = "application/geo+json"
	case "csv":
		body, err = trailCSV(pts)
		ctype = "text/csv; charset=utf-8"
	}
	if err != nil {
		s.fail(w, r, fmt.Errorf("api: export the trail of %s as %s: %w", driver, format, err))
		return
	}
	h := w.Header()
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-trail.%s"`, strings.ReplaceAll(driver, "/", "-"), format))
	h.Set("X-Replica-LSN", strconv.FormatUint(lsn, 10))
	if next != nil {
		h.Set("X-Next-Cursor", next.(string))
	}
	writeHistoryPage(w, release, ctype, body)
}

// writeHistoryJSON encodes a history page, releases the history slot and
// writes the page (writeHistoryPage).
func (s *Server) writeHistoryJSON(w http.ResponseWriter, release func(), v any) {
	b, err := json.Marshal(v)
	if err != nil {
		release()
		writeJSON(w, http.StatusInternalServerError, v) // answers 500 internal
		return
	}
	writeHistoryPage(w, release, "application/json", append(b, '\n'))
}

// writeHistoryPage releases the history slot, then writes the encoded
// page (up to http.max_page_bytes) under a write deadline per piece
// (deadlineWriter): the slot bounds the CPU the queries take, and a
// client reading slowly must not keep it from the others (they would get
// 429 history_busy), nor hold its connection and page forever.
func writeHistoryPage(w http.ResponseWriter, release func(), ctype string, body []byte) {
	release()
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	dw := newDeadlineWriter(w)
	if _, err := dw.Write(body); err == nil {
		dw.Flush()
	}
}

// GPX 1.1 (http://www.topografix.com/GPX/1/1/gpx.xsd): one track of one
// segment; each point's seq is its name, its speed and heading its
// description (GPX 1.1 has no speed element outside extensions).
type gpxDoc struct {
	XMLName xml.Name `xml:"http://www.topografix.com/GPX/1/1 gpx"`
	Version string   `xml:"version,attr"`
	Creator string   `xml:"creator,attr"`
	Trk     gpxTrk   `xml:"trk"`
}

type gpxTrk struct {
	Name string `xml:"name"`
	Seg  gpxSeg `xml:"trkseg"`
}

type gpxSeg struct {
	Pts []gpxPt `xml:"trkpt"`
}

type gpxPt struct {
	Lat  string `xml:"lat,attr"`
	Lon  string `xml:"lon,attr"`
	Time string `xml:"time,omitempty"`
	Name string `xml:"name"`
	Desc string `xml:"desc"`
}

func coord(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func trailGPX(driver string, pts []fleet.Position) ([]byte, error) {
	doc := gpxDoc{Version: "1.1", Creator: "RouteHound", Trk: gpxTrk{Name: driver}}
	doc.Trk.Seg.Pts = make([]gpxPt, len(pts))
	for i, p := range pts {
		pt := gpxPt{Lat: coord(p.Lat), Lon: coord(p.Lng), Name: "seq " + strconv.FormatUint(p.Seq, 10),
			Desc: fmt.Sprintf("%.1f km/h, heading %.0f°", p.SpeedKmh, p.Heading)}
		if !p.TS.IsZero() {
			pt.Time = rfc3339(p.TS)
		}
		doc.Trk.Seg.Pts[i] = pt
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", " ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// GeoJSON (RFC 7946): a FeatureCollection of Point features, coordinates
// [longitude, latitude].
func trailGeoJSON(driver string, pts []fleet.Position) ([]byte, error) {
	type feature struct {
		Type       string         `json:"type"`
		Geometry   map[string]any `json:"geometry"`
		Properties map[string]any `json:"properties"`
	}
	fs := make([]feature, len(pts))
	for i, p := range pts {
		fs[i] = feature{Type: "Feature",
			Geometry: map[string]any{"type": "Point", "coordinates": []float64{p.Lng, p.Lat}},
			Properties: map[string]any{"driver": driver, "seq": p.Seq, "ts": deviceTime(p.TS), "speed_kmh": p.SpeedKmh,
				"heading": p.Heading, "lsn": p.LSN, "committed_at": committedAt(p.CommittedAt)}}
	}
	b, err := json.Marshal(map[string]any{"type": "FeatureCollection", "features": fs})
	return append(b, '\n'), err
}

func trailCSV(pts []fleet.Position) ([]byte, error) {
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	cw.Write([]string{"seq", "ts", "lat", "lng", "speed_kmh", "heading", "lsn", "committed_at"})
	for _, p := range pts {
		ts, at := "", ""
		if !p.TS.IsZero() {
			ts = rfc3339(p.TS)
		}
		if !p.CommittedAt.IsZero() {
			at = rfc3339(p.CommittedAt)
		}
		cw.Write([]string{strconv.FormatUint(p.Seq, 10), ts, coord(p.Lat), coord(p.Lng), coord(p.SpeedKmh),
			coord(p.Heading), strconv.FormatUint(p.LSN, 10), at})
	}
	cw.Flush()
	return b.Bytes(), cw.Error()
}

// Loading events -------------------------------------------------------------

type loadingOut struct {
	ID          string `json:"id"`
	Terminal    string `json:"terminal"`
	Dock        string `json:"dock"`
	Shipment    string `json:"shipment"`
	Kind        string `json:"kind"`
	Pallets     int64  `json:"pallets"`
	TS          any    `json:"ts"`
	LSN         uint64 `json:"lsn"`
	CommittedAt any    `json:"committed_at"`
}

// getLoadingEvents answers GET /v1/loading-events: the events matching the
// filters in commit (LSN) order; since and until bound the events' own ts.
func (s *Server) getLoadingEvents(w http.ResponseWriter, r *http.Request) {
	q, err := readQuery(r, "dock", "shipment", "terminal", "kind", "since", "until", "cursor", "limit")
	if err == nil {
		for _, f := range []string{"dock", "shipment", "terminal"} {
			if v, ok := q[f]; ok && (v == "" || len(v) > 256) {
				err = errorf(http.StatusBadRequest, "bad_parameter", "%s must be 1 to 256 characters", f)
				break
			}
		}
	}
	if k, ok := q["kind"]; err == nil && ok && !slices.Contains(fleet.LoadingKinds, k) {
		err = errorf(http.StatusBadRequest, "bad_parameter", "kind must be one of %s", strings.Join(fleet.LoadingKinds, ", "))
	}
	var since, until time.Time
	if err == nil {
		since, until, err = timeRange(q)
	}
	var after uint64
	if err == nil {
		after, err = lsnCursor(q)
	}
	limit := 0
	if err == nil {
		limit, err = limitOf(q)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	src, release, ok := s.openHistory(w, r)
	if !ok {
		return
	}
	defer release()
	lsn := src.LSN()
	evs, more, err := src.LoadingHistory(r.Context(), fleet.LoadingQuery{Dock: q["dock"], Shipment: q["shipment"],
		Terminal: q["terminal"], Kind: q["kind"], Since: since, Until: until, AfterLSN: after, Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	budget := pageBudget{max: s.cfg.MaxPageBytes}
	out := make([]loadingOut, 0, len(evs))
	for _, e := range evs {
		if !budget.fits(len(e.ID) + len(e.Terminal) + len(e.Dock) + len(e.Shipment) + len(e.Kind) + 96) {
			more = true
			break
		}
		out = append(out, loadingOut{ID: e.ID, Terminal: e.Terminal, Dock: e.Dock, Shipment: e.Shipment, Kind: e.Kind,
			Pallets: e.Pallets, TS: deviceTime(e.TS), LSN: e.LSN, CommittedAt: committedAt(e.CommittedAt)})
	}
	var next any
	if more && len(out) > 0 {
		next = strconv.FormatUint(out[len(out)-1].LSN, 10)
	}
	s.writeHistoryJSON(w, release, map[string]any{"lsn": lsn, "events": out, "next": next})
}

// Assignment history ---------------------------------------------------------

type versionOut struct {
	Version     uint64          `json:"version"`
	LSN         uint64          `json:"lsn"`
	CommittedAt any             `json:"committed_at"`
	Op          string          `json:"op"`
	Driver      string          `json:"driver"`
	Stops       json.RawMessage `json:"stops"`
	Note        string          `json:"note"`
}

// getAssignmentHistory answers GET /v1/assignments/{route}/history: the
// route's kept versions (the replica keeps the newest 1000), oldest
// first, each with its LSN and commit time; a delete is a version too.
func (s *Server) getAssignmentHistory(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	err := checkName("route", route)
	var q map[string]string
	if err == nil {
		q, err = readQuery(r, "cursor", "limit", "depot")
	}
	if err == nil {
		route, err = s.inDepot(q["depot"], route)
	}
	var after uint64
	if err == nil {
		after, err = lsnCursor(q)
	}
	limit := 0
	if err == nil {
		limit, err = limitOf(q)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	src, release, ok := s.openHistory(w, r)
	if !ok {
		return
	}
	defer release()
	lsn := src.LSN()
	vs, more, err := src.AssignmentHistory(r.Context(), route, after, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	budget := pageBudget{max: s.cfg.MaxPageBytes}
	out := make([]versionOut, 0, len(vs))
	for _, v := range vs {
		if !budget.fits(len(v.Driver) + len(v.Stops) + len(v.Note) + 64) {
			more = true
			break
		}
		op := "put"
		if v.Deleted {
			op = "delete"
		}
		out = append(out, versionOut{Version: v.Version, LSN: v.LSN, CommittedAt: committedAt(v.CommittedAt), Op: op,
			Driver: v.Driver, Stops: v.Stops, Note: v.Note})
	}
	var next any
	if more && len(out) > 0 {
		next = strconv.FormatUint(out[len(out)-1].LSN, 10)
	}
	s.writeHistoryJSON(w, release, map[string]any{"route": route, "lsn": lsn, "versions": out, "next": next})
}

// inDepot is the name a central view keeps a depot's driver or route under
// (<depot>/<name>) for ?depot= (the name itself without it; 400
// bad_parameter on a depot's own box, or for a name that is no depot).
func (s *Server) inDepot(depot, name string) (string, error) {
	if depot == "" {
		return name, nil
	}
	if !s.e.Central() {
		return "", errorf(http.StatusBadRequest, "bad_parameter", "depot names a depot of a central view; this box is a depot's own")
	}
	if len(depot) > 64 || strings.Trim(depot, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return "", errorf(http.StatusBadRequest, "bad_parameter", "depot must be 1 to 64 letters, digits, - and _")
	}
	return depot + "/" + name, nil
}
