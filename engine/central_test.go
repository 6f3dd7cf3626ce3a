package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"routehound/fleet"
)

// A central view's engine refuses every write with an error that is both
// ErrCentralReadOnly and ErrNotPrimary, while ApplyCentral writes at its
// own LSNs, all of one call in one commit: puts take the key's next
// version, a delete of an absent key writes nothing, and a call past
// ApplyCentralMax is refused whole.
func TestApplyCentral(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	if err := e.WritesRefused(); err != nil {
		t.Fatalf("a new engine refuses writes: %v", err)
	}
	e.SetCentral("a central view")
	if !e.Central() {
		t.Fatal("Central() after SetCentral is false")
	}
	_, err := e.PutKey(ctx, Write{Table: "notes", Key: "k", Value: []byte(`{}`), IfVersion: AnyVersion})
	if !errors.Is(err, ErrCentralReadOnly) || !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("a write on a central view: %v", err)
	}
	if err := e.WritesRefused(); !errors.Is(err, ErrCentralReadOnly) {
		t.Fatalf("WritesRefused: %v", err)
	}
	if _, err := e.SubmitPoints(ctx, "van-1", pts(1, 1)); !errors.Is(err, ErrCentralReadOnly) {
		t.Fatalf("driver points on a central view: %v", err)
	}

	lsn, err := e.ApplyCentral(ctx, []CentralWrite{
		{Table: "notes", Key: "north/a", Value: []byte(`{"v":1}`), Actor: "tables"},
		{Table: "notes", Key: "south/a", Value: []byte(`{"v":2}`), Actor: "tables"},
		{Table: "notes", Key: "north/a", Value: []byte(`{"v":3}`), Actor: "tables"},
		{Table: "notes", Key: "north/gone", Delete: true, Actor: "tables"}, // never there: nothing written
		{Table: "central_depots", Key: "north", Value: []byte(`{"lsn":7}`), Actor: "central"},
	})
	if err != nil || lsn != 4 {
		t.Fatalf("ApplyCentral: lsn %d, %v; want lsn 4", lsn, err)
	}
	if e.DurableLSN() != 4 {
		t.Fatalf("durable lsn %d after the apply, want 4 (answered only once durable)", e.DurableLSN())
	}
	log := wholeLog(t, e)
	if len(log) != 4 || log[0].Key != "north/a" || log[2].Version != 2 || log[3].Table != "central_depots" {
		t.Fatalf("the log: %+v", log)
	}
	if lsn, err := e.ApplyCentral(ctx, []CentralWrite{{Table: "notes", Key: "south/a", Delete: true, Actor: "tables"}}); err != nil || lsn != 5 {
		t.Fatalf("delete: lsn %d, %v", lsn, err)
	}
	rows := tablesOf(t, e)
	if st := rows["notes"]["north/a"]; st.Version != 2 || string(st.Value) != `{"v":3}` || len(rows["notes"]) != 1 {
		t.Fatalf("notes: %+v", rows["notes"])
	}
	maxN, _ := e.ApplyCentralMax()
	big := make([]CentralWrite, maxN+1)
	for i := range big {
		big[i] = CentralWrite{Table: "notes", Key: "k", Value: []byte(`1`)}
	}
	if _, err := e.ApplyCentral(ctx, big); !errors.Is(err, ErrTooLarge) || e.StoreStats().LastLSN != 5 {
		t.Fatalf("a call past ApplyCentralMax: %v, last lsn %d", err, e.StoreStats().LastLSN)
	}
}

// An apply whose sync failed answers ErrUnavailable, yet the reopened store
// holds its records and its cursor. The central view retries it: the
// writes tied to the depot's LSNs the stored cursor covers are skipped (no
// record twice, no cursor moved back), and those past it are written.
func TestApplyCentralRetryAfterFailedSyncSkipsStored(t *testing.T) {
	s := newStepper("sync")
	e := newStepEngine(t, s, true)
	e.SetCentral("central")
	ws := []CentralWrite{
		{Table: "notes", Key: "north/a", Value: []byte(`{"v":1}`), Actor: "tables", Depot: "north", LSN: 1},
		{Table: CentralCursorTable, Key: "north", Value: []byte(`{"depot":"north","lsn":1}`), Actor: "central", Depot: "north", LSN: 1},
	}
	done := make(chan error, 1)
	go func() { _, err := e.ApplyCentral(context.Background(), ws); done <- err }()
	s.next(t, "sync").reply <- errInjected
	if err := <-done; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ApplyCentral with a failed sync: %v, want ErrUnavailable", err)
	}
	waitFor(t, "the store reopened", func() bool { return e.Totals().Recoveries.Load() == 1 && e.Ready() })
	if st := tablesOf(t, e)["notes"]["north/a"]; st.Version != 1 {
		t.Fatalf("after the reopen north/a has version %d; the test needs the failed apply in the store", st.Version)
	}
	logBefore := len(wholeLog(t, e))

	// The central view's retry of the same batch, one record more.
	retry := append([]CentralWrite{}, ws[0],
		CentralWrite{Table: "notes", Key: "north/b", Value: []byte(`{"v":2}`), Actor: "tables", Depot: "north", LSN: 2},
		CentralWrite{Table: CentralCursorTable, Key: "north", Value: []byte(`{"depot":"north","lsn":2}`), Actor: "central", Depot: "north", LSN: 2})
	go func() { _, err := e.ApplyCentral(context.Background(), retry); done <- err }()
	s.next(t, "sync").reply <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rows := tablesOf(t, e)
	if st := rows["notes"]["north/a"]; st.Version != 1 {
		t.Errorf("north/a has version %d after one depot record (applied twice)", st.Version)
	}
	if st := rows["notes"]["north/b"]; st.Version != 1 {
		t.Errorf("north/b (past the stored cursor) has version %d, want 1", st.Version)
	}
	if st := rows[CentralCursorTable]["north"]; string(st.Value) != `{"depot":"north","lsn":2}` || st.Version != 2 {
		t.Errorf("north's cursor: %s version %d, want lsn 2 at version 2", st.Value, st.Version)
	}
	if n := len(wholeLog(t, e)) - logBefore; n != 2 {
		t.Errorf("the retry wrote %d records, want 2 (north/b and the cursor)", n)
	}

	// A batch the stored cursor covers whole writes nothing, cursor included.
	go func() { _, err := e.ApplyCentral(context.Background(), ws); done <- err }()
	select {
	case st := <-s.steps:
		st.reply <- nil
	case err := <-done:
		done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("the covered apply neither synced nor answered")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := tablesOf(t, e)[CentralCursorTable]["north"]; string(st.Value) != `{"depot":"north","lsn":2}` {
		t.Errorf("a covered batch moved north's cursor back: %s", st.Value)
	}
}

