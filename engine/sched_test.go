package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/wal"
)

// The cap is what keeps a sync write at the target within it at worst
// (sched.go): two commits of the cap and two fsyncs; it is clamped to the
// floor (and flagged infeasible) and to the hard cap.
func TestSchedDerivesTheCap(t *testing.T) {
	cfg := DefaultConfig()
	s := newSched(cfg, time.Now)
	if s.target != 5*time.Millisecond {
		t.Fatalf("target %v, want dispatch's 5ms", s.target)
	}
	set := func(fixed, perRec, sync, dev float64) {
		s.mu.Lock()
		s.fixed, s.perRec, s.syncMean, s.syncDev = fixed, perRec, sync, dev
		s.derive()
		s.mu.Unlock()
	}
	// (5ms - 2*(1ms + 2*0.25ms) - 2*0.1ms) / (2*2µs) = 450.
	set(100e3, 2e3, 1e6, 0.25e6)
	if st := s.Stats(); st.BatchCap != 450 || st.Infeasible {
		t.Fatalf("stats %+v, want a cap of 450", st)
	}
	set(100e3, 0.1e3, 1e6, 0) // 14,000 records fit: the hard cap
	if c := s.cap(); c != cfg.BatchRecords {
		t.Fatalf("cap %d, want the hard cap %d", c, cfg.BatchRecords)
	}
	set(100e3, 2e3, 3e6, 0) // two fsyncs alone are past the target
	if st := s.Stats(); st.BatchCap != minBatchCap || !st.Infeasible {
		t.Fatalf("stats %+v, want the floor, infeasible", st)
	}
	cfg.FixedBatchCap = 10
	if c := newSched(cfg, time.Now).cap(); c != 10 {
		t.Fatalf("fixed cap %d, want 10", c)
	}
}

// With the journal, a sync write at the target waits for the journal's
// fdatasync, not the log's fsync: the cap is derived from the journal's
// measure while it is fresh, and from the log's once it went stale (a
// quiet dispatcher) or before enough of it was measured.
func TestSchedDerivesTheCapFromTheJournal(t *testing.T) {
	at := time.Unix(1_000_000, 0)
	s := newSched(DefaultConfig(), func() time.Time { return at })
	s.setJournaled(true)
	for range 50 {
		s.observeCommit(100*time.Microsecond, 4)
		s.observeCommit(100*time.Microsecond+2000*time.Microsecond, 1000) // 2µs a record
		s.observeSync(2400 * time.Microsecond)                            // a slow log: two of them take 4.8 of the 5 ms
	}
	logOnly := s.Stats()
	if logOnly.SyncFrom != "log" || !logOnly.Infeasible || logOnly.BatchCap != minBatchCap {
		t.Fatalf("before the journal is measured: %+v, want the log's fsync, infeasible at the floor", logOnly)
	}
	for range journalMinSamples - 1 {
		s.observeJournal(500 * time.Microsecond)
	}
	if st := s.Stats(); st.SyncFrom != "log" {
		t.Fatalf("after %d journal writes: %+v, want the log's until %d", journalMinSamples-1, st, journalMinSamples)
	}
	s.observeJournal(500 * time.Microsecond)
	st := s.Stats()
	// (5ms - 2*0.5ms - 2*0.1ms) / (2*2µs) = 950.
	if st.SyncFrom != "journal" || st.Infeasible || st.BatchCap < 900 || st.BatchCap > 1000 {
		t.Fatalf("journal measured: %+v, want a cap of about 950 from the journal's 0.5 ms", st)
	}
	if st.Sync != st.JournalSync || st.LogSync < 1900*time.Microsecond {
		t.Fatalf("stats %+v: Sync is the journal's, LogSync the log's", st)
	}
	at = at.Add(journalFresh + time.Second) // dispatch went quiet
	s.observeSync(2400 * time.Microsecond)
	if st := s.Stats(); st.SyncFrom != "log" || st.BatchCap != minBatchCap {
		t.Fatalf("journal stale: %+v, want the log's fsync again", st)
	}
	s.observeJournal(500 * time.Microsecond) // dispatch writes again
	if st := s.Stats(); st.SyncFrom != "journal" || st.BatchCap < 900 {
		t.Fatalf("journal fresh again: %+v, want its measure", st)
	}
	s.setJournaled(false) // a store that does not journal
	if st := s.Stats(); st.SyncFrom != "log" || st.BatchCap != minBatchCap {
		t.Fatalf("not journaled: %+v, want the log's fsync", st)
	}
}

