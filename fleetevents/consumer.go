package fleetevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// The fleet-events consumer follows the durability feed (an engine.Cursor)
// from the cursor it persisted, feeds the records to a Tracker, and
// writes what the tracker decided — the events, the routes' progress, the
// drivers' marks — together with the new cursor in one WriteDerived
// through the events lane. Exactly once across crashes:
//
//   - The tracker is deterministic: its decisions depend only on its state
//     and the records it is given, in LSN order.
//   - Its state is persisted in the same atomic write as the events and
//     the cursor, so after a crash the store holds the state as of the
//     cursor, no more and no less; the consumer restores it and reads on
//     from the cursor, deciding again exactly what it had decided, but
//     not written.
//   - A write covers the log range (after, upto] and is taken only when
//     the stored cursor is at after: a retry of a committed write changes
//     nothing (engine.ErrCursorMoved or Replayed), and then the consumer
//     reloads its state from the store.
//
// It never slows the writers: it reads on a goroutine of its own, from
// the feed's tail or the log, and writes on the lowest-priority lane with
// the loosest SLA, one write at a time.

// Config configures a consumer.
type Config struct {
	StopRadiusM float64       // [fleet] stop_radius_m
	FenceDwell  time.Duration // [fleet] fence_dwell
	// Checkpoint is the longest time the consumer keeps, unwritten, the
	// drivers' marks (a restart reads them again from the log); 0: one
	// second. Writes of events between two checkpoints carry no marks
	// unless a driver got its first route or lost its last.
	Checkpoint time.Duration
	// WriteEvery is the shortest time between two writes of decided
	// events (0: 100 ms): what is decided meanwhile goes into one write,
	// so a route that moves often is written once per interval, not once
	// per batch of the log, and each driver's mark once, not per point.
	// It bounds what it adds to an event's latency.
	WriteEvery time.Duration
}

// marksAtKey is the fleet_consumer key of the LSN as of which the stored
// marks are the drivers' marks.
const marksAtKey = "marks_at"

// errStopScan ends a scan of fleet_consumer past the keys of one prefix.
var errStopScan = errors.New("fleetevents: end of prefix")

// maxWrites and maxWriteBytes bound one WriteDerived (events, progress,
// marks): it fits a batch whatever the fleet's size (the engine counts
// about twice a value's bytes against its batch bytes, 2 MiB by default).
const (
	maxWrites     = 1024
	maxWriteBytes = 256 << 10
	eventBytes    = 320 // an event's JSON and key, about
	markBytes     = 160 // a mark, as DirtyBytes counts it
)

// hardWrites and hardBytes bound what one write may carry at most, far
// below what the engine refuses (the events lane's bound, 4,096 records by
// default; 2 MiB of batch bytes by default, about twice what DirtyBytes
// counts): a record whose output would take a write past them is written
// on its own, and in parts if it does not fit alone (applySplit). Below
// them a write may pass maxWrites by one record's output. With a smaller
// [lanes.events] queue_bound or batch bytes the bounds shrink with them
// (bounds): 3/4 of the one, 5/16 of the other.
const (
	hardWrites = 3072
	hardBytes  = 640 << 10
)

// catchUp is how many records the stored cursor may lag the consumer,
// with nothing to write, before it writes the cursor alone: a restart
// reads at most about that many again.
const catchUp = 100000

// Stats are the consumer's counters.
type Stats struct {
	Events      atomic.Uint64 // events written
	Writes      atomic.Uint64 // WriteDerived calls that were taken
	Reloads     atomic.Uint64 // times the state was read again from the store
	Errors      atomic.Uint64 // failed writes and reads
	BadRecords  atomic.Uint64 // records that could not be decoded (they decide nothing)
	Processed   atomic.Uint64 // the LSN of the last record evaluated
	Stored      atomic.Uint64 // the cursor as the store holds it
	Routes      atomic.Int64  // routes followed
	Drivers     atomic.Int64  // drivers on a route
	LatencyHist engine.Histogram
}

