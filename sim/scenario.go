package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Scenario is a load shape: how many actors of each kind, how fast they
// write, and an optional window in which one actor's load jumps.
type Scenario struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Duration    time.Duration `json:"duration"`

	Drivers        int           `json:"drivers"`
	DriverInterval time.Duration `json:"driver_interval"` // mean time between a driver's reports
	// OfflineShare is the chance per report that a driver drops out of
	// coverage for 3-8 s; its points buffer and go as one burst on a fresh
	// connection when it is back (bursts and reconnects).
	OfflineShare float64 `json:"offline_share"`
	// SendEvery is the shortest time between a driver's requests (0: one
	// request per recorded point). Phones that record faster than they
	// report send what they recorded as one array.
	SendEvery time.Duration `json:"send_every,omitempty"`
	// StreamShare is the share of drivers that report over the WebSocket
	// /v1/drivers/stream (one socket per phone) instead of POSTing.
	StreamShare float64 `json:"stream_share"`

	Dispatchers  int     `json:"dispatchers"`
	DispatchRate float64 `json:"dispatch_rate"` // assignments/s, all dispatchers together
	Routes       int     `json:"routes"`
	HotRoutes    int     `json:"hot_routes"` // routes every dispatcher works on: conflicts happen here

	Terminals     int     `json:"terminals"`
	WarehouseRate float64 `json:"warehouse_rate"` // loading events/s, all terminals together

	Viewers int `json:"viewers"` // dashboard viewers on the built-in tables from the start

	UserTables          int     `json:"user_tables"`           // subscriber-flood: tables created by the run
	SubscribersPerTable int     `json:"subscribers_per_table"` // 0: the server's limit (hub.max_subscribers_per_table)
	TableWriteRate      float64 `json:"table_write_rate"`      // puts/s over the user tables

	// Spike names the actor whose load multiplies by SpikeFactor between
	// SpikeStart and SpikeEnd (fractions of Duration): "driver",
	// "warehouse" or "viewers" (StormViewers connect at SpikeStart).
	Spike        string  `json:"spike,omitempty"`
	SpikeFactor  float64 `json:"spike_factor,omitempty"`
	SpikeStart   float64 `json:"spike_start,omitempty"`
	SpikeEnd     float64 `json:"spike_end,omitempty"`
	StormViewers int     `json:"storm_viewers,omitempty"`
}

// base is the peak of a depot's shift: every actor busy at once.
func base() Scenario {
	return Scenario{
		Duration:       30 * time.Second,
		Drivers:        2000,
		DriverInterval: 2 * time.Second,
		OfflineShare:   0.002,
		StreamShare:    0.1,
		Dispatchers:    4,
		DispatchRate:   50,
		Routes:         400,
		HotRoutes:      4,
		Terminals:      8,
		WarehouseRate:  100,
		Viewers:        30,
	}
}

// Scenarios lists the named scenarios of the product's operating brief.
func Scenarios() map[string]Scenario {
	peak := base()
	peak.Name = "peak-shift"
	peak.Description = "all four actors at peak at once; every channel must stay within its SLA"

	spike := base()
	spike.Name = "driver-spike"
	spike.Description = "drivers record 10x (--spike-factor) as many points for a window (sent as arrays at the usual cadence); dispatch and warehouse p99 must not move (isolation)"
	spike.Spike, spike.SpikeFactor, spike.SpikeStart, spike.SpikeEnd = "driver", 10, 0.4, 0.75
	spike.SendEvery = spike.DriverInterval / 2
	// 60 s: the window before the spike (2-24 s) and the spike (24-45 s)
	// each hold about 1,000 dispatches and 2,000 loading events, so that
	// their p99s rest on ~10 samples above them, not on one or two.
	spike.Duration = 60 * time.Second

	wh := base()
	wh.Name = "warehouse-burst"
	wh.Description = "the warehouse posts 10x its loading events for a window (a convoy at the docks)"
	wh.Spike, wh.SpikeFactor, wh.SpikeStart, wh.SpikeEnd = "warehouse", 10, 0.4, 0.75

	storm := base()
	storm.Name = "dashboard-storm"
	storm.Description = "many dashboard viewers connect at once (shift change); writers must not notice"
	storm.Spike, storm.SpikeFactor, storm.SpikeStart, storm.SpikeEnd = "viewers", 1, 0.4, 0.75
	storm.StormViewers = 170 // on assignments and loading: with the first 30, just within 100 per table

	flood := base()
	flood.Name = "subscriber-flood"
	flood.Description = "user tables x subscribers at the configured limit, plus one subscriber too many per table"
	flood.Drivers, flood.DispatchRate, flood.WarehouseRate = 500, 20, 40
	flood.UserTables, flood.TableWriteRate = 20, 100

	m := map[string]Scenario{}
	for _, s := range []Scenario{peak, spike, wh, storm, flood} {
		m[s.Name] = s
	}
	return m
}

