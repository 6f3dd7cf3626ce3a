package fleetevents

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// feeder builds log records for a tracker, with increasing LSNs.
type feeder struct {
	lsn      uint64
	versions map[string]uint64
}

func (f *feeder) assign(route, driver string, stops ...string) engine.Record {
	f.lsn++
	if f.versions == nil {
		f.versions = map[string]uint64{}
	}
	f.versions[route]++
	v := fmt.Sprintf(`{"driver":%q,"stops":[`, driver)
	for i, s := range stops {
		if i > 0 {
			v += ","
		}
		v += s
	}
	v += `]}`
	return engine.Record{LSN: f.lsn, Table: fleet.TableAssignments, Key: route, Op: engine.OpPut, Value: []byte(v), Version: f.versions[route]}
}

func (f *feeder) point(driver string, lat, lng float64, ts string) engine.Record {
	f.lsn++
	v := fmt.Sprintf(`{"seq":%d,"lat":%v,"lng":%v,"ts":%q}`, f.lsn, lat, lng, ts)
	return engine.Record{LSN: f.lsn, Table: fleet.TablePositions, Key: driver, Op: engine.OpPut, Value: []byte(v), Version: f.lsn}
}

func stop(id string, lat, lng float64, eta string) string {
	if eta == "" {
		return fmt.Sprintf(`{"id":%q,"lat":%v,"lng":%v}`, id, lat, lng)
	}
	return fmt.Sprintf(`{"id":%q,"lat":%v,"lng":%v,"eta":%q}`, id, lat, lng, eta)
}

// brief is an event without what every event of a test shares.
type brief struct {
	Type, Stop, At string
	Delay          any // nil, or the delay in seconds
}

func briefs(evs []Event) []brief {
	var out []brief
	for _, e := range evs {
		b := brief{Type: e.Type, Stop: e.Stop, At: e.At}
		if e.DelayS != nil {
			b.Delay = *e.DelayS
		}
		out = append(out, b)
	}
	return out
}

func apply(t *testing.T, tr *Tracker, recs ...engine.Record) []Event {
	t.Helper()
	var all []Event
	for i := range recs {
		evs, err := tr.Apply(&recs[i])
		if err != nil {
			t.Fatalf("record %d: %v", recs[i].LSN, err)
		}
		all = append(all, evs...)
	}
	return all
}

