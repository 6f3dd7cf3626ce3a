package fleetevents

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// The event types of fleet_events.
const (
	StopArrived  = "stop.arrived"
	StopDeparted = "stop.departed"
	StopSkipped  = "stop.skipped"
)

// The statuses of a stop in route_progress.
const (
	Pending  = "pending"
	Arrived  = "arrived"
	Departed = "departed"
	Skipped  = "skipped"
)

// DepartMarginM is how much farther than its radius a driver must be for a
// stop it arrived at to be departed: a point jittering on the radius does
// not depart and arrive again.
const DepartMarginM = 25

// DefaultStopRadiusM is [fleet] stop_radius_m's default.
const DefaultStopRadiusM = 75

// Event is one record of fleet_events: a stop event (route, stop) or a
// fence event (fence).
type Event struct {
	Type         string `json:"type"`
	Route        string `json:"route,omitempty"`
	RouteVersion uint64 `json:"route_version,omitempty"`
	Stop         string `json:"stop,omitempty"`
	Fence        string `json:"fence,omitempty"`
	Name         string `json:"name,omitempty"` // the fence's name
	Driver       string `json:"driver"`
	At           string `json:"at"` // the deciding point's ts, as the driver sent it (a fence's deletion: when it was committed)
	ETA          string `json:"eta,omitempty"`
	DelayS       *int64 `json:"delay_s,omitempty"` // at − eta, in seconds, on arrival at a stop with an eta
	Since        string `json:"since,omitempty"`   // a fence event: the ts of the first point on the new side
	Reason       string `json:"reason,omitempty"`  // "deleted": the fence was deleted with the driver inside
	PointLSN     uint64 `json:"point_lsn"`         // the deciding record's LSN (a point, or a fence's deletion)
}

// Key is the event's key in fleet_events: <route>/<stop>/<type> for a
// stop, <fence>/<driver>/<lsn> for a fence.
func (e *Event) Key() string {
	if e.Fence != "" {
		return e.Fence + "/" + e.Driver + "/" + strconv.FormatUint(e.PointLSN, 10)
	}
	return e.Route + "/" + e.Stop + "/" + e.Type
}

// StopProgress is one stop of a route's progress. Lat, Lng and RadiusM are
// the stop's place: not in route_progress (the contract has no
// place), they are the consumer's own state, kept apart in Places, which
// change only with the route's version.
type StopProgress struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	ETA        string     `json:"eta,omitempty"`
	ArrivedAt  string     `json:"arrived_at,omitempty"`
	DepartedAt string     `json:"departed_at,omitempty"`
	DelayS     *int64     `json:"delay_s,omitempty"`
	Lat        float64    `json:"-"`
	Lng        float64    `json:"-"`
	RadiusM    float64    `json:"-"`
	unit       [3]float64 // the place on the unit sphere (unitOf), for near
}

// Places are the places of a route's stops, for one version of the route:
// the consumer keeps them in fleet_consumer (key "stops:<route>"), written
// once when the version is assigned, so that the route's progress, written
// at every change, carries only what the contract has.
type Places struct {
	Version uint64       `json:"version"`
	Stops   [][3]float64 `json:"stops"` // lat, lng, radius_m, in the route's order
}

// placesOf is p's stops' places.
func placesOf(p *Progress) *Places {
	pl := &Places{Version: p.Version, Stops: make([][3]float64, len(p.Stops))}
	for i, s := range p.Stops {
		pl.Stops[i] = [3]float64{s.Lat, s.Lng, s.RadiusM}
	}
	return pl
}

// Progress is a route's progress: the value of route_progress.
type Progress struct {
	Route   string         `json:"route"`
	Version uint64         `json:"version"` // the assignment's version
	Driver  string         `json:"driver"`
	Stops   []StopProgress `json:"stops"`
	// evBytes bounds the bytes of the events one point decides on the
	// route (one per stop at most), its key and JSON (setRoute).
	evBytes int
}

// Mark is the last point evaluated for a driver on a route: a point older
// than it decides nothing.
type Mark struct {
	TS  time.Time `json:"ts"`
	LSN uint64    `json:"lsn"`
}

