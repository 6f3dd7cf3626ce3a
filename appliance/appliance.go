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
	"sync"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/osmand"
	"routehound/replica"
	"routehound/ui"
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

	log     *slog.Logger
	db      *wal.DB
	http    *http.Server
	served  chan error
	closeMu sync.Mutex
	closed  bool
}

// Start opens (and recovers) the store under cfg.DataDir, starts the engine
// and serves HTTP on cfg.Listen. It returns once the server accepts
// connections.
func Start(cfg config.Config, log *slog.Logger) (*Appliance, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	tokens, generated, err := config.EnsureTokens(cfg, dir)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	walOpts := wal.Options{Dir: filepath.Join(dir, "store"), MemoryBytes: cfg.Storage.MemoryMB << 20, Logger: log}
	db, err := wal.Open(walOpts)
	if err != nil {
		return nil, err
	}
	ecfg := cfg.Engine(dir)
	// After a storage failure the engine reopens the store itself and
	// resumes; Failed reports only a failure it could not recover from.
	ecfg.Open = func() (*wal.DB, error) { return wal.Open(walOpts) }
	eng, err := engine.New(ecfg, db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	log.Info("store recovered", "dir", dir, "last_lsn", db.LastLSN(), "first_lsn", db.FirstLSN(), "took", time.Since(t0).Round(time.Millisecond))

	roles := map[string]api.Role{}
	for _, t := range tokens {
		roles[t.Token] = api.Role(t.Role)
	}
	srv := api.New(eng, api.NewTokens(roles), api.Config{MaxBodyBytes: cfg.HTTP.MaxBodyBytes, RetryAfter: cfg.HTTP.RetryAfter}, log)
	hb := hub.New(eng, hub.Config{
		MaxSubscribersPerTable: cfg.Hub.MaxSubscribersPerTable,
		Buffer:                 cfg.Hub.SubscriberBuffer,
		Heartbeat:              cfg.Hub.Heartbeat,
		WriteTimeout:           cfg.Hub.WriteTimeout,
		MaxMessageBytes:        cfg.HTTP.MaxBodyBytes,
	}, log)
	srv.MountHub(hb)
	phones, err := osmand.ConfigFrom(cfg)
	if err != nil {
		eng.Close(context.Background())
		db.Close()
		return nil, err
	}
	srv.SetConfigDevices(phones.Devices)

	a := &Appliance{Config: cfg, Dir: dir, Tokens: tokens, Generated: generated, Engine: eng, Hub: hb, API: srv,
		log: log, db: db, served: make(chan error, 1)}
	if a.Replica, err = openReplica(filepath.Join(dir, "replica.db"), eng, log); err != nil {
		a.closeStore(context.Background())
		return nil, err
	}
	if err := srv.MountCollector(a.Replica.Collector()); err != nil {
		a.closeStore(context.Background())
		return nil, err
	}
	dash := ui.New(ui.Options{
		Engine: eng, Hub: hb, Log: log,
		Read: replicaReader{a.Replica},
		Role: func(tok string) (string, bool) {
			r, ok := roles[tok]
			return string(r), ok
		},
		Secure:     cfg.HTTP.TLSCert != "",
		SessionTTL: cfg.UI.SessionTTL, MaxSessions: cfg.UI.MaxSessions,
		MaxLive: cfg.UI.MaxLive, FrameInterval: cfg.UI.FrameInterval,
	})
	a.UI = dash
	srv.Handle("/ui/", dash)
	srv.Handle("GET /{$}", http.HandlerFunc(ui.RedirectHome))

	if cfg.HTTP.TLSCert != "" {
		// Fail the start, not the first handshake, on a bad pair.
		if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
			dash.Close()
			a.closeStore(context.Background())
			return nil, fmt.Errorf("tls certificate %s / key %s: %w", cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		dash.Close()
		a.closeStore(context.Background())
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	a.Addr = ln.Addr().(*net.TCPAddr)
	a.http = &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	a.http.RegisterOnShutdown(hb.Close) // streams end with reason "shutdown"; clients resume by LSN
	a.http.RegisterOnShutdown(dash.Close)
	if cfg.HTTP.TLSCert != "" {
		go func() { a.served <- a.http.ServeTLS(ln, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey) }()
	} else {
		go func() { a.served <- a.http.Serve(ln) }()
	}
	log.Info("serving", "listen", a.Addr.String())
	if cfg.Osmand.Enabled {
		if a.Osmand, err = osmand.Start(eng, phones, log); err != nil {
			a.Shutdown(context.Background())
			return nil, err
		}
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
	go func() {
		select {
		case err := <-phones:
			out <- fmt.Errorf("phone listener: %w", err)
		case err := <-a.Engine.Fatal():
			out <- fmt.Errorf("storage failed, exiting for a restart: %w", err)
		case err := <-a.served:
			out <- fmt.Errorf("http server: %w", err)
		}
	}()
	return out
}

// Shutdown stops accepting, lets requests in flight finish (their writes
// drain through the lanes), then drains the lanes and closes the store.
func (a *Appliance) Shutdown(ctx context.Context) error {
	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	if a.Osmand != nil {
		// Before the engine closes: each phone request in flight waits for
		// its commit, and gets its 200 only if that commit is durable.
		if err := a.Osmand.Shutdown(ctx); err != nil {
			a.log.Warn("phone listener shutdown", "err", err)
		}
	}
	if err := a.http.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Warn("http shutdown", "err", err)
		a.http.Close()
	}
	a.UI.Close()
	return a.closeStore(ctx)
}

func (a *Appliance) closeStore(ctx context.Context) error {
	var first error
	if err := a.Engine.Close(ctx); err != nil {
		a.log.Error("engine did not drain", "err", err)
		first = err
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
	if err := a.Engine.DB().Close(); err != nil && first == nil {
		first = err
	}
	if first == nil {
		a.log.Info("stopped cleanly", "durable_lsn", a.Engine.DurableLSN())
	}
	return first
}

// openReplica opens the read replica. It is only a cache of the log: one
// that cannot be opened (damaged, or not a database) is deleted and built
// again from the log.
func openReplica(path string, eng *engine.Engine, log *slog.Logger) (*replica.Replica, error) {
	r, err := replica.Open(path, eng, log)
	if err == nil {
		return r, nil
	}
	log.Warn("replica cannot be opened; deleting it to rebuild from the log", "path", path, "err", err)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("replica: %w (and removing %s: %v)", err, p, rerr)
		}
	}
	return replica.Open(path, eng, log)
}
