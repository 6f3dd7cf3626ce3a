package replica

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"routehound/engine"
	"sync"
	"sync/atomic"
	"time"
)

// Source is the read side of the engine (*engine.Engine satisfies it).
type Source interface {
	// Subscribe registers fn for every durable record, in LSN order (the
	// engine runs fn on a cursor of its durability feed, a goroutine of
	// its own). The replica keeps only a notice of each batch there, for
	// the lag, and wakes the applier.
	Subscribe(fn func([]engine.Record))
	// ReadLog reads durable records after `after`, at most limit, in LSN
	// order; it fails with an error wrapping engine.ErrTrimmed when those
	// records are gone.
	ReadLog(after uint64, limit int, fn func(engine.Record) error) error
	// DurableLSN is the highest durable LSN.
	DurableLSN() uint64
}

// Feed is the optional side of a Source that tells when the durable LSN
// moves (*engine.Engine satisfies it): the applier then waits on it, and a
// rebuild waits for its snapshot's LSN to be durable, with no polling.
type Feed interface {
	// Notify returns a channel closed when the durable LSN next moves.
	Notify() <-chan struct{}
	// WaitDurable waits until lsn is durable; it fails when lsn was not
	// committed (it would never become durable by waiting).
	WaitDurable(ctx context.Context, lsn uint64) error
}

// Snapshotter is the optional side of a Source that lets the replica
// rebuild itself when the log was trimmed past it (*engine.Engine
// satisfies it).
type Snapshotter interface {
	Snapshot() (*engine.Snapshot, error)
}

// ErrClosed answers WaitLSN and queries on a closed replica.
var ErrClosed = errors.New("replica: closed")

// Limits of the read model.
const (
	// DefaultTrailWindow and DefaultTrailMaxPoints are the trail's depth
	// when Options leave it unset (config [replica] trail_window and
	// trail_max_points): 10,000 points of 64 bytes are 640 kB a driver.
	DefaultTrailWindow    = 24 * time.Hour
	DefaultTrailMaxPoints = 10000
	// TrailRead is what Trail answers when asked for n <= 0 points: the
	// dashboard's sparkline and map trail.
	TrailRead = 200
	// lateChunk is the most points of one trail_late block, blockPoints
	// of one trail block (a page bringing more of a driver writes more
	// rows): what a history page reads to find its place stays small.
	lateChunk   = 64
	blockPoints = 256
	// sweepDrivers is the most drivers one page cuts to the window (a
	// round spans pages).
	sweepDrivers = 256
	// AssignmentVersions is the most versions of one route kept for its
	// history; older ones are deleted with the newer one's write.
	AssignmentVersions = 1000
	// pageRecords and pageBytes bound one applier page (one transaction):
	// the replica holds at most one page of records in memory.
	pageRecords = 8192
	pageBytes   = 4 << 20
	// noticeSlots bounds the batch notices kept for the lag age. When it is
	// full, a new batch extends the newest notice (the oldest unapplied
	// batch, which is what the age reads, stays exact).
	noticeSlots = 1024
	// maxQueryRows bounds what one query answers.
	maxQueryRows = 1000
	// readers bounds the query connections (each with a 4 MB page cache).
	readers = 4
)

// sweepEvery is the least time between two rounds of the window cut; a
// variable for the tests.
var sweepEvery = 30 * time.Second

// Options are the replica's settings; a zero field takes its default.
type Options struct {
	// TrailWindow is how long a trail point is kept, by its commit time:
	// a block of points goes once its newest point was committed longer
	// ago (cut by a sweep every sweepEvery, so up to that much later).
	// Commit time rather than device time: it follows arrival, so the cut
	// is a range of the block keys, and a phone with a wrong clock can
	// neither keep a point forever nor lose it at once. A point from a
	// rebuild has no commit time: it goes at the next sweep.
	TrailWindow time.Duration
	// TrailMaxPoints is the most points kept per driver (the newest by
	// arrival); a driver may hold up to one page's block more until its
	// next point, and late points up to a sweep round more.
	TrailMaxPoints int
}

