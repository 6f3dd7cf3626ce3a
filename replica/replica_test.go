package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/internal/testkit"
	"routehound/wal"
)

// *engine.Engine is what the appliance gives the replica.
var (
	_ Source      = (*engine.Engine)(nil)
	_ Snapshotter = (*engine.Engine)(nil)
)

type store struct {
	e  *engine.Engine
	db *wal.DB
}

// newStore starts a real wal and engine in dir (a fresh temp dir when "").
func newStore(t testing.TB, dir string) *store {
	t.Helper()
	e, db := testkit.EngineIn(t, testkit.Store{Dir: dir}, nil)
	return &store{e: e, db: db}
}

func openReplica(t testing.TB, path string, src Source, opts ...Options) *Replica {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	r, err := OpenWith(path, src, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func point(seq uint64, lat float64) engine.Point {
	return engine.Point{Seq: seq, Value: fmt.Appendf(nil, `{"seq":%d,"lat":%g,"lng":%g,"ts":"2026-11-23T10:00:%02dZ","speed_kmh":%d,"heading":90}`,
		seq, lat, lat/2, seq%60, seq%100)}
}

func (s *store) points(t testing.TB, driver string, from, to uint64) {
	t.Helper()
	var pts []engine.Point
	for q := from; q <= to; q++ {
		pts = append(pts, point(q, float64(q%90)))
	}
	if _, err := s.e.SubmitPoints(context.Background(), driver, pts); err != nil {
		t.Fatal(err)
	}
}

// put writes through the command of the table's writer.
func (s *store) put(t testing.TB, table, key, value string) uint64 {
	t.Helper()
	ctx, v := context.Background(), []byte(value)
	var res engine.WriteResult
	var err error
	switch table {
	case fleet.TableAssignments:
		res, err = s.e.PutAssignment(ctx, key, v, engine.WriteOptions{IfVersion: engine.AnyVersion})
	case fleet.TableLoading:
		res, err = s.e.AddLoadingEvent(ctx, key, v, engine.WriteOptions{})
	default:
		res, err = s.e.PutKey(ctx, engine.Write{Table: table, Key: key, Value: v, IfVersion: engine.AnyVersion})
	}
	if err != nil {
		t.Fatalf("put %s/%s: %v", table, key, err)
	}
	return res.LSN
}

// del deletes through the command of the table's writer.
func (s *store) del(t testing.TB, table, key string) uint64 {
	t.Helper()
	ctx, o := context.Background(), engine.WriteOptions{IfVersion: engine.AnyVersion}
	var res engine.WriteResult
	var err error
	switch table {
	case fleet.TableAssignments:
		res, err = s.e.DeleteAssignment(ctx, key, o)
	case fleet.TableLoading:
		res, err = s.e.DeleteLoadingEvent(ctx, key, o)
	default:
		res, err = s.e.PutKey(ctx, engine.Write{Table: table, Key: key, Delete: true, IfVersion: engine.AnyVersion})
	}
	if err != nil {
		t.Fatalf("delete %s/%s: %v", table, key, err)
	}
	return res.LSN
}

func loadingJSON(dock, shipment, kind string, pallets int) string {
	return fmt.Sprintf(`{"terminal":"T1","dock":%q,"shipment":%q,"kind":%q,"pallets":%d,"ts":"2026-11-23T09:30:00Z"}`, dock, shipment, kind, pallets)
}

// durable waits until every accepted driver point is durable, and answers
// the durable LSN.
func (s *store) durable(t testing.TB) uint64 {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "the driver lane to drain", func() bool { return s.e.Lane(engine.LaneDriver).Depth.Load() == 0 })
	if err := s.e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s.e.DurableLSN()
}

func waitLSN(t testing.TB, r *Replica, lsn uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.WaitLSN(ctx, lsn); err != nil {
		t.Fatal(err)
	}
}

func TestAppliesBuiltinsAndUserTables(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	ctx := context.Background()

	s.points(t, "d1", 1, 3)
	s.points(t, "d2", 1, 1)
	s.put(t, fleet.TableAssignments, "r1", `{"driver":"d1","stops":[{"id":"a","lat":1,"lng":2}],"note":"first"}`)
	s.put(t, fleet.TableAssignments, "r2", `{"driver":"d2","stops":[],"note":""}`)
	r1v2 := s.put(t, fleet.TableAssignments, "r1", `{"driver":"d3","stops":[{"id":"a"},{"id":"b"}],"note":"moved"}`)
	s.put(t, fleet.TableAssignments, "r3", `{"driver":"d2","stops":[],"note":"gone soon"}`)
	s.del(t, fleet.TableAssignments, "r3")
	var loadLSN []uint64
	for i, ev := range []string{
		loadingJSON("D1", "S1", "arrived", 0),
		loadingJSON("D1", "S1", "loaded", 10),
		loadingJSON("D2", "S2", "arrived", 0),
		loadingJSON("D1", "S3", "arrived", 0),
		loadingJSON("D2", "S2", "loaded", 7),
	} {
		loadLSN = append(loadLSN, s.put(t, fleet.TableLoading, fmt.Sprintf("ev%d", i), ev))
	}
	s.del(t, fleet.TableLoading, "ev3") // D1/arrived back to 1
	s.put(t, "notes", "k1", `{"a":1}`)
	s.put(t, "notes", "k2", `[1,2]`)
	s.put(t, "notes", "k1", `{"a":2}`)
	s.put(t, "notes", "k3", `true`)
	s.del(t, "notes", "k3")
	// The fleet-events consumer's private table is not the replica's.
	if _, err := s.e.WriteDerived(ctx, engine.DerivedWrite{After: 0, Upto: s.durable(t), Writes: []engine.Write{
		{Table: fleet.TableFleetConsumer, Key: "driver:d1", Value: []byte(`{"ts":"2026-11-23T09:00:00Z","lsn":1}`)},
		{Table: fleet.TableRouteProgress, Key: "r1", Value: []byte(`{"route":"r1"}`)},
	}}); err != nil {
		t.Fatal(err)
	}
	waitLSN(t, r, s.durable(t))
	if rows, err := r.Rows(ctx, fleet.TableFleetConsumer, "", 0); err != nil || len(rows) != 0 {
		t.Fatalf("rows of fleet_consumer: %+v, %v", rows, err)
	}
	if rows, err := r.Rows(ctx, fleet.TableRouteProgress, "", 0); err != nil || len(rows) != 1 {
		t.Fatalf("rows of route_progress: %+v, %v", rows, err)
	}

	pos, err := r.Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 2 || pos[0].Driver != "d1" || pos[0].Seq != 3 || pos[1].Driver != "d2" || pos[1].Seq != 1 {
		t.Fatalf("positions: %+v", pos)
	}
	if p := pos[0]; p.Lat != 3 || p.Lng != 1.5 || p.SpeedKmh != 3 || p.Heading != 90 ||
		!p.TS.Equal(time.Date(2026, 11, 23, 10, 0, 3, 0, time.UTC)) || p.LSN == 0 || p.CommittedAt.IsZero() {
		t.Fatalf("position of d1: %+v", p)
	}
	trail, err := r.Trail(ctx, "d1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 3 || trail[0].Seq != 3 || trail[2].Seq != 1 || trail[0].LSN <= trail[1].LSN {
		t.Fatalf("trail of d1: %+v", trail)
	}
	if trail, _ := r.Trail(ctx, "d1", 2); len(trail) != 2 || trail[1].Seq != 2 {
		t.Fatalf("trail of d1, 2 points: %+v", trail)
	}

	asg, err := r.Assignments(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(asg) != 2 || asg[0].Route != "r1" || asg[1].Route != "r2" {
		t.Fatalf("assignments (newest first, r3 deleted): %+v", asg)
	}
	if a := asg[0]; a.Driver != "d3" || a.Stops != 2 || a.Note != "moved" || a.Version != 2 || a.LSN != r1v2 || a.CommittedAt.IsZero() {
		t.Fatalf("assignment r1: %+v", a)
	}
	if asg, _ := r.Assignments(ctx, 1); len(asg) != 1 || asg[0].Route != "r1" {
		t.Fatalf("assignments limit 1: %+v", asg)
	}

	all, err := r.LoadingEvents(ctx, fleet.LoadingFilter{})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(evs []fleet.LoadingRow) string {
		var out []string
		for _, e := range evs {
			out = append(out, e.ID)
		}
		return fmt.Sprint(out)
	}
	if ids(all) != "[ev4 ev2 ev1 ev0]" {
		t.Fatalf("loading events, newest first without the deleted ev3: %s", ids(all))
	}
	if e := all[0]; e.Terminal != "T1" || e.Dock != "D2" || e.Shipment != "S2" || e.Kind != "loaded" || e.Pallets != 7 ||
		e.LSN != loadLSN[4] || !e.TS.Equal(time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)) || e.CommittedAt.IsZero() {
		t.Fatalf("event ev4: %+v", e)
	}
	for _, c := range []struct {
		f    fleet.LoadingFilter
		want string
	}{
		{fleet.LoadingFilter{Dock: "D1"}, "[ev1 ev0]"},
		{fleet.LoadingFilter{Shipment: "S2"}, "[ev4 ev2]"},
		{fleet.LoadingFilter{Dock: "D2", Shipment: "S1"}, "[]"},
		{fleet.LoadingFilter{Limit: 2}, "[ev4 ev2]"},
		{fleet.LoadingFilter{BeforeLSN: loadLSN[2]}, "[ev1 ev0]"},
		{fleet.LoadingFilter{Dock: "D1", BeforeLSN: loadLSN[1], Limit: 5}, "[ev0]"},
	} {
		got, err := r.LoadingEvents(ctx, c.f)
		if err != nil || ids(got) != c.want {
			t.Errorf("LoadingEvents(%+v) = %s, %v; want %s", c.f, ids(got), err, c.want)
		}
	}
	counts, err := r.LoadingCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(counts) != "[{D1 arrived 1} {D1 loaded 1} {D2 arrived 1} {D2 loaded 1}]" {
		t.Fatalf("loading counts: %v", counts)
	}

	rows, err := r.Rows(ctx, "notes", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Key != "k1" || string(rows[0].Value) != `{"a":2}` || rows[0].Version != 2 ||
		rows[1].Key != "k2" || string(rows[1].Value) != `[1,2]` {
		t.Fatalf("rows of notes: %+v", rows)
	}
	st := r.Stats()
	if st.LSN != s.e.DurableLSN() || st.Applied != st.LSN || st.Batches == 0 || st.ApplyNanos <= 0 || st.Skipped != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestLoadingCountsFollowUpdates(t *testing.T) {
	// A rewrite of an event moves its count. The warehouse's command only
	// creates events; a log written before the engine enforced that may
	// hold rewrites, so this one is written to the wal directly.
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := db.Begin()
	for _, w := range []struct{ key, value string }{
		{"e1", loadingJSON("D1", "S1", "arrived", 1)},
		{"e2", loadingJSON("D1", "S1", "arrived", 1)},
		{"e1", loadingJSON("D2", "S1", "departed", 1)},
	} {
		if _, err := b.Put(fleet.TableLoading, w.key, []byte(w.value), "warehouse", wal.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, dir)
	r := openReplica(t, "", s.e)
	waitLSN(t, r, s.e.DurableLSN())
	counts, err := r.LoadingCounts(context.Background())
	if err != nil || fmt.Sprint(counts) != "[{D1 arrived 1} {D2 departed 1}]" {
		t.Fatalf("counts: %v %v", counts, err)
	}
	s.del(t, fleet.TableLoading, "e2")
	waitLSN(t, r, s.del(t, fleet.TableLoading, "e1"))
	if counts, err := r.LoadingCounts(context.Background()); err != nil || len(counts) != 0 {
		t.Fatalf("counts after deleting every event: %v %v", counts, err)
	}
}

func TestTrailKeepsTheNewestPointsPerDriver(t *testing.T) {
	s := newStore(t, "")
	const TrailPoints = 200
	r := openReplica(t, "", s.e, Options{TrailMaxPoints: TrailPoints})
	const n = 2*TrailPoints + 50
	for from := uint64(1); from <= n; from += 97 {
		s.points(t, "d1", from, min(from+96, n))
	}
	s.points(t, "d2", 1, 5)
	waitLSN(t, r, s.durable(t))
	trail, err := r.Trail(context.Background(), "d1", TrailPoints)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != TrailPoints || trail[0].Seq != n || trail[TrailPoints-1].Seq != n-TrailPoints+1 {
		t.Fatalf("trail: %d points, newest %d, oldest %d", len(trail), trail[0].Seq, trail[len(trail)-1].Seq)
	}
	// Stored: blocks of a driver's points per applier page, cut once a
	// block's newest point is past the bound, and never more than the
	// bound in one block: between TrailPoints and 2*TrailPoints-1 for d1.
	stored := map[string]int{}
	// Late points (the test's device times go round every minute) are
	// counted with the in-order ones: those the bound keeps.
	rows, err := r.rdb.Query(`SELECT driver, sum(length(pts)) / ?1 FROM (SELECT driver, pts FROM trail UNION ALL
		SELECT driver, pts FROM trail_late WHERE n > (SELECT trail_n FROM positions p WHERE p.driver = trail_late.driver) - ?2)
		GROUP BY driver`, trailPointBytes, TrailPoints)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d string
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			t.Fatal(err)
		}
		stored[d] = n
	}
	rows.Close()
	if stored["d1"] < TrailPoints || stored["d1"] >= 2*TrailPoints+lateChunk || stored["d2"] != 5 {
		t.Fatalf("trail points stored: %v", stored)
	}
	// A delete of the driver's position drops its trail too.
	res, err := s.e.ResetDriver(context.Background(), "d2")
	if err != nil {
		t.Fatal(err)
	}
	waitLSN(t, r, res.LSN)
	if trail, _ := r.Trail(context.Background(), "d2", 0); len(trail) != 0 {
		t.Fatalf("trail of a deleted driver: %+v", trail)
	}
	if pos, _ := r.Positions(context.Background()); len(pos) != 1 || pos[0].Driver != "d1" || pos[0].Seq != n {
		t.Fatalf("positions: %+v", pos)
	}
}

func TestResumesFromThePersistedLSN(t *testing.T) {
	s := newStore(t, "")
	path := filepath.Join(t.TempDir(), "replica.db")
	r, err := Open(path, s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.points(t, "d1", 1, 100)
	s.put(t, fleet.TableAssignments, "r1", `{"driver":"d1","stops":[],"note":"x"}`)
	first := s.durable(t)
	waitLSN(t, r, first)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
	// Written while the replica is closed.
	s.points(t, "d1", 101, 110)
	s.del(t, fleet.TableAssignments, "r1")
	last := s.durable(t)

	r = openReplica(t, path, s.e)
	t.Logf("first %d last %d reopened at %d", first, last, r.LSN())
	if r.LSN() < first {
		t.Fatalf("reopened at lsn %d, had applied %d", r.LSN(), first)
	}
	waitLSN(t, r, last)
	if st := r.Stats(); st.Applied != last-first || st.Rebuilds != 0 {
		t.Fatalf("after reopen applied %d records (want %d: only the new ones), rebuilds %d", st.Applied, last-first, st.Rebuilds)
	}
	pos, _ := r.Positions(context.Background())
	asg, _ := r.Assignments(context.Background(), 0)
	trail, _ := r.Trail(context.Background(), "d1", 0)
	if len(pos) != 1 || pos[0].Seq != 110 || len(asg) != 0 || len(trail) != 110 {
		t.Fatalf("after reopen: positions %+v, assignments %+v, trail %d", pos, asg, len(trail))
	}
}

func TestRebuildsWhenTheLogWasTrimmed(t *testing.T) {
	s := newStore(t, "")
	path := filepath.Join(t.TempDir(), "replica.db")
	r, err := Open(path, s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.points(t, "d1", 1, 20)
	s.put(t, fleet.TableAssignments, "old", `{"driver":"d1","stops":[],"note":""}`)
	s.put(t, fleet.TableLoading, "e1", loadingJSON("D1", "S1", "arrived", 3))
	waitLSN(t, r, s.durable(t))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// While the replica is closed: changes, then retention drops the log.
	s.del(t, fleet.TableAssignments, "old")
	s.put(t, fleet.TableAssignments, "new", `{"driver":"d2","stops":[{"id":"x"}],"note":"n"}`)
	s.put(t, fleet.TableLoading, "e2", loadingJSON("D2", "S9", "loaded", 4))
	s.put(t, "notes", "k", `"v"`)
	s.points(t, "d1", 21, 30)
	s.points(t, "d2", 1, 2)
	last := s.durable(t)
	for {
		n, _, err := s.db.Trim(wal.Retention{MaxBytes: 1}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if err := s.e.ReadLog(0, 1, func(engine.Record) error { return nil }); !errors.Is(err, engine.ErrTrimmed) {
		t.Fatalf("the log should be trimmed: %v", err)
	}

	r = openReplica(t, path, s.e)
	waitLSN(t, r, last)
	ctx := context.Background()
	asg, _ := r.Assignments(ctx, 0)
	if len(asg) != 1 || asg[0].Route != "new" || asg[0].Driver != "d2" || asg[0].Stops != 1 || asg[0].Version != 1 {
		t.Fatalf("assignments after rebuild: %+v", asg)
	}
	evs, _ := r.LoadingEvents(ctx, fleet.LoadingFilter{})
	counts, _ := r.LoadingCounts(ctx)
	if len(evs) != 2 || evs[0].ID != "e2" || fmt.Sprint(counts) != "[{D1 arrived 1} {D2 loaded 1}]" {
		t.Fatalf("loading after rebuild: %+v %v", evs, counts)
	}
	pos, _ := r.Positions(ctx)
	if len(pos) != 2 || pos[0].Seq != 30 || pos[1].Seq != 2 {
		t.Fatalf("positions after rebuild: %+v", pos)
	}
	if trail, _ := r.Trail(ctx, "d1", 0); len(trail) != 1 || trail[0].Seq != 30 {
		t.Fatalf("trail after rebuild restarts at the latest point: %+v", trail)
	}
	if rows, _ := r.Rows(ctx, "notes", "", 0); len(rows) != 1 || string(rows[0].Value) != `"v"` {
		t.Fatalf("user rows after rebuild: %+v", rows)
	}
	if st := r.Stats(); st.Rebuilds != 1 || st.LSN != last {
		t.Fatalf("stats after rebuild: %+v", st)
	}
	// And it follows the log again.
	waitLSN(t, r, s.put(t, fleet.TableAssignments, "newer", `{"driver":"d1","stops":[],"note":""}`))
	if asg, _ := r.Assignments(ctx, 0); len(asg) != 2 || asg[0].Route != "newer" {
		t.Fatalf("assignments after the rebuild: %+v", asg)
	}
}

func TestRebuildsWhenAheadOfTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.db")
	s := newStore(t, "")
	r, err := Open(path, s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.points(t, "d1", 1, 10)
	waitLSN(t, r, s.durable(t))
	r.Close()

	// The same replica file over a younger store (say, restored from an
	// older backup): its rows are not this log's.
	s2 := newStore(t, "")
	s2.put(t, fleet.TableAssignments, "r1", `{"driver":"d9","stops":[],"note":""}`)
	r = openReplica(t, path, s2.e)
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Rebuilds == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := r.Stats(); st.Rebuilds != 1 || st.LSN != 1 {
		t.Fatalf("stats: %+v", st)
	}
	pos, _ := r.Positions(ctx)
	asg, _ := r.Assignments(ctx, 0)
	if len(pos) != 0 || len(asg) != 1 || asg[0].Driver != "d9" {
		t.Fatalf("after rebuild: %+v %+v", pos, asg)
	}
}

func TestWaitLSN(t *testing.T) {
	s := newStore(t, "")
	r, err := Open("", s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.WaitLSN(ctx, 0); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got <- r.WaitLSN(c, 3)
	}()
	select {
	case err := <-got:
		t.Fatalf("WaitLSN(3) returned before lsn 3 was written: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	for i := range 3 {
		s.put(t, "t", fmt.Sprint(i), `1`)
	}
	if err := <-got; err != nil || r.LSN() < 3 {
		t.Fatalf("WaitLSN(3): %v at lsn %d", err, r.LSN())
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := r.WaitLSN(short, 1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLSN past the log: %v", err)
	}
	go func() { got <- r.WaitLSN(ctx, 1000) }()
	r.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitLSN on close: %v", err)
	}
	if _, err := r.Positions(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("query after close: %v", err)
	}
}

// fakeSource is a log in memory whose reads can be held, to see the lag.
type fakeSource struct {
	mu      sync.Mutex
	recs    []engine.Record
	subs    []func([]engine.Record)
	gate    chan struct{} // when not nil, ReadLog waits for it
	durable atomic.Uint64
	reads   atomic.Int64 // ReadLog calls
	fail    atomic.Int32 // ReadLog fails this many more times with failErr
	failErr error
}

func (f *fakeSource) Subscribe(fn func([]engine.Record)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
}

func (f *fakeSource) DurableLSN() uint64 { return f.durable.Load() }

func (f *fakeSource) ReadLog(after uint64, limit int, fn func(engine.Record) error) error {
	f.reads.Add(1)
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if f.fail.Add(-1) >= 0 {
		return f.failErr
	}
	f.mu.Lock()
	recs := f.recs[min(after, uint64(len(f.recs))):min(f.durable.Load(), uint64(len(f.recs)))]
	f.mu.Unlock()
	for i, r := range recs {
		if limit > 0 && i >= limit {
			break
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// commit appends records and publishes them, as the committer does.
func (f *fakeSource) commit(at time.Time, recs ...engine.Record) {
	f.mu.Lock()
	for i := range recs {
		recs[i].LSN = uint64(len(f.recs) + 1)
		recs[i].CommittedAt = at
		f.recs = append(f.recs, recs[i])
	}
	f.durable.Store(uint64(len(f.recs)))
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn(recs)
	}
}

func TestLagMoves(t *testing.T) {
	f := &fakeSource{}
	r := openReplica(t, "", f)
	if n, age := r.Lag(); n != 0 || age != 0 {
		t.Fatalf("lag of an empty log: %d %v", n, age)
	}
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	at := time.Now().Add(-2 * time.Second)
	f.commit(at, engine.Record{Table: "t", Key: "a", Op: engine.OpPut, Value: []byte(`1`), Version: 1})
	f.commit(at.Add(time.Second), engine.Record{Table: "t", Key: "b", Op: engine.OpPut, Value: []byte(`2`), Version: 1},
		engine.Record{Table: "t", Key: "c", Op: engine.OpPut, Value: []byte(`3`), Version: 1})
	n, age := r.Lag()
	if n != 3 || age < 2*time.Second || age > time.Minute {
		t.Fatalf("lag while the applier is held: %d records, %v", n, age)
	}
	if st := r.Stats(); st.LagRecords != 3 || st.LagAge < 2*time.Second {
		t.Fatalf("stats lag: %+v", st)
	}
	f.mu.Lock()
	f.gate = nil
	f.mu.Unlock()
	close(gate)
	waitLSN(t, r, 3)
	if n, age := r.Lag(); n != 0 || age != 0 {
		t.Fatalf("lag after catching up: %d %v", n, age)
	}
}

func TestSkipsValuesItCannotRead(t *testing.T) {
	f := &fakeSource{}
	r := openReplica(t, "", f)
	now := time.Now()
	f.commit(now,
		engine.Record{Table: fleet.TablePositions, Key: "d1", Op: engine.OpPut, Value: []byte(`not json`), Version: 1},
		engine.Record{Table: fleet.TablePositions, Key: "d1", Op: engine.OpPut, Value: []byte(`{"seq":2}`), Version: 2},
		engine.Record{Table: fleet.TableLoading, Key: "e", Op: engine.OpPut, Value: []byte(`{"pallets":"many"}`), Version: 1},
		engine.Record{Table: fleet.TablePositions, Key: "d1", Op: engine.OpPut, Value: []byte(`{"seq":3,"lat":1,"lng":2,"ts":"bad"}`), Version: 3},
	)
	waitLSN(t, r, 4)
	pos, err := r.Positions(context.Background())
	if err != nil || len(pos) != 1 || pos[0].Seq != 3 || pos[0].Lng != 2 || !pos[0].TS.IsZero() {
		t.Fatalf("positions: %+v %v", pos, err)
	}
	if st := r.Stats(); st.Skipped != 3 || st.LSN != 4 {
		t.Fatalf("stats: %+v", st)
	}
}

// Readers see whole pages while the applier writes.
func TestReadersDuringAFlood(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, filepath.Join(t.TempDir(), "r.db"), s.e)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				pos, err := r.Positions(ctx)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				for _, p := range pos {
					tr, err := r.Trail(ctx, p.Driver, 0)
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						errs <- err
						return
					}
					// Position and trail are written in one transaction,
					// but read in two: the trail may only be newer.
					if len(tr) == 0 || tr[0].Seq < p.Seq {
						errs <- fmt.Errorf("trail of %s %+v behind its position %+v", p.Driver, tr, p)
						return
					}
				}
				reads.Add(1)
				time.Sleep(time.Millisecond) // a dashboard, not a tight loop
			}
		}()
	}
	for i := uint64(0); i < 5; i++ {
		for d := range 10 {
			s.points(t, fmt.Sprintf("d%d", d), i*50+1, i*50+50)
		}
	}
	waitLSN(t, r, s.durable(t))
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reads.Load() == 0 {
		t.Fatal("no read completed")
	}
	pos, _ := r.Positions(context.Background())
	if len(pos) != 10 || pos[0].Seq != 250 {
		t.Fatalf("positions: %+v", pos)
	}
}

// A replica of another schema version is dropped and rebuilt from the log.
func TestOtherSchemaVersionIsRebuilt(t *testing.T) {
	s := newStore(t, "")
	path := filepath.Join(t.TempDir(), "replica.db")
	r, err := Open(path, s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitLSN(t, r, s.put(t, fleet.TableAssignments, "r1", `{"driver":"d1","stops":[],"note":""}`))
	r.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE meta SET value = 999 WHERE name = ?`, metaSchema); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r = openReplica(t, path, s.e)
	waitLSN(t, r, 1)
	if asg, err := r.Assignments(context.Background(), 0); err != nil || len(asg) != 1 || asg[0].Route != "r1" {
		t.Fatalf("after the schema change: %+v %v", asg, err)
	}
	if st := r.Stats(); st.Applied != 1 {
		t.Fatalf("the log was not applied again: %+v", st)
	}
}

// A failed read is retried (at the poll), and nothing is applied twice.
func TestRetriesAfterAReadError(t *testing.T) {
	f := &fakeSource{failErr: errors.New("disk hiccup")}
	f.fail.Store(2)
	r := openReplica(t, "", f)
	f.commit(time.Now(), engine.Record{Table: "t", Key: "a", Op: engine.OpPut, Value: []byte(`1`), Version: 1})
	waitLSN(t, r, 1)
	if st := r.Stats(); st.Applied != 1 || st.LSN != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if rows, err := r.Rows(context.Background(), "t", "", 0); err != nil || len(rows) != 1 {
		t.Fatalf("rows: %+v %v", rows, err)
	}
}

// Trimmed past the replica with no snapshot to rebuild from: the replica
// stays where it is (and says so in the log) rather than skip records.
func TestTrimmedWithoutSnapshotsStays(t *testing.T) {
	f := &fakeSource{failErr: fmt.Errorf("read: %w", wal.ErrTrimmed)}
	f.fail.Store(1 << 30)
	r := openReplica(t, "", f)
	f.commit(time.Now(), engine.Record{Table: "t", Key: "a", Op: engine.OpPut, Value: []byte(`1`), Version: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.WaitLSN(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLSN: %v", err)
	}
	if st := r.Stats(); st.LSN != 0 || st.Rebuilds != 0 || st.LagRecords != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// A source that announces records it cannot read yet is asked again at the
// next notice or poll, not in a busy loop.
func TestNoSpinOnAnEmptyRead(t *testing.T) {
	f := &fakeSource{}
	r := openReplica(t, "", f)
	f.durable.Store(5) // announced, not readable
	f.mu.Lock()
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn([]engine.Record{{LSN: 5}})
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.reads.Load(); n > 10 {
		t.Fatalf("%d reads in 200 ms: the applier spins", n)
	}
	if r.LSN() != 0 {
		t.Fatalf("applied %d of nothing", r.LSN())
	}
}

// errorRecords is a slog.Handler that counts error records.
type errorRecords struct{ n atomic.Int64 }

func (h *errorRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorRecords) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h *errorRecords) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *errorRecords) WithGroup(string) slog.Handler                { return h }

// TestCloseWhileStartingIsNoFailure: a replica closed before its applier
// has prepared its statements (a server shut down right after it started)
// logs no error: a shutdown is no failure.
func TestCloseWhileStartingIsNoFailure(t *testing.T) {
	s := newStore(t, "")
	errs := &errorRecords{}
	dir := t.TempDir()
	for i := range 20 {
		r, err := Open(filepath.Join(dir, fmt.Sprintf("r%d.db", i)), s.e, slog.New(errs))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := errs.n.Load(); n != 0 {
		t.Fatalf("%d error records logged by replicas closed while starting", n)
	}
}
