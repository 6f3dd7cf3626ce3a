package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"routehound/config"
	"routehound/engine"
	"routehound/fleet"
)

// Options configure one run.
type Options struct {
	Scenario Scenario
	Target   Target
	// SLA is the latency target per actor (driver, dispatch, warehouse,
	// tables), from the target's lane configuration. Viewers use ViewerSLA.
	SLA map[string]time.Duration
	// SubscriberLimit is the target's hub.max_subscribers_per_table:
	// subscriber-flood subscribes that many per table, plus one.
	SubscriberLimit int
	// Progress, when set, gets one line per second while the run goes on.
	Progress io.Writer
	// RunID prefixes every name the run writes (drivers, routes, tables),
	// so that runs against one server do not collide. Default: from the clock.
	RunID string
	// Engine, when the target runs in this process, is sampled once a
	// second (lane histograms, fsyncs) along with the Go runtime's
	// scheduler and GC instruments: the report's Server section.
	Engine *engine.Engine
}

// Result is a finished run: its report and what was acknowledged.
type Result struct {
	Report   *Report
	Acks     *Acks
	Since    uint64    // the target's durable LSN before the run
	OfferEnd time.Time // when the actors stopped offering
}

// Run drives the target with the scenario, then verifies every
// acknowledgement and builds the report. It fails only when the target
// cannot be reached or read back; refusals are results.
func Run(ctx context.Context, o Options) (*Result, error) {
	s := o.Scenario
	if err := s.Validate(); err != nil {
		return nil, err
	}
	t := o.Target
	for _, role := range []string{"driver", "dispatch", "warehouse", "dashboard", "admin"} {
		if t.Tokens[role] == "" {
			return nil, fmt.Errorf("sim: no %s token for %s", role, t.URL)
		}
	}
	if o.RunID == "" {
		o.RunID = "sim" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	}
	since, err := durableLSN(ctx, t)
	if err != nil {
		return nil, err
	}
	run := o.RunID
	acks := &Acks{}
	start := time.Now()
	recs := map[string]*recorder{}
	for _, a := range []string{ActorDriver, ActorDispatch, ActorWarehouse, ActorTables, ActorViewer} {
		recs[a] = newRecorder(start)
	}
	vs := &viewerStats{connect: newRecorder(start)}
	var stalled atomic.Int64

	from, to, hasSpike := s.window()
	factor := func(actor string) func(time.Time) float64 {
		return func(now time.Time) float64 {
			if hasSpike && s.Spike == actor {
				if off := now.Sub(start); off >= from && off < to {
					return s.SpikeFactor
				}
			}
			return 1
		}
	}

	runCtx, cancel := context.WithDeadline(ctx, start.Add(s.Duration))
	defer cancel()
	var wg sync.WaitGroup
	seed := uint64(start.UnixNano())

	// Drivers: one goroutine each, sharing one keep-alive pool.
	driverClient := &http.Client{Transport: newTransport(max(16, s.Drivers)), Timeout: 10 * time.Second}
	defer driverClient.CloseIdleConnections()
	driverFactor := factor("driver")
	interval := func(now time.Time) time.Duration {
		return time.Duration(float64(s.DriverInterval) / driverFactor(now))
	}
	vs.drivers = make(map[string]*driverSim, s.Drivers)
	for i := range s.Drivers {
		d := newDriver(fmt.Sprintf("%s-d-%d", run, i), t.URL, seed+uint64(i))
		d.target, d.useStream = t, float64(i%100) < s.StreamShare*100
		acks.drivers = append(acks.drivers, d)
		vs.drivers[d.name] = d
		wg.Go(func() {
			d.run(runCtx, driverClient, t.Tokens["driver"], recs[ActorDriver], &stalled, interval, s.OfflineShare, s.SendEvery)
		})
	}

	writeClient := &http.Client{Transport: newTransport(64), Timeout: 10 * time.Second}
	defer writeClient.CloseIdleConnections()
	for i := range s.Dispatchers {
		p := pacer{rng: rand.New(rand.NewPCG(seed, uint64(1000+i))), rate: func(time.Time) float64 { return s.DispatchRate / float64(s.Dispatchers) }}
		wg.Go(func() { dispatcher(runCtx, i, s, t, writeClient, recs[ActorDispatch], acks, run, p) })
	}
	whFactor := factor("warehouse")
	for i := range s.Terminals {
		p := pacer{rng: rand.New(rand.NewPCG(seed, uint64(2000+i))), rate: func(now time.Time) float64 {
			return s.WarehouseRate / float64(s.Terminals) * whFactor(now)
		}}
		wg.Go(func() { terminal(runCtx, i, t, writeClient, recs[ActorWarehouse], acks, run, p) })
	}

	// Viewers: even ones over SSE, odd ones over WebSocket.
	viewClient := &http.Client{Transport: newTransport(16)}
	defer viewClient.CloseIdleConnections()
	// One viewer in six watches positions (the busiest table: every point
	// of every driver); the others watch assignments and loading.
	builtin := []string{fleet.TableAssignments, fleet.TableLoading, fleet.TablePositions, fleet.TableAssignments, fleet.TableLoading, fleet.TableAssignments}
	startViewer := func(i int, table string, delay time.Duration) {
		wg.Go(func() {
			if delay > 0 && !sleep(runCtx, delay) {
				return
			}
			viewer(runCtx, t, viewClient, table, i%2 == 1, recs[ActorViewer], vs)
		})
	}
	for i := range s.Viewers {
		startViewer(i, builtin[i%len(builtin)], 0)
	}
	if s.StormViewers > 0 && hasSpike {
		for i := range s.StormViewers { // all within 200 ms of the window's start
			startViewer(i, builtin[i%2], from+time.Duration(i)*200*time.Millisecond/time.Duration(s.StormViewers))
		}
	}
	if s.UserTables > 0 {
		per := s.SubscribersPerTable
		if per == 0 {
			per = o.SubscriberLimit
		}
		for ti := range s.UserTables {
			table := fmt.Sprintf("%s-t-%d", run, ti)
			for i := range per + 1 { // one too many: expect too_many_subscribers
				startViewer(ti*(per+1)+i, table, time.Duration(i)*time.Millisecond)
			}
			p := pacer{rng: rand.New(rand.NewPCG(seed, uint64(3000+ti))), rate: func(time.Time) float64 { return s.TableWriteRate / float64(s.UserTables) }}
			wg.Go(func() {
				if sleep(runCtx, 300*time.Millisecond) { // let the subscribers connect first
					tableWriter(runCtx, table, t, writeClient, recs[ActorTables], acks, p)
				}
			})
		}
	}

	probeDone := make(chan []serverSnap, 1)
	if o.Engine != nil {
		go func() { probeDone <- probe(runCtx, o.Engine, start) }()
	} else {
		probeDone <- nil
	}
	progressDone := make(chan struct{})
	if o.Progress != nil {
		go func() { defer close(progressDone); progress(runCtx, o.Progress, t.Name, s, start, recs, vs) }()
	} else {
		close(progressDone)
	}
	wg.Wait()
	offerEnd := time.Now()
	<-progressDone
	snaps := <-probeDone

	// Every driver learns how far its points are durable (bounded wait).
	pollCtx, pollCancel := context.WithTimeout(ctx, 10*time.Second)
	var pw sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, d := range acks.drivers {
		if d.durable.Load() >= d.accepted {
			continue
		}
		sem <- struct{}{}
		pw.Go(func() { defer func() { <-sem }(); d.pollDurable(pollCtx, driverClient, t.Tokens["driver"]) })
	}
	pw.Wait()
	pollCancel()

	v, err := Verify(ctx, t, acks, since, offerEnd)
	if err != nil {
		return nil, err
	}
	rep := build(o, start, offerEnd, recs, vs, &stalled, acks, v)
	if snaps != nil {
		rep.Server = serverStats(snaps, warmUp(from), from, to, hasSpike)
	}
	return &Result{Report: rep, Acks: acks, Since: since, OfferEnd: offerEnd}, nil
}

