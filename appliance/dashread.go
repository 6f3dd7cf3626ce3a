package appliance

import (
	"context"
	"slices"

	"routehound/api"
	"routehound/replica"
	"routehound/ui"
)

// replicaReader is the dashboard's read model (ui.ReadModel) over the SQLite
// replica: indexed reads instead of engine-snapshot scans. Both name the
// rows of package fleet, so the replica's answers pass as they are.
type replicaReader struct{ r *replica.Replica }

func (x replicaReader) LSN() uint64 { return x.r.LSN() }

func (x replicaReader) Positions(ctx context.Context) ([]ui.Position, error) {
	return x.r.Positions(ctx)
}

// Trail is oldest first for the dashboard; the replica answers newest first.
func (x replicaReader) Trail(ctx context.Context, driver string, n int) ([]ui.Position, error) {
	ps, err := x.r.Trail(ctx, driver, n)
	slices.Reverse(ps)
	return ps, err
}

func (x replicaReader) Assignments(ctx context.Context, limit int) ([]ui.Assignment, error) {
	return x.r.Assignments(ctx, limit)
}

func (x replicaReader) LoadingEvents(ctx context.Context, f ui.LoadingFilter) ([]ui.LoadingEvent, error) {
	return x.r.LoadingEvents(ctx, f)
}

func (x replicaReader) LoadingCounts(ctx context.Context) ([]ui.LoadingCount, error) {
	return x.r.LoadingCounts(ctx)
}

// The replica answers the API's history endpoints as it is.
var _ api.History = (*replica.Replica)(nil)
