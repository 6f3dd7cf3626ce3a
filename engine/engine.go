package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"routehound/wal"
)

// Engine owns the lanes and the committer. Submitting is safe for
// concurrent use; the committer is the only goroutine that writes to the wal.
type Engine struct {
	cfg   Config
	db    atomic.Pointer[wal.DB] // swapped only by the committer, after a store reopen
	log   *slog.Logger
	lanes [numLanes]*lane // by Lane
	order []*lane         // schedule order (sched.go)
	sched *sched

	wake    chan struct{} // cap 1: "a lane has work"; a full channel already says so
	stop    chan struct{}
	stopped chan struct{}
	fatal   chan error // cap 1: the first storage failure, for main to act on
	rec     recovery   // committer-owned, see recover.go

	env     commitEnv               // committer-owned: its I/O to the current store handle (commitenv.go)
	fl      flights                 // committer-owned: the fsync and journal write in flight (pipeline.go)
	cur     *pending                // committer-owned: the run loop's pending set (nil when a test steps turn)
	wrapEnv func(*wal.DB) commitEnv // tests: the env over each store handle; nil = the store itself

	closing  atomic.Bool
	failed   atomic.Bool
	diskLow  atomic.Bool
	stopOnce sync.Once
	durable  atomic.Uint64 // highest LSN made durable and published; stored under pubq.mu once running (feed.go)
	pubq     pubq          // committed batches not yet published (pipeline.go)
	feed     feed

	// diskTight: free space is below MinFreeBytes+ReserveBytes, the
	// headroom kept for the fleet's writes (disk.go).
	diskTight atomic.Bool

	drivers drivers
	usage   usage // the user tables' counts for the quotas (quota.go)
	totals  Totals
	phone   PhoneStats
	started time.Time
	// Committer-owned: when the once-a-second chores run next (maintain).
	choresAt time.Time
	rate     *driverRate // the elastic limit on accepted driver points (elastic.go)
	// foreground: unix ns of another actor's last activity (a keyed
	// lane's write, NoteForeground); foregroundHook: more of it (live
	// subscribers), set once by the wiring. The driver limit engages
	// only while someone else is active (elastic.go).
	foreground     atomic.Int64
	foregroundHook atomic.Pointer[func() bool]
	follow         follow // a standby's or a fenced primary's refusal of writes, and the follower's apply (follow.go)
	// now is the committer's clock: time.Now, or the deterministic
	// simulation's virtual clock (simsched_test.go). Lanes share it.
	now func() time.Time
	// flights runs the log's fsync and the journal write beside the
	// committer (pipeline.go): goroutines, or the deterministic
	// simulation's virtual ones. nil: goroutines.
	flights flightRunner
}

// Totals are engine-wide counters.
type Totals struct {
	Batches     atomic.Uint64
	Fsyncs      atomic.Uint64
	BusyNanos   atomic.Int64 // committer time spent applying, committing and syncing
	CommitNanos atomic.Int64
	SyncNanos   atomic.Int64
	Trimmed     atomic.Uint64 // log records removed by retention
	SyncTime    Histogram     // one wal.Sync
	// The journal (pipeline.go): writes of waited-for frames, each one
	// fdatasync, and their duration; frames that found no room and were
	// answered by the log's fsync instead.
	JournalWrites atomic.Uint64
	JournalTime   Histogram
	JournalNoRoom atomic.Uint64
	// JournalPublished counts batches published when their journal frame
	// was durable, before the log's fsync covered them.
	JournalPublished atomic.Uint64
	StoreFailures    atomic.Uint64 // failed commits or syncs (each stops writes)
	Recoveries       atomic.Uint64 // store reopens that resumed writes
}

