package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// copyDir copies the regular files of src into a new dir: the store as a
// power cut would leave it when only what was synced by then survived.
func copyDir(t *testing.T, src string, names func(string) bool) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !names(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func isJournal(name string) bool { return name == journalNames[0] || name == journalNames[1] }

// A batch whose journaled writes reached the journal but whose log never
// reached the disk: a store that holds only the synced prefix re-applies
// them at their LSNs on Open, with void records where the lost unjournaled
// records were, their idempotency entries and the table counters.
func TestJournalReplaysWhatTheLogLost(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	b := db.Begin()
	mustPut(t, b, "t", "a", `{"n":1}`)
	mustPut(t, b, "t", "gone", `{"n":1}`)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The store as it is durable at LSN 2 (closed: everything flushed).
	durable := copyDir(t, dir, func(n string) bool { return !isJournal(n) && n != "LOCK" })

	db = open(t, dir, nil)
	defer db.Close()
	b = db.Begin()
	if _, err := b.PutSeries("pos", "van", [][]byte{[]byte(`{"seq":1}`), []byte(`{"seq":2}`)}, "driver"); err != nil {
		t.Fatal(err)
	}
	b.Journal(true)
	mustPut(t, b, "t", "a", `{"n":2}`) // version 2
	if _, err := b.Delete("t", "gone", "test", AnyVersion); err != nil {
		t.Fatal(err)
	}
	if err := b.SetIdem("tables", "key-1", []byte("answer"), time.Hour); err != nil {
		t.Fatal(err)
	}
	rnew := mustPut(t, b, "u", "new", `{"n":1}`)
	if err := b.SetIdemFor(rnew.LSN, "tables", "key-2", []byte("answer-2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	b.Journal(false)
	if _, err := b.PutSeries("pos", "van", [][]byte{[]byte(`{"seq":3}`)}, "driver"); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	f, ok := b.JournalFrame()
	if !ok || f.Last != 7 {
		t.Fatalf("journal frame %v last %d, want the batch's journaled writes up to lsn 7", ok, f.Last)
	}
	if n, err := db.JournalWrite([]JournalFrame{f}, 2); err != nil || n != 1 {
		t.Fatalf("journal write: %d %v", n, err)
	}
	// The power cut: the log's fsync never ran; the journal was synced.
	lost := copyDir(t, durable, func(string) bool { return true })
	for _, name := range journalNames {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lost, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	re := open(t, lost, nil)
	defer re.Close()
	if re.LastLSN() != 7 {
		t.Fatalf("last lsn %d after the replay, want 7 (the journaled writes end there; lsn 8 was never answered)", re.LastLSN())
	}
	recs := readAll(t, re, 0)
	want := []string{"t/a put", "t/gone put", "$void/lost delete", "$void/lost delete", "t/a put", "t/gone delete", "u/new put"}
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s/%s %s", r.Table, r.Key, r.Op))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log after the replay:\n got %v\nwant %v", got, want)
	}
	if recs[4].LSN != 5 || recs[4].Version != 2 || string(recs[4].Value) != `{"n":2}` {
		t.Fatalf("replayed put: %+v", recs[4])
	}
	snap, err := re.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if st, ok, err := snap.Get("t", "a"); err != nil || !ok || st.Version != 2 || st.LSN != 5 {
		t.Fatalf("t/a after the replay: %+v %v %v", st, ok, err)
	}
	if _, ok, _ := snap.Get("t", "gone"); ok {
		t.Fatal("a journaled delete was not re-applied")
	}
	if _, ok, _ := snap.Get("pos", "van"); ok {
		t.Fatal("an unjournaled write came back")
	}
	for name, keys := range map[string]int64{"t": 1, "u": 1} {
		ti, ok, err := snap.Table(name)
		if err != nil || !ok || ti.Keys != keys {
			t.Fatalf("table %s after the replay: %+v %v %v, want %d keys", name, ti, ok, err, keys)
		}
	}
	b = re.Begin()
	v, ok, err := b.Idem("tables", "key-1")
	b.Discard()
	if err != nil || !ok || string(v) != "answer" {
		t.Fatalf("idempotency entry after the replay: %q %v %v", v, ok, err)
	}
	// The entry tied to its record comes back with it, and its copy too
	// (a log shipper finds it with the record), at its own expiry.
	var ents []IdemEntry
	if err := re.IdemEntries(0, 7, func(e IdemEntry) error { ents = append(ents, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if exp := uint64(time.Now().Add(time.Hour).Unix()); len(ents) != 1 || ents[0].LSN != 7 || ents[0].Key != "key-2" || string(ents[0].Answer) != "answer-2" ||
		ents[0].ExpiresAt+5 < exp || ents[0].ExpiresAt > exp {
		t.Fatalf("idempotency entries tied to records after the replay: %+v", ents)
	}
	b = re.Begin()
	v, ok, err = b.Idem("tables", "key-2")
	b.Discard()
	if err != nil || !ok || string(v) != "answer-2" {
		t.Fatalf("idempotency entry of lsn 7 after the replay: %q %v %v", v, ok, err)
	}
	// Opened again: nothing more to replay, the LSNs go on.
	if err := re.Close(); err != nil {
		t.Fatal(err)
	}
	re = open(t, lost, nil)
	if re.LastLSN() != 7 || len(readAll(t, re, 0)) != 7 {
		t.Fatalf("second open: last %d, %d records", re.LastLSN(), len(readAll(t, re, 0)))
	}
}

// journalFrames writes n journaled single-put batches of size bytes each
// and returns their frames.
func journalFrames(t *testing.T, db *DB, n, size int) []JournalFrame {
	t.Helper()
	var out []JournalFrame
	val := make([]byte, size)
	for i := range val {
		val[i] = 'x'
	}
	for i := range n {
		b := db.Begin()
		b.Journal(true)
		mustPut(t, b, "t", fmt.Sprint("k", i), `"`+string(val)+`"`)
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		f, ok := b.JournalFrame()
		if !ok {
			t.Fatal("no frame")
		}
		out = append(out, f)
	}
	return out
}

// The two files are used in turn: a file is started anew only when the
// log covers what it holds, and frames that find no room are left to the
// log's fsync (JournalWrite answers how many it made durable).
func TestJournalTakesTurnsOnlyOverCoveredFrames(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	frames := journalFrames(t, db, 50, 200<<10) // 50 × 200 KiB: more than the two files hold
	perFile := journalFileBytes / (journalHeader + len(frames[0].data))
	n, err := db.JournalWrite(frames, 0)
	if err != nil || n != 2*perFile || db.journal.cur != 1 {
		t.Fatalf("%d frames durable, now in file %d (%v); want %d, both files filled", n, db.journal.cur, err, 2*perFile)
	}
	rest := frames[n:]
	// Both files hold frames the log does not cover: no room.
	if k, err := db.JournalWrite(rest, 0); err != nil || k != 0 {
		t.Fatalf("with both files holding uncovered frames: %d durable (%v), want 0", k, err)
	}
	// The second file is not covered, the first is not either: still none.
	if k, err := db.JournalWrite(rest, frames[perFile-2].Last); err != nil || k != 0 {
		t.Fatalf("with the first file partly covered: %d durable (%v), want 0", k, err)
	}
	n = perFile
	// The log covers the first file: it starts anew, in a new generation.
	gen := db.journal.gen
	k, err := db.JournalWrite(rest, frames[n-1].Last)
	if err != nil || k != len(rest) || db.journal.cur != 0 || db.journal.gen != gen+1 {
		t.Fatalf("after the log covered the first file: %d of %d durable in file %d gen %d (%v)", k, len(rest), db.journal.cur, db.journal.gen, err)
	}
	// Covered frames count as durable without a write.
	if k, err := db.JournalWrite(frames[:3], frames[2].Last); err != nil || k != 3 {
		t.Fatalf("covered frames: %d %v", k, err)
	}
	// The first file read back: only this generation's frames, not the
	// older ones after them.
	got, g, err := readJournalFile(filepath.Join(db.dir, journalNames[0]))
	if err != nil || g != gen+1 || len(got) != len(rest) {
		t.Fatalf("read back %d frames of gen %d (%v), want %d of gen %d", len(got), g, err, len(rest), gen+1)
	}
}

// A torn frame ends the file: the frames before it are read, none after.
func TestJournalStopsAtATornFrame(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	frames := journalFrames(t, db, 3, 100)
	if n, err := db.JournalWrite(frames, 0); err != nil || n != 3 {
		t.Fatalf("%d %v", n, err)
	}
	path := filepath.Join(db.dir, journalNames[0])
	db.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	second := journalHeader + len(frames[0].data)
	data[second+journalHeader+5] ^= 0xff // inside the second frame's payload
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, err := readJournalFile(path)
	if err != nil || len(got) != 1 {
		t.Fatalf("read %d frames (%v), want the one before the torn one", len(got), err)
	}
	// A whole frame that does not decode is refused, not skipped.
	bad := make([]byte, journalFileBytes)
	payload := []byte{5} // five records announced, none there
	binary.LittleEndian.PutUint32(bad, uint32(len(payload)))
	binary.LittleEndian.PutUint64(bad[8:], 1)
	binary.LittleEndian.PutUint64(bad[16:], 9)
	copy(bad[journalHeader:], payload)
	binary.LittleEndian.PutUint32(bad[4:], frameCRC(0, bad[8:journalHeader+len(payload)]))
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readJournalFile(path); !errors.Is(err, errJournalFrame) {
		t.Fatalf("an undecodable whole frame: %v", err)
	}
}

// A failed journal write fails the store, as a failed Sync does.
func TestJournalWriteFailureFailsTheStore(t *testing.T) {
	fail := false
	db, err := Open(Options{Dir: t.TempDir(), MemoryBytes: 32 << 20, Fail: func(op string) error {
		if op == "journal" && fail {
			return errors.New("injected")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	frames := journalFrames(t, db, 2, 10)
	fail = true
	if n, err := db.JournalWrite(frames, 0); err == nil || n != 0 || !db.Failed() {
		t.Fatalf("journal write with a failing disk: %d %v failed=%v", n, err, db.Failed())
	}
	if _, err := db.JournalWrite(frames, 0); !errors.Is(err, ErrFailed) {
		t.Fatalf("journal write on a failed store: %v", err)
	}
}
