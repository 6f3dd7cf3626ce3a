package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"routehound/sim"
)

// TestSimCommand runs `routehound sim` as a user would, with the naive
// baseline, and reads back both reports it wrote.
func TestSimCommand(t *testing.T) {
	dir := t.TempDir()
	jp, hp := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	err := simCmd([]string{"--scenario", "driver-spike", "--scale", "0.01", "--driver-interval", "200ms", "--duration", "2s",
		"--dispatch-rate", "10", "--warehouse-rate", "10", "--viewers", "2", "--quiet", "--baseline", "naive", "--json", jp, "--html", hp,
		"--spike-factor", "5", "--send-every", "300ms"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Scenario string `json:"scenario"`
		Runs     []struct {
			System   string `json:"system"`
			Scenario struct {
				SpikeFactor float64 `json:"spike_factor"`
				SendEvery   int64   `json:"send_every"`
			} `json:"scenario"`
			Server *struct {
				Series []json.RawMessage `json:"series"`
			} `json:"server"`
			Verify struct {
				OK bool `json:"ok"`
			} `json:"verify"`
			Actors []struct {
				Actor    string `json:"actor"`
				Accepted int64  `json:"accepted"`
				Lost     int64  `json:"lost"`
			} `json:"actors"`
		} `json:"runs"`
		Ratios *struct {
			DriverDurablePerSec float64 `json:"driver_durable_per_s"`
		} `json:"ratios"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Scenario != "driver-spike" || len(c.Runs) != 2 || c.Runs[0].System != "routehound" || c.Runs[1].System != "naive" || c.Ratios == nil {
		t.Fatalf("report: %s", b[:min(len(b), 400)])
	}
	if sc := c.Runs[0].Scenario; sc.SpikeFactor != 5 || sc.SendEvery != int64(300*time.Millisecond) {
		t.Errorf("--spike-factor 5 --send-every 300ms: scenario has %+v", sc)
	}
	// The in-process RouteHound is probed; the naive baseline is not.
	if c.Runs[0].Server == nil || len(c.Runs[0].Server.Series) == 0 || c.Runs[1].Server != nil {
		t.Errorf("server readings: routehound %v, naive %v", c.Runs[0].Server != nil, c.Runs[1].Server != nil)
	}
	for _, r := range c.Runs {
		if !r.Verify.OK || len(r.Actors) < 4 {
			t.Errorf("%s: verify %v, %d actors", r.System, r.Verify.OK, len(r.Actors))
		}
		for _, a := range r.Actors {
			if a.Accepted == 0 || a.Lost != 0 {
				t.Errorf("%s %s: accepted %d lost %d", r.System, a.Actor, a.Accepted, a.Lost)
			}
		}
	}
	h, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(h), "naive") || strings.Count(string(h), "<svg") < 8 {
		t.Errorf("HTML lacks the baseline or its charts")
	}
	if err := simCmd([]string{"--scenario", "no-such"}); err == nil {
		t.Error("an unknown scenario was accepted")
	}
	if err := simCmd([]string{"--baseline", "mysql", "--quiet"}); err == nil {
		t.Error("an unknown baseline was accepted")
	}
}

// --fail-on-sla names each actor whose p99 is over its SLA (the OVER of the
// report), the driver by the worse of its answer and durable p99.
func TestOverSLA(t *testing.T) {
	r := &sim.Report{Actors: []sim.ActorReport{
		{Actor: "driver", P99ms: 2, SLAms: 10, Driver: &sim.DriverPoints{DurableP99ms: 14}},
		{Actor: "dispatch", P99ms: 4, SLAms: 5, WithinSLA: true},
		{Actor: "warehouse", P99ms: 13, SLAms: 5},
	}}
	got := strings.Join(overSLA(r), ", ")
	if got != "driver 14.0 ms > 10 ms, warehouse 13.0 ms > 5 ms" {
		t.Fatalf("overSLA: %q", got)
	}
	if over := overSLA(&sim.Report{Actors: r.Actors[1:2]}); len(over) != 0 {
		t.Fatalf("within SLA: %q", over)
	}
}
