package wal

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// putBatch commits one batch of n puts to table t and answers its records.
func putBatch(t *testing.T, db *DB, n int, val string) []Record {
	t.Helper()
	b := db.Begin()
	var out []Record
	for i := 0; i < n; i++ {
		out = append(out, mustPut(t, b, "t", fmt.Sprint(i%7), val))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	return out
}

// logEntries counts the Badger entries of the log and the longest run.
func logEntries(t *testing.T, db *DB) (entries, longest int) {
	t.Helper()
	err := db.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			entries++
			last := binary.BigEndian.Uint64(it.Item().Key()[1:])
			if err := it.Item().Value(func(v []byte) error {
				_, n, err := entrySpan(last, v)
				longest = max(longest, n)
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries, longest
}

// A batch's records are stored as runs, and read back one by one from any
// LSN, up to any LSN, with any limit, as they were written.
func TestRunsReadFromAnyLSN(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	var all []Record
	all = append(all, putBatch(t, db, 1, `"one"`)...)   // a single record
	all = append(all, putBatch(t, db, 600, `"v"`)...)   // runs bounded by runMaxBytes
	all = append(all, putBatch(t, db, 3, `"three"`)...) // a short run
	perRun := runMaxBytes / recordSize(&all[5])
	if entries, longest := logEntries(t, db); longest != perRun || entries != 1+(600+perRun-1)/perRun+1 {
		t.Fatalf("%d entries, longest run %d; want runs of %d records", entries, longest, perRun)
	}
	last := db.LastLSN()
	if last != 604 {
		t.Fatalf("last %d", last)
	}
	for _, c := range []struct {
		after, upto uint64
		limit       int
	}{{0, last, 0}, {1, last, 0}, {2, 10, 0}, {100, 300, 0}, {256, 258, 0}, {257, 257, 0}, {0, last, 7}, {250, last, 20}, {600, last, 0}, {603, last, 0}} {
		var got []Record
		if err := db.ReadLog(c.after, c.upto, c.limit, func(r Record) error { got = append(got, r); return nil }); err != nil {
			t.Fatalf("read (%d,%d] limit %d: %v", c.after, c.upto, c.limit, err)
		}
		want := all[c.after:c.upto]
		if c.limit > 0 && len(want) > c.limit {
			want = want[:c.limit]
		}
		if len(got) != len(want) {
			t.Fatalf("read (%d,%d] limit %d: %d records, want %d", c.after, c.upto, c.limit, len(got), len(want))
		}
		for i := range got {
			w := want[i]
			if g := got[i]; g.LSN != w.LSN || g.Key != w.Key || string(g.Value) != string(w.Value) || g.Version != w.Version || g.Table != w.Table || g.Actor != w.Actor || g.Op != w.Op {
				t.Fatalf("read (%d,%d]: record %d is %+v, want %+v", c.after, c.upto, i, g, w)
			}
		}
	}
}

// A record larger than a run's budget is an entry of its own, and a run
// never grows past the budget.
func TestRunsBoundedInBytes(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	big := `"` + strings.Repeat("x", runMaxBytes) + `"`
	b := db.Begin()
	mustPut(t, b, "t", "a", `1`)
	mustPut(t, b, "t", "big", big)
	mustPut(t, b, "t", "b", `2`)
	for i := 0; i < 100; i++ {
		mustPut(t, b, "t", fmt.Sprint("m", i), `"`+strings.Repeat("y", 1000)+`"`)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	err := db.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			last := binary.BigEndian.Uint64(it.Item().Key()[1:])
			err := it.Item().Value(func(v []byte) error {
				_, n, err := entrySpan(last, v)
				if err != nil {
					return err
				}
				if n > 1 && len(v) > runMaxBytes+11+10*n {
					return fmt.Errorf("a run of %d records in %d bytes", n, len(v))
				}
				if n == 1 && last == 2 && len(v) < runMaxBytes {
					return fmt.Errorf("the big record is not alone in its entry")
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := logEntries(t, db); entries < 6 {
		t.Fatalf("%d entries for 1 + big + 1 + 100 records of 1 KB; want at least 6", entries)
	}
	recs := readAll(t, db, 0)
	if len(recs) != 103 || string(recs[1].Value) != big || recs[2].Key != "b" {
		t.Fatalf("read back %d records", len(recs))
	}
}

// Stores written before runs hold one record per entry; they are read as
// before, beside the runs written after them.
func TestRunsBesideSingleRecords(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	// Two records the old way: one entry each, written by hand.
	old := []Record{
		{LSN: 1, Op: OpPut, Actor: "test", CommittedAt: time.Unix(100, 0).UTC(), Version: 1, Table: "t", Key: "a", Value: []byte(`1`)},
		{LSN: 2, Op: OpDelete, Actor: "test", CommittedAt: time.Unix(101, 0).UTC(), Version: 2, Table: "t", Key: "a"},
	}
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	for i := range old {
		if err := txn.Set(logKey(old[i].LSN), appendRecord(nil, &old[i])); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Set([]byte("mlast"), be64(2)); err != nil {
		t.Fatal(err)
	}
	if err := db.commitTxn(txn); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, dir, nil)
	defer db.Close()
	putBatch(t, db, 10, `"new"`)
	recs := readAll(t, db, 0)
	if len(recs) != 12 || recs[0].Key != "a" || recs[1].Op != OpDelete || recs[2].LSN != 3 || string(recs[11].Value) != `"new"` {
		t.Fatalf("read %d records: %+v", len(recs), recs)
	}
	if got := readAll(t, db, 1); len(got) != 11 || got[0].LSN != 2 {
		t.Fatalf("read after 1: %d records", len(got))
	}
}

// Retention removes a run whole, only once its last record may go, and a
// reader after a removed run's records is told it missed them.
func TestRunsTrimmedWhole(t *testing.T) {
	clock := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	db := open(t, t.TempDir(), now)
	defer db.Close()
	putBatch(t, db, 10, `"old"`) // LSN 1-10, one run
	clock = clock.Add(2 * time.Hour)
	putBatch(t, db, 10, `"new"`) // LSN 11-20
	if n, recs, err := db.Trim(Retention{MaxAge: time.Hour}, 100); err != nil || n != 1 || recs != 10 {
		t.Fatalf("trim by age: %d entries, %d records, %v; want 1 and 10", n, recs, err)
	}
	if db.FirstLSN() != 11 {
		t.Fatalf("first %d after trimming the old run; want 11", db.FirstLSN())
	}
	if err := db.ReadLog(5, db.LastLSN(), 0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("read after 5: %v, want ErrTrimmed", err)
	}
	// Held after 15: the run 11-20 straddles it, so it stays whole.
	if n, _, err := db.Trim(Retention{MaxBytes: 1, Hold: true, HoldAfter: 15}, 100); err != nil || n != 0 {
		t.Fatalf("trim holding after 15: %d, %v; want 0", n, err)
	}
	if got := readAll(t, db, 10); len(got) != 10 {
		t.Fatalf("read after 10: %d records", len(got))
	}
}

// A run whose count does not fit its key is corrupt, and reading it names
// the entry.
func TestRunCorruptCount(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	recs := putBatch(t, db, 3, `1`)
	v := appendRun(nil, recs)
	v[1] = 9 // nine records cannot end at LSN 3
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	if err := txn.Set(logKey(3), v); err != nil {
		t.Fatal(err)
	}
	if err := db.commitTxn(txn); err != nil {
		t.Fatal(err)
	}
	err := db.ReadLog(0, 3, 0, func(Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "lsn 3") {
		t.Fatalf("read of a corrupt run: %v", err)
	}
}

// Records written past several memtables are flushed into compressed
// tables (Badger patch 8 compresses each block into a scratch buffer and
// copies it back over the block) and read back whole after a reopen, both
// compressible values and random ones that do not compress.
func TestRunsThroughFlushedTables(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 40 MB")
	}
	dir := t.TempDir()
	db := open(t, dir, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	for i := 0; i < 400; i++ {
		b := db.Begin()
		for j := 0; j < 100; j++ {
			var v []byte
			if (i+j)%3 == 0 {
				raw := make([]byte, 600)
				for k := range raw {
					raw[k] = byte(rnd.Uint32())
				}
				v = []byte(`"` + base64.StdEncoding.EncodeToString(raw) + `"`)
			} else {
				v = []byte(fmt.Sprintf(`{"seq":%d,"lat":52.%06d,"lng":4.%06d,"pad":%q}`, i*100+j, j, i, strings.Repeat("ab", 400)))
			}
			if _, err := b.Put("t", fmt.Sprint("k", j), v, "test", AnyVersion); err != nil {
				t.Fatal(err)
			}
			want = append(want, v)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, dir, nil)
	defer db.Close()
	got := readAll(t, db, 0)
	if len(got) != len(want) {
		t.Fatalf("read back %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Value, want[i]) {
			t.Fatalf("record %d differs after the flush", i+1)
		}
	}
	tables := 0
	for _, ti := range db.bdb.Tables() {
		if ti.Level >= 0 {
			tables++
		}
	}
	if tables == 0 {
		t.Fatalf("no table was flushed: the test read the memtables only")
	}
}

// Open marks the store with the log format it writes, and refuses a store
// marked with a later one instead of misreading it.
func TestLogFormatMarked(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	var have uint64
	if err := db.view(func(txn *badger.Txn) error {
		v, ok, err := getUint(txn, metaFormat)
		if !ok {
			return errors.New("no format mark")
		}
		have = v
		return err
	}); err != nil || have != logFormat {
		t.Fatalf("format mark %d, %v; want %d", have, err, logFormat)
	}
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	if err := txn.Set(metaFormat, be64(logFormat+1)); err != nil {
		t.Fatal(err)
	}
	if err := db.commitTxn(txn); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(Options{Dir: dir, MemoryBytes: 32 << 20})
	if err == nil || !strings.Contains(err.Error(), "log format is 3") {
		t.Fatalf("open of a store of a later format: %v", err)
	}
}

// A run's age is its newest record's: a standby replays records of several
// of its primary's batches into one run, and retention by age keeps the
// run while any of them is younger than the bound.
func TestRunAgedByItsNewestRecord(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	db := open(t, t.TempDir(), func() time.Time { return now })
	defer db.Close()
	b := db.Begin()
	for i, at := range []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-30 * time.Minute)} {
		if _, err := b.Replay(Record{LSN: uint64(i + 1), Op: OpPut, Actor: "dispatch", CommittedAt: at, Version: 1, Table: "t", Key: fmt.Sprint("k", i), Value: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, _, err := db.Trim(Retention{MaxAge: time.Hour}, 100); err != nil || n != 0 {
		t.Fatalf("trimmed %d entries (%v) of a run whose newest record is 30 minutes old", n, err)
	}
	if n, recs, err := db.Trim(Retention{MaxAge: 20 * time.Minute}, 100); err != nil || n != 1 || recs != 3 {
		t.Fatalf("trim past the newest record: %d entries, %d records, %v", n, recs, err)
	}
}
