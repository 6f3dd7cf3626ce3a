package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"routehound/wal"
)

// stepper hands the committer's Commit and Sync calls of the held ops to
// the test, one call at a time, through every store handle the engine
// opens: the committer waits in the call until the test answers it. An
// answer nil lets the real call run; an error fails the call without it.
type stepper struct {
	hold  map[string]bool // "commit", "sync"; set before the engine starts
	steps chan step
}

type step struct {
	op    string
	reply chan error
}

func newStepper(hold ...string) *stepper {
	s := &stepper{hold: map[string]bool{}, steps: make(chan step)}
	for _, op := range hold {
		s.hold[op] = true
	}
	return s
}

func (s *stepper) wrap(db *wal.DB) commitEnv { return &stepEnv{db: db, s: s} }

// next waits for the committer's next held call, which must be op.
func (s *stepper) next(t *testing.T, op string) step {
	t.Helper()
	select {
	case st := <-s.steps:
		if st.op != op {
			t.Fatalf("the committer called %s, want %s", st.op, op)
		}
		return st
	case <-time.After(5 * time.Second):
		t.Fatalf("the committer did not call %s", op)
	}
	panic("unreachable")
}

// stepEnv is a commitEnv over a real store whose held calls wait for the
// test's answer.
type stepEnv struct {
	db *wal.DB
	s  *stepper
}

func (f *stepEnv) gate(op string) error {
	if !f.s.hold[op] {
		return nil
	}
	st := step{op: op, reply: make(chan error)}
	f.s.steps <- st
	return <-st.reply
}

func (f *stepEnv) begin() *wal.Batch { return f.db.Begin() }

func (f *stepEnv) commit(b *wal.Batch) error {
	if err := f.gate("commit"); err != nil {
		b.Discard()
		return err
	}
	return b.Commit()
}

func (f *stepEnv) sync() error {
	if err := f.gate("sync"); err != nil {
		return err
	}
	return f.db.Sync()
}

// newStepEngine starts an engine whose committer goes through s; with
// reopen, a storage failure reopens the store (through s again).
func newStepEngine(t *testing.T, s *stepper, reopen bool) *Engine {
	t.Helper()
	dir := t.TempDir()
	open := func() (*wal.DB, error) { return wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20}) }
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	if reopen {
		cfg.Open = open
	}
	e, err := newWithEnv(cfg, db, nil, s.wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
		e.store().Close()
		db.Close()
	})
	return e
}

type putResult struct {
	res     WriteResult
	err     error
	durable uint64 // the engine's durable LSN when the answer came
}

func put(e *Engine, key string) <-chan putResult {
	out := make(chan putResult, 1)
	go func() {
		res, err := e.put(context.Background(), LaneDispatch, Write{Table: "t", Key: key, Value: []byte(`{"n":1}`), IfVersion: wal.AnyVersion})
		out <- putResult{res, err, e.DurableLSN()}
	}()
	return out
}

func answer(t *testing.T, ch <-chan putResult) putResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	panic("unreachable")
}

