package fleetevents

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// The fence event types of fleet_events.
const (
	FenceEnter = "fence.enter"
	FenceExit  = "fence.exit"
)

// FenceDef is a geofence as the consumer keeps it (fleet_consumer, key
// "fence:<id>"): its state as of the consumer's cursor, which the fences
// table may be past.
type FenceDef struct {
	ID      string  `json:"id"`
	Name    string  `json:"name,omitempty"`
	Lat     float64 `json:"lat"`
	Lng     float64 `json:"lng"`
	RadiusM float64 `json:"radius_m"`
}

// FenceState is one driver at one fence (fleet_consumer, key
// "in:<fence>/<driver>"), kept only while the driver is inside or about to
// change sides: a driver outside every fence costs nothing.
type FenceState struct {
	Inside bool      `json:"inside"`
	TS     time.Time `json:"ts"` // the last point evaluated: an older one decides nothing
	// Since is the first point on the other side, while the driver has
	// not stayed there for the dwell; SinceAt is its ts as sent.
	Since   *time.Time `json:"since,omitempty"`
	SinceAt string     `json:"since_at,omitempty"`
}

// fenceTracker is the tracker's fences: enter and exit with a minimum
// dwell, by the points' ts.
type fenceTracker struct {
	dwell  time.Duration
	fences map[string]*FenceDef
	states map[string]map[string]*FenceState // fence → driver → state

	dirtyFences map[string]*FenceDef   // nil: deleted
	dirtyStates map[string]*FenceState // by stateKey; nil: deleted
}

func newFenceTracker() fenceTracker {
	return fenceTracker{fences: map[string]*FenceDef{}, states: map[string]map[string]*FenceState{},
		dirtyFences: map[string]*FenceDef{}, dirtyStates: map[string]*FenceState{}}
}

// SetFenceDwell sets how long a driver stays on the other side of a fence
// before it enters or exits it.
func (t *Tracker) SetFenceDwell(d time.Duration) { t.dwell = max(d, 0) }

// Fences is how many fences the tracker follows.
func (t *Tracker) Fences() int { return len(t.fences) }

// stateKey is a fence state's key in fleet_consumer, after "in:".
func stateKey(fence, driver string) string { return fence + "/" + driver }

// RestoreFences puts back the fences and the drivers' states at them, as
// DirtyFences gave them (states by "<fence>/<driver>").
func (t *Tracker) RestoreFences(defs []FenceDef, states map[string]FenceState) {
	for i := range defs {
		d := defs[i]
		t.fences[d.ID] = &d
	}
	for k, st := range states {
		fence, driver, ok := strings.Cut(k, "/")
		if !ok || t.fences[fence] == nil {
			continue
		}
		s := st
		if t.states[fence] == nil {
			t.states[fence] = map[string]*FenceState{}
		}
		t.states[fence][driver] = &s
	}
}

// DirtyFences calls fence for each fence changed since ClearDirty (nil:
// deleted) and state for each driver's state at a fence ("<fence>/<driver>";
// nil: deleted), in key order.
func (t *Tracker) DirtyFences(fence func(id string, d *FenceDef), state func(key string, s *FenceState)) {
	for _, k := range sortedKeys(t.dirtyFences) {
		fence(k, t.dirtyFences[k])
	}
	for _, k := range sortedKeys(t.dirtyStates) {
		state(k, t.dirtyStates[k])
	}
}

func (t *Tracker) putFence(r *engine.Record) error {
	var v struct {
		Name    string  `json:"name"`
		Lat     float64 `json:"lat"`
		Lng     float64 `json:"lng"`
		RadiusM float64 `json:"radius_m"`
	}
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return fmt.Errorf("fence %s: %w", r.Key, err)
	}
	if v.RadiusM <= 0 {
		return fmt.Errorf("fence %s: radius_m %v", r.Key, v.RadiusM)
	}
	d := &FenceDef{ID: r.Key, Name: v.Name, Lat: v.Lat, Lng: v.Lng, RadiusM: v.RadiusM}
	t.fences[d.ID] = d
	t.dirtyFences[d.ID] = d
	return nil
}

// dropFence deletes a fence: the drivers inside exit with reason
// "deleted", decided by the deletion's record.
func (t *Tracker) dropFence(r *engine.Record) []Event {
	evs, _, _ := t.dropFencePart(r, math.MaxInt)
	return evs
}

// dropSize is how many drivers' states a record deleting a fence lets go
// (0: r deletes no fence the tracker follows).
func (t *Tracker) dropSize(r *engine.Record) int {
	if r.Table != fleet.TableFences || r.Op != engine.OpDelete || t.fences[r.Key] == nil {
		return 0
	}
	return max(1, len(t.states[r.Key]))
}