// A central write that can never apply (a table no writer may name, a key
// the store cannot hold or the API cannot name, a value that is no JSON or
// larger than a batch) refuses its call with a CentralRejectError naming
// it, before anything is queued: nothing of the call is written, the
// store does not fail, and the same call without it applies.
func TestApplyCentralRejectsWhatCanNeverApply(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.BatchBytes = 64 << 10 })
	e.SetCentral("central")
	ctx := context.Background()
	ok := CentralWrite{Table: "notes", Key: "north/a", Value: []byte(`{"v":1}`), Actor: "tables"}
	for _, c := range []struct {
		what     string
		w        CentralWrite
		tooLarge bool
	}{
		{"a table no writer may name", CentralWrite{Table: "bad!table", Key: "north/k", Value: []byte(`{}`)}, false},
		{"an empty table", CentralWrite{Table: "", Key: "north/k", Value: []byte(`{}`)}, false},
		{"a table holding a 0x00", CentralWrite{Table: "no\x00tes", Key: "north/k", Value: []byte(`{}`)}, false},
		{"an empty key", CentralWrite{Table: "notes", Key: "", Value: []byte(`{}`)}, false},
		{"a key with a control character", CentralWrite{Table: "notes", Key: "north/a\x01b", Value: []byte(`{}`)}, false},
		{"a key past the store's limit", CentralWrite{Table: "notes", Key: "north/" + strings.Repeat("k", 70000), Value: []byte(`{}`)}, false},
		{"a key past MaxCentralKey", CentralWrite{Table: "notes", Key: "north/" + strings.Repeat("k", MaxCentralKey), Delete: true}, false},
		{"a key that is no UTF-8", CentralWrite{Table: "notes", Key: "north/\xff", Value: []byte(`{}`)}, false},
		{"a value that is no JSON", CentralWrite{Table: "notes", Key: "north/k", Value: []byte(`{"v":`)}, false},
		{"an empty value", CentralWrite{Table: "notes", Key: "north/k"}, false},
		{"a value larger than a batch", CentralWrite{Table: "notes", Key: "north/k", Value: []byte(`"` + strings.Repeat("x", 40<<10) + `"`)}, true},
	} {
		last := e.StoreStats().LastLSN
		_, err := e.ApplyCentral(ctx, []CentralWrite{ok, c.w})
		var rej *CentralRejectError
		if !errors.Is(err, ErrCentralRejected) || !errors.As(err, &rej) || rej.Index != 1 || errors.Is(err, ErrTooLarge) != c.tooLarge {
			t.Errorf("%s: %v; want ErrCentralRejected for write 1 (too large: %v)", c.what, err, c.tooLarge)
		}
		if got := e.StoreStats().LastLSN; got != last {
			t.Errorf("%s: the call wrote lsn %d..%d; want nothing written", c.what, last+1, got)
		}
		if err := e.CheckCentralWrite(c.w); !errors.Is(err, ErrCentralRejected) {
			t.Errorf("%s: CheckCentralWrite: %v", c.what, err)
		}
		if lsn, err := e.ApplyCentral(ctx, []CentralWrite{ok}); err != nil || lsn != last+1 {
			t.Fatalf("%s: the call without it: lsn %d, %v; want lsn %d", c.what, lsn, err, last+1)
		}
	}
	for _, w := range []CentralWrite{
		ok,
		{Table: "notes", Key: "north/" + strings.Repeat("k", fleet.MaxKey), Value: []byte(`null`)},
		{Table: "assignments", Key: "north/r-1", Value: []byte(`{"driver":"van-3"}`)},
		{Table: CentralCursorTable, Key: "$stream/RH", Value: []byte(`{"stream_seq":3}`)},
		{Table: "notes", Key: "north/gone", Delete: true},
	} {
		if err := e.CheckCentralWrite(w); err != nil {
			t.Errorf("CheckCentralWrite(%s/%.20s): %v", w.Table, w.Key, err)
		}
	}
}
