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
