package replica

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"routehound/fleet"
)

// LoadingEvents answers the events matching f, newest first; f.Limit is
// capped at 1000. CommittedAt is zero for a row that came from a rebuild.
func (r *Replica) LoadingEvents(ctx context.Context, f fleet.LoadingFilter) ([]fleet.LoadingRow, error) {
	var where []string
	var args []any
	if f.Dock != "" {
		where, args = append(where, "dock = ?"), append(args, f.Dock)
	}
	if f.Shipment != "" {
		where, args = append(where, "shipment = ?"), append(args, f.Shipment)
	}
	if f.BeforeLSN > 0 {
		where, args = append(where, "lsn < ?"), append(args, int64(f.BeforeLSN))
	}
	q := `SELECT id, terminal, dock, shipment, kind, pallets, ts, lsn, committed_at FROM loading`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY lsn DESC LIMIT ?"
	args = append(args, clampLimit(f.Limit))
	out := []fleet.LoadingRow{}
	err := r.query(ctx, "loading events", q, args, func(rows *sql.Rows) error {
		var e fleet.LoadingRow
		var ts, lsn, at int64
		if err := rows.Scan(&e.ID, &e.Terminal, &e.Dock, &e.Shipment, &e.Kind, &e.Pallets, &ts, &lsn, &at); err != nil {
			return err
		}
		e.TS, e.LSN, e.CommittedAt = fromNanos(ts), uint64(lsn), fromNanos(at)
		out = append(out, e)
		return nil
	})
	return out, err
}

