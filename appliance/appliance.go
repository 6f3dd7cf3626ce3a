// Package appliance wires RouteHound's parts — store, engine, API, hub —
// into one running server. `routehound serve` runs one until a signal;
// `routehound sim` starts one in process on a temporary data dir.
package appliance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/fleetevents"
	"routehound/hub"
	"routehound/internal/netguard"
	"routehound/osmand"
	"routehound/replica"
	"routehound/ui"
	"routehound/uplink"
	"routehound/wal"
)

// Appliance is one running server: its store, engine and listeners.
type Appliance struct {
	Config    config.Config
	Dir       string         // absolute data dir
	Tokens    []config.Token // one per role at least
	Generated bool           // tokens were generated on this start
	Engine    *engine.Engine
	Hub       *hub.Hub
	API       *api.Server
	Replica   *replica.Replica // the SQLite read model the dashboard reads
	UI        *ui.UI           // the operations dashboard at /ui/
	Addr      *net.TCPAddr     // where the HTTP listener is bound
	// Osmand is the phone apps' listener ([osmand] enabled), or nil.
	Osmand *osmand.Listener
	// Uplink ships the log to NATS JetStream ([uplink] nats_url), or nil
	// (a standby's until it is promoted: Shipper).
	Uplink *uplink.Uplink
	// Events is the fleet-events consumer: route progress and fleet
	// events derived from the log (issue 21).
	Events *fleetevents.Consumer
	evNow  atomic.Pointer[fleetevents.Consumer] // Events, for readers outside the role's lock (events)

	log    *slog.Logger
	http   *http.Server
	conns  connTracker // the HTTP server's open connections
	served chan error
	// goroutines the appliance starts (serving, Failed's watcher); Shutdown
	// waits for them after closing stopped.
	goroutines sync.WaitGroup
	stopped    chan struct{}
	closeMu    sync.Mutex
	closed     bool

	guard *netguard.Listener // the HTTP listener's connection caps
	role  *role              // the uplink and the standby's follower (standby.go)
}

// Start opens (and recovers) the store under cfg.DataDir, starts the engine
// and serves HTTP on cfg.Listen. It returns once the server accepts
// connections.
//
// A start that fails leaves no tokens behind that it generated: the next
// start generates them again and prints them (issue 23), instead of reading
// a tokens.toml whose tokens nobody was ever shown.
func Start(cfg config.Config, log *slog.Logger) (*Appliance, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var generated string // the tokens.toml this start wrote, if any
	a, err := start(cfg, log, &generated)
	if err != nil && generated != "" {
		if rerr := os.Remove(generated); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			log.Warn("start failed; could not remove the tokens it generated", "path", generated, "err", rerr)
		}
	}
	return a, err
}