// Consumer is the running fleet-events consumer.
type Consumer struct {
	e   *engine.Engine
	log *slog.Logger
	cfg Config

	tr     *Tracker
	stored engine.CursorValue // the cursor the store holds
	limit  int                // records of one write: maxWrites, or the batch cap (full)
	// hardWrites and hardBytes: the hard bounds of one write, for this
	// engine's configuration (bounds).
	hardWrites, hardBytes int
	// lastWrite is when the last write was answered: the next waits
	// WriteEvery, gathering what is decided meanwhile into one.
	lastWrite time.Time
	// marksWrite is when the marks were last written (with the cursor at
	// marksAt, stored under "marks_at").
	marksWrite time.Time
	cur        *engine.Cursor
	// gap, when set, is the consumer's own record for records retention
	// trimmed before it evaluated them (reconcile): applied before the
	// oldest record of the log.
	gap *engine.Record

	stats  Stats
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start loads the consumer's state from the store and starts following
// the log from its cursor.
func Start(e *engine.Engine, cfg Config, log *slog.Logger) (*Consumer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Checkpoint <= 0 {
		cfg.Checkpoint = time.Second
	}
	if cfg.WriteEvery <= 0 {
		cfg.WriteEvery = 100 * time.Millisecond
	}
	c := &Consumer{e: e, log: log, cfg: cfg, done: make(chan struct{})}
	if err := c.load(); err != nil {
		return nil, err
	}
	c.bounds()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(ctx)
	return c, nil
}

// Close stops the consumer and waits for it (a write in flight is
// answered first). What it evaluated and did not write is read again
// from the log at the next start.
func (c *Consumer) Close() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
	})
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() *Stats { return &c.stats }

// Lag is how many records of the log are durable and not yet evaluated.
func (c *Consumer) Lag() uint64 {
	d, p := c.e.DurableLSN(), c.stats.Processed.Load()
	if d > p {
		return d - p
	}
	return 0
}

// load reads the consumer's state (its cursor, the routes' progress, the
// drivers' marks) from a snapshot of the store and places the cursor.
func (c *Consumer) load() error {
	s, err := c.e.Snapshot()
	if err != nil {
		return fmt.Errorf("fleetevents: loading state: %w", err)
	}
	defer s.Close()
	var cursor engine.CursorValue
	st, ok, err := s.Get(fleet.TableFleetConsumer, "cursor")
	if err != nil {
		return fmt.Errorf("fleetevents: reading the cursor: %w", err)
	}
	if ok {
		if err := json.Unmarshal(st.Value, &cursor); err != nil {
			return fmt.Errorf("fleetevents: the stored cursor: %w", err)
		}
	}
	var progress []Progress
	// legacy: the places of routes whose progress still carries them (a
	// store written before they moved to fleet_consumer).
	legacy := map[string]Places{}
	if _, err := s.Scan(fleet.TableRouteProgress, "", 0, func(key string, st engine.State) error {
		var p Progress
		if err := json.Unmarshal(st.Value, &p); err != nil {
			return fmt.Errorf("route_progress %s: %w", key, err)
		}
		progress = append(progress, p)
		if pl, ok := legacyPlaces(st.Value); ok {
			legacy[p.Route] = pl
		}
		return nil
	}); err != nil {
		return fmt.Errorf("fleetevents: reading route_progress: %w", err)
	}
	places := map[string]Places{}
	if _, err := s.Scan(fleet.TableFleetConsumer, "stops:", 0, func(key string, st engine.State) error {
		route, ok := strings.CutPrefix(key, "stops:")
		if !ok {
			return errStopScan
		}
		var pl Places
		if err := json.Unmarshal(st.Value, &pl); err != nil {
			return fmt.Errorf("fleet_consumer %s: %w", key, err)
		}
		places[route] = pl
		return nil
	}); err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("fleetevents: reading the stops' places: %w", err)
	}
	var upgraded []string
	for route, pl := range legacy {
		if _, ok := places[route]; !ok {
			places[route] = pl
			upgraded = append(upgraded, route)
		}
	}
	// follow is the last record whose output the store holds whole: a
	// cursor inside a record (a part of a deleted fence's exits) reads
	// that record again, and the restored state holds what is left of it.
	follow := cursor.LSN
	if cursor.Part > 0 {
		follow = cursor.LSN - 1
	}
	// marksAt: the stored marks are the marks as of this LSN (at most the
	// cursor); the restore replays the marks over (marksAt, cursor].
	marksAt := cursor.LSN
	if st, ok, err := s.Get(fleet.TableFleetConsumer, marksAtKey); err != nil {
		return fmt.Errorf("fleetevents: reading %s: %w", marksAtKey, err)
	} else if ok {
		var v engine.CursorValue
		if err := json.Unmarshal(st.Value, &v); err != nil {
			return fmt.Errorf("fleetevents: the stored %s: %w", marksAtKey, err)
		}
		marksAt = min(v.LSN, cursor.LSN)
	}
	marks := map[string]Mark{}
	if _, err := s.Scan(fleet.TableFleetConsumer, "driver:", 0, func(key string, st engine.State) error {
		d, ok := driverOfMarkKey(key)
		if !ok {
			return errStopScan // past the marks (keys are in order)
		}
		var m Mark
		if err := json.Unmarshal(st.Value, &m); err != nil {
			return fmt.Errorf("fleet_consumer %s: %w", key, err)
		}
		marks[d] = m
		return nil
	}); err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("fleetevents: reading the drivers' marks: %w", err)
	}
	var fences []FenceDef
	states := map[string]FenceState{}
	if _, err := s.Scan(fleet.TableFleetConsumer, "fence:", 0, func(key string, st engine.State) error {
		if !strings.HasPrefix(key, "fence:") {
			return errStopScan
		}
		var d FenceDef
		if err := json.Unmarshal(st.Value, &d); err != nil {
			return fmt.Errorf("fleet_consumer %s: %w", key, err)
		}
		fences = append(fences, d)
		return nil
	}); err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("fleetevents: reading the fences: %w", err)
	}
	if _, err := s.Scan(fleet.TableFleetConsumer, "in:", 0, func(key string, st engine.State) error {
		k, ok := strings.CutPrefix(key, "in:")
		if !ok {
			return errStopScan
		}
		var fs FenceState
		if err := json.Unmarshal(st.Value, &fs); err != nil {
			return fmt.Errorf("fleet_consumer %s: %w", key, err)
		}
		states[k] = fs
		return nil
	}); err != nil && !errors.Is(err, errStopScan) {
		return fmt.Errorf("fleetevents: reading the drivers at fences: %w", err)
	}
	c.tr = NewTracker(c.cfg.StopRadiusM)
	c.tr.SetFenceDwell(c.cfg.FenceDwell)
	c.tr.Restore(progress, places, marks)
	for _, route := range upgraded {
		// Not written now (all of a large store's routes would not fit one
		// write): the route's places are written with its progress the next
		// time it changes, which then drops them (see legacyPlaces); until
		// then every restore reads them from route_progress again.
		if _, ok := c.tr.routes[route]; ok {
			c.tr.legacy[route] = true
		}
	}
	if marksAt < cursor.LSN {
		if err := c.replayMarks(marksAt, cursor.LSN); err != nil {
			return err
		}
		// Dirty only what the store does not hold as it is: the replay
		// may cover marks that writes of the last run carried (a backlog
		// of marks is written a part at a time: flush).
		c.tr.KeepChangedMarks(marks)
	}
	c.marksWrite = time.Now()
	if n := len(progress) - c.tr.Routes(); n > 0 {
		c.log.Warn("fleet events: routes in route_progress without their stops' places are not followed", "routes", n)
	}
	c.tr.RestoreFences(fences, states)
	c.stored = cursor
	c.gap = nil
	if first := c.e.StoreStats().FirstLSN; first > 0 && follow+1 < first {
		// The log no longer holds what follows the cursor (retention):
		// go on from the oldest record it holds.
		c.log.Warn("fleet events: the log was trimmed past the consumer's cursor; events of the trimmed records are not derived", "cursor", cursor.LSN, "first_lsn", first)
		gap, err := c.reconcile(s, cursor, first)
		if err != nil {
			return err
		}
		c.gap = gap
		follow = first - 1
	}
	c.cur = c.e.Follow(follow)
	c.stats.Processed.Store(follow)
	c.stats.Stored.Store(whole(c.stored))
	c.count()
	return nil
}

