//go:build linux

package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"routehound/internal/natstest"
)

// TestCentralSIGKILL (issue 20, part 4): a central view (the real binary,
// serve --central) follows a primary under load and is SIGKILLed again and again
// while it applies; restarted each time, it resumes from the cursors in its
// store. At the end its log holds every record of the depot exactly once,
// in the depot's order, under <depot>/<key>: no gap, no duplicate.
func TestCentralSIGKILL(t *testing.T) {
	ns := natstest.Start(t)
	prim := newHarness(t, fmt.Sprintf("[fleet]\nevents = false\n\n[uplink]\nnats_url = %q\ndepot = \"north\"\n", ns.URL()))
	prim.start()
	cent := newHarness(t, "")
	cent.args = []string{"--central", ns.URL()} // serve --central NATS_URL
	cent.notPrimaryReady = true

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { drive(ctx, prim, w) })
	}
	defer func() { cancel(); wg.Wait() }()

	// northLSN is the depot's LSN the view applied (its cursor).
	northLSN := func() int64 {
		r, err := cent.do(context.Background(), http.MethodGet, "/v1/uplink", "admin", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("central GET /v1/uplink: %v %v", r, err)
		}
		var s struct {
			Role   string `json:"role"`
			Depots []struct {
				Depot string `json:"depot"`
				LSN   int64  `json:"lsn"`
			} `json:"depots"`
		}
		if err := r.decode(&s); err != nil || s.Role != "central" {
			t.Fatalf("central GET /v1/uplink: %s", r)
		}
		for _, d := range s.Depots {
			if d.Depot == "north" {
				return d.LSN
			}
		}
		return 0
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var prev int64
	for kill := 1; kill <= 5; kill++ {
		cent.start()
		deadline := time.Now().Add(20 * time.Second)
		for northLSN() <= prev {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: the central view does not follow (at lsn %d)", kill, prev)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond)
		prev = northLSN()
		cent.kill()
	}
	cancel()
	wg.Wait()

	// The primary ships the rest; the view catches up once more.
	primStatus := func() (acked, durable int64) {
		r, err := prim.do(context.Background(), http.MethodGet, "/v1/uplink", "admin", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("primary GET /v1/uplink: %v %v", r, err)
		}
		var s struct {
			Acked   int64 `json:"acked_lsn"`
			Durable int64 `json:"durable_lsn"`
		}
		if err := r.decode(&s); err != nil {
			t.Fatal(err)
		}
		return s.Acked, s.Durable
	}
	// (A request the writers gave up on may still commit: wait until the
	// primary's log stays put and is all shipped.)
	deadline := time.Now().Add(30 * time.Second)
	var last int64
	for {
		a, d := primStatus()
		if a == d && d == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the primary does not ship its log (acked %d, durable %d)", a, d)
		}
		last = 0
		if a == d {
			last = d
		}
		time.Sleep(300 * time.Millisecond)
	}
	cent.start()
	deadline = time.Now().Add(30 * time.Second)
	for northLSN() != last {
		if time.Now().After(deadline) {
			t.Fatalf("the central view does not catch up (at lsn %d of %d)", northLSN(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}

	want := readLog(t, prim)
	var got []logRecord
	for _, r := range readLog(t, cent) {
		if k, ok := strings.CutPrefix(r.Key, "north/"); ok && r.Table != "central_depots" {
			r.Key = k
			got = append(got, r)
		}
	}
	if len(got) != len(want) || int64(len(want)) != last {
		t.Fatalf("the view's log holds %d records of north, north's log %d (last lsn %d)", len(got), len(want), last)
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Table != g.Table || w.Key != g.Key || w.Op != g.Op || w.Version != g.Version || (w.Op == "put" && !sameJSON(w.Value, g.Value)) {
			t.Fatalf("record %d of north (lsn %d): the view has %+v, north %+v", i, w.LSN, g, w)
		}
	}
	t.Logf("5 SIGKILLs of the central view while it applied; %d records of north in its log, each once, in order", len(got))
}

// drive writes to a primary until ctx ends, as writer w of several: puts
// and deletes in a table, and one driver's points.
func drive(ctx context.Context, prim *harness, w int) {
	for i := 0; ctx.Err() == nil; i++ {
		prim.do(ctx, http.MethodPut, fmt.Sprintf("/v1/tables/notes/keys/k%d-%d", w, i%100), "dashboard", "", map[string]any{"i": i})
		if i%7 == 6 {
			prim.do(ctx, http.MethodDelete, fmt.Sprintf("/v1/tables/notes/keys/k%d-%d", w, (i+50)%100), "dashboard", "", nil)
		}
		pt := []map[string]any{{"seq": i + 1, "lat": 52.5, "lng": 13.4, "ts": time.Now().UTC().Format(time.RFC3339Nano)}}
		prim.do(ctx, http.MethodPost, fmt.Sprintf("/v1/drivers/d-%d/locations", w), "driver", "", pt)
	}
}
