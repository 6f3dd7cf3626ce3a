package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/a-h/templ"

	"routehound/engine"
	"routehound/fleet"
)

// The basemap ([ui] map_tiles): the Fleet, driver and Routes pages draw on
// a Leaflet map (assets/leaflet, assets/map.js) of the box's own tiles
// when the file holds raster tiles; otherwise they keep the SVG plot.
// Everything the map needs travels in data attributes of its element (the
// pages' CSP allows no inline script); live moves come in the Fleet view's
// frames (frame.Points).

// mapView is the map element's data.
type mapView struct {
	Tiles       string // URL template of the tiles
	MinZoom     int
	MaxZoom     int
	Attribution string
	Bounds      string // JSON [west, south, east, north] or ""
	Points      string // JSON []mapPoint
	Trail       string // JSON [[lat, lng], …], oldest first
	Stops       string // JSON []mapStop
	Follow      string // the driver a driver page follows ("": every driver)
}

// mapPoint is a driver's marker.
type mapPoint struct {
	Driver   string  `json:"driver"`
	Lat      float64 `json:"lat"`
	Lng      float64 `json:"lng"`
	SpeedKmh float64 `json:"speed_kmh"`
	Stale    bool    `json:"stale,omitempty"`
}

// mapStop is a stop of a route.
type mapStop struct {
	Route  string  `json:"route"`
	ID     string  `json:"id"`
	Lat    float64 `json:"lat"`
	Lng    float64 `json:"lng"`
	Driver string  `json:"driver"`
}

// mapOn reports whether the pages draw a map.
func (u *UI) mapOn() bool { return u.opt.Tiles != nil && u.opt.Tiles.Meta.Raster() }

