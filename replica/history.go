package replica

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strings"

	"routehound/fleet"
)

// The history queries answer other services (GET /v1/drivers/{driver}/trail,
// /v1/loading-events, /v1/assignments/{route}/history): each answers at
// most limit rows (capped at maxQueryRows) after a cursor, and whether more
// follow, so that a client pages through with bounded memory on both sides.

// TrailHistory answers the driver's kept points (the newest TrailPoints)
// within q's bounds after q.After, in device-time order (then seq), at most
// q.Limit; more is true when others follow.
func (r *Replica) TrailHistory(ctx context.Context, q fleet.TrailQuery) (pts []fleet.Position, more bool, err error) {
	all, err := r.Trail(ctx, q.Driver, TrailPoints)
	if err != nil {
		return nil, false, err
	}
	since, until := nanos(q.Since), nanos(q.Until)
	pts = all[:0]
	for _, p := range all {
		c := fleet.CursorOf(p)
		if (since != 0 && c.TS < since) || (until != 0 && c.TS >= until) || (q.After != nil && !q.After.Less(c)) {
			continue
		}
		pts = append(pts, p)
	}
	slices.SortStableFunc(pts, func(a, b fleet.Position) int {
		ca, cb := fleet.CursorOf(a), fleet.CursorOf(b)
		if c := cmp.Compare(ca.TS, cb.TS); c != 0 {
			return c
		}
		if c := cmp.Compare(ca.Seq, cb.Seq); c != 0 {
			return c
		}
		return cmp.Compare(a.LSN, b.LSN)
	})
	limit := clampLimit(q.Limit)
	if len(pts) > limit {
		return pts[:limit], true, nil
	}
	return pts, false, nil
}

// LoadingHistory answers the events matching q in commit (LSN) order, at
// most q.Limit; more is true when others follow.
func (r *Replica) LoadingHistory(ctx context.Context, q fleet.LoadingQuery) (evs []fleet.LoadingRow, more bool, err error) {
	where := []string{"lsn > ?"}
	args := []any{int64(q.AfterLSN)}
	for _, f := range []struct{ col, v string }{{"dock", q.Dock}, {"shipment", q.Shipment}, {"terminal", q.Terminal}, {"kind", q.Kind}} {
		if f.v != "" {
			where, args = append(where, f.col+" = ?"), append(args, f.v)
		}
	}
	if !q.Since.IsZero() {
		where, args = append(where, "ts >= ?"), append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where, args = append(where, "ts < ?"), append(args, q.Until.UnixNano())
	}
	limit := clampLimit(q.Limit)
	args = append(args, limit+1)
	evs = []fleet.LoadingRow{}
	err = r.query(ctx, "loading history", `SELECT id, terminal, dock, shipment, kind, pallets, ts, lsn, committed_at FROM loading
		WHERE `+strings.Join(where, " AND ")+` ORDER BY lsn LIMIT ?`, args, func(rows *sql.Rows) error {
		var e fleet.LoadingRow
		var ts, lsn, at int64
		if err := rows.Scan(&e.ID, &e.Terminal, &e.Dock, &e.Shipment, &e.Kind, &e.Pallets, &ts, &lsn, &at); err != nil {
			return err
		}
		e.TS, e.LSN, e.CommittedAt = fromNanos(ts), uint64(lsn), fromNanos(at)
		evs = append(evs, e)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}

// AssignmentHistory answers the kept versions of a route (the newest
// AssignmentVersions) after afterLSN, oldest first, at most limit; more is
// true when others follow.
func (r *Replica) AssignmentHistory(ctx context.Context, route string, afterLSN uint64, limit int) (vs []fleet.AssignmentVersion, more bool, err error) {
	limit = clampLimit(limit)
	vs = []fleet.AssignmentVersion{}
	err = r.query(ctx, "history of route "+route, `SELECT driver, stops, note, version, lsn, committed_at, deleted
		FROM assignment_versions WHERE route = ? AND lsn > ? ORDER BY lsn LIMIT ?`,
		[]any{route, int64(afterLSN), limit + 1}, func(rows *sql.Rows) error {
			v := fleet.AssignmentVersion{Route: route}
			var ver, lsn, at, del int64
			var stops []byte
			if err := rows.Scan(&v.Driver, &stops, &v.Note, &ver, &lsn, &at, &del); err != nil {
				return err
			}
			v.Stops = stops
			v.Version, v.LSN, v.CommittedAt, v.Deleted = uint64(ver), uint64(lsn), fromNanos(at), del != 0
			vs = append(vs, v)
			return nil
		})
	if err != nil {
		return nil, false, err
	}
	if len(vs) > limit {
		return vs[:limit], true, nil
	}
	return vs, false, nil
}