func (o Options) withDefaults() Options {
	if o.TrailWindow <= 0 {
		o.TrailWindow = DefaultTrailWindow
	}
	if o.TrailMaxPoints <= 0 {
		o.TrailMaxPoints = DefaultTrailMaxPoints
	}
	return o
}

// Replica is the SQLite read model of the log. Its query methods are safe
// for concurrent use and never wait for the applier.
type Replica struct {
	src    Source
	opts   Options
	log    *slog.Logger
	path   string
	tmpDir string // removed on Close: the throwaway database of Open("")

	wdb   *sql.DB   // the applier's pool: one connection
	wconn *sql.Conn // owned by the applier goroutine
	rdb   *sql.DB   // readers

	applied atomic.Uint64 // LSN applied and committed to SQLite

	wake chan struct{} // cap 1: "the source has more"; a full channel already says so
	stop chan struct{}
	done chan struct{} // closed when the applier returns

	mu       sync.Mutex    // guards notices, appliedC; never held across I/O
	notices  []notice      // oldest first; bounded by noticeSlots
	appliedC chan struct{} // closed and replaced each time applied moves
	pageAt   time.Time     // committed_at of the first record of the page being applied

	stats struct {
		applied, batches, rebuilds, skipped atomic.Uint64
		applyNanos, bytes                   atomic.Int64
	}
	closeOnce sync.Once
	closeErr  error
}

// notice is one published batch: its LSN range and when it was committed.
type notice struct {
	first, last uint64
	at          time.Time
}

// Open opens (or creates) the replica at path ("" = a throwaway database,
// for tests, deleted on Close), subscribes to src and starts the applier, which
// catches up from the persisted applied LSN in the background. Close it
// before the source stops.
func Open(path string, src Source, log *slog.Logger) (*Replica, error) {
	return OpenWith(path, src, log, Options{})
}

// OpenWith is Open with options.
func OpenWith(path string, src Source, log *slog.Logger, opts Options) (*Replica, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Replica{src: src, opts: opts.withDefaults(), log: log.With("component", "replica"), path: path,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		appliedC: make(chan struct{})}
	ctx := context.Background()
	if path == "" {
		// A throwaway database in a temp file rather than SQLite's
		// ":memory:": an in-memory database lives in one connection, and
		// the readers would then queue behind the applier.
		dir, err := os.MkdirTemp("", "routehound-replica-")
		if err != nil {
			return nil, fmt.Errorf("replica: open a throwaway database: %w", err)
		}
		r.tmpDir, r.path = dir, filepath.Join(dir, "replica.db")
	}
	wdsn, err := dsn(r.path, false)
	if err != nil {
		return nil, err
	}
	if r.wdb, err = sql.Open("sqlite", wdsn); err != nil {
		r.removeTmp()
		return nil, fmt.Errorf("replica: open %s: %w", r.path, err)
	}
	r.wdb.SetMaxOpenConns(1)
	r.wdb.SetConnMaxLifetime(0)
	r.wdb.SetConnMaxIdleTime(0)
	if r.wconn, err = r.wdb.Conn(ctx); err != nil {
		r.closeDBs()
		return nil, fmt.Errorf("replica: open %s: %w", r.path, err)
	}
	applied, err := migrate(ctx, r.wconn)
	if err != nil {
		r.closeDBs()
		return nil, fmt.Errorf("replica: open %s: %w", r.path, err)
	}
	r.applied.Store(applied)
	rdsn, _ := dsn(r.path, true)
	if r.rdb, err = sql.Open("sqlite", rdsn); err != nil {
		r.closeDBs()
		return nil, fmt.Errorf("replica: open readers of %s: %w", r.path, err)
	}
	r.rdb.SetMaxOpenConns(readers)
	r.rdb.SetMaxIdleConns(readers)
	r.log.Info("replica opened", "path", r.path, "applied_lsn", applied, "durable_lsn", src.DurableLSN())
	src.Subscribe(r.onPublish)
	go r.run()
	return r, nil
}

