package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"routehound/appliance"
	"routehound/config"
	"routehound/naive"
	"routehound/sim"
)

// simCmd runs `routehound sim`: one scenario against a RouteHound (in
// process on a temporary data dir, or --target), then optionally against
// the naive SQLite baseline, and writes the report.
func simCmd(args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	scenario := fs.String("scenario", "peak-shift", "scenario: peak-shift, driver-spike, warehouse-burst, dashboard-storm, subscriber-flood")
	target := fs.String("target", "", "URL of a running RouteHound (default: start one in process on a temporary data dir)")
	tokensFile := fs.String("tokens", "", "tokens.toml of the target ([[tokens]] role/token; needed with --target)")
	cfgPath := fs.String("config", "", "TOML config: of the in-process server, or the target's (for its SLAs and subscriber limit)")
	duration := fs.Duration("duration", 0, "run length (default: the scenario's)")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	htmlOut := fs.String("html", "", "write the report as a self-contained HTML page to this file")
	baseline := fs.String("baseline", "", `"naive": run the same scenario against the naive SQLite baseline too, and compare`)
	scale := fs.Float64("scale", 1, "multiply every actor count and rate of the scenario")
	drivers := fs.Int("drivers", 0, "number of drivers (default: the scenario's)")
	interval := fs.Duration("driver-interval", 0, "mean time between a driver's reports (default: the scenario's)")
	dispatch := fs.Float64("dispatch-rate", 0, "assignments/s, all dispatchers (default: the scenario's)")
	warehouse := fs.Float64("warehouse-rate", 0, "loading events/s, all terminals (default: the scenario's)")
	viewers := fs.Int("viewers", 0, "dashboard viewers from the start (default: the scenario's)")
	spikeFactor := fs.Float64("spike-factor", 0, "multiply the spiking actor's load by this in the window (default: the scenario's, 10)")
	sendEvery := fs.Duration("send-every", 0, "shortest time between a driver's requests; points recorded meanwhile go as one array (default: the scenario's; 0: one request per point)")
	quiet := fs.Bool("quiet", false, "no progress line")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole process (simulator and in-process server) to this file")
	failOnSLA := fs.Bool("fail-on-sla", false, "exit 1 when a p99 is over its SLA (OVER in the report), for CI; without it only a lost write exits 1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected arguments %q", fs.Args())
	}
	// The overrides apply when given, whatever their value (0 included):
	// their flag defaults are zero so that --help prints none.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	s, err := sim.Lookup(*scenario)
	if err != nil {
		return err
	}
	if *scale != 1 {
		s = s.Scaled(*scale)
	}
	if *duration > 0 {
		s.Duration = *duration
	}
	if set["drivers"] {
		s.Drivers = *drivers
	}
	if set["driver-interval"] {
		s.DriverInterval = *interval
	}
	if set["dispatch-rate"] {
		s.DispatchRate = *dispatch
	}
	if set["warehouse-rate"] {
		s.WarehouseRate = *warehouse
	}
	if set["viewers"] {
		s.Viewers = *viewers
	}
	if *spikeFactor > 0 {
		s.SpikeFactor = *spikeFactor
	}
	if set["send-every"] {
		s.SendEvery = *sendEvery
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if *dispatch < 0 || *warehouse < 0 || *sendEvery < 0 || *interval < 0 {
		return errors.New("sim: --dispatch-rate, --warehouse-rate, --send-every and --driver-interval must be >= 0")
	}
	if *baseline != "" && *baseline != "naive" {
		return fmt.Errorf("sim: unknown baseline %q (only \"naive\")", *baseline)
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("sim: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	o := sim.Options{Scenario: s, SLA: sim.SLAs(cfg), SubscriberLimit: cfg.Hub.MaxSubscribersPerTable}
	if !*quiet {
		o.Progress = os.Stderr
	}
	tokens := map[string]string{}

	if *target != "" {
		if *tokensFile == "" {
			return errors.New("sim: --target needs --tokens FILE (the target's tokens.toml)")
		}
		tc, err := config.Load(*tokensFile)
		if err != nil {
			return err
		}
		for _, t := range tc.Tokens {
			if tokens[t.Role] == "" {
				tokens[t.Role] = t.Token
			}
		}
		o.Target = sim.Target{Name: "routehound", URL: *target, Tokens: tokens}
	} else {
		dir, err := os.MkdirTemp("", "routehound-sim-")
		if err != nil {
			return fmt.Errorf("sim: temp dir: %w", err)
		}
		defer os.RemoveAll(dir)
		rc := cfg
		rc.Listen, rc.DataDir = "127.0.0.1:0", dir
		a, err := appliance.Start(rc, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
			defer cancel()
			a.Shutdown(sctx)
		}()
		for _, r := range config.Roles {
			tokens[r] = a.Token(r)
		}
		o.Target = sim.Target{Name: "routehound", URL: a.URL(), Tokens: tokens}
		o.Engine = a.Engine
	}
	fmt.Fprintf(os.Stderr, "routehound sim: %s against %s for %s\n", s.Name, o.Target.URL, s.Duration)
	res, err := sim.Run(ctx, o)
	if err != nil {
		return err
	}
	var naiveRep *sim.Report
	if *baseline == "naive" {
		if naiveRep, err = runNaive(ctx, o, tokens, cfg); err != nil {
			return err
		}
	}
	cmp := sim.Compare(res.Report, naiveRep)
	cmp.Summary(os.Stdout)
	if *jsonOut != "" {
		if err := cmp.WriteJSON(*jsonOut); err != nil {
			return err
		}
	}
	if *htmlOut != "" {
		if err := cmp.WriteHTML(*htmlOut); err != nil {
			return err
		}
	}
	for _, r := range cmp.Runs {
		if !r.Verify.OK {
			return fmt.Errorf("sim: %s lost %d acknowledged writes", r.System, r.Lost())
		}
	}
	if *failOnSLA {
		// RouteHound's run only: the naive baseline is expected to miss.
		if over := overSLA(cmp.Runs[0]); len(over) > 0 {
			return fmt.Errorf("sim: p99 over its SLA (--fail-on-sla): %s", strings.Join(over, ", "))
		}
	}
	return nil
}

// overSLA lists the actors of a run whose p99 is over their SLA (OVER in
// the report).
func overSLA(r *sim.Report) []string {
	var over []string
	for _, a := range r.Actors {
		if !a.WithinSLA {
			p99 := a.P99ms
			if a.Driver != nil {
				p99 = max(p99, a.Driver.DurableP99ms)
			}
			over = append(over, fmt.Sprintf("%s %.1f ms > %.0f ms", a.Actor, p99, a.SLAms))
		}
	}
	return over
}

// runNaive runs the same scenario against the naive baseline on a
// temporary database, with the same tokens and subscriber limit.
func runNaive(ctx context.Context, o sim.Options, tokens map[string]string, cfg config.Config) (*sim.Report, error) {
	dir, err := os.MkdirTemp("", "routehound-sim-naive-")
	if err != nil {
		return nil, fmt.Errorf("sim: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	byToken := map[string]string{}
	for role, t := range tokens {
		byToken[t] = role
	}
	n, err := naive.Start(naive.Config{Dir: dir, Listen: "127.0.0.1:0", Tokens: byToken,
		MaxSubscribersPerTable: cfg.Hub.MaxSubscribersPerTable, MaxBodyBytes: cfg.HTTP.MaxBodyBytes}, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(sctx)
	}()
	o.Target = sim.Target{Name: "naive", URL: n.URL(), Tokens: tokens}
	o.Engine = nil
	o.RunID = ""
	fmt.Fprintf(os.Stderr, "routehound sim: %s against the naive baseline at %s\n", o.Scenario.Name, n.URL())
	res, err := sim.Run(ctx, o)
	if err != nil {
		return nil, err
	}
	return res.Report, nil
}