// reconcile is what the consumer does for the records retention trimmed
// before it evaluated them (a whole range, or the rest of a record it
// was writing in parts): the fences it follows that the fences table no
// longer holds were deleted meanwhile, and their drivers exit them with
// reason "deleted". It answers that as a record of its own, at the last
// LSN the log no longer holds (at the cursor's LSN when the cursor is
// inside the trimmed record: a fence's deletion that was being written in
// parts ends with the very events its record would have decided), which
// the consumer applies in parts like a fence's deletion (applySplit),
// before the oldest record the log holds. Nil: nothing to reconcile.
func (c *Consumer) reconcile(s *engine.Snapshot, cursor engine.CursorValue, first uint64) (*engine.Record, error) {
	var gone []string
	for _, id := range sortedKeys(c.tr.fences) {
		_, ok, err := s.Get(fleet.TableFences, id)
		if err != nil {
			return nil, fmt.Errorf("fleetevents: reading fence %s: %w", id, err)
		}
		if !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	lsn := first - 1
	if cursor.Part > 0 && cursor.LSN < first {
		lsn = cursor.LSN
	}
	// The exits are decided when the oldest record the log holds was
	// committed: no later than the deletion, and the same after a restart.
	at := time.Now()
	if err := c.e.ReadLog(first-1, 1, func(r engine.Record) error {
		at = r.CommittedAt
		return errStopScan
	}); err != nil && !errors.Is(err, errStopScan) {
		return nil, fmt.Errorf("fleetevents: reading the oldest record of the log: %w", err)
	}
	raw, err := json.Marshal(gone)
	if err != nil {
		return nil, fmt.Errorf("fleetevents: the deleted fences: %w", err)
	}
	c.log.Warn("fleet events: fences deleted in the trimmed records; their drivers exit them", "fences", len(gone), "lsn", lsn)
	return &engine.Record{LSN: lsn, Table: fleet.TableFences, Op: engine.OpDelete, Value: raw, CommittedAt: at}, nil
}

// replayMarks moves the restored marks over the log records (after,
// upto]: what the previous run evaluated after it last wrote the marks.
func (c *Consumer) replayMarks(after, upto uint64) error {
	for after < upto {
		n := 0
		err := c.e.ReadLog(after, 4096, func(r engine.Record) error {
			if r.LSN > upto {
				return errStopScan
			}
			c.tr.ReplayMark(&r)
			after = r.LSN
			n++
			return nil
		})
		if errors.Is(err, errStopScan) {
			return nil
		}
		if errors.Is(err, engine.ErrTrimmed) {
			// The log no longer holds them (retention): the marks stay
			// as stored, older; a point late against the lost ones may
			// decide.
			c.log.Warn("fleet events: the log was trimmed past the drivers' marks", "marks_at", after, "cursor", upto)
			return nil
		}
		if err != nil {
			return fmt.Errorf("fleetevents: replaying the drivers' marks after lsn %d: %w", after, err)
		}
		if n == 0 {
			return fmt.Errorf("fleetevents: replaying the drivers' marks: the log ends at lsn %d, before the cursor %d", after, upto)
		}
	}
	return nil
}

func (c *Consumer) count() {
	c.stats.Routes.Store(int64(c.tr.Routes()))
	c.stats.Drivers.Store(int64(c.tr.Drivers()))
}

// pending is what the consumer decided and has not written yet.
type pending struct {
	events []Event
	upto   uint64    // the last record evaluated
	part   uint64    // > 0: only that far into record upto's output (a split record)
	since  time.Time // the first evaluation not written
	marks  bool      // the next write carries the dirty marks (what room it has for them)
	only   bool      // the next write carries the events only (a part of one unit's events)
}

// pos is how far p's evaluation goes, as a cursor.
func (p *pending) pos() engine.CursorValue { return engine.CursorValue{LSN: p.upto, Part: p.part} }

// whole is the last record whose output all of cursor covers.
func whole(cursor engine.CursorValue) uint64 {
	if cursor.Part > 0 {
		return cursor.LSN - 1
	}
	return cursor.LSN
}

func (c *Consumer) run(ctx context.Context) {
	defer close(c.done)
	p := pending{upto: c.cur.After()}
	if c.stored.Part > 0 || c.gap != nil {
		p = pending{upto: c.stored.LSN, part: c.stored.Part}
	}
	backoff := 50 * time.Millisecond
	for {
		if r := c.gap; r != nil {
			// What retention trimmed first (reconcile); a reload sets it
			// again if the store still needs it.
			if !c.applySplit(ctx, r, &p, &backoff) {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if c.gap == r {
				c.gap = nil
			}
		}
		// Wait for records; with something unwritten, only until the
		// checkpoint is due.
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := c.deadline(&p); ok {
			nctx, cancel = context.WithDeadline(ctx, d)
		}
		recs, err := c.cur.Next(nctx)
		cancel()
		c.bounds()
		switch {
		case err == nil:
		case ctx.Err() != nil || errors.Is(err, engine.ErrStopped):
			return
		case errors.Is(err, context.DeadlineExceeded):
			// A write is due (events, or the checkpoint).
		case errors.Is(err, engine.ErrTrimmed):
			first := c.e.StoreStats().FirstLSN
			c.log.Error("fleet events: the consumer fell behind the retained log; events of the trimmed records are not derived", "after_lsn", c.cur.After(), "first_lsn", first)
			c.stats.Errors.Add(1)
			// What it evaluated first, then its state from the store: the
			// restore goes on from the oldest record the log holds and
			// reconciles the fences deleted meanwhile.
			if c.flush(ctx, &p, &backoff) {
				c.reload(ctx)
				p = pending{upto: c.stored.LSN, part: c.stored.Part}
				if c.gap == nil && c.stored.Part == 0 {
					p.upto = c.cur.After()
				}
			}
			if !sleep(ctx, 50*time.Millisecond) {
				return
			}
			continue
		default:
			c.log.Error("fleet events: reading the log", "after_lsn", c.cur.After(), "err", err)
			c.stats.Errors.Add(1)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		for i := range recs {
			r := &recs[i]
			if c.stored.Part > 0 && c.stored.LSN == r.LSN || !c.fits(r, &p) {
				// A record the store holds a part of (read again after a
				// restart), or one whose output does not fit a write with
				// what is pending: what is pending first, then the record,
				// in parts if it does not fit one write alone.
				if !c.flush(ctx, &p, &backoff) {
					break // reloaded: read on from the stored cursor
				}
				if c.stored.Part > 0 && c.stored.LSN == r.LSN || !c.fits(r, &p) {
					if !c.applySplit(ctx, r, &p, &backoff) {
						break // reloaded, or stopped
					}
					continue
				}
			}
			if p.pos() == c.stored {
				p.since = time.Now()
			}
			p.upto, p.part = r.LSN, 0
			evs, bad := c.tr.Apply(r)
			if bad != nil {
				c.stats.BadRecords.Add(1)
				c.log.Warn("fleet events: a record decides nothing", "lsn", r.LSN, "err", bad)
			}
			p.events = append(p.events, evs...)
			if c.full(&p) {
				if !c.flush(ctx, &p, &backoff) || ctx.Err() != nil {
					break // reloaded: read on from the stored cursor; or stopped
				}
			}
		}
		decided := len(p.events) > 0 || c.tr.dirtyRouteCount() > 0
		due := decided && time.Since(c.lastWrite) >= c.cfg.WriteEvery ||
			c.stored.Before(p.pos()) && (time.Since(p.since) >= c.cfg.Checkpoint && c.tr.DirtyCount() > 0 || p.upto-c.stored.LSN >= catchUp)
		if !due && c.cur.After() < c.e.DurableLSN() && ctx.Err() == nil {
			// More is durable already and no write is due: read it
			// first, so that one write covers all that became durable
			// meanwhile (the feed hands out one committed batch a call).
			// A write is due at the latest WriteEvery after the last,
			// however busy the log: a steady stream of other records
			// never holds an event back.
			continue
		}
		if due {
			c.flush(ctx, &p, &backoff)
			decided = len(p.events) > 0 || c.tr.dirtyRouteCount() > 0
		}
		// Processed counts only what is written when it decided
		// something: a lag of 0 means every event decided so far is
		// durable.
		if decided {
			c.stats.Processed.Store(whole(c.stored))
		} else {
			c.stats.Processed.Store(c.cur.After())
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// deadline is when the consumer must write even if no record comes: the
// decided events once WriteEvery has passed since the last write, or the
// checkpoint of the marks.
func (c *Consumer) deadline(p *pending) (time.Time, bool) {
	var d time.Time
	if c.stored.Before(p.pos()) && c.tr.DirtyCount() > 0 {
		d = p.since.Add(c.cfg.Checkpoint)
	}
	if len(p.events) > 0 || c.tr.dirtyRouteCount() > 0 {
		if w := c.lastWrite.Add(c.cfg.WriteEvery); d.IsZero() || w.Before(d) {
			d = w
		}
	}
	return d, !d.IsZero()
}

// bounds sets the limits of one write: the hard bounds, under the events
// lane's bound and the batch bytes of this engine, and the soft one
// (full), under the committer's derived batch cap as it is now.
func (c *Consumer) bounds() {
	c.hardWrites = max(16, min(hardWrites, c.e.LaneBound(engine.LaneEvents)*3/4))
	c.hardBytes = max(16<<10, min(hardBytes, int(c.e.Config().BatchBytes*5/16)))
	c.limit = min(maxWrites, max(16, c.e.Sched().BatchCap), c.hardWrites)
}

// full reports whether what p and the tracker hold makes a whole write:
// maxWrites records, or the committer's derived batch cap when it is
// lower (a write past the cap would make a sync writer wait longer than
// the scheduler allows for), or maxWriteBytes.
func (c *Consumer) full(p *pending) bool {
	return len(p.events)+c.tr.DirtyCount()+1 >= c.limit || len(p.events)*eventBytes+c.tr.DirtyBytes() >= min(maxWriteBytes, c.hardBytes)
}

// fits reports whether record r's output, at most (Tracker.Cost), goes
// with what p and the tracker hold into one write the engine takes: far
// below the events lane's bound (4,096 records) and the batch bytes past
// which it answers ErrTooLarge (2 MiB; it counts about twice a value's
// bytes), whatever the fleet.
func (c *Consumer) fits(r *engine.Record, p *pending) bool {
	w, b := c.tr.Cost(r)
	marks := c.tr.DirtyMarks()
	counted := c.marksCounted(r)
	return len(p.events)+c.tr.DirtyCount()-marks+counted+2+w <= c.hardWrites &&
		len(p.events)*eventBytes+c.tr.DirtyBytes()-(marks-counted)*markBytes+b <= c.hardBytes
}

// afterPart, when set (tests), is called after each part of a split
// record is written, but the last, and after each write that carried a
// part of the dirty marks only.
var afterPart atomic.Pointer[func(c *Consumer)]

// applySplit evaluates a record whose output does not fit one write in
// parts (Tracker.ApplyPart: a deleted fence's drivers, a point's fences
// and routes), each of at most about a write's worth (the limit), and
// writes each part with the cursor inside the record
// (engine.CursorValue.Part: how many units of it the store holds); the
// last part closes the record (Part 0). Each part's write holds the state
// as of that part, so after a crash between two parts the consumer
// restores it, reads the record again from the cursor (load) and goes on
// with the units after the stored part (a deleted fence stays until its
// last part, with the drivers not yet let go): each event once. It
// reports whether the consumer goes on with the next record (false: it
// was reloaded, or stopped).
func (c *Consumer) applySplit(ctx context.Context, r *engine.Record, p *pending, backoff *time.Duration) bool {
	// What is pending first: the parts start at a record's boundary.
	if !c.flush(ctx, p, backoff) {
		return false
	}
	// A change of a driver's routes with more marks dirty than the write
	// after it would take (fits): the marks go first, a part of the
	// record each, the record's own output after them.
	for r.Table == fleet.TableAssignments && c.tr.DirtyMarks() > 0 && !c.fits(r, p) {
		part := uint64(0)
		if c.stored.LSN == r.LSN {
			part = c.stored.Part
		}
		if p.pos() == c.stored {
			p.since = time.Now()
		}
		before := c.tr.DirtyMarks()
		p.upto, p.part, p.marks = r.LSN, part+1, true
		if !c.flush(ctx, p, backoff) {
			return false
		}
		if c.tr.DirtyMarks() >= before {
			// No room for a mark: never loop (the record's write is then
			// refused and retried, as before parts existed).
			break
		}
		if ctx.Err() != nil {
			return false
		}
	}
	for {
		part := uint64(0) // how far into r the store is
		if c.stored.LSN == r.LSN {
			part = c.stored.Part
		}
		most := min(max(16, c.limit-1-c.tr.DirtyCount()), c.hardBytes/(eventBytes+160))
		point := r.Table == fleet.TablePositions && r.Op == engine.OpPut
		from, skip := int(part), 0
		if point {
			from, skip = unitsOf(part)
			if skip > 0 {
				most = 0 // inside a unit: that unit alone, as when it was split
			}
		}
		evs, n, done, bad := c.tr.ApplyPart(r, from, most)
		if bad != nil {
			c.stats.BadRecords.Add(1)
			c.log.Warn("fleet events: a record decides nothing", "lsn", r.LSN, "err", bad)
		}
		if p.pos() == c.stored {
			p.since = time.Now()
		}
		p.upto = r.LSN
		evs = evs[min(skip, len(evs)):] // written before a restart
		if point && n == 1 {
			// One unit (a route a point moved) may decide more events
			// than one write takes: they go first, in writes of events
			// only, the unit's state with the last of them.
			for len(evs) > 0 && !c.lastOfUnit(evs) {
				k := c.eventsChunk(evs)
				skip += k
				p.part, p.events, p.only = partOf(from, skip), append(p.events[:0], evs[:k]...), true
				evs = evs[k:]
				if !c.flush(ctx, p, backoff) {
					return false
				}
				if f := afterPart.Load(); f != nil {
					(*f)(c)
				}
				if ctx.Err() != nil {
					return false
				}
			}
		}
		p.part = 0
		if !done {
			p.part = part + uint64(n)
			if point {
				p.part = partOf(from+n, 0)
			}
		}
		p.events = append(p.events, evs...)
		if !c.flush(ctx, p, backoff) {
			return false
		}
		if done {
			return true
		}
		if f := afterPart.Load(); f != nil {
			(*f)(c)
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// A point's parts count its units and the events of a unit written in
// parts: partOf(units, events) is the cursor's Part after units whole
// units and the first events of the next (partFlag tells it from the
// parts of a store written before events were split, which count units
// only and read as such).
const (
	partFlag   = uint64(1) << 62
	partEvents = 24 // bits of the events
)

func partOf(units, events int) uint64 {
	return partFlag | uint64(units)<<partEvents | uint64(events)
}

// unitsOf reads a point's Part (partOf, or a count of units).
func unitsOf(part uint64) (units, events int) {
	if part&partFlag == 0 {
		return int(part), 0
	}
	part &^= partFlag
	return int(part >> partEvents), int(part & (1<<partEvents - 1))
}

// evCost is what an event costs a write in the engine's own accounting
// (WriteDerived: twice the value and the key, and a record's overhead).
func evCost(ev *Event) int {
	raw, _ := json.Marshal(ev)
	return 2*len(raw) + 2*len(ev.Key()) + len(fleet.TableFleetEvents) + 96
}

// lastOfUnit reports whether evs, a unit's events, go in one write with
// the state the tracker holds dirty (a route's progress: at most
// fleet.MaxProgressBytes, twice that in the engine's accounting): a
// quarter of the engine's batch bytes, and the records left of a write.
func (c *Consumer) lastOfUnit(evs []Event) bool {
	// The dirty marks are not counted: a write carries what room it has
	// left of them (marksRoom).
	if len(evs)+c.tr.DirtyCount()-c.tr.DirtyMarks()+3 > c.hardWrites {
		return false
	}
	b := 0
	for i := range evs {
		if b += evCost(&evs[i]); b > int(c.e.Config().BatchBytes/4) {
			return false
		}
	}
	return true
}

// eventsChunk is how many of evs (at least one) go in one write of events
// only: half the engine's batch bytes, and the records of a write.
func (c *Consumer) eventsChunk(evs []Event) int {
	b, k := 0, 0
	for k < len(evs) && k < c.hardWrites-2 {
		if b += evCost(&evs[k]); k > 0 && b > int(c.e.Config().BatchBytes/2) {
			break
		}
		k++
	}
	return max(1, k)
}

// flush writes what p holds (only its events when p.only: a part of a
// unit's events). It reports whether the consumer's state is still the
// one it evaluated (false: it was reloaded from the store).
func (c *Consumer) flush(ctx context.Context, p *pending, backoff *time.Duration) bool {
	if !c.stored.Before(p.pos()) {
		return true
	}
	w := engine.DerivedWrite{After: c.stored.LSN, AfterPart: c.stored.Part, Upto: p.upto, UptoPart: p.part,
		Writes: make([]engine.Write, 0, len(p.events)+c.tr.DirtyCount()+1)}
	if p.only {
		return c.flushEvents(ctx, p, w, backoff)
	}
	// The marks go with this write when a driver's routes changed (the
	// restore's replay assumes they did not since the marks), when the
	// checkpoint is due, or when the write is full anyway; otherwise they
	// stay dirty for a later write, and a restart replays them from the
	// log (replayMarks).
	//
	// A write carries at most what room is left of the dirty marks (a
	// restart may replay more of them than one write takes, or a smaller
	// events lane than the last run's): then "marks_at" stays where it is
	// until a write carries the last of them; each mark written is still
	// one the replay from "marks_at" ends at (a mark replayed over points
	// it already passed does not move: see KeepChangedMarks). A change of
	// a driver's routes is never taken while more marks are dirty than a
	// write takes (fits), so that the write after it carries them all.
	now := time.Now()
	withMarks := c.tr.MarksDue() || now.Sub(c.marksWrite) >= c.cfg.Checkpoint || c.full(p) || p.marks
	room := c.marksRoom(p)
	allMarks := c.tr.DirtyMarks() <= room || c.tr.MarksDue()
	var marked []string
	if withMarks && allMarks {
		at, _ := json.Marshal(engine.CursorValue{LSN: p.upto})
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: marksAtKey, Value: at})
	}
	w.Writes = c.appendEvents(w.Writes, p.events)
	c.tr.DirtyPlaces(func(route string, pl *Places) {
		if pl == nil {
			w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: placesKey(route), Delete: true})
			return
		}
		raw, _ := json.Marshal(pl)
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: placesKey(route), Value: raw})
	})
	c.tr.Dirty(func(route string, pr *Progress) {
		if pr == nil {
			w.Writes = append(w.Writes, engine.Write{Table: fleet.TableRouteProgress, Key: route, Delete: true})
			return
		}
		raw, _ := json.Marshal(pr)
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableRouteProgress, Key: route, Value: raw})
	}, func(driver string, m *Mark) {
		if !withMarks || !allMarks && len(marked) >= room {
			return
		}
		marked = append(marked, driver)
		if m == nil {
			w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: markKey(driver), Delete: true})
			return
		}
		raw, _ := json.Marshal(m)
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: markKey(driver), Value: raw})
	})
	c.tr.DirtyFences(func(id string, d *FenceDef) {
		if d == nil {
			w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: "fence:" + id, Delete: true})
			return
		}
		raw, _ := json.Marshal(d)
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: "fence:" + id, Value: raw})
	}, func(key string, st *FenceState) {
		if st == nil {
			w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: "in:" + key, Delete: true})
			return
		}
		raw, _ := json.Marshal(st)
		w.Writes = append(w.Writes, engine.Write{Table: fleet.TableFleetConsumer, Key: "in:" + key, Value: raw})
	})
	res, ok := c.write(ctx, p, w, backoff)
	if !ok {
		return false
	}
	now = c.written(p, res)
	if withMarks && allMarks {
		c.marksWrite = now
	}
	c.tr.ClearDirty(!withMarks || !allMarks)
	c.count()
	p.events = p.events[:0]
	p.marks = false
	if withMarks && !allMarks {
		c.tr.MarksWritten(marked)
		if f := afterPart.Load(); f != nil && len(marked) > 0 && p.part == 0 {
			(*f)(c)
		}
	}
	return true
}

