package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/hub"
)

// frame is one live update of a page, applied by assets/app.js:
// remove elements by id, replace or insert rows (outerHTML), set the
// inner HTML of containers. Fragments are rendered by the same templ
// components as the page, so they are escaped the same way.
type frame struct {
	LSN     uint64   `json:"lsn,omitempty"`
	Replace []set    `json:"replace,omitempty"` // a container's whole content (after a resync)
	Remove  []string `json:"remove,omitempty"`
	Upsert  []upsert `json:"upsert,omitempty"`
	Set     []set    `json:"set,omitempty"`
	// Points are the drivers that moved, for the map (assets/map.js);
	// Gone the drivers deleted. Only with a basemap.
	Points []mapPoint `json:"points,omitempty"`
	Gone   []string   `json:"gone,omitempty"`
	// Routes are the routes whose stops changed, for the Routes page's
	// map; RoutesReset (a resync) clears the map's routes first.
	Routes      []routeStops `json:"routes,omitempty"`
	RoutesReset bool         `json:"routes_reset,omitempty"`
}

type upsert struct {
	ID      string `json:"id"`
	Parent  string `json:"parent"` // where a new row goes
	HTML    string `json:"html"`
	Prepend bool   `json:"prepend,omitempty"`
}

type set struct {
	ID   string `json:"id"`
	HTML string `json:"html"`
}

func (f *frame) empty() bool {
	return len(f.Replace) == 0 && len(f.Remove) == 0 && len(f.Upsert) == 0 && len(f.Set) == 0 && len(f.Points) == 0 && len(f.Gone) == 0 && len(f.Routes) == 0
}

// maxPending bounds the keys a live connection coalesces between two
// frames. Policy when full: the page is told to reload (a fresh render at a
// new LSN), never an unbounded map.
const maxPending = 5000

// coalescer is the hub.Sink of a live connection: it keeps the latest event
// per key until the writer takes them, so the hub's stream never waits on
// the browser and a flood of one key is one row update per frame.
type coalescer struct {
	mu      sync.Mutex
	pending map[string]*hub.Event
	order   []string // keys in first-seen order
	last    uint64
	reload  bool

	// A resync (the hub's buffer for this connection overflowed) sends a
	// fresh snapshot: it replaces what the page shows. snapping is set
	// from its first page to its last; snap holds its rows (bounded by
	// maxPending, else reload).
	snap      []hub.Row
	snapping  bool
	snapReady bool
}

func newCoalescer() *coalescer { return &coalescer{pending: map[string]*hub.Event{}} }

// Snapshot is only called for a resync (live connections always resume
// from the page's LSN): the snapshot supersedes everything pending.
func (c *coalescer) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first {
		clear(c.pending)
		c.order = c.order[:0]
		c.snap, c.snapping, c.snapReady = c.snap[:0], true, false
	}
	if len(c.snap)+len(rows) > maxPending {
		c.reload = true // too large to send as one frame: render the page again
		return nil
	}
	c.snap = append(c.snap, rows...) // the hub reuses rows' array; the values are copies
	if last {
		c.snapping, c.snapReady = false, true
		c.last = lsn
	}
	return nil
}

func (c *coalescer) Change(ev *hub.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[ev.Key]; !ok {
		if len(c.pending) >= maxPending {
			c.reload = true
			return nil
		}
		c.order = append(c.order, ev.Key)
	}
	c.pending[ev.Key] = ev
	c.last = ev.LSN
	return nil
}

func (c *coalescer) Flush() error     { return nil }
func (c *coalescer) Heartbeat() error { return nil }

// take returns a completed resync snapshot (snap != nil) and the coalesced
// events after it, in first-seen order, and resets.
func (c *coalescer) take() (snap []hub.Row, evs []*hub.Event, last uint64, reload bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snapping {
		return nil, nil, c.last, c.reload // a snapshot is half sent: wait for its end
	}
	if c.snapReady {
		snap = append(make([]hub.Row, 0, len(c.snap)), c.snap...)
		c.snap, c.snapReady = c.snap[:0], false
	}
	for _, k := range c.order {
		evs = append(evs, c.pending[k])
	}
	clear(c.pending)
	c.order = c.order[:0]
	return snap, evs, c.last, c.reload
}

