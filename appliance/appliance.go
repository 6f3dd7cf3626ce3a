// Package appliance wires RouteHound's parts — store, engine, API, hub —
// into one running server. `routehound serve` runs one until a signal;
// `routehound sim` starts one in process on a temporary data dir.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/hub"
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
	Addr      *net.TCPAddr // where the HTTP listener is bound

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

	a := &Appliance{Config: cfg, Dir: dir, Tokens: tokens, Generated: generated, Engine: eng, Hub: hb, API: srv,
		log: log, db: db, served: make(chan error, 1)}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
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
	go func() { a.served <- a.http.Serve(ln) }()
	log.Info("serving", "listen", a.Addr.String())
	return a, nil
}

// URL is the base URL of the HTTP listener, on loopback when it is bound to
// every interface.
func (a *Appliance) URL() string {
	host := a.Addr.IP.String()
	if a.Addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(a.Addr.Port))
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
	go func() {
		select {
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
	if err := a.http.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Warn("http shutdown", "err", err)
		a.http.Close()
	}
	return a.closeStore(ctx)
}

func (a *Appliance) closeStore(ctx context.Context) error {
	var first error
	if err := a.Engine.Close(ctx); err != nil {
		a.log.Error("engine did not drain", "err", err)
		first = err
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