// onPublish runs on the source's subscription goroutine (for the engine, a
// cursor on its durability feed): it records the batch and wakes the
// applier, never waiting (the mutex guards a small slice, no I/O).
func (r *Replica) onPublish(recs []engine.Record) {
	if len(recs) == 0 {
		return
	}
	first, last := recs[0].LSN, recs[len(recs)-1].LSN
	r.mu.Lock()
	if n := len(r.notices); n == noticeSlots {
		r.notices[n-1].last = last // full: the newest notice covers this batch too
	} else {
		r.notices = append(r.notices, notice{first: first, last: last, at: recs[0].CommittedAt})
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// setApplied publishes a committed page: LSN, notices it covers, waiters.
func (r *Replica) setApplied(lsn uint64) {
	r.applied.Store(lsn)
	r.mu.Lock()
	i := 0
	for i < len(r.notices) && r.notices[i].last <= lsn {
		i++
	}
	if i > 0 {
		n := copy(r.notices, r.notices[i:])
		clear(r.notices[n:])
		r.notices = r.notices[:n]
	}
	close(r.appliedC)
	r.appliedC = make(chan struct{})
	r.mu.Unlock()
}

// LSN is the highest LSN applied: every record up to it is visible to the
// queries.
func (r *Replica) LSN() uint64 { return r.applied.Load() }

// Lag is how far the replica is behind the durable log: the records not yet
// applied, and how long ago the oldest of them was committed (0 when none).
func (r *Replica) Lag() (records uint64, age time.Duration) {
	applied, durable := r.applied.Load(), r.src.DurableLSN()
	if durable <= applied {
		return 0, 0
	}
	r.mu.Lock()
	var at time.Time
	for _, n := range r.notices {
		if n.last > applied {
			at = n.at
			break
		}
	}
	if at.IsZero() || (!r.pageAt.IsZero() && r.pageAt.Before(at)) {
		at = r.pageAt
	}
	r.mu.Unlock()
	if !at.IsZero() {
		age = max(time.Since(at), 0)
	}
	return durable - applied, age
}

// WaitLSN waits until the replica has applied lsn, ctx ends or the replica
// closes.
func (r *Replica) WaitLSN(ctx context.Context, lsn uint64) error {
	for {
		r.mu.Lock()
		ch := r.appliedC
		r.mu.Unlock()
		if r.applied.Load() >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("replica: waiting for lsn %d (applied %d): %w", lsn, r.applied.Load(), ctx.Err())
		case <-r.done:
			if r.applied.Load() >= lsn {
				return nil
			}
			return ErrClosed
		}
	}
}

// Stats are the applier's counters.
type Stats struct {
	LSN, LagRecords uint64
	LagAge          time.Duration
	Applied         uint64 // records applied since Open
	Batches         uint64 // transactions committed since Open
	ApplyNanos      int64  // time spent applying (reading pages, writing, committing)
	Bytes           int64  // the database's size (pages in use, WAL included)
	Rebuilds        uint64 // rebuilds from a snapshot after the log was trimmed past the replica
	Skipped         uint64 // records of a built-in table whose value could not be read (logged)
}

// Stats returns the applier's counters and the lag.
func (r *Replica) Stats() Stats {
	recs, age := r.Lag()
	return Stats{
		LSN: r.applied.Load(), LagRecords: recs, LagAge: age,
		Applied: r.stats.applied.Load(), Batches: r.stats.batches.Load(),
		ApplyNanos: r.stats.applyNanos.Load(), Bytes: r.stats.bytes.Load(),
		Rebuilds: r.stats.rebuilds.Load(), Skipped: r.stats.skipped.Load(),
	}
}

// Close stops the applier after the page it is applying and closes the
// database. Safe to call twice. The source's subscription stays (the
// engine has no unsubscribe) but only records an LSN.
func (r *Replica) Close() error {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		r.closeErr = r.closeDBs()
		r.log.Info("replica closed", "applied_lsn", r.applied.Load())
	})
	return r.closeErr
}

func (r *Replica) closeDBs() error {
	var errs []error
	if r.rdb != nil {
		errs = append(errs, r.rdb.Close())
	}
	if r.wconn != nil {
		errs = append(errs, r.wconn.Close())
	}
	errs = append(errs, r.wdb.Close())
	r.removeTmp()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replica: close %s: %w", r.path, err)
	}
	return nil
}

func (r *Replica) removeTmp() {
	if r.tmpDir != "" {
		os.RemoveAll(r.tmpDir)
	}
}
