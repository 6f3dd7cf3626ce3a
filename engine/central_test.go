package engine

import (
	"context"
	"errors"
	"testing"
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