// liveView turns coalesced changes (and the clock) into frames.
type liveView interface {
	// table is the hub table the view follows, "" for none.
	table() string
	// frame builds the next frame from the events since the last one;
	// tick is true when the view's periodic refresh is due.
	frame(ctx context.Context, evs []*hub.Event, tick bool) frame
	// every is the period of the view's frames.
	every() time.Duration
	// replace renders a resync snapshot as the replacement of the page's
	// rows; ok is false when the page must be rendered again instead.
	replace(ctx context.Context, rows []hub.Row) (f frame, ok bool)
}

// liveHandler serves GET /ui/live/{view}: Server-Sent Events of frames.
func (u *UI) liveHandler(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		fail(w, http.StatusForbidden, "cross_origin", "a cross-site live connection is refused")
		return
	}
	s, ok := u.sessions.get(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		fail(w, http.StatusBadRequest, "use_sse", "the dashboard's live endpoints speak Server-Sent Events")
		return
	}
	view, err := u.view(r, s)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_parameter", err.Error())
		return
	}
	if t := view.table(); t != "" && !s.canRead(t) {
		failSecret(w, t)
		return
	}
	var from *uint64
	v := r.URL.Query().Get("from")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		v = id // a reconnecting EventSource resumes after its last frame
	}
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "bad_parameter", "from must be an LSN")
			return
		}
		from = &n
	}
	if fl, ok := view.(*fleetLive); ok {
		if from == nil {
			fail(w, http.StatusBadRequest, "bad_parameter", "from (the LSN the page was rendered at) is required")
			return
		}
		cur, catchUp, err := u.fleetFeed.join(*from)
		if err != nil {
			// The page is too old for the feed: render it again.
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, "event: reload\ndata: {}\n\n")
			return
		}
		fl.cursor, fl.catchUp = cur, catchUp
	}
	if view.table() != "" && from == nil {
		fail(w, http.StatusBadRequest, "bad_parameter", "from (the LSN the page was rendered at) is required")
		return
	}
	select {
	case u.live <- struct{}{}:
	default:
		fail(w, http.StatusTooManyRequests, "too_many_live", fmt.Sprintf("the dashboard has %d live connections open (ui.max_live)", u.opt.MaxLive))
		return
	}
	u.liveOpen.Add(1)
	defer func() {
		u.liveOpen.Add(-1)
		<-u.live
	}()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	co := newCoalescer()
	streamErr := make(chan error, 1)
	if t := view.table(); t != "" {
		sub, err := u.h.SubscribeFrom(r.RemoteAddr, t)
		if err != nil {
			status, code := http.StatusServiceUnavailable, "unavailable"
			if errors.Is(err, hub.ErrTooManySubscribers) {
				status, code = http.StatusTooManyRequests, "too_many_subscribers"
			}
			fail(w, status, code, err.Error())
			return
		}
		defer sub.Close()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			streamErr <- u.h.Stream(ctx, sub, from, co)
		}()
	}

	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 32<<10)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flush := func() error {
		rc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprintf(bw, "retry: 2000\n: live %s\n\n", view.table())
	if flush() != nil {
		return
	}
	every := view.every()
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastTick := time.Time{}
	lastWrite := time.Now()
	var lastLSN uint64
	if from != nil {
		lastLSN = *from
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.done:
			fmt.Fprint(bw, "event: close\ndata: {\"reason\":\"shutdown\"}\n\n")
			flush()
			return
		case err := <-streamErr:
			var ce *hub.ClosedError
			if errors.As(err, &ce) && ce.Reason == "shutdown" {
				fmt.Fprint(bw, "event: close\ndata: {\"reason\":\"shutdown\"}\n\n")
			} else {
				fmt.Fprint(bw, "event: reload\ndata: {}\n\n")
			}
			flush()
			return
		case now := <-tick.C:
			if !u.sessions.alive(s.id, time.Now()) {
				// Logged out or expired: the stream ends with its session;
				// the reload lands on the login form.
				fmt.Fprint(bw, "event: reload\ndata: {\"reason\":\"session_ended\"}\n\n")
				flush()
				return
			}
			snap, evs, last, reload := co.take()
			var rf frame
			if snap != nil && !reload {
				rf, ok = view.replace(ctx, snap)
				reload = !ok
			}
			if reload {
				fmt.Fprint(bw, "event: reload\ndata: {}\n\n")
				flush()
				return
			}
			due := now.Sub(lastTick) >= time.Second-every/2
			if due {
				lastTick = now
			}
			f := view.frame(ctx, evs, due)
			lastLSN = max(lastLSN, f.LSN)
			f.Replace = rf.Replace
			if last > lastLSN {
				lastLSN = last
			}
			if f.empty() {
				if now.Sub(lastWrite) >= 15*time.Second {
					bw.WriteString(": ping\n\n")
					if flush() != nil {
						return
					}
					lastWrite = now
				}
				continue
			}
			f.LSN = lastLSN
			data, err := json.Marshal(f)
			if err != nil {
				return
			}
			if lastLSN > 0 {
				fmt.Fprintf(bw, "id: %d\n", lastLSN)
			}
			bw.WriteString("data: ")
			bw.Write(data)
			bw.WriteString("\n\n")
			if flush() != nil {
				return
			}
			u.liveSent.Add(1)
			lastWrite = now
		}
	}
}

