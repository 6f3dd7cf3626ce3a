package replica

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// poll is how often the applier looks at the source without a notice: a
// safety net only (notices wake it at once).
const poll = time.Second

// errPageFull stops a ReadLog page at its byte bound.
var errPageFull = errors.New("replica: page full")

// run is the applier: the only goroutine that writes to SQLite. It owns
// wconn, the prepared statements and the page buffer.
func (r *Replica) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	a, err := newApplier(ctx, r)
	if err != nil {
		if ctx.Err() != nil {
			return // closed while starting: a shutdown, not a failure
		}
		r.log.Error("replica applier cannot start", "err", err)
		return
	}
	defer a.close()
	a.ahead = r.applied.Load() > r.src.DurableLSN()
	feed, _ := r.src.(Feed)
	timer := time.NewTimer(poll)
	defer timer.Stop()
	failing := false
	for {
		// Taken before the catch-up reads the durable LSN: a move after
		// that closes it.
		var moved <-chan struct{}
		if feed != nil {
			moved = feed.Notify()
		}
		err := a.catchUp(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			// Logged once per failure spell; retried every poll.
			r.log.Error("replica apply failed; retrying", "err", err, "applied_lsn", r.applied.Load())
			failing = true
		case err == nil && failing:
			r.log.Info("replica applying again", "applied_lsn", r.applied.Load())
			failing = false
		}
		timer.Reset(poll)
		wake := r.wake
		if failing {
			wake, moved = nil, nil // retry at the poll, not at every commit
		}
		select {
		case <-wake:
		case <-moved:
		case <-timer.C:
		case <-r.stop:
			return
		}
	}
}

// catchUp applies pages until the replica has the durable LSN, or rebuilds
// it when the log no longer holds what it needs.
func (a *applier) catchUp(ctx context.Context) error {
	r := a.r
	if a.ahead {
		// The store is behind the replica (restored from a backup, or a
		// replica kept across a crash that lost unsynced commits): the
		// replica holds records the log will reuse LSNs for.
		r.log.Warn("replica is ahead of the log; rebuilding", "applied_lsn", r.applied.Load(), "durable_lsn", r.src.DurableLSN())
		if err := a.rebuild(ctx); err != nil {
			return err
		}
		a.ahead = false
	}
	for ctx.Err() == nil && r.applied.Load() < r.src.DurableLSN() {
		t0 := time.Now()
		n, err := a.page(ctx)
		if isTrimmed(err) {
			r.log.Warn("log trimmed past the replica; rebuilding from a snapshot", "applied_lsn", r.applied.Load())
			err = a.rebuild(ctx)
		}
		if err != nil {
			return err
		}
		if n == 0 && r.applied.Load() < r.src.DurableLSN() {
			// The source has nothing to read yet below its durable LSN:
			// wait for the next notice or poll rather than spin.
			return nil
		}
		if busy := time.Since(t0); applyShare < 1 && r.applied.Load() < r.src.DurableLSN() {
			// Behind: rest so that the applier takes at most applyShare
			// of a core from the writers; the log holds the backlog.
			rest := min(time.Duration(float64(busy)*(1-applyShare)/applyShare), maxRest)
			select {
			case <-ctx.Done():
			case <-time.After(rest):
			}
		}
	}
	return nil
}

// applyShare is the most of a core the applier takes while it is behind
// (1 = all it can). The dashboard must not slow a writer: under a driver
// flood on two cores, a replica applying flat out cost the engine about 40%
// of its points/s, at half a core about 20%, while its lag p99 grew from
// ~0.7 s to ~2 s (BENCHMARKS.md, "Read replica"). A variable for the
// benchmarks.
var applyShare = 0.5

// maxRest bounds one rest: a page that took long (a slow disk, a race
// detector build) must not stop the replica for as long again.
const maxRest = 250 * time.Millisecond

func isTrimmed(err error) bool {
	return errors.Is(err, engine.ErrTrimmed)
}