func start(cfg config.Config, log *slog.Logger, generatedPath *string) (*Appliance, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	if z := ZeroSLAs(cfg); len(z) > 0 {
		log.Warn("config: an sla of 0 cannot be scheduled for; using the lane's default", "settings", strings.Join(z, ", "))
	}
	if len(cfg.Ignored) > 0 {
		log.Warn("config: these settings are ignored: the committer derives its batches from each lane's contract and sla; remove them",
			"settings", strings.Join(cfg.Ignored, ", "))
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	// A restore that did not finish left a store loaded in part.
	if err := CheckNotRestoring(dir); err != nil {
		return nil, err
	}
	if cfg.HTTP.TLSCert != "" {
		// Fail the start, not the first handshake, on a bad pair.
		if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
			return nil, fmt.Errorf("tls certificate %s / key %s: %w", cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, err)
		}
	}
	// Bind the listener before anything is written under the data dir: a
	// start that fails on a taken port leaves no store, replica or
	// tokens.toml behind (issue 23).
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, ListenError(cfg.Listen, err)
	}
	t0 := time.Now()
	// The engine owns the store: it opens it, reopens it after a storage
	// failure and resumes (Failed reports only a failure it could not
	// recover from), and closes it (closeStore).
	store := wal.Options{Dir: filepath.Join(dir, "store"), MemoryBytes: cfg.Storage.MemoryMB << 20, Logger: log}
	ecfg := EngineConfig(cfg, dir)
	var up *uplink.Uplink
	var eng *engine.Engine
	var app *Appliance // for the uplink's OnFenced, which runs only once it is set (up.Start)
	rl := &role{}
	standby := cfg.Uplink.Follow
	if standby {
		// A standby promoted before this start wrote its epoch into
		// uplink.json: it is the depot's writer (or fenced, which its
		// uplink tells), not a standby again.
		ep, _, err := uplink.StateEpoch(filepath.Join(dir, "uplink.json"))
		if err != nil {
			ln.Close()
			return nil, err
		}
		if ep > 0 {
			log.Warn("[uplink] follow is set, but this box was promoted (uplink.json holds its epoch): starting as the depot's primary; to follow again, start on a new data dir",
				"epoch", ep, "depot", cfg.Uplink.Depot)
			standby = false
		}
	}
	if cfg.Uplink.NATSURL != "" && !standby {
		// Before the engine: retention asks the uplink what it has not
		// shipped yet.
		uc := UplinkConfig(cfg, dir)
		uc.OnFenced = func(why string) { app.fenced(why) }
		if up, err = uplink.Open(uc, log); err != nil {
			ln.Close()
			return nil, err
		}
		rl.up.Store(up)
	}
	if cfg.Uplink.NATSURL != "" {
		// A standby's uplink is opened at its promotion: retention asks
		// it from then on.
		ecfg.Retention.RetainAfter, ecfg.Retention.RetainMaxBytes = rl.retainAfter, cfg.Uplink.BudgetMB<<20
	}
	eng, err = engine.Open(ecfg, store, log)
	if err != nil {
		ln.Close()
		return nil, StoreError(dir, err)
	}
	if up != nil {
		// A standby promoted while this box was down: no write before the
		// uplink's first session would learn it (a stream out of reach
		// tells nothing; the sessions check).
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := up.CheckFence(cctx); err != nil {
			log.Warn("uplink: could not ask the stream for the depot's epoch at start; the uplink's first session does", "err", err)
		}
		cancel()
	}
	if up != nil && up.Fenced() {
		// Fenced before this start (uplink.json): no write is taken.
		eng.SetNotPrimary("this box was the depot's primary and was fenced by a promoted standby (uplink.json); rebuild it as a standby")
	}
	if standby {
		// Before anything serves: the engine refuses writes
		// (not_primary) from the start, and the follower is its writer.
		f, err := uplink.OpenFollower(FollowConfig(cfg, dir), log)
		if err != nil {
			ln.Close()
			eng.Close(context.Background())
			eng.CloseStore()
			return nil, err
		}
		f.Start(eng)
		rl.follower = f
		log.Info("standby: following the depot's stream; writes answer 503 not_primary until promoted (POST /v1/admin/promote)",
			"depot", cfg.Uplink.Depot, "stream", cfg.Uplink.Stream)
	}
	central := cfg.Central.NATSURL != ""
	if central {
		// Before anything serves, like a standby's follower.
		if err := startCentral(cfg, eng, rl, log); err != nil {
			ln.Close()
			eng.Close(context.Background())
			eng.CloseStore()
			return nil, err
		}
	}
	// Tokens only once the port and the store are ours: a start that fails
	// before this point generates none, so the next start prints them.
	tokens, generated, err := config.EnsureTokens(cfg, dir)
	if err != nil {
		ln.Close()
		eng.Close(context.Background())
		eng.CloseStore()
		return nil, err
	}
	if generated {
		*generatedPath = filepath.Join(dir, config.TokensFile)
	}
	if err := config.TokensFileAccess(cfg, dir); err != nil {
		log.Warn("tokens file readable by others", "err", err)
	}
	st := eng.StoreStats()
	log.Info("store recovered", "dir", dir, "last_lsn", st.LastLSN, "first_lsn", st.FirstLSN, "took", time.Since(t0).Round(time.Millisecond))

	roles := map[string]api.Role{}
	for _, t := range tokens {
		roles[t.Token] = api.Role(t.Role)
	}
	// One token table, kept hashed (api.Tokens), for the API and the
	// dashboard's login alike: no raw token → role map outlives this.
	toks := api.NewTokens(roles)
	clear(roles)
	srv := api.New(eng, toks, APIConfig(cfg), log)
	hb := hub.New(eng, HubConfig(cfg), log)
	srv.MountHub(hb)
	phones, err := PhoneConfig(cfg)
	if err != nil {
		ln.Close()
		eng.Close(context.Background())
		eng.CloseStore()
		return nil, err
	}
	srv.SetConfigDevices(phones.Devices)
	backupTokens := tokensTOML(tokens)
	srv.SetBackupTokens(func() []byte { return backupTokens })

	a := &Appliance{Config: cfg, Dir: dir, Tokens: tokens, Generated: generated, Engine: eng, Hub: hb, API: srv,
		log: log, served: make(chan error, 1), stopped: make(chan struct{}), role: rl}
	app = a
	if a.Replica, err = openReplica(filepath.Join(dir, "replica.db"), eng, log, ReplicaConfig(cfg)); err != nil {
		ln.Close()
		a.closeStore(context.Background())
		return nil, err
	}
	srv.MountHistory(a.Replica)
	if err := srv.MountCollector(a.Replica.Collector()); err != nil {
		ln.Close()
		a.closeStore(context.Background())
		return nil, err
	}
	var tiles *ui.Tiles
	if cfg.UI.MapTiles != "" {
		if tiles, err = ui.OpenTiles(cfg.UI.MapTiles); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, fmt.Errorf("config [ui] map_tiles: %w", err)
		}
		log.Info("basemap opened", "path", cfg.UI.MapTiles, "format", tiles.Meta.Format, "minzoom", tiles.Meta.MinZoom, "maxzoom", tiles.Meta.MaxZoom)
		if !tiles.Meta.Raster() {
			log.Warn("basemap holds vector tiles: they are served at /ui/tiles/, but the dashboard's map draws raster tiles only and keeps its SVG plot", "path", cfg.UI.MapTiles)
		}
	}
	// The fleet-events consumer follows the log like the replica, and
	// writes what it derives through the events lane.
	if cfg.Fleet.Events && !standby && !central { // a standby's start at its promotion; a central view has none
		if a.Events, err = fleetevents.Start(eng, FleetEventsConfig(cfg), log); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, err
		}
		a.evNow.Store(a.Events)
		if err := srv.MountCollector(fleetevents.Collector(a.Events)); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, err
		}
	}
	if up != nil {
		a.Uplink = up
		up.Start(eng)
		if err := srv.MountCollector(up.Collector()); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, err
		}
	}
	if cfg.Uplink.NATSURL != "" {
		srv.SetUplink(a.uplinkStatus)
	}
	if central {
		if err := mountCentral(srv, rl.central); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, err
		}
	}
	if lanes := replicateLanes(cfg); len(lanes) > 0 {
		srv.SetReplicate(lanes, a.waitReplicated)
	}
	if standby {
		srv.SetPromote(func(ctx context.Context) (any, error) { return a.Promote(ctx) })
		if err := srv.MountCollector(rl.follower.Collector()); err != nil {
			ln.Close()
			a.closeStore(context.Background())
			return nil, err
		}
	}
	dash := ui.New(ui.Options{
		Engine: eng, Hub: hb, Log: log,
		Read: replicaReader{a.Replica},
		Role: func(tok string) (string, bool) {
			r, ok := toks.Role(tok)
			return string(r), ok
		},
		Failures:   srv.Failures(), // refused logins and API 401s count together, per address
		Secure:     cfg.HTTP.TLSCert != "",
		SessionTTL: cfg.UI.SessionTTL, MaxSessions: cfg.UI.MaxSessions,
		MaxLive: cfg.UI.MaxLive, FrameInterval: cfg.UI.FrameInterval,
		MaxPageBytes: cfg.HTTP.MaxPageBytes,
		StoreDir:     store.Dir,
		Tiles:        tiles,
		Uplink:       a.uplinkView(),
		Events:       a.events,
	})
	a.UI = dash
	srv.Handle("/ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, _, ok := dash.Session(r); ok {
			eng.NoteForeground() // an operator at the dashboard: someone for the driver limit to protect
		}
		dash.ServeHTTP(w, r)
	}))
	// Watchers are actors the elastic driver limit protects, like the
	// requests that note it: clients' hub subscriptions (not the server's
	// own feeds) and the dashboard's open live pages.
	eng.SetForeground(func() bool { return hb.Clients() > 0 || dash.LiveConnections() > 0 })
	// The table page's streams and writes for the dashboard's sessions,
	// under /ui/v1 with the cookie and a same-origin check (api/session.go).
	srv.MountSession(hb, func(r *http.Request) (api.Session, bool) {
		role, csrf, ctx, ok := dash.Session(r)
		return api.Session{Role: api.Role(role), CSRF: csrf, Context: ctx}, ok
	})
	srv.Handle("GET /{$}", http.HandlerFunc(ui.RedirectHome))

	a.Addr = ln.Addr().(*net.TCPAddr)
	a.guard = netguard.Listen(ln, netguard.Limits{MaxConns: cfg.HTTP.MaxConns, MaxConnsPerAddr: cfg.HTTP.MaxConnsPerAddr, ExemptLoopback: true})
	a.http = &http.Server{
		// Request bodies must arrive within body_read_timeout; streams
		// (no request body) are not cut.
		Handler:           netguard.BodyDeadline(srv, cfg.HTTP.BodyReadTimeout),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		MaxHeaderBytes:    netguard.MaxHeaderBytes,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         a.conns.track,
	}
	a.http.RegisterOnShutdown(hb.Close) // streams end with reason "shutdown"; clients resume by LSN
	a.http.RegisterOnShutdown(dash.Close)
	// The serving goroutine is owned: Shutdown waits for it.
	a.goroutines.Go(func() {
		if cfg.HTTP.TLSCert != "" {
			a.served <- a.http.ServeTLS(a.guard, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		} else {
			a.served <- a.http.Serve(a.guard)
		}
	})
	log.Info("serving", "listen", a.Addr.String())
	if cfg.Osmand.Enabled {
		if a.Osmand, err = osmand.Start(eng, phones, log); err != nil {
			a.Shutdown(context.Background())
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, &startError{err: err, msg: fmt.Sprintf(
					"cannot listen on %s for the phones ([osmand] listen): address already in use (another RouteHound, or another server, holds the port); stop that process or set another [osmand] listen", phones.Listen)}
			}
			return nil, err
		}
	}
	if err := srv.MountCollector(&connCollector{a: a, desc: prometheus.NewDesc("routehound_connections_refused_total",
		"Connections closed at once on accept, by listener (http, osmand) and cap (max_conns: the listener's total, max_conns_per_addr: one source address's).",
		[]string{"listener", "cap"}, nil)}); err != nil {
		a.Shutdown(context.Background())
		return nil, err
	}
	return a, nil
}

