package wal

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, dir string, now func() time.Time) *DB {
	t.Helper()
	db, err := Open(Options{Dir: dir, MemoryBytes: 32 << 20, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func mustPut(t *testing.T, b *Batch, table, key, val string) Record {
	t.Helper()
	r, err := b.Put(table, key, []byte(val), "test", AnyVersion)
	if err != nil {
		t.Fatalf("put %s/%s: %v", table, key, err)
	}
	return r
}

func readAll(t *testing.T, db *DB, after uint64) []Record {
	t.Helper()
	var out []Record
	if err := db.ReadLog(after, db.LastLSN(), 0, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatalf("read log after %d: %v", after, err)
	}
	return out
}

func TestBatchIsAtomicAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)

	b := db.Begin()
	r1 := mustPut(t, b, "positions", "d1", `{"seq":1}`)
	r2 := mustPut(t, b, "positions", "d1", `{"seq":2}`)
	r3 := mustPut(t, b, "loading", "e1", `{"dock":"4"}`)
	if err := b.SetIdem("warehouse", "k1", []byte("answer-1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if r1.LSN != 1 || r2.LSN != 2 || r3.LSN != 3 || r2.Version != 2 {
		t.Fatalf("lsn/version: %+v %+v %+v", r1, r2, r3)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}

	// A discarded batch leaves nothing: no state, no log, no LSN used.
	b = db.Begin()
	mustPut(t, b, "positions", "d2", `{"seq":1}`)
	if err := b.SetIdem("warehouse", "k2", []byte("x"), time.Hour); err != nil {
		t.Fatal(err)
	}
	b.Discard()
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = open(t, dir, nil)
	defer db.Close()
	if db.LastLSN() != 3 {
		t.Fatalf("recovered last LSN %d, want 3", db.LastLSN())
	}
	recs := readAll(t, db, 0)
	if len(recs) != 3 || string(recs[1].Value) != `{"seq":2}` || recs[2].Table != "loading" || recs[0].Actor != "test" {
		t.Fatalf("log after reopen: %+v", recs)
	}
	if recs[0].CommittedAt.IsZero() || !recs[0].CommittedAt.Equal(recs[2].CommittedAt) {
		t.Fatalf("committed_at not set once per batch: %v %v", recs[0].CommittedAt, recs[2].CommittedAt)
	}
	s, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, ok, err := s.Get("positions", "d1")
	if err != nil || !ok || string(st.Value) != `{"seq":2}` || st.Version != 2 || st.LSN != 2 {
		t.Fatalf("state positions/d1: %+v %v %v", st, ok, err)
	}
	if _, ok, _ := s.Get("positions", "d2"); ok {
		t.Fatal("discarded batch left state behind")
	}
	if s.LSN() != 3 {
		t.Fatalf("snapshot LSN %d, want 3", s.LSN())
	}
	ti, ok, err := s.Table("positions")
	if err != nil || !ok || ti.Keys != 1 || ti.LastLSN != 2 {
		t.Fatalf("table positions: %+v %v %v", ti, ok, err)
	}

	b = db.Begin()
	defer b.Discard()
	if a, ok, err := b.Idem("warehouse", "k1"); err != nil || !ok || string(a) != "answer-1" {
		t.Fatalf("idempotency k1: %q %v %v", a, ok, err)
	}
	if _, ok, _ := b.Idem("warehouse", "k2"); ok {
		t.Fatal("discarded idempotency entry came back")
	}
	// The next LSN follows the recovered one.
	if r := mustPut(t, b, "t", "k", `1`); r.LSN != 4 {
		t.Fatalf("first LSN after reopen %d, want 4", r.LSN)
	}
}

func TestConditionsAndDeletes(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	b := db.Begin()
	if _, err := b.Put("t", "k", []byte(`1`), "a", 3); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("put with version 3 on a missing key: %v", err)
	}
	r, err := b.Put("t", "k", []byte(`1`), "a", 0) // 0: create only
	if err != nil || r.Version != 1 {
		t.Fatalf("create: %+v %v", r, err)
	}
	if _, err := b.Put("t", "k", []byte(`2`), "a", 0); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("create of an existing key: %v", err)
	}
	if r, err = b.Put("t", "k", []byte(`2`), "a", 1); err != nil || r.Version != 2 {
		t.Fatalf("put if version 1: %+v %v", r, err)
	}
	if _, err := b.Delete("t", "k", "a", 1); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("delete with stale version: %v", err)
	}
	if _, err := b.Delete("t", "nope", "a", AnyVersion); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing key: %v", err)
	}
	if r, err = b.Delete("t", "k", "a", 2); err != nil || r.Op != OpDelete {
		t.Fatalf("delete: %+v %v", r, err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, db, 0)
	if len(recs) != 3 || recs[2].Op != OpDelete || recs[2].Value != nil {
		t.Fatalf("log: %+v", recs)
	}
	s, _ := db.Snapshot()
	defer s.Close()
	ti, ok, _ := s.Table("t")
	if !ok || ti.Keys != 0 || ti.LastLSN != 3 {
		t.Fatalf("table after delete: %+v", ti)
	}
}