// applier holds the writer's prepared statements and the page buffer.
type applier struct {
	r     *Replica
	conn  *sql.Conn
	buf   []engine.Record // one page; reused
	ahead bool            // the replica was opened ahead of the log: rebuild first

	setMeta, getN, delPos, cutTrail, delTrail        *sql.Stmt
	putLate, delLate, sweepDrivers, blocksOf, cutOld *sql.Stmt
	cutLate                                          *sql.Stmt
	putAsg, delAsg, putLoad, delLoad, putRow, delRow *sql.Stmt
	putAsgVer, cutAsgVer                             *sql.Stmt
	all                                              []*sql.Stmt
	putPos, putTrail                                 multiInsert

	// The page's drivers: positions keep only the latest point, so a page
	// of many points writes each driver's row once, cuts its trail once,
	// and writes its in-order points as one trail row. One map lookup a
	// point finds its state in pd; every slice here is reused from page
	// to page (a page holds at most pageRecords points).
	drivers map[string]int32
	pd      []pageDriver
	// arena holds the page's in-order points, packed (trailPointBytes
	// each) in arrival order; next chains each driver's points in it.
	arena []byte
	next  []int32
	// blocks holds each driver's points of arena one after the other,
	// sorted by driver, which the trail rows of the page bind.
	blocks []byte
	order  []int32 // indices of pd by driver, for the flush
	// nCache holds trail_n and trail_ceil of drivers as committed, so
	// that a driver's first point in a page need not read them back. The
	// applier is the only writer, so it stays true; it is dropped after a
	// failed transaction and when it reaches nCacheMax entries.
	nCache map[string]trailCount
	sized  time.Time // when Bytes was last measured
	// The window cut's sweep: when its round started, and the last
	// driver it cut in this round ("" = none yet).
	swept      time.Time
	sweepAfter string
	sweeping   bool
}

// latePoint is a late point and its number in the driver's trail.
type latePoint struct {
	trailPoint
	n int64
}

// trailCount is a driver's trail_n and trail_ceil.
type trailCount struct{ n, ceil int64 }

// nCacheMax bounds the trail_n cache (about 60 bytes an entry).
const nCacheMax = 100000

// pageDriver is a driver's state at the end of the page so far.
type pageDriver struct {
	key         string
	latest      trailPoint // its newest point by arrival (for positions)
	n           int64      // trail_n after it
	ceil        int64      // trail_ceil after it
	deleted     bool       // the position was deleted (and no point came after)
	first, last int32      // its in-order points in arena (-1: none)
	// late is its late points of the page (device time before its
	// trail_ceil), for trail_late; rare.
	late []latePoint
}