// The route of three stops: arrive at 1, depart 1, pass by 2
// outside its radius, arrive at 3 → arrived 1, departed 1, skipped 2,
// arrived 3, each arrival with delay_s = at − eta; a late point decides
// nothing, even one that would have reached stop 2.
func TestThreeStops(t *testing.T) {
	var f feeder
	tr := NewTracker(75)
	// Stops 1.1 km apart along a meridian (0.01° of latitude).
	recs := []engine.Record{
		f.assign("r1", "van-7",
			stop("s1", 52.000, 13.0, "2026-12-07T10:00:00Z"),
			stop("s2", 52.010, 13.0, "2026-12-07T10:10:00Z"),
			stop("s3", 52.020, 13.0, "2026-12-07T10:20:00Z")),
		f.point("van-7", 51.995, 13.0, "2026-12-07T09:55:00Z"),   // 556 m before stop 1
		f.point("van-7", 52.0003, 13.0, "2026-12-07T10:01:30Z"),  // 33 m: arrives, 90 s late
		f.point("van-7", 52.0008, 13.0, "2026-12-07T10:02:00Z"),  // 89 m: inside radius + 25, stays
		f.point("van-7", 52.0015, 13.0, "2026-12-07T10:03:00Z"),  // 167 m: departs
		f.point("van-7", 52.010, 13.002, "2026-12-07T10:09:00Z"), // 137 m east of stop 2: passes by
		f.point("van-7", 52.010, 13.0, "2026-12-07T10:08:00Z"),   // late (older than 10:09): decides nothing
		f.point("van-7", 52.0201, 13.0, "2026-12-07T10:32:00Z"),  // stop 3, 12 minutes late; skips 2
		f.point("van-7", 52.100, 13.0, "2026-12-07T10:31:00Z"),   // late: would depart 3, decides nothing
		f.point("other", 52.000, 13.0, "2026-12-07T10:00:00Z"),   // a driver without a route decides nothing
	}
	got := briefs(apply(t, tr, recs...))
	want := []brief{
		{StopArrived, "s1", "2026-12-07T10:01:30Z", int64(90)},
		{StopDeparted, "s1", "2026-12-07T10:03:00Z", nil},
		{StopSkipped, "s2", "2026-12-07T10:32:00Z", nil},
		{StopArrived, "s3", "2026-12-07T10:32:00Z", int64(720)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	p, ok := tr.Route("r1")
	if !ok || p.Version != 1 || p.Driver != "van-7" {
		t.Fatalf("progress %+v %v", p, ok)
	}
	var st []string
	for _, s := range p.Stops {
		st = append(st, s.Status)
	}
	if !reflect.DeepEqual(st, []string{Departed, Skipped, Arrived}) {
		t.Fatalf("statuses %v", st)
	}
	if s := p.Stops[2]; s.ArrivedAt != "2026-12-07T10:32:00Z" || s.DelayS == nil || *s.DelayS != 720 {
		t.Fatalf("stop 3: %+v", s)
	}
	if p.Stops[0].DepartedAt != "2026-12-07T10:03:00Z" {
		t.Fatalf("stop 1: %+v", p.Stops[0])
	}
	if tr.Drivers() != 1 {
		t.Fatalf("%d drivers tracked, want only the one on a route", tr.Drivers())
	}
}

// Every event carries the route, its version, the driver and the deciding
// point's LSN, and its key is <route>/<stop>/<type>; the JSON is the
// contract's.
func TestEventFields(t *testing.T) {
	var f feeder
	tr := NewTracker(0)
	recs := []engine.Record{
		f.assign("r9", "d1", `{"id":"a","lat":10,"lng":10,"radius_m":500,"eta":"2026-01-01T00:00:00Z"}`),
		f.point("d1", 10.004, 10, "2026-01-01T00:00:10Z"), // 445 m: inside the stop's own 500 m
	}
	evs := apply(t, tr, recs...)
	if len(evs) != 1 {
		t.Fatalf("events %+v", evs)
	}
	e := evs[0]
	if e.Key() != "r9/a/stop.arrived" || e.Route != "r9" || e.RouteVersion != 1 || e.Driver != "d1" || e.PointLSN != recs[1].LSN || e.ETA != "2026-01-01T00:00:00Z" {
		t.Fatalf("event %+v key %s", e, e.Key())
	}
	raw, _ := json.Marshal(e)
	var m map[string]any
	json.Unmarshal(raw, &m)
	for _, k := range []string{"type", "route", "route_version", "stop", "driver", "at", "eta", "delay_s", "point_lsn"} {
		if _, ok := m[k]; !ok {
			t.Errorf("event JSON %s has no %q", raw, k)
		}
	}
	if m["delay_s"].(float64) != 10 {
		t.Errorf("delay_s %v", m["delay_s"])
	}
	// The default radius (75 m) applies to a stop without one.
	tr2 := NewTracker(0)
	var g feeder
	if evs := apply(t, tr2, g.assign("r", "d", stop("a", 10, 10, "")), g.point("d", 10.0009, 10, "2026-01-01T00:00:00Z")); len(evs) != 0 {
		t.Fatalf("100 m from a stop of the default radius: %+v", evs)
	}
	if evs := apply(t, tr2, g.point("d", 10.0006, 10, "2026-01-01T00:00:01Z")); len(evs) != 1 || evs[0].DelayS != nil {
		t.Fatalf("67 m, no eta: %+v", evs)
	}
}

// A new version of the route starts its progress afresh, for the new
// stops; deleting the assignment ends it and the driver's state.
func TestReassignment(t *testing.T) {
	var f feeder
	tr := NewTracker(75)
	apply(t, tr,
		f.assign("r1", "d1", stop("s1", 0, 0, ""), stop("s2", 0, 0.01, "")),
		f.point("d1", 0, 0, "2026-01-01T00:00:00Z"),
	)
	evs := apply(t, tr,
		f.assign("r1", "d2", stop("s1", 0, 0, ""), stop("x", 1, 1, "")),
		f.point("d1", 0, 0.01, "2026-01-01T00:01:00Z"), // d1 is off the route now
		f.point("d2", 0, 0, "2026-01-01T00:02:00Z"),
	)
	if got := briefs(evs); !reflect.DeepEqual(got, []brief{{StopArrived, "s1", "2026-01-01T00:02:00Z", nil}}) {
		t.Fatalf("after re-assignment: %+v", got)
	}
	if evs[0].RouteVersion != 2 || evs[0].Driver != "d2" {
		t.Fatalf("event %+v", evs[0])
	}
	p, _ := tr.Route("r1")
	if p.Version != 2 || p.Stops[0].Status != Arrived || p.Stops[1].ID != "x" || p.Stops[1].Status != Pending {
		t.Fatalf("progress %+v", p)
	}
	if tr.Drivers() != 1 {
		t.Fatalf("drivers tracked: %d (d1 left its route)", tr.Drivers())
	}
	f.lsn++
	del := engine.Record{LSN: f.lsn, Table: fleet.TableAssignments, Key: "r1", Op: engine.OpDelete}
	apply(t, tr, del)
	if tr.Routes() != 0 || tr.Drivers() != 0 {
		t.Fatalf("after delete: %d routes, %d drivers", tr.Routes(), tr.Drivers())
	}
	var deleted []string
	tr.Dirty(func(r string, p *Progress) {
		if p == nil {
			deleted = append(deleted, "route "+r)
		}
	}, func(d string, m *Mark) {
		if m == nil {
			deleted = append(deleted, "mark "+d)
		}
	})
	if !reflect.DeepEqual(deleted, []string{"route r1", "mark d1", "mark d2"}) {
		t.Fatalf("dirty deletions %v", deleted)
	}
}

// A tracker restored from what another wrote (its dirty state) decides
// what the first would have: the consumer resumes after a crash from
// route_progress, the stops' places and the marks.
func TestRestoreResumes(t *testing.T) {
	var f feeder
	recs := []engine.Record{
		f.assign("r", "d", stop("a", 0, 0, ""), stop("b", 0, 0.01, ""), stop("c", 0, 0.02, "")),
		f.point("d", 0, 0, "2026-01-01T00:00:00Z"),
		f.point("d", 0, 0.005, "2026-01-01T00:05:00Z"),
		f.point("d", 0, 0.01, "2026-01-01T00:04:00Z"), // late
		f.point("d", 0, 0.02, "2026-01-01T00:10:00Z"),
		f.point("d", 0, 0.03, "2026-01-01T00:15:00Z"),
	}
	whole := NewTracker(75)
	want := apply(t, whole, recs...)
	for cut := 1; cut < len(recs); cut++ {
		a := NewTracker(75)
		got := apply(t, a, recs[:cut]...)
		var progress []Progress
		marks := map[string]Mark{}
		a.Dirty(func(_ string, p *Progress) {
			if p != nil {
				// Through JSON, as route_progress keeps it.
				raw, _ := json.Marshal(p)
				var q Progress
				json.Unmarshal(raw, &q)
				progress = append(progress, q)
			}
		}, func(d string, m *Mark) {
			if m != nil {
				raw, _ := json.Marshal(m)
				var n Mark
				json.Unmarshal(raw, &n)
				marks[d] = n
			}
		})
		places := map[string]Places{}
		a.DirtyPlaces(func(r string, pl *Places) {
			if pl != nil {
				raw, _ := json.Marshal(pl)
				var q Places
				json.Unmarshal(raw, &q)
				places[r] = q
			}
		})
		b := NewTracker(75)
		b.Restore(progress, places, marks)
		got = append(got, apply(t, b, recs[cut:]...)...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cut at %d:\n got %+v\nwant %+v", cut, got, want)
		}
	}
}

// A value that is not a point or an assignment decides nothing and says
// why; it does not stop the tracker.
func TestBadRecords(t *testing.T) {
	var f feeder
	tr := NewTracker(75)
	apply(t, tr, f.assign("r", "d", stop("a", 0, 0, "")))
	for _, v := range []string{`{`, `{"lat":0,"lng":0}`, `{"lat":0,"lng":0,"ts":"yesterday"}`} {
		f.lsn++
		r := engine.Record{LSN: f.lsn, Table: fleet.TablePositions, Key: "d", Op: engine.OpPut, Value: []byte(v)}
		if evs, err := tr.Apply(&r); err == nil || len(evs) != 0 {
			t.Errorf("%s: %v %v", v, evs, err)
		}
	}
	if evs := apply(t, tr, f.point("d", 0, 0, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339))); len(evs) != 1 {
		t.Fatalf("a good point after bad ones: %+v", evs)
	}
}

func TestDistance(t *testing.T) {
	if d := DistanceM(52, 13, 52.01, 13); d < 1110 || d > 1113 {
		t.Fatalf("0.01° of latitude: %v m", d)
	}
	if d := DistanceM(0, 179.9995, 0, -179.9995); d > 112 {
		t.Fatalf("across the antimeridian: %v m", d)
	}
}

// near agrees with DistanceM, its fast rejection included.
func TestNear(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 200000 {
		lat1, lng1 := rng.Float64()*178-89, rng.Float64()*360-180
		spread := []float64{0.0005, 0.003, 0.03, 3}[i%4]
		lat2, lng2 := lat1+(rng.Float64()-0.5)*spread, lng1+(rng.Float64()-0.5)*spread
		m := rng.Float64() * 800
		s := StopProgress{Lat: lat2, Lng: lng2, unit: unitOf(lat2, lng2)}
		if got, want := near(lat1, lng1, unitOf(lat1, lng1), &s, m), DistanceM(lat1, lng1, lat2, lng2) <= m; got != want {
			t.Fatalf("near(%v, %v, %v, %v, %v) = %v, DistanceM %v", lat1, lng1, lat2, lng2, m, got, DistanceM(lat1, lng1, lat2, lng2))
		}
	}
}

// Marks written before the cursor (as the consumer writes them, at its
// checkpoint) and replayed over the log up to the cursor decide what the
// uninterrupted tracker decides: a point late against a mark that was not
// written stays late.
func TestReplayMarks(t *testing.T) {
	var f feeder
	recs := []engine.Record{
		f.assign("r", "d", stop("a", 0, 0, ""), stop("b", 0, 0.01, "")),
		f.point("d", 0, 0, "2026-01-01T00:00:00Z"),
		f.point("d", 0, 0.005, "2026-01-01T00:05:00Z"),
		f.point("d", 0, 0.01, "2026-01-01T00:04:00Z"), // late: would arrive at b
		f.point("d", 0, 0.003, "2026-01-01T00:06:00Z"),
		f.point("d", 0, 0.01, "2026-01-01T00:03:00Z"), // late
		f.point("d", 0, 0.02, "2026-01-01T00:10:00Z"),
	}
	whole := NewTracker(75)
	want := apply(t, whole, recs...)
	for m := 1; m < len(recs); m++ {
		for cut := m; cut < len(recs); cut++ {
			a := NewTracker(75)
			got := apply(t, a, recs[:m]...)
			marks := map[string]Mark{}
			a.Dirty(func(string, *Progress) {}, func(d string, mk *Mark) {
				if mk != nil {
					marks[d] = *mk
				}
			})
			got = append(got, apply(t, a, recs[m:cut]...)...)
			var progress []Progress
			a.Dirty(func(_ string, p *Progress) {
				if p != nil {
					progress = append(progress, p.clone())
				}
			}, func(string, *Mark) {})
			places := map[string]Places{}
			a.DirtyPlaces(func(r string, pl *Places) { places[r] = *pl })
			b := NewTracker(75)
			b.Restore(progress, places, marks)
			for i := m; i < cut; i++ {
				b.ReplayMark(&recs[i])
			}
			got = append(got, apply(t, b, recs[cut:]...)...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("marks at %d, cut at %d:\n got %+v\nwant %+v", m, cut, got, want)
			}
		}
	}
}

// A stored point reads the same by the fast path (fleet.ScanPlace) and
// by encoding/json (the same value with a space after the brace, which the
// fast path leaves): ts parsed and as sent, lat, lng; and what either
// refuses, both refuse.
func TestDecodePointForms(t *testing.T) {
	for _, v := range []string{
		`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
		`{"seq":7,"lat":-0.000001,"lng":179.99999,"ts":"2026-11-23T10:00:00.123456789+01:00","speed_kmh":31.5,"heading":90}`,
		`{"lat":1e-3,"lng":-2E1,"ts":"2026-11-23T10:00:00.5Z","charging":true,"battery":80}`,
		`{"seq":1,"lat":52.5,"lng":13.4,"ts":"noon"}`,
		`{"seq":1,"lat":52.5,"lng":13.4}`,
	} {
		fast := engine.Record{Key: "d", LSN: 3, Value: []byte(v)}
		slow := engine.Record{Key: "d", LSN: 3, Value: []byte("{ " + v[1:])}
		if _, _, _, ok := fleet.ScanPlace(slow.Value); ok {
			t.Fatalf("the fast path took %s", slow.Value)
		}
		ts1, lat1, lng1, at1, err1 := decodePoint(&fast)
		ts2, lat2, lng2, at2, err2 := decodePoint(&slow)
		if !ts1.Equal(ts2) || lat1 != lat2 || lng1 != lng2 || at1 != at2 || (err1 == nil) != (err2 == nil) {
			t.Errorf("%s: fast %v %v %v %q %v, json %v %v %v %q %v", v, ts1, lat1, lng1, at1, err1, ts2, lat2, lng2, at2, err2)
		}
	}
}