// URL is the base URL of the HTTP listener, on loopback when it is bound to
// every interface.
func (a *Appliance) URL() string {
	host := a.Addr.IP.String()
	if a.Addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http://"
	if a.Config.HTTP.TLSCert != "" {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, fmt.Sprint(a.Addr.Port))
}

// Token returns the first token of role, or "".
func (a *Appliance) Token(role string) string {
	for _, t := range a.Tokens {
		if t.Role == role {
			return t.Token
		}
	}
	return ""
}

// Failed reports a storage failure (the engine refuses writes from then on)
// or a listener that stopped; either way the process should exit for a
// restart to recover from the last durable commit.
func (a *Appliance) Failed() <-chan error {
	out := make(chan error, 1)
	var phones <-chan error // nil (never ready) without the phone listener
	if a.Osmand != nil {
		phones = a.Osmand.Done()
	}
	a.goroutines.Go(func() {
		select {
		case err := <-phones:
			out <- fmt.Errorf("phone listener: %w", err)
		case err := <-a.Engine.Fatal():
			out <- fmt.Errorf("storage failed, exiting for a restart: %w", err)
		case err := <-a.served:
			if errors.Is(err, http.ErrServerClosed) {
				return // Shutdown closed it: nothing to report
			}
			out <- fmt.Errorf("http server: %w", err)
		case <-a.stopped: // shut down: nothing to report
		}
	})
	return out
}

