//go:build linux

package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleetevents"
)

var fleetCycles = flag.Int("fleet.cycles", 8, "TestFleetEventsExactlyOnce: SIGKILLs and power cuts, alternating")

// fleetDriver is one driver on a route, across all cycles: its seq and
// its step along its line go on after every crash.
type fleetDriver struct {
	name, route string
	lat         float64
	seq, step   int
	version     int // re-assignments sent
}

// assignment is the driver's route: five stops east along its line; the
// fourth lies 220 m off the line, so a driver passes it by and skips it.
func (d *fleetDriver) assignment() map[string]any {
	stop := func(id string, lat, lng float64) map[string]any {
		return map[string]any{"id": id, "lat": lat, "lng": lng, "eta": "2026-12-07T09:00:00Z"}
	}
	return map[string]any{"driver": d.name, "note": fmt.Sprintf("v%d", d.version), "stops": []any{
		stop("s1", d.lat, 0.002), stop("s2", d.lat, 0.006), stop("s3", d.lat+0.002, 0.008),
		stop("s4", d.lat, 0.010), stop("s5", d.lat, 0.014),
	}}
}

// nextPoint moves the driver 44 m east (wrapping at 0.02°); one point in
// ten is late (its ts five minutes before the driver's clock).
func (d *fleetDriver) nextPoint(rng *rand.Rand) map[string]any {
	d.seq++
	d.step++
	ts := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC).Add(time.Duration(d.step) * 10 * time.Second)
	if rng.IntN(10) == 0 {
		ts = ts.Add(-5 * time.Minute)
	}
	return map[string]any{"seq": d.seq, "lat": d.lat + rng.Float64()*0.0001, "lng": float64(d.step%50) * 0.0004,
		"ts": ts.Format(time.RFC3339)}
}

