//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleetevents"
)

// TestFleetEventsFenceDeletedKilled: a fence with 2,500 drivers inside is
// deleted, and the server is killed (SIGKILL; a power cut in half the
// cycles) once the first part of the exits is in the log — while the
// consumer writes the deletion's exits in parts, its cursor inside the
// deletion's record — or at a random moment after the deletion. The fence is put again under the same id and the drivers enter
// it again, cycle after cycle. At the end every fence event one
// uninterrupted pass over the final log decides is in fleet_events exactly
// once, in order: each deletion's 2,500 exits too, and none of an old
// fence's drivers carried into the new one.
func TestFleetEventsFenceDeletedKilled(t *testing.T) {
	const drivers, cycles = 2500, 4
	l := mountLossy(t)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 22))
	h := newHarness(t, "")
	onLossy(t, h, l)
	bad := &issues{t: t}
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	cuts, mid := 0, 0
	for cycle := range cycles {
		h.start()
		ctx := context.Background()
		r, err := h.do(ctx, http.MethodPut, "/v1/fences/depot", "dispatch", "", map[string]any{"name": "Depot", "lat": 52.0, "lng": 13.0, "radius_m": 500})
		if err != nil || r.status/100 != 2 {
			t.Fatalf("PUT fence: %v %v", r, err)
		}
		// Every driver twice inside, 31 s apart (the dwell is 30 s): it
		// enters the fence.
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for d := g; d < drivers; d += 16 {
					at := t0.Add(time.Duration(cycle) * time.Hour)
					body := []any{
						map[string]any{"seq": 2*cycle + 1, "lat": 52 + float64(d%100)*1e-5, "lng": 13.0, "ts": at.Format(time.RFC3339)},
						map[string]any{"seq": 2*cycle + 2, "lat": 52 + float64(d%100)*1e-5, "lng": 13.0, "ts": at.Add(31 * time.Second).Format(time.RFC3339)},
					}
					for try := 0; ; try++ {
						r, err := h.do(ctx, http.MethodPost, fmt.Sprintf("/v1/drivers/d%05d/locations", d), "driver", "", body)
						if err == nil && r.status == http.StatusAccepted {
							break
						}
						if try > 100 || err == nil && r.status != http.StatusTooManyRequests && r.status != http.StatusServiceUnavailable {
							bad.add("POST points of d%05d: %v %v", d, r, err)
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		waitConsumerCaughtUp(t, h)
		r, err = h.do(ctx, http.MethodDelete, "/v1/fences/depot", "dispatch", "", nil)
		if err != nil || r.status/100 != 2 {
			t.Fatalf("DELETE fence: %v %v", r, err)
		}
		if cycle%2 == 0 {
			// Killed once the first part of the exits is in the log: in
			// the middle of the deletion's parts.
			var del struct {
				LSN int64 `json:"lsn"`
			}
			if err := r.decode(&del); err != nil || del.LSN == 0 {
				t.Fatalf("DELETE fence answered %s: %v", r, err)
			}
			for deadline := time.Now().Add(10 * time.Second); ; {
				if n, records := exitsAfter(t, h, del.LSN); n > 0 {
					if records < 1000 {
						// All the exits and the states' deletes are far more
						// than a page: the kill is between two parts.
						mid++
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no exit of the deleted fence in the log within 10 s")
				}
				time.Sleep(time.Millisecond)
			}
		} else {
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		}
		h.kill()
		if cycle%4 >= 2 {
			l.Crash()
			cuts++
		}
	}
	h.start()
	waitConsumerCaughtUp(t, h)
	recs := readLog(t, h)
	h.stop()

	tr := fleetevents.NewTracker(fleetevents.DefaultStopRadiusM)
	tr.SetFenceDwell(30 * time.Second)
	var want, got []string
	deleted := 0
	// The span from each deletion's commit to its last exit's (one that
	// holds a restart was killed between its parts).
	deletedAt := map[uint64]time.Time{}
	lastExit := map[uint64]time.Time{}
	for _, r := range recs {
		switch r.Table {
		case "positions", "fences":
			er := engine.Record{LSN: uint64(r.LSN), Table: r.Table, Key: r.Key, Value: r.Value, Version: r.Version, Op: engine.OpPut}
			if r.Op == "delete" {
				er.Op = engine.OpDelete
				at, err := time.Parse(time.RFC3339Nano, r.CommittedAt)
				if err != nil {
					t.Fatalf("committed_at %q: %v", r.CommittedAt, err)
				}
				er.CommittedAt = at
				if r.Table == "fences" {
					deletedAt[er.LSN] = at
				}
			}
			evs, _ := tr.Apply(&er)
			for _, ev := range evs {
				want = append(want, fmt.Sprintf("%s %s %s", ev.Key(), ev.Type, ev.Reason))
			}
		case "fleet_events":
			var ev fleetevents.Event
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				t.Fatalf("fleet_events lsn %d: %v", r.LSN, err)
			}
			if ev.Reason == "deleted" {
				deleted++
				if at, err := time.Parse(time.RFC3339Nano, r.CommittedAt); err == nil {
					lastExit[ev.PointLSN] = at
				}
			}
			got = append(got, fmt.Sprintf("%s %s %s", r.Key, ev.Type, ev.Reason))
		}
	}
	if deleted != cycles*drivers {
		bad.add("%d exits with reason deleted in the log, want %d", deleted, cycles*drivers)
	}
	if len(got) != len(want) {
		bad.add("%d fence events in the log, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			bad.add("fence event %d: %s in the log, want %s", i, got[i], want[i])
			break
		}
	}
	if mid == 0 {
		bad.add("no kill was certainly between two parts of a deletion: the test did not test what it is for")
	}
	if n := bad.count(); n > 0 {
		t.Fatalf("%d issues (seed %d)", n, seed)
	}
	var spans []string
	for lsn, at := range deletedAt {
		d := lastExit[lsn].Sub(at)
		spans = append(spans, d.Round(time.Millisecond).String())
	}
	t.Logf("%d cycles (%d power cuts; seed %d): %d fence events in the log, %d of them exits of a deleted fence; deletion → last exit %v; %d kills certainly between two parts",
		cycles, cuts, seed, len(got), deleted, spans, mid)
}

// exitsAfter counts the exits of a deleted fence in the first page of the
// log after lsn (1,000 records at most), and the page's records.
func exitsAfter(t *testing.T, h *harness, lsn int64) (exits, records int) {
	t.Helper()
	r, err := h.do(context.Background(), http.MethodGet, fmt.Sprintf("/v1/log?after=%d&limit=1000", lsn), "admin", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /v1/log: %v %v", r, err)
	}
	var p struct {
		Records []logRecord `json:"records"`
	}
	if err := r.decode(&p); err != nil {
		t.Fatal(err)
	}
	for _, rec := range p.Records {
		var ev fleetevents.Event
		if rec.Table == "fleet_events" && json.Unmarshal(rec.Value, &ev) == nil && ev.Reason == "deleted" {
			exits++
		}
	}
	return exits, len(p.Records)
}