// dropFencePart is one part of a fence's deletion: the first most drivers
// at the fence (by name) exit, those inside with an event, and lose their
// state; once none is left the fence goes (done). A part is what one write
// of the consumer carries; the fence stays, with the drivers not yet
// exited, until the last part, so that a restore between two parts goes
// on with the same record where the store is. n is how many drivers this
// part let go.
func (t *Tracker) dropFencePart(r *engine.Record, most int) (evs []Event, n int, done bool) {
	d, ok := t.fences[r.Key]
	if !ok {
		return nil, 0, true
	}
	states := t.states[r.Key]
	for _, driver := range sortedKeys(states) {
		if n == most {
			break
		}
		if states[driver].Inside {
			evs = append(evs, Event{Type: FenceExit, Fence: d.ID, Name: d.Name, Driver: driver,
				At: r.CommittedAt.UTC().Format(time.RFC3339Nano), Reason: "deleted", PointLSN: r.LSN})
		}
		delete(states, driver)
		t.dirtyStates[stateKey(r.Key, driver)] = nil
		n++
	}
	if len(states) > 0 {
		return evs, n, false
	}
	delete(t.states, r.Key)
	delete(t.fences, r.Key)
	t.dirtyFences[r.Key] = nil
	return evs, n, true
}

// dropGonePart is one part of the consumer's reconciliation after
// retention trimmed records it had not evaluated (Consumer.reconcile): r's
// value lists the fences deleted meanwhile; each is deleted as by its own
// record (dropFencePart), at r's LSN and commit time, in order, at most
// most drivers a part. A fence already let go is skipped, so that a
// restore between two parts goes on where the store is.
func (t *Tracker) dropGonePart(r *engine.Record, most int) (evs []Event, n int, done bool) {
	var gone []string
	if err := json.Unmarshal(r.Value, &gone); err != nil {
		return nil, 0, true
	}
	for _, id := range gone {
		if t.fences[id] == nil {
			continue
		}
		if n >= most {
			return evs, n, false
		}
		fr := *r
		fr.Key = id
		e, k, d := t.dropFencePart(&fr, most-n)
		evs, n = append(evs, e...), n+k
		if !d {
			return evs, n, false
		}
	}
	return evs, n, true
}

// fencePoint evaluates one point of a driver against every fence: a
// driver whose points stay on the other side of a fence for the dwell
// (by ts) enters or exits it, at the point that completes the dwell.
func (t *Tracker) fencePoint(driver string, lat, lng float64, ts time.Time, at string, lsn uint64, evs []Event) []Event {
	if len(t.fences) == 0 {
		return evs
	}
	for _, id := range sortedKeys(t.fences) {
		evs = t.fenceAt(id, driver, lat, lng, ts, at, lsn, evs)
	}
	return evs
}

// fenceAt evaluates one point of a driver against fence id (fencePoint):
// at most one event and one state written.
func (t *Tracker) fenceAt(id, driver string, lat, lng float64, ts time.Time, at string, lsn uint64, evs []Event) []Event {
	f := t.fences[id]
	in := DistanceM(lat, lng, f.Lat, f.Lng) <= f.RadiusM
	st := t.states[id][driver]
	if st == nil {
		if !in {
			return evs
		}
		st = &FenceState{}
	} else if ts.Before(st.TS) {
		return evs // late for this fence
	}
	st.TS = ts
	key := stateKey(id, driver)
	if in == st.Inside {
		st.Since, st.SinceAt = nil, ""
	} else {
		if st.Since == nil {
			since := ts
			st.Since, st.SinceAt = &since, at
		}
		if ts.Sub(*st.Since) >= t.dwell {
			typ := FenceEnter
			if !in {
				typ = FenceExit
			}
			evs = append(evs, Event{Type: typ, Fence: id, Name: f.Name, Driver: driver, At: at, Since: st.SinceAt, PointLSN: lsn})
			st.Inside, st.Since, st.SinceAt = in, nil, ""
		}
	}
	if !st.Inside && st.Since == nil {
		// Outside with nothing pending: no state.
		if _, had := t.states[id][driver]; had {
			delete(t.states[id], driver)
			t.dirtyStates[key] = nil
		}
		return evs
	}
	if t.states[id] == nil {
		t.states[id] = map[string]*FenceState{}
	}
	t.states[id][driver] = st
	t.dirtyStates[key] = st
	return evs
}