// flushEvents writes p's events alone with the cursor (a part of a
// unit's events: the state stays dirty for the unit's last write).
func (c *Consumer) flushEvents(ctx context.Context, p *pending, w engine.DerivedWrite, backoff *time.Duration) bool {
	w.Writes = c.appendEvents(w.Writes, p.events)
	p.only = false
	res, ok := c.write(ctx, p, w, backoff)
	if !ok {
		return false
	}
	c.written(p, res)
	p.events = p.events[:0]
	return true
}

// appendEvents appends the writes of events to ws (an event that cannot
// be encoded is logged and left out).
func (c *Consumer) appendEvents(ws []engine.Write, events []Event) []engine.Write {
	for i := range events {
		ev := &events[i]
		raw, err := json.Marshal(ev)
		if err != nil {
			c.log.Error("fleet events: encoding an event", "err", err)
			continue
		}
		ws = append(ws, engine.Write{Table: fleet.TableFleetEvents, Key: ev.Key(), Value: raw})
	}
	return ws
}

// written notes that the write of p's events (answer res) was taken: the
// counters, the events' latency, the stored cursor. It answers when.
func (c *Consumer) written(p *pending, res engine.WriteResult) time.Time {
	now := time.Now()
	c.lastWrite = now
	if !res.Replayed {
		c.stats.Events.Add(uint64(len(p.events)))
		c.stats.Writes.Add(1)
		for i := range p.events {
			if at, ok := c.e.DurableAt(p.events[i].PointLSN); ok {
				c.stats.LatencyHist.Observe(now.Sub(at))
			}
		}
	}
	c.stored = p.pos()
	c.stats.Stored.Store(whole(c.stored))
	return now
}

