package engine

import (
	"context"
	"errors"
	"testing"

	"routehound/fleet"
)

// WriteDerived writes the consumer's derived records with its cursor in
// one batch, once: a retry of a covered range changes nothing, a write
// that does not start at the stored cursor is refused, and only the
// derived tables are taken.
func TestWriteDerivedOnce(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	ev := Write{Table: fleet.TableFleetEvents, Key: "r/s/stop.arrived", Value: []byte(`{"type":"stop.arrived","point_lsn":3}`)}
	res, err := e.WriteDerived(ctx, DerivedWrite{After: 0, Upto: 5, Writes: []Write{ev}})
	if err != nil || res.Replayed {
		t.Fatalf("first write: %+v %v", res, err)
	}
	// The same range again (a retry after an answer that was lost).
	res, err = e.WriteDerived(ctx, DerivedWrite{After: 0, Upto: 5, Writes: []Write{ev}})
	if err != nil || !res.Replayed {
		t.Fatalf("retry: %+v %v", res, err)
	}
	// A range that overlaps what is written but does not start at it.
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 3, Upto: 9, Writes: []Write{ev}}); !errors.Is(err, ErrCursorMoved) {
		t.Fatalf("overlapping write: %v", err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 5, Upto: 9, Writes: []Write{{Table: fleet.TableRouteProgress, Key: "r", Delete: true}}}); err != nil {
		t.Fatalf("next range, deleting a key that is not there: %v", err)
	}
	for _, bad := range []string{fleet.TablePositions, "user"} {
		if _, err := e.WriteDerived(ctx, DerivedWrite{After: 9, Upto: 10, Writes: []Write{{Table: bad, Key: "k", Value: []byte(`1`)}}}); err == nil {
			t.Fatalf("a derived write to %s was taken", bad)
		}
	}
	n := 0
	if err := e.ReadLog(0, 0, func(r Record) error {
		if r.Table == fleet.TableFleetEvents {
			n++
			if r.Actor != "events" {
				t.Errorf("actor %q", r.Actor)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d event records in the log, want 1", n)
	}
	s, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, ok, err := s.Get(fleet.TableFleetConsumer, "cursor")
	if err != nil || !ok || string(st.Value) != `{"lsn":9}` {
		t.Fatalf("cursor %s %v %v", st.Value, ok, err)
	}
	if got := e.Lane(LaneEvents).Duplicates.Load(); got != 1 {
		t.Fatalf("duplicates %d", got)
	}
}

// A record's derived output split over several writes: each write names
// its position inside the record (part), the cursor keeps it, a retry of
// a part is Replayed, a part that does not start at the stored position
// is refused, and the record's last write (part 0) closes it. A cursor
// stored without a part (before parts existed) is the whole record.
func TestWriteDerivedParts(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	ev := func(k string) []Write {
		return []Write{{Table: fleet.TableFleetEvents, Key: k, Value: []byte(`{"type":"fence.exit"}`)}}
	}
	cursor := func(want string) {
		t.Helper()
		s, err := e.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st, ok, err := s.Get(fleet.TableFleetConsumer, "cursor")
		if err != nil || !ok || string(st.Value) != want {
			t.Fatalf("cursor %s %v %v, want %s", st.Value, ok, err, want)
		}
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 0, Upto: 7, Writes: ev("a")}); err != nil {
		t.Fatal(err)
	}
	cursor(`{"lsn":7}`)
	// Record 12's output in three parts: (7, 12.2], (12.2, 12.4], (12.4, 12].
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 7, Upto: 12, UptoPart: 2, Writes: ev("b")}); err != nil {
		t.Fatal(err)
	}
	cursor(`{"lsn":12,"part":2}`)
	if res, err := e.WriteDerived(ctx, DerivedWrite{After: 7, Upto: 12, UptoPart: 2, Writes: ev("b")}); err != nil || !res.Replayed {
		t.Fatalf("retry of a part: %+v %v", res, err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 7, Upto: 12, Writes: ev("x")}); !errors.Is(err, ErrCursorMoved) {
		t.Fatalf("the whole record again from 7: %v", err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 12, AfterPart: 1, Upto: 12, UptoPart: 4, Writes: ev("x")}); !errors.Is(err, ErrCursorMoved) {
		t.Fatalf("a part that starts elsewhere: %v", err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 12, AfterPart: 4, Upto: 12, UptoPart: 4}); err == nil {
		t.Fatal("an empty range was taken")
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 12, AfterPart: 2, Upto: 12, UptoPart: 4, Writes: ev("c")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 12, AfterPart: 4, Upto: 12, Writes: ev("d")}); err != nil {
		t.Fatal(err)
	}
	cursor(`{"lsn":12}`)
	if res, err := e.WriteDerived(ctx, DerivedWrite{After: 12, AfterPart: 2, Upto: 12, UptoPart: 4, Writes: ev("c")}); err != nil || !res.Replayed {
		t.Fatalf("retry of a part of a closed record: %+v %v", res, err)
	}
	if _, err := e.WriteDerived(ctx, DerivedWrite{After: 12, Upto: 15, Writes: ev("e")}); err != nil {
		t.Fatalf("the next record after the parts: %v", err)
	}
	cursor(`{"lsn":15}`)
	waitFor(t, "every commit published", func() bool { return e.DurableLSN() >= e.store().LastLSN() })
	n := 0
	e.ReadLog(0, 0, func(r Record) error {
		if r.Table == fleet.TableFleetEvents {
			n++
		}
		return nil
	})
	if n != 5 {
		t.Fatalf("%d event records in the log, want 5 (a b c d e)", n)
	}
}

func TestCursorValueOrder(t *testing.T) {
	seq := []CursorValue{{LSN: 3}, {LSN: 5, Part: 1}, {LSN: 5, Part: 9}, {LSN: 5}, {LSN: 6, Part: 2}, {LSN: 6}}
	for i := range seq {
		for j := range seq {
			if got := seq[i].Before(seq[j]); got != (i < j) {
				t.Errorf("%+v before %+v: %v", seq[i], seq[j], got)
			}
		}
	}
}
