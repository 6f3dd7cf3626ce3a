package ui

import (
	"context"
	"fmt"
	"sort"

	"routehound/engine"
	"routehound/fleet"
)

// ReadModel is what the pages read of the actor tables. The SQLite replica
// implements it (through an adapter in appliance); SnapshotReader reads the
// engine's state directly. Every method may be called concurrently.
type ReadModel interface {
	// LSN is the position of the model: every read started after LSN
	// returns at least the state at LSN.
	LSN() uint64
	Positions(ctx context.Context) ([]Position, error)
	Trail(ctx context.Context, driver string, n int) ([]Position, error)
	Assignments(ctx context.Context, limit int) ([]Assignment, error)
	LoadingEvents(ctx context.Context, f LoadingFilter) ([]LoadingEvent, error)
	LoadingCounts(ctx context.Context) ([]LoadingCount, error)
}

// The rows the pages show are the read model's (package fleet); the
// names stay short for the templates.
type (
	Position      = fleet.Position
	Assignment    = fleet.AssignmentRow
	LoadingFilter = fleet.LoadingFilter
	LoadingEvent  = fleet.LoadingRow
	LoadingCount  = fleet.LoadingCount
)

// SnapshotReader reads the actor tables from engine snapshots: correct but
// linear in the table (the replica indexes them). Trail reads the newest
// trailWindow log records.
type SnapshotReader struct{ E *engine.Engine }

const trailWindow = 20000

// LSN is the durable LSN: a snapshot opened after it holds it.
func (s SnapshotReader) LSN() uint64 { return s.E.DurableLSN() }

// decodePosition reads a positions value; a malformed one gives what parsed.
func decodePosition(driver string, value []byte, lsn uint64) Position {
	var p fleet.PointValue
	_ = p.Decode(value)
	return Position{Driver: driver, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh, Heading: p.Heading, Seq: p.Seq, TS: p.TS, LSN: lsn}
}

// decodeAssignment reads a stored assignment; its Driver is the driver's
// key in the positions table (on a central view <depot>/<driver>:
// fleet.AssignmentDriverKey).
func decodeAssignment(route string, value []byte, version, lsn uint64) Assignment {
	var a fleet.AssignmentValue
	_ = a.Decode(value)
	return Assignment{Route: route, Driver: fleet.AssignmentDriverKey(route, a.Driver), Note: a.Note, Stops: len(a.Stops), Version: version, LSN: lsn}
}

// driverKeys is the pages' read model: the one given, with each
// assignment's driver named by its key in the positions table
// (fleet.AssignmentDriverKey), whatever the model answers (the replica
// keeps the value's driver): on a central view a route of north names
// north/van-3, the key of north's van-3, not south's.
type driverKeys struct{ ReadModel }

func (r driverKeys) Assignments(ctx context.Context, limit int) ([]Assignment, error) {
	as, err := r.ReadModel.Assignments(ctx, limit)
	for i := range as {
		as[i].Driver = fleet.AssignmentDriverKey(as[i].Route, as[i].Driver)
	}
	return as, err
}

func decodeLoading(id string, value []byte, lsn uint64) LoadingEvent {
	var l fleet.LoadingValue
	_ = l.Decode(value)
	return LoadingEvent{ID: id, Terminal: l.Terminal, Dock: l.Dock, Shipment: l.Shipment, Kind: l.Kind, Pallets: l.Pallets, TS: l.Time(), LSN: lsn}
}

func (s SnapshotReader) scan(table string, fn func(key string, st engine.State)) error {
	snap, err := s.E.Snapshot()
	if err != nil {
		return fmt.Errorf("ui: snapshot of %s: %w", table, err)
	}
	defer snap.Close()
	_, err = snap.Scan(table, "", 0, func(k string, st engine.State) error {
		fn(k, st)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ui: scan %s: %w", table, err)
	}
	return nil
}

// Positions are every driver's latest point, by driver.
func (s SnapshotReader) Positions(ctx context.Context) ([]Position, error) {
	var out []Position
	err := s.scan(fleet.TablePositions, func(k string, st engine.State) {
		out = append(out, decodePosition(k, st.Value, st.LSN))
	})
	return out, err
}

// Trail is the driver's last n points found in the newest log records,
// oldest first.
func (s SnapshotReader) Trail(ctx context.Context, driver string, n int) ([]Position, error) {
	last := s.E.DurableLSN()
	from := uint64(0)
	if last > trailWindow {
		from = last - trailWindow
	}
	if first := s.E.StoreStats().FirstLSN; first > 0 && from < first-1 {
		from = first - 1
	}
	var out []Position
	err := s.E.ReadLog(from, trailWindow, func(r engine.Record) error {
		if r.Table == fleet.TablePositions && r.Key == driver && r.Op == engine.OpPut {
			p := decodePosition(driver, r.Value, r.LSN)
			p.CommittedAt = r.CommittedAt
			out = append(out, p)
			if len(out) > 2*n { // keep the tail bounded
				out = append(out[:0], out[len(out)-n:]...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ui: trail of %s: %w", driver, err)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

// Assignments are the first limit routes, by route.
func (s SnapshotReader) Assignments(ctx context.Context, limit int) ([]Assignment, error) {
	snap, err := s.E.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("ui: snapshot of assignments: %w", err)
	}
	defer snap.Close()
	var out []Assignment
	_, err = snap.Scan(fleet.TableAssignments, "", limit, func(k string, st engine.State) error {
		out = append(out, decodeAssignment(k, st.Value, st.Version, st.LSN))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ui: scan assignments: %w", err)
	}
	return out, nil
}

// LoadingEvents are the newest events matching f, newest first. Event ids
// are ULIDs, so key order is time order.
func (s SnapshotReader) LoadingEvents(ctx context.Context, f LoadingFilter) ([]LoadingEvent, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	ring := make([]LoadingEvent, 0, limit)
	next := 0
	err := s.scan(fleet.TableLoading, func(k string, st engine.State) {
		if f.BeforeLSN > 0 && st.LSN >= f.BeforeLSN {
			return
		}
		ev := decodeLoading(k, st.Value, st.LSN)
		if (f.Dock != "" && ev.Dock != f.Dock) || (f.Shipment != "" && ev.Shipment != f.Shipment) {
			return
		}
		if len(ring) < limit {
			ring = append(ring, ev)
		} else {
			ring[next] = ev
			next = (next + 1) % limit
		}
	})
	out := make([]LoadingEvent, 0, len(ring))
	for i := len(ring) - 1; i >= 0; i-- {
		out = append(out, ring[(next+i)%len(ring)])
	}
	return out, err
}

// LoadingCounts counts events per dock and kind, by dock then kind.
func (s SnapshotReader) LoadingCounts(ctx context.Context) ([]LoadingCount, error) {
	type dk struct{ dock, kind string }
	m := map[dk]int64{}
	err := s.scan(fleet.TableLoading, func(k string, st engine.State) {
		var l fleet.LoadingValue
		_ = l.Decode(st.Value)
		m[dk{l.Dock, l.Kind}]++
	})
	out := make([]LoadingCount, 0, len(m))
	for k, n := range m {
		out = append(out, LoadingCount{Dock: k.dock, Kind: k.kind, N: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dock != out[j].Dock {
			return out[i].Dock < out[j].Dock
		}
		return out[i].Kind < out[j].Kind
	})
	return out, err
}
