package wal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func copyJournals(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range journalNames {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Found in review: the generation a reopened journal takes is max(first frames'
// generations)+1. A power cut that drops the first page of a multi-page
// journal write but keeps a later page leaves whole frames of generation
// G+1 behind a torn first frame; the next open reads G and writes G+1 again
// from offset 0. When its frames end where a stale frame starts, the next
// open reads the stale frame as current and replays a write that was never
// answered over one that was.
func TestJournalGenerationIsNeverReused(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	b := db.Begin()
	mustPut(t, b, "t", "base", `1`)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Process A: two journaled batches (LSN 2, 3) go to the journal in one
	// write; the power cut comes before its fdatasync returns: nothing of
	// it was answered.
	db = open(t, dir, nil)
	// What A's Open synced (the log at LSN 1, its journal generation).
	durable := copyDir(t, dir, func(n string) bool { return !isJournal(n) && n != "LOCK" })
	val := strings.Repeat("x", 5000)
	var frames []JournalFrame
	for _, v := range []string{"A2", "A3"} {
		b := db.Begin()
		b.Journal(true)
		mustPut(t, b, "t", "k", `"`+v+val+`"`)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		f, _ := b.JournalFrame()
		frames = append(frames, f)
	}
	if n, err := db.JournalWrite(frames, 1); err != nil || n != 2 {
		t.Fatal(n, err)
	}
	// The cut: the log lost LSN 2-3; of the journal write's pages the
	// first never reached the disk, the later ones did.
	lost := copyDir(t, durable, func(string) bool { return true })
	copyJournals(t, dir, lost)
	j0 := filepath.Join(lost, journalNames[0])
	data, _ := os.ReadFile(j0)
	clear(data[:4096])
	os.WriteFile(j0, data, 0o600)
	db.Close()

	// Process B: LSN 2 again, a dispatch-like write, answered by the journal.
	bdb := open(t, lost, nil)
	if bdb.LastLSN() != 1 {
		t.Fatalf("B starts at %d", bdb.LastLSN())
	}
	t.Logf("B's journal generation %d", bdb.journal.gen)
	durableB := copyDir(t, lost, func(n string) bool { return !isJournal(n) && n != "LOCK" }) // what B's Open synced
	b = bdb.Begin()
	b.Journal(true)
	mustPut(t, b, "t", "k", `"B2`+val+`"`)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	f, _ := b.JournalFrame()
	if n, err := bdb.JournalWrite([]JournalFrame{f}, 1); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	// ANSWERED: k = B2 at LSN 2. A power cut before the log's fsync.
	lost2 := copyDir(t, durableB, func(string) bool { return true })
	copyJournals(t, lost, lost2)
	bdb.Close()

	c := open(t, lost2, nil)
	defer c.Close()
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	st, _, _ := snap.Get("t", "k")
	got := string(st.Value)
	if len(got) > 3 {
		got = got[:3]
	}
	if c.LastLSN() != 2 || got != `"B2` {
		t.Fatalf("after the second cut: last lsn %d (want 2), t/k = %s... (want the answered B2): a frame from process A, never answered, was replayed", c.LastLSN(), got)
	}
}