// TestFleetEventsExactlyOnce: 100 drivers on routes drive the real binary
// on a lossy filesystem while dispatch now and then re-assigns a route;
// every cycle ends in a SIGKILL or a power cut (SIGKILL, then everything
// not fsynced is dropped). At the end every stop transition the log's
// points decide — one uninterrupted pass of the tracker over the final
// log — is in fleet_events exactly once, in order: none missing, none
// doubled.
func TestFleetEventsExactlyOnce(t *testing.T) {
	l := mountLossy(t)
	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 21))
	h := newHarness(t, "")
	onLossy(t, h, l)
	bad := &issues{t: t}

	var drivers []*fleetDriver
	for i := range 100 {
		drivers = append(drivers, &fleetDriver{name: fmt.Sprintf("van-%03d", i), route: fmt.Sprintf("route-%03d", i), lat: 40 + float64(i)*0.01})
	}
	assign := func(ctx context.Context, d *fleetDriver) bool {
		d.version++
		r, err := h.do(ctx, http.MethodPut, "/v1/assignments/"+d.route, "dispatch", fmt.Sprintf("%s-%d-%d", d.route, d.version, master.Uint64()), d.assignment())
		if err != nil {
			return false // killed: the outcome is whatever the log holds
		}
		if r.status/100 != 2 && r.status != http.StatusServiceUnavailable && r.status != http.StatusTooManyRequests {
			bad.add("PUT assignment %s: %s", d.route, r)
		}
		return r.status/100 == 2
	}
	h.start()
	for _, d := range drivers {
		if !assign(context.Background(), d) {
			t.Fatalf("could not assign %s", d.route)
		}
	}
	var unsynced int64
	cuts := 0
	for cycle := 1; cycle <= *fleetCycles && !t.Failed(); cycle++ {
		if cycle > 1 {
			h.start()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for g := range 10 {
			own := drivers[g*10 : g*10+10]
			rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
			wg.Go(func() {
				for ctx.Err() == nil {
					for _, d := range own {
						r, err := h.do(ctx, http.MethodPost, "/v1/drivers/"+d.name+"/locations", "driver", "", []any{d.nextPoint(rng)})
						if err == nil && r.status != http.StatusAccepted && r.status != http.StatusTooManyRequests && r.status != http.StatusServiceUnavailable {
							bad.add("POST point of %s: %s", d.name, r)
						}
					}
					pause(ctx, 10*time.Millisecond)
				}
			})
		}
		rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
		wg.Go(func() {
			// Dispatch re-assigns a route now and then: its progress starts
			// afresh, in the middle of the crashes.
			for ctx.Err() == nil {
				pause(ctx, time.Duration(50+rng.IntN(100))*time.Millisecond)
				if ctx.Err() == nil {
					assign(ctx, drivers[rng.IntN(len(drivers))])
				}
			}
		})
		time.Sleep(300*time.Millisecond + time.Duration(master.IntN(700))*time.Millisecond)
		h.kill()
		if cycle%2 == 0 {
			unsynced += l.UnsyncedBytes()
			l.Crash()
			cuts++
		}
		cancel()
		wg.Wait()
	}
	if t.Failed() {
		t.Fatalf("stopped (seed %d)", seed)
	}

	h.start()
	waitConsumerCaughtUp(t, h)
	recs := readLog(t, h)
	h.stop()

	// What one uninterrupted pass over the log decides.
	tr := fleetevents.NewTracker(fleetevents.DefaultStopRadiusM)
	type key struct {
		Key      string
		PointLSN uint64
		Version  uint64
	}
	var want, got []key
	for _, r := range recs {
		switch r.Table {
		case "positions", "assignments":
			er := engine.Record{LSN: uint64(r.LSN), Table: r.Table, Key: r.Key, Value: r.Value, Version: r.Version, Op: engine.OpPut}
			if r.Op == "delete" {
				er.Op = engine.OpDelete
			}
			evs, _ := tr.Apply(&er)
			for _, ev := range evs {
				want = append(want, key{ev.Key(), ev.PointLSN, ev.RouteVersion})
			}
		case "fleet_events":
			var ev fleetevents.Event
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				t.Fatalf("fleet_events lsn %d: %v", r.LSN, err)
			}
			if r.Key != ev.Key() || r.Actor != "events" {
				bad.add("fleet_events lsn %d: key %q actor %q for %+v", r.LSN, r.Key, r.Actor, ev)
			}
			got = append(got, key{r.Key, ev.PointLSN, ev.RouteVersion})
		}
	}
	count := func(ks []key) map[key]int {
		m := map[key]int{}
		for _, k := range ks {
			m[k]++
		}
		return m
	}
	gm, wm := count(got), count(want)
	for k, n := range gm {
		if n > 1 {
			bad.add("transition %+v is %d times in the log", k, n)
		}
		if wm[k] == 0 {
			bad.add("transition %+v is in the log but no point decides it", k)
		}
	}
	for k := range wm {
		if gm[k] == 0 {
			bad.add("transition %+v is missing from the log", k)
		}
	}
	if len(got) == len(want) {
		for i := range got {
			if got[i] != want[i] {
				bad.add("transition %d: %+v in the log, want %+v (order)", i, got[i], want[i])
				break
			}
		}
	}
	if len(want) < 200 {
		t.Errorf("only %d transitions: the test drove too little", len(want))
	}
	if cuts > 0 && unsynced == 0 {
		t.Errorf("no power cut dropped any unsynced data: the test did not test anything")
	}
	if n := bad.count(); n > 0 {
		t.Errorf("%d issues (seed %d)", n, seed)
	}
	t.Logf("%d cycles (%d power cuts, %d KiB unsynced dropped; seed %d): %d transitions in the log, %d decided by its points; log %d records",
		*fleetCycles, cuts, unsynced>>10, seed, len(got), len(want), len(recs))
}

