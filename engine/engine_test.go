package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"routehound/fleet"
	poll "routehound/internal/testkit/wait"
	"routehound/wal"
)

func newEngine(t *testing.T, mutate func(*Config)) (*Engine, *wal.DB) {
	t.Helper()
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	return e, db
}

func pts(from, to uint64) []Point {
	var out []Point
	for s := from; s <= to; s++ {
		out = append(out, Point{Seq: s, Value: []byte(fmt.Sprintf(`{"seq":%d}`, s))})
	}
	return out
}

// waitFor polls cond until it holds, for at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Eventually(t, 5*time.Second, what, cond)
}

// builtEngine is an engine over a new store without its committer or
// controller (build): a test calls the steps itself (maintain, step,
// enqueue). The store closes with the test.
func builtEngine(t *testing.T, mutate func(*Config)) (*Engine, *wal.DB) {
	t.Helper()
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := build(cfg, db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, db
}

func logOf(t *testing.T, e *Engine) []Record {
	t.Helper()
	// An answer may come from the journal before the log's fsync
	// publishes the record (pipeline.go): read once all is published.
	waitFor(t, "every commit published", func() bool { return e.DurableLSN() >= e.store().LastLSN() })
	var recs []Record
	if err := e.ReadLog(0, 0, func(r Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestDriverSeqDedupAndDurableSeq(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	ack, err := e.SubmitPoints(ctx, "d1", pts(1, 3))
	if err != nil || ack.Accepted != 3 || ack.Duplicates != 0 {
		t.Fatalf("first batch: %+v %v", ack, err)
	}
	// A retry of the same batch, plus one new point, out of order.
	ack, err = e.SubmitPoints(ctx, "d1", append(pts(4, 4), pts(1, 3)...))
	if err != nil || ack.Accepted != 1 || ack.Duplicates != 3 {
		t.Fatalf("retry: %+v %v", ack, err)
	}
	// Duplicates inside one batch count once.
	ack, _ = e.SubmitPoints(ctx, "d1", append(pts(5, 5), pts(5, 5)...))
	if ack.Accepted != 1 || ack.Duplicates != 1 {
		t.Fatalf("in-batch duplicate: %+v", ack)
	}
	waitFor(t, "durable seq 5", func() bool { s, _ := e.DriverDurableSeq("d1"); return s == 5 })
	var seqs []string
	for _, r := range logOf(t, e) {
		seqs = append(seqs, string(r.Value))
	}
	if fmt.Sprint(seqs) != `[{"seq":1} {"seq":2} {"seq":3} {"seq":4} {"seq":5}]` {
		t.Fatalf("log: %v", seqs)
	}
}

func TestDriverSeqSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db, _ := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	e, _ := New(cfg, db, nil)
	if _, err := e.SubmitPoints(context.Background(), "d1", pts(1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(context.Background()); err != nil { // drains and syncs
		t.Fatal(err)
	}
	db.Close()

	db, _ = wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	defer db.Close()
	e, _ = New(cfg, db, nil)
	defer e.Close(context.Background())
	ack, err := e.SubmitPoints(context.Background(), "d1", pts(8, 12))
	if err != nil || ack.Accepted != 2 || ack.Duplicates != 3 || ack.DurableSeq != 10 {
		t.Fatalf("after restart: %+v %v", ack, err)
	}
}

func TestPutVersionsConflictsAndIdempotency(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	w := Write{Table: fleet.TableAssignments, Key: "r1", Value: []byte(`{"note":"a"}`), IfVersion: wal.AnyVersion,
		IdemKey: "k1", Fingerprint: Fingerprint([]byte("a"))}
	r1, err := e.put(ctx, LaneDispatch, w)
	if err != nil || !r1.Created || r1.Version != 1 || r1.LSN != 1 {
		t.Fatalf("first put: %+v %v", r1, err)
	}
	r2, err := e.put(ctx, LaneDispatch, w)
	if err != nil || !r2.Replayed || r2.LSN != r1.LSN || !r2.CommittedAt.Equal(r1.CommittedAt) || !r2.Created {
		t.Fatalf("retry: %+v %v", r2, err)
	}
	w2 := w
	w2.Fingerprint = Fingerprint([]byte("b"))
	if _, err := e.put(ctx, LaneDispatch, w2); !errors.Is(err, ErrIdempotencyMismatch) {
		t.Fatalf("reused key with another body: %v", err)
	}
	w3 := Write{Table: fleet.TableAssignments, Key: "r1", Value: []byte(`{"note":"b"}`), IfVersion: 1, IdemKey: "k2"}
	r3, err := e.put(ctx, LaneDispatch, w3)
	if err != nil || r3.Version != 2 || r3.Created {
		t.Fatalf("if-match 1: %+v %v", r3, err)
	}
	w4 := Write{Table: fleet.TableAssignments, Key: "r1", Value: []byte(`{"note":"c"}`), IfVersion: 1, IdemKey: "k3"}
	if _, err := e.put(ctx, LaneDispatch, w4); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale if-match: %v", err)
	}
	if _, err := e.put(ctx, LaneTables, Write{Table: "t", Key: "nope", Delete: true, IfVersion: wal.AnyVersion}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	if n := len(logOf(t, e)); n != 2 {
		t.Fatalf("log holds %d records, want 2 (refusals and replays write nothing)", n)
	}
	s := e.Lane(LaneDispatch)
	if s.Accepted.Load() != 2 || s.Duplicates.Load() != 1 || s.Fsyncs.Load() == 0 {
		t.Fatalf("ledger: accepted %d duplicates %d fsyncs %d", s.Accepted.Load(), s.Duplicates.Load(), s.Fsyncs.Load())
	}
}

// Concurrent writers with the same Idempotency-Key: one write, one answer.
func TestConcurrentIdempotentRetries(t *testing.T) {
	e, _ := newEngine(t, nil)
	var wg sync.WaitGroup
	lsns := make(chan uint64, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.put(context.Background(), LaneWarehouse, Write{Table: fleet.TableLoading, Key: fmt.Sprintf("id-%d", i),
				Value: []byte(`{}`), IfVersion: 0, IdemKey: "same", Fingerprint: []byte("f")})
			if err != nil {
				t.Error(err)
				return
			}
			lsns <- r.LSN
		}()
	}
	wg.Wait()
	close(lsns)
	first := uint64(0)
	for l := range lsns {
		if first == 0 {
			first = l
		}
		if l != first {
			t.Fatalf("retries answered different LSNs: %d and %d", first, l)
		}
	}
	if n := len(logOf(t, e)); n != 1 {
		t.Fatalf("log holds %d records, want 1", n)
	}
}

// A full lane refuses its own writer at once and nobody else.
func TestBackpressureIsPerLane(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		d := c.Lanes[LaneDriver]
		d.QueueBound = 100
		c.Lanes[LaneDriver] = d
	})
	ctx := context.Background()
	// Hold the committer so nothing drains: take the writer's turn on the wal.
	b := e.db.Load().Begin()
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 100)); err != nil {
		t.Fatal(err)
	}
	_, err := e.SubmitPoints(ctx, "d2", pts(1, 1))
	if !errors.Is(err, ErrLaneFull) {
		t.Fatalf("driver past its bound: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.put(ctx, LaneDispatch, Write{Table: fleet.TableAssignments, Key: "r", Value: []byte(`{}`), IfVersion: wal.AnyVersion})
		done <- err
	}()
	b.Discard() // let the committer go
	if err := <-done; err != nil {
		t.Fatalf("dispatch while the driver lane was full: %v", err)
	}
	if r := e.Lane(LaneDriver).Rejected(); len(r) != 1 || r[0].Reason != "lane_full" || r[0].Count != 1 {
		t.Fatalf("driver rejections: %+v", r)
	}
	if r := e.Lane(LaneDispatch).Rejected(); len(r) != 0 {
		t.Fatalf("dispatch rejections: %+v", r)
	}
	// The bound counts in-flight points until durable, then frees them.
	waitFor(t, "driver lane to drain", func() bool { return e.Lane(LaneDriver).Depth.Load() == 0 })
	if _, err := e.SubmitPoints(ctx, "d2", pts(1, 1)); err != nil {
		t.Fatalf("after draining: %v", err)
	}
}

// WaitRoom gives up at its bound while nothing drains, and returns as soon
// as the committer frees room; it never waits for a lane with room.
func TestWaitRoom(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		d := c.Lanes[LaneDriver]
		d.QueueBound = 100
		c.Lanes[LaneDriver] = d
	})
	ctx := context.Background()
	if e.WaitRoom(ctx, LaneDriver, 100, 0) != nil {
		t.Fatal("an empty lane has no room for its bound")
	}
	b := e.db.Load().Begin() // hold the committer: nothing drains
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 100)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := e.WaitRoom(ctx, LaneDriver, 1, 50*time.Millisecond); !errors.Is(err, ErrLaneFull) {
		t.Fatalf("a full lane that nothing drains: %v, want ErrLaneFull", err)
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before its bound", d)
	}
	if n := e.Lane(LaneDriver).RoomWaits.Load(); n != 1 {
		t.Fatalf("room waits %d, want 1", n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if e.WaitRoom(cctx, LaneDriver, 1, time.Minute) == nil {
		t.Fatal("room after the context ended")
	}
	got := make(chan bool, 1)
	go func() { got <- e.WaitRoom(ctx, LaneDriver, 50, time.Minute) == nil }()
	b.Discard() // let the committer go: the points become durable, the lane drains
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("no room after the lane drained")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitRoom did not return when the lane drained")
	}
	if _, err := e.SubmitPoints(ctx, "d2", pts(1, 50)); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
}

