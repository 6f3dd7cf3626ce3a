package fleetevents

import (
	"context"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/wal"
)

// standbyOf builds a standby engine (no consumer) and applies recs to it.
func standbyOf(t *testing.T, recs []engine.Record) (*wal.DB, *engine.Engine) {
	t.Helper()
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.MinFreeBytes = 0
	e, err := engine.New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.SetNotPrimary("standby")
	if _, err := e.ApplyFollowed(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	return db, e
}

// A standby holds a prefix of the primary's last derived batch
// (the primary's uplink ships record by record; it was killed mid-batch):
// the events of the batch, not its states and cursor. Promoted, its
// consumer derives the same events again: the log holds each twice,
// although DerivedWrite promises all or none; an event stored with the
// same value is not written again (engine/keyed.go).
func TestPromotedStandbyWithATornDerivedWrite(t *testing.T) {
	submitted = map[string]uint64{}
	n := open(t, t.TempDir())
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	manyInside(t, n, 10, t0)
	var all []engine.Record
	if err := n.e.ReadLog(0, 0, func(r engine.Record) error { all = append(all, r); return nil }); err != nil {
		t.Fatal(err)
	}
	n.close(t)
	// The last derived batch: from its first fleet_events record to the cursor.
	firstEv := -1
	for i, r := range all {
		if r.Table == fleet.TableFleetEvents && firstEv < 0 {
			firstEv = i
		}
	}
	lastEv := firstEv
	for lastEv+1 < len(all) && all[lastEv+1].Table == fleet.TableFleetEvents {
		lastEv++
	}
	t.Logf("log: %d records; events at %d..%d; then %s/%s", len(all), all[firstEv].LSN, all[lastEv].LSN, all[lastEv+1].Table, all[lastEv+1].Key)
	// Torn after the events.
	sdb, se := standbyOf(t, all[:lastEv+1])
	se.Promote()
	c, err := Start(se, Config{StopRadiusM: 75, Checkpoint: checkpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sn := &node{db: sdb, e: se, c: c}
	defer sn.close(t)
	sn.settle(t)
	keys := map[string]int{}
	for _, l := range eventsInLog(t, se) {
		keys[l.Key]++
	}
	dup := 0
	for _, n := range keys {
		if n > 1 {
			dup++
		}
	}
	if dup > 0 {
		t.Errorf("BUG: %d of %d events are in the promoted standby's log twice", dup, len(keys))
	}
}

// The clean case: a standby with the whole log, promoted between
// two parts of a split record, finishes it without duplicates.
func TestPromotedStandbyBetweenParts(t *testing.T) {
	submitted = map[string]uint64{}
	const drivers = 5000
	n := open(t, t.TempDir())
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	manyInside(t, n, drivers, t0)
	stopped := make(chan struct{}, 1)
	setAfterPart(func(c *Consumer) {
		c.cancel()
		select {
		case stopped <- struct{}{}:
		default:
		}
	})
	defer func() { setAfterPart(nil) }()
	if _, err := n.e.DeleteFence(context.Background(), "depot"); err != nil {
		t.Fatal(err)
	}
	<-stopped
	n.c.Close()
	setAfterPart(nil)
	cur := storedCursor(t, n.e)
	var all []engine.Record
	if err := n.e.ReadLog(0, 0, func(r engine.Record) error { all = append(all, r); return nil }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.e.Close(ctx)
	n.db.Close()
	t.Logf("primary stopped at cursor %+v, %d records", cur, len(all))
	sdb, se := standbyOf(t, all)
	se.Promote()
	c, err := Start(se, Config{StopRadiusM: 75, Checkpoint: checkpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sn := &node{db: sdb, e: se, c: c}
	defer sn.close(t)
	sn.settle(t)
	if got := fenceEvents(t, se)[FenceExit+"/deleted"]; got != drivers {
		t.Fatalf("%d exits, want %d", got, drivers)
	}
	if c := storedCursor(t, se); c.Part != 0 {
		t.Fatalf("cursor %+v", c)
	}
}
