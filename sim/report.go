package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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
			if rs := reasons(a.Rejected); rs != "" {
				note += " rejected: " + rs
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
	if line := c.RatioLine(); line != "" {
		fmt.Fprintf(w, "\nRouteHound vs naive: %s\n", line)
	}
}

// RatioLine compares RouteHound with the naive baseline in words, as the
// text and HTML reports print it ("" without a baseline). A ratio of
// latencies says faster or slower with both p99s beside it, so that a
// RouteHound slower than the baseline is never called better; the spike
// window is named only when the scenario has one, and a ratio that could
// not be taken (an actor absent, no samples) is left out.
func (c *Comparison) RatioLine() string {
	if c.Ratios == nil || len(c.Runs) < 2 {
		return ""
	}
	rh, nv := c.Runs[0], c.Runs[1]
	var parts []string
	if x := c.Ratios.DriverDurablePerSec; x > 0 {
		p := fmt.Sprintf("driver durable throughput ×%.1f", x)
		if y := c.Ratios.DriverDurablePerSecSpike; y > 0 && len(rh.SpikeWindowS) == 2 {
			p += fmt.Sprintf(" (×%.1f in the spike window)", y)
		}
		parts = append(parts, p)
	}
	p99 := func(name string, a, b *ActorReport, durable bool) {
		if a == nil || b == nil {
			return
		}
		x, y := a.P99ms, b.P99ms
		if durable {
			if a.Driver == nil || b.Driver == nil {
				return
			}
			x, y = a.Driver.DurableP99ms, b.Driver.DurableP99ms
		}
		if x <= 0 || y <= 0 {
			return
		}
		word := "the same"
		switch {
		case y > x:
			word = "×" + ratio(y/x) + " faster"
		case y < x:
			word = "×" + ratio(x/y) + " slower"
		}
		parts = append(parts, fmt.Sprintf("%s %.1f ms vs %.1f ms (%s)", name, x, y, word))
	}
	p99("dispatch p99", rh.Actor(ActorDispatch), nv.Actor(ActorDispatch), false)
	p99("warehouse p99", rh.Actor(ActorWarehouse), nv.Actor(ActorWarehouse), false)
	p99("driver durable p99", rh.Actor(ActorDriver), nv.Actor(ActorDriver), true)
	return strings.Join(parts, ", ")
}

// ratio prints a ratio above 1 with two significant decimals near 1, so
// that 13.0 vs 12.4 ms reads ×1.05, not ×1.0.
func ratio(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.2f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// reasons lists refusals by reason, most frequent first, as "lane_full 3,
// version_conflict 1" ("" when none).
func reasons(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