func newApplier(ctx context.Context, r *Replica) (*applier, error) {
	a := &applier{r: r, conn: r.wconn, buf: make([]engine.Record, 0, 256),
		drivers: map[string]int32{}, nCache: map[string]trailCount{}, swept: time.Now()}
	prep := func(dst **sql.Stmt, q string) error {
		s, err := a.conn.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("replica: prepare %q: %w", q, err)
		}
		*dst = s
		a.all = append(a.all, s)
		return nil
	}
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&a.setMeta, `INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`},
		{&a.getN, `SELECT trail_n, trail_ceil FROM positions WHERE driver = ?`},
		{&a.delPos, `DELETE FROM positions WHERE driver = ?`},
		// Keep the newest TrailMaxPoints of a driver: points are numbered
		// 1, 2, … so the expired ones are a prefix of its key range.
		{&a.cutTrail, `DELETE FROM trail WHERE driver = ? AND n <= ?`},
		{&a.delTrail, `DELETE FROM trail WHERE driver = ?`},
		{&a.putLate, `INSERT OR REPLACE INTO trail_late (driver, n, ts_min, ts_max, at, pts) VALUES (?, ?, ?, ?, ?, ?)`},
		{&a.delLate, `DELETE FROM trail_late WHERE driver = ?`},
		{&a.sweepDrivers, `SELECT driver, trail_n FROM positions WHERE driver > ? ORDER BY driver LIMIT ?`},
		// The window cut: blocks are in commit order by key, so the ones
		// committed before the cutoff are the keys below the first one
		// after it; finding it reads only the blocks that go, and one.
		{&a.blocksOf, `SELECT n, pts FROM trail WHERE driver = ? ORDER BY n`},
		{&a.cutOld, `DELETE FROM trail WHERE driver = ? AND n < ?`},
		{&a.cutLate, `DELETE FROM trail_late WHERE driver = ?1 AND (n <= ?2 OR at < ?3)`},
		{&a.putAsg, `INSERT INTO assignments (route, driver, stops, note, version, lsn, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (route) DO UPDATE SET driver = excluded.driver, stops = excluded.stops, note = excluded.note,
			version = excluded.version, lsn = excluded.lsn, committed_at = excluded.committed_at`},
		{&a.delAsg, `DELETE FROM assignments WHERE route = ?`},
		{&a.putAsgVer, `INSERT OR REPLACE INTO assignment_versions (route, lsn, driver, stops, note, version, committed_at, deleted)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`},
		// Keep a route's newest AssignmentVersions: the versions at or
		// below the oldest one kept go (a range of its primary key).
		{&a.cutAsgVer, `DELETE FROM assignment_versions WHERE route = ?1 AND lsn <= (
			SELECT lsn FROM assignment_versions WHERE route = ?1 ORDER BY lsn DESC LIMIT 1 OFFSET ?2)`},
		{&a.putLoad, `INSERT INTO loading (id, terminal, dock, shipment, kind, pallets, ts, lsn, committed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET terminal = excluded.terminal,
			dock = excluded.dock, shipment = excluded.shipment, kind = excluded.kind, pallets = excluded.pallets,
			ts = excluded.ts, lsn = excluded.lsn, committed_at = excluded.committed_at`},
		{&a.delLoad, `DELETE FROM loading WHERE id = ?`},
		{&a.putRow, `INSERT INTO rows (tbl, key, value, version, lsn, committed_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value, version = excluded.version,
			lsn = excluded.lsn, committed_at = excluded.committed_at`},
		{&a.delRow, `DELETE FROM rows WHERE tbl = ? AND key = ?`},
	} {
		if err := prep(p.dst, p.q); err != nil {
			a.close()
			return nil, err
		}
	}
	for _, m := range []struct {
		dst          *multiInsert
		cols         int
		head, suffix string
	}{
		{&a.putPos, 11, `INSERT INTO positions (driver, seq, lat, lng, speed_kmh, heading, ts, lsn, committed_at, trail_n, trail_ceil) VALUES `,
			` ON CONFLICT (driver) DO UPDATE SET seq = excluded.seq, lat = excluded.lat,
			lng = excluded.lng, speed_kmh = excluded.speed_kmh, heading = excluded.heading, ts = excluded.ts,
			lsn = excluded.lsn, committed_at = excluded.committed_at, trail_n = excluded.trail_n,
			trail_ceil = excluded.trail_ceil`},
		{&a.putTrail, 3, `INSERT OR REPLACE INTO trail (driver, n, pts) VALUES `, ``},
	} {
		m.dst.cols = m.cols
		row := "(?" + strings.Repeat(", ?", m.cols-1) + ")"
		if err := prep(&m.dst.one, m.head+row+m.suffix); err != nil {
			a.close()
			return nil, err
		}
		if err := prep(&m.dst.many, m.head+row+strings.Repeat(", "+row, multiRows-1)+m.suffix); err != nil {
			a.close()
			return nil, err
		}
	}
	return a, nil
}

// multiRows is the number of rows of one multi-row INSERT: a statement
// costs more than a row (bind, step and reset through database/sql).
// A variable for the benchmarks.
var multiRows = 64

// multiInsert batches the rows of one INSERT into statements of multiRows
// rows, the rest one row a statement. Rows are written in the order added.
type multiInsert struct {
	one, many *sql.Stmt
	cols      int
	args      []any // values of the rows not yet written; < cols*multiRows
}

func (m *multiInsert) add(ctx context.Context, vals ...any) error {
	m.args = append(m.args, vals...)
	if len(m.args) < m.cols*multiRows {
		return nil
	}
	_, err := m.many.ExecContext(ctx, m.args...)
	clear(m.args)
	m.args = m.args[:0]
	return err
}

