package fleet

import "time"

// The rows of the dashboard's read model: the built-in tables' values
// with where they are in the log. The SQLite replica answers them and the
// dashboard shows them (ui.ReadModel), so both name these types.

// Position is a driver's latest (or one past) point.
type Position struct {
	Driver                      string
	Lat, Lng, SpeedKmh, Heading float64
	Seq                         uint64
	TS                          time.Time // as the driver sent it
	LSN                         uint64
	CommittedAt                 time.Time // zero when unknown (a replica rebuild, a snapshot read)
}

// AssignmentRow is one route's current assignment.
type AssignmentRow struct {
	Route, Driver, Note string
	Stops               int
	Version, LSN        uint64
	CommittedAt         time.Time // zero when unknown (a replica rebuild, a snapshot read)
}

// LoadingRow is one loading event.
type LoadingRow struct {
	ID, Terminal, Dock, Shipment, Kind string
	Pallets                            int64
	TS                                 time.Time
	LSN                                uint64
	CommittedAt                        time.Time // zero when unknown (a replica rebuild, a snapshot read)
}

// LoadingCount counts the events of one kind at one dock.
type LoadingCount struct {
	Dock, Kind string
	N          int64
}

// LoadingFilter selects loading events, newest (highest LSN) first.
// Empty fields do not filter; Limit <= 0 means 100; BeforeLSN pages: only
// events written below it (0 = from the newest).
type LoadingFilter struct {
	Dock, Shipment string
	Limit          int
	BeforeLSN      uint64
}