// Tracker computes route progress and stop events from the log's records,
// taken in LSN order. It holds state only for the routes (their stops) and
// for the drivers on a route. It is not safe for concurrent use.
type Tracker struct {
	radius float64

	routes   map[string]*Progress
	byDriver map[string][]string // driver → its routes, sorted
	marks    map[string]Mark     // drivers on a route only

	// What changed since ClearDirty: nil values are deletions.
	dirtyRoutes map[string]*Progress
	dirtyPlaces map[string]*Places
	dirtyMarks  map[string]*Mark
	dirtyStops  int // stops of the dirty routes: most of what writing them costs
	// moved: a driver got its first route or lost its last since the
	// marks were last written (ClearDirty): the next write must carry the
	// marks (the consumer's restore replays marks over a log range in
	// which no driver's routes changed).
	moved bool
	// legacy: routes restored with the places their route_progress still
	// carries (a store written before the places moved to fleet_consumer):
	// the first write of such a route's progress, which drops them, writes
	// its places too.
	legacy map[string]bool

	fenceTracker
}

// NewTracker is an empty tracker; stopRadiusM is the radius of a stop
// without one (DefaultStopRadiusM when <= 0).
func NewTracker(stopRadiusM float64) *Tracker {
	if stopRadiusM <= 0 {
		stopRadiusM = DefaultStopRadiusM
	}
	return &Tracker{radius: stopRadiusM, routes: map[string]*Progress{}, byDriver: map[string][]string{},
		marks: map[string]Mark{}, dirtyRoutes: map[string]*Progress{}, dirtyPlaces: map[string]*Places{}, dirtyMarks: map[string]*Mark{},
		legacy: map[string]bool{}, fenceTracker: newFenceTracker()}
}

// Restore puts back the state persisted by a previous run (route_progress,
// the stops' places by route, the drivers' marks) without marking it
// dirty. A route whose places are missing, or of another version, is not
// followed (it cannot be: a store that was not written by this consumer).
func (t *Tracker) Restore(progress []Progress, places map[string]Places, marks map[string]Mark) {
	for i := range progress {
		p := progress[i]
		pl, ok := places[p.Route]
		if !ok || pl.Version != p.Version || len(pl.Stops) != len(p.Stops) {
			continue
		}
		p.Stops = append([]StopProgress(nil), p.Stops...)
		for j := range p.Stops {
			p.Stops[j].Lat, p.Stops[j].Lng, p.Stops[j].RadiusM = pl.Stops[j][0], pl.Stops[j][1], pl.Stops[j][2]
			p.Stops[j].unit = unitOf(pl.Stops[j][0], pl.Stops[j][1])
		}
		t.setRoute(&p)
	}
	for d, m := range marks {
		if len(t.byDriver[d]) > 0 {
			t.marks[d] = m
		}
	}
	t.moved = false
}

// ReplayMark takes a record the previous run evaluated after it last
// wrote the marks and before its cursor (no driver's routes changed in
// between: see moved): a point moves its driver's mark as point does, and
// decides nothing (its decisions are in the store). The mark is dirty: the
// next write of the marks carries it.
func (t *Tracker) ReplayMark(r *engine.Record) {
	if r.Table != fleet.TablePositions || r.Op != engine.OpPut || len(t.byDriver[r.Key]) == 0 {
		return
	}
	if ts, _, _, _, err := decodePoint(r); err == nil {
		t.moveMark(r.Key, ts, r.LSN)
	}
}

// moveMark makes a point the driver's mark unless it is late (older than
// the mark); it reports whether it did.
func (t *Tracker) moveMark(driver string, ts time.Time, lsn uint64) bool {
	if m, ok := t.marks[driver]; ok && ts.Before(m.TS) {
		return false
	}
	m := Mark{TS: ts, LSN: lsn}
	t.marks[driver] = m
	t.dirtyMarks[driver] = &m
	return true
}

// MarksDue reports whether the next write must carry the marks: a driver's
// routes changed.
func (t *Tracker) MarksDue() bool { return t.moved }

// KeepChangedMarks leaves dirty only the marks that differ from stored
// (the marks as the store holds them): after a restore's replay, a mark
// that a write of an earlier run already carried as it is now need not be
// written again, so that a restart between two writes of a long backlog
// of marks goes on where the store is.
func (t *Tracker) KeepChangedMarks(stored map[string]Mark) {
	for d, m := range t.dirtyMarks {
		if s, ok := stored[d]; ok && m != nil && m.LSN == s.LSN && m.TS.Equal(s.TS) {
			delete(t.dirtyMarks, d)
		}
	}
}

