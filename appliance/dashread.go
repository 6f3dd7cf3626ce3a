package appliance

import (
	"context"
	"slices"

	"routehound/replica"
	"routehound/ui"
)

// replicaReader is the dashboard's read model (ui.ReadModel) over the SQLite
// replica: indexed reads instead of engine-snapshot scans.
type replicaReader struct{ r *replica.Replica }

func (x replicaReader) LSN() uint64 { return x.r.LSN() }

func position(p replica.Position) ui.Position {
	return ui.Position{Driver: p.Driver, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh, Head: p.Heading,
		Seq: p.Seq, TS: p.TS, LSN: p.LSN, CommittedAt: p.CommittedAt}
}

func (x replicaReader) Positions(ctx context.Context) ([]ui.Position, error) {
	ps, err := x.r.Positions(ctx)
	out := make([]ui.Position, len(ps))
	for i, p := range ps {
		out[i] = position(p)
	}
	return out, err
}

// Trail is oldest first for the dashboard; the replica answers newest first.
func (x replicaReader) Trail(ctx context.Context, driver string, n int) ([]ui.Position, error) {
	ps, err := x.r.Trail(ctx, driver, n)
	out := make([]ui.Position, len(ps))
	for i, p := range ps {
		out[i] = position(p)
	}
	slices.Reverse(out)
	return out, err
}

func (x replicaReader) Assignments(ctx context.Context, limit int) ([]ui.Assignment, error) {
	as, err := x.r.Assignments(ctx, limit)
	out := make([]ui.Assignment, len(as))
	for i, a := range as {
		out[i] = ui.Assignment{Route: a.Route, Driver: a.Driver, Note: a.Note, Stops: a.Stops, Version: a.Version, LSN: a.LSN, CommittedAt: a.CommittedAt}
	}
	return out, err
}

func (x replicaReader) LoadingEvents(ctx context.Context, f ui.LoadingFilter) ([]ui.LoadingEvent, error) {
	es, err := x.r.LoadingEvents(ctx, replica.LoadingFilter{Dock: f.Dock, Shipment: f.Shipment, Limit: f.Limit, BeforeLSN: f.BeforeLSN})
	out := make([]ui.LoadingEvent, len(es))
	for i, e := range es {
		out[i] = ui.LoadingEvent{ID: e.ID, Terminal: e.Terminal, Dock: e.Dock, Shipment: e.Shipment, Kind: e.Kind,
			Pallets: e.Pallets, TS: e.TS, LSN: e.LSN, CommittedAt: e.CommittedAt}
	}
	return out, err
}

func (x replicaReader) LoadingCounts(ctx context.Context) ([]ui.LoadingCount, error) {
	cs, err := x.r.LoadingCounts(ctx)
	out := make([]ui.LoadingCount, len(cs))
	for i, c := range cs {
		out[i] = ui.LoadingCount{Dock: c.Dock, Kind: c.Kind, N: c.N}
	}
	return out, err
}