func (m *multiInsert) flush(ctx context.Context) error {
	defer m.reset()
	for i := 0; i < len(m.args); i += m.cols {
		if _, err := m.one.ExecContext(ctx, m.args[i:i+m.cols]...); err != nil {
			return err
		}
	}
	return nil
}

func (m *multiInsert) reset() {
	clear(m.args)
	m.args = m.args[:0]
}

func (a *applier) close() {
	for _, s := range a.all {
		s.Close()
	}
}

// page reads the next page of the log and applies it in one transaction;
// n is the number of records applied.
func (a *applier) page(ctx context.Context) (n int, err error) {
	r := a.r
	t0 := time.Now()
	from := r.applied.Load()
	clear(a.buf)
	a.buf = a.buf[:0]
	size := 0
	err = r.src.ReadLog(from, pageRecords, func(rec engine.Record) error {
		a.buf = append(a.buf, rec)
		size += len(rec.Value) + len(rec.Key) + 64
		if size >= pageBytes {
			return errPageFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return 0, fmt.Errorf("replica: read log after lsn %d: %w", from, err)
	}
	if len(a.buf) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	r.pageAt = a.buf[0].CommittedAt
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.pageAt = time.Time{}
		r.mu.Unlock()
	}()
	last := a.buf[len(a.buf)-1].LSN
	// Statements run without ctx: the driver watches a cancelable context
	// with a goroutine per statement (10% of the applier's CPU), and a
	// page is bounded, so Close waits for at most one page.
	bg := context.Background()
	err = a.tx(bg, func() error {
		for i := range a.buf {
			if err := a.apply(bg, i); err != nil {
				return err
			}
		}
		if err := a.flushDrivers(bg); err != nil {
			return err
		}
		return a.sweep(bg)
	}, last, len(a.buf), t0, false)
	if err != nil {
		return 0, fmt.Errorf("replica: apply lsn %d..%d: %w", from+1, last, err)
	}
	return len(a.buf), nil
}

// tx runs fn in one transaction that also records lsn as applied, and
// publishes lsn once it is committed, with the counters: n records applied
// since t0, or a rebuild.
func (a *applier) tx(ctx context.Context, fn func() error, lsn uint64, n int, t0 time.Time, rebuild bool) error {
	if _, err := a.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	err := fn()
	if err == nil {
		_, err = a.setMeta.ExecContext(ctx, metaApplied, int64(lsn))
	}
	if err == nil {
		if _, err = a.conn.ExecContext(ctx, "COMMIT"); err != nil {
			err = fmt.Errorf("commit: %w", err)
		}
	}
	if err != nil {
		// A context canceled by Close leaves the connection usable: roll
		// back with a fresh one so the transaction does not linger.
		a.conn.ExecContext(context.Background(), "ROLLBACK")
		a.resetPage()
		a.putPos.reset()
		a.putTrail.reset()
		a.nCache = map[string]trailCount{} // may hold counts of the rolled back page
		return err
	}
	a.r.stats.batches.Add(1)
	a.r.stats.applied.Add(uint64(n))
	a.r.stats.applyNanos.Add(int64(time.Since(t0)))
	if rebuild {
		a.r.stats.rebuilds.Add(1)
	}
	a.r.setApplied(lsn)
	if time.Since(a.sized) > time.Second {
		a.sized = time.Now()
		var n int64
		if a.conn.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&n) == nil {
			a.r.stats.bytes.Store(n)
		}
	}
	return nil
}

