package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"routehound/fleet"
	"routehound/wal"
)

// holdSyncEnv is the store's own env (it journals and pipelines) whose log
// fsyncs wait until the test lets them go, or fail.
type holdSyncEnv struct {
	storeEnv
	started chan struct{} // an fsync began
	release chan error    // what the held fsync answers (nil: it runs)
}

func (h holdSyncEnv) sync() error {
	h.started <- struct{}{}
	if err := <-h.release; err != nil {
		return err
	}
	return h.storeEnv.sync()
}

func newHoldEngine(t *testing.T) (*Engine, holdSyncEnv) {
	t.Helper()
	dir := t.TempDir()
	open := func() (*wal.DB, error) { return wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20}) }
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	h := holdSyncEnv{started: make(chan struct{}, 16), release: make(chan error, 16)}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.Open = open
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv { h.storeEnv = storeEnv{db}; return h })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 16 {
			h.release <- nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
		e.store().Close()
	})
	return e, h
}

// The isolation the journal buys: a dispatch write is answered, durable
// in the journal, while the log's fsync of a driver batch is still in
// flight; its record is published only once that fsync covers the driver
// batch ahead of it (the feed is a prefix of the log), and the driver's
// durable_seq moves only with the log.
func TestDispatchAnsweredWhileTheLogSyncs(t *testing.T) {
	e, h := newHoldEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.SubmitPoints(ctx, "van", pts(1, 50)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.started: // the driver batch's fsync is in flight, held
	case <-ctx.Done():
		t.Fatal("no fsync began for the driver batch")
	}
	durable := e.DurableLSN()
	res, err := e.PutAssignment(ctx, "r1", []byte(`{"driver":"van","stops":[]}`), WriteOptions{IfVersion: AnyVersion})
	if err != nil {
		t.Fatalf("dispatch write while the log's fsync is held: %v", err)
	}
	if e.DurableLSN() != durable {
		t.Fatalf("published lsn moved from %d to %d with the log's fsync held", durable, e.DurableLSN())
	}
	if seq, _ := e.DriverDurableSeq("van"); seq != 0 {
		t.Fatalf("durable_seq %d before the log's fsync returned", seq)
	}
	if got := e.Lane(LaneDispatch).Accepted.Load(); got != 1 {
		t.Fatalf("dispatch accepted %d", got)
	}
	h.release <- nil // the driver batch's fsync
	h.release <- nil // the next one, covering the dispatch write
	if err := e.WaitDurable(ctx, res.LSN); err != nil {
		t.Fatal(err)
	}
	if seq, _ := e.DriverDurableSeq("van"); seq != 50 {
		t.Fatalf("durable_seq %d after the fsyncs, want 50", seq)
	}
	// Answered once: the log's fsync does not answer it again.
	if got := e.Lane(LaneDispatch).Accepted.Load(); got != 1 {
		t.Fatalf("dispatch accepted %d after the fsync, want 1", got)
	}
}