func TestReadLogFromLSNAndScan(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	for i := 0; i < 10; i++ {
		b := db.Begin()
		for j := 0; j < 10; j++ {
			mustPut(t, b, fmt.Sprintf("t%d", j%3), fmt.Sprintf("k%02d", i*10+j), fmt.Sprint(i*10+j))
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	recs := readAll(t, db, 42)
	if len(recs) != 58 || recs[0].LSN != 43 || recs[57].LSN != 100 {
		t.Fatalf("read after 42: %d records, first %d", len(recs), recs[0].LSN)
	}
	// upto caps the read (the durable LSN), limit bounds it.
	var got []uint64
	if err := db.ReadLog(10, 20, 5, func(r Record) error { got = append(got, r.LSN); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[11 12 13 14 15]" {
		t.Fatalf("limit 5 after 10: %v", got)
	}
	got = nil
	if err := db.ReadLog(17, 20, 0, func(r Record) error { got = append(got, r.LSN); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[18 19 20]" {
		t.Fatalf("upto 20 after 17: %v", got)
	}

	s, _ := db.Snapshot()
	defer s.Close()
	var keys []string
	more, err := s.Scan("t1", "k10", 3, func(k string, st State) error { keys = append(keys, k); return nil })
	if err != nil || !more || fmt.Sprint(keys) != "[k11 k14 k17]" {
		t.Fatalf("scan t1 after k10: %v more=%v err=%v", keys, more, err)
	}
	var names []string
	if _, err := s.Tables("", 0, func(ti TableInfo) error { names = append(names, fmt.Sprint(ti.Name, ":", ti.Keys)); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[t0:40 t1:30 t2:30]" {
		t.Fatalf("tables: %v", names)
	}
}

func TestRetention(t *testing.T) {
	clock := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	dir := t.TempDir()
	db := open(t, dir, now)

	for i := 0; i < 50; i++ { // 50 old records, one per batch
		b := db.Begin()
		mustPut(t, b, "t", fmt.Sprint(i%5), `"old"`)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	advance(2 * time.Hour)
	for i := 0; i < 50; i++ {
		b := db.Begin()
		mustPut(t, b, "t", fmt.Sprint(i%5), `"new"`)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// By age, in bounded steps of 20.
	total := 0
	for {
		n, _, err := db.Trim(Retention{MaxAge: time.Hour}, 20)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n < 20 {
			break
		}
	}
	if total != 50 || db.FirstLSN() != 51 {
		t.Fatalf("trimmed %d, first %d; want 50 and 51", total, db.FirstLSN())
	}
	if err := db.ReadLog(10, db.LastLSN(), 0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("read after 10 once trimmed to 51: %v", err)
	}
	if recs := readAll(t, db, 50); len(recs) != 50 {
		t.Fatalf("read after 50: %d records", len(recs))
	}
	// By size: keep at most half of what is left.
	half := db.LogBytes() / 2
	if _, _, err := db.Trim(Retention{MaxBytes: half}, 1000); err != nil {
		t.Fatal(err)
	}
	if db.LogBytes() > half || db.FirstLSN() <= 51 {
		t.Fatalf("after size trim: %d bytes (bound %d), first %d", db.LogBytes(), half, db.FirstLSN())
	}
	first, bytes := db.FirstLSN(), db.LogBytes()
	db.Close()

	// The counters survive a reopen; state was never trimmed.
	db = open(t, dir, now)
	defer db.Close()
	if db.FirstLSN() != first || db.LogBytes() != bytes || db.LastLSN() != 100 {
		t.Fatalf("after reopen first %d bytes %d last %d; want %d %d 100", db.FirstLSN(), db.LogBytes(), db.LastLSN(), first, bytes)
	}
	s, _ := db.Snapshot()
	defer s.Close()
	if ti, _, _ := s.Table("t"); ti.Keys != 5 {
		t.Fatalf("keys after trim: %d", ti.Keys)
	}
	// Trimming everything keeps the LSN counter.
	if _, _, err := db.Trim(Retention{MaxBytes: 1}, 1000); err != nil {
		t.Fatal(err)
	}
	if db.FirstLSN() != 101 {
		t.Fatalf("first after trimming all: %d", db.FirstLSN())
	}
	b := db.Begin()
	if r := mustPut(t, b, "t", "x", `1`); r.LSN != 101 {
		t.Fatalf("LSN after trimming all: %d", r.LSN)
	}
	b.Discard()
}

// Readers run beside the writer and always see a gap-free prefix.
func TestConcurrentReadersSeeGapFreePrefix(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				want := uint64(1)
				if err := db.ReadLog(0, db.LastLSN(), 0, func(rec Record) error {
					if rec.LSN != want {
						return fmt.Errorf("got lsn %d, want %d", rec.LSN, want)
					}
					want++
					return nil
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		b := db.Begin()
		for j := 0; j < 5; j++ {
			mustPut(t, b, "t", fmt.Sprint(j), fmt.Sprint(i))
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestPutSeriesKeepsEveryRecordAndTheLatestState(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	b := db.Begin()
	mustPut(t, b, "positions", "d1", `{"seq":1}`)
	recs, err := b.PutSeries("positions", "d1", [][]byte{[]byte(`{"seq":2}`), []byte(`{"seq":3}`), []byte(`{"seq":4}`)}, "driver")
	if err != nil || len(recs) != 3 || recs[0].LSN != 2 || recs[2].Version != 4 {
		t.Fatalf("put series: %+v %v", recs, err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, db, 0); len(got) != 4 || string(got[3].Value) != `{"seq":4}` {
		t.Fatalf("log: %+v", got)
	}
	s, _ := db.Snapshot()
	defer s.Close()
	st, _, _ := s.Get("positions", "d1")
	ti, _, _ := s.Table("positions")
	if string(st.Value) != `{"seq":4}` || st.Version != 4 || st.LSN != 4 || ti.Keys != 1 {
		t.Fatalf("state %+v table %+v", st, ti)
	}
}

// TestRetentionHold: records after Hold's LSN (a shipper's unshipped
// records) outlive the age and size bounds until the log passes
// HoldMaxBytes; then the oldest of them go, and only as many as the budget
// needs.
func TestRetentionHold(t *testing.T) {
	clock := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	db := open(t, t.TempDir(), now)
	for i := 0; i < 100; i++ {
		b := db.Begin()
		mustPut(t, b, "t", fmt.Sprint(i%5), `"a value of some length"`)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	clock = clock.Add(2 * time.Hour)
	mu.Unlock()
	size := db.LogBytes()
	// Everything is old, but only what was shipped (up to 40) goes.
	if _, _, err := db.Trim(Retention{MaxAge: time.Hour, MaxBytes: 1, Hold: true, HoldAfter: 40, HoldMaxBytes: size * 2}, 1000); err != nil {
		t.Fatal(err)
	}
	if db.FirstLSN() != 41 {
		t.Fatalf("first %d after a trim holding after 40; want 41", db.FirstLSN())
	}
	// Past the budget the oldest unshipped records go, down to it.
	budget := db.LogBytes() / 2
	if _, _, err := db.Trim(Retention{MaxAge: time.Hour, Hold: true, HoldAfter: 40, HoldMaxBytes: budget}, 1000); err != nil {
		t.Fatal(err)
	}
	if db.LogBytes() > budget || db.FirstLSN() <= 41 || db.FirstLSN() > 80 {
		t.Fatalf("log %d bytes (budget %d), first %d after a trim past the budget", db.LogBytes(), budget, db.FirstLSN())
	}
	first := db.FirstLSN()
	// Within the budget nothing held goes.
	if n, _, err := db.Trim(Retention{MaxAge: time.Hour, Hold: true, HoldAfter: 40, HoldMaxBytes: budget}, 1000); err != nil || n != 0 {
		t.Fatalf("trim within the budget: %d, %v; want 0", n, err)
	}
	// Without Hold, age takes all.
	if _, _, err := db.Trim(Retention{MaxAge: time.Hour}, 1000); err != nil {
		t.Fatal(err)
	}
	if db.FirstLSN() != 101 || first >= 101 {
		t.Fatalf("first %d after a trim without hold; want 101", db.FirstLSN())
	}
}