// marksRoom is how many dirty marks the next write of p may carry besides
// the rest of it (its events and the other dirty state), within the hard
// bounds of one write (the cursor and "marks_at" are two records more).
func (c *Consumer) marksRoom(p *pending) int {
	marks := c.tr.DirtyMarks()
	others := len(p.events) + c.tr.DirtyCount() - marks + 2
	otherBytes := len(p.events)*eventBytes + c.tr.DirtyBytes() - marks*markBytes
	return max(0, min(c.hardWrites-others, (c.hardBytes-otherBytes)/markBytes))
}

// marksCounted is how many of the dirty marks a record's fit counts
// (fits): all of them before a change of a driver's routes (the write
// after it carries them all), otherwise at most half a write's worth, the
// part of them the next write carries at least (a longer backlog is
// written a part per write).
func (c *Consumer) marksCounted(r *engine.Record) int {
	marks := c.tr.DirtyMarks()
	if r != nil && r.Table == fleet.TableAssignments {
		return marks
	}
	return min(marks, c.hardWrites/2, c.hardBytes/2/markBytes)
}

// reload reads the state again from the store, until it can or ctx ends.
func (c *Consumer) reload(ctx context.Context) {
	c.stats.Reloads.Add(1)
	for {
		err := c.load()
		if err == nil || ctx.Err() != nil {
			return
		}
		c.log.Warn("fleet events: reading the state from the store", "err", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}
}

// legacyPlaces reads the stops' places from a route_progress value written
// before they moved to fleet_consumer ("stops":[{…,"lat","lng","radius_m"}]).
func legacyPlaces(v []byte) (Places, bool) {
	var p struct {
		Version uint64 `json:"version"`
		Stops   []struct {
			Lat     *float64 `json:"lat"`
			Lng     *float64 `json:"lng"`
			RadiusM *float64 `json:"radius_m"`
		} `json:"stops"`
	}
	if json.Unmarshal(v, &p) != nil {
		return Places{}, false
	}
	pl := Places{Version: p.Version, Stops: make([][3]float64, len(p.Stops))}
	for i, s := range p.Stops {
		if s.Lat == nil || s.Lng == nil || s.RadiusM == nil {
			return Places{}, false
		}
		pl.Stops[i] = [3]float64{*s.Lat, *s.Lng, *s.RadiusM}
	}
	return pl, true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// write takes w through the events lane. Not cancelled with ctx: a write in
// flight is answered (the engine answers every admitted write), so that
// Close leaves a state the store agrees with. On an error it backs off,
// reads the state again from the store and sets p back to the stored
// cursor, and reports false.
func (c *Consumer) write(ctx context.Context, p *pending, w engine.DerivedWrite, backoff *time.Duration) (engine.WriteResult, bool) {
	res, err := c.e.WriteDerived(context.WithoutCancel(ctx), w)
	if err != nil {
		c.stats.Errors.Add(1)
		if !errors.Is(err, engine.ErrCursorMoved) && ctx.Err() == nil {
			c.log.Warn("fleet events: writing; reading the state again from the store", "after", w.After, "upto", w.Upto, "upto_part", w.UptoPart, "writes", len(w.Writes), "err", err)
		}
		if ctx.Err() == nil {
			sleep(ctx, *backoff)
			*backoff = min(2**backoff, 2*time.Second)
		}
		c.reload(ctx)
		*p = pending{upto: c.stored.LSN, part: c.stored.Part}
		return res, false
	}
	*backoff = 50 * time.Millisecond
	return res, true
}