// Shutdown stops accepting, lets requests in flight finish (their writes
// drain through the lanes), then drains the lanes and closes the store.
//
// ctx bounds only the wait for requests in flight, on the HTTP and the phone
// listener alike (each gets the whole of it): a request still open when ctx
// ends (a client trickling its body, say) has its connection force-closed.
// The engine's drain then gets a bound of its own, shutdown_timeout from
// then on, so that an expired ctx never cuts the drain short. The store is
// closed only once the committer has stopped; if it does not stop in time,
// Shutdown returns an error and leaves the store open rather than close it
// under a running committer (a restart recovers from the last durable
// commit).
func (a *Appliance) Shutdown(ctx context.Context) error {
	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	var wg sync.WaitGroup
	if a.Osmand != nil {
		// Before the engine closes: each phone request in flight waits for
		// its commit, and gets its 200 only if that commit is durable.
		// Shutdown force-closes what is still open when ctx ends.
		wg.Go(func() {
			if err := a.Osmand.Shutdown(ctx); err != nil {
				a.log.Warn("phone listener: requests still open at the end of the shutdown wait; force-closed their connections", "err", err)
			}
		})
	}
	close(a.stopped) // Failed's watchers end: a shutdown is no failure
	wg.Go(func() { a.shutdownHTTP(ctx) })
	wg.Wait()
	a.goroutines.Wait() // the serving goroutine has returned, Failed's watcher too
	a.UI.Close()

	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.drainTimeout())
	defer cancel()
	return a.closeStore(dctx)
}