// A batch of journaled writes only is published once its journal frame is
// durable, before its writer's answer, with the log's fsync still held:
// subscribers get it without waiting for the log. A journaled write behind an unsynced driver batch
// waits for the log (the feed stays a prefix of it). Then the held fsync
// fails: the reopened store has both writes at the LSNs they were answered
// (and the first published) at, and a reader that followed the feed
// throughout reads every LSN once, in order.
func TestJournaledBatchPublishedBeforeTheLogSyncs(t *testing.T) {
	e, h := newHoldEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type seen struct {
		lsn  uint64
		key  string
		data string
	}
	var (
		got  []seen
		cur  = e.Follow(e.DurableLSN())
		read = func(upto uint64) {
			t.Helper()
			for cur.After() < upto {
				recs, err := cur.Next(ctx)
				if err != nil {
					t.Fatalf("following the feed to %d: %v", upto, err)
				}
				for _, r := range recs {
					got = append(got, seen{r.LSN, r.Table + "/" + r.Key, string(r.Value)})
				}
			}
		}
	)
	k0, err := e.PutKey(ctx, Write{Table: "notes", Key: "k0", Value: []byte(`{"n":0}`), IfVersion: AnyVersion})
	if err != nil {
		t.Fatal(err)
	}
	// The journal's goroutine publishes before it answers (the committer,
	// the only other publisher, has nothing to publish here).
	if d := e.DurableLSN(); d < k0.LSN {
		t.Fatalf("k0 (lsn %d) answered before it was published (durable lsn %d)", k0.LSN, d)
	}
	select {
	case <-h.started: // k0's batch's log fsync is in flight, held
	case <-ctx.Done():
		t.Fatal("no log fsync began for the journaled write")
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	err = e.WaitDurable(wctx, k0.LSN)
	wcancel()
	if err != nil {
		t.Fatalf("a journaled batch is not published while the log's fsync is held: %v", err)
	}
	read(k0.LSN)
	if n := e.totals.JournalPublished.Load(); n == 0 {
		t.Fatal("published, but not counted as published from the journal")
	}

	if _, err := e.SubmitPoints(ctx, "van", pts(1, 20)); err != nil {
		t.Fatal(err)
	}
	// Wait until the committer took the points, so that k1 commits after them.
	waitFor(t, "the points committed", func() bool { return e.store().LastLSN() > k0.LSN })
	k1, err := e.PutKey(ctx, Write{Table: "notes", Key: "k1", Value: []byte(`{"n":1}`), IfVersion: AnyVersion})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.DurableLSN(); d >= k1.LSN {
		t.Fatalf("durable lsn %d covers a journaled write (lsn %d) behind unsynced driver points", d, k1.LSN)
	}

	h.release <- errors.New("injected: fsync lost the write") // the store fails
	waitFor(t, "the store reopened", func() bool { return e.Totals().Recoveries.Load() == 1 })
	if err := e.WaitDurable(ctx, k1.LSN); err != nil {
		t.Fatal(err)
	}
	read(k1.LSN)
	waitFor(t, "the held points durable", func() bool { s, _ := e.DriverDurableSeq("van"); return s == 20 })
	// A driver's durable seq moves just before its batch is published.
	if err := e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	read(e.DurableLSN())
	byKey := map[string]seen{}
	for i, r := range got {
		if i > 0 && r.lsn != got[i-1].lsn+1 {
			t.Fatalf("the feed went from lsn %d to %d: %v", got[i-1].lsn, r.lsn, got)
		}
		if r.key == "notes/k0" || r.key == "notes/k1" {
			if _, dup := byKey[r.key]; dup {
				t.Fatalf("%s read twice: %v", r.key, got)
			}
			byKey[r.key] = r
		}
	}
	if r := byKey["notes/k0"]; r.lsn != k0.LSN || r.data != `{"n":0}` {
		t.Fatalf("k0 in the feed: %+v, answered at lsn %d", r, k0.LSN)
	}
	if r := byKey["notes/k1"]; r.lsn != k1.LSN || r.data != `{"n":1}` {
		t.Fatalf("k1 in the feed: %+v, answered at lsn %d", r, k1.LSN)
	}
	var inLog int
	if err := e.ReadLog(0, 0, func(r Record) error {
		if r.Table == "notes" {
			inLog++
			if (r.Key == "k0" && r.LSN != k0.LSN) || (r.Key == "k1" && r.LSN != k1.LSN) {
				t.Errorf("the log has %s at lsn %d", r.Key, r.LSN)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inLog != 2 {
		t.Fatalf("%d notes records in the log, want 2", inLog)
	}
}

// A failed log fsync after the journal answered a write: the store is
// reopened, and the answered write is there (the journal is replayed on
// Open); the driver points the fsync covered were not acknowledged and
// are written again from the held batch.
func TestJournaledWriteSurvivesAFailedLogSync(t *testing.T) {
	e, h := newHoldEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.SubmitPoints(ctx, "van", pts(1, 20)); err != nil {
		t.Fatal(err)
	}
	<-h.started
	var answered []WriteResult
	for i := range 3 {
		res, err := e.PutKey(ctx, Write{Table: "notes", Key: fmt.Sprint("k", i), Value: []byte(`{"n":1}`), IfVersion: AnyVersion})
		if err != nil {
			t.Fatalf("write %d while the log's fsync is held: %v", i, err)
		}
		answered = append(answered, res)
	}
	h.release <- errors.New("injected: fsync lost the write") // the store fails
	for !e.failed.Load() {
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "the store reopened", func() bool { return e.Totals().Recoveries.Load() == 1 })
	if err := e.WaitDurable(ctx, answered[2].LSN); err != nil {
		t.Fatal(err)
	}
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	for i, res := range answered {
		st, ok, err := snap.Get("notes", fmt.Sprint("k", i))
		if err != nil || !ok || st.LSN != res.LSN || st.Version != res.Version {
			t.Fatalf("answered write %d after the failed fsync: %+v %v %v, answered %+v", i, st, ok, err, res)
		}
	}
	waitFor(t, "the held points durable", func() bool { s, _ := e.DriverDurableSeq("van"); return s == 20 })
	// A driver's durable seq moves just before its batch is published.
	if err := e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.ReadLog(0, 0, func(r Record) error {
		if r.Table == fleet.TablePositions {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Fatalf("%d driver points in the log, want 20 once each", n)
	}
}

// holdCommitEnv is the store's own env whose journal writes, log fsyncs
// and, once armed, commits wait until the test lets them go.
type holdCommitEnv struct {
	storeEnv
	armed    *atomic.Bool
	cheld    chan struct{}
	crelease chan struct{}
	jstarted chan struct{}
	jrelease chan struct{}
	srelease chan struct{} // closed: the log's fsyncs run
}

func (h holdCommitEnv) sync() error {
	<-h.srelease
	return h.storeEnv.sync()
}

func (h holdCommitEnv) commit(b *wal.Batch) error {
	if h.armed.CompareAndSwap(true, false) {
		h.cheld <- struct{}{}
		<-h.crelease
	}
	return h.storeEnv.commit(b)
}

func (h holdCommitEnv) journal(frames []wal.JournalFrame, covered uint64) (int, error) {
	h.jstarted <- struct{}{}
	<-h.jrelease
	return h.storeEnv.journal(frames, covered)
}

// A journaled write is answered (and, its batch being all journaled, first
// published) by the journal's goroutine as soon as its fdatasync returns,
// not when the committer comes back from the batch it is committing
// meanwhile: that hop took 0.3–4 ms at p99 beside a driver
// flood (BENCHMARKS.md, "The journal answers its writes itself").
func TestJournalAnswersWhileTheCommitterCommits(t *testing.T) {
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h := holdCommitEnv{armed: new(atomic.Bool), cheld: make(chan struct{}, 1), crelease: make(chan struct{}),
		jstarted: make(chan struct{}, 16), jrelease: make(chan struct{}, 16), srelease: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv { h.storeEnv = storeEnv{db}; return h })
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(h.crelease)
			close(h.srelease)
		}
		for range 16 {
			h.jrelease <- struct{}{}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answered := make(chan error, 1)
	var lsn atomic.Uint64
	go func() {
		res, err := e.PutAssignment(ctx, "r1", []byte(`{"driver":"van","stops":[]}`), WriteOptions{IfVersion: AnyVersion})
		lsn.Store(res.LSN)
		answered <- err
	}()
	select {
	case <-h.jstarted: // the dispatch write is committed; its journal write waits
	case <-ctx.Done():
		t.Fatal("the dispatch write never reached the journal")
	}
	h.armed.Store(true)
	if _, err := e.SubmitPoints(ctx, "van", pts(1, 50)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.cheld: // the committer is inside the driver batch's commit
	case <-ctx.Done():
		t.Fatal("the driver batch's commit never began")
	}
	h.jrelease <- struct{}{}
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("dispatch write: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dispatch write was not answered while the committer was inside another commit: its journal's answer waited for the committer")
	}
	// Its batch holds nothing but it, and nothing before it waits: the
	// journal's goroutine published it before answering, while the
	// committer (the other publisher) is still inside the driver commit.
	if d := e.DurableLSN(); d < lsn.Load() {
		t.Fatalf("the dispatch write (lsn %d) was answered before it was published (durable lsn %d)", lsn.Load(), d)
	}
	close(h.crelease)
	close(h.srelease)
	released = true
	waitFor(t, "the driver points durable", func() bool { s, _ := e.DriverDurableSeq("van"); return s == 50 })
}

// noRoomEnv is the store's env whose journal never has room and whose log
// fsync is slow: every waited-for write is answered by the log's fsync.
type noRoomEnv struct {
	storeEnv
	fsync time.Duration
}

func (n noRoomEnv) sync() error {
	time.Sleep(n.fsync)
	return n.storeEnv.sync()
}

func (n noRoomEnv) journal([]wal.JournalFrame, uint64) (int, error) { return 0, nil }

// A journal without room answers nothing: its instant "writes" are no
// measure of an fdatasync (the cap would be derived from ~0 while dispatch
// waits for a 20 ms fsync), and on a fresh store (nothing covered yet) the
// committer does not retry it in a loop until the log's fsync lands.
func TestJournalWithoutRoomIsNoMeasure(t *testing.T) {
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv { return noRoomEnv{storeEnv{db}, 20 * time.Millisecond} })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(context.Background()); db.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 12 {
		if _, err := e.PutAssignment(ctx, fmt.Sprint("r", i), []byte(`{"driver":"van","stops":[]}`), WriteOptions{IfVersion: AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Sched()
	if st.SyncFrom != "log" || st.JournalSync != 0 {
		t.Fatalf("a journal that never had room: %+v, want the cap from the log's fsync and no journal measure", st)
	}
	if n := e.totals.JournalWrites.Load(); n > 100 {
		t.Fatalf("%d journal attempts for 12 writes: the committer retried a journal without room in a loop", n)
	}
}
