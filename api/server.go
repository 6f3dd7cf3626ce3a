package api

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync/atomic"
	"time"

	"routehound/engine"
	"routehound/hub"
)

// Config is the api's part of the configuration.
type Config struct {
	MaxBodyBytes int64
	RetryAfter   time.Duration
	// StreamPing is the driver stream's ping interval (the hub's
	// heartbeat); StreamIdle closes a driver stream that sent no frame
	// for that long (http.idle_timeout; 0: never).
	StreamPing time.Duration
	StreamIdle time.Duration
	// MaxPageBytes cuts a page of rows (table, log) at about this many
	// bytes (0: rows only bound it); the page's next cursor continues.
	MaxPageBytes int64
	// MaxAuthFailures failed authentications per source address within
	// AuthFailureWindow, then 429 too_many_failures (FailureLimiter); 0:
	// no limit.
	MaxAuthFailures   int
	AuthFailureWindow time.Duration
}

// pageBudget counts a page's bytes against Config.MaxPageBytes.
type pageBudget struct {
	max, used int64
}

// fits adds a row of about n bytes (its key and value; the JSON around
// them is counted as 64 bytes) and reports whether the page may take it:
// the first row always fits, so that a page is never empty.
func (b *pageBudget) fits(n int) bool {
	n += 64
	if b.max > 0 && b.used > 0 && b.used+int64(n) > b.max {
		return false
	}
	b.used += int64(n)
	return true
}

// Server serves the v1 interface over one engine.
type Server struct {
	e      *engine.Engine
	tokens *Tokens
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	ledger *ledgerCollector

	// driverSlots bounds the driver bodies being decoded at once
	// (GOMAXPROCS-1, at least 1); see postLocations.
	driverSlots chan struct{}

	configDevices map[string]string // phone device id → driver, from the config (devices.go)

	failures *FailureLimiter // nil: no limit

	history      History // the history endpoints' source (history.go); nil until MountHistory
	historyGate  *historyGate
	uplink       atomic.Pointer[func() any]    // the log shipper's status (uplink.go); nil: off
	promote      atomic.Pointer[PromoteFunc]   // a standby's promotion (uplink.go); nil: not a standby
	replicate    atomic.Pointer[replication]   // lanes answered once JetStream acknowledged (replicate.go); nil: none
	backupTokens atomic.Pointer[func() []byte] // the tokens in force, for backups (backup.go)
	backupSlot   chan struct{}                 // cap 1: the backup streaming now (backup.go)
}

// New builds the server; mount more routes with Handle before serving.
func New(e *engine.Engine, tokens *Tokens, cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{e: e, tokens: tokens, cfg: cfg, log: log, mux: http.NewServeMux(),
		driverSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)-1)),
		failures:    NewFailureLimiter(cfg.MaxAuthFailures, cfg.AuthFailureWindow),
		historyGate: newHistoryGate()}
	s.routes()
	s.uplinkRoutes()
	s.backupRoutes()
	return s
}

// MountHub serves the hub's streams: SSE per table (sse.go) and the
// WebSocket (ws.go), for dashboard and admin tokens.
func (s *Server) MountHub(h *hub.Hub) {
	s.ledger.h = h
	s.mux.Handle("/v1/tables/{table}/events", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowRole(noLane, s.sseHandler(h), RoleDashboard, RoleAdmin),
	}))
	s.mux.Handle("/v1/ws", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowRole(noLane, s.wsHandler(h), RoleDashboard, RoleAdmin),
	}))
}

// Handle mounts another handler (the hub's streams, the dashboard).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Authenticate resolves the request's bearer token to its role, for handlers
// mounted from other packages.
func (s *Server) Authenticate(r *http.Request) (Role, error) { return s.authenticate(r) }

// Failures is the server's limiter of failed authentications per source
// address (nil when off), for the dashboard's login to count against the
// same addresses.
func (s *Server) Failures() *FailureLimiter { return s.failures }

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// methods dispatches on the method, so that a wrong method gets a JSON 405
// rather than the mux's plain-text one.
func (s *Server) methods(m map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h, ok := m[r.Method]; ok {
			h(w, r)
			return
		}
		allow := ""
		for k := range m {
			if allow != "" {
				allow += ", "
			}
			allow += k
		}
		w.Header().Set("Allow", allow)
		s.fail(w, r, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here (allowed: %s)", r.Method, allow))
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("/v1/drivers/{driver}/locations", s.methods(map[string]http.HandlerFunc{
		"POST": s.allow(engine.LaneDriver, s.postLocations, RoleDriver),
	}))
	s.mux.HandleFunc("/v1/drivers/stream", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(engine.LaneDriver, s.driverStream, RoleDriver),
	}))
	s.mux.HandleFunc("/v1/assignments/{route}", s.methods(map[string]http.HandlerFunc{
		"PUT": s.allow(engine.LaneDispatch, s.putAssignment, RoleDispatch),
		"GET": s.allow(noLane, s.getAssignment, RoleDispatch, RoleDashboard, RoleAdmin),
	}))
	s.mux.HandleFunc("/v1/assignments/{route}/progress", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.getProgress, RoleDispatch, RoleDashboard, RoleAdmin),
	}))
	s.mux.HandleFunc("/v1/loading-events", s.methods(map[string]http.HandlerFunc{
		"POST": s.allow(engine.LaneWarehouse, s.postLoadingEvent, RoleWarehouse),
		"GET":  s.allow(noLane, s.getLoadingEvents, RoleDashboard, RoleAdmin),
	}))
	s.mux.HandleFunc("/v1/log", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowRole(noLane, s.getLog, RoleAdmin, RoleDashboard),
	}))
	s.tableRoutes()
	s.historyRoutes()
	s.deviceRoutes()
	s.fenceRoutes()
	s.adminRoutes()
	s.mux.HandleFunc("/healthz", s.methods(map[string]http.HandlerFunc{"GET": s.healthz}))
	s.mux.HandleFunc("/readyz", s.methods(map[string]http.HandlerFunc{"GET": s.readyz}))
	s.mux.Handle("/metrics", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.metricsHandler().ServeHTTP, RoleAdmin),
	}))
	// The Go runtime's profiles, for the operator (admin token): what a
	// box spends its CPU and memory on, under its real load.
	s.mux.HandleFunc("/debug/pprof/", s.allow(noLane, pprof.Index, RoleAdmin))
	s.mux.HandleFunc("/debug/pprof/profile", s.allow(noLane, pprof.Profile, RoleAdmin))
	s.mux.HandleFunc("/debug/pprof/trace", s.allow(noLane, pprof.Trace, RoleAdmin))
	s.mux.HandleFunc("/debug/pprof/symbol", s.allow(noLane, pprof.Symbol, RoleAdmin))
	s.mux.HandleFunc("/v1/openapi.yaml", s.methods(map[string]http.HandlerFunc{"GET": s.openAPI}))
	s.mux.HandleFunc("/v1/client.js", s.methods(map[string]http.HandlerFunc{"GET": s.clientModule}))
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no endpoint %s", r.URL.Path))
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// readyz answers 200 once recovery is done and writes are accepted.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.e.WritesRefused(); err != nil && s.e.Ready() {
		s.fail(w, r, err) // a standby or a central view serves reads, not writes
		return
	}
	if !s.e.Ready() {
		s.fail(w, r, errorf(http.StatusServiceUnavailable, "not_ready", "not accepting writes (starting, shutting down, disk low or storage failed)"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "durable_lsn": s.e.DurableLSN()})
}
