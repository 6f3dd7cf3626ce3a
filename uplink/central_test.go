package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"routehound/engine"
	"routehound/internal/natstest"
)

// The central view's consumer subjects on a stream: every depot's under
// routehound.> (the stream's own subjects when narrower), or the depots
// configured that the stream covers.
func TestCentralFilters(t *testing.T) {
	all := &Central{}
	some := &Central{cfg: CentralConfig{Depots: []string{"north", "south"}}}
	for _, c := range []struct {
		c        *Central
		subjects []string
		want     []string
	}{
		{all, []string{"routehound.>"}, []string{"routehound.>"}},
		{all, []string{">"}, []string{"routehound.>"}},
		{all, []string{"routehound.north.>", "routehound.east.>"}, []string{"routehound.north.>", "routehound.east.>"}},
		{all, []string{"other.>"}, nil},
		{some, []string{"routehound.>"}, []string{"routehound.north.>", "routehound.south.>"}},
		{some, []string{"routehound.south.>"}, []string{"routehound.south.>"}},
		{some, []string{"routehound.east.>"}, nil},
	} {
		if got := c.c.filters(c.subjects); !slices.Equal(got, c.want) {
			t.Errorf("depots %v, stream subjects %q: filters %q, want %q", c.c.cfg.Depots, c.subjects, got, c.want)
		}
	}
}

// Where a stream is read on: following every depot, after the stream's
// mark (written only while every depot is followed), from its start
// without one (a view widened from a list of depots: the depots it did not
// follow have records below the others' cursors); following some, after
// the lowest cursor of those it covers, and from its start when one of
// them has no cursor there, or when the stream was created again since.
func TestCentralResumeSeq(t *testing.T) {
	created := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	pos := map[string]DepotPosition{
		"north": {Depot: "north", Stream: "RH", StreamCreated: created, StreamSeq: 90},
		"east":  {Depot: "east", Stream: "RH", StreamCreated: created, StreamSeq: 100},
		"south": {Depot: "south", Stream: "RH_SOUTH", StreamCreated: created, StreamSeq: 7},
	}
	marks := map[string]streamMark{
		"RH":       {Stream: "RH", Created: created, Seq: 104},
		"RH_SOUTH": {Stream: "RH_SOUTH", Created: created, Seq: 7},
	}
	shared, own := []string{"routehound.north.>", "routehound.east.>", "routehound.west.>"}, []string{"routehound.south.>"}
	for _, c := range []struct {
		depots   []string
		marks    map[string]streamMark
		stream   string
		subjects []string
		want     uint64
	}{
		{nil, marks, "RH", shared, 104},
		{nil, marks, "RH_SOUTH", own, 7},
		{nil, marks, "NEW", []string{"routehound.x.>"}, 0},
		{nil, nil, "RH", shared, 0}, // widened from a list: read RH again
		{[]string{"north", "east", "south"}, marks, "RH", shared, 90},
		{[]string{"east", "south"}, marks, "RH", shared, 100},
		{[]string{"east", "south"}, marks, "RH_SOUTH", own, 7},
		{[]string{"north", "west"}, marks, "RH", shared, 0}, // west added since: read RH again
	} {
		cv := &Central{cfg: CentralConfig{Depots: c.depots}, pos: pos, marks: c.marks, log: slog.New(slog.DiscardHandler)}
		if got := cv.resumeSeq(c.stream, created, c.subjects); got != c.want {
			t.Errorf("depots %v, stream %s: resume after seq %d, want %d", c.depots, c.stream, got, c.want)
		}
	}
	// RH deleted and created again: read from its start.
	for _, depots := range [][]string{nil, {"north", "east"}} {
		cv := &Central{cfg: CentralConfig{Depots: depots}, pos: pos, marks: marks, log: slog.New(slog.DiscardHandler)}
		if got := cv.resumeSeq("RH", created.Add(time.Hour), shared); got != 0 {
			t.Errorf("depots %v, a stream created again: resume after seq %d, want 0", depots, got)
		}
	}
}

// fakeMsg is a stream message for readShipped.
type fakeMsg struct {
	jetstream.Msg
	subject string
	data    []byte
}

