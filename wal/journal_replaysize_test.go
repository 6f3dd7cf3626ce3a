package wal

import (
	"fmt"
	"strings"
	"testing"
)

// Found in review: Open re-applies every journaled frame above the store's last LSN
// in ONE batch. Each engine batch is capped at 80% of the transaction
// limit, but the journal can hold up to 8 MiB of frames the log's fsync has
// not covered (batches committed while one fsync is in flight). After a
// power cut that loses the log's tail, Open fails with a transaction too
// big: the store cannot be opened, and the acknowledged writes are stuck.
func TestJournalReplaysInBatchesBelowTheTxnLimit(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	durable := copyDir(t, dir, func(n string) bool { return !isJournal(n) && n != "LOCK" })
	db = open(t, dir, nil)
	limit := db.MaxBatchBytes()
	val := `"` + strings.Repeat("v", int(limit*8/10/3)) + `"` // one batch: ~27% of the limit in the engine's accounting
	var frames []JournalFrame
	for i := range 4 {
		b := db.Begin()
		b.Journal(true)
		mustPut(t, b, "notes", fmt.Sprint("k", i), val)
		if err := b.Commit(); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		f, _ := b.JournalFrame()
		frames = append(frames, f)
	}
	if n, err := db.JournalWrite(frames, 0); err != nil || n != 4 {
		t.Fatal(n, err)
	}
	// all four answered; the log's fsync never ran: power cut
	lost := copyDir(t, durable, func(string) bool { return true })
	copyJournals(t, dir, lost)
	db.Close()
	re, err := Open(Options{Dir: lost, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatalf("open after the cut (txn limit %d bytes, 4 answered batches of %d-byte values): %v", limit, len(val), err)
	}
	defer re.Close()
	if re.LastLSN() != 4 {
		t.Fatalf("last %d", re.LastLSN())
	}
}