// The committer answers a sync writer only after the Sync that covers its
// write returned, and the durable LSN does not move before it either: with
// the Sync held, the batch is committed but nothing is answered or durable,
// and the single writer commits nothing else meanwhile.
func TestCommitterAnswersOnlyAfterSync(t *testing.T) {
	s := newStepper("sync")
	e := newStepEngine(t, s, false)
	dispatch := e.Lane(LaneDispatch)

	notify := e.Notify()
	cur := e.Follow(0)
	first := put(e, "a")
	st := s.next(t, "sync") // the committer is in Sync: the batch is committed
	if got := e.store().LastLSN(); got != 1 {
		t.Fatalf("committed LSN %d while the sync is held, want 1", got)
	}
	if got := e.DurableLSN(); got != 0 {
		t.Fatalf("durable LSN %d before the sync returned", got)
	}
	if d := dispatch.Depth.Load(); d != 1 {
		t.Fatalf("lane depth %d while the sync is held: the write was answered", d)
	}
	// The feed has not moved: no notification, no record for a cursor
	// or a waiter, nothing in ReadLog.
	select {
	case <-notify:
		t.Fatal("the feed notified before the sync returned")
	default:
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if recs, err := cur.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a cursor read %d records before the sync returned (err %v)", len(recs), err)
	}
	if err := e.WaitDurable(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDurable(1) before the sync returned: %v", err)
	}
	cancel()
	var early int
	if err := e.ReadLog(0, 0, func(Record) error { early++; return nil }); err != nil {
		t.Fatal(err)
	}
	if early != 0 {
		t.Fatalf("ReadLog answered %d records before the sync returned", early)
	}
	second := put(e, "b") // queues behind the held sync
	waitFor(t, "the second write queued", func() bool { return e.lanes[LaneDispatch].waiting() })
	select {
	case r := <-first:
		t.Fatalf("answered before its sync returned: %+v", r)
	default:
	}
	if got := e.store().LastLSN(); got != 1 {
		t.Fatalf("committed LSN %d while the committer is in a sync", got)
	}

	st.reply <- nil
	r := answer(t, first)
	if r.err != nil || r.res.LSN != 1 {
		t.Fatalf("first write: %+v", r)
	}
	if r.durable < 1 {
		t.Fatalf("answered LSN 1 with the durable LSN at %d", r.durable)
	}
	select {
	case <-notify: // right after the answers
	case <-time.After(5 * time.Second):
		t.Fatal("the feed did not notify after the sync returned")
	}
	if err := e.WaitDurable(context.Background(), 1); err != nil {
		t.Fatalf("WaitDurable(1) after the sync: %v", err)
	}
	if recs, err := cur.Next(context.Background()); err != nil || len(recs) != 1 || recs[0].LSN != 1 || recs[0].Key != "a" {
		t.Fatalf("the cursor after the sync: %v %v", recs, err)
	}
	s.next(t, "sync").reply <- nil // the second write's
	if r := answer(t, second); r.err != nil || r.res.LSN != 2 || r.durable < 2 {
		t.Fatalf("second write: %+v", r)
	}
	if got := e.Totals().Fsyncs.Load(); got != 2 {
		t.Fatalf("%d fsyncs, want 2", got)
	}
}

// A failed Commit answers its writer ErrUnavailable with nothing applied,
// and without Config.Open the engine stops taking writes and says so on
// Fatal; the durable LSN stays where it was.
func TestCommitterCommitFailure(t *testing.T) {
	s := newStepper("commit")
	e := newStepEngine(t, s, false)

	first := put(e, "a")
	s.next(t, "commit").reply <- nil
	if r := answer(t, first); r.err != nil || r.res.LSN != 1 {
		t.Fatalf("first write: %+v", r)
	}
	second := put(e, "b")
	s.next(t, "commit").reply <- errInjected
	if r := answer(t, second); !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("write whose commit failed: %+v", r)
	}
	select {
	case err := <-e.Fatal():
		if !errors.Is(err, errInjected) {
			t.Fatalf("fatal: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no fatal error after a failed commit")
	}
	if e.Ready() || e.DurableLSN() != 1 || e.store().LastLSN() != 1 {
		t.Fatalf("after a failed commit: ready %v, durable %d, committed %d", e.Ready(), e.DurableLSN(), e.store().LastLSN())
	}
	if r := answer(t, put(e, "c")); !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("write after a failed commit: %+v", r)
	}
}

// A failed Sync answers its writer ErrUnavailable and publishes nothing;
// the store is reopened, and the record that Commit wrote before the failed
// Sync, now durable in the reopened store, is published once, in order,
// before the next write's.
func TestCommitterSyncFailureRepublishesAfterReopen(t *testing.T) {
	s := newStepper("sync")
	e := newStepEngine(t, s, true)
	var mu sync.Mutex
	var seen []uint64
	e.Subscribe(func(recs []Record) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			seen = append(seen, r.LSN)
		}
	})
	published := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint64(nil), seen...)
	}

	first := put(e, "a")
	s.next(t, "sync").reply <- nil
	if r := answer(t, first); r.err != nil || r.res.LSN != 1 {
		t.Fatalf("first write: %+v", r)
	}
	second := put(e, "b")
	s.next(t, "sync").reply <- errInjected
	if r := answer(t, second); !errors.Is(r.err, ErrUnavailable) {
		t.Fatalf("write whose sync failed: %+v", r)
	}
	if e.DurableLSN() != 1 {
		t.Fatalf("durable LSN %d after a failed sync, want 1", e.DurableLSN())
	}
	waitFor(t, "the store reopened", func() bool { return e.Totals().Recoveries.Load() == 1 && e.Ready() })
	if e.DurableLSN() != 2 {
		t.Fatalf("durable LSN %d after the reopen, want 2 (the record committed before the failed sync)", e.DurableLSN())
	}
	third := put(e, "c")
	s.next(t, "sync").reply <- nil
	if r := answer(t, third); r.err != nil || r.res.LSN != 3 {
		t.Fatalf("write after the reopen: %+v", r)
	}
	waitFor(t, "three records published", func() bool { return len(published()) >= 3 })
	if got := published(); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("published %v, want [1 2 3]", got)
	}
}