// The committer takes dispatch before queued driver points, and a batch
// never exceeds its bounds.
func TestPriorityAndBatchBounds(t *testing.T) {
	e, db := newEngine(t, func(c *Config) {
		c.BatchRecords = 50
		c.FixedBatchCap = 10
	})
	ctx := context.Background()
	b := db.Begin() // hold the committer while the lanes fill
	for i := 0; i < 30; i++ {
		if _, err := e.SubmitPoints(ctx, fmt.Sprintf("d%d", i), pts(1, 1)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan WriteResult, 1)
	go func() {
		r, err := e.put(ctx, LaneDispatch, Write{Table: fleet.TableAssignments, Key: "r", Value: []byte(`{}`), IfVersion: wal.AnyVersion})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "dispatch queued", func() bool { return e.lanes[LaneDispatch].waiting() })
	b.Discard()
	r := <-done
	if r.LSN != 1 {
		t.Fatalf("dispatch committed at LSN %d behind queued driver points", r.LSN)
	}
	waitFor(t, "all points durable", func() bool { return e.DurableLSN() == 31 })
	// Batches: at most the cap (10) of driver points each, the dispatch
	// write's batch too: what it waits for is bounded by the cap, so its
	// batch need not close before the driver points (sched.go).
	total, drv := e.Totals().Batches.Load(), e.Lane(LaneDriver).Batches.Load()
	if drv < 3 || total < 3 {
		t.Fatalf("%d batches, %d with driver points, for 30 points with a cap of 10", total, drv)
	}
	if recs := e.Lane(LaneDriver).Records.Load(); recs != 30 {
		t.Fatalf("%d driver records, want 30", recs)
	}
}

// Subscribers get every durable record once, in LSN order, after the fsync.
func TestPublishAfterSyncInOrder(t *testing.T) {
	e, _ := newEngine(t, nil)
	var mu sync.Mutex
	var got []uint64
	e.Subscribe(func(recs []Record) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if r.LSN > e.DurableLSN() {
				t.Errorf("record %d published before durable LSN %d", r.LSN, e.DurableLSN())
			}
			got = append(got, r.LSN)
		}
	})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if w == 0 {
					e.SubmitPoints(context.Background(), "d", pts(uint64(i+1), uint64(i+1)))
				} else {
					e.put(context.Background(), LaneTables, Write{Table: "t", Key: fmt.Sprint(w, i), Value: []byte(`1`), IfVersion: wal.AnyVersion})
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "200 records published", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 200 })
	for i, l := range got {
		if l != uint64(i+1) {
			t.Fatalf("published LSN %d at position %d", l, i)
		}
	}
}

