package fleetevents

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/wal"
)

// The tests of what a restart reads again: the drivers' marks replayed
// from the log (more of them than one write of a smaller events lane
// takes), and a split record that retention trimmed before the consumer
// resumed it.

// smallLane is an events lane of 300 records: the consumer's writes are
// bounded at 225.
func smallLane(c *engine.Config) {
	l := c.Lanes[engine.LaneEvents]
	l.QueueBound = 300
	c.Lanes[engine.LaneEvents] = l
}

// assignMany assigns route r%04d to driver d%04d, one stop each, at
// latitude 10 + i/100, from a few goroutines (the dispatch lane batches
// them).
func assignMany(t *testing.T, e *engine.Engine, drivers int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, drivers)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < drivers; i += 8 {
				a := fmt.Sprintf(`{"driver":"d%04d","stops":[{"id":"s1","lat":%v,"lng":10}]}`, i, 10+float64(i)*0.01)
				if _, err := e.PutAssignment(context.Background(), fmt.Sprintf("r%04d", i), []byte(a), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// 1,000 drivers on routes send a point each that decides nothing, then
// one driver arrives at its stop: that write carries the event, not the
// 1,000 marks (the checkpoint is an hour away). The consumer restarts
// with an events lane of 300 records (writes of at most 225): its replay
// of the log makes the 1,000 marks dirty again, more than a write takes.
// They are written a part per write, and before the re-assignment that
// follows (a change of a driver's routes, after which every mark must be
// written) the rest of them go first, in parts of that record. With the
// consumer stopped after every such write, each restart goes on with the
// marks not yet written. Every event is in the log once, and the drivers'
// late points after it decide nothing (their marks were kept).
func TestConsumerRestartReplaysManyMarks(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			submitted = map[string]uint64{}
			old := checkpoint
			checkpoint = time.Hour
			defer func() { checkpoint = old }()
			const drivers = 1000
			dir := t.TempDir()
			n := openWith(t, dir, func(c *engine.Config) { c.FixedBatchCap = 4096 })
			assignMany(t, n.e, drivers)
			n.settle(t)
			t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			for i := range drivers { // far east of each stop
				submit(t, n.e, fmt.Sprintf("d%04d", i), 1, 10+float64(i)*0.01, 11, t0.Add(time.Hour))
			}
			n.settle(t)
			submit(t, n.e, "d0000", 2, 10, 10, t0.Add(2*time.Hour)) // arrives at r0000's s1
			n.settle(t)
			if k := consumerKeys(t, n.e, "driver:"); k != 0 {
				t.Fatalf("%d marks written before the restart: the test replays none", k)
			}
			if got := fenceEvents(t, n.e)[StopArrived+"/"]; got != 1 {
				t.Fatalf("%d arrivals before the restart, want 1", got)
			}
			n.close(t)

			stopped := make(chan struct{}, 1)
			if crash {
				setAfterPart(func(c *Consumer) {
					c.cancel()
					select {
					case stopped <- struct{}{}:
					default:
					}
				})
				defer func() { setAfterPart(nil) }()
			}
			// The re-assignment is in the log before the consumer starts.
			n = openEngine(t, dir, smallLane, true)
			res, err := n.e.PutAssignment(context.Background(), "r0001",
				[]byte(`{"driver":"d0001","stops":[{"id":"s1","lat":10.01,"lng":10},{"id":"s2","lat":10.01,"lng":10.5}]}`),
				engine.WriteOptions{IfVersion: engine.AnyVersion})
			if err != nil {
				t.Fatal(err)
			}
			n.start(t)
			restarts := 0
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for crash && n.c.Stats().Stored.Load() < res.LSN {
				select {
				case <-stopped:
					n.c.Close()
					n.close(t)
					n = openWith(t, dir, smallLane)
					restarts++
				case <-ctx.Done():
					t.Fatalf("the re-assignment is not written within 30 s (restarts %d, errors %d)", restarts, n.c.Stats().Errors.Load())
				case <-time.After(5 * time.Millisecond):
				}
			}
			if crash && restarts < 3 {
				t.Fatalf("%d restarts between parts: the test stops too little", restarts)
			}
			setAfterPart(nil)
			n.settle(t)
			if e := n.c.Stats().Errors.Load(); e != 0 {
				t.Fatalf("consumer errors: %d (reloads %d)", e, n.c.Stats().Reloads.Load())
			}
			// Late points at every stop: only d0001 (re-assigned: its mark
			// went with its old route) arrives.
			for i := range drivers {
				submit(t, n.e, fmt.Sprintf("d%04d", i), 3, 10+float64(i)*0.01, 10, t0.Add(30*time.Minute))
			}
			n.settle(t)
			if got := fenceEvents(t, n.e)[StopArrived+"/"]; got != 2 {
				t.Fatalf("%d arrivals after the late points, want 2", got)
			}
			n.close(t)
			n = openWith(t, dir, smallLane) // once more: the marks as stored and replayed
			defer n.close(t)
			for i := range drivers {
				submit(t, n.e, fmt.Sprintf("d%04d", i), 4, 10+float64(i)*0.01, 10, t0.Add(40*time.Minute))
			}
			n.settle(t)
			if got, want := eventsInLog(t, n.e), expected(t, n.e); !reflect.DeepEqual(got, want) {
				t.Fatalf("%d events in the log, want %d", len(got), len(want))
			}
			if e := n.c.Stats().Errors.Load(); e != 0 {
				t.Fatalf("consumer errors: %d", e)
			}
		})
	}
}

