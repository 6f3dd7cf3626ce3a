//go:build linux

package main

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"routehound/config"
	"routehound/internal/apptest"
)

// TestFanoutBenchMeasures runs the fan-out benchmark's phases against an
// appliance on loopback, briefly, over each transport: every change
// written reaches every subscriber of its table, and each figure is
// measured (the load is too small for the figures to mean anything).
func TestFanoutBenchMeasures(t *testing.T) {
	s := apptest.Start(t, apptest.Options{Config: func(c *config.Config) {
		c.Hub.MaxSubscribers, c.Tables.MaxTables = 1000, 200
	}})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	tg := &fanoutTarget{base: s.URL, dashboard: s.Token(t, "dashboard"), admin: s.Token(t, "admin"), pid: os.Getpid(),
		hc: &http.Client{Transport: tr, Timeout: benchAnswerTimeout}}
	o := fanoutOptions{subs: 6, tables: 2, rate: 100, writers: 4, idle: 40, idleTables: 4,
		warmup: 100 * time.Millisecond, measure: 500 * time.Millisecond}
	for _, transport := range []string{"ws", "ws-batch", "sse"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := measureFanout(ctx, o, transport, tg, t.Logf)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", transport, err)
		}
		t.Log(res.human())
		if res.Sent == 0 || res.Events != res.Sent*3 || res.Missing != 0 {
			t.Fatalf("%s: %d written, %d received by 3 subscribers per table (%d missing)", transport, res.Sent, res.Events, res.Missing)
		}
		if res.P50Ms <= 0 || res.P99Ms < res.P50Ms || res.MaxMs < res.P99Ms {
			t.Fatalf("%s: latencies p50 %v p99 %v max %v", transport, res.P50Ms, res.P99Ms, res.MaxMs)
		}
		if res.DeliveredPerSec <= 0 || res.WritesPerSec <= 0 || res.ServerCPUPct <= 0 {
			t.Fatalf("%s: saturation %+v", transport, res)
		}
		if res.IdleSubscribers != 40 || res.IdleKiBPerSub <= 0 || res.IdleGoroutinesPer < 1 {
			t.Fatalf("%s: idle %d subscribers, %.1f KiB, %.2f goroutines each", transport, res.IdleSubscribers, res.IdleKiBPerSub, res.IdleGoroutinesPer)
		}
	}
}