// shutdownHTTP stops the HTTP listener, waits until ctx ends for the
// requests in flight, then force-closes the connections still open.
func (a *Appliance) shutdownHTTP(ctx context.Context) {
	t0 := time.Now()
	err := a.http.Shutdown(ctx)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return
	}
	n := a.conns.open()
	if cerr := a.http.Close(); cerr != nil {
		a.log.Warn("http close", "err", cerr)
	}
	a.log.Warn("http: requests still open at the end of the shutdown wait; force-closed their connections",
		"connections", n, "waited", time.Since(t0).Round(time.Millisecond), "err", err)
}

// drainTimeout bounds the engine's drain at shutdown: the committer commits
// and syncs what the lanes hold, at most their bounds.
func (a *Appliance) drainTimeout() time.Duration {
	if d := a.Config.HTTP.ShutdownTimeout; d > 0 {
		return d
	}
	return 10 * time.Second
}

// closeStore closes the engine, then the replica and the store, the latter
// two only once the committer has stopped.
func (a *Appliance) closeStore(ctx context.Context) error {
	a.role.mu.Lock() // no promotion from now on
	a.role.closed = true
	a.role.mu.Unlock()
	if a.role.follower != nil {
		// Before the engine closes: an apply in flight completes.
		a.role.follower.Close()
	}
	a.role.closeCentral()
	if a.Events != nil {
		// First: its write in flight is answered while the engine still
		// takes writes; what it evaluated and did not write it reads
		// again from the log at the next start.
		a.Events.Close()
	}
	if err := a.Engine.Close(ctx); err != nil {
		// The committer may still be writing: closing the store (or the
		// replica, which reads it) under it is what must not happen.
		a.log.Error("engine did not drain in time; leaving the store open, a restart recovers from the last durable commit", "err", err)
		return err
	}
	var first error
	if up := a.role.up.Load(); up != nil {
		// After the engine drained and before the store closes (the
		// uplink reads the log): what it has not shipped, the next start
		// ships.
		if err := up.Close(); err != nil {
			a.log.Warn("uplink close", "err", err)
		}
	}
	if a.Replica != nil {
		// After the engine drained (its last records are published) and
		// before the store closes (the applier reads the log).
		if err := a.Replica.Close(); err != nil {
			a.log.Warn("replica close", "err", err)
		}
	}
	// The engine may have reopened the store: close the handle it holds
	// now (closing the first one again is harmless).
	if err := a.Engine.CloseStore(); err != nil {
		a.log.Error("store close", "err", err)
		first = err
	}
	if first == nil {
		a.log.Info("stopped cleanly", "durable_lsn", a.Engine.DurableLSN())
	}
	return first
}