// An engine over a real store journals the writes at the target: its
// scheduler measures the journal once dispatch writes. Not every write
// gives a sample (a frame the log's fsync covered first is not written to
// the journal, and a writer is answered before the committer takes the
// journal's measure), so it writes until the cap comes from the journal,
// at most 200 writes.
func TestEngineSchedulesFromTheJournal(t *testing.T) {
	e, _ := newEngine(t, nil)
	if !e.sched.journaled {
		t.Fatal("an engine over a real store: the target's lane is not seen as journaled")
	}
	var st SchedStats
	n := 0
	for ; n < 200; n++ {
		if _, err := e.PutAssignment(context.Background(), fmt.Sprint("r", n), []byte(`{}`), WriteOptions{IfVersion: AnyVersion}); err != nil {
			t.Fatal(err)
		}
		if st = e.Sched(); n >= journalMinSamples && st.SyncFrom == "journal" {
			break
		}
	}
	if st.SyncFrom != "journal" || st.JournalSync <= 0 {
		t.Fatalf("after %d dispatch writes: %+v, want the cap from the journal's measure", n, st)
	}
}

// Measured costs move the cap: slower commits per record shrink it.
func TestSchedFollowsMeasuredCosts(t *testing.T) {
	s := newSched(DefaultConfig(), time.Now)
	for range 100 {
		s.observeSync(time.Millisecond)
		s.observeCommit(50*time.Microsecond, 4)
		s.observeCommit(50*time.Microsecond+1000*time.Microsecond, 1000) // 1µs a record
	}
	fast := s.Stats()
	for range 100 {
		s.observeCommit(50*time.Microsecond+4000*time.Microsecond, 1000) // 4µs a record
	}
	slow := s.Stats()
	if fast.CommitPerRecord < 900*time.Nanosecond || fast.CommitPerRecord > 1100*time.Nanosecond {
		t.Fatalf("per record %v, want about 1µs", fast.CommitPerRecord)
	}
	if !(slow.BatchCap < fast.BatchCap) || slow.BatchCap < minBatchCap {
		t.Fatalf("cap %d at 1µs a record, %d at 4µs: want smaller, above the floor", fast.BatchCap, slow.BatchCap)
	}
}

// The schedule order comes from the contracts and SLAs, not from the
// order of the lanes.
func TestScheduleOrder(t *testing.T) {
	cfg := DefaultConfig()
	if got := scheduleOrder(cfg); !slices.Equal(got, []Lane{LaneDispatch, LaneTables, LaneWarehouse, LaneEvents, LaneDriver}) {
		t.Fatalf("default order %v", got)
	}
	d, tb := cfg.Lanes[LaneDispatch], cfg.Lanes[LaneTables]
	d.SLA, tb.SLA = 30*time.Millisecond, 10*time.Millisecond
	cfg.Lanes[LaneDispatch], cfg.Lanes[LaneTables] = d, tb
	if got := scheduleOrder(cfg); !slices.Equal(got, []Lane{LaneTables, LaneDispatch, LaneWarehouse, LaneEvents, LaneDriver}) {
		t.Fatalf("order with a tighter tables SLA %v", got)
	}
}

// Between the ack and async lanes the committer takes the item due first:
// a loading event that arrived after a driver chunk but is due earlier
// (20 ms SLA against 50 ms) commits first.
func TestEarliestDeadlineBetweenAckAndAsync(t *testing.T) {
	e, db := newEngine(t, nil)
	ctx := context.Background()
	b := db.Begin() // hold the committer while the lanes fill
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 5)); err != nil {
		t.Fatal(err)
	}
	done := make(chan WriteResult, 1)
	go func() {
		r, err := e.AddLoadingEvent(ctx, "ev", []byte(`{}`), WriteOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "the loading event queued", func() bool { return e.lanes[LaneWarehouse].waiting() })
	b.Discard()
	if r := <-done; r.LSN != 1 {
		t.Fatalf("loading event at LSN %d, want 1: before the driver points queued ahead of it", r.LSN)
	}
	waitFor(t, "the points durable", func() bool { return e.DurableLSN() == 6 })
}