func jsonAttr(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// newMap builds the map's data, nil without a basemap.
func (u *UI) newMap(ps []Position, trail []Position, stops []mapStop, follow string, now time.Time) *mapView {
	if !u.mapOn() {
		return nil
	}
	m := u.opt.Tiles.Meta
	v := &mapView{Tiles: "/ui/tiles/{z}/{x}/{y}", MinZoom: m.MinZoom, MaxZoom: m.MaxZoom, Attribution: m.Attribution, Follow: follow}
	if m.Bounds != [4]float64{} {
		v.Bounds = jsonAttr(m.Bounds)
	}
	pts := make([]mapPoint, 0, len(ps))
	for _, p := range ps {
		pts = append(pts, mapPoint{Driver: p.Driver, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh, Stale: now.Sub(seen(p)) > staleAfter})
	}
	v.Points = jsonAttr(pts)
	tr := make([][2]float64, 0, len(trail))
	for _, p := range trail {
		tr = append(tr, [2]float64{p.Lat, p.Lng})
	}
	v.Trail = jsonAttr(tr)
	if stops == nil {
		stops = []mapStop{}
	}
	v.Stops = jsonAttr(stops)
	return v
}

// routeStops reads the stops of the routes (at most routesLimit, all when
// routes is nil) from an engine snapshot: the read model keeps their count
// only.
func (u *UI) routeStops(routes []string) ([]mapStop, error) {
	snap, err := u.e.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("ui: snapshot of assignments: %w", err)
	}
	defer snap.Close()
	var out []mapStop
	add := func(route string, value []byte) { out = append(out, stopsOf(route, value)...) }
	if routes == nil {
		_, err = snap.Scan(fleet.TableAssignments, "", routesLimit, func(k string, st engine.State) error {
			add(k, st.Value)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ui: scan assignments: %w", err)
		}
		return out, nil
	}
	for _, r := range routes {
		st, ok, err := snap.Get(fleet.TableAssignments, r)
		if err != nil {
			return nil, fmt.Errorf("ui: read assignment %s: %w", r, err)
		}
		if ok {
			add(r, st.Value)
		}
	}
	return out, nil
}

// stopsOf reads the stops with a position of a stored assignment, each
// naming the driver by its positions key (a central view's
// <depot>/<driver>), as the map's markers are.
func stopsOf(route string, value []byte) []mapStop {
	var a fleet.AssignmentValue
	_ = a.Decode(value)
	out := []mapStop{}
	for _, raw := range a.Stops {
		var s fleet.Stop
		if json.Unmarshal(raw, &s) != nil || s.Lat == nil || s.Lng == nil {
			continue
		}
		st := mapStop{Route: route, Lat: *s.Lat, Lng: *s.Lng, Driver: fleet.AssignmentDriverKey(route, a.Driver)}
		if s.ID != nil {
			st.ID = *s.ID
		}
		out = append(out, st)
	}
	return out
}

// routeStops is one route's stops in a Routes page's frame: they replace
// what the map shows of the route (none: the route is gone).
type routeStops struct {
	Route string    `json:"route"`
	Stops []mapStop `json:"stops"`
}

// Driver page ----------------------------------------------------------------

// driverTrailWindow is how far back a driver page's trail goes.
const driverTrailWindow = time.Hour

// driverTrailPoints bounds what a driver page reads of the trail: the
// replica's largest Trail (1,000 points, half an hour at a point every
// 2 s), so that a page render stays bounded however deep the trail is.
const driverTrailPoints = 1000

// maxDriverShipments bounds the shipments whose loading events a driver
// page reads (one indexed query each).
const maxDriverShipments = 20

type driverView struct {
	Driver    string
	Last      *Position // nil: no report kept
	Now       time.Time
	Trail     []Position                // the last hour, oldest first
	Routes    []Assignment              // the routes assigned to the driver
	Progress  map[string]*routeProgress // by route: the stops' progress (route_progress)
	Shipments []string                  // the stop ids of its routes, read as shipments
	Events    []LoadingEvent
	Map       *mapView
	Plot      plot
}

func (u *UI) driverView(ctx context.Context, driver string) (driverView, error) {
	v := driverView{Driver: driver, Now: time.Now()}
	p, _, err := u.progressOf()
	if err != nil {
		return v, err
	}
	v.Progress = p
	ps, err := u.read.Positions(ctx)
	if err != nil {
		return v, err
	}
	for i := range ps {
		if ps[i].Driver == driver {
			v.Last = &ps[i]
			break
		}
	}
	trail, err := u.read.Trail(ctx, driver, driverTrailPoints)
	if err != nil {
		return v, err
	}
	for _, p := range trail {
		if v.Now.Sub(seen(p)) <= driverTrailWindow {
			v.Trail = append(v.Trail, p)
		}
	}
	as, err := u.read.Assignments(ctx, routesLimit)
	if err != nil {
		return v, err
	}
	var routes []string
	for _, a := range as {
		if a.Driver == driver {
			v.Routes = append(v.Routes, a)
			routes = append(routes, a.Route)
		}
	}
	var stops []mapStop
	if len(routes) > 0 {
		if stops, err = u.routeStops(routes); err != nil {
			return v, err
		}
	}
	// A driver's shipments are the stop ids of its routes (the loading
	// events name a shipment, the assignments name stops: the one link
	// between them).
	for _, s := range stops {
		if s.ID != "" && !slices.Contains(v.Shipments, s.ID) && len(v.Shipments) < maxDriverShipments {
			v.Shipments = append(v.Shipments, s.ID)
		}
	}
	for _, sh := range v.Shipments {
		evs, err := u.read.LoadingEvents(ctx, LoadingFilter{Shipment: sh, Limit: feedLimit})
		if err != nil {
			return v, err
		}
		v.Events = append(v.Events, evs...)
	}
	slices.SortFunc(v.Events, func(a, b LoadingEvent) int { return -cmpU64(a.LSN, b.LSN) })
	if len(v.Events) > feedLimit {
		v.Events = v.Events[:feedLimit]
	}
	var last []Position
	if v.Last != nil {
		last = []Position{*v.Last}
	}
	v.Map = u.newMap(last, v.Trail, stops, driver, v.Now)
	if v.Map == nil {
		v.Plot = makePlot(last, v.Trail, v.Now)
	}
	return v, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkDriverKey checks a driver's key as the positions table holds it: a
// driver's name, or on a central view (docs/design.md §6) the depot, a
// slash and the name; the map links to either.
func checkDriverKey(key string) error {
	if depot, name, ok := strings.Cut(key, "/"); ok {
		if err := fleet.CheckName("depot", depot); err != nil {
			return err
		}
		return fleet.CheckName("driver", name)
	}
	return fleet.CheckName("driver", key)
}

func driverURL(driver string) templ.SafeURL {
	return templ.URL("/ui/fleet/" + url.PathEscape(driver))
}

func (u *UI) driverPage(w http.ResponseWriter, r *http.Request, s *session) {
	driver := r.PathValue("driver")
	if checkDriverKey(driver) != nil {
		fail(w, http.StatusBadRequest, "bad_driver", "driver must be 1 to 128 letters, digits or . _ - : @ ~ (on a central view: depot/driver)")
		return
	}
	lsn := u.read.LSN()
	v, err := u.driverView(r.Context(), driver)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	// The Fleet view's frames, for this driver's marker and trail only
	// (map.js follows it): no rows are added, no plot is rendered.
	q := url.Values{"driver": {driver}, "paged": {"1"}, "map": {"1"}}
	render(w, r, http.StatusOK, driverPage(u.chrome(s, "fleet", liveURL("fleet", lsn, q)), v))
}
