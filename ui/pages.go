package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/a-h/templ"

	"routehound/engine"
	"routehound/fleet"
	"routehound/hub"
)

// chrome is what every page's frame needs: the nav, the logout form's CSRF
// token and the live endpoint (with the LSN the page was rendered at).
type chrome struct {
	Active string
	Role   string
	CSRF   string
	Live   string // "" for a page without live updates
}

func (u *UI) chrome(s *session, active, live string) chrome {
	return chrome{Active: active, Role: s.role, CSRF: s.csrf, Live: live}
}

// render writes a component as a full HTML answer.
func render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		fail(w, http.StatusInternalServerError, "render", "the page could not be rendered: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// html renders a component to a string (a live frame's fragment).
func html(ctx context.Context, c templ.Component) string {
	var buf bytes.Buffer
	if err := c.Render(ctx, &buf); err != nil {
		return ""
	}
	return buf.String()
}

func liveURL(view string, lsn uint64, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	q.Set("from", strconv.FormatUint(lsn, 10))
	return "/ui/live/" + view + "?" + q.Encode()
}

// Fleet ---------------------------------------------------------------------

// staleAfter greys out a driver not heard from for this long.
const staleAfter = 2 * time.Minute

// fleetPageSize is the drivers a Fleet page lists (the plot shows all).
const fleetPageSize = 100

type fleetView struct {
	Drivers []Position // this page's, in natural order (d-2 before d-10)
	Total   int        // drivers in the fleet
	Page    int        // 1-based
	Pages   int
	Now     time.Time
	Plot    plot
	Trail   []Position
	Driver  string   // the driver whose trail is shown
	Map     *mapView // the basemap's map instead of the plot; nil without map_tiles
	all     []Position
}

// natLess orders names naturally: runs of digits compare as numbers, so
// d-2 comes before d-10 (and d-0, d-1, d-2 … d-10 … d-100).
func natLess(a, b string) bool {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			i, j := digits(a), digits(b)
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			if i != j { // equal values: fewer leading zeros first
				return i < j
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digits is the length of s's leading run of digits.
func digits(s string) int {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// plot is the SVG of positions scaled to the fleet's bounding box.
type plot struct {
	W, H   float64
	Dots   []dot
	Trail  string // polyline points
	Bounds string
}

type dot struct {
	Driver string
	X, Y   float64
	Stale  bool
}

const plotW, plotH = 640.0, 400.0

func makePlot(ps []Position, trail []Position, now time.Time) plot {
	p := plot{W: plotW, H: plotH}
	if len(ps) == 0 && len(trail) == 0 {
		return p
	}
	minLat, maxLat, minLng, maxLng := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, set := range [][]Position{ps, trail} {
		for _, x := range set {
			minLat, maxLat = min(minLat, x.Lat), max(maxLat, x.Lat)
			minLng, maxLng = min(minLng, x.Lng), max(maxLng, x.Lng)
		}
	}
	dLat, dLng := max(maxLat-minLat, 1e-6), max(maxLng-minLng, 1e-6)
	const pad = 12.0
	xy := func(lat, lng float64) (float64, float64) {
		return pad + (lng-minLng)/dLng*(plotW-2*pad), pad + (maxLat-lat)/dLat*(plotH-2*pad)
	}
	for _, x := range ps {
		px, py := xy(x.Lat, x.Lng)
		p.Dots = append(p.Dots, dot{Driver: x.Driver, X: px, Y: py, Stale: now.Sub(seen(x)) > staleAfter})
	}
	var b bytes.Buffer
	for i, x := range trail {
		px, py := xy(x.Lat, x.Lng)
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", px, py)
	}
	p.Trail = b.String()
	p.Bounds = fmt.Sprintf("lat %.4f…%.4f, lng %.4f…%.4f", minLat, maxLat, minLng, maxLng)
	return p
}

// seen is when a driver was last heard of: its point's time, else commit.
func seen(p Position) time.Time {
	if !p.TS.IsZero() {
		return p.TS
	}
	return p.CommittedAt
}

// fleet is one page of the fleet (page 1-based; past the last, the last)
// and the plot of every driver.
func (u *UI) fleet(ctx context.Context, driver string, page int) (fleetView, error) {
	ps, err := u.read.Positions(ctx)
	if err != nil {
		return fleetView{}, err
	}
	sort.SliceStable(ps, func(i, j int) bool { return natLess(ps[i].Driver, ps[j].Driver) })
	v := fleetView{Total: len(ps), Now: time.Now(), Driver: driver, Pages: max(1, (len(ps)+fleetPageSize-1)/fleetPageSize)}
	v.Page = min(max(page, 1), v.Pages)
	lo := (v.Page - 1) * fleetPageSize
	v.Drivers = ps[lo:min(lo+fleetPageSize, len(ps))]
	if driver != "" {
		if v.Trail, err = u.read.Trail(ctx, driver, 200); err != nil {
			return fleetView{}, err
		}
	}
	v.Plot = makePlot(ps, v.Trail, v.Now)
	v.all = ps
	return v, nil
}

// fleetPageURL is page p of the Fleet list, keeping the trail shown.
func fleetPageURL(driver string, p int) templ.SafeURL {
	q := url.Values{"page": {strconv.Itoa(p)}}
	if driver != "" {
		q.Set("driver", driver)
	}
	return templ.URL("/ui/fleet?" + q.Encode())
}

func (u *UI) fleetPage(w http.ResponseWriter, r *http.Request, s *session) {
	lsn := u.read.LSN()
	driver := r.URL.Query().Get("driver")
	if driver != "" && fleet.CheckName("driver", driver) != nil {
		fail(w, http.StatusBadRequest, "bad_driver", "driver must be 1 to 128 letters, digits or . _ - : @ ~")
		return
	}
	page := 1
	if p := r.URL.Query().Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			fail(w, http.StatusBadRequest, "bad_parameter", "page must be a page number from 1")
			return
		}
		page = n
	}
	v, err := u.fleet(r.Context(), driver, page)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	v.Map = u.newMap(v.all, v.Trail, nil, "", v.Now)
	q := url.Values{}
	if driver != "" {
		q.Set("driver", driver)
	}
	if v.Pages > 1 {
		// The live rows update the drivers of this page; a new driver is
		// counted, and listed on a reload in its place.
		q.Set("paged", "1")
	}
	render(w, r, http.StatusOK, fleetPage(u.chrome(s, "fleet", liveURL("fleet", lsn, q)), v))
}

func (u *UI) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, engine.ErrReopening) {
		// The store is being reopened after a storage failure: a moment.
		w.Header().Set("Retry-After", "1")
		fail(w, http.StatusServiceUnavailable, "unavailable", "the store is being reopened after a storage failure; reload in a moment")
		return
	}
	u.log.Error("dashboard page failed", "path", r.URL.Path, "err", err)
	fail(w, http.StatusInternalServerError, "internal", err.Error())
}