// MarksWritten forgets that the marks of drivers are dirty: a write
// carried them (a part of the dirty marks; ClearDirty forgets all).
func (t *Tracker) MarksWritten(drivers []string) {
	for _, d := range drivers {
		delete(t.dirtyMarks, d)
	}
}

// DirtyMarks is how many drivers' marks changed since they were written.
func (t *Tracker) DirtyMarks() int { return len(t.dirtyMarks) }

// Routes is how many routes the tracker follows; Drivers how many drivers
// are on them.
func (t *Tracker) Routes() int  { return len(t.routes) }
func (t *Tracker) Drivers() int { return len(t.byDriver) }

// Route is a copy of a route's progress.
func (t *Tracker) Route(route string) (Progress, bool) {
	p, ok := t.routes[route]
	if !ok {
		return Progress{}, false
	}
	return p.clone(), true
}

func (p *Progress) clone() Progress {
	c := *p
	c.Stops = append([]StopProgress(nil), p.Stops...)
	return c
}

// Dirty calls route for each route whose progress changed since
// ClearDirty (p nil: deleted) and mark for each driver whose mark changed
// (m nil: the driver left its routes), in key order.
func (t *Tracker) Dirty(route func(name string, p *Progress), mark func(driver string, m *Mark)) {
	for _, k := range sortedKeys(t.dirtyRoutes) {
		route(k, t.dirtyRoutes[k])
	}
	for _, k := range sortedKeys(t.dirtyMarks) {
		mark(k, t.dirtyMarks[k])
	}
}

// DirtyPlaces calls places for each route whose stops' places changed
// since ClearDirty (a new version; pl nil: the route was deleted), in key
// order.
func (t *Tracker) DirtyPlaces(places func(route string, pl *Places)) {
	for _, k := range sortedKeys(t.dirtyPlaces) {
		places(k, t.dirtyPlaces[k])
	}
}

// DirtyCount is how many routes, marks, fences and fence states changed
// since ClearDirty.
func (t *Tracker) DirtyCount() int {
	return len(t.dirtyRoutes) + len(t.dirtyPlaces) + len(t.dirtyMarks) + len(t.dirtyFences) + len(t.dirtyStates)
}

func (t *Tracker) dirtyRouteCount() int { return len(t.dirtyRoutes) }

// markRoute notes that route's progress changed (p nil: deleted).
func (t *Tracker) markRoute(route string, p *Progress) {
	if old, ok := t.dirtyRoutes[route]; ok && old != nil {
		t.dirtyStops -= len(old.Stops)
	}
	if p != nil {
		t.dirtyStops += len(p.Stops)
		if t.legacy[route] {
			t.dirtyPlaces[route] = placesOf(p)
		}
	}
	delete(t.legacy, route)
	t.dirtyRoutes[route] = p
}

// DirtyBytes estimates the bytes of what changed since ClearDirty, as
// JSON values: the consumer writes before a write would outgrow a batch.
func (t *Tracker) DirtyBytes() int {
	return t.dirtyStops*200 + (t.DirtyCount())*160
}