// LoadingCounts answers the event counts per dock and kind, by dock then
// kind; only pairs with events are listed.
func (r *Replica) LoadingCounts(ctx context.Context) ([]fleet.LoadingCount, error) {
	out := []fleet.LoadingCount{}
	err := r.query(ctx, "loading counts", `SELECT dock, kind, n FROM loading_counts WHERE n > 0 ORDER BY dock, kind`, nil,
		func(rows *sql.Rows) error {
			var c fleet.LoadingCount
			if err := rows.Scan(&c.Dock, &c.Kind, &c.N); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	return out, err
}

// Assignments answers the most recently written routes first; limit <= 0
// means 100, capped at 1000. CommittedAt is zero for a row that came from
// a rebuild.
func (r *Replica) Assignments(ctx context.Context, limit int) ([]fleet.AssignmentRow, error) {
	out := []fleet.AssignmentRow{}
	err := r.query(ctx, "assignments", `SELECT route, driver, note, stops, version, lsn, committed_at FROM assignments
		ORDER BY lsn DESC LIMIT ?`, []any{clampLimit(limit)}, func(rows *sql.Rows) error {
		var a fleet.AssignmentRow
		var ver, lsn, at int64
		if err := rows.Scan(&a.Route, &a.Driver, &a.Note, &a.Stops, &ver, &lsn, &at); err != nil {
			return err
		}
		a.Version, a.LSN, a.CommittedAt = uint64(ver), uint64(lsn), fromNanos(at)
		out = append(out, a)
		return nil
	})
	return out, err
}

const positionCols = `driver, lat, lng, speed_kmh, heading, seq, ts, lsn, committed_at`

func scanPosition(rows *sql.Rows) (fleet.Position, error) {
	var p fleet.Position
	var seq, ts, lsn, at int64
	err := rows.Scan(&p.Driver, &p.Lat, &p.Lng, &p.SpeedKmh, &p.Heading, &seq, &ts, &lsn, &at)
	p.Seq, p.TS, p.LSN, p.CommittedAt = uint64(seq), fromNanos(ts), uint64(lsn), fromNanos(at)
	return p, err
}

// Positions answers the latest position of every driver, by driver name.
// There is one row per driver (the engine bounds the drivers).
func (r *Replica) Positions(ctx context.Context) ([]fleet.Position, error) {
	out := []fleet.Position{}
	err := r.query(ctx, "positions", `SELECT `+positionCols+` FROM positions ORDER BY driver`, nil, func(rows *sql.Rows) error {
		p, err := scanPosition(rows)
		out = append(out, p)
		return err
	})
	return out, err
}

// Trail answers a driver's last n points by arrival, newest first; n <= 0
// means TrailRead, and n is capped at 1000 (maxQueryRows): the dashboard
// asks for what it draws, however deep the trail is kept.
func (r *Replica) Trail(ctx context.Context, driver string, n int) ([]fleet.Position, error) {
	if n <= 0 {
		n = TrailRead
	}
	n = min(n, maxQueryRows)
	type block struct {
		n   int64
		pts []trailPoint
	}
	var blocks []block
	got := 0
	// In-order blocks newest first until n points (a block holds one
	// point at least, so at most n blocks), then the late blocks among
	// them: a late block's points count as arrived at its key.
	read := func(what, q string, args []any, stopAt int) error {
		return r.query(ctx, what+" of "+driver, q, args, func(rows *sql.Rows) error {
			var k int64
			var blob []byte
			if err := rows.Scan(&k, &blob); err != nil {
				return err
			}
			pts, err := trailBlock(blob)
			if err != nil {
				return err
			}
			blocks = append(blocks, block{k, pts})
			if got += len(pts); got >= stopAt {
				return errStop
			}
			return nil
		})
	}
	if err := read("trail", `SELECT n, pts FROM trail WHERE driver = ? ORDER BY n DESC LIMIT ?`, []any{driver, n}, n); err != nil {
		return nil, err
	}
	// Late blocks keyed after the oldest in-order block read, or in its
	// page (a page's points are numbered within pageRecords), and not
	// past the count bound (the sweep deletes them later).
	from := int64(math.MinInt64)
	if got >= n {
		from = blocks[len(blocks)-1].n - pageRecords
	}
	if err := read("late trail", `SELECT n, pts FROM trail_late WHERE driver = ?1 AND n > ?2
		AND n > coalesce((SELECT trail_n FROM positions WHERE driver = ?1), 0) - ?3 ORDER BY n DESC LIMIT ?4`,
		[]any{driver, from, r.opts.TrailMaxPoints, n}, math.MaxInt); err != nil {
		return nil, err
	}
	// Newest first by arrival: by LSN.
	var all []trailPoint
	for _, b := range blocks {
		all = append(all, b.pts...)
	}
	slices.SortFunc(all, func(x, y trailPoint) int { return cmp.Compare(y.LSN, x.LSN) })
	out := []fleet.Position{}
	for _, p := range all[:min(len(all), n)] {
		out = append(out, position(driver, p))
	}
	return out, nil
}
func position(driver string, p trailPoint) fleet.Position {
	return fleet.Position{Driver: driver, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh,
		Heading: p.Heading, Seq: p.Seq, TS: fromNanos(p.TS), LSN: p.LSN, CommittedAt: fromNanos(p.CommittedAt)}
}

// Row is one key of a user table.
type Row struct {
	Table, Key  string
	Value       []byte // JSON
	Version     uint64
	LSN         uint64
	CommittedAt time.Time // zero when the row came from a rebuild
}

// Rows answers the keys of a user table after the key `after`, in key
// order; limit <= 0 means 100, capped at 1000.
func (r *Replica) Rows(ctx context.Context, table, after string, limit int) ([]Row, error) {
	out := []Row{}
	err := r.query(ctx, "rows of "+table, `SELECT key, value, version, lsn, committed_at FROM rows
		WHERE tbl = ? AND key > ? ORDER BY key LIMIT ?`, []any{table, after, clampLimit(limit)}, func(rows *sql.Rows) error {
		row := Row{Table: table}
		var ver, lsn, at int64
		if err := rows.Scan(&row.Key, &row.Value, &ver, &lsn, &at); err != nil {
			return err
		}
		row.Version, row.LSN, row.CommittedAt = uint64(ver), uint64(lsn), fromNanos(at)
		out = append(out, row)
		return nil
	})
	return out, err
}

// errStop, from a query's scan, ends the query early without an error.
var errStop = errors.New("replica: stop")

func clampLimit(n int) int {
	if n <= 0 {
		return 100
	}
	return min(n, maxQueryRows)
}

// query runs q on the readers' pool and calls scan for each row.
func (r *Replica) query(ctx context.Context, what, q string, args []any, scan func(*sql.Rows) error) error {
	select {
	case <-r.stop:
		return ErrClosed
	default:
	}
	rows, err := r.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("replica: query %s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err == errStop {
			return nil
		} else if err != nil {
			return fmt.Errorf("replica: query %s: %w", what, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replica: query %s: %w", what, err)
	}
	return nil
}
