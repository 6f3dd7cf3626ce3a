package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// ViewerSLA is the delivery target of a dashboard viewer (send → change
// received). The config has no lane for readers; DESIGN.md asks that the
// dashboard "sees changes within milliseconds", and this is the simulator's
// reading of it.
const ViewerSLA = 100 * time.Millisecond

// Report is one run against one system.
type Report struct {
	System    string        `json:"system"` // routehound | naive
	Target    string        `json:"target"`
	Scenario  Scenario      `json:"scenario"`
	RunID     string        `json:"run_id"`
	StartedAt time.Time     `json:"started_at"`
	DurationS float64       `json:"duration_s"`
	Actors    []ActorReport `json:"actors"`
	Verify    *Verification `json:"verify"`
	// SpikeWindowS is the spike window in seconds from the start, when the
	// scenario has one; isolation ratios compare it with the time before.
	SpikeWindowS []float64 `json:"spike_window_s,omitempty"`
	// Server is what the in-process server and the Go runtime measured
	// (absent with --target or for the naive baseline).
	Server *ServerStats `json:"server,omitempty"`
}

// ActorReport is what one actor offered, got and saw.
type ActorReport struct {
	Actor     string           `json:"actor"`
	SLAms     float64          `json:"sla_ms"`
	Offered   int64            `json:"offered"`  // requests sent (viewers: subscribe attempts)
	Accepted  int64            `json:"accepted"` // 2xx answers (viewers: subscriptions established)
	Rejected  map[string]int64 `json:"rejected"` // refusals and failures by reason
	Samples   int              `json:"samples"`
	P50ms     float64          `json:"p50_ms"`
	P99ms     float64          `json:"p99_ms"`
	MaxMs     float64          `json:"max_ms"`
	WithinSLA bool             `json:"within_sla"` // p99 ≤ SLA (driver: durable p99)
	Checked   int64            `json:"checked"`    // acknowledged writes read back (driver: points)
	Lost      int64            `json:"lost"`
	Isolation *Isolation       `json:"isolation,omitempty"`
	Series    []Bucket         `json:"series"`
	Driver    *DriverPoints    `json:"driver,omitempty"`
	Viewers   *ViewerCounts    `json:"viewers,omitempty"`
}

// Isolation compares an actor's p99 during the spike window with its p99
// before it (after a short warm-up).
type Isolation struct {
	P99BeforeMs float64 `json:"p99_before_ms"`
	P99SpikeMs  float64 `json:"p99_spike_ms"`
	Ratio       float64 `json:"ratio"`
	Before      int     `json:"samples_before"`
	During      int     `json:"samples_spike"`
}