// apply writes record i of the page. Positions are deferred to
// flushDrivers; the trail takes every point.
func (a *applier) apply(ctx context.Context, i int) error {
	rec := &a.buf[i]
	if rec.Table == fleet.TableFleetConsumer {
		// The fleet-events consumer's private state (its cursor, marks,
		// stops' places, fences): nothing reads it from the replica, and
		// it is written at every write of the consumer.
		return nil
	}
	at := nanos(rec.CommittedAt)
	del := rec.Op == engine.OpDelete
	var err error
	switch rec.Table {
	case fleet.TablePositions:
		k, seen := a.drivers[rec.Key]
		if del {
			if !seen {
				k = a.addDriver(rec.Key)
			}
			// Its points of this page go with its trail.
			a.pd[k] = pageDriver{key: rec.Key, deleted: true, first: -1, last: -1}
			if _, err = a.delTrail.ExecContext(ctx, rec.Key); err == nil {
				_, err = a.delLate.ExecContext(ctx, rec.Key)
			}
			break
		}
		var p fleet.PointValue
		if err := p.Decode(rec.Value); err != nil {
			a.skip(rec, err)
			return nil
		}
		if !seen {
			// First point of the driver in this page: its count so far.
			c, ok := a.nCache[rec.Key]
			if !ok {
				err = a.getN.QueryRowContext(ctx, rec.Key).Scan(&c.n, &c.ceil)
				if errors.Is(err, sql.ErrNoRows) {
					err = nil
				}
				if err != nil {
					break
				}
			}
			k = a.addDriver(rec.Key)
			a.pd[k].n, a.pd[k].ceil = c.n, c.ceil
		}
		d := &a.pd[k]
		tp := trailPoint{Seq: p.Seq, Lat: p.Lat, Lng: p.Lng, SpeedKmh: p.SpeedKmh, Heading: p.Heading,
			TS: nanos(p.TS), LSN: rec.LSN, CommittedAt: at}
		if tp.TS < d.ceil {
			d.late = append(d.late, latePoint{tp, d.n + 1})
		} else {
			j := int32(len(a.next))
			a.arena = appendTrailPoint(a.arena, tp)
			a.next = append(a.next, -1)
			if d.last >= 0 {
				a.next[d.last] = j
			} else {
				d.first = j
			}
			d.last = j
			d.ceil = tp.TS
		}
		d.latest, d.n, d.deleted = tp, d.n+1, false
	case fleet.TableAssignments:
		if del {
			if _, err = a.delAsg.ExecContext(ctx, rec.Key); err == nil {
				err = a.assignmentVersion(ctx, rec, assignmentValue{}, at, true)
			}
			break
		}
		var v assignmentValue
		if !a.decode(rec, &v) {
			return nil
		}
		if _, err = a.putAsg.ExecContext(ctx, rec.Key, v.Driver, len(v.Stops), v.Note, int64(rec.Version), int64(rec.LSN), at); err == nil {
			err = a.assignmentVersion(ctx, rec, v, at, false)
		}
	case fleet.TableLoading:
		if del {
			_, err = a.delLoad.ExecContext(ctx, rec.Key)
			break
		}
		var v loadingValue
		if !a.decode(rec, &v) {
			return nil
		}
		_, err = a.putLoad.ExecContext(ctx, rec.Key, v.Terminal, v.Dock, v.Shipment, v.Kind, v.Pallets, nanos(parseTime(v.TS)), int64(rec.LSN), at)
	default:
		if del {
			_, err = a.delRow.ExecContext(ctx, rec.Table, rec.Key)
			break
		}
		_, err = a.putRow.ExecContext(ctx, rec.Table, rec.Key, rec.Value, int64(rec.Version), int64(rec.LSN), at)
	}
	if err != nil {
		return fmt.Errorf("%s %s of %s at lsn %d: %w", rec.Op, rec.Key, rec.Table, rec.LSN, err)
	}
	return nil
}

// assignmentVersion keeps one version of a route's assignment (a delete
// too) and cuts the route's versions to AssignmentVersions. Dispatch
// writes are few, so the cut runs per version.
func (a *applier) assignmentVersion(ctx context.Context, rec *engine.Record, v assignmentValue, at int64, deleted bool) error {
	stops, err := json.Marshal(v.Stops)
	if err != nil {
		return fmt.Errorf("stops: %w", err)
	}
	if v.Stops == nil {
		stops = []byte("[]")
	}
	del := 0
	if deleted {
		del = 1
	}
	if _, err := a.putAsgVer.ExecContext(ctx, rec.Key, int64(rec.LSN), v.Driver, stops, v.Note, int64(rec.Version), at, del); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	if _, err := a.cutAsgVer.ExecContext(ctx, rec.Key, AssignmentVersions); err != nil {
		return fmt.Errorf("cut versions: %w", err)
	}
	return nil
}

