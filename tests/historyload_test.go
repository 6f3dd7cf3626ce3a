//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/internal/testkit"
)

// TestDispatchWithHistoryLoad measures (issue 22) whether long history
// queries move the dispatch p99, against the real binary in another
// process: a dispatcher writes one sync (fsync'd) assignment every ~2 ms
// and a driver load of ~4,000 points/s runs throughout, while the phases
// alternate — without history pulls, then with 4 clients pulling long
// trails (every kept point of a driver, as JSON and as GPX), loading-event
// pages of 1,000 and route histories in a loop. It reports the dispatch
// p50/p99 of each phase and their ratio (BENCHMARKS.md, "History API"). A
// measurement, not a speed test: it runs only with
// ROUTEHOUND_HISTORY_LOAD=1, and checks only that every write and every
// pull succeeded, with whole answers.
func TestDispatchWithHistoryLoad(t *testing.T) {
	if os.Getenv("ROUTEHOUND_HISTORY_LOAD") != "1" {
		t.Skip("a measurement (BENCHMARKS.md): set ROUTEHOUND_HISTORY_LOAD=1")
	}
	const (
		drivers   = 300
		trail     = 200 // the points the replica keeps per driver
		events    = 1000
		routes    = 50
		rounds    = 5
		phase     = 3 * time.Second
		pullers   = 4
		dispatchP = 2 * time.Millisecond
	)
	h := newHarness(t, "")
	h.start()
	defer h.stop()
	bad := &issues{t: t}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(22, 1))

	// Seed: full trails, loading events, route versions.
	for d := range drivers {
		pts := make([]point, trail)
		for i := range pts {
			pts[i] = makePoint(int64(i+1), rng)
		}
		if r, err := h.do(ctx, "POST", fmt.Sprintf("/v1/drivers/hist-%03d/locations", d), "driver", "", pts); err != nil || r.status != http.StatusAccepted {
			t.Fatalf("seed points: %v %v", r, err)
		}
	}
	for i := range events {
		ev := map[string]any{"terminal": "t1", "dock": fmt.Sprintf("D%d", i%8), "shipment": fmt.Sprintf("S%d", i%100), "kind": "loaded", "pallets": 3, "ts": time.Now().UTC().Format(time.RFC3339)}
		if r, err := h.do(ctx, "POST", "/v1/loading-events", "warehouse", fmt.Sprintf("hist-ev-%d", i), ev); err != nil || r.status != http.StatusCreated {
			t.Fatalf("seed events: %v %v", r, err)
		}
	}
	// Wait for the replica to hold the last driver's trail.
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := h.do(ctx, "GET", fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000", drivers-1), "dashboard", "", nil)
		var p struct{ Points []json.RawMessage }
		if err == nil && r.status == 200 && r.decode(&p) == nil && len(p.Points) == trail {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not catch up: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var (
		mu       sync.Mutex
		lat      = [2][]time.Duration{} // [0] without, [1] with history pulls
		phaseNow atomic.Int32
		pulling  atomic.Bool
		pulls    atomic.Int64
		pulled   atomic.Int64 // bytes
		points   atomic.Int64
	)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The dispatcher.
	wg.Go(func() {
		tick := time.NewTicker(dispatchP)
		defer tick.Stop()
		for n := 0; runCtx.Err() == nil; n++ {
			body := map[string]any{"driver": fmt.Sprintf("hist-%03d", n%drivers), "note": strconv.Itoa(n),
				"stops": []map[string]any{{"id": fmt.Sprintf("S%d", n%100), "lat": 52.5, "lng": 13.4}}}
			p := phaseNow.Load()
			t0 := time.Now()
			r, err := h.do(runCtx, "PUT", fmt.Sprintf("/v1/assignments/hist-r%02d", n%routes), "dispatch", fmt.Sprintf("hd-%d", n), body)
			d := time.Since(t0)
			if runCtx.Err() != nil {
				return
			}
			if err != nil || r.status/100 != 2 {
				bad.add("dispatch: %v %v", r, err)
				return
			}
			if phaseNow.Load() == p { // a write that spans a phase change is dropped
				mu.Lock()
				lat[p] = append(lat[p], d)
				mu.Unlock()
			}
			select {
			case <-tick.C:
			case <-runCtx.Done():
			}
		}
	})
	// The driver load: 2 senders × 100 points every 50 ms.
	for s := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(s), 2))
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			seq := int64(trail)
			for n := 0; runCtx.Err() == nil; n++ {
				pts := make([]point, 100)
				for i := range pts {
					pts[i] = makePoint(seq+int64(i)+1, rng)
				}
				seq += 100
				r, err := h.do(runCtx, "POST", fmt.Sprintf("/v1/drivers/load-%d/locations", s), "driver", "", pts)
				if runCtx.Err() != nil {
					return
				}
				if err != nil || r.status != http.StatusAccepted {
					bad.add("driver load: %v %v", r, err)
					return
				}
				points.Add(100)
				select {
				case <-tick.C:
				case <-runCtx.Done():
				}
			}
		})
	}
	// The history clients, pulling while `pulling` is set.
	for c := range pullers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 3))
			for runCtx.Err() == nil {
				if !pulling.Load() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				d := rng.IntN(drivers)
				for _, q := range []string{
					fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000", d),
					fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000&format=gpx", d),
					"/v1/loading-events?limit=1000",
					fmt.Sprintf("/v1/loading-events?dock=D%d&limit=1000", d%8),
					fmt.Sprintf("/v1/assignments/hist-r%02d/history?limit=1000", d%routes),
				} {
					r, err := h.do(runCtx, "GET", q, "dashboard", "", nil)
					if runCtx.Err() != nil {
						return
					}
					if err != nil || r.status != 200 || len(r.body) < 100 {
						bad.add("pull %s: %v %v", q, r, err)
						return
					}
					pulls.Add(1)
					pulled.Add(int64(len(r.body)))
				}
			}
		})
	}
	var onFor time.Duration
	for range rounds {
		for _, on := range []bool{false, true} {
			p := int32(0)
			if on {
				p = 1
			}
			phaseNow.Store(p)
			pulling.Store(on)
			time.Sleep(phase)
			if on {
				onFor += phase
			}
		}
	}
	pulling.Store(false)
	stop()
	wg.Wait()
	if bad.count() > 0 {
		t.FailNow()
	}
	for i, l := range lat {
		if len(l) < 100 {
			t.Fatalf("phase %d: %d dispatch writes measured", i, len(l))
		}
	}
	p50 := [2]time.Duration{testkit.PercentileLower(lat[0], 50), testkit.PercentileLower(lat[1], 50)}
	p99 := [2]time.Duration{testkit.PercentileLower(lat[0], 99), testkit.PercentileLower(lat[1], 99)}
	t.Logf("dispatch writes: %d without / %d with history pulls", len(lat[0]), len(lat[1]))
	t.Logf("dispatch p50 %v / %v, p99 %v / %v, ratio p99 with/without %.2f", p50[0], p50[1], p99[0], p99[1], float64(p99[1])/float64(p99[0]))
	t.Logf("history: %d pulls, %.1f pulls/s, %.1f MiB/s while pulling; driver load %d points", pulls.Load(),
		float64(pulls.Load())/onFor.Seconds(), float64(pulled.Load())/onFor.Seconds()/(1<<20), points.Load())
}
