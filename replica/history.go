package replica

import (
	"cmp"
	"context"
	"database/sql"
	"math"
	"slices"
	"strings"

	"routehound/fleet"
)

// The history queries answer other services (GET /v1/drivers/{driver}/trail,
// /v1/loading-events, /v1/assignments/{route}/history): each answers at
// most limit rows (capped at maxQueryRows) after a cursor, and whether more
// follow, so that a client pages through with bounded memory on both sides.

// TrailHistory answers the driver's kept points within q's bounds after
// q.After, in device-time order (then seq, then LSN), at most q.Limit; more
// is true when others follow.
//
// It reads only the blocks that can hold the page: a binary search on the
// in-order blocks' keys finds the first whose last point is at or after
// the page's start (their device times never go back in key order), the
// scan goes on until a block starts past until or past the page's last
// candidate, and the late blocks are read by the range they overlap, in
// device-time order, with the same stop.
func (r *Replica) TrailHistory(ctx context.Context, q fleet.TrailQuery) (pts []fleet.Position, more bool, err error) {
	limit := clampLimit(q.Limit)
	since, until := nanos(q.Since), nanos(q.Until)
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.Since.IsZero() {
		lo = since
	}
	if !q.Until.IsZero() {
		hi = until
	}
	if q.After != nil {
		lo = max(lo, q.After.TS)
	}
	if lo >= hi {
		return []fleet.Position{}, false, nil
	}
	var cands []trailPoint
	var bound *trailPoint // the (limit+1)th candidate once there are as many
	trim := func() {
		slices.SortFunc(cands, trailOrder)
		if len(cands) > limit+1 {
			clear(cands[limit+1:])
			cands = cands[:limit+1]
		}
		if len(cands) == limit+1 {
			b := cands[limit]
			bound = &b
		}
	}
	take := func(blob []byte) error {
		ps, err := trailBlock(blob)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.TS < lo || p.TS >= hi || (q.After != nil && !q.After.Less(fleet.TrailCursor{TS: p.TS, Seq: p.Seq})) {
				continue
			}
			if bound != nil && trailOrder(p, *bound) >= 0 {
				continue
			}
			cands = append(cands, p)
		}
		if len(cands) > 2*(limit+1) {
			trim()
		}
		return nil
	}
	// past: no block starting at tsMin can hold a point of the page.
	past := func(tsMin int64) bool {
		if tsMin >= hi {
			return true
		}
		if len(cands) >= limit+1 {
			trim()
		}
		return bound != nil && tsMin > bound.TS
	}
	scan := func(rows *sql.Rows) error {
		var tsMin int64
		var blob []byte
		if err := rows.Scan(&tsMin, &blob); err != nil {
			return err
		}
		if past(tsMin) {
			return errStop
		}
		return take(blob)
	}
	// In-order blocks: the first point's time is the block's least.
	scanBlocks := func(rows *sql.Rows) error {
		var blob []byte
		if err := rows.Scan(&blob); err != nil {
			return err
		}
		if len(blob) < trailPointBytes {
			return errTrailBlock
		}
		if past(blockInt(blob, 0, 5)) {
			return errStop
		}
		return take(blob)
	}
	what := "trail history of " + q.Driver
	start, err := r.trailStart(ctx, q.Driver, lo)
	if err != nil {
		return nil, false, err
	}
	if err := r.query(ctx, what, `SELECT pts FROM trail WHERE driver = ? AND n >= ? ORDER BY n`,
		[]any{q.Driver, start}, scanBlocks); err != nil {
		return nil, false, err
	}
	// Late blocks past the count bound wait for the sweep: skipped here.
	if err := r.query(ctx, what, `SELECT ts_min, pts FROM trail_late WHERE driver = ?1 AND ts_max >= ?2 AND ts_min < ?3
		AND n > coalesce((SELECT trail_n FROM positions WHERE driver = ?1), 0) - ?4
		ORDER BY ts_min`, []any{q.Driver, lo, hi, r.opts.TrailMaxPoints}, scan); err != nil {
		return nil, false, err
	}
	trim()
	more = len(cands) > limit
	pts = make([]fleet.Position, 0, min(len(cands), limit))
	for _, p := range cands[:min(len(cands), limit)] {
		pts = append(pts, position(q.Driver, p))
	}
	return pts, more, nil
}

// trailOrder is the history's order: device time, then seq, then LSN.
func trailOrder(a, b trailPoint) int {
	if c := cmp.Compare(a.TS, b.TS); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	return cmp.Compare(a.LSN, b.LSN)
}

// trailStart is the least key from which the driver's in-order blocks can
// hold a point at or after device time lo: the key of the first block
// whose last point is at or after lo (their ts_max only grows with the
// key), found by a binary search on the key, one indexed probe a step.
func (r *Replica) trailStart(ctx context.Context, driver string, lo int64) (int64, error) {
	if lo == math.MinInt64 {
		return 0, nil
	}
	var minN, maxN sql.NullInt64
	if err := r.query(ctx, "trail keys of "+driver, `SELECT min(n), max(n) FROM trail WHERE driver = ?`, []any{driver},
		func(rows *sql.Rows) error { return rows.Scan(&minN, &maxN) }); err != nil {
		return 0, err
	}
	if !minN.Valid {
		return 0, nil
	}
	// P(t): the first block at or after key t ends at or after lo (or
	// there is none); false below the answer, true from it on.
	L, H := minN.Int64, maxN.Int64+1
	for L < H {
		mid := L + (H-L)/2
		var n, tsMax int64
		found := false
		if err := r.query(ctx, "trail keys of "+driver, `SELECT n, substr(pts, -?) FROM trail WHERE driver = ? AND n >= ? ORDER BY n LIMIT 1`,
			[]any{trailPointBytes, driver, mid}, func(rows *sql.Rows) error {
				var blob []byte
				if err := rows.Scan(&n, &blob); err != nil {
					return err
				}
				if len(blob) < trailPointBytes {
					return errTrailBlock
				}
				found, tsMax = true, blockInt(blob, len(blob)-trailPointBytes, 5)
				return nil
			}); err != nil {
			return 0, err
		}
		// None (the applier cut them since): nothing at or after mid.
		if !found || tsMax >= lo {
			H = mid
		} else {
			L = n + 1
		}
	}
	return L, nil
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