// view builds the live view named in the path.
func (u *UI) view(r *http.Request, s *session) (liveView, error) {
	q := r.URL.Query()
	switch r.PathValue("view") {
	case "channels":
		return &channelsLive{u: u}, nil
	case "system":
		return &systemLive{u: u}, nil
	case "tables":
		return &tablesLive{u: u}, nil
	case "fleet":
		return &fleetLive{u: u, driver: q.Get("driver"), paged: q.Get("paged") != "", mapOnly: q.Get("map") != ""}, nil
	case "routes":
		return &routesLive{u: u}, nil
	case "warehouse":
		return &warehouseLive{u: u, dock: q.Get("dock"), shipment: q.Get("shipment")}, nil
	case "table":
		t := q.Get("table")
		if err := fleet.CheckName("table", t); err != nil {
			return nil, err
		}
		return &tableLive{u: u, t: t, after: q.Get("after"), until: q.Get("until"), csrf: s.csrf, redact: s.role != "admin"}, nil
	}
	return nil, fmt.Errorf("no live view %q", r.PathValue("view"))
}

// noRows is the replace of views without a hub table or too large to
// resend: render again.
type noRows struct{}

func (noRows) replace(context.Context, []hub.Row) (frame, bool) { return frame{}, false }

type channelsLive struct {
	noRows
	u *UI
}

func (v *channelsLive) table() string        { return "" }
func (v *channelsLive) every() time.Duration { return time.Second }
func (v *channelsLive) frame(ctx context.Context, _ []*hub.Event, tick bool) frame {
	var f frame
	if !tick {
		return f
	}
	cv := v.u.channels()
	for _, c := range cv.Cards {
		// The whole card (its class is its grade), not only its body.
		f.Upsert = append(f.Upsert, upsert{ID: "lane-" + c.Lane, Parent: "cards", HTML: html(ctx, channelCardArticle(c))})
	}
	f.Set = append(f.Set, set{ID: "cost", HTML: html(ctx, costTable(cv))})
	return f
}

type systemLive struct {
	noRows
	u *UI
}

func (v *systemLive) table() string        { return "" }
func (v *systemLive) every() time.Duration { return time.Second }
func (v *systemLive) frame(ctx context.Context, _ []*hub.Event, tick bool) frame {
	var f frame
	if tick {
		f.Set = append(f.Set, set{ID: "system", HTML: html(ctx, systemBody(v.u.system()))})
	}
	return f
}

// tablesLive refreshes the list of tables (key counts, last LSNs).
type tablesLive struct {
	noRows
	u *UI
}

func (v *tablesLive) table() string        { return "" }
func (v *tablesLive) every() time.Duration { return 2 * time.Second }
func (v *tablesLive) frame(ctx context.Context, _ []*hub.Event, tick bool) frame {
	var f frame
	if !tick {
		return f
	}
	if tl, err := v.u.tableList(); err == nil { // a store reopening: the next tick
		f.Set = append(f.Set, set{ID: "table-list", HTML: html(ctx, tableListRows(tl))})
	}
	return f
}

type fleetLive struct {
	noRows
	u       *UI
	driver  string
	paged   bool // the page lists one page of several: update its rows, add none
	mapOnly bool // a driver page: no plot to render
	changed bool // positions changed since the plot was last sent
	cursor  uint64
	catchUp []*hub.Event // from the log, for a page older than the feed
}