// uplinkView adapts the uplink's status for the dashboard's System page
// (nil when the uplink is off).
func (a *Appliance) uplinkView() func() ui.UplinkView {
	if a.role.central != nil {
		return centralView(a.role.central)
	}
	if a.Config.Uplink.NATSURL == "" {
		return nil
	}
	return func() ui.UplinkView {
		s := a.uplinkStatus().(uplinkStatus)
		return ui.UplinkView{Role: s.Role, Epoch: s.Epoch, Enabled: true, Connected: s.Connected, AckedLSN: s.AckedLSN, LagRecords: s.LagRecords,
			Dropped: s.Dropped, LagSeconds: s.LagSeconds, LastError: s.LastError, Warning: s.Warning}
	}
}

// connTracker follows the HTTP server's connections (http.Server.ConnState),
// to tell how many a forced close ends. Hijacked connections (WebSocket)
// are the hub's to close.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (c *connTracker) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		if c.conns == nil {
			c.conns = map[net.Conn]struct{}{}
		}
		c.conns[conn] = struct{}{}
	case http.StateHijacked, http.StateClosed:
		delete(c.conns, conn)
	}
}

// open is the number of connections not yet closed or hijacked.
func (c *connTracker) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// connCollector exports the connections the listeners' caps refused.
type connCollector struct {
	a    *Appliance
	desc *prometheus.Desc
}

func (c *connCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(listener string, total, perAddr uint64) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(total), listener, "max_conns")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(perAddr), listener, "max_conns_per_addr")
	}
	total, perAddr := c.a.guard.Refused()
	emit("http", total, perAddr)
	if c.a.Osmand != nil {
		total, perAddr = c.a.Osmand.Refused()
		emit("osmand", total, perAddr)
	}
}

// openReplica opens the read replica. It is only a cache of the log: one
// that cannot be opened (damaged, or not a database) is deleted and built
// again from the log. Without opts it takes the replica's defaults (a
// restore builds it so; the serving replica cuts to its own settings).
func openReplica(path string, eng *engine.Engine, log *slog.Logger, opts ...replica.Options) (*replica.Replica, error) {
	var o replica.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	r, err := replica.OpenWith(path, eng, log, o)
	if err == nil {
		return r, nil
	}
	log.Warn("replica cannot be opened; deleting it to rebuild from the log", "path", path, "err", err)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("replica: %w (and removing %s: %v)", err, p, rerr)
		}
	}
	return replica.OpenWith(path, eng, log, o)
}

// startError is a start failure told in one line that says what to do; it
// unwraps to the underlying error.
type startError struct {
	msg string
	err error
}

func (e *startError) Error() string { return e.msg }
func (e *startError) Unwrap() error { return e.err }

// ListenError explains a listener that could not be bound: a taken port
// names the likely cause (RouteHound already running) and the way out.
func ListenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return &startError{err: err, msg: fmt.Sprintf(
			"cannot listen on %s: address already in use (another RouteHound, or another server, holds the port); stop that process or start with --listen ADDR", addr)}
	}
	return &startError{err: err, msg: fmt.Sprintf("cannot listen on %s (%v); choose another address with --listen ADDR", addr, err)}
}

// StoreError explains a store that could not be opened. Badger's directory
// lock (held by another process on the same data dir) is told as such, not
// in Badger's words; anything else is wrapped with the data dir.
func StoreError(dir string, err error) error {
	if errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "Cannot acquire directory lock") {
		return &startError{err: err, msg: fmt.Sprintf(
			"data dir %s is in use by another RouteHound (one server per data dir); stop that one, or start this one with --data DIR", dir)}
	}
	return fmt.Errorf("open the store in %s: %w", dir, err)
}
