//go:build linux

package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchIngest runs `routehound bench ingest` end to end, briefly, over
// HTTP and over the driver stream: it starts its own server as a child
// process on loopback, and must report durable points, server CPU per
// point and both ceilings, with no errors, and leave no server behind.
func TestBenchIngest(t *testing.T) {
	for _, mode := range []string{"http", "stream", "rate"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "report.json")
			args := []string{"bench", "ingest", "--conns", "2", "--warmup", "1s", "--measure", "2s",
				"--badger-for", "300ms", "--fsync-for", "200ms", "--dir", dir, "--json", out, "--quiet"}
			switch mode {
			case "stream":
				args = append(args, "--stream")
			case "rate":
				args = append(args, "--rate", "1000")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath, args...)
			cmd.Dir = dir
			// Pdeathsig: the benchmark (and through its own Pdeathsig, its
			// server) dies with the test process.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("routehound %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
			}
			t.Logf("%s", &stdout)
			raw, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var r struct {
				Mode          string   `json:"mode"`
				Rate          float64  `json:"offered_points_per_second"`
				Durable       int64    `json:"durable_points"`
				DurablePerSec float64  `json:"durable_points_per_s"`
				Accepted      int64    `json:"accepted_points"`
				Errors        int64    `json:"errors"`
				ErrorSamples  []string `json:"error_samples"`
				Drained       bool     `json:"drained"`
				Badger        float64  `json:"badger_recs_per_s"`
				Fsyncs        float64  `json:"fsyncs_per_s"`
				RatioBadger   float64  `json:"ratio_to_badger"`
				CPUPerPoint   *float64 `json:"server_cpu_us_per_durable_point"`
				PeakRSS       *float64 `json:"server_peak_rss_mib"`
				ServerPID     int      `json:"server_pid"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatalf("report %s: %v", raw, err)
			}
			wantMode := mode
			if mode == "rate" {
				// Paced: 2 connections x 100 points every 200 ms. What the
				// window took cannot pass what was offered (plus a batch per
				// connection at each end).
				wantMode = "http"
				if r.Rate != 1000 || r.Accepted > 1000*2+4*100 {
					t.Errorf("--rate 1000 for 2s: offered %v, accepted %d", r.Rate, r.Accepted)
				}
			}
			switch {
			case r.Mode != wantMode:
				t.Errorf("mode %q, want %q", r.Mode, wantMode)
			case r.Durable <= 0 || r.DurablePerSec <= 0 || r.Accepted <= 0:
				t.Errorf("durable %d (%v/s), accepted %d: want > 0", r.Durable, r.DurablePerSec, r.Accepted)
			case r.CPUPerPoint == nil || *r.CPUPerPoint <= 0:
				t.Errorf("server CPU per point %v, want > 0", r.CPUPerPoint)
			case r.PeakRSS == nil || *r.PeakRSS <= 0:
				t.Errorf("peak RSS %v, want > 0", r.PeakRSS)
			case r.Badger <= 0 || r.Fsyncs <= 0 || r.RatioBadger <= 0:
				t.Errorf("ceilings badger %v fsync %v (ratio %v): want > 0", r.Badger, r.Fsyncs, r.RatioBadger)
			case r.Errors != 0:
				t.Errorf("%d errors: %q", r.Errors, r.ErrorSamples)
			case !r.Drained:
				t.Errorf("accepted points not all durable after the window")
			}
			// The child was stopped and its temporary dir removed.
			if r.ServerPID > 0 {
				if err := syscall.Kill(r.ServerPID, 0); err == nil {
					t.Errorf("server %d still runs after the benchmark", r.ServerPID)
				}
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != "report.json" {
					t.Errorf("left behind in --dir: %s", e.Name())
				}
			}
		})
	}
}