// waitConsumerCaughtUp waits (bounded) until the fleet-events consumer has
// evaluated every durable record and written what it decided: its lag is
// 0 in /metrics twice, 200 ms apart.
func waitConsumerCaughtUp(t *testing.T, h *harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := 0
	for zero < 2 {
		if ctx.Err() != nil {
			t.Fatalf("the fleet-events consumer did not catch up within a minute")
		}
		time.Sleep(200 * time.Millisecond)
		r, err := h.do(ctx, http.MethodGet, "/metrics", "admin", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /metrics: %v %v", r, err)
		}
		lag := ""
		sc := bufio.NewScanner(strings.NewReader(string(r.body)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "routehound_fleet_events_lag_records "); ok {
				lag = v
			}
		}
		if lag == "" {
			t.Fatalf("/metrics has no routehound_fleet_events_lag_records")
		}
		if lag == "0" {
			zero++
		} else {
			zero = 0
		}
	}
}

// TestFleetEventsOff: with [fleet] events = false the server runs no
// fleet-events consumer (the measurement beside it, or an operator who
// needs none): a driver reaching its route's stop and entering a fence
// makes no record of fleet_events, route_progress or fleet_consumer, the
// progress endpoint answers 404, and /metrics has no
// routehound_fleet_events_* line. With the consumer on, the same steps
// write them (the control, so the test can fail).
func TestFleetEventsOff(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("events=%v", on), func(t *testing.T) {
			h := newHarness(t, fmt.Sprintf("[fleet]\nevents = %v\nfence_dwell = \"0s\"\n", on))
			h.start()
			defer h.stop()
			ctx := context.Background()
			r, err := h.do(ctx, http.MethodPut, "/v1/assignments/route-1", "dispatch", "off-1",
				map[string]any{"driver": "van-1", "stops": []any{map[string]any{"id": "s1", "lat": 52.0, "lng": 13.0}}})
			if err != nil || r.status/100 != 2 {
				t.Fatalf("PUT assignment: %v %v", r, err)
			}
			if r, err := h.do(ctx, http.MethodPut, "/v1/fences/depot", "dispatch", "", map[string]any{"lat": 52.0, "lng": 13.0, "radius_m": 500}); err != nil || r.status/100 != 2 {
				t.Fatalf("PUT fence: %v %v", r, err)
			}
			for seq := 1; seq <= 2; seq++ {
				p := map[string]any{"seq": seq, "lat": 52.0, "lng": 13.0, "ts": fmt.Sprintf("2026-12-07T08:00:0%dZ", seq)}
				if r, err := h.do(ctx, http.MethodPost, "/v1/drivers/van-1/locations", "driver", "", []any{p}); err != nil || r.status != http.StatusAccepted {
					t.Fatalf("POST point: %v %v", r, err)
				}
			}
			// The points durable in the log, then time for a consumer to
			// write (it writes within 100 ms of a decision).
			deadline := time.Now().Add(10 * time.Second)
			for {
				n := 0
				for _, rec := range readLog(t, h) {
					if rec.Table == "positions" {
						n++
					}
				}
				if n == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d points in the log after 10 s", n)
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(time.Second)
			derived := 0
			for _, rec := range readLog(t, h) {
				switch rec.Table {
				case "fleet_events", "route_progress", "fleet_consumer":
					derived++
				}
			}
			r, err = h.do(ctx, http.MethodGet, "/metrics", "admin", "", nil)
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("GET /metrics: %v %v", r, err)
			}
			metrics := strings.Contains(string(r.body), "routehound_fleet_events_")
			r, err = h.do(ctx, http.MethodGet, "/v1/assignments/route-1/progress", "dispatch", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if on {
				if derived == 0 || !metrics || r.status != http.StatusOK {
					t.Fatalf("with the consumer on: %d derived records, metrics %v, progress %d", derived, metrics, r.status)
				}
				return
			}
			if derived != 0 {
				t.Errorf("%d records of the derived tables with the consumer off", derived)
			}
			if metrics {
				t.Errorf("/metrics has routehound_fleet_events_* lines with the consumer off")
			}
			if r.status != http.StatusNotFound {
				t.Errorf("GET progress: %d, want 404", r.status)
			}
		})
	}
}