// addDriver adds a driver to the page: its index in pd.
func (a *applier) addDriver(key string) int32 {
	k := int32(len(a.pd))
	a.pd = append(a.pd, pageDriver{key: key, first: -1, last: -1})
	a.drivers[key] = k
	return k
}

// resetPage forgets the page's drivers and points, keeping the memory.
func (a *applier) resetPage() {
	clear(a.drivers)
	clear(a.pd) // drops the keys and late points
	a.pd = a.pd[:0]
	a.arena, a.next, a.blocks, a.order = a.arena[:0], a.next[:0], a.blocks[:0], a.order[:0]
}

// flushDrivers writes each driver's latest position of the page and cuts
// the trails that grew past TrailMaxPoints.
func (a *applier) flushDrivers(ctx context.Context) error {
	defer a.resetPage()
	maxPoints := a.r.opts.TrailMaxPoints
	for k := range a.pd {
		a.order = append(a.order, int32(k))
	}
	// In key order: B-tree inserts next to each other.
	slices.SortFunc(a.order, func(x, y int32) int { return strings.Compare(a.pd[x].key, a.pd[y].key) })
	// Each driver's in-order points of the page, one block row keyed by
	// the trail_n of its newest point, before the cuts below.
	// A block never keeps more than the bound: a driver keeps at most
	// 2*TrailMaxPoints-1 points, the newest block and older ones not yet
	// past the bound.
	if cap(a.blocks) < len(a.arena) {
		// Room for every point: the rows bind slices of it until flushed.
		a.blocks = make([]byte, 0, cap(a.arena))
	}
	for _, k := range a.order {
		d := &a.pd[k]
		if d.first < 0 {
			continue
		}
		start := len(a.blocks)
		for p := d.first; p >= 0; p = a.next[p] {
			a.blocks = append(a.blocks, a.arena[int(p)*trailPointBytes:int(p+1)*trailPointBytes]...)
		}
		pts := a.blocks[start:len(a.blocks):len(a.blocks)]
		if len(d.late) > 0 && len(pts)/trailPointBytes+len(d.late) > maxPoints {
			pts = a.keepNewest(d, pts, maxPoints)
		}
		if max := maxPoints * trailPointBytes; len(pts) > max {
			pts = pts[len(pts)-max:]
		}
		if len(pts) == 0 {
			continue
		}
		// A long block is cut in rows of at most blockPoints, keyed back
		// from the newest, so that a history page reads a bounded row.
		for end := len(pts); end > 0; end -= blockPoints * trailPointBytes {
			start := max(0, end-blockPoints*trailPointBytes)
			if err := a.putTrail.add(ctx, d.key, d.n-int64(len(pts)-end)/trailPointBytes, pts[start:end]); err != nil {
				return fmt.Errorf("trail of %s: %w", d.key, err)
			}
		}
	}
	for _, k := range a.order {
		d := &a.pd[k]
		if len(d.late) == 0 {
			continue
		}
		if err := a.putLatePoints(ctx, d.key, d.late); err != nil {
			return fmt.Errorf("late points of %s: %w", d.key, err)
		}
	}
	if err := a.putTrail.flush(ctx); err != nil {
		return fmt.Errorf("trails: %w", err)
	}
	if len(a.nCache)+len(a.pd) > nCacheMax {
		a.nCache = map[string]trailCount{}
	}
	for _, k := range a.order {
		d := &a.pd[k]
		a.nCache[d.key] = trailCount{d.n, d.ceil}
		var err error
		if d.deleted {
			_, err = a.delPos.ExecContext(ctx, d.key)
		} else {
			p := &d.latest
			err = a.putPos.add(ctx, d.key, int64(p.Seq), p.Lat, p.Lng, p.SpeedKmh, p.Heading, p.TS,
				int64(p.LSN), p.CommittedAt, d.n, d.ceil)
			if err == nil && d.n > int64(maxPoints) {
				_, err = a.cutTrail.ExecContext(ctx, d.key, d.n-int64(maxPoints))
			}
		}
		if err != nil {
			return fmt.Errorf("position of %s: %w", d.key, err)
		}
	}
	if err := a.putPos.flush(ctx); err != nil {
		return fmt.Errorf("positions: %w", err)
	}
	return nil
}