func (m fakeMsg) Subject() string { return m.subject }
func (m fakeMsg) Data() []byte    { return m.data }
func (m fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 7, Consumer: 1}, Consumer: "c_1"}, nil
}

// Following every depot, the depot is what the subject says: a token that
// is no depot name (CheckDepot) is read past as no record, not applied
// under keys no depot can own.
func TestReadShippedChecksTheDepot(t *testing.T) {
	rec := func(depot string) []byte {
		b, err := json.Marshal(Message{LSN: 1, Depot: depot, Table: "notes", Key: "k", Op: "put", Value: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r, err := readShipped(fakeMsg{subject: "routehound.north.notes", data: rec("north")})
	if err != nil || r.msg == nil || r.msg.Depot != "north" || r.seq != 7 || r.consumer != "c_1" {
		t.Fatalf("a record of north: %+v, %v", r, err)
	}
	for _, depot := range []string{"nörth", "a$b", "x+y"} {
		if r, err := readShipped(fakeMsg{subject: "routehound." + depot + ".notes", data: rec(depot)}); err == nil || r.msg != nil {
			t.Errorf("a record of depot %q: %+v, %v; want it read past", depot, r, err)
		}
	}
}

// An apply that answered an error may be in the store all the same (a
// failed sync, the store reopened): the view reads its cursors again from
// the store before the next apply, so its positions and counts are what
// the store holds, and the engine skips the records the stored cursor
// covers.
func TestCentralApplyReloadsCursorsAfterAFailedApply(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	c, err := OpenCentral(CentralConfig{URL: "nats://127.0.0.1:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.e = e
	e.SetCentral("central")
	if err := c.loadPositions(); err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rec := func(lsn uint64) shipped {
		return shipped{seq: lsn, msg: &Message{LSN: lsn, Depot: "north", Table: "notes", Key: fmt.Sprint("k", lsn), Op: "put", Value: json.RawMessage(`{}`)}}
	}
	ctx := context.Background()
	if err := c.apply(ctx, "RH", created, []shipped{rec(1), rec(2), rec(3)}, 3); err != nil {
		t.Fatal(err)
	}
	// An apply of 4-6 that "failed" yet reached the store, as the view
	// would have written it.
	cur, err := json.Marshal(DepotPosition{Depot: "north", Stream: "RH", StreamCreated: created, StreamSeq: 6, LSN: 6, Records: 6})
	if err != nil {
		t.Fatal(err)
	}
	var ws []engine.CentralWrite
	for lsn := uint64(4); lsn <= 6; lsn++ {
		ws = append(ws, engine.CentralWrite{Table: "notes", Key: fmt.Sprint("north/k", lsn), Value: []byte(`{}`), Depot: "north", LSN: lsn})
	}
	ws = append(ws, engine.CentralWrite{Table: CentralTable, Key: "north", Value: cur, Depot: "north", LSN: 6})
	if _, err := e.ApplyCentral(ctx, ws); err != nil {
		t.Fatal(err)
	}
	c.stale.Store(true) // what apply does when ApplyCentral answers an error
	applied := c.applied.Load()

	// The stream read again from the last position the view kept.
	if err := c.apply(ctx, "RH", created, []shipped{rec(4), rec(5)}, 5); err != nil {
		t.Fatal(err)
	}
	if p := c.Status().Depots; len(p) != 1 || p[0].LSN != 6 || p[0].Records != 6 {
		t.Errorf("after the retry, north's position %+v; want the store's (lsn 6, 6 records)", p)
	}
	if err := c.apply(ctx, "RH", created, []shipped{rec(6), rec(7)}, 7); err != nil {
		t.Fatal(err)
	}
	if p := c.Status().Depots; len(p) != 1 || p[0].LSN != 7 || p[0].Records != 7 || p[0].Missing != 0 {
		t.Errorf("north's position %+v; want lsn 7, 7 records, none missing", p)
	}
	if n := c.applied.Load() - applied; n != 1 {
		t.Errorf("the view counts %d records applied since the failed apply, want 1 (lsn 7)", n)
	}
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	for lsn := 1; lsn <= 7; lsn++ {
		st, ok, err := snap.Get("notes", fmt.Sprint("north/k", lsn))
		if err != nil || !ok || st.Version != 1 {
			t.Errorf("north/k%d: version %d (found %v, %v); want 1", lsn, st.Version, ok, err)
		}
	}
}

// centralFixture is a NATS server with a stream RH of every depot's
// subjects, and a central view's engine.
type centralFixture struct {
	t   *testing.T
	url string
	js  jetstream.JetStream
	e   *engine.Engine
}

func newCentralFixture(t *testing.T) *centralFixture {
	t.Helper()
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "RH", Subjects: []string{"routehound.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	return &centralFixture{t: t, url: ns.URL(), js: js, e: openEngine(t, t.TempDir(), engine.DefaultConfig().Retention)}
}

// ship publishes a depot's record as its uplink would.
func (f *centralFixture) ship(depot string, lsn uint64, table, key, value string) {
	f.t.Helper()
	b, err := json.Marshal(Message{LSN: lsn, Depot: depot, Table: table, Key: key, Op: "put", Value: json.RawMessage(value), Version: 1,
		Actor: "tables", CommittedAt: time.Now().UTC()})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.js.Publish(context.Background(), Subject(depot, table), b, jetstream.WithMsgID(MsgID(depot, lsn))); err != nil {
		f.t.Fatalf("publish %s lsn %d: %v", depot, lsn, err)
	}
}

// start starts a central view following every depot of RH.
func (f *centralFixture) start(applyFn func(context.Context, []engine.CentralWrite) (uint64, error)) *Central {
	f.t.Helper()
	c, err := OpenCentral(CentralConfig{URL: f.url, Streams: []string{"RH"}, MaxBackoff: 50 * time.Millisecond, Discover: 200 * time.Millisecond}, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	c.applyFn = applyFn
	if err := c.Start(f.e); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Close)
	return c
}

// depot is a depot's position in the view's status.
func depotOf(c *Central, depot string) DepotPosition {
	for _, p := range c.Status().Depots {
		if p.Depot == depot {
			return p
		}
	}
	return DepotPosition{}
}

// notes answers the keys of the view's table notes with their versions.
func (f *centralFixture) notes() map[string]uint64 {
	f.t.Helper()
	snap, err := f.e.Snapshot()
	if err != nil {
		f.t.Fatal(err)
	}
	defer snap.Close()
	out := map[string]uint64{}
	if _, err := snap.Scan("notes", "", 0, func(k string, st engine.State) error {
		out[k] = st.Version
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// A depot record the view's engine can never apply (a table no writer may
// name, a key with a control character, a key past what the store holds)
// is skipped, logged and counted, and its cursor moves past it: the
// depot's later records and the other depot's are applied, the count is in
// the status, the metric and the stored cursor (a restarted view keeps it,
// re-applies nothing and goes on).
func TestCentralRejectedRecordDoesNotBlockItsDepot(t *testing.T) {
	f := newCentralFixture(t)
	f.ship("north", 1, "notes", "k1", `{"v":1}`)
	f.ship("north", 2, "bad!table", "k2", `{"v":2}`)
	f.ship("south", 1, "notes", "k1", `{"v":1}`)
	f.ship("north", 3, "notes", "k\u00013", `{"v":3}`)
	f.ship("north", 4, "notes", strings.Repeat("k", 70000), `{"v":4}`)
	f.ship("south", 2, "notes", "k2", `{"v":2}`)
	f.ship("north", 5, "notes", "k5", `{"v":5}`)
	c := f.start(nil)
	waitFor(t, "north's lsn 5 and south's lsn 2", func() bool { return depotOf(c, "north").LSN == 5 && depotOf(c, "south").LSN == 2 })
	if err := f.e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"north/k1": 1, "north/k5": 1, "south/k1": 1, "south/k2": 1}
	if got := f.notes(); !maps.Equal(got, want) {
		t.Fatalf("notes: %v; want %v", got, want)
	}
	n := depotOf(c, "north")
	if n.Rejected != 3 || n.Records != 2 || n.Missing != 0 || n.LastRejected == nil || n.LastRejected.LSN != 4 || n.LastRejected.Table != "notes" ||
		!strings.Contains(n.LastRejected.Error, "key") || len(n.LastRejected.Key) > 210 {
		t.Fatalf("north's position %+v (last rejected %+v); want 3 rejected (the last lsn 4), 2 records applied", n, n.LastRejected)
	}
	if s := depotOf(c, "south"); s.Rejected != 0 || s.Records != 2 {
		t.Fatalf("south's position %+v", s)
	}
	if s := c.Status(); !strings.Contains(s.LastError, "rejected") {
		t.Errorf("the view's last error %q; want the rejection", s.LastError)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector())
	if got := gathered(t, reg, "routehound_central_depot_rejected_records_total", "north"); got != 3 {
		t.Errorf("routehound_central_depot_rejected_records_total{depot=north} = %v, want 3", got)
	}
	if got := gathered(t, reg, "routehound_central_depot_rejected_records_total", "south"); got != 0 {
		t.Errorf("routehound_central_depot_rejected_records_total{depot=south} = %v, want 0", got)
	}

	// A restarted view reads the count back with the cursor, applies
	// nothing twice and goes on past the rejected records.
	c.Close()
	f.ship("north", 6, "notes", "k6", `{"v":6}`)
	c = f.start(nil)
	waitFor(t, "north's lsn 6 after the restart", func() bool { return depotOf(c, "north").LSN == 6 })
	if err := f.e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	want["north/k6"] = 1
	if got := f.notes(); !maps.Equal(got, want) {
		t.Fatalf("notes after the restart: %v; want %v", got, want)
	}
	if n := depotOf(c, "north"); n.Rejected != 3 || n.Records != 3 {
		t.Fatalf("north's position after the restart %+v; want 3 rejected, 3 records", n)
	}
}

// An apply that fails for a reason a retry may cure (here a full lane, then
// a failed store) is retried: the session ends, the next reads the stream
// again from the cursors, and every record of both depots is applied
// once, none skipped or counted as rejected.
func TestCentralRetriesATransientApplyError(t *testing.T) {
	f := newCentralFixture(t)
	for i := uint64(1); i <= 30; i++ {
		f.ship("north", i, "notes", fmt.Sprint("k", i), `{"v":1}`)
		if i <= 10 {
			f.ship("south", i, "notes", fmt.Sprint("k", i), `{"v":1}`)
		}
	}
	var calls, failed atomic.Int64
	c := f.start(func(ctx context.Context, ws []engine.CentralWrite) (uint64, error) {
		switch calls.Add(1) {
		case 1, 2:
			failed.Add(1)
			return 0, &engine.LaneFullError{Lane: engine.LaneEvents}
		case 3:
			failed.Add(1)
			return 0, fmt.Errorf("the store failed: %w", engine.ErrUnavailable)
		}
		return f.e.ApplyCentral(ctx, ws)
	})
	waitFor(t, "north's lsn 30 and south's lsn 10", func() bool { return depotOf(c, "north").LSN == 30 && depotOf(c, "south").LSN == 10 })
	if err := f.e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.notes()
	for d, n := range map[string]int{"north": 30, "south": 10} {
		for i := 1; i <= n; i++ {
			if v := got[fmt.Sprintf("%s/k%d", d, i)]; v != 1 {
				t.Errorf("%s/k%d: version %d, want 1 (applied once)", d, i, v)
			}
		}
		if p := depotOf(c, d); p.Records != uint64(n) || p.Rejected != 0 || p.Missing != 0 {
			t.Errorf("%s's position %+v; want %d records, none rejected or missing", d, p, n)
		}
	}
	if len(got) != 40 {
		t.Errorf("notes holds %d keys, want 40", len(got))
	}
	if failed.Load() != 3 {
		t.Fatalf("%d applies failed, want 3", failed.Load())
	}
	if s := c.Status(); len(s.Streams) != 1 || s.Streams[0].Sessions < 2 || !strings.Contains(s.LastError, "the store failed") {
		t.Errorf("status %+v; want the stream read again in a later session, the last error told", s)
	}
}

// gathered is the value of the metric name with label depot.
func gathered(t *testing.T, reg *prometheus.Registry, name, depot string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "depot" && l.GetValue() == depot {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{depot=%q}", name, depot)
	return 0
}
