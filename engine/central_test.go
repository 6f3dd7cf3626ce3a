package engine

import (
	"context"
	"errors"
	"testing"
	"time"
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