// An ack write that waited past MaxWait is refused and not applied.
func TestAckQueueWaitBound(t *testing.T) {
	e, db := newEngine(t, func(c *Config) {
		w := c.Lanes[LaneWarehouse]
		w.MaxWait = 20 * time.Millisecond
		c.Lanes[LaneWarehouse] = w
	})
	b := db.Begin()
	done := make(chan error, 1)
	go func() {
		_, err := e.put(context.Background(), LaneWarehouse, Write{Table: fleet.TableLoading, Key: "x", Value: []byte(`{}`), IfVersion: 0})
		done <- err
	}()
	waitFor(t, "warehouse queued", func() bool { return e.lanes[LaneWarehouse].waiting() })
	time.Sleep(30 * time.Millisecond) // the bound under test is a wait: let it pass
	b.Discard()
	if err := <-done; !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("warehouse write past max_wait: %v", err)
	}
	if n := len(logOf(t, e)); n != 0 {
		t.Fatalf("refused write was applied: %d records", n)
	}
}

func TestCloseDrainsAndRefusesNewWrites(t *testing.T) {
	e, db := newEngine(t, nil)
	b := db.Begin()
	for i := 0; i < 10; i++ {
		e.SubmitPoints(context.Background(), "d", pts(uint64(i+1), uint64(i+1)))
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close(context.Background()) }()
	waitFor(t, "closing", func() bool { return !e.Ready() })
	if _, err := e.SubmitPoints(context.Background(), "d", pts(11, 11)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write while closing: %v", err)
	}
	b.Discard()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if e.DurableLSN() != 10 || db.LastLSN() != 10 {
		t.Fatalf("after close: durable %d last %d, want 10", e.DurableLSN(), db.LastLSN())
	}
}

