package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A power cut between Badger's ftruncate of a new memtable WAL or value
// log and its first sync leaves a zero-length file; Open must still work.
func TestOpenAfterEmptyLogFiles(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00042.mem", "000042.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatalf("open with empty log files: %v", err)
	}
	defer db.Close()
	if _, err := os.Stat(filepath.Join(dir, "00042.mem")); !os.IsNotExist(err) {
		t.Errorf("empty memtable file still there: %v", err)
	}
}

// A log record that comes back empty after a power cut makes Open fail,
// rather than serve a hole as data.
func TestOpenRefusesEmptyLogValue(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	b := db.Begin()
	mustPut(t, b, "t", "k1", `{"a":1}`)
	r := mustPut(t, b, "t", "k2", `{"a":2}`)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	if err := txn.Set(logKey(r.LSN), nil); err != nil {
		t.Fatal(err)
	}
	if err := db.commitTxn(txn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir, MemoryBytes: 32 << 20})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("lsn %d", r.LSN)) {
		t.Fatalf("open with an empty log record: %v, want an error naming lsn %d", err, r.LSN)
	}
}