// Routes --------------------------------------------------------------------

const routesLimit = 1000

func (u *UI) routesPage(w http.ResponseWriter, r *http.Request, s *session) {
	lsn := u.read.LSN()
	as, err := u.read.Assignments(r.Context(), routesLimit)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	p, _, err := u.progressOf()
	if err != nil {
		u.internal(w, r, err)
		return
	}
	var m *mapView
	if u.mapOn() {
		// The stops on the map are those at the render; the rows are live.
		stops, err := u.routeStops(nil)
		if err != nil {
			u.internal(w, r, err)
			return
		}
		m = u.newMap(nil, nil, stops, "", time.Now())
	}
	render(w, r, http.StatusOK, routesPage(u.chrome(s, "routes", liveURL("routes", lsn, nil)), as, p, time.Now(), m))
}

// Warehouse -----------------------------------------------------------------

const feedLimit = 100

type warehouseView struct {
	Dock, Shipment string
	Events         []LoadingEvent
	Counts         []LoadingCount
}

func (u *UI) warehouse(ctx context.Context, dock, shipment string) (warehouseView, error) {
	v := warehouseView{Dock: dock, Shipment: shipment}
	var err error
	if v.Events, err = u.read.LoadingEvents(ctx, LoadingFilter{Dock: dock, Shipment: shipment, Limit: feedLimit}); err != nil {
		return v, err
	}
	v.Counts, err = u.read.LoadingCounts(ctx)
	return v, err
}

func (u *UI) warehousePage(w http.ResponseWriter, r *http.Request, s *session) {
	lsn := u.read.LSN()
	dock, shipment := r.URL.Query().Get("dock"), r.URL.Query().Get("shipment")
	if len(dock) > 256 || len(shipment) > 256 {
		fail(w, http.StatusBadRequest, "bad_parameter", "dock and shipment are at most 256 characters")
		return
	}
	v, err := u.warehouse(r.Context(), dock, shipment)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	q := url.Values{}
	if dock != "" {
		q.Set("dock", dock)
	}
	if shipment != "" {
		q.Set("shipment", shipment)
	}
	render(w, r, http.StatusOK, warehousePage(u.chrome(s, "warehouse", liveURL("warehouse", lsn, q)), v))
}

