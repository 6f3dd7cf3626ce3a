package fleetevents

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/wal"
)

// The tests of a record whose derived output does not fit one write (a
// fence deleted with thousands of drivers inside) and of a store whose
// routes are all to be upgraded at once: the consumer never gets stuck on
// the engine's limits (the events lane's bound, ErrTooLarge), and each
// event is written once, across restarts between the parts.

// manyInside puts fence "depot" and n drivers' points inside it; the
// drivers enter at once (no dwell).
func manyInside(t *testing.T, n *node, drivers int, t0 time.Time) {
	t.Helper()
	if _, err := n.e.PutFence(context.Background(), "depot", []byte(`{"name":"Depot","lat":52,"lng":13,"radius_m":500}`)); err != nil {
		t.Fatal(err)
	}
	for i := range drivers {
		submit(t, n.e, fmt.Sprintf("d%05d", i), 1, 52+float64(i%100)*1e-5, 13, t0)
	}
	n.settle(t)
}

// fenceEvents counts fleet_events records of the log by type and reason,
// and fails on an event key written twice.
func fenceEvents(t *testing.T, e *engine.Engine) map[string]int {
	t.Helper()
	out := map[string]int{}
	seen := map[string]bool{}
	for _, l := range eventsInLog(t, e) {
		if seen[l.Key] {
			t.Fatalf("event %s written twice", l.Key)
		}
		seen[l.Key] = true
		out[l.Type+"/"+l.Reason]++
	}
	return out
}