// Open opens the store described by store and starts an engine that owns
// it: after a storage failure the engine reopens it with the same options
// (cfg.Open is set from them), and CloseStore closes it after Close. This
// is how the server starts; New takes a store opened elsewhere (tests).
func Open(cfg Config, store wal.Options, log *slog.Logger) (*Engine, error) {
	if store.Logger == nil {
		store.Logger = log
	}
	db, err := wal.Open(store)
	if err != nil {
		return nil, err
	}
	cfg.Open = func() (*wal.DB, error) { return wal.Open(store) }
	e, err := New(cfg, db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

// New starts an engine over an open store. The caller closes the store
// after Close returns.
func New(cfg Config, db *wal.DB, log *slog.Logger) (*Engine, error) {
	return newWithEnv(cfg, db, log, nil)
}

// newWithEnv is New with the committer's I/O to each store handle taken
// through wrap (a test's fake env); nil wraps nothing.
func newWithEnv(cfg Config, db *wal.DB, log *slog.Logger, wrap func(*wal.DB) commitEnv) (*Engine, error) {
	e, err := build(cfg, db, log, wrap)
	if err != nil {
		return nil, err
	}
	go e.rate.control(e.stop, func() uint64 {
		st := &e.lanes[LaneDriver].stats
		return st.RoomWaits.Load() + st.rejectedFor(reasonOf(ErrLaneFull))
	}, e.foregroundActive)
	go e.run()
	return e, nil
}

// build makes an engine over db without starting its committer.
func build(cfg Config, db *wal.DB, log *slog.Logger, wrap func(*wal.DB) commitEnv) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A batch must fit in one Badger transaction, with room for the
	// table counters and meta keys the wal adds.
	if max := db.MaxBatchBytes() * 8 / 10; cfg.BatchBytes > max {
		cfg.BatchBytes = max
	}
	e := &Engine{
		cfg:     cfg,
		log:     log,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		fatal:   make(chan error, 1),
		started: time.Now(),
		wrapEnv: wrap,
		now:     time.Now,
	}
	e.sched = newSched(cfg, e.clock)
	e.rate = newDriverRate(e.sched.target)
	e.db.Store(db)
	e.setEnv(db)
	e.feed.init()
	e.fl.init(db.LastLSN()) // Open synced what it recovered
	e.rec.done = make(chan *wal.DB, 1)
	e.drivers.m = map[string]*driverState{}
	e.drivers.max = cfg.MaxDrivers
	for _, n := range Lanes {
		l := newLane(n, cfg.Lanes[n], e.clock)
		l.capped = !(l.cfg.Contract == Sync && l.cfg.SLA <= e.sched.target)
		e.lanes[n] = l
	}
	for _, n := range scheduleOrder(cfg) {
		e.order = append(e.order, e.lanes[n])
	}
	e.durable.Store(db.LastLSN()) // everything recovered on open is durable
	e.checkDisk()
	return e, nil
}

// clock reads the engine's clock (for the lanes, which keep it from their
// creation on while a test may swap e.now).
func (e *Engine) clock() time.Time { return e.now() }

// Config is the engine's effective configuration.
func (e *Engine) Config() Config { return e.cfg }

// DurableLSN is the highest LSN that is durable and published.
func (e *Engine) DurableLSN() uint64 { return e.durable.Load() }

// Ready reports whether the engine accepts writes.
func (e *Engine) Ready() bool {
	return !e.closing.Load() && !e.failed.Load() && !e.diskLow.Load()
}

// Fatal delivers the storage failure that stopped the engine, once.
func (e *Engine) Fatal() <-chan error { return e.fatal }

// Uptime is the time since New.
func (e *Engine) Uptime() time.Duration { return time.Since(e.started) }

// store is the store handle in use now. Other packages read through
// Snapshot, ReadLog and StoreStats, and the appliance closes the store
// through CloseStore: nothing outside the engine holds a writable handle.
func (e *Engine) store() *wal.DB { return e.db.Load() }

// StoreStats are the store's counters and sizes.
type StoreStats struct {
	FirstLSN, LastLSN uint64 // oldest retained and last committed LSN
	LogBytes          int64  // retained log records, keys and values
	LSMBytes          int64  // Badger's on-disk LSM
	VlogBytes         int64  // Badger's value logs
}

// StoreStats reads the counters and sizes of the store in use now (sizes
// are zero while it reopens).
func (e *Engine) StoreStats() StoreStats {
	db := e.db.Load()
	lsm, vlog := db.Size()
	return StoreStats{FirstLSN: db.FirstLSN(), LastLSN: db.LastLSN(), LogBytes: db.LogBytes(), LSMBytes: lsm, VlogBytes: vlog}
}

// CloseStore closes the store in use now (the engine may have reopened it
// after a storage failure). Call it after Close has returned nil: the
// committer must have stopped.
func (e *Engine) CloseStore() error { return e.db.Load().Close() }

// Close stops accepting writes, lets the committer drain every lane, commit
// and sync, and waits for it and for the Subscribe goroutines to have every
// durable record (or for ctx). Safe to call twice.
func (e *Engine) Close(ctx context.Context) error {
	e.closing.Store(true)
	e.stopOnce.Do(func() { close(e.stop) })
	select {
	case <-e.stopped:
	case <-ctx.Done():
		return fmt.Errorf("engine: close: %w", ctx.Err())
	}
	if err := e.subscribersDone(ctx); err != nil {
		return fmt.Errorf("engine: close: subscribers: %w", err)
	}
	return nil
}

// admit refuses writes when the engine cannot take them.
func (e *Engine) admit() error {
	switch {
	case e.closing.Load() || e.failed.Load():
		return ErrUnavailable
	case e.diskLow.Load():
		return ErrDiskLow
	}
	return e.notPrimary() // a standby, or a fenced primary (follow.go)
}

// enqueue admits items into lane l, all or none, and wakes the committer.
func (e *Engine) enqueue(l *lane, items ...*item) error {
	if err := e.admit(); err != nil {
		return err
	}
	now := e.now()
	for _, it := range items {
		if it.bytes > e.cfg.BatchBytes {
			return ErrTooLarge
		}
		it.arrived = now
	}
	if l.name != LaneDriver && l.name != LaneEvents {
		e.foreground.Store(now.UnixNano())
	}
	if err := l.push(items...); err != nil {
		return err
	}
	select {
	case e.wake <- struct{}{}:
	default: // already signalled
	}
	return nil
}

// wait blocks until the item is answered or ctx ends. The write may still
// commit after ctx ends: the committer never drops an admitted item.
func wait(ctx context.Context, it *item) (result, error) {
	select {
	case r := <-it.done:
		return r, r.err
	case <-ctx.Done():
		return result{}, fmt.Errorf("engine: waiting for commit: %w", ctx.Err())
	}
}

// Lane returns the ledger line of a lane, or nil.
func (e *Engine) Lane(name Lane) *LaneStats {
	if l := e.lane(name); l != nil {
		return &l.stats
	}
	return nil
}

// lane returns a lane, or nil for a value that is none.
func (e *Engine) lane(name Lane) *lane {
	if name < numLanes {
		return e.lanes[name]
	}
	return nil
}

// LaneBound is a lane's admission bound now (for the driver lane derived
// from its measured capacity and SLA: lane.bound).
func (e *Engine) LaneBound(name Lane) int {
	if l := e.lane(name); l != nil {
		return l.Bound()
	}
	return 0
}

// LaneBoundWhy is where a lane's bound comes from: its capacity measured
// while it stayed backlogged (writes or points per second) and whether the
// bound in force is derived from it (capacity x SLA) rather than the
// lane's queue_bound ceiling (lane.bound).
func (e *Engine) LaneBoundWhy(name Lane) (capacity float64, derived bool) {
	if l := e.lane(name); l != nil {
		return l.BoundWhy()
	}
	return 0, false
}

// LaneConfig returns the configuration of a lane.
func (e *Engine) LaneConfig(name Lane) LaneConfig { return e.cfg.Lanes[name] }

// Totals returns the engine-wide counters.
func (e *Engine) Totals() *Totals { return &e.totals }

// Reject counts a request refused before it reached the engine (bad input,
// auth) on the lane's ledger line.
func (e *Engine) Reject(name Lane, reason string) {
	if l := e.lane(name); l != nil {
		l.stats.Arrivals.Add(1)
		l.stats.reject(reason)
	}
}

// LaneFull reports whether a lane is at its bound now: a cheap check an
// actor's endpoint makes before it spends CPU on a body that would be
// refused anyway.
func (e *Engine) LaneFull(name Lane) bool {
	l := e.lane(name)
	return l != nil && l.stats.Depth.Load() >= int64(l.Bound())
}

// WaitRoom waits, at most max, until units fit under the lane's bound: nil
// when they did, ErrLaneFull when they did not (not counted: the caller
// refuses with RefuseFull), or at once the reason the engine takes no
// writes now. A writer whose lane is full waits a moment for
// the committer to drain it instead of being refused at once: backpressure
// by latency, where a refusal would cost the client a whole Retry-After
// second. They may be taken by another writer before the caller submits;
// the submit decides.
func (e *Engine) WaitRoom(ctx context.Context, name Lane, units int, max time.Duration) error {
	l := e.lane(name)
	if l == nil {
		return fmt.Errorf("engine: no lane %v", name)
	}
	if err := e.admit(); err != nil {
		return err // not taking writes (a failed store, a low disk, closing): no use waiting
	}
	if !l.waitRoom(ctx, units, time.Now().Add(max)) {
		return ErrLaneFull
	}
	return nil
}

// DriverRateLimit is the elastic limit on accepted driver points
// (points/s, 0: none), one driver's max-min share of it, and the
// scheduling latency p99 they follow (elastic.go).
func (e *Engine) DriverRateLimit() (limit, share float64, schedP99 time.Duration) {
	return e.rate.Limit()
}

// DriverRateRefused counts the driver submissions the elastic limit
// refused since start.
func (e *Engine) DriverRateRefused() uint64 { return e.rate.Refused.Load() }

// AdmitPoints refuses, before its body costs any CPU, a driver submission
// that the elastic limit would refuse now: the driver's bucket does not
// hold what it asked for when it was last refused (elastic.go). It counts
// the refusal like SubmitPoints would. It takes nothing: SubmitPoints
// decides.
func (e *Engine) AdmitPoints(driver string) error {
	if !e.rate.engaged.Load() {
		return nil
	}
	ds, err := e.drivers.get(driver)
	if err != nil {
		return nil // SubmitPoints answers it
	}
	defer e.drivers.release(ds)
	ds.mu.Lock()
	over, wait := e.rate.over(&ds.share, e.now())
	ds.mu.Unlock()
	if !over {
		return nil
	}
	l := e.lanes[LaneDriver]
	l.stats.Arrivals.Add(1)
	l.stats.reject(reasonOf(ErrLaneFull))
	e.rate.refuse()
	return &LaneFullError{Lane: LaneDriver, RetryAfter: max(wait, time.Second)}
}

// RetryAfter is how long a writer refused by a full lane should wait: the
// lane's queue over its measured drain rate (0 before anything drained).
func (e *Engine) RetryAfter(name Lane) time.Duration {
	if l := e.lane(name); l != nil {
		return l.retryAfter()
	}
	return 0
}

// RefuseFull counts an arrival refused because its lane is full, and
// returns ErrLaneFull for the answer.
func (e *Engine) RefuseFull(name Lane) error {
	if l := e.lane(name); l != nil {
		l.stats.Arrivals.Add(1)
		return l.refuse(ErrLaneFull)
	}
	return ErrLaneFull
}

// refuse counts a request the engine itself refused.
func (l *lane) refuse(err error) error {
	l.stats.reject(reasonOf(err))
	if err == ErrLaneFull {
		return &LaneFullError{Lane: l.name, RetryAfter: l.retryAfter()}
	}
	return err
}

// ReadLog reads durable records after `after`, at most limit (0: all), in
// LSN order: from the durability feed's tail when it holds them (no store
// read; the records are shared, fn must not modify them), else from the
// log. It answers what the log retains: records retention trimmed are
// ErrTrimmed even while the tail still holds them. While the store reopens
// after a storage failure a read from the log answers ErrReopening.
func (e *Engine) ReadLog(after uint64, limit int, fn func(Record) error) error {
	if after+1 < e.db.Load().FirstLSN() {
		return e.readStore(after, limit, fn)
	}
	if segs, ok := e.fromTail(after, limit, nil); ok {
		for _, s := range segs {
			for _, r := range s {
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return e.readStore(after, limit, fn)
}

// Snapshot opens a read view of the tables. While the store reopens after a
// storage failure it answers ErrReopening, and so do the reads of a
// snapshot taken before (they retry with a new one).
func (e *Engine) Snapshot() (*Snapshot, error) {
	s, err := e.db.Load().Snapshot()
	if err != nil {
		return nil, err
	}
	return &Snapshot{s: s}, nil
}

// NoteForeground tells the engine that an actor other than the drivers is
// active now (a dashboard page, an API request by another role): the
// elastic driver limit may engage for foregroundWindow to keep the box
// responsive for it (elastic.go). Writes to the keyed lanes note it
// themselves.
func (e *Engine) NoteForeground() { e.foreground.Store(e.now().UnixNano()) }

// SetForeground adds a test of other actors' activity that lasts without
// requests (live subscribers): while it answers true the driver limit
// may engage.
func (e *Engine) SetForeground(f func() bool) { e.foregroundHook.Store(&f) }

// LastForeground is when an actor other than the drivers was last noted
// active (NoteForeground, a keyed lane's write); zero when never.
func (e *Engine) LastForeground() time.Time {
	if ns := e.foreground.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (e *Engine) foregroundActive() bool {
	if e.now().UnixNano()-e.foreground.Load() < int64(foregroundWindow) {
		return true
	}
	f := e.foregroundHook.Load()
	return f != nil && (*f)()
}