// Bucket is one slice of the latency-over-time series.
type Bucket struct {
	T     float64 `json:"t_s"` // start of the bucket, seconds from the start
	Count int     `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
}

// DriverPoints is the drivers' point accounting. Latency of the actor is
// the 202 answer; durable latency is from sending the request that carried
// a point to the point's commit (committed_at in the log).
type DriverPoints struct {
	Recorded      int64   `json:"recorded"`      // points the phones recorded
	Stalled       int64   `json:"stalled"`       // ticks skipped because a phone's buffer was full
	Accepted      int64   `json:"accepted"`      // points the server accepted (highest accepted seq, summed)
	Durable       int64   `json:"durable"`       // points of the run in the log
	DurablePerSec float64 `json:"durable_per_s"` // points committed within the offer window ÷ its length
	// DurablePerSecSpike is the same inside the spike window, when there is one.
	DurablePerSecSpike float64 `json:"durable_per_s_spike,omitempty"`
	DurableP50ms       float64 `json:"durable_p50_ms"` // ts → committed_at
	DurableP99ms       float64 `json:"durable_p99_ms"`
	DurableMaxMs       float64 `json:"durable_max_ms"`
	Unconfirmed        int64   `json:"unconfirmed"` // accepted points no durable_seq covered before verifying
}

// ViewerCounts is what the dashboard viewers received.
type ViewerCounts struct {
	Connected    int64   `json:"connected"`
	Events       int64   `json:"events"`
	ConnectP99ms float64 `json:"connect_p99_ms"` // dial → end of snapshot
}

// Comparison is the output of one invocation: the runs (RouteHound, and
// the naive baseline when asked) and their ratios.
type Comparison struct {
	Scenario string    `json:"scenario"`
	Runs     []*Report `json:"runs"`
	Ratios   *Ratios   `json:"ratios,omitempty"`
}

// Ratios compare RouteHound with the naive baseline; above 1 is better
// for RouteHound.
type Ratios struct {
	DriverDurablePerSec      float64 `json:"driver_durable_per_s"`       // routehound ÷ naive
	DriverDurablePerSecSpike float64 `json:"driver_durable_per_s_spike"` // routehound ÷ naive, inside the spike window
	DispatchP99              float64 `json:"dispatch_p99"`               // naive ÷ routehound
	WarehouseP99             float64 `json:"warehouse_p99"`              // naive ÷ routehound
	DriverDurableP99         float64 `json:"driver_durable_p99"`         // naive ÷ routehound
}

// Actor returns the report of one actor, or nil.
func (r *Report) Actor(name string) *ActorReport {
	for i := range r.Actors {
		if r.Actors[i].Actor == name {
			return &r.Actors[i]
		}
	}
	return nil
}

// Lost is the total of lost writes over all actors.
func (r *Report) Lost() int64 {
	var n int64
	for _, a := range r.Actors {
		n += a.Lost
	}
	return n
}

// Compare builds the comparison of a RouteHound run with a naive one.
func Compare(rh, naive *Report) *Comparison {
	c := &Comparison{Scenario: rh.Scenario.Name, Runs: []*Report{rh}}
	if naive == nil {
		return c
	}
	c.Runs = append(c.Runs, naive)
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	c.Ratios = &Ratios{}
	if a, b := rh.Actor(ActorDriver), naive.Actor(ActorDriver); a != nil && b != nil && a.Driver != nil && b.Driver != nil {
		c.Ratios.DriverDurablePerSec = div(a.Driver.DurablePerSec, b.Driver.DurablePerSec)
		c.Ratios.DriverDurableP99 = div(b.Driver.DurableP99ms, a.Driver.DurableP99ms)
		c.Ratios.DriverDurablePerSecSpike = div(a.Driver.DurablePerSecSpike, b.Driver.DurablePerSecSpike)
	}
	if a, b := rh.Actor(ActorDispatch), naive.Actor(ActorDispatch); a != nil && b != nil {
		c.Ratios.DispatchP99 = div(b.P99ms, a.P99ms)
	}
	if a, b := rh.Actor(ActorWarehouse), naive.Actor(ActorWarehouse); a != nil && b != nil {
		c.Ratios.WarehouseP99 = div(b.P99ms, a.P99ms)
	}
	return c
}

// WriteJSON writes the comparison, indented, to path.
func (c *Comparison) WriteJSON(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("sim: encoding the report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("sim: writing %s: %w", path, err)
	}
	return nil
}

// Summary writes a short plain-text table of the comparison.
func (c *Comparison) Summary(w io.Writer) {
	for _, r := range c.Runs {
		fmt.Fprintf(w, "\n%s — %s, %.0fs, verify: ok=%t lost=%d (read back %d log records in %.1fs)\n",
			r.System, r.Scenario.Name, r.DurationS, r.Verify.OK, r.Lost(), r.Verify.LogRecords, r.Verify.TookS)
		fmt.Fprintf(w, "  %-10s %9s %9s %9s %8s %8s %8s %-11s %5s %s\n", "actor", "offered", "accepted", "rejected", "p50ms", "p99ms", "maxms", "sla ms", "lost", "isolation / notes")
		for _, a := range r.Actors {
			var rej int64
			for _, n := range a.Rejected {
				rej += n
			}
			note := ""
			if a.Isolation != nil {
				note = fmt.Sprintf("x%.2f (p99 %.1f → %.1f ms)", a.Isolation.Ratio, a.Isolation.P99BeforeMs, a.Isolation.P99SpikeMs)
			}
			if a.Driver != nil {
				note += fmt.Sprintf(" durable %.0f pts/s, durable p99 %.1f ms", a.Driver.DurablePerSec, a.Driver.DurableP99ms)
				if a.Driver.DurablePerSecSpike > 0 {
					note += fmt.Sprintf(", %.0f pts/s in the spike", a.Driver.DurablePerSecSpike)
				}
			}
			if a.Viewers != nil {
				note += fmt.Sprintf(" %d connected, %d events", a.Viewers.Connected, a.Viewers.Events)
			}
			ok := "ok"
			if !a.WithinSLA {
				ok = "OVER"
			}
			fmt.Fprintf(w, "  %-10s %9d %9d %9d %8.2f %8.2f %8.1f %-11s %5d %s\n", a.Actor, a.Offered, a.Accepted, rej, a.P50ms, a.P99ms, a.MaxMs, fmt.Sprintf("%.0f %s", a.SLAms, ok), a.Lost, note)
		}
		r.Server.summary(w)
		for _, p := range r.Verify.Problems {
			fmt.Fprintf(w, "  LOST: %s\n", p)
		}
	}
	if c.Ratios != nil {
		fmt.Fprintf(w, "\nRouteHound vs naive: driver durable throughput x%.1f (x%.1f in the spike window), dispatch p99 x%.1f better, warehouse p99 x%.1f better, driver durable p99 x%.1f better\n",
			c.Ratios.DriverDurablePerSec, c.Ratios.DriverDurablePerSecSpike, c.Ratios.DispatchP99, c.Ratios.WarehouseP99, c.Ratios.DriverDurableP99)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
