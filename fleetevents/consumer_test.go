package fleetevents

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/wal"
)

// node is an engine over a store in dir, with its consumer.
type node struct {
	db *wal.DB
	e  *engine.Engine
	c  *Consumer
}

// checkpoint is the consumers' Config.Checkpoint: how long the marks may
// stay unwritten (a restart replays them from the log).
var checkpoint = 10 * time.Millisecond

func open(t *testing.T, dir string) *node {
	t.Helper()
	return openWith(t, dir, nil)
}

// openEngine is openWith, without starting the consumer when nc (start
// starts it).
func openEngine(t *testing.T, dir string, set func(*engine.Config), nc bool) *node {
	t.Helper()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.MinFreeBytes = 0
	if set != nil {
		set(&cfg)
	}
	e, err := engine.New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{db: db, e: e}
	if nc {
		return n
	}
	n.start(t)
	return n
}

// start starts n's consumer.
func (n *node) start(t *testing.T) {
	t.Helper()
	c, err := Start(n.e, Config{StopRadiusM: 75, Checkpoint: checkpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
}

// openWith is open with the engine's configuration changed by set.
func openWith(t *testing.T, dir string, set func(*engine.Config)) *node {
	t.Helper()
	return openEngine(t, dir, set, false)
}

func (n *node) close(t *testing.T) {
	t.Helper()
	if n.c != nil {
		n.c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// settle waits (bounded) until the consumer has evaluated every record up
// to the last committed one and written the events they decide (it stores
// Processed after that write; the marks of points that decided nothing
// may still be unwritten, as after a crash).
func (n *node) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The points are accepted before they are committed (async): first
	// until every one submitted is durable.
	for d, seq := range submitted {
		for {
			got, err := n.e.DriverDurableSeq(d)
			if err != nil {
				t.Fatal(err)
			}
			if got >= seq {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("driver %s: durable seq %d, submitted %d", d, got, seq)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	last := n.e.StoreStats().LastLSN
	if err := n.e.WaitDurable(ctx, last); err != nil {
		t.Fatal(err)
	}
	for n.c.Stats().Processed.Load() < last {
		if ctx.Err() != nil {
			t.Fatalf("the consumer has written up to %d, processed %d, of %d", n.c.Stats().Stored.Load(), n.c.Stats().Processed.Load(), last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Its last derived write is answered by the journal before the log's
	// fsync publishes it (engine/pipeline.go).
	if err := n.e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
}

func assignRoute(t *testing.T, e *engine.Engine, route string, a string) {
	t.Helper()
	if _, err := fleet.DecodeAssignment([]byte(a)); err != nil {
		t.Fatalf("assignment %s: %v", a, err)
	}
	if _, err := e.PutAssignment(context.Background(), route, []byte(a), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
		t.Fatal(err)
	}
}

// submitted is the highest seq submitted of each driver (settle waits for
// them to be durable).
var submitted = map[string]uint64{}

func submit(t *testing.T, e *engine.Engine, driver string, seq uint64, lat, lng float64, ts time.Time) {
	t.Helper()
	submitted[driver] = max(submitted[driver], seq)
	v := fmt.Sprintf(`{"seq":%d,"lat":%v,"lng":%v,"ts":%q}`, seq, lat, lng, ts.UTC().Format(time.RFC3339Nano))
	if _, err := e.SubmitPoints(context.Background(), driver, []engine.Point{{Seq: seq, Value: []byte(v)}}); err != nil {
		t.Fatal(err)
	}
}

// logged is an event as the log holds it.
type logged struct {
	Key string
	Event
}

// eventsInLog reads every fleet_events record of the log, in order.
func eventsInLog(t *testing.T, e *engine.Engine) []logged {
	t.Helper()
	// An answered derived write is published once the log's fsync covers
	// it (engine/pipeline.go).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	var out []logged
	from := e.StoreStats().FirstLSN // what retention left of it
	if from > 0 {
		from--
	}
	if err := e.ReadLog(from, 0, func(r engine.Record) error {
		if r.Table != fleet.TableFleetEvents {
			return nil
		}
		var ev Event
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			return err
		}
		out = append(out, logged{r.Key, ev})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// expected runs a fresh tracker over the whole log: what the consumer,
// however often it was stopped, must have written, once each.
func expected(t *testing.T, e *engine.Engine) []logged {
	t.Helper()
	tr := NewTracker(75)
	var out []logged
	if err := e.ReadLog(0, 0, func(r engine.Record) error {
		evs, _ := tr.Apply(&r)
		for _, ev := range evs {
			out = append(out, logged{ev.Key(), ev})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// The three stops through the engine: the consumer writes the
// four events to fleet_events and the route's progress to route_progress,
// and reads on after a restart without writing any of them again.
func TestConsumerThreeStops(t *testing.T) {
	submitted = map[string]uint64{}
	dir := t.TempDir()
	n := open(t, dir)
	assignRoute(t, n.e, "r1", `{"driver":"van-7","stops":[`+
		`{"id":"s1","lat":52.000,"lng":13.0,"eta":"2026-12-07T10:00:00Z"},`+
		`{"id":"s2","lat":52.010,"lng":13.0,"eta":"2026-12-07T10:10:00Z"},`+
		`{"id":"s3","lat":52.020,"lng":13.0,"eta":"2026-12-07T10:20:00Z"}]}`)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	submit(t, n.e, "van-7", 1, 52.0003, 13.0, t0.Add(90*time.Second))
	submit(t, n.e, "van-7", 2, 52.0015, 13.0, t0.Add(3*time.Minute))
	submit(t, n.e, "van-7", 3, 52.010, 13.002, t0.Add(9*time.Minute))
	n.settle(t)
	n.close(t)

	n = open(t, dir)
	submit(t, n.e, "van-7", 4, 52.010, 13.0, t0.Add(8*time.Minute)) // late
	submit(t, n.e, "van-7", 5, 52.0201, 13.0, t0.Add(32*time.Minute))
	n.settle(t)
	defer n.close(t)

	var got []string
	for _, l := range eventsInLog(t, n.e) {
		d := ""
		if l.DelayS != nil {
			d = fmt.Sprint(" ", *l.DelayS)
		}
		got = append(got, l.Key+d)
	}
	want := []string{"r1/s1/stop.arrived 90", "r1/s1/stop.departed", "r1/s2/stop.skipped", "r1/s3/stop.arrived 720"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events in the log\n got %v\nwant %v", got, want)
	}
	s, err := n.e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, ok, err := s.Get(fleet.TableRouteProgress, "r1")
	if err != nil || !ok {
		t.Fatalf("route_progress r1: %v %v", ok, err)
	}
	var p Progress
	if err := json.Unmarshal(st.Value, &p); err != nil {
		t.Fatal(err)
	}
	if p.Route != "r1" || p.Version != 1 || p.Driver != "van-7" || len(p.Stops) != 3 ||
		p.Stops[0].Status != Departed || p.Stops[1].Status != Skipped || p.Stops[2].Status != Arrived {
		t.Fatalf("progress %s", st.Value)
	}
	// The contract's fields only; the stops' places are the consumer's.
	var raw struct {
		Stops []map[string]any `json:"stops"`
	}
	json.Unmarshal(st.Value, &raw)
	for _, s := range raw.Stops {
		for k := range s {
			switch k {
			case "id", "status", "eta", "arrived_at", "departed_at", "delay_s":
			default:
				t.Fatalf("route_progress has %q: %s", k, st.Value)
			}
		}
	}
	st, ok, err = s.Get(fleet.TableFleetConsumer, placesKey("r1"))
	if err != nil || !ok || string(st.Value) != `{"version":1,"stops":[[52,13,75],[52.01,13,75],[52.02,13,75]]}` {
		t.Fatalf("places of r1: %s %v %v", st.Value, ok, err)
	}
	if n.c.Stats().Events.Load() != 2 {
		t.Fatalf("after the restart the consumer wrote %d events, want 2", n.c.Stats().Events.Load())
	}
}

// Drivers on routes, the consumer and the engine stopped at random
// moments, again and again: every transition is in the log exactly once,
// and they are the transitions one uninterrupted pass over the log
// decides.
func TestConsumerRestartsExactlyOnce(t *testing.T) {
	for _, cp := range []time.Duration{10 * time.Millisecond, time.Hour} {
		// An hour: the marks are written only with a driver's first or
		// last route, and every restart replays them from the log.
		t.Run(cp.String(), func(t *testing.T) {
			defer func(old time.Duration) { checkpoint = old }(checkpoint)
			checkpoint = cp
			restartsExactlyOnce(t)
		})
	}
}

func restartsExactlyOnce(t *testing.T) {
	submitted = map[string]uint64{}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 1))
	const drivers = 12
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	seq := map[string]uint64{}
	step := map[string]int{}
	n := open(t, dir)
	for i := range drivers {
		d := fmt.Sprintf("d%d", i)
		lat := float64(i)
		assignRoute(t, n.e, "route-"+d, fmt.Sprintf(`{"driver":%q,"stops":[{"id":"a","lat":%v,"lng":0.01,"eta":"2026-12-07T08:05:00Z"},{"id":"b","lat":%v,"lng":0.02},{"id":"c","lat":%v,"lng":0.03,"radius_m":40},{"id":"d","lat":%v,"lng":0.04}]}`,
			d, lat, lat+0.0015, lat, lat))
	}
	for round := range 8 {
		// Each driver moves east along its line, 0.001° (111 m) a point,
		// now and then with a late point.
		for k := 0; k < 6; k++ {
			for i := range drivers {
				d := fmt.Sprintf("d%d", i)
				seq[d]++
				step[d]++
				s := step[d]
				ts := t0.Add(time.Duration(s) * time.Minute)
				if rng.IntN(7) == 0 {
					ts = ts.Add(-3 * time.Minute)
				}
				submit(t, n.e, d, seq[d], float64(i)+rng.Float64()*0.0002, float64(s%50)*0.001, ts)
			}
		}
		if round == 3 {
			// A re-assignment in the middle: the route starts afresh.
			assignRoute(t, n.e, "route-d0", `{"driver":"d0","stops":[{"id":"a","lat":0,"lng":0.01},{"id":"z","lat":0,"lng":0.03}]}`)
		}
		if rng.IntN(2) == 0 {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		} else {
			n.settle(t)
		}
		n.close(t)
		n = open(t, dir)
	}
	n.settle(t)
	defer n.close(t)
	got, want := eventsInLog(t, n.e), expected(t, n.e)
	if len(want) < drivers*4 {
		t.Fatalf("only %d transitions: the test drives too little", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		seen := map[string]int{}
		for _, g := range got {
			seen[fmt.Sprintf("%s@%d", g.Key, g.PointLSN)]++
		}
		var dup []string
		for k, c := range seen {
			if c > 1 {
				dup = append(dup, k)
			}
		}
		sort.Strings(dup)
		t.Fatalf("%d events in the log, want %d (doubled: %v)", len(got), len(want), dup)
	}
	if n.c.Stats().Errors.Load() != 0 {
		t.Fatalf("consumer errors: %d", n.c.Stats().Errors.Load())
	}
}

// An event is written while other drivers keep the log busy: the consumer
// gathers what is durable before it writes, but a write is due at the
// latest WriteEvery after the last, however busy the log.
func TestConsumerWritesUnderSteadyLoad(t *testing.T) {
	submitted = map[string]uint64{}
	n := open(t, t.TempDir())
	defer n.close(t)
	assignRoute(t, n.e, "r", `{"driver":"d","stops":[{"id":"s","lat":1,"lng":1}]}`)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint64(1); seq < 200000; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf(`{"seq":%d,"lat":2,"lng":2,"ts":"2026-12-07T10:00:00Z"}`, seq)
			if _, err := n.e.SubmitPoints(context.Background(), "flood", []engine.Point{{Seq: seq, Value: []byte(v)}}); err != nil {
				time.Sleep(time.Millisecond) // the lane is full: the backpressure
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(50 * time.Millisecond)
	submit(t, n.e, "d", 1, 1, 1, time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	deadline := time.Now().Add(10 * time.Second)
	for n.c.Stats().Events.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no event written within 10 s under a steady stream of other points (lag %d)", n.c.Lag())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A route_progress value written before the places moved to fleet_consumer
// gives them back at restore.
func TestLegacyPlaces(t *testing.T) {
	pl, ok := legacyPlaces([]byte(`{"route":"r","version":3,"driver":"d","stops":[{"id":"a","status":"pending","lat":1,"lng":2,"radius_m":75},{"id":"b","status":"arrived","lat":3,"lng":4,"radius_m":40}]}`))
	if !ok || pl.Version != 3 || !reflect.DeepEqual(pl.Stops, [][3]float64{{1, 2, 75}, {3, 4, 40}}) {
		t.Fatalf("legacy places %+v %v", pl, ok)
	}
	if _, ok := legacyPlaces([]byte(`{"route":"r","version":3,"driver":"d","stops":[{"id":"a","status":"pending"}]}`)); ok {
		t.Fatal("places read from a value without them")
	}
}

// setAfterPart sets the hook called after each part of a split (nil: none);
// the consumer's goroutine reads it while the test sets it.
func setAfterPart(f func(c *Consumer)) {
	if f == nil {
		afterPart.Store(nil)
		return
	}
	afterPart.Store(&f)
}
