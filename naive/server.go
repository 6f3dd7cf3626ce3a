package naive

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"routehound/fleet"
)

// Config configures the baseline server.
type Config struct {
	Dir    string            // where naive.db lives
	Listen string            // e.g. 127.0.0.1:0
	Tokens map[string]string // token → role (driver, dispatch, warehouse, dashboard, admin)
	// MaxSubscribersPerTable is the same subscriber limit RouteHound has.
	MaxSubscribersPerTable int
	// PollInterval is how often a dashboard stream polls the database.
	PollInterval time.Duration
	MaxBodyBytes int64
}

// Server is a running baseline.
type Server struct {
	cfg   Config
	st    *store
	log   *slog.Logger
	ln    net.Listener
	http  *http.Server
	done  chan struct{} // closed by Close: streams end
	mu    sync.Mutex    // guards subs
	subs  map[string]int
	close sync.Once
}

// Start opens the database under cfg.Dir and serves HTTP on cfg.Listen.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSubscribersPerTable <= 0 {
		cfg.MaxSubscribersPerTable = 100
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	st, err := openStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: st, log: log, done: make(chan struct{}), subs: map[string]int{}}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.db.Close()
		return nil, fmt.Errorf("naive: listen %s: %w", cfg.Listen, err)
	}
	s.ln = ln
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(ln)
	return s, nil
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops serving, ends the streams and closes the database. Safe to
// call twice.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.close.Do(func() {
		close(s.done)
		if e := s.http.Shutdown(ctx); e != nil {
			s.http.Close()
		}
		err = s.st.db.Close()
	})
	return err
}

func (s *Server) routes() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /v1/drivers/{driver}/locations", s.auth(s.postLocations, "driver"))
	m.HandleFunc("GET /v1/drivers/stream", s.auth(s.driverStream, "driver"))
	m.HandleFunc("PUT /v1/assignments/{route}", s.auth(s.putAssignment, "dispatch"))
	m.HandleFunc("GET /v1/assignments/{route}", s.auth(s.getAssignment, "dispatch", "dashboard", "admin"))
	m.HandleFunc("POST /v1/loading-events", s.auth(s.postLoading, "warehouse"))
	m.HandleFunc("GET /v1/tables/{table}", s.auth(s.pageTable, "dashboard", "admin"))
	m.HandleFunc("PUT /v1/tables/{table}/keys/{key...}", s.auth(s.putKey, "dashboard", "admin"))
	m.HandleFunc("GET /v1/tables/{table}/events", s.auth(s.sse, "dashboard", "admin"))
	m.HandleFunc("GET /v1/ws", s.auth(s.ws, "dashboard", "admin"))
	m.HandleFunc("GET /v1/log", s.auth(s.getLog, "admin", "dashboard"))
	m.HandleFunc("GET /readyz", s.readyz)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "not_found", "no endpoint "+r.Method+" "+r.URL.Path)
	})
	return m
}

func (s *Server) auth(h http.HandlerFunc, roles ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		role, known := s.cfg.Tokens[tok]
		if !ok || !known {
			fail(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
			return
		}
		for _, x := range roles {
			if x == role {
				h(w, r)
				return
			}
		}
		fail(w, http.StatusForbidden, "forbidden", "role "+role+" may not use this endpoint")
	}
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

// failErr answers a store error: conflicts and key reuse by code, the rest 500.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errConflict):
		fail(w, http.StatusConflict, "version_conflict", "If-Match does not name the current version")
	case errors.Is(err, errIdemMismatch):
		fail(w, http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
	case errors.Is(err, context.Canceled):
		fail(w, http.StatusServiceUnavailable, "canceled", "the request ended before its commit")
	default:
		s.log.Error("naive: request failed", "path", r.URL.Path, "err", err)
		fail(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func (s *Server) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		fail(w, http.StatusRequestEntityTooLarge, "body_too_large", "the body is over the limit")
		return nil, false
	}
	return b, true
}

func fingerprint(parts ...string) []byte {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return h.Sum(nil)
}

// postLocations stores each point in its own transaction, one after the
// other, and answers once all are durable.
func (s *Server) postLocations(w http.ResponseWriter, r *http.Request) {
	driver := r.PathValue("driver")
	if err := fleet.CheckName("driver", driver); err != nil { // the same name rule as RouteHound's
		fail(w, http.StatusBadRequest, "bad_name", fleet.Message(err))
		return
	}
	b, ok := s.body(w, r)
	if !ok {
		return
	}
	pts, err := fleet.DecodePoints(b, 16384)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_json", err.Error())
		return
	}
	ans, err := s.storePoints(r.Context(), driver, pts)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ans)
}

// pointsAnswer is the driver's answer: every point is durable before it.
type pointsAnswer struct {
	Driver     string `json:"driver,omitempty"`
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
	DurableSeq uint64 `json:"durable_seq"`
}

// storePoints commits each point in its own transaction, one after the other.
func (s *Server) storePoints(ctx context.Context, driver string, pts []fleet.RawPoint) (pointsAnswer, error) {
	var a pointsAnswer
	for _, p := range pts {
		d, err := s.st.point(ctx, driver, p.Seq, p.Value)
		if err != nil {
			return a, err
		}
		if d {
			a.Duplicates++
		} else {
			a.Accepted++
		}
	}
	seq, err := s.st.driverSeq(ctx, driver)
	a.DurableSeq = seq
	return a, err
}