// ClearDirty forgets what changed: it was written (the marks too unless
// keepMarks: they were not).
func (t *Tracker) ClearDirty(keepMarks bool) {
	clear(t.dirtyRoutes)
	clear(t.dirtyPlaces)
	if !keepMarks {
		clear(t.dirtyMarks)
		t.moved = false
	}
	t.dirtyStops = 0
	clear(t.dirtyFences)
	clear(t.dirtyStates)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Apply takes one record of the log and returns the events it decides, in
// order: an assignment starts (or, on a new version, restarts) its route's
// progress or, deleted, ends it; a driver's point moves the progress of
// that driver's routes. Other records, and what cannot be decoded, decide
// nothing (bad is then the reason, for the log).
func (t *Tracker) Apply(r *engine.Record) (events []Event, bad error) {
	switch r.Table {
	case fleet.TableAssignments:
		if r.Op == engine.OpDelete {
			t.dropRoute(r.Key)
			return nil, nil
		}
		return nil, t.assign(r)
	case fleet.TableFences:
		if r.Op == engine.OpDelete {
			return t.dropFence(r), nil
		}
		return nil, t.putFence(r)
	case fleet.TablePositions:
		if r.Op != engine.OpPut {
			return nil, nil
		}
		return t.point(r)
	}
	return nil, nil
}

// storedStop is a stop as the assignments table holds it.
type storedStop struct {
	ID      string   `json:"id"`
	Lat     float64  `json:"lat"`
	Lng     float64  `json:"lng"`
	ETA     *string  `json:"eta"`
	RadiusM *float64 `json:"radius_m"`
}

func (t *Tracker) assign(r *engine.Record) error {
	var a struct {
		Driver string       `json:"driver"`
		Stops  []storedStop `json:"stops"`
	}
	if err := json.Unmarshal(r.Value, &a); err != nil {
		t.dropRoute(r.Key)
		return fmt.Errorf("assignment %s: %w", r.Key, err)
	}
	p := &Progress{Route: r.Key, Version: r.Version, Driver: a.Driver, Stops: make([]StopProgress, len(a.Stops))}
	for i, s := range a.Stops {
		sp := StopProgress{ID: s.ID, Status: Pending, Lat: s.Lat, Lng: s.Lng, RadiusM: t.radius}
		if s.ETA != nil {
			sp.ETA = *s.ETA
		}
		if s.RadiusM != nil && *s.RadiusM > 0 {
			sp.RadiusM = *s.RadiusM
		}
		p.Stops[i] = sp
	}
	for i := range p.Stops {
		p.Stops[i].unit = unitOf(p.Stops[i].Lat, p.Stops[i].Lng)
	}
	t.dropRoute(r.Key)
	t.setRoute(p)
	t.markRoute(p.Route, p)
	t.dirtyPlaces[p.Route] = placesOf(p)
	return nil
}

// setRoute follows p (not marked dirty).
func (t *Tracker) setRoute(p *Progress) {
	p.evBytes = 0
	for i := range p.Stops {
		// An event's fixed fields at their longest are about 180 bytes;
		// its key repeats the route and the stop.
		p.evBytes += 200 + 2*len(p.Route) + len(p.Driver) + 2*len(p.Stops[i].ID) + len(p.Stops[i].ETA)
	}
	t.routes[p.Route] = p
	if p.Driver == "" {
		return
	}
	rs := t.byDriver[p.Driver]
	if len(rs) == 0 {
		t.moved = true
	}
	i := sort.SearchStrings(rs, p.Route)
	if i < len(rs) && rs[i] == p.Route {
		return
	}
	rs = append(rs, "")
	copy(rs[i+1:], rs[i:])
	rs[i] = p.Route
	t.byDriver[p.Driver] = rs
}

// dropRoute stops following a route; a driver left with no route loses
// its mark.
func (t *Tracker) dropRoute(route string) {
	p, ok := t.routes[route]
	if !ok {
		return
	}
	delete(t.routes, route)
	t.markRoute(route, nil)
	t.dirtyPlaces[route] = nil
	rs := t.byDriver[p.Driver]
	if i := sort.SearchStrings(rs, route); i < len(rs) && rs[i] == route {
		rs = append(rs[:i], rs[i+1:]...)
	}
	if len(rs) > 0 {
		t.byDriver[p.Driver] = rs
		return
	}
	delete(t.byDriver, p.Driver)
	t.moved = true
	if _, had := t.marks[p.Driver]; had {
		delete(t.marks, p.Driver)
		t.dirtyMarks[p.Driver] = nil
	}
}

// pointValue is what the tracker reads of a stored point.
type pointValue struct {
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
	TS  *string  `json:"ts"`
}

func (t *Tracker) point(r *engine.Record) ([]Event, error) {
	evs, _, _, err := t.pointPart(r, 0, math.MaxInt)
	return evs, err
}

// pointPart evaluates a point from unit from on, units of at most about
// most writes (at least one unit): the units of a point are the fences, by
// id (each at most an event and a state), then its driver's routes, by
// name (each the events of one route and its progress). n is how many
// units it evaluated, done whether they were the last. Evaluated from 0
// to the end in one call, it is the point's whole evaluation; in parts,
// the same, as long as the tracker's state is the one the earlier parts
// left (a restore at a cursor inside the record: the store holds it).
func (t *Tracker) pointPart(r *engine.Record, from, most int) (evs []Event, n int, done bool, err error) {
	driver := r.Key
	routes := t.byDriver[driver]
	if len(routes) == 0 && len(t.fences) == 0 {
		return nil, 0, true, nil // a driver without a route decides nothing
	}
	ts, lat, lng, at, err := decodePoint(r)
	if err != nil {
		return nil, 0, true, err
	}
	var fences []string
	if len(t.fences) > 0 {
		fences = sortedKeys(t.fences)
	}
	cost := 0
	u := from
	for ; u < len(fences); u++ {
		if n > 0 && cost+fenceCost > most {
			return evs, n, false, nil
		}
		evs = t.fenceAt(fences[u], driver, lat, lng, ts, at, r.LSN, evs)
		cost += fenceCost
		n++
	}
	if len(routes) == 0 {
		return evs, n, true, nil
	}
	// The mark moves in every part (to the same point: a later part finds
	// it at this point, not late).
	if !t.moveMark(driver, ts, r.LSN) {
		return evs, n, true, nil // late: older than a point already evaluated
	}
	unit := unitOf(lat, lng)
	for ; u < len(fences)+len(routes); u++ {
		p := t.routes[routes[u-len(fences)]]
		c := routeCost(p)
		if n > 0 && cost+c > most {
			return evs, n, false, nil
		}
		cost += c
		evs = t.advance(p, lat, lng, unit, ts, at, r.LSN, evs)
		n++
	}
	return evs, n, true, nil
}

// fenceCost and routeCost bound the writes of a unit of a point (an event
// and a state; a route's events and its progress and places).
const fenceCost = 2

func routeCost(p *Progress) int { return max(len(p.Stops), p.evBytes/eventBytes) + 3 }

// Cost bounds what record r's evaluation writes: records, and bytes as
// DirtyBytes counts them. The consumer evaluates a record whose cost does
// not fit one write in parts (ApplyPart).
func (t *Tracker) Cost(r *engine.Record) (writes, bytes int) {
	switch {
	case r.Table == fleet.TableFences && r.Op == engine.OpDelete:
		if n := t.dropSize(r); n > 0 {
			return 2*n + 1, n*(eventBytes+160) + 160
		}
	case r.Table == fleet.TablePositions && r.Op == engine.OpPut:
		routes := t.byDriver[r.Key]
		if len(routes) == 0 && len(t.fences) == 0 {
			return 0, 0
		}
		writes, bytes = fenceCost*len(t.fences)+1, len(t.fences)*(eventBytes+160)+160
		for _, route := range routes {
			p := t.routes[route]
			writes += routeCost(p)
			bytes += max((len(p.Stops)+1)*eventBytes, p.evBytes) + len(p.Stops)*200 + 3*160
		}
	case r.Table == fleet.TableAssignments && r.Op == engine.OpPut:
		// At most 1,000 stops: the progress, the places, the old route's.
		return 4, len(r.Value) * 4
	}
	return writes, bytes
}

// ApplyPart evaluates record r in parts, for a record whose output does
// not fit one write (Cost): from is how many units of it earlier parts
// evaluated, most about how many writes this part may make. It returns
// the events of this part, how many units it evaluated (at least one
// while any is left) and whether r is done. A fence's deletion: its units
// are the drivers at it, and from is not needed (each part deletes the
// states of the drivers it lets go, so the state says where it is); a
// point: its fences and routes (pointPart). Any other record is done in
// one part.
func (t *Tracker) ApplyPart(r *engine.Record, from, most int) (events []Event, n int, done bool, bad error) {
	switch {
	case r.Table == fleet.TableFences && r.Op == engine.OpDelete && r.Key == "":
		events, n, done = t.dropGonePart(r, max(1, most/2))
		return events, n, done, nil
	case r.Table == fleet.TableFences && r.Op == engine.OpDelete:
		events, n, done = t.dropFencePart(r, max(1, most/2))
		return events, n, done, nil
	case r.Table == fleet.TablePositions && r.Op == engine.OpPut:
		return t.pointPart(r, from, most)
	}
	events, bad = t.Apply(r)
	return events, 0, true, bad
}

// decodePoint reads a stored point: its ts (parsed, and as sent), lat, lng.
func decodePoint(r *engine.Record) (ts time.Time, lat, lng float64, at string, err error) {
	// The stored form first, by hand (most of the consumer's time per
	// point was encoding/json's); anything else as before.
	if lat, lng, at, ok := fleet.ScanPlace(r.Value); ok {
		ts, err = time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return ts, 0, 0, "", fmt.Errorf("point of %s at lsn %d: ts: %w", r.Key, r.LSN, err)
		}
		return ts, lat, lng, at, nil
	}
	var pv pointValue
	if err := json.Unmarshal(r.Value, &pv); err != nil {
		return ts, 0, 0, "", fmt.Errorf("point of %s at lsn %d: %w", r.Key, r.LSN, err)
	}
	if pv.Lat == nil || pv.Lng == nil || pv.TS == nil {
		return ts, 0, 0, "", fmt.Errorf("point of %s at lsn %d: no lat, lng or ts", r.Key, r.LSN)
	}
	ts, err = time.Parse(time.RFC3339Nano, *pv.TS)
	if err != nil {
		return ts, 0, 0, "", fmt.Errorf("point of %s at lsn %d: ts: %w", r.Key, r.LSN, err)
	}
	return ts, *pv.Lat, *pv.Lng, *pv.TS, nil
}

