package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"routehound/appliance"
	"routehound/config"
)

// serve runs the server until SIGTERM/SIGINT (exit 0 after a clean drain)
// or a storage failure (exit 1, for a supervisor to restart it).
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML config file (default: embedded defaults)")
	dataDir := fs.String("data", "", "data directory (overrides data_dir)")
	listen := fs.String("listen", "", "listen address (overrides listen)")
	follow := fs.String("follow", "", "start as a warm standby following this NATS URL's stream (sets [uplink] nats_url and follow)")
	depot := fs.String("depot", "", "the depot (overrides [uplink] depot): with --follow, the depot followed")
	central := fs.String("central", "", "start as a read-only central view of the depots' streams at this NATS URL ([central] depots; default every depot) (sets [central] nats_url)")
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
	if *follow != "" {
		cfg.Uplink.NATSURL, cfg.Uplink.Follow = *follow, true
	}
	if *depot != "" {
		cfg.Uplink.Depot = *depot
	}
	if *central != "" {
		cfg.Central.NATSURL = *central
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if cfg.MemoryLimitMB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimitMB << 20)
	}

	// Signals are caught before the start: a SIGTERM that arrives while
	// the store opens (or just after the listener is ready) waits here and
	// shuts down cleanly, instead of killing the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	a, err := appliance.Start(cfg, log)
	if err != nil {
		return err
	}
	printStart(os.Stdout, toJournal(os.Stdout), a.Generated, len(cfg.Tokens) > 0, *cfgPath,
		filepath.Join(a.Dir, config.TokensFile), a.Tokens, dashboardURLs(a.Addr))

	var fatal error
	select {
	case s := <-sigs:
		log.Info("shutting down", "signal", s.String())
	case fatal = <-a.Failed():
		log.Error("exiting so that a restart recovers from the last durable commit", "err", fatal)
	}
	signal.Stop(sigs)

	// shutdown_timeout bounds the wait for requests in flight (connections
	// still open then are force-closed); the drain of the lanes that follows
	// has a bound of its own, so a slow client cannot cut it short.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil && fatal == nil {
		fatal = err
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

// printStart tells, on every start, where the dashboard is and where the
// tokens to log in with are: the generated tokens.toml, or the config file
// that names them. On the first start the generated tokens are printed too
// (printTokens), unless stdout goes to the systemd journal (journal).
func printStart(w io.Writer, journal, generated, fromConfig bool, cfgPath, tokensPath string, tokens []config.Token, urls []string) {
	if generated {
		printTokens(w, journal, tokensPath, tokens)
	}
	where := tokensPath
	if fromConfig {
		where = "[[tokens]] in " + cfgPath
	}
	fmt.Fprintf(w, "Dashboard: %s (log in with the dashboard or admin token from %s)\n", strings.Join(urls, "  "), where)
}

// printTokens tells where the tokens generated on the first start are, and
// prints them, once, unless stdout goes to the systemd journal, which
// others on the box may read (issue 18): then only the path is printed. A
// terminal, a pipe or a file gets them: the first start's output is where
// an operator, a script or a test looks for them.
func printTokens(w io.Writer, journal bool, path string, tokens []config.Token) {
	if journal {
		fmt.Fprintf(w, "First start: generated one token per role into %s (mode 0600); read them there (they are not printed: stdout goes to the systemd journal).\n", path)
		return
	}
	fmt.Fprintf(w, "First start: generated one token per role into %s (mode 0600):\n", path)
	for _, t := range tokens {
		fmt.Fprintf(w, "  %-10s %s\n", t.Role, t.Token)
	}
	fmt.Fprintln(w, "They are printed only this once; read them from that file later.")
}