func ifMatch(r *http.Request) (*uint64, error) {
	v := strings.Trim(r.Header.Get("If-Match"), `"`)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func (s *Server) putAssignment(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		fail(w, http.StatusPreconditionRequired, "idempotency_key_required", "Idempotency-Key is required")
		return
	}
	ver, err := ifMatch(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_if_match", "If-Match must be a version number")
		return
	}
	b, ok := s.body(w, r)
	if !ok {
		return
	}
	var a struct {
		Driver string          `json:"driver"`
		Stops  json.RawMessage `json:"stops"`
	}
	if err := json.Unmarshal(b, &a); err != nil || a.Driver == "" || len(a.Stops) == 0 {
		fail(w, http.StatusBadRequest, "invalid", "an assignment needs driver and stops")
		return
	}
	status, ans, err := s.st.put(r.Context(), write{table: fleet.TableAssignments, key: route, actor: string(fleet.ActorDispatch), value: b, ifVersion: ver,
		idemScope: "dispatch", idem: key, fp: fingerprint(route, string(b), r.Header.Get("If-Match"))},
		func(res result) (int, []byte) {
			st := http.StatusOK
			if res.created {
				st = http.StatusCreated
			}
			j, _ := json.Marshal(map[string]any{"route": route, "version": res.version, "lsn": res.lsn, "committed_at": res.committedAt.Format(time.RFC3339Nano)})
			return st, j
		})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(ans)
}

func (s *Server) getAssignment(w http.ResponseWriter, r *http.Request) {
	route := r.PathValue("route")
	var rw row
	var v string
	err := s.st.db.QueryRowContext(r.Context(), `SELECT value, version, lsn FROM state WHERE tbl=? AND key=?`, fleet.TableAssignments, route).Scan(&v, &rw.Version, &rw.LSN)
	if err != nil {
		fail(w, http.StatusNotFound, "not_found", "no such route")
		return
	}
	rw.Key, rw.Value = route, rawJSON(v)
	writeJSON(w, http.StatusOK, rw)
}

func (s *Server) postLoading(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		fail(w, http.StatusPreconditionRequired, "idempotency_key_required", "Idempotency-Key is required")
		return
	}
	b, ok := s.body(w, r)
	if !ok {
		return
	}
	var e struct {
		Terminal, Dock, Shipment, Kind, TS string
		Pallets                            *int64
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Terminal == "" || e.Dock == "" || e.Shipment == "" || e.Kind == "" || e.Pallets == nil {
		fail(w, http.StatusBadRequest, "invalid", "a loading event needs terminal, dock, shipment, kind, pallets and ts")
		return
	}
	id := ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String()
	zero := uint64(0)
	status, ans, err := s.st.put(r.Context(), write{table: fleet.TableLoading, key: id, actor: string(fleet.ActorWarehouse), value: b, ifVersion: &zero,
		idemScope: "warehouse", idem: key, fp: fingerprint(string(b))},
		func(res result) (int, []byte) {
			j, _ := json.Marshal(map[string]any{"id": id, "lsn": res.lsn})
			return http.StatusCreated, j
		})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(ans)
}

func (s *Server) putKey(w http.ResponseWriter, r *http.Request) {
	table, key := r.PathValue("table"), r.PathValue("key")
	if err := fleet.CheckUserTable(table); errors.Is(err, fleet.ErrReadOnly) { // RouteHound's write authority
		fail(w, http.StatusForbidden, "read_only_table", fleet.Message(err))
		return
	}
	ver, err := ifMatch(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_if_match", "If-Match must be a version number")
		return
	}
	b, ok := s.body(w, r)
	if !ok {
		return
	}
	if !json.Valid(b) {
		fail(w, http.StatusBadRequest, "bad_json", "the body is not JSON")
		return
	}
	var out row
	status, ans, err := s.st.put(r.Context(), write{table: table, key: key, actor: "tables", value: b, ifVersion: ver},
		func(res result) (int, []byte) {
			out = row{Key: key, Value: rawJSON(b), Version: res.version, LSN: res.lsn}
			j, _ := json.Marshal(out)
			if res.created {
				return http.StatusCreated, j
			}
			return http.StatusOK, j
		})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(ans)
}

func limitParam(r *http.Request, def, most int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 1 && n <= most
}

func (s *Server) pageTable(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(r, 100, 1000)
	if !ok {
		fail(w, http.StatusBadRequest, "bad_parameter", "limit must be an integer from 1 to 1000")
		return
	}
	rows, more, err := s.st.rows(r.Context(), r.PathValue("table"), r.URL.Query().Get("after"), limit)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	lsn, err := s.st.lastLSN(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var next any
	if more {
		next = rows[len(rows)-1].Key
	}
	writeJSON(w, http.StatusOK, map[string]any{"lsn": lsn, "rows": rows, "next": next})
}

func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(r, 100, 1000)
	if !ok {
		fail(w, http.StatusBadRequest, "bad_parameter", "limit must be an integer from 1 to 1000")
		return
	}
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "bad_parameter", "after must be an LSN")
			return
		}
		after = n
	}
	recs, err := s.st.log(r.Context(), after, limit, r.URL.Query().Get("table"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var next any
	if len(recs) == limit {
		next = recs[len(recs)-1].LSN
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": recs, "next": next})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	lsn, err := s.st.lastLSN(r.Context())
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "not_ready", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "durable_lsn": lsn})
}