// advance moves one route's progress by one point of its driver: the stops
// it arrived at and is now beyond radius + DepartMarginM depart; the first
// pending stop within its radius is arrived at, and the pending stops
// before it are skipped.
func (t *Tracker) advance(p *Progress, lat, lng float64, u [3]float64, ts time.Time, at string, lsn uint64, evs []Event) []Event {
	ev := func(typ string, s *StopProgress) Event {
		return Event{Type: typ, Route: p.Route, RouteVersion: p.Version, Stop: s.ID, Driver: p.Driver, At: at, ETA: s.ETA, PointLSN: lsn}
	}
	changed := false
	for i := range p.Stops {
		s := &p.Stops[i]
		if s.Status == Arrived && !near(lat, lng, u, s, s.RadiusM+DepartMarginM) {
			s.Status, s.DepartedAt = Departed, at
			evs = append(evs, ev(StopDeparted, s))
			changed = true
		}
	}
	for j := range p.Stops {
		s := &p.Stops[j]
		if s.Status != Pending || !near(lat, lng, u, s, s.RadiusM) {
			continue
		}
		for i := 0; i < j; i++ {
			if k := &p.Stops[i]; k.Status == Pending {
				k.Status = Skipped
				evs = append(evs, ev(StopSkipped, k))
			}
		}
		s.Status, s.ArrivedAt = Arrived, at
		e := ev(StopArrived, s)
		if s.ETA != "" {
			if eta, err := time.Parse(time.RFC3339Nano, s.ETA); err == nil {
				d := int64(math.Round(ts.Sub(eta).Seconds()))
				s.DelayS, e.DelayS = &d, &d
			}
		}
		evs = append(evs, e)
		changed = true
		break
	}
	if changed {
		t.markRoute(p.Route, p)
	}
	return evs
}