// table is "": Fleet pages share the UI's one positions subscriber.
func (v *fleetLive) table() string        { return "" }
func (v *fleetLive) every() time.Duration { return max(4*v.u.opt.FrameInterval, time.Second) }
func (v *fleetLive) frame(ctx context.Context, _ []*hub.Event, tick bool) frame {
	var f frame
	evs, next := v.u.fleetFeed.since(v.cursor)
	v.cursor = next
	f.LSN = next
	if v.catchUp != nil {
		evs = append(v.catchUp, evs...) // older first; the feed's are newer
		v.catchUp = nil
	}
	now := time.Now()
	mapped := v.u.mapOn()
	for _, ev := range evs {
		if v.mapOnly && ev.Key != v.driver {
			continue // a driver page shows its driver only
		}
		id := rowID("drv", ev.Key)
		if ev.Op == engine.OpDelete {
			f.Remove = append(f.Remove, id)
			if mapped {
				f.Gone = append(f.Gone, ev.Key)
			}
			continue
		}
		p := decodePosition(ev.Key, ev.Value, ev.LSN)
		if mapped {
			f.Points = append(f.Points, mapPoint{Driver: p.Driver, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh})
		}
		parent := "fleet-rows" // a new driver's row goes at the end of the one page
		if v.paged {
			parent = "" // only a row this page shows is updated
		}
		f.Upsert = append(f.Upsert, upsert{ID: id, Parent: parent, HTML: html(ctx, fleetRow(p, now))})
	}
	v.changed = v.changed || len(evs) > 0
	if v.changed && !v.mapOnly {
		// The plot shows every driver: re-read (bounded by the fleet), at
		// most once per frame of this view, and shared by every Fleet
		// page without a trail (one render a frame period for all).
		if plot, n, err := v.u.plots.get(ctx, v.u, v.driver, v.every()); err == nil {
			f.Set = append(f.Set, set{ID: "fleet-plot", HTML: plot}, set{ID: "fleet-count", HTML: strconv.Itoa(n)})
			v.changed = false
		}
	}
	return f
}

// plotCache shares the fleet plot among live Fleet pages: rendering it
// reads every position, so N open pages must not cost N renders.
type plotCache struct {
	mu   sync.Mutex
	at   time.Time
	html string
	n    int
}

