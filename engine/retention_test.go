package engine

import (
	"fmt"
	"testing"
	"time"

	"routehound/wal"
)

// A retention step takes the writer's turn, so it deletes no more than
// twice the derived cap, however far behind retention is, and steps follow
// each other until the log is back within its bound.
func TestRetentionStepsAreBoundedByTheCap(t *testing.T) {
	e, db := builtEngine(t, func(cfg *Config) {
		cfg.FixedBatchCap = 64
		cfg.Retention = Retention{MaxBytes: 1} // every record is past the bound
	})
	// 3,000 records, one per batch (so one log entry each: a batch's
	// records are one run, and a step is bounded in entries), committed
	// without the committer's turn (the steps below are called directly).
	for i := 0; i < 3000; i++ {
		b := db.Begin()
		for j := 0; j < 1; j++ {
			if _, err := b.Put("t", fmt.Sprintf("k%d-%d", i, j), []byte(`{"v":1}`), "tables", wal.AnyVersion); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var steps []uint64
	for i := 0; i < 100 && e.totals.Trimmed.Load() < 3000; i++ {
		before := e.totals.Trimmed.Load()
		again := e.maintain()
		steps = append(steps, e.totals.Trimmed.Load()-before)
		if again != 0 && e.totals.Trimmed.Load() < 3000 {
			t.Fatalf("step %d: come back in %v with %d records still past the bound", i, again, 3000-e.totals.Trimmed.Load())
		}
	}
	if again := e.maintain(); again != time.Second {
		t.Fatalf("nothing left to trim: come back in %v, want 1s", again)
	}
	if got := e.totals.Trimmed.Load(); got != 3000 {
		t.Fatalf("trimmed %d records, want 3000 (steps %v)", got, steps)
	}
	if steps[0] != 128 {
		t.Fatalf("first step trimmed %d, want twice the cap, 128 (steps %v)", steps[0], steps)
	}
	for i, n := range steps {
		if n > 128 {
			t.Fatalf("step %d trimmed %d records, past twice the cap (steps %v)", i, n, steps)
		}
	}
}

// The chores take the writer's turn, so they wait while a sync write at
// the target is queued or an fsync was deferred for one.
func TestChoresWaitForASyncWrite(t *testing.T) {
	e, db := builtEngine(t, func(cfg *Config) { cfg.Retention = Retention{MaxBytes: 1} })
	b := db.Begin()
	for j := 0; j < 10; j++ {
		if _, err := b.Put("t", fmt.Sprintf("k%d", j), []byte(`{"v":1}`), "tables", wal.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	due := e.now().Add(-time.Second)
	it := e.keyedItem(LaneDispatch, Write{Table: "assignments", Key: "r1", Value: []byte(`{}`), IfVersion: AnyVersion})
	if err := e.enqueue(e.lanes[LaneDispatch], it); err != nil {
		t.Fatal(err)
	}
	if next := e.maybeMaintain(&pending{}, due); next != due || e.totals.Trimmed.Load() != 0 {
		t.Fatalf("chores ran with a dispatch write waiting: next %v, trimmed %d", next, e.totals.Trimmed.Load())
	}
	e.lanes[LaneDispatch].pop()
	if next := e.maybeMaintain(&pending{deferred: true}, due); next != due || e.totals.Trimmed.Load() != 0 {
		t.Fatalf("chores ran during a deferred fsync: next %v, trimmed %d", next, e.totals.Trimmed.Load())
	}
	if next := e.maybeMaintain(&pending{}, due); next == due || e.totals.Trimmed.Load() != 10 {
		t.Fatalf("chores did not run when due: next %v, trimmed %d", next, e.totals.Trimmed.Load())
	}
}

// A batch's records are one log entry (a run, wal/record.go) and a step is
// bounded in entries: 30 batches of 100 records go in one step, and the
// ledger counts records.
func TestRetentionStepTrimsRunsWhole(t *testing.T) {
	e, db := builtEngine(t, func(cfg *Config) {
		cfg.FixedBatchCap = 64
		cfg.Retention = Retention{MaxBytes: 1}
	})
	for i := 0; i < 30; i++ {
		b := db.Begin()
		for j := 0; j < 100; j++ {
			if _, err := b.Put("t", fmt.Sprintf("k%d-%d", i, j), []byte(`{"v":1}`), "tables", wal.AnyVersion); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if again := e.maintain(); again == 0 {
		t.Fatalf("one step left work for the next turn")
	}
	if got := e.totals.Trimmed.Load(); got != 3000 || db.FirstLSN() != 3001 {
		t.Fatalf("trimmed %d records, first %d; want 3000 and 3001", got, db.FirstLSN())
	}
}