// decode reads a value of a built-in table into v; a value it cannot read
// is skipped (counted, and logged the first times): the replica must not
// stop on one bad record.
func (a *applier) decode(rec *engine.Record, v decoder) bool {
	if err := v.decode(rec.Value); err != nil {
		a.skip(rec, err)
		return false
	}
	return true
}

// skip counts a record the applier cannot read, and logs the first ones.
func (a *applier) skip(rec *engine.Record, err error) {
	if a.r.stats.skipped.Add(1) <= 10 {
		a.r.log.Warn("replica skipped a record it cannot read", "table", rec.Table, "key", rec.Key, "lsn", rec.LSN, "err", err)
	}
}

// rebuild replaces the replica's content with a snapshot of the table
// state, in one transaction, and resumes from the snapshot's LSN. Rows
// from a snapshot have no committed_at (0); trails restart at the latest
// position.
func (a *applier) rebuild(ctx context.Context) error {
	r := a.r
	sn, ok := r.src.(Snapshotter)
	if !ok {
		return fmt.Errorf("replica: the log was trimmed past lsn %d and the source has no snapshots", r.applied.Load())
	}
	snap, err := sn.Snapshot()
	if err != nil {
		return fmt.Errorf("replica: rebuild: %w", err)
	}
	defer snap.Close()
	// A snapshot may hold commits not yet durable; the replica shows only
	// durable records, so wait (one group-commit interval) for them.
	if feed, ok := r.src.(Feed); ok {
		if err := feed.WaitDurable(ctx, snap.LSN()); err != nil {
			return fmt.Errorf("replica: rebuild: waiting for lsn %d to be durable: %w", snap.LSN(), err)
		}
	}
	for r.src.DurableLSN() < snap.LSN() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake: // each published batch wakes it, after the durable LSN moved
		}
	}
	t0 := time.Now()
	var keys uint64
	bg := context.Background() // see page; ctx is checked once per key instead
	a.nCache = map[string]trailCount{}
	err = a.tx(bg, func() error {
		for _, t := range dataTables {
			if _, err := a.conn.ExecContext(bg, "DELETE FROM "+t); err != nil {
				return fmt.Errorf("clear %s: %w", t, err)
			}
		}
		var tables []string
		if _, err := snap.Tables("", 0, func(ti engine.TableInfo) error {
			if ti.Name != fleet.TableFleetConsumer { // see apply
				tables = append(tables, ti.Name)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, t := range tables {
			_, err := snap.Scan(t, "", 0, func(key string, st engine.State) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				keys++
				a.buf = append(a.buf[:0], engine.Record{LSN: st.LSN, Table: t, Key: key, Op: engine.OpPut, Value: st.Value, Version: st.Version})
				if err := a.apply(bg, 0); err != nil {
					return err
				}
				return a.flushDrivers(bg)
			})
			if err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
		}
		return nil
	}, snap.LSN(), 0, t0, true)
	clear(a.buf)
	a.buf = a.buf[:0]
	if err != nil {
		return fmt.Errorf("replica: rebuild at lsn %d: %w", snap.LSN(), err)
	}
	r.log.Info("replica rebuilt from a snapshot", "lsn", snap.LSN(), "keys", keys, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// blockInt reads field f (0..7) of the packed point at byte offset off.
func blockInt(pts []byte, off, f int) int64 {
	return int64(binary.LittleEndian.Uint64(pts[off+8*f:]))
}

// keepNewest cuts a driver's page of in-order points (packed) and late
// ones to the newest maxPoints by arrival (LSN); it answers the in-order
// ones kept and leaves the late ones kept in d.late. A page brings more
// points of one driver than the bound only with a small bound.
func (a *applier) keepNewest(d *pageDriver, pts []byte, maxPoints int) []byte {
	late := d.late
	lsns := make([]uint64, 0, len(pts)/trailPointBytes+len(late))
	for off := 0; off < len(pts); off += trailPointBytes {
		lsns = append(lsns, uint64(blockInt(pts, off, 6)))
	}
	for _, p := range late {
		lsns = append(lsns, p.LSN)
	}
	slices.Sort(lsns)
	least := lsns[len(lsns)-maxPoints]
	kept := pts[:0:0]
	for off := 0; off < len(pts); off += trailPointBytes {
		if uint64(blockInt(pts, off, 6)) >= least {
			kept = append(kept, pts[off:off+trailPointBytes]...)
		}
	}
	d.late = slices.DeleteFunc(late, func(p latePoint) bool { return p.LSN < least })
	return kept
}

// putLatePoints writes a driver's late points of the page to trail_late,
// sorted by device time, in blocks of lateChunk keyed by the trail_n of
// their newest point by arrival (so the count cut keeps the newest).
func (a *applier) putLatePoints(ctx context.Context, driver string, late []latePoint) error {
	slices.SortFunc(late, func(x, y latePoint) int {
		if c := cmp.Compare(x.TS, y.TS); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Seq, y.Seq); c != 0 {
			return c
		}
		return cmp.Compare(x.LSN, y.LSN)
	})
	var b []byte
	for i := 0; i < len(late); i += lateChunk {
		chunk := late[i:min(i+lateChunk, len(late))]
		b = b[:0]
		var at, key int64
		for _, p := range chunk {
			b = appendTrailPoint(b, p.trailPoint)
			at, key = max(at, p.CommittedAt), max(key, p.n)
		}
		if _, err := a.putLate.ExecContext(ctx, driver, key, chunk[0].TS, chunk[len(chunk)-1].TS, at, b); err != nil {
			return err
		}
	}
	return nil
}

// cutWindow deletes the driver's blocks whose newest point was committed
// before cutoff (a block from a rebuild, without a commit time, too): a
// prefix of its keys, found by reading those blocks and the next one.
func (a *applier) cutWindow(ctx context.Context, driver string, cutoff int64) error {
	rows, err := a.blocksOf.QueryContext(ctx, driver)
	if err != nil {
		return err
	}
	keep, old := int64(math.MaxInt64), 0
	for rows.Next() {
		var n int64
		var pts []byte
		if err := rows.Scan(&n, &pts); err != nil {
			rows.Close()
			return err
		}
		if len(pts) >= trailPointBytes && blockInt(pts, len(pts)-trailPointBytes, 7) >= cutoff {
			keep = n
			break
		}
		old++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if old > 0 {
		_, err = a.cutOld.ExecContext(ctx, driver, keep)
	}
	return err
}

// sweep cuts the trails to the window, and trail_late to the window and
// the count, for up to sweepDrivers drivers a page; a round over every
// driver starts sweepEvery after the last one started.
func (a *applier) sweep(ctx context.Context) error {
	if !a.sweeping {
		if time.Since(a.swept) < sweepEvery {
			return nil
		}
		a.sweeping, a.swept, a.sweepAfter = true, time.Now(), ""
	}
	type drv struct {
		name string
		n    int64
	}
	var ds []drv
	rows, err := a.sweepDrivers.QueryContext(ctx, a.sweepAfter, sweepDrivers)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	for rows.Next() {
		var d drv
		if err := rows.Scan(&d.name, &d.n); err != nil {
			rows.Close()
			return fmt.Errorf("sweep: %w", err)
		}
		ds = append(ds, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	cutoff := time.Now().Add(-a.r.opts.TrailWindow).UnixNano()
	for _, d := range ds {
		if err := a.cutWindow(ctx, d.name, cutoff); err != nil {
			return fmt.Errorf("sweep trail of %s: %w", d.name, err)
		}
		if _, err := a.cutLate.ExecContext(ctx, d.name, d.n-int64(a.r.opts.TrailMaxPoints), cutoff); err != nil {
			return fmt.Errorf("sweep late points of %s: %w", d.name, err)
		}
	}
	if len(ds) < sweepDrivers {
		a.sweeping = false
	} else {
		a.sweepAfter = ds[len(ds)-1].name
	}
	return nil
}
