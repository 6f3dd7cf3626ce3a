package wal

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestBackupRestore: a backup taken while the writer goes on holds exactly
// the store at the snapshot's LSN (state, log, idempotency entries and
// counters); the restored store continues the LSN sequence; Restore
// refuses a non-empty directory.
func TestBackupRestore(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	commit := func(i int) {
		b := db.Begin()
		mustPut(t, b, "t", fmt.Sprint("k", i%7), fmt.Sprintf(`{"i":%d}`, i))
		if i%10 == 0 {
			if err := b.SetIdem("dispatch", fmt.Sprint("idem-", i), []byte(fmt.Sprint(i)), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		commit(i)
	}
	snap, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	lsn := snap.LSN()
	for i := 200; i < 300; i++ { // after the snapshot: not in the backup
		commit(i)
	}
	var buf bytes.Buffer
	if err := snap.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	snap.Close()

	dir := filepath.Join(t.TempDir(), "store")
	if err := Restore(dir, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := Restore(dir, bytes.NewReader(buf.Bytes())); err == nil {
		t.Fatal("restore into a non-empty directory accepted")
	}
	rdb := open(t, dir, nil)
	defer rdb.Close()
	if rdb.LastLSN() != lsn || rdb.FirstLSN() != 1 {
		t.Fatalf("restored store: last %d first %d; want %d and 1", rdb.LastLSN(), rdb.FirstLSN(), lsn)
	}
	n := uint64(0)
	if err := rdb.ReadLog(0, rdb.LastLSN(), 0, func(r Record) error {
		n++
		if r.LSN != n {
			return fmt.Errorf("lsn %d at position %d", r.LSN, n)
		}
		return nil
	}); err != nil || n != lsn {
		t.Fatalf("restored log: %d records (%v); want %d", n, err, lsn)
	}
	rs, err := rdb.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	st, ok, err := rs.Get("t", "k3")
	rs.Close()
	if err != nil || !ok || string(st.Value) != `{"i":199}` {
		t.Fatalf("restored k3: %s %v %v; want the value of write 199", st.Value, ok, err)
	}
	b := rdb.Begin()
	if v, ok, err := b.Idem("dispatch", "idem-190"); err != nil || !ok || string(v) != "190" {
		t.Fatalf("restored idempotency entry: %q %v %v", v, ok, err)
	}
	if _, ok, _ := b.Idem("dispatch", "idem-200"); ok {
		t.Fatal("an idempotency entry after the snapshot was restored")
	}
	r := mustPut(t, b, "t", "next", `1`)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if r.LSN != lsn+1 {
		t.Fatalf("first write after restore: lsn %d, want %d", r.LSN, lsn+1)
	}
}