// get returns the plot rendered within maxAge, or renders it. A page that
// shows a driver's trail renders its own.
func (c *plotCache) get(ctx context.Context, u *UI, driver string, maxAge time.Duration) (string, int, error) {
	if driver != "" {
		fv, err := u.fleet(ctx, driver, 1)
		return html(ctx, fleetPlot(fv.Plot)), fv.Total, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < maxAge*9/10 {
		return c.html, c.n, nil
	}
	fv, err := u.fleet(ctx, "", 1)
	if err != nil {
		return "", 0, err
	}
	c.at, c.html, c.n = time.Now(), html(ctx, fleetPlot(fv.Plot)), fv.Total
	return c.html, c.n, nil
}

type routesLive struct {
	u *UI
	// The progress cells sent (their HTML, by route) and route_progress's
	// last LSN then: a tick sends only the cells that changed.
	sent        map[string]string
	progressLSN uint64
	progressAt  time.Time
}

func (v *routesLive) replace(ctx context.Context, rows []hub.Row) (frame, bool) {
	var b strings.Builder
	p, _, _ := v.u.progressOf() // none while the store reopens: the next tick sends them
	now := time.Now()
	f := frame{RoutesReset: v.u.mapOn()}
	for _, r := range rows {
		routeRow(decodeAssignment(r.Key, r.Value, r.Version, r.LSN), p[r.Key], now).Render(ctx, &b)
		if f.RoutesReset {
			f.Routes = append(f.Routes, routeStops{Route: r.Key, Stops: stopsOf(r.Key, r.Value)})
		}
	}
	v.sent, v.progressLSN = nil, 0
	f.Replace = []set{{ID: "route-rows", HTML: b.String()}}
	return f, true
}

func (v *tableLive) replace(ctx context.Context, rows []hub.Row) (frame, bool) {
	var b strings.Builder
	ro := fleet.IsBuiltin(v.t)
	for _, r := range rows {
		if (v.after != "" && r.Key <= v.after) || (v.until != "" && r.Key > v.until) {
			continue
		}
		value := r.Value
		if v.redact {
			value = fleet.RedactForNonAdmin(v.t, value)
		}
		keyRow(v.t, ro, v.csrf, tableRow{Key: r.Key, Value: string(value), Version: r.Version, LSN: r.LSN}).Render(ctx, &b)
	}
	return frame{Replace: []set{{ID: "key-rows", HTML: b.String()}}}, true
}

func (v *routesLive) table() string        { return fleet.TableAssignments }
func (v *routesLive) every() time.Duration { return v.u.opt.FrameInterval }
func (v *routesLive) frame(ctx context.Context, evs []*hub.Event, _ bool) frame {
	var f frame
	mapped := v.u.mapOn()
	var p map[string]*routeProgress
	if len(evs) > 0 {
		p, _, _ = v.u.progressOf()
	}
	now := time.Now()
	for _, ev := range evs {
		id := rowID("route", ev.Key)
		if ev.Op == engine.OpDelete {
			f.Remove = append(f.Remove, id)
			if mapped {
				f.Routes = append(f.Routes, routeStops{Route: ev.Key, Stops: []mapStop{}})
			}
			continue
		}
		if mapped {
			f.Routes = append(f.Routes, routeStops{Route: ev.Key, Stops: stopsOf(ev.Key, ev.Value)})
		}
		a := decodeAssignment(ev.Key, ev.Value, ev.Version, ev.LSN)
		// A hub event carries no commit time; the frame is sent within one
		// frame interval of the fsync that confirmed the write.
		a.CommittedAt = time.Now()
		f.Upsert = append(f.Upsert, upsert{ID: id, Parent: "route-rows", HTML: html(ctx, routeRow(a, p[ev.Key], now))})
		delete(v.sent, ev.Key)
	}
	// The stops' progress, each frame it changed: the consumer writes
	// route_progress, which this view's subscription (assignments) does
	// not carry.
	v.progressFrame(ctx, &f)
	return f
}

type warehouseLive struct {
	noRows         // the feed is the newest events, not the whole table: render again
	u              *UI
	dock, shipment string
	countsDue      bool
	countsAt       time.Time
}

func (v *warehouseLive) table() string        { return fleet.TableLoading }
func (v *warehouseLive) every() time.Duration { return v.u.opt.FrameInterval }
func (v *warehouseLive) frame(ctx context.Context, evs []*hub.Event, _ bool) frame {
	var f frame
	for _, ev := range evs {
		if ev.Op == engine.OpDelete {
			f.Remove = append(f.Remove, rowID("ev", ev.Key))
			continue
		}
		v.countsDue = true
		le := decodeLoading(ev.Key, ev.Value, ev.LSN)
		if (v.dock != "" && le.Dock != v.dock) || (v.shipment != "" && le.Shipment != v.shipment) {
			continue
		}
		f.Upsert = append(f.Upsert, upsert{ID: rowID("ev", ev.Key), Parent: "feed-rows", Prepend: true, HTML: html(ctx, loadingRow(le))})
	}
	// Counts are a scan of the read model: at most once a second.
	if v.countsDue && time.Since(v.countsAt) >= time.Second {
		if cs, err := v.u.read.LoadingCounts(ctx); err == nil {
			f.Set = append(f.Set, set{ID: "counts", HTML: html(ctx, loadingCounts(cs))})
			v.countsDue, v.countsAt = false, time.Now()
		}
	}
	return f
}

type tableLive struct {
	u            *UI
	t            string
	after, until string // the page's key range: (after, until]; until "" = no end
	csrf         string
	redact       bool // a non-admin session: values through fleet.RedactForNonAdmin
}

func (v *tableLive) table() string        { return v.t }
func (v *tableLive) every() time.Duration { return v.u.opt.FrameInterval }
func (v *tableLive) frame(ctx context.Context, evs []*hub.Event, _ bool) frame {
	var f frame
	ro := fleet.IsBuiltin(v.t)
	for _, ev := range evs {
		if (v.after != "" && ev.Key <= v.after) || (v.until != "" && ev.Key > v.until) {
			continue // not on this page
		}
		id := rowID("key", ev.Key)
		if ev.Op == engine.OpDelete {
			f.Remove = append(f.Remove, id)
			continue
		}
		value := ev.Value
		if v.redact {
			value = fleet.RedactForNonAdmin(v.t, value)
		}
		row := tableRow{Key: ev.Key, Value: string(value), Version: ev.Version, LSN: ev.LSN}
		f.Upsert = append(f.Upsert, upsert{ID: id, Parent: "key-rows", HTML: html(ctx, keyRow(v.t, ro, v.csrf, row))})
	}
	return f
}