// trimAll lets retention trim all it can of the log of the store in dir
// (the engine closed).
func trimAll(t *testing.T, dir string) {
	t.Helper()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, _, err := db.Trim(wal.Retention{MaxBytes: 1}, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// A fence deleted with 2,000 drivers inside, and retention trims the log
// past the deletion before the consumer has written all of its exits:
// stopped after the first part (the cursor inside the deletion's record),
// or before it read the deletion at all. The restored consumer follows a
// fence the fences table no longer holds: it reconciles, the drivers
// still inside exit it with reason "deleted" (at the deletion's LSN when
// it was inside that record), each once, and the fence and their states
// are gone; a driver that leaves afterwards exits nothing.
//
// With crash, the consumer is also stopped after every part of the
// reconciliation: each restart goes on with the drivers not yet let go.
func TestConsumerFenceDeletedThenTrimmed(t *testing.T) {
	for _, tc := range []struct{ inside, crash bool }{{true, false}, {false, false}, {true, true}} {
		inside, crash := tc.inside, tc.crash
		t.Run(fmt.Sprintf("inside=%v,crash=%v", inside, crash), func(t *testing.T) {
			submitted = map[string]uint64{}
			const drivers = 2000
			dir := t.TempDir()
			n := open(t, dir)
			t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			manyInside(t, n, drivers, t0)
			n.close(t)

			stopped := make(chan struct{}, 1)
			setAfterPart(func(c *Consumer) {
				c.cancel()
				select {
				case stopped <- struct{}{}:
				default:
				}
			})
			defer func() { setAfterPart(nil) }()
			n = openEngine(t, dir, nil, !inside)
			res, err := n.e.DeleteFence(context.Background(), "depot")
			if err != nil {
				t.Fatal(err)
			}
			var before int
			if inside {
				select {
				case <-stopped:
				case <-time.After(20 * time.Second):
					t.Fatal("no part written within 20 s")
				}
				n.c.Close()
				if c := storedCursor(t, n.e); c.LSN != res.LSN || c.Part == 0 {
					t.Fatalf("stored cursor %+v after a part, want inside %d", c, res.LSN)
				}
				before = fenceEvents(t, n.e)[FenceExit+"/deleted"]
				if before == 0 || before >= drivers {
					t.Fatalf("%d exits after the first part", before)
				}
			}
			setAfterPart(nil)
			n.close(t)
			trimAll(t, dir)

			n = openEngine(t, dir, nil, true)
			if first := n.e.StoreStats().FirstLSN; first <= res.LSN {
				t.Fatalf("the log still holds the deletion (first lsn %d, deletion %d)", first, res.LSN)
			}
			submit(t, n.e, "d00001", 2, 53, 13, t0.Add(time.Minute)) // was inside; far outside now
			if crash {
				setAfterPart(func(c *Consumer) {
					c.cancel()
					select {
					case stopped <- struct{}{}:
					default:
					}
				})
			}
			n.start(t)
			restarts := 0
			for crash {
				select {
				case <-stopped:
					n.close(t)
					n = openWith(t, dir, nil)
					restarts++
					continue
				case <-time.After(200 * time.Millisecond):
				}
				if restarts > 100 {
					t.Fatal("more than 100 restarts")
				}
				if storedCursor(t, n.e).Part == 0 && consumerKeys(t, n.e, "fence:") == 0 {
					break
				}
			}
			if crash && restarts < 2 {
				t.Fatalf("%d restarts between the reconciliation's parts: the test stops too little", restarts)
			}
			setAfterPart(nil)
			defer n.close(t)
			n.settle(t)
			// The log's events: those written before the trim are gone
			// with it; the ones after it complete them.
			got := fenceEvents(t, n.e)
			if got[FenceExit+"/deleted"]+before != drivers || got[FenceExit+"/"] != 0 {
				t.Fatalf("exits %v after the trim, %d before, want %d with reason deleted in all", got, before, drivers)
			}
			if inside {
				for _, l := range eventsInLog(t, n.e) {
					if l.PointLSN != res.LSN {
						t.Fatalf("exit %s decided at lsn %d, want the deletion's %d", l.Key, l.PointLSN, res.LSN)
					}
				}
			}
			if k := consumerKeys(t, n.e, "fence:"); k != 0 {
				t.Fatalf("the deleted fence is still in fleet_consumer")
			}
			if k := consumerKeys(t, n.e, "in:"); k != 0 {
				t.Fatalf("%d drivers' states left at the deleted fence", k)
			}
			// Nor does the consumer follow it: a point inside enters nothing.
			submit(t, n.e, "d00002", 2, 52, 13, t0.Add(2*time.Minute))
			n.settle(t)
			if got := fenceEvents(t, n.e)[FenceEnter+"/"]; got != 0 {
				t.Fatalf("%d enters of the deleted fence", got)
			}
			if c := storedCursor(t, n.e); c.Part != 0 {
				t.Fatalf("stored cursor %+v, want a whole record", c)
			}
		})
	}
}
