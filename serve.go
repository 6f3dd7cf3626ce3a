package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/wal"
)

// serve runs the server until SIGTERM/SIGINT (exit 0 after a clean drain)
// or a storage failure (exit 1, for a supervisor to restart it).
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML config file (default: embedded defaults)")
	dataDir := fs.String("data", "", "data directory (overrides data_dir)")
	listen := fs.String("listen", "", "listen address (overrides listen)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if cfg.MemoryLimitMB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimitMB << 20)
	}

	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	tokens, generated, err := config.EnsureTokens(cfg, dir)
	if err != nil {
		return err
	}
	t0 := time.Now()
	db, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "store"), MemoryBytes: cfg.Storage.MemoryMB << 20, Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()
	eng, err := engine.New(cfg.Engine(dir), db, log)
	if err != nil {
		return err
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

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		eng.Close(context.Background())
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(hb.Close) // streams end with reason "shutdown"; clients resume by LSN
	urls := dashboardURLs(ln.Addr().(*net.TCPAddr))
	if generated {
		fmt.Printf("First start: generated one token per role into %s (mode 0600):\n", filepath.Join(dir, config.TokensFile))
		for _, t := range tokens {
			fmt.Printf("  %-10s %s\n", t.Role, t.Token)
		}
		fmt.Println("They are printed only this once; read them from that file later.")
	}
	fmt.Printf("Dashboard: %s (log in with the dashboard or admin token)\n", strings.Join(urls, "  "))
	log.Info("serving", "listen", ln.Addr().String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var fatal error
	select {
	case s := <-sigs:
		log.Info("shutting down", "signal", s.String())
	case err := <-eng.Fatal():
		fatal = fmt.Errorf("storage failed, exiting for a restart: %w", err)
		log.Error("storage failed: exiting so that a restart recovers from the last durable commit", "err", err)
	case err := <-serveErr:
		fatal = fmt.Errorf("http server: %w", err)
	}
	signal.Stop(sigs)

	// Stop accepting, let requests in flight finish (their writes drain
	// through the lanes), then drain the lanes and close the store.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("http shutdown", "err", err)
		hs.Close()
	}
	if err := eng.Close(ctx); err != nil {
		log.Error("engine did not drain", "err", err)
		if fatal == nil {
			fatal = err
		}
	}
	if err := db.Close(); err != nil && fatal == nil {
		fatal = err
	}
	if fatal == nil {
		log.Info("stopped cleanly", "durable_lsn", eng.DurableLSN())
	}
	return fatal
}

// dashboardURLs lists where a browser on the LAN finds the dashboard.
func dashboardURLs(a *net.TCPAddr) []string {
	port := a.Port
	if !a.IP.IsUnspecified() {
		return []string{fmt.Sprintf("http://%s/ui/", net.JoinHostPort(a.IP.String(), fmt.Sprint(port)))}
	}
	urls := []string{fmt.Sprintf("http://127.0.0.1:%d/ui/", port)}
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			urls = append(urls, fmt.Sprintf("http://%s:%d/ui/", ipn.IP, port))
		}
	}
	return urls
}