// durableLSN reads the target's durable LSN from /readyz.
func durableLSN(ctx context.Context, t Target) (uint64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	a, err := do(ctx, c, http.MethodGet, t.URL+"/readyz", t.Tokens["admin"], nil)
	if err != nil {
		return 0, err
	}
	if a.status != http.StatusOK {
		return 0, fmt.Errorf("sim: %s is not ready: %d %s", t.URL, a.status, a.code)
	}
	var r struct {
		DurableLSN uint64 `json:"durable_lsn"`
	}
	if err := json.Unmarshal(a.body, &r); err != nil {
		return 0, fmt.Errorf("sim: %s/readyz: %w", t.URL, err)
	}
	return r.DurableLSN, nil
}

// progress writes one line per second: per actor, requests/s and p99 over
// the last second.
func progress(ctx context.Context, w io.Writer, system string, s Scenario, start time.Time, recs map[string]*recorder, vs *viewerStats) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	last := map[string]int64{}
	var lastEv int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			off := now.Sub(start)
			var b strings.Builder
			fmt.Fprintf(&b, "[%s %s] %3.0fs/%.0fs", system, s.Name, off.Seconds(), s.Duration.Seconds())
			for _, a := range []string{ActorDriver, ActorDispatch, ActorWarehouse, ActorTables} {
				n := recs[a].accepted.Load()
				if n == 0 && last[a] == 0 {
					continue
				}
				_, p99 := recs[a].recent(off - time.Second)
				fmt.Fprintf(&b, " | %s %d/s p99 %.1fms", a, n-last[a], ms(p99))
				last[a] = n
			}
			ev := vs.events.Load()
			fmt.Fprintf(&b, " | viewers %d, %d ev/s\n", vs.connected.Load(), ev-lastEv)
			lastEv = ev
			io.WriteString(w, b.String())
		}
	}
}

// SLAs maps the actors to their lanes' SLA in cfg (viewers: ViewerSLA).
func SLAs(cfg config.Config) map[string]time.Duration {
	return map[string]time.Duration{
		ActorDriver:    cfg.Lanes.Driver.SLA,
		ActorDispatch:  cfg.Lanes.Dispatch.SLA,
		ActorWarehouse: cfg.Lanes.Warehouse.SLA,
		ActorTables:    cfg.Lanes.Tables.SLA,
		ActorViewer:    ViewerSLA,
	}
}
