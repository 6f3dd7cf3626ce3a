package wal

import (
	"fmt"
	"testing"
	"time"
)

func idemEntries(t *testing.T, db *DB, after, upto uint64) []IdemEntry {
	t.Helper()
	var out []IdemEntry
	if err := db.IdemEntries(after, upto, func(e IdemEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// An idempotency entry tied to its record is found by its key (a retry)
// and, in LSN order, with its record (a log shipper); one without a record
// only by its key.
func TestIdemEntriesWithTheirRecords(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	b := db.Begin()
	mustPut(t, b, "t", "a", `{"n":1}`)
	r2 := mustPut(t, b, "t", "b", `{"n":1}`)
	if err := b.SetIdemFor(r2.LSN, "dispatch", "k-2", []byte("answer-2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.SetIdem("dispatch", "loose", []byte("x"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.SetIdemFor(9, "dispatch", "k-9", []byte("x"), time.Hour); err == nil {
		t.Fatal("an entry tied to a record not in the batch was taken")
	}
	if err := b.SetIdem("", "k", []byte("x"), 0); err == nil {
		t.Fatal("an entry of the reserved empty scope was taken")
	}
	r3 := mustPut(t, b, "t", "c", "{}")
	if err := b.SetIdemFor(r3.LSN, "phone", "k\x00odd\xff", []byte{0, 1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	got := idemEntries(t, db, 0, 3)
	exp := uint64(time.Now().Add(time.Hour).Unix())
	if len(got) != 2 || got[0].LSN != 2 || got[0].Scope != "dispatch" || got[0].Key != "k-2" || string(got[0].Answer) != "answer-2" ||
		got[0].ExpiresAt+5 < exp || got[0].ExpiresAt > exp ||
		got[1].LSN != 3 || got[1].Scope != "phone" || got[1].Key != "k\x00odd\xff" || fmt.Sprint(got[1].Answer) != "[0 1 2]" || got[1].ExpiresAt != 0 {
		t.Fatalf("entries of lsn 1..3: %+v", got)
	}
	if got := idemEntries(t, db, 2, 3); len(got) != 1 || got[0].LSN != 3 {
		t.Fatalf("entries of lsn 3: %+v", got)
	}
	if got := idemEntries(t, db, 0, 1); len(got) != 0 {
		t.Fatalf("entries of lsn 1: %+v", got)
	}
	b = db.Begin()
	defer b.Discard()
	for _, k := range []string{"k-2", "loose"} {
		if _, ok, err := b.Idem("dispatch", k); err != nil || !ok {
			t.Fatalf("idempotency key %s: %v %v", k, ok, err)
		}
	}
}

// A standby replays a shipped entry with its record, expiring when it
// expires on the primary; an expired one is dropped, and one whose record
// the batch did not replay is refused.
func TestReplayIdem(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	defer db.Close()
	at := time.Now().UTC()
	b := db.Begin()
	for lsn := uint64(1); lsn <= 3; lsn++ {
		if ok, err := b.Replay(Record{LSN: lsn, Table: "assignments", Key: fmt.Sprint("r", lsn), Op: OpPut, Value: []byte("{}"), Version: 1, Actor: "dispatch", CommittedAt: at}); err != nil || !ok {
			t.Fatalf("replay lsn %d: %v %v", lsn, ok, err)
		}
	}
	future := uint64(time.Now().Add(90 * time.Minute).Unix())
	if ok, err := b.ReplayIdem(IdemEntry{LSN: 1, Scope: "dispatch", Key: "live", Answer: []byte("a1"), ExpiresAt: future}); err != nil || !ok {
		t.Fatalf("replay a live entry: %v %v", ok, err)
	}
	if ok, err := b.ReplayIdem(IdemEntry{LSN: 2, Scope: "dispatch", Key: "old", Answer: []byte("a2"), ExpiresAt: uint64(time.Now().Add(-time.Second).Unix())}); err != nil || ok {
		t.Fatalf("replay an expired entry: %v %v", ok, err)
	}
	if ok, err := b.ReplayIdem(IdemEntry{LSN: 3, Scope: "dispatch", Key: "forever", Answer: []byte("a3")}); err != nil || !ok {
		t.Fatalf("replay an entry without expiry: %v %v", ok, err)
	}
	if _, err := b.ReplayIdem(IdemEntry{LSN: 4, Scope: "dispatch", Key: "later", Answer: []byte("a4")}); err == nil {
		t.Fatal("an entry of a record the batch did not replay was taken")
	}
	if _, err := b.ReplayIdem(IdemEntry{LSN: 1, Key: "x"}); err == nil {
		t.Fatal("an entry of the empty scope was taken")
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	got := idemEntries(t, db, 0, 10)
	if len(got) != 2 || got[0].LSN != 1 || got[0].Key != "live" || got[0].ExpiresAt != future || got[1].LSN != 3 || got[1].ExpiresAt != 0 {
		t.Fatalf("replayed entries: %+v", got)
	}
	b = db.Begin()
	defer b.Discard()
	if v, ok, err := b.Idem("dispatch", "live"); err != nil || !ok || string(v) != "a1" {
		t.Fatalf("replayed entry: %q %v %v", v, ok, err)
	}
	if _, ok, _ := b.Idem("dispatch", "old"); ok {
		t.Fatal("an expired entry was replayed")
	}
}
