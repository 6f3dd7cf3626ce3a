package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"routehound/wal"
)

// wholeLog reads an engine's whole log.
func wholeLog(t *testing.T, e *Engine) []Record {
	t.Helper()
	var out []Record
	from := max(e.StoreStats().FirstLSN, 1) - 1
	if err := e.ReadLog(from, 0, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// tablesOf reads every table's rows: table → key → state.
func tablesOf(t *testing.T, e *Engine) map[string]map[string]State {
	t.Helper()
	s, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[string]map[string]State{}
	var names []TableInfo
	if _, err := s.Tables("", 0, func(ti TableInfo) error { names = append(names, ti); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, ti := range names {
		rows := map[string]State{}
		if _, err := s.Scan(ti.Name, "", 0, func(k string, st State) error { rows[k] = st; return nil }); err != nil {
			t.Fatal(err)
		}
		if int64(len(rows)) != ti.Keys {
			t.Errorf("table %s: %d rows, its counter says %d", ti.Name, len(rows), ti.Keys)
		}
		out[ti.Name] = rows
	}
	return out
}

func sameRecord(a, b Record) bool {
	return a.LSN == b.LSN && a.Table == b.Table && a.Key == b.Key && a.Op == b.Op && a.Version == b.Version &&
		a.Actor == b.Actor && a.CommittedAt.Equal(b.CommittedAt) && bytes.Equal(a.Value, b.Value)
}

// A standby's engine refuses every write with ErrNotPrimary, takes the
// primary's records at their own LSNs, versions and commit times (a record
// sent twice changes nothing), publishes them on its durability feed, and
// ends with the primary's log and tables; promoted, it writes again, its
// LSNs following the last record applied and its drivers' seqs reloaded.
func TestApplyFollowedMirrorsThePrimary(t *testing.T) {
	ctx := context.Background()
	p, _ := newEngine(t, nil)
	for i := range 20 {
		if _, err := p.PutKey(ctx, Write{Table: "notes", Key: fmt.Sprint("k", i%7), Value: fmt.Appendf(nil, `{"i":%d}`, i), IfVersion: wal.AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.PutKey(ctx, Write{Table: "notes", Key: "k3", Delete: true, IfVersion: wal.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutAssignment(ctx, "r1", []byte(`{"driver":"van-1","stops":[]}`), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SubmitPoints(ctx, "van-1", pts(1, 50)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the points to be durable", func() bool { s, _ := p.DriverDurableSeq("van-1"); return s == 50 })
	// The durable seq moves just before the batch's records are published.
	if err := p.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	plog := wholeLog(t, p)
	last := plog[len(plog)-1].LSN

	s, _ := newEngine(t, nil)
	s.SetNotPrimary("a standby")
	if _, err := s.PutKey(ctx, Write{Table: "notes", Key: "x", Value: []byte(`1`), IfVersion: wal.AnyVersion}); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("a write on the standby: %v, want ErrNotPrimary", err)
	}
	if _, err := s.SubmitPoints(ctx, "van-1", pts(1, 1)); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("driver points on the standby: %v, want ErrNotPrimary", err)
	}
	// A reader of the standby's feed from the start.
	cur := s.Follow(0)
	// In two parts, the second overlapping the first (a re-sent record).
	half := len(plog) / 2
	if got, err := s.ApplyFollowed(ctx, plog[:half]); err != nil || got != plog[half-1].LSN {
		t.Fatalf("apply the first half: %d %v", got, err)
	}
	if got, err := s.ApplyFollowed(ctx, plog[half-3:]); err != nil || got != last {
		t.Fatalf("apply the rest: %d %v", got, err)
	}
	if s.DurableLSN() != last {
		t.Fatalf("standby durable lsn %d, want %d", s.DurableLSN(), last)
	}
	var fed []Record
	for len(fed) < len(plog) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		recs, err := cur.Next(cctx)
		cancel()
		if err != nil {
			t.Fatalf("the standby's feed after %d records: %v", len(fed), err)
		}
		fed = append(fed, recs...)
	}
	slog := wholeLog(t, s)
	if len(slog) != len(plog) || len(fed) != len(plog) {
		t.Fatalf("standby log %d records, feed %d, primary %d", len(slog), len(fed), len(plog))
	}
	for i := range plog {
		if !sameRecord(plog[i], slog[i]) || !sameRecord(plog[i], fed[i]) {
			t.Fatalf("record %d: primary %+v, standby %+v, feed %+v", i, plog[i], slog[i], fed[i])
		}
	}
	pt, st := tablesOf(t, p), tablesOf(t, s)
	if len(pt) != len(st) {
		t.Fatalf("tables: primary %d, standby %d", len(pt), len(st))
	}
	for name, rows := range pt {
		for k, v := range rows {
			w, ok := st[name][k]
			if !ok || w.Version != v.Version || w.LSN != v.LSN || !bytes.Equal(w.Value, v.Value) {
				t.Fatalf("%s/%s: primary %+v, standby %+v (%v)", name, k, v, w, ok)
			}
		}
		if len(rows) != len(st[name]) {
			t.Fatalf("table %s: primary %d keys, standby %d", name, len(rows), len(st[name]))
		}
	}

	// Promoted: writes again, after the last record applied.
	s.Promote()
	if np, _ := s.NotPrimary(); np {
		t.Fatal("still not primary after Promote")
	}
	res, err := s.PutKey(ctx, Write{Table: "notes", Key: "k1", Value: []byte(`{"after":true}`), IfVersion: wal.AnyVersion})
	if err != nil || res.LSN != last+1 || res.Version != pt["notes"]["k1"].Version+1 {
		t.Fatalf("first write after the promotion: %+v %v; want lsn %d", res, err, last+1)
	}
	// The driver's seqs come from the applied log: a resend is a duplicate.
	ack, err := s.SubmitPoints(ctx, "van-1", pts(49, 51))
	if err != nil || ack.Accepted != 1 || ack.Duplicates != 2 {
		t.Fatalf("driver resend after the promotion: %+v %v", ack, err)
	}
}

// An empty standby's log starts at the first record it is given (the
// primary's log was trimmed before it was shipped); a gap later (records
// the primary's shipping dropped) is filled with void records, so the log
// stays gapless; a record of an unknown op is refused, nothing applied.
func TestApplyFollowedStartsMidLogAndFillsGaps(t *testing.T) {
	ctx := context.Background()
	s, _ := newEngine(t, nil)
	s.SetNotPrimary("a standby")
	at := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rec := func(lsn uint64, key string, v uint64) Record {
		return Record{LSN: lsn, Table: "notes", Key: key, Op: OpPut, Value: fmt.Appendf(nil, `{"lsn":%d}`, lsn), Version: v, Actor: "tables", CommittedAt: at.Add(time.Duration(lsn) * time.Second)}
	}
	if got, err := s.ApplyFollowed(ctx, []Record{rec(10, "a", 4), rec(11, "b", 1), rec(12, "a", 5)}); err != nil || got != 12 {
		t.Fatalf("apply from lsn 10: %d %v", got, err)
	}
	if st := s.StoreStats(); st.FirstLSN != 10 || st.LastLSN != 12 {
		t.Fatalf("store after starting at lsn 10: %+v", st)
	}
	if got, err := s.ApplyFollowed(ctx, []Record{rec(15, "b", 2)}); err != nil || got != 15 {
		t.Fatalf("apply across a gap: %d %v", got, err)
	}
	l := wholeLog(t, s)
	if len(l) != 6 {
		t.Fatalf("log %+v", l)
	}
	for i, r := range l {
		if r.LSN != uint64(10+i) {
			t.Fatalf("log not gapless: %+v", l)
		}
		if (r.LSN == 13 || r.LSN == 14) != (r.Table == wal.VoidTable) {
			t.Fatalf("record %d: %+v", r.LSN, r)
		}
	}
	tabs := tablesOf(t, s)
	if len(tabs) != 1 || tabs["notes"]["a"].Version != 5 || tabs["notes"]["b"].Version != 2 || tabs["notes"]["b"].LSN != 15 {
		t.Fatalf("tables: %+v", tabs)
	}
	bad := rec(16, "c", 1)
	bad.Op = Op(9)
	if _, err := s.ApplyFollowed(ctx, []Record{rec(16, "c", 1), bad}); err == nil || s.StoreStats().LastLSN != 15 {
		t.Fatalf("an unknown op: %v, last lsn %d", err, s.StoreStats().LastLSN)
	}
	// The standby's deletes of keys it holds, and of keys it never had.
	del := Record{LSN: 16, Table: "notes", Key: "a", Op: OpDelete, Actor: "tables", CommittedAt: at}
	gone := Record{LSN: 17, Table: "notes", Key: "zz", Op: OpDelete, Actor: "tables", CommittedAt: at}
	if _, err := s.ApplyFollowed(ctx, []Record{del, gone}); err != nil {
		t.Fatal(err)
	}
	if tabs := tablesOf(t, s); len(tabs["notes"]) != 1 {
		t.Fatalf("after the deletes: %+v", tabs)
	}
}

// The idempotency entries travel with their records: the primary ties
// each to the record it answers (IdemEntries finds them in LSN order), a
// standby stores those shipped with the records it applies (not the
// expired ones), and once promoted it answers a retry as the primary
// does: the same WriteResult for the same request, ErrIdempotencyMismatch
// for another, a phone resend a duplicate with the first seq.
func TestApplyFollowedIdemAnswersRetries(t *testing.T) {
	ctx := context.Background()
	p, _ := newEngine(t, nil)
	fp := Fingerprint([]byte("r1"), []byte(`{"driver":"van-1"}`))
	first, err := p.PutAssignment(ctx, "r1", []byte(`{"driver":"van-1"}`), WriteOptions{IfVersion: AnyVersion, IdemKey: "key-1", Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutKey(ctx, Write{Table: "notes", Key: "n", Value: []byte(`{}`), IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	pt := phonePoint("van-9", "dev-9", 1_700_000_000_000, 52.5)
	ack, err := p.SubmitPhonePoint(ctx, pt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutKey(ctx, Write{Table: "notes", Key: "gone", Value: []byte(`{}`), IfVersion: AnyVersion, IdemKey: "key-3", Fingerprint: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	plog := wholeLog(t, p)
	last := plog[len(plog)-1].LSN
	var ents []IdemEntry
	if err := p.IdemEntries(0, last, func(ie IdemEntry) error { ents = append(ents, ie); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 || ents[0].LSN != first.LSN || ents[0].Scope != "dispatch" || ents[0].Key != "key-1" ||
		ents[1].Scope != "phone" || ents[2].Key != "key-3" || ents[0].ExpiresAt.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("the primary's entries: %+v", ents)
	}
	for _, ie := range ents {
		r := plog[ie.LSN-plog[0].LSN]
		if r.LSN != ie.LSN || ie.Scope == "phone" && r.Key != "van-9" || ie.Scope == "tables" && r.Key != "gone" {
			t.Fatalf("entry %+v is not tied to its record (%+v)", ie, r)
		}
	}
	// key-3's entry expired before the standby applied it.
	ents[2].ExpiresAt = time.Now().Add(-time.Second)

	s, _ := newEngine(t, nil)
	s.SetNotPrimary("a standby")
	half := len(plog) / 2
	if _, err := s.ApplyFollowedIdem(ctx, plog[:half], ents); err != nil {
		t.Fatal(err)
	}
	// Sent again with the rest: the entries of records held already are
	// dropped, the others stored with their records.
	if got, err := s.ApplyFollowedIdem(ctx, plog, ents); err != nil || got != last {
		t.Fatalf("apply: %d %v", got, err)
	}
	var sents []IdemEntry
	if err := s.IdemEntries(0, last, func(ie IdemEntry) error { sents = append(sents, ie); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(sents) != 2 || sents[0].LSN != ents[0].LSN || !sents[0].ExpiresAt.Equal(ents[0].ExpiresAt) || !bytes.Equal(sents[0].Answer, ents[0].Answer) ||
		sents[1].LSN != ents[1].LSN || sents[1].Key != ents[1].Key {
		t.Fatalf("the standby's entries: %+v, the primary's %+v", sents, ents)
	}

	s.Promote()
	again, err := s.PutAssignment(ctx, "r1", []byte(`{"driver":"van-1"}`), WriteOptions{IfVersion: AnyVersion, IdemKey: "key-1", Fingerprint: fp})
	want := first
	want.Replayed = true
	if err != nil || again != want {
		t.Fatalf("the retry on the promoted standby: %+v %v, want %+v", again, err, want)
	}
	if _, err := s.PutAssignment(ctx, "r1", []byte(`{"driver":"van-2"}`), WriteOptions{IfVersion: AnyVersion, IdemKey: "key-1",
		Fingerprint: Fingerprint([]byte("r1"), []byte(`{"driver":"van-2"}`))}); !errors.Is(err, ErrIdempotencyMismatch) {
		t.Fatalf("the key with another request on the promoted standby: %v", err)
	}
	if a, err := s.SubmitPhonePoint(ctx, pt); err != nil || !a.Duplicate || a.Seq != ack.Seq {
		t.Fatalf("the phone's resend on the promoted standby: %+v %v, the primary answered %+v", a, err, ack)
	}
	if s.StoreStats().LastLSN != last {
		t.Fatalf("the retries wrote: last lsn %d, want %d", s.StoreStats().LastLSN, last)
	}
	// The expired entry's key is a new write.
	if res, err := s.PutKey(ctx, Write{Table: "notes", Key: "gone", Value: []byte(`{}`), IfVersion: AnyVersion, IdemKey: "key-3", Fingerprint: []byte("x")}); err != nil ||
		res.Replayed || res.LSN != last+1 {
		t.Fatalf("the retry of an expired entry: %+v %v, want a new write at lsn %d", res, err, last+1)
	}
}
