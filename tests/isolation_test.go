//go:build linux

package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/internal/testkit"
)

// TestIsolationDriverFlood floods the driver lane past its bound while a
// dispatcher writes assignments: drivers must get 429 backpressure, the
// dispatcher none, and every dispatch write must succeed.
func TestIsolationDriverFlood(t *testing.T) {
	const (
		flooders  = 8
		batchSize = 500
		floodFor  = 2 * time.Second
	)
	h := newHarness(t, "[lanes.driver]\nqueue_bound = 2000\n")
	h.start()
	bad := &issues{t: t}

	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	var accepted, throttled, unavailable atomic.Int64
	var wg sync.WaitGroup
	for i := range flooders {
		name := fmt.Sprintf("flood-%02d", i+1)
		rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
		wg.Go(func() {
			seq := int64(0)
			for ctx.Err() == nil {
				batch := make([]point, batchSize)
				for j := range batch {
					batch[j] = makePoint(seq+int64(j)+1, rng)
				}
				r, err := h.do(ctx, http.MethodPost, "/v1/drivers/"+name+"/locations", "driver", "", batch)
				if err != nil {
					if ctx.Err() == nil {
						bad.add("driver %s: %v", name, err)
					}
					return
				}
				switch r.status {
				case http.StatusAccepted:
					accepted.Add(1)
					seq += batchSize
				case http.StatusTooManyRequests, http.StatusServiceUnavailable:
					if r.status == http.StatusTooManyRequests {
						throttled.Add(1)
					} else {
						unavailable.Add(1)
					}
					if err := r.retryAfter(); err != nil {
						bad.add("driver %s: %v", name, err)
					}
					if err := r.errorBody(); err != nil {
						bad.add("driver %s: %d: %v", name, r.status, err)
					}
				default:
					bad.add("driver %s: POST batch of %d: %s", name, batchSize, r)
					return
				}
			}
		})
	}

	// Let the flood fill the lane, then dispatch sequentially until it ends.
	pause(ctx, 200*time.Millisecond)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var lat []time.Duration
	failed := 0
	for i := 1; ctx.Err() == nil; i++ {
		route := fmt.Sprintf("iso-R-%02d", 1+i%5)
		body := assignmentBody("flood-01", fmt.Sprintf("isolation-%d", i), rng)
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		r, err := h.do(rctx, http.MethodPut, "/v1/assignments/"+route, "dispatch", "iso-"+randHex(12), body)
		rcancel()
		lat = append(lat, time.Since(t0))
		switch {
		case err != nil:
			t.Errorf("dispatch PUT %s: %v", route, err)
			failed++
		case r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable:
			t.Errorf("dispatch PUT %s got backpressure during a driver flood: %s", route, r)
			failed++
		case r.status != http.StatusOK && r.status != http.StatusCreated:
			t.Errorf("dispatch PUT %s: %s", route, r)
			failed++
		}
		if failed >= 5 {
			t.Errorf("giving up on dispatch after %d failures", failed)
			break
		}
	}
	cancel()
	wg.Wait()
	// The flood must meet backpressure: refusals (429), or requests held
	// until the committer made room (the driver lane's room waits).
	roomWaits := -1.0
	if r, err := h.do(context.Background(), http.MethodGet, "/metrics", "admin", "", nil); err == nil && r.status == http.StatusOK {
		for _, line := range strings.Split(string(r.body), "\n") {
			if v, ok := strings.CutPrefix(line, `routehound_lane_room_waits_total{lane="driver"} `); ok {
				roomWaits, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	h.stop()

	if roomWaits < 0 {
		t.Errorf("/metrics has no routehound_lane_room_waits_total for the driver lane")
	}
	if throttled.Load() == 0 && roomWaits <= 0 {
		t.Errorf("driver flood (%d x %d points for %v, queue_bound 2000) met no backpressure: no 429, no wait for room", flooders, batchSize, floodFor)
	}
	if len(lat) == 0 {
		t.Errorf("no dispatch write was made during the flood")
	}
	t.Logf("driver batches: %d accepted, %d 429, %d 503, %v waited for room; dispatch writes %d: p50 %v, p99 %v, max %v",
		accepted.Load(), throttled.Load(), unavailable.Load(), roomWaits, len(lat),
		testkit.PercentileLower(lat, 50), testkit.PercentileLower(lat, 99), testkit.PercentileLower(lat, 100))
}