// TestWriteAuthority: whatever the front door, the engine writes a built-in
// table only through its actor's lane; devices only through PutDevice.
func TestWriteAuthority(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	// PutKey, the tables lane's command, refuses every built-in table: each
	// is written by its own command only.
	for _, table := range fleet.BuiltinTables() {
		_, err := e.PutKey(ctx, Write{Table: table, Key: "k", Value: []byte(`{}`), IfVersion: wal.AnyVersion})
		if !errors.Is(err, fleet.ErrReadOnly) {
			t.Errorf("PutKey into %s: %v, want a read-only error", table, err)
		}
	}
	if r := e.Lane(LaneTables).Rejected(); len(r) != 1 || r[0].Reason != "read_only_table" || r[0].Count != uint64(len(fleet.BuiltinTables())) {
		t.Errorf("tables lane rejections %+v", r)
	}
	if len(logOf(t, e)) != 0 {
		t.Fatal("a refused write reached the log")
	}
	if _, err := e.PutKey(ctx, Write{Table: "t", Key: "k", Value: []byte(`{}`), IfVersion: wal.AnyVersion}); err != nil {
		t.Errorf("PutKey into a user table: %v", err)
	}
	if _, err := e.PutAssignment(ctx, "k", []byte(`{}`), WriteOptions{IfVersion: AnyVersion}); err != nil {
		t.Errorf("PutAssignment: %v", err)
	}
	if _, err := e.AddLoadingEvent(ctx, "k", []byte(`{}`), WriteOptions{}); err != nil {
		t.Errorf("AddLoadingEvent: %v", err)
	}
	if _, err := e.AddLoadingEvent(ctx, "k", []byte(`{}`), WriteOptions{}); !errors.Is(err, ErrVersionConflict) {
		t.Errorf("AddLoadingEvent of an existing id: %v, want a version conflict", err)
	}
	if _, err := e.put(ctx, LaneDispatch, Write{Table: "u", Key: "k", Value: []byte(`{}`), IfVersion: wal.AnyVersion}); err != nil {
		t.Errorf("a user table through the dispatch lane: %v", err)
	}
	if _, err := e.PutDevice(ctx, "phone-0001-abcd", []byte(`{"driver":"anna"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PutDevice(ctx, "phone-0001-abcd", nil); err != nil {
		t.Fatal(err)
	}
	if n := len(logOf(t, e)); n != 6 {
		t.Fatalf("log has %d records, want 6", n)
	}

	// ResetDriver: the position goes, and the driver's next point is taken
	// whatever its seq.
	if _, err := e.SubmitPoints(ctx, "van", pts(1, 10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "points durable", func() bool { s, _ := e.DriverDurableSeq("van"); return s == 10 })
	if _, err := e.ResetDriver(ctx, "van"); err != nil {
		t.Fatal(err)
	}
	ack, err := e.SubmitPoints(ctx, "van", pts(1, 1))
	if err != nil || ack.Accepted != 1 {
		t.Fatalf("after a reset, seq 1: %+v %v", ack, err)
	}
}

// A writer that writes again as soon as it is answered finds its units
// given back: the committer releases an item's units before it answers
// the waiter, so a lane at its bound never refuses the next write of a
// writer it has just answered.
func TestAnsweredWriterFindsRoom(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		d := c.Lanes[LaneDispatch]
		d.QueueBound = 1
		c.Lanes[LaneDispatch] = d
	})
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		if _, err := e.put(ctx, LaneDispatch, Write{Table: fleet.TableAssignments, Key: "r", Value: []byte(`{}`), IfVersion: wal.AnyVersion}); err != nil {
			t.Fatalf("write %d, right after the one before was answered: %v", i, err)
		}
	}
}