// A full lane's refusal says how long its queue takes to drain at the rate
// it drained lately; errors.Is still knows it as ErrLaneFull.
func TestLaneFullCarriesTheDrainTime(t *testing.T) {
	l := newLane(LaneWarehouse, LaneConfig{Contract: Ack, QueueBound: 10_000, SLA: 20 * time.Millisecond}, time.Now)
	if err := l.refuse(ErrLaneFull); !errors.Is(err, ErrLaneFull) {
		t.Fatalf("refusal %v is not ErrLaneFull", err)
	} else if lf := err.(*LaneFullError); lf.Lane != LaneWarehouse || lf.RetryAfter != 0 {
		t.Fatalf("before any drain: %+v, want no estimate", lf)
	}
	// 2,000 units released over at least one second: at most 2,000/s.
	l.mu.Lock()
	l.depth = 5000
	l.drainAt = time.Now().Add(-time.Second)
	l.mu.Unlock()
	l.release(2000, true)
	l.mu.Lock()
	rate := l.drainRate
	l.mu.Unlock()
	if rate <= 1500 || rate > 2000 {
		t.Fatalf("drain rate %.0f/s, want just under 2,000/s", rate)
	}
	// Refusals free room but are no drain.
	l.mu.Lock()
	l.depth += 1000
	l.mu.Unlock()
	l.release(1000, false)
	l.mu.Lock()
	if l.drainUnits != 0 {
		t.Errorf("refused units counted as drain: %d", l.drainUnits)
	}
	l.mu.Unlock()
	// 3,000 units left at that rate: about 1.5 s.
	err := l.refuse(ErrLaneFull)
	var lf *LaneFullError
	if !errors.As(err, &lf) || lf.RetryAfter < 1500*time.Millisecond || lf.RetryAfter > 2*time.Second {
		t.Fatalf("refusal %v, want about 1.5 s to drain", err)
	}
	if r := l.stats.Rejected(); len(r) != 1 || r[0].Reason != "lane_full" || r[0].Count != 2 {
		t.Fatalf("rejections %+v, want 2 lane_full", r)
	}
}