// near reports whether DistanceM(lat, lng, s.Lat, s.Lng) <= m; u is
// unitOf(lat, lng). Most stops of a route are far from its driver: the
// chord between the two places on the sphere (a dot product of their unit
// vectors, no trigonometry per stop) is never longer than the great-circle
// distance, so a chord longer than m + 1 m rejects the stop; otherwise the
// haversine decides, as before.
func near(lat, lng float64, u [3]float64, s *StopProgress, m float64) bool {
	dx, dy, dz := u[0]-s.unit[0], u[1]-s.unit[1], u[2]-s.unit[2]
	if chord := earthRadiusM * earthRadiusM * (dx*dx + dy*dy + dz*dz); chord > (m+1)*(m+1) {
		return false
	}
	return DistanceM(lat, lng, s.Lat, s.Lng) <= m
}

// unitOf is a place's vector on the unit sphere.
func unitOf(lat, lng float64) [3]float64 {
	const rad = math.Pi / 180
	sφ, cφ := math.Sincos(lat * rad)
	sλ, cλ := math.Sincos(lng * rad)
	return [3]float64{cφ * cλ, cφ * sλ, sφ}
}

// earthRadiusM is the mean radius of the Earth.
const earthRadiusM = 6371008.8

// DistanceM is the great-circle distance between two points in metres
// (haversine).
func DistanceM(lat1, lng1, lat2, lng2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLng := (lng2 - lng1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusM * math.Asin(math.Min(1, math.Sqrt(a)))
}

// markKey is a driver's key in fleet_consumer.
func markKey(driver string) string { return "driver:" + driver }

// driverOfMarkKey is the driver of a fleet_consumer key, if it is one.
func driverOfMarkKey(k string) (string, bool) { return strings.CutPrefix(k, "driver:") }

// placesKey is a route's stops' places' key in fleet_consumer.
func placesKey(route string) string { return "stops:" + route }
