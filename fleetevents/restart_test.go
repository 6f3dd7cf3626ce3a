package fleetevents

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"routehound/engine"
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
				afterPart = func(c *Consumer) {
					c.cancel()
					select {
					case stopped <- struct{}{}:
					default:
					}
				}
				defer func() { afterPart = nil }()
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
			afterPart = nil
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