// System --------------------------------------------------------------------

type systemView struct {
	DurableLSN, FirstLSN, LastLSN uint64
	LogBytes                      int64
	Retention                     engine.Retention
	Disk                          diskUsage
	HeapBytes, SysBytes           uint64
	Goroutines                    int
	Fsyncs                        uint64
	FsyncsPerSec                  float64
	Subscribers                   int64
	Top                           []hub.TableCount
	Dropped, Resyncs, Refused     uint64
	Closes                        map[string]uint64
	Live, MaxLive                 int64
	Uptime                        time.Duration
	Ready                         bool
	SchedP99                      time.Duration // scheduling latency p99, last second
	GCShare                       float64       // GC's share of the process's CPU, last second
	Uplink                        UplinkView
}

// UplinkView is the log shipper's position for the System page (the
// appliance adapts the uplink's status; the UI does not import it).
type UplinkView struct {
	Role                          string // "primary", "standby" or "fenced" (issue 20); empty: not told
	Epoch                         uint64 // the depot's writer epoch this box knows
	Enabled, Connected            bool
	AckedLSN, LagRecords, Dropped uint64
	LagSeconds                    float64
	LastError                     string
	Warning                       string // the stream is replicated without allow_atomic (uplink.Status.Warning)
	// Depots: a central view's (Role "central") cursor of each depot;
	// LagRecords is then the messages of its streams not yet read.
	Depots []UplinkDepot
}

// UplinkDepot is one depot a central view follows.
type UplinkDepot struct {
	Name, Stream string
	LSN, Missing uint64
	// Rejected: the depot's records this view's engine can never apply
	// (skipped, the cursor moved past them); LastRejected says the last.
	Rejected     uint64
	LastRejected string
}

// diskUsage is the store's size on disk by kind of file.
type diskUsage struct {
	Total int64
	SST   int64 // Badger's LSM tables
	Mem   int64 // memtable logs: the writes not yet flushed into a table
	Vlog  int64 // value logs
	Other int64 // manifest, key registry, ...
	Err   string
}

// storeUsage sums the files of the store directory (one level, as Badger
// keeps them: a few dozen files).
func storeUsage(dir string) diskUsage {
	var d diskUsage
	ents, err := os.ReadDir(dir)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile (compaction)
		}
		n := fi.Size()
		d.Total += n
		switch filepath.Ext(e.Name()) {
		case ".sst":
			d.SST += n
		case ".mem":
			d.Mem += n
		case ".vlog":
			d.Vlog += n
		default:
			d.Other += n
		}
	}
	return d
}

// diskUsage reads the store directory when the UI knows it; otherwise
// Badger's sizes (refreshed once a minute, without the memtable logs).
func (u *UI) diskUsage(st engine.StoreStats) diskUsage {
	if u.opt.StoreDir != "" {
		return storeUsage(u.opt.StoreDir)
	}
	return diskUsage{Total: st.LSMBytes + st.VlogBytes, SST: st.LSMBytes, Vlog: st.VlogBytes}
}

func (u *UI) system() systemView {
	st := u.e.StoreStats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	hs := u.h.Stats()
	sched, gc := u.sampler.runtime()
	return systemView{
		SchedP99: sched, GCShare: gc,
		DurableLSN: u.e.DurableLSN(), FirstLSN: st.FirstLSN, LastLSN: st.LastLSN,
		LogBytes: st.LogBytes, Retention: u.e.Config().Retention,
		Disk:      u.diskUsage(st),
		HeapBytes: ms.HeapAlloc, SysBytes: ms.Sys, Goroutines: runtime.NumGoroutine(),
		Fsyncs: u.e.Totals().Fsyncs.Load(), FsyncsPerSec: u.sampler.fsyncRate(),
		Subscribers: hs.Subscribers.Load(), Top: u.h.TopTables(10),
		Dropped: hs.Dropped.Load(), Resyncs: hs.Resyncs.Load(), Refused: hs.Refused.Load(), Closes: hs.Closes(),
		Live: u.liveOpen.Load(), MaxLive: int64(u.opt.MaxLive),
		Uptime: u.e.Uptime(), Ready: u.e.Ready(),
		Uplink: u.uplink(),
	}
}

func (u *UI) uplink() UplinkView {
	if u.opt.Uplink == nil {
		return UplinkView{}
	}
	return u.opt.Uplink()
}

func (u *UI) systemPage(w http.ResponseWriter, r *http.Request, s *session) {
	render(w, r, http.StatusOK, systemPage(u.chrome(s, "system", "/ui/live/system"), u.system()))
}
