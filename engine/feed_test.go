package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"routehound/wal"
)

// smallTail bounds the feed's tail to n records for one test.
func smallTail(t *testing.T, n int) {
	old := tailRecords
	tailRecords = n
	t.Cleanup(func() { tailRecords = old })
}

func putKey(t *testing.T, e *Engine, table, key string) WriteResult {
	t.Helper()
	r, err := e.put(context.Background(), LaneTables, Write{Table: table, Key: key, Value: []byte(`{"v":1}`), IfVersion: wal.AnyVersion})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nextN reads n records from c, checking that they follow after in order.
func nextN(t *testing.T, c *Cursor, after uint64, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := after + 1
	for want <= after+uint64(n) {
		recs, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("cursor at %d: %v", c.After(), err)
		}
		for _, r := range recs {
			if r.LSN != want {
				t.Fatalf("cursor read LSN %d, want %d (gap or repeat)", r.LSN, want)
			}
			want++
		}
	}
}

// A cursor that fell behind the tail reads the log, then the tail, with no
// gap and no repeat where they meet; ReadLog answers the same records from
// the tail as from the store.
func TestCursorBehindTailReadsTheLog(t *testing.T) {
	smallTail(t, 4)
	e, _ := newEngine(t, nil)
	for i := range 20 {
		putKey(t, e, "t", fmt.Sprint("k", i)) // one batch, one segment each
	}
	e.feed.mu.Lock()
	held := e.feed.recs
	e.feed.mu.Unlock()
	if held > 4 {
		t.Fatalf("the tail holds %d records, bound 4", held)
	}
	nextN(t, e.Follow(0), 0, 20)
	nextN(t, e.Follow(15), 15, 5) // within the tail
	if at, ok := e.DurableAt(20); !ok || at.IsZero() || time.Since(at) > time.Minute {
		t.Fatalf("DurableAt(20) in the tail: %v %v", at, ok)
	}
	if _, ok := e.DurableAt(1); ok {
		t.Fatal("DurableAt(1) answered for a record out of the tail")
	}
	if _, ok := e.DurableAt(21); ok {
		t.Fatal("DurableAt(21) answered for a record not durable")
	}
	var fromTail, fromStore []uint64
	if err := e.ReadLog(16, 0, func(r Record) error { fromTail = append(fromTail, r.LSN); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.readStore(16, 0, func(r Record) error { fromStore = append(fromStore, r.LSN); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fromTail) != fmt.Sprint(fromStore) || len(fromTail) != 4 {
		t.Fatalf("ReadLog after 16: %v from the tail, %v from the store", fromTail, fromStore)
	}
	if err := e.ReadLog(16, 2, func(r Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// A subscriber much slower than the writers falls behind the tail and
// still gets every record once, in order; Close returns only once it has
// them all.
func TestSlowSubscriberGetsEverything(t *testing.T) {
	smallTail(t, 8)
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	e, err := New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var got []uint64
	e.Subscribe(func(recs []Record) {
		<-release
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			got = append(got, r.LSN)
		}
	})
	for i := range 60 {
		putKey(t, e, "t", fmt.Sprint("k", i))
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 60 {
		t.Fatalf("the subscriber had %d records when Close returned, want 60", len(got))
	}
	for i, l := range got {
		if l != uint64(i+1) {
			t.Fatalf("record %d has LSN %d (gap or repeat)", i, l)
		}
	}
}

// Once the engine stops, a cursor reads what is left and then answers
// ErrStopped, and so does a waiter for an LSN that will not come.
func TestFeedAfterClose(t *testing.T) {
	e, db := newEngine(t, nil)
	c := e.Follow(0)
	putKey(t, e, "t", "a")
	putKey(t, e, "t", "b")
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	nextN(t, c, 0, 2)
	if _, err := c.Next(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("cursor past the end after Close: %v", err)
	}
	if err := e.WaitDurable(context.Background(), 2); err != nil {
		t.Fatalf("WaitDurable(2): %v", err)
	}
	if err := e.WaitDurable(context.Background(), 3); !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("WaitDurable(3), never committed: %v", err)
	}
	if db.LastLSN() != 2 {
		t.Fatalf("last LSN %d", db.LastLSN())
	}
}

// An LSN committed but not yet durable is waited for; one never committed
// is refused at once.
func TestWaitDurable(t *testing.T) {
	s := newStepper("sync")
	e := newStepEngine(t, s, false)
	if err := e.WaitDurable(context.Background(), 1); !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("WaitDurable of an LSN not committed: %v", err)
	}
	res := put(e, "a")
	st := s.next(t, "sync")
	waited := make(chan error, 1)
	go func() { waited <- e.WaitDurable(context.Background(), 1) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitDurable returned before the sync: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.reply <- nil
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if r := answer(t, res); r.err != nil {
		t.Fatal(r.err)
	}
}

// WatchDriver wakes a watcher once its driver's accepted points are
// durable, with the durable seq moved by then; another driver's points,
// other tables' writes and a stopped watch do not wake it.
func TestWatchDriver(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	wake := make(chan struct{}, 1)
	stop, err := e.WatchDriver("d", wake)
	if err != nil {
		t.Fatal(err)
	}
	other := make(chan struct{}, 1)
	stopOther, err := e.WatchDriver("d", other) // a second watcher of the same driver
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SubmitPoints(ctx, "d", pts(1, 5)); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan struct{}{wake, other} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("watcher not woken after the points became durable")
		}
	}
	if seq, err := e.DriverDurableSeq("d"); err != nil || seq != 5 {
		t.Fatalf("durable seq %d %v after the wake-up, want 5", seq, err)
	}
	stopOther()
	stopOther() // idempotent
	// Another driver's points and another table's write wake nobody here.
	if _, err := e.SubmitPoints(ctx, "e", pts(1, 3)); err != nil {
		t.Fatal(err)
	}
	r := putKey(t, e, "t", "a")
	if err := e.WaitDurable(ctx, r.LSN); err != nil { // answered by the journal; published just after
		t.Fatal(err)
	}
	waitFor(t, "driver e durable", func() bool { s, _ := e.DriverDurableSeq("e"); return s == 3 })
	select {
	case <-wake:
		t.Fatal("woken by another driver's points or a table write")
	default:
	}
	// Points of d wake the remaining watcher only.
	if _, err := e.SubmitPoints(ctx, "d", pts(6, 7)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("watcher not woken by its driver's second batch")
	}
	select {
	case <-other:
		t.Fatal("a stopped watcher was woken")
	default:
	}
	stop()
}

// A cursor behind the tail whose records retention trimmed gets
// ErrTrimmed; the tail still serves cursors (not ReadLog, which answers
// what the log retains).
func TestCursorPastRetention(t *testing.T) {
	smallTail(t, 4)
	e, db := newEngine(t, nil)
	for i := range 20 {
		putKey(t, e, "t", fmt.Sprint("k", i))
	}
	waitFor(t, "every commit published", func() bool { return e.DurableLSN() >= db.LastLSN() })
	if _, _, err := db.Trim(wal.Retention{MaxBytes: 1}, 100); err != nil {
		t.Fatal(err)
	}
	if db.FirstLSN() <= 17 {
		t.Skipf("retention kept the log from LSN %d", db.FirstLSN())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.Follow(0).Next(ctx); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("cursor behind the tail and the log: %v", err)
	}
	if start := e.tailStart(); start != 16 {
		t.Fatalf("tail starts after %d, want 16", start)
	}
	nextN(t, e.Follow(e.tailStart()), 16, 4)
	if err := e.ReadLog(16, 0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("ReadLog of trimmed records still in the tail: %v", err)
	}
}

// The same channel may watch a driver twice; each stop ends one watch, and
// a second stop of the last one is harmless.
func TestWatchDriverSameChannelTwice(t *testing.T) {
	e, _ := newEngine(t, nil)
	wake := make(chan struct{}, 1)
	stop1, err := e.WatchDriver("d", wake)
	if err != nil {
		t.Fatal(err)
	}
	stop2, err := e.WatchDriver("d", wake)
	if err != nil {
		t.Fatal(err)
	}
	stop1()
	if _, err := e.SubmitPoints(context.Background(), "d", pts(1, 2)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("the second watch ended with the first")
	}
	stop2()
	stop2()
}
