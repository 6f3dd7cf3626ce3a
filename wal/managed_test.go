package wal

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// versions counts the Badger versions of one state key that compaction
// kept, read at the newest version.
func versions(t *testing.T, db *DB, table, key string) int {
	t.Helper()
	txn := db.bdb.NewTransactionAt(db.ts.Load(), false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: stateKey(table, key)})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// In managed mode Badger keeps every version until told what no reader
// needs: the store must tell it (ReleaseVersions), or a key overwritten by
// every driver point grows without bound. And it must never discard what an
// open snapshot still reads.
func TestManagedVersionsAreDiscardedButNotUnderAReader(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	put := func(val string) {
		b := db.Begin()
		mustPut(t, b, "t", "k", val)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Four memtables of versions, each flushed to a table by Close: with
	// more than one level or three L0 tables, Flatten below compacts.
	for c := 0; c < 4; c++ {
		for i := 0; i < 20; i++ {
			put(`{"n":1}`)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		v := db.ts.Load()
		db = open(t, dir, nil)
		// The versions go on from the newest in the store.
		if db.ts.Load() != v {
			t.Fatalf("reopened at version %d, want %d", db.ts.Load(), v)
		}
	}
	put(`{"n":2}`)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, nil)
	defer db.Close()
	snap, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	put(`{"n":3}`) // in the memtable: not compacted, above the snapshot
	db.ReleaseVersions()
	if err := db.bdb.Flatten(1); err != nil {
		t.Fatal(err)
	}
	st, ok, err := snap.Get("t", "k")
	if err != nil || !ok || string(st.Value) != `{"n":2}` {
		t.Fatalf("snapshot read %q %v %v after compaction, want the value it saw", st.Value, ok, err)
	}
	if db.discardTs != snap.ts {
		t.Fatalf("discard version %d under a snapshot at %d", db.discardTs, snap.ts)
	}
	if n := versions(t, db, "t", "k"); n > 2 {
		t.Fatalf("%d versions kept under an open snapshot, want the snapshot's and the newer one", n)
	}
	snap.Close()
	// No reader: everything below the newest commit may go.
	db.ReleaseVersions()
	if db.discardTs != db.ts.Load() {
		t.Fatalf("discard version %d, want the last commit %d", db.discardTs, db.ts.Load())
	}
}