// consumerKeys counts fleet_consumer's keys with prefix.
func consumerKeys(t *testing.T, e *engine.Engine, prefix string) int {
	t.Helper()
	s, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	if _, err := s.Scan(fleet.TableFleetConsumer, prefix, 0, func(key string, _ engine.State) error {
		if strings.HasPrefix(key, prefix) {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// storedCursor is the consumer's cursor as the store holds it.
func storedCursor(t *testing.T, e *engine.Engine) engine.CursorValue {
	t.Helper()
	s, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, ok, err := s.Get(fleet.TableFleetConsumer, "cursor")
	if err != nil || !ok {
		t.Fatalf("cursor: %v %v", ok, err)
	}
	var c engine.CursorValue
	if err := json.Unmarshal(st.Value, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// recreated puts fence "depot" again after its deletion and checks that
// it starts with nobody inside: a driver of the old fence that leaves
// does not exit it, one that comes in enters it.
func recreated(t *testing.T, n *node, t0 time.Time) {
	t.Helper()
	before := fenceEvents(t, n.e)
	if _, err := n.e.PutFence(context.Background(), "depot", []byte(`{"name":"Depot again","lat":52,"lng":13,"radius_m":500}`)); err != nil {
		t.Fatal(err)
	}
	submit(t, n.e, "d00001", 2, 53, 13, t0.Add(time.Minute)) // far outside
	submit(t, n.e, "d00002", 2, 52, 13, t0.Add(time.Minute)) // inside
	n.settle(t)
	after := fenceEvents(t, n.e)
	if d := after[FenceExit+"/"] - before[FenceExit+"/"]; d != 0 {
		t.Fatalf("the re-created fence has inherited the old one's drivers: %d exits", d)
	}
	if d := after[FenceEnter+"/"] - before[FenceEnter+"/"]; d != 1 {
		t.Fatalf("%d enters of the re-created fence, want 1", d)
	}
	if k := consumerKeys(t, n.e, "in:"); k != 1 {
		t.Fatalf("%d drivers' states at fences, want 1 (d00002)", k)
	}
}

// A fence deleted with 5,000 drivers inside: 5,000 exits with reason
// "deleted", written in parts within the engine's limits; the cursor
// moves past the deletion, the drivers' states are gone, later records
// still decide, and the fence put again under the same id starts empty.
func TestConsumerFenceDeletedWithManyInside(t *testing.T) {
	submitted = map[string]uint64{}
	const drivers = 5000
	dir := t.TempDir()
	n := open(t, dir)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	manyInside(t, n, drivers, t0)
	if got := fenceEvents(t, n.e)[FenceEnter+"/"]; got != drivers {
		t.Fatalf("%d enters, want %d", got, drivers)
	}
	res, err := n.e.DeleteFence(context.Background(), "depot")
	if err != nil {
		t.Fatal(err)
	}
	n.settle(t)
	if got := fenceEvents(t, n.e)[FenceExit+"/deleted"]; got != drivers {
		t.Fatalf("%d exits with reason deleted, want %d", got, drivers)
	}
	if c := storedCursor(t, n.e); c.LSN < res.LSN || c.Part != 0 {
		t.Fatalf("stored cursor %+v, want past the deletion at %d", c, res.LSN)
	}
	if k := consumerKeys(t, n.e, "in:"); k != 0 {
		t.Fatalf("%d drivers' states left after the fence's deletion", k)
	}
	if k := consumerKeys(t, n.e, "fence:"); k != 0 {
		t.Fatalf("the deleted fence is still in fleet_consumer")
	}
	// Later records still decide: a route's stop.
	assignRoute(t, n.e, "r1", `{"driver":"van-1","stops":[{"id":"s1","lat":40,"lng":10}]}`)
	submit(t, n.e, "van-1", 1, 40, 10, t0.Add(time.Minute))
	n.settle(t)
	if got := fenceEvents(t, n.e)[StopArrived+"/"]; got != 1 {
		t.Fatalf("%d stop.arrived after the deletion, want 1", got)
	}
	recreated(t, n, t0)
	n.close(t)
	n = open(t, dir) // the store holds no state of the old fence either
	defer n.close(t)
	submit(t, n.e, "d00003", 2, 53, 13, t0.Add(2*time.Minute)) // was inside the old fence
	n.settle(t)
	if got, want := eventsInLog(t, n.e), expected(t, n.e); !reflect.DeepEqual(got, want) {
		t.Fatalf("%d events in the log, want %d", len(got), len(want))
	}
	if e := n.c.Stats().Errors.Load(); e != 0 {
		t.Fatalf("consumer errors: %d (reloads %d)", e, n.c.Stats().Reloads.Load())
	}
}

// The same deletion with the consumer and the engine stopped after every
// part written: each restart reads the deletion again from its cursor
// inside the record and goes on; every exit is in the log once.
func TestConsumerFenceDeletedCrashBetweenParts(t *testing.T) {
	submitted = map[string]uint64{}
	const drivers = 5000
	dir := t.TempDir()
	n := open(t, dir)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	manyInside(t, n, drivers, t0)
	n.close(t)

	stopped := make(chan struct{}, 1)
	setAfterPart(func(c *Consumer) {
		c.cancel() // as if killed right after this part's write
		select {
		case stopped <- struct{}{}:
		default:
		}
	})
	defer func() { setAfterPart(nil) }()
	n = open(t, dir)
	res, err := n.e.DeleteFence(context.Background(), "depot")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for {
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			t.Fatalf("no part written within 20 s (after %d parts; errors %d)", parts, n.c.Stats().Errors.Load())
		}
		n.c.Close() // stopped after the part's write; the engine as it is
		c := storedCursor(t, n.e)
		if c.LSN != res.LSN || c.Part == 0 {
			t.Fatalf("stored cursor %+v after a part, want inside %d", c, res.LSN)
		}
		parts++
		exits := fenceEvents(t, n.e)[FenceExit+"/deleted"]
		if exits == 0 || exits >= drivers {
			t.Fatalf("%d exits after part %d", exits, parts)
		}
		if k := consumerKeys(t, n.e, "in:"); k != drivers-int(c.Part) {
			t.Fatalf("%d states at the fence after part %d (cursor %+v)", k, parts, c)
		}
		n.close(t)
		if exits > 2*drivers/3 {
			break
		}
		n = open(t, dir)
	}
	setAfterPart(nil)
	n = open(t, dir)
	defer n.close(t)
	n.settle(t)
	if parts < 2 {
		t.Fatalf("the deletion was written in %d parts before the last: the test stops too little", parts)
	}
	if got := fenceEvents(t, n.e)[FenceExit+"/deleted"]; got != drivers {
		t.Fatalf("%d exits with reason deleted, want %d", got, drivers)
	}
	if c := storedCursor(t, n.e); c.LSN < res.LSN || c.Part != 0 {
		t.Fatalf("stored cursor %+v, want past the deletion at %d", c, res.LSN)
	}
	if got, want := eventsInLog(t, n.e), expected(t, n.e); !reflect.DeepEqual(got, want) {
		t.Fatalf("%d events in the log, want %d", len(got), len(want))
	}
	recreated(t, n, t0)
}

// A store whose route_progress still carries the stops' places (the
// format before they moved to fleet_consumer) for 1,500 routes of 40
// stops: the first start does not rewrite them all in one write (it would
// be refused for ever); a route's places go to fleet_consumer when its
// progress is next written, and every route is still followed after
// another restart.
func TestConsumerUpgradesManyRoutes(t *testing.T) {
	submitted = map[string]uint64{}
	const routes, stops = 1500, 40
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.MinFreeBytes = 0
	e, err := engine.New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type legacyStop struct {
		ID      string  `json:"id"`
		Status  string  `json:"status"`
		ETA     string  `json:"eta"`
		Lat     float64 `json:"lat"`
		Lng     float64 `json:"lng"`
		RadiusM float64 `json:"radius_m"`
	}
	type legacyProgress struct {
		Route   string       `json:"route"`
		Version uint64       `json:"version"`
		Driver  string       `json:"driver"`
		Stops   []legacyStop `json:"stops"`
	}
	var progress []engine.Write
	var last uint64
	for r := range routes {
		route, driver := fmt.Sprintf("r%04d", r), fmt.Sprintf("v%04d", r)
		var a strings.Builder
		fmt.Fprintf(&a, `{"driver":%q,"stops":[`, driver)
		lp := legacyProgress{Route: route, Version: 1, Driver: driver}
		for s := range stops {
			if s > 0 {
				a.WriteString(",")
			}
			lat, lng := float64(r%60), float64(s)*0.01
			fmt.Fprintf(&a, `{"id":"s%02d","lat":%v,"lng":%v,"eta":"2026-12-07T12:00:00Z"}`, s, lat, lng)
			lp.Stops = append(lp.Stops, legacyStop{ID: fmt.Sprintf("s%02d", s), Status: Pending, ETA: "2026-12-07T12:00:00Z", Lat: lat, Lng: lng, RadiusM: 75})
		}
		a.WriteString("]}")
		res, err := e.PutAssignment(ctx, route, []byte(a.String()), engine.WriteOptions{IfVersion: engine.AnyVersion})
		if err != nil {
			t.Fatal(err)
		}
		last = res.LSN
		v, _ := json.Marshal(lp)
		progress = append(progress, engine.Write{Table: fleet.TableRouteProgress, Key: route, Value: v})
	}
	// The old consumer's state, as of the last assignment: written here in
	// parts of 100 routes (the old consumer wrote each with its route).
	after := engine.CursorValue{}
	for i := 0; i < len(progress); i += 100 {
		upto := engine.CursorValue{LSN: last, Part: uint64(i/100 + 1)}
		if i+100 >= len(progress) {
			upto.Part = 0
		}
		if _, err := e.WriteDerived(ctx, engine.DerivedWrite{After: after.LSN, AfterPart: after.Part, Upto: upto.LSN, UptoPart: upto.Part, Writes: progress[i:min(i+100, len(progress))]}); err != nil {
			t.Fatal(err)
		}
		after = upto
	}
	c, err := Start(e, Config{StopRadiusM: 75, Checkpoint: checkpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{db: db, e: e, c: c}
	if got := c.tr.Routes(); got != routes {
		t.Fatalf("%d routes followed, want %d", got, routes)
	}
	t0 := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	submit(t, e, "v0007", 1, 7, 0.01, t0) // at r0007's s01
	n.settle(t)
	if got := fenceEvents(t, e)[StopArrived+"/"]; got != 1 {
		t.Fatalf("%d stop.arrived, want 1 (errors %d, reloads %d)", got, c.Stats().Errors.Load(), c.Stats().Reloads.Load())
	}
	if k := consumerKeys(t, e, "stops:"); k != 1 {
		t.Fatalf("%d routes' places in fleet_consumer, want 1 (the route that moved)", k)
	}
	n.close(t)

	n = open(t, dir)
	defer n.close(t)
	if got := n.c.tr.Routes(); got != routes {
		t.Fatalf("after a restart %d routes followed, want %d", got, routes)
	}
	submit(t, n.e, "v0007", 2, 7, 0.02, t0.Add(time.Minute))  // r0007: departs s01, arrives at s02
	submit(t, n.e, "v1499", 1, 59, 0.00, t0.Add(time.Minute)) // r1499: arrives at s00
	n.settle(t)
	got := fenceEvents(t, n.e)
	if got[StopArrived+"/"] != 3 || got[StopDeparted+"/"] != 1 {
		t.Fatalf("events %v, want 3 stop.arrived and 1 stop.departed", got)
	}
	if e := n.c.Stats().Errors.Load(); e != 0 {
		t.Fatalf("consumer errors: %d", e)
	}
}

// One point that decides more than a write takes: a driver on five routes
// of 1,000 stops arrives at the last stop of each (999 stops skipped, one
// arrived, five times) inside two fences. The point is evaluated in parts
// (the fences, then a route a part), each written with the cursor inside
// the point's record; with the consumer stopped after every part, each
// restart goes on from the stored part. Either way every event is in the
// log once, and the point's late successor decides nothing.
func TestConsumerPointOverManyRoutes(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			submitted = map[string]uint64{}
			dir := t.TempDir()
			n := open(t, dir)
			var a strings.Builder
			a.WriteString(`{"driver":"multi","stops":[`)
			for s := range 1000 {
				if s > 0 {
					a.WriteString(",")
				}
				fmt.Fprintf(&a, `{"id":"s%03d","lat":%v,"lng":10,"eta":"2026-12-07T12:00:00Z"}`, s, 10-float64(999-s)*0.01)
			}
			a.WriteString("]}")
			for r := range 5 {
				assignRoute(t, n.e, fmt.Sprintf("r%d", r), a.String())
			}
			for _, f := range []string{"f1", "f2"} {
				if _, err := n.e.PutFence(context.Background(), f, []byte(`{"name":"F","lat":10,"lng":10,"radius_m":300}`)); err != nil {
					t.Fatal(err)
				}
			}
			n.settle(t)
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
			t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
			submit(t, n.e, "multi", 1, 10, 10, t0)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for {
				if seq, err := n.e.DriverDurableSeq("multi"); err != nil || seq == 1 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			// The durable seq moves just before the batch's records are published.
			if err := n.e.WaitCommitted(ctx); err != nil {
				t.Fatal(err)
			}
			var pointLSN uint64
			n.e.ReadLog(0, 0, func(r engine.Record) error {
				if r.Table == fleet.TablePositions {
					pointLSN = r.LSN
				}
				return nil
			})
			restarts := 0
			for crash && n.c.Stats().Stored.Load() < pointLSN {
				select {
				case <-stopped:
					n.c.Close()
					if c := storedCursor(t, n.e); c.LSN != pointLSN || c.Part == 0 {
						t.Fatalf("stored cursor %+v after a part, want inside %d", c, pointLSN)
					}
					n.close(t)
					n = open(t, dir)
					restarts++
				case <-ctx.Done():
					t.Fatalf("the point is not written within 20 s (restarts %d, errors %d)", restarts, n.c.Stats().Errors.Load())
				case <-time.After(5 * time.Millisecond):
				}
			}
			if crash && restarts < 3 {
				t.Fatalf("%d restarts between parts: the test stops too little", restarts)
			}
			setAfterPart(nil)
			submit(t, n.e, "multi", 2, 12, 10, t0.Add(time.Minute))      // far: departs the five last stops, exits the fences
			submit(t, n.e, "multi", 3, 9.99, 10, t0.Add(30*time.Second)) // late: decides nothing
			n.settle(t)
			defer n.close(t)
			got := fenceEvents(t, n.e)
			if got[StopSkipped+"/"] != 5*999 || got[StopArrived+"/"] != 5 || got[StopDeparted+"/"] != 5 || got[FenceEnter+"/"] != 2 || got[FenceExit+"/"] != 2 {
				t.Fatalf("events %v", got)
			}
			if got, want := eventsInLog(t, n.e), expected(t, n.e); !reflect.DeepEqual(got, want) {
				t.Fatalf("%d events in the log, want %d", len(got), len(want))
			}
			if e := n.c.Stats().Errors.Load(); e != 0 {
				t.Fatalf("consumer errors: %d", e)
			}
		})
	}
}

// With a smaller events lane ([lanes.events] queue_bound 300) and batch
// bytes (256 KiB) the consumer's writes shrink with them: the deletion's
// 2,000 exits are written in parts the engine takes.
func TestConsumerBoundsFollowTheLane(t *testing.T) {
	submitted = map[string]uint64{}
	n := openWith(t, t.TempDir(), func(c *engine.Config) {
		l := c.Lanes[engine.LaneEvents]
		l.QueueBound = 300
		c.Lanes[engine.LaneEvents] = l
		c.BatchBytes = 256 << 10
	})
	defer n.close(t)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	manyInside(t, n, 2000, t0)
	if _, err := n.e.DeleteFence(context.Background(), "depot"); err != nil {
		t.Fatal(err)
	}
	n.settle(t)
	if got := fenceEvents(t, n.e); got[FenceEnter+"/"] != 2000 || got[FenceExit+"/deleted"] != 2000 {
		t.Fatalf("events %v", got)
	}
	if e := n.c.Stats().Errors.Load(); e != 0 {
		t.Fatalf("consumer errors: %d", e)
	}
}