// The derived cap bounds every batch's capped records, the batch holding
// a sync write included (it waits for that much at most), and the sync
// write goes in the first batch after it arrived.
func TestCapBoundsEveryBatch(t *testing.T) {
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.FixedBatchCap = 10
	rec := &recEnv{} // drr_test.go: each committed batch's keys
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv { rec.db = db; return rec })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(context.Background()); db.Close() }()
	ctx := context.Background()
	b := db.Begin() // hold the committer while the lanes fill
	for d := range 4 {
		if _, err := e.SubmitPoints(ctx, fmt.Sprint("d", d), pts(1, 7)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan WriteResult, 1)
	go func() {
		r, err := e.PutAssignment(ctx, "r", []byte(`{}`), WriteOptions{IfVersion: AnyVersion})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "dispatch queued", func() bool { return e.lanes[LaneDispatch].waiting() })
	b.Discard()
	if r := <-done; r.LSN != 1 {
		t.Fatalf("dispatch at LSN %d, want 1: first", r.LSN)
	}
	waitFor(t, "all points durable", func() bool { return e.DurableLSN() == 29 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	total := 0
	for i, keys := range rec.batches {
		drv := 0
		for _, k := range keys {
			if strings.HasPrefix(k, "d") { // the drivers d0..d3; the route is r
				drv++
			}
		}
		if drv > 10 {
			t.Errorf("batch %d holds %d driver records, past the cap of 10", i, drv)
		}
		total += drv
	}
	if total != 28 || !slices.Contains(rec.batches[0], "r") {
		t.Fatalf("batches %v: want the dispatch write in the first, 28 driver records in all", rec.batches)
	}
}

// With RoomWait, a driver's submission that finds the lane full waits for
// room for its new points only (duplicates take none), and is one arrival
// with no refusal when room comes in time.
func TestSubmitPointsWaitsForRoom(t *testing.T) {
	e, db := newEngine(t, func(c *Config) {
		d := c.Lanes[LaneDriver]
		d.QueueBound = 100
		c.Lanes[LaneDriver] = d
		c.RoomWait = time.Minute
	})
	ctx := context.Background()
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 60)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "d1 durable", func() bool { s, _ := e.DriverDurableSeq("d1"); return s == 60 })
	b := db.Begin() // hold the committer: nothing drains
	if _, err := e.SubmitPoints(ctx, "d2", pts(1, 90)); err != nil {
		t.Fatal(err)
	}
	// d2's submission may itself have waited a moment for d1's points to
	// leave the queue: count the waits from here.
	waits := e.Lane(LaneDriver).RoomWaits.Load()
	// 60 duplicates and 20 new points: the 20 do not fit (90 + 20 > 100)
	// until the committer drains; the duplicates ask for no room.
	got := make(chan DriverAck, 1)
	go func() {
		ack, err := e.SubmitPoints(ctx, "d1", pts(1, 80))
		if err != nil {
			t.Error(err)
		}
		got <- ack
	}()
	waitFor(t, "the submission waiting for room", func() bool { return e.Lane(LaneDriver).RoomWaits.Load() == waits+1 })
	arrivals := e.Lane(LaneDriver).Arrivals.Load()
	b.Discard()
	ack := <-got
	if ack.Accepted != 20 || ack.Duplicates != 60 {
		t.Fatalf("ack %+v, want 20 accepted, 60 duplicates", ack)
	}
	if r := e.Lane(LaneDriver).Rejected(); len(r) != 0 || e.Lane(LaneDriver).Arrivals.Load() != arrivals {
		t.Fatalf("rejections %+v, arrivals %d then %d: a wait that ends in room is one arrival, no refusal", r, arrivals, e.Lane(LaneDriver).Arrivals.Load())
	}
}

// WaitRoom answers at once, with the engine's reason, when the engine
// takes no writes: waiting for room would not help.
func TestWaitRoomWhenNotTakingWrites(t *testing.T) {
	e, _ := newEngine(t, nil)
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err := e.WaitRoom(context.Background(), LaneDriver, 1, time.Minute)
	if err == nil || errors.Is(err, ErrLaneFull) || time.Since(t0) > 5*time.Second {
		t.Fatalf("WaitRoom on a closed engine: %v after %v, want its refusal at once", err, time.Since(t0))
	}
}

// The driver lane's bound is what it can commit within its SLA at the
// capacity measured while it stayed backlogged (Little's law), within
// [littleFloor, queue_bound]; spans in which it ran empty measure arrivals,
// not capacity, and do not count; a capacity not measured again within
// capacityFresh stops bounding; other lanes keep their queue_bound.
func TestDriverBoundFromLittlesLaw(t *testing.T) {
	cfg := LaneConfig{Contract: Async, QueueBound: 16384, FlushWithin: 10 * time.Millisecond, SLA: 50 * time.Millisecond}
	l := newLane(LaneDriver, cfg, time.Now)
	if b := l.Bound(); b != 16384 {
		t.Fatalf("bound %d before any measure, want queue_bound", b)
	}
	span := func(units int, backlogged bool) {
		l.mu.Lock()
		l.depth = units + 1000
		if !backlogged {
			l.depth = units
		}
		l.drainAt = time.Now().Add(-time.Second)
		l.emptied = false
		l.mu.Unlock()
		l.release(units, true)
	}
	span(100_000, true) // backlogged: 100,000 units a second is capacity
	if b := l.Bound(); b < 4500 || b > 5000 {
		t.Fatalf("bound %d at 100,000/s and a 50 ms SLA, want about 5,000", b)
	}
	span(10, false) // ran empty: 10 a second is what arrived, not capacity
	if b := l.Bound(); b < 4500 || b > 5000 {
		t.Fatalf("bound %d after a span that ran empty, want it unchanged", b)
	}
	for range 20 {
		span(1000, true) // the disk slowed: 1,000/s
	}
	if b := l.Bound(); b != littleFloor {
		t.Fatalf("bound %d at 1,000/s, want the floor %d", b, littleFloor)
	}
	// A capacity goes stale: measured in a stall and never again (the lane
	// drains faster and runs empty), it stops bounding after capacityFresh.
	at := time.Now()
	stale := newLane(LaneDriver, cfg, func() time.Time { return at })
	stale.mu.Lock()
	stale.capRate, stale.capAt = 1000, at // a stall: 1,000 points/s
	stale.mu.Unlock()
	if b := stale.Bound(); b != littleFloor {
		t.Fatalf("bound %d right after the stall, want the floor %d", b, littleFloor)
	}
	at = at.Add(capacityFresh + time.Second)
	if b := stale.Bound(); b != 16384 {
		t.Fatalf("bound %d once the stall's capacity is stale, want queue_bound", b)
	}
	// The keyed lanes keep their queue_bound, whatever was measured: their
	// writers wait for their answers.
	w := newLane(LaneWarehouse, LaneConfig{Contract: Ack, QueueBound: 4096, SLA: 20 * time.Millisecond}, time.Now)
	w.mu.Lock()
	w.capRate, w.capAt = 1000, time.Now()
	w.mu.Unlock()
	if b := w.Bound(); b != 4096 {
		t.Fatalf("warehouse bound %d, want its queue_bound", b)
	}
}

