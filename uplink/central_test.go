package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
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
