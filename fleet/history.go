package fleet

import (
	"encoding/json"
	"time"
)

// The history queries other services ask of the read model (the replica
// answers them; api serves them at /v1/drivers/{driver}/trail,
// /v1/loading-events and /v1/assignments/{route}/history). Each answers at
// most a limit of rows after a cursor, and whether more follow.

// TrailCursor is the place of a trail point in device-time order: its
// device time (Unix ns; 0 = unknown), then its seq.
type TrailCursor struct {
	TS  int64
	Seq uint64
}

// Less orders cursors: device time, then seq.
func (c TrailCursor) Less(o TrailCursor) bool {
	return c.TS < o.TS || (c.TS == o.TS && c.Seq < o.Seq)
}

// CursorOf is p's place in device-time order.
func CursorOf(p Position) TrailCursor {
	if p.TS.IsZero() {
		return TrailCursor{Seq: p.Seq}
	}
	return TrailCursor{TS: p.TS.UnixNano(), Seq: p.Seq}
}

// TrailQuery selects a driver's trail points.
type TrailQuery struct {
	Driver string
	// Since and Until bound the points' device time: Since <= ts < Until
	// (zero: unbounded).
	Since, Until time.Time
	After        *TrailCursor // nil: from the first point
	Limit        int
}

// LoadingQuery selects loading events; empty fields do not filter.
type LoadingQuery struct {
	Dock, Shipment, Terminal, Kind string
	// Since and Until bound the events' time as the terminal sent it:
	// Since <= ts < Until (zero: unbounded).
	Since, Until time.Time
	AfterLSN     uint64 // the events committed after this LSN
	Limit        int
}

// AssignmentVersion is one version of a route's assignment as the log
// brought it; Deleted marks the route's deletion.
type AssignmentVersion struct {
	Route, Driver, Note string
	Stops               json.RawMessage // the stops as dispatch sent them (a JSON array)
	Version, LSN        uint64
	CommittedAt         time.Time // zero when the version came from a rebuild
	Deleted             bool
}