// The ledger names a refusal by the API's error code for it, so that
// /metrics, the dashboard and the API say one name.
func TestRefusalReasonsAreAPICodes(t *testing.T) {
	for err, want := range map[error]string{
		ErrIdempotencyMismatch: "idempotency_key_reused",
		ErrTooLarge:            "body_too_large",
		ErrLaneFull:            "lane_full",
		ErrVersionConflict:     "version_conflict",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %q, want %q", err, got, want)
		}
	}
}

// slowCommitEnv is the store's env whose commits take perRec a record: a
// slow disk the tables lane stays backlogged behind.
type slowCommitEnv struct {
	storeEnv
	perRec time.Duration
}

func (s slowCommitEnv) commit(b *wal.Batch) error {
	time.Sleep(time.Duration(b.Len()) * s.perRec)
	return s.storeEnv.commit(b)
}

// A writer refused at a full lane is told how long the queue takes to
// drain at what the lane drains: the tables lane (queue_bound 64 here) kept
// full by 200 writers behind a disk committing about 500 writes/s. Before
// a batch's drain was counted once after its last answer, a span ended at
// its first answer, and the first writers refused were told 25-45 s.
func TestRetryAfterIsTheQueuesDrainTime(t *testing.T) {
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	tl := cfg.Lanes[LaneTables]
	tl.QueueBound = 64
	cfg.Lanes[LaneTables] = tl
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv {
		return slowCommitEnv{storeEnv{db}, 2 * time.Millisecond}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(context.Background()); db.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var refused, written atomic.Int64
	var worst atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(time.Second)
	for w := range 200 { // 200 writers, each writing again as soon as answered
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && time.Now().Before(end); i++ {
				_, err := e.PutKey(ctx, Write{Table: "t", Key: fmt.Sprint(w, "-", i), Value: []byte(`{}`), IfVersion: AnyVersion})
				var lf *LaneFullError
				switch {
				case err == nil:
					written.Add(1)
				case errors.As(err, &lf):
					refused.Add(1)
					if d := int64(lf.RetryAfter); d > worst.Load() {
						worst.Store(d)
					}
					time.Sleep(max(min(lf.RetryAfter, 50*time.Millisecond), time.Millisecond)) // as a client honouring Retry-After
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("tables: %d written, %d refused, longest Retry-After %v", written.Load(), refused.Load(), time.Duration(worst.Load()))
	if refused.Load() == 0 || written.Load() == 0 {
		t.Fatalf("%d written, %d refused: want a full lane", written.Load(), refused.Load())
	}
	// 64 writes at about 500/s: about 0.13 s.
	if w := time.Duration(worst.Load()); w <= 0 || w > time.Second {
		t.Fatalf("longest Retry-After %v for a queue of 64 that drains in about 0.13 s", w)
	}
}
