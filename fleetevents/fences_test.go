package fleetevents

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

func (f *feeder) fence(id string, lat, lng, radius float64) engine.Record {
	f.lsn++
	v := fmt.Sprintf(`{"name":"Depot %s","lat":%v,"lng":%v,"radius_m":%v}`, id, lat, lng, radius)
	return engine.Record{LSN: f.lsn, Table: fleet.TableFences, Key: id, Op: engine.OpPut, Value: []byte(v), Version: 1}
}

func (f *feeder) dropFence(id string, at time.Time) engine.Record {
	f.lsn++
	return engine.Record{LSN: f.lsn, Table: fleet.TableFences, Key: id, Op: engine.OpDelete, CommittedAt: at}
}

type fenceBrief struct{ Type, Driver, At, Since, Reason string }

func fenceBriefs(evs []Event) []fenceBrief {
	var out []fenceBrief
	for _, e := range evs {
		out = append(out, fenceBrief{e.Type, e.Driver, e.At, e.Since, e.Reason})
	}
	return out
}

// A driver on a fence's boundary, in and out every 10 s, does not flap:
// with a dwell of 30 s it neither enters nor exits; once it stays inside
// for 30 s it enters, once it stays outside for 30 s it exits. Drivers
// without a route count, and a late point decides nothing.
func TestFenceDwell(t *testing.T) {
	var f feeder
	tr := NewTracker(75)
	tr.SetFenceDwell(30 * time.Second)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339) }
	// The fence: 100 m around (0, 0); 0.0008° of latitude is 89 m, 0.001° is 111 m.
	recs := []engine.Record{f.fence("depot", 0, 0, 100)}
	for i := 0; i < 12; i++ { // on the boundary: 89 m, 111 m, 89 m, …
		lat := 0.0008
		if i%2 == 1 {
			lat = 0.001
		}
		recs = append(recs, f.point("van-1", lat, 0, at(i*10)))
	}
	if evs := apply(t, tr, recs...); len(evs) != 0 {
		t.Fatalf("flapping on the boundary within the dwell: %+v", fenceBriefs(evs))
	}
	evs := apply(t, tr,
		f.point("van-1", 0.0001, 0, at(200)), // inside from 200 s
		f.point("van-1", 0.0002, 0, at(215)),
		f.point("van-1", 0.005, 0, at(220)), // a moment outside: the dwell starts again
		f.point("van-1", 0.0001, 0, at(225)),
		f.point("van-1", 0.0001, 0, at(250)),
		f.point("van-1", 0.0001, 0, at(240)), // late
		f.point("van-1", 0.0001, 0, at(255)), // 30 s inside: enters
		f.point("van-1", 0.01, 0, at(300)),
		f.point("van-1", 0.0001, 0, at(290)), // late: does not cancel the exit
		f.point("van-1", 0.01, 0, at(330)),   // 30 s outside: exits
	)
	want := []fenceBrief{{FenceEnter, "van-1", at(255), at(225), ""}, {FenceExit, "van-1", at(330), at(300), ""}}
	if got := fenceBriefs(evs); !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	if evs[0].Key() != fmt.Sprintf("depot/van-1/%d", evs[0].PointLSN) || evs[0].Name != "Depot depot" {
		t.Fatalf("event %+v key %s", evs[0], evs[0].Key())
	}
	if len(tr.states["depot"]) != 0 {
		t.Fatalf("a driver outside keeps state: %+v", tr.states)
	}
}

// Deleting a fence exits the drivers inside with reason "deleted"; a
// driver about to enter gets nothing. With no dwell a driver enters at
// its first point inside.
func TestFenceDeleted(t *testing.T) {
	var f feeder
	tr := NewTracker(75)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	evs := apply(t, tr, f.fence("yard", 1, 1, 50), f.point("a", 1, 1, t0.Format(time.RFC3339)), f.point("b", 1.0001, 1, t0.Format(time.RFC3339)))
	if len(evs) != 2 || evs[0].Type != FenceEnter || evs[1].Driver != "b" {
		t.Fatalf("no dwell: %+v", evs)
	}
	tr.SetFenceDwell(time.Minute)
	apply(t, tr, f.point("b", 2, 2, t0.Add(time.Second).Format(time.RFC3339))) // b starts to leave
	apply(t, tr, f.point("c", 1, 1, t0.Format(time.RFC3339)))                  // c starts to enter
	del := f.dropFence("yard", t0.Add(time.Hour))
	evs = apply(t, tr, del)
	want := []fenceBrief{
		{FenceExit, "a", t0.Add(time.Hour).Format(time.RFC3339Nano), "", "deleted"},
		{FenceExit, "b", t0.Add(time.Hour).Format(time.RFC3339Nano), "", "deleted"},
	}
	if got := fenceBriefs(evs); !reflect.DeepEqual(got, want) || evs[0].PointLSN != del.LSN {
		t.Fatalf("deleted:\n got %+v\nwant %+v", got, want)
	}
	if tr.Fences() != 0 || len(tr.states) != 0 {
		t.Fatalf("state left: %d fences, %+v", tr.Fences(), tr.states)
	}
}

// Fences resume from what the consumer persisted, like routes.
func TestFenceRestore(t *testing.T) {
	var f feeder
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339) }
	recs := []engine.Record{f.fence("x", 0, 0, 100)}
	for i := range 20 {
		lat := 0.0
		if i/5%2 == 1 {
			lat = 0.01
		}
		if i%7 == 3 {
			recs = append(recs, f.point("d", lat, 0, at(i*10-15)))
		}
		recs = append(recs, f.point("d", lat, 0, at(i*10)))
	}
	newT := func() *Tracker { tr := NewTracker(75); tr.SetFenceDwell(15 * time.Second); return tr }
	want := apply(t, newT(), recs...)
	if len(want) < 3 {
		t.Fatalf("too few events: %+v", want)
	}
	for cut := 1; cut < len(recs); cut++ {
		a := newT()
		got := apply(t, a, recs[:cut]...)
		var defs []FenceDef
		states := map[string]FenceState{}
		a.DirtyFences(func(_ string, d *FenceDef) {
			if d != nil {
				raw, _ := json.Marshal(d)
				var e FenceDef
				json.Unmarshal(raw, &e)
				defs = append(defs, e)
			}
		}, func(k string, s *FenceState) {
			if s != nil {
				raw, _ := json.Marshal(s)
				var e FenceState
				json.Unmarshal(raw, &e)
				states[k] = e
			}
		})
		b := newT()
		b.RestoreFences(defs, states)
		got = append(got, apply(t, b, recs[cut:]...)...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cut at %d:\n got %+v\nwant %+v", cut, fenceBriefs(got), fenceBriefs(want))
		}
	}
}
