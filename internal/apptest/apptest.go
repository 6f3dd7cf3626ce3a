// Package apptest starts the real appliance (appliance.Start: store,
// engine, api, hub, replica, dashboard) for a test or benchmark, on a fresh
// data dir and a loopback listener, and shuts it down in the test's
// cleanup. The api and hub tests and benchmarks run against it, so that
// they exercise the server as `routehound serve` wires it, not a copy of
// that wiring.
//
// Only _test.go files may import it (testkit's TestOnlyTestsImport checks).
// Package-internal tests of api, hub and ui cannot: appliance imports those
// packages, an import cycle.
package apptest

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"routehound/appliance"
	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/replica"
)

// Options say how Start configures the appliance.
type Options struct {
	// Config changes the configuration after Start's defaults (see Start),
	// before the appliance starts: lane bounds, hub limits, [[tokens]].
	Config func(*config.Config)
	// Log is the appliance's logger; nil discards.
	Log *slog.Logger
}

// Server is one running appliance and what a test needs of it.
type Server struct {
	App     *appliance.Appliance
	URL     string            // base URL, http://127.0.0.1:port
	Tokens  map[string]string // role → the first token of that role
	Engine  *engine.Engine
	Hub     *hub.Hub
	Replica *replica.Replica
	// Client talks to URL, with no overall timeout (streams stay open;
	// bound a request with its context); its idle connections are closed
	// at cleanup.
	Client *http.Client
}

// Token is the first token of role ("driver", "dispatch", …), failing tb
// when there is none.
func (s *Server) Token(tb testing.TB, role string) string {
	tb.Helper()
	t, ok := s.Tokens[role]
	if !ok {
		tb.Fatalf("apptest: no token of role %q", role)
	}
	return t
}

// shutdownWait bounds the whole shutdown at cleanup: the request wait
// (http.shutdown_timeout) and the engine's drain (the same again) with
// room to spare.
const shutdownWait = 30 * time.Second

// Start starts the appliance with config.Default() on 127.0.0.1:0, a fresh
// tb.TempDir() data dir, no free-space watermark (storage.min_free_mb 0) and
// a 32 MiB store cache (storage.memory_mb 32, as testkit.Engine), then
// opts.Config. Without [[tokens]] the appliance generates one per role into
// the data dir, as on a first start. A cleanup shuts it down (bounded),
// failing tb on an error.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = tb.TempDir()
	cfg.Storage.MinFreeMB = 0
	cfg.Storage.MemoryMB = 32
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	a, err := appliance.Start(cfg, opts.Log)
	if err != nil {
		tb.Fatalf("apptest: appliance.Start: %v", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	s := &Server{
		App: a, URL: a.URL(), Tokens: map[string]string{},
		Engine: a.Engine, Hub: a.Hub, Replica: a.Replica,
		Client: &http.Client{Transport: tr},
	}
	for _, t := range a.Tokens {
		if _, ok := s.Tokens[t.Role]; !ok {
			s.Tokens[t.Role] = t.Token
		}
	}
	tb.Cleanup(func() {
		tr.CloseIdleConnections()
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), a.Config.HTTP.ShutdownTimeout)
			defer cancel()
			done <- a.Shutdown(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("apptest: appliance shutdown: %v", err)
			}
		case <-time.After(shutdownWait):
			tb.Errorf("apptest: appliance shutdown did not return within %v", shutdownWait)
		}
	})
	return s
}
