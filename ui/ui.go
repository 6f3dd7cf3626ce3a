package ui

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"routehound/engine"
	"routehound/fleetevents"
	"routehound/hub"
)

//go:embed assets
var assetFS embed.FS

// Options configure the dashboard.
type Options struct {
	Engine *engine.Engine
	Hub    *hub.Hub
	// Read is the read model of the actor tables; nil reads engine
	// snapshots (see SnapshotReader).
	Read ReadModel
	// Role resolves a login token to its role; only "dashboard" and
	// "admin" may log in.
	Role func(token string) (role string, ok bool)
	// Failures limits refused logins per source address (the API's
	// limiter, so that logins and 401s count together); nil: no limit.
	Failures FailureCounter
	// Secure marks the session cookie Secure (the server speaks TLS).
	Secure        bool
	SessionTTL    time.Duration
	MaxSessions   int
	MaxLive       int           // open live connections at most
	FrameInterval time.Duration // shortest time between two frames of one view
	Log           *slog.Logger
	// MaxPageBytes cuts a table page at about this many bytes of rows
	// (at least one row; 0: 4 MiB); its next link continues it.
	MaxPageBytes int64
	// StoreDir is the store's directory: System shows what its files hold
	// on disk ("": Badger's own sizes, which it refreshes once a minute
	// and which leave out the memtable logs).
	StoreDir string
	// Tiles is the basemap ([ui] map_tiles, OpenTiles), nil for none:
	// the Fleet, driver and Routes pages then draw their SVG plot. The
	// dashboard closes it on Close.
	Tiles *Tiles

	// Uplink, when set, answers the log shipper's position for the
	// System page (nil: the uplink is off).
	Uplink func() UplinkView

	// Events answers the fleet-events consumer, shown on the Channels
	// page (nil, or a nil answer: none). Asked each time: a standby's
	// consumer starts at its promotion.
	Events func() *fleetevents.Consumer
}

// FailureCounter counts failed authentications per source address
// (api.FailureLimiter).
type FailureCounter interface {
	// Blocked reports whether r's address is past its failures, and for
	// how long it stays refused.
	Blocked(r *http.Request) (retry time.Duration, blocked bool)
	// Failed counts one failure of r's address.
	Failed(r *http.Request)
}

func (o *Options) defaults() {
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1000
	}
	if o.MaxLive <= 0 {
		o.MaxLive = 64
	}
	if o.FrameInterval <= 0 {
		o.FrameInterval = 250 * time.Millisecond
	}
	if o.MaxPageBytes <= 0 {
		o.MaxPageBytes = 4 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Read == nil {
		o.Read = SnapshotReader{E: o.Engine}
	}
}

// UI is the dashboard's http.Handler. Close it on shutdown: it ends the live
// connections and stops the sampler.
type UI struct {
	opt      Options
	e        *engine.Engine
	h        *hub.Hub
	read     ReadModel
	sessions *sessions
	sampler  *sampler
	mux      *http.ServeMux
	log      *slog.Logger

	live      chan struct{} // semaphore: one token per open live connection (cap MaxLive)
	liveOpen  atomic.Int64
	liveSent  atomic.Uint64 // frames written
	plots     plotCache
	fleetFeed fleetFeed // the one positions subscriber of all Fleet pages
	evRate    consumerRate

	done      chan struct{}
	closeOnce sync.Once
	tilesOnce sync.Once
	wg        sync.WaitGroup
}

// New builds the dashboard and starts its sampler. Mount it at /ui/.
func New(opt Options) *UI {
	opt.defaults()
	u := &UI{
		opt:      opt,
		e:        opt.Engine,
		h:        opt.Hub,
		read:     driverKeys{opt.Read},
		sessions: newSessions(opt.SessionTTL, opt.MaxSessions),
		sampler:  newSampler(opt.Engine, 300),
		mux:      http.NewServeMux(),
		log:      opt.Log,
		live:     make(chan struct{}, opt.MaxLive),
		done:     make(chan struct{}),
	}
	u.fleetFeed.u = u
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.sampler.run(u.done, time.Second)
	}()
	u.routes()
	return u
}

// Close ends the live connections and stops the sampler. Safe to call twice.
func (u *UI) Close() {
	u.closeOnce.Do(func() { close(u.done) })
	u.wg.Wait()
	if u.opt.Tiles != nil {
		u.tilesOnce.Do(func() {
			if err := u.opt.Tiles.Close(); err != nil {
				u.log.Warn("dashboard: close map tiles", "err", err)
			}
		})
	}
}

// LiveConnections is the number of open live connections.
func (u *UI) LiveConnections() int64 { return u.liveOpen.Load() }

// ServeHTTP serves /ui/… .
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything the pages load comes from here; no inline script.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	u.mux.ServeHTTP(w, r)
}

// RedirectHome answers GET / with a redirect to /ui/.
func RedirectHome(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (u *UI) routes() {
	sub, _ := fs.Sub(assetFS, "assets")
	assets := http.StripPrefix("/ui/assets/", http.FileServerFS(sub))
	u.mux.Handle("GET /ui/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		assets.ServeHTTP(w, r)
	}))
	u.mux.HandleFunc("GET /ui/login", u.loginForm)
	u.mux.HandleFunc("POST /ui/login", u.login)
	u.mux.HandleFunc("POST /ui/logout", u.form(u.logout))

	u.mux.HandleFunc("GET /ui/{$}", u.page(u.channelsPage))
	u.mux.HandleFunc("GET /ui/fleet", u.page(u.fleetPage))
	u.mux.HandleFunc("GET /ui/fleet/{driver}", u.page(u.driverPage))
	u.mux.HandleFunc("GET /ui/tiles/{z}/{x}/{y}", u.page(u.tileHandler))
	u.mux.HandleFunc("GET /ui/routes", u.page(u.routesPage))
	u.mux.HandleFunc("GET /ui/warehouse", u.page(u.warehousePage))
	u.mux.HandleFunc("GET /ui/tables", u.page(u.tablesPage))
	u.mux.HandleFunc("GET /ui/tables/{table}", u.page(u.tablePage))
	u.mux.HandleFunc("POST /ui/tables/{table}/put", u.form(u.putKey))
	u.mux.HandleFunc("POST /ui/tables/{table}/delete", u.form(u.deleteKey))
	u.mux.HandleFunc("GET /ui/system", u.page(u.systemPage))
	u.mux.HandleFunc("GET /ui/live/{view}", u.liveHandler)
	u.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := u.sessions.get(r); !ok {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		fail(w, http.StatusNotFound, "not_found", "no dashboard page "+r.URL.Path)
	})
}