// Names lists the scenario names, sorted.
func Names() []string {
	var n []string
	for k := range Scenarios() {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the named scenario.
func Lookup(name string) (Scenario, error) {
	s, ok := Scenarios()[name]
	if !ok {
		return Scenario{}, fmt.Errorf("sim: unknown scenario %q (one of %s)", name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// Scaled multiplies every count and rate by f (at least one of each actor
// that the scenario has), for short runs in tests.
func (s Scenario) Scaled(f float64) Scenario {
	n := func(v int) int {
		if v == 0 {
			return 0
		}
		return max(1, int(float64(v)*f+0.5))
	}
	s.Drivers, s.Dispatchers, s.Terminals = n(s.Drivers), n(s.Dispatchers), n(s.Terminals)
	s.Viewers, s.StormViewers, s.UserTables = n(s.Viewers), n(s.StormViewers), n(s.UserTables)
	s.Routes, s.HotRoutes = n(s.Routes), n(s.HotRoutes)
	s.DispatchRate *= f
	s.WarehouseRate *= f
	s.TableWriteRate *= f
	return s
}

// Validate reports the first setting that cannot run.
func (s Scenario) Validate() error {
	switch {
	case s.Duration <= 0:
		return fmt.Errorf("sim: scenario %s: duration must be > 0", s.Name)
	case s.Drivers < 0 || s.Dispatchers < 0 || s.Terminals < 0 || s.Viewers < 0 || s.UserTables < 0:
		return fmt.Errorf("sim: scenario %s: counts must be >= 0", s.Name)
	case s.StreamShare < 0 || s.StreamShare > 1:
		return fmt.Errorf("sim: scenario %s: stream share must be within 0..1", s.Name)
	case s.Drivers > 0 && s.DriverInterval <= 0:
		return fmt.Errorf("sim: scenario %s: driver interval must be > 0", s.Name)
	case s.Dispatchers > 0 && (s.Routes <= 0 || s.HotRoutes > s.Routes):
		return fmt.Errorf("sim: scenario %s: routes must be > 0 and >= hot routes", s.Name)
	case s.Spike != "" && (s.SpikeStart <= 0 || s.SpikeEnd <= s.SpikeStart || s.SpikeEnd > 1 || s.SpikeFactor <= 0):
		return fmt.Errorf("sim: scenario %s: spike window must satisfy 0 < start < end <= 1 and factor > 0", s.Name)
	}
	switch s.Spike {
	case "", "driver", "warehouse", "viewers":
	default:
		return fmt.Errorf("sim: scenario %s: spike actor %q is not driver, warehouse or viewers", s.Name, s.Spike)
	}
	return nil
}

// window is the spike window in offsets from the start; ok is false when
// the scenario has none.
func (s Scenario) window() (from, to time.Duration, ok bool) {
	if s.Spike == "" {
		return 0, 0, false
	}
	return time.Duration(float64(s.Duration) * s.SpikeStart), time.Duration(float64(s.Duration) * s.SpikeEnd), true
}
