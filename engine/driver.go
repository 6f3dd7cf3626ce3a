package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"routehound/fleet"
	"routehound/wal"
)

// Point is one driver location update: its per-driver sequence number and
// its JSON as sent (validated by the caller: fleet.DecodePoints), which is
// what the log keeps.
type Point = fleet.RawPoint

// DriverAck answers a driver's batch.
type DriverAck struct {
	Accepted   int    // points new to the log
	Duplicates int    // points already accepted earlier (seq at or below the high-water mark)
	DurableSeq uint64 // highest seq of this driver already durable
}

// drivers tracks each driver's sequence numbers; bounded by max. At the
// bound the least recently used idle drivers are forgotten (evict): their
// marks are durable in their latest position, and loadDriver reads them
// again on their next submission. So a flood of made-up driver names
// cannot lock real drivers out; only a bound full of drivers with points
// in flight refuses a new one (ErrTooManyDrivers).
type drivers struct {
	mu      sync.Mutex // guards m, tick and each state's used and refs changes from 0; never held across I/O
	m       map[string]*driverState
	max     int
	tick    uint64        // bumped on each get: the recency of use
	evicted atomic.Uint64 // drivers forgotten at the bound
}

type driverState struct {
	mu       sync.Mutex // serializes one driver's submissions; held across the lane push, not across I/O of others
	loaded   bool
	accepted uint64        // highest seq accepted (queued, in flight or durable)
	durable  atomic.Uint64 // highest seq durable

	used uint64       // drivers.tick at the last get (drivers.mu)
	refs atomic.Int32 // holders: from get to release, and a phone point from get to durable; > 0 pins the state

	share driverShare // its bucket of the elastic limit (elastic.go); guarded by mu

	watchMu  sync.Mutex                        // serializes changes to watchers
	watchers atomic.Pointer[[]chan<- struct{}] // copied on change; read by the committer without a lock
}

// advance moves the driver's durable seq up to top and wakes its watchers
// when it moved. Committer only (with no lock held).
func (ds *driverState) advance(top uint64) {
	for cur := ds.durable.Load(); cur < top; cur = ds.durable.Load() {
		if ds.durable.CompareAndSwap(cur, top) {
			if ws := ds.watchers.Load(); ws != nil {
				for _, w := range *ws {
					select {
					case w <- struct{}{}:
					default: // a wake-up is pending already
					}
				}
			}
			return
		}
	}
}

// WatchDriver sends on wake each time the durable seq of driver moves,
// until stop is called. The send never blocks: give wake a buffer of one,
// and read DriverDurableSeq after each receive (a pending wake-up stands
// for any number of moves, none is lost). It is the driver stream's way
// to learn of its drivers' durability without waking for anyone else's.
func (e *Engine) WatchDriver(driver string, wake chan<- struct{}) (stop func(), err error) {
	ds, err := e.drivers.get(driver)
	if err != nil {
		return nil, err
	}
	defer e.drivers.release(ds) // the watcher pins it from here on
	ds.watchMu.Lock()
	defer ds.watchMu.Unlock()
	var ws []chan<- struct{}
	if old := ds.watchers.Load(); old != nil {
		ws = append(ws, *old...)
	}
	ws = append(ws, wake)
	ds.watchers.Store(&ws)
	var once sync.Once
	return func() {
		once.Do(func() {
			ds.watchMu.Lock()
			defer ds.watchMu.Unlock()
			var old []chan<- struct{}
			if p := ds.watchers.Load(); p != nil {
				old = *p
			}
			ws := make([]chan<- struct{}, 0, len(old))
			removed := false
			for _, w := range old {
				if w == wake && !removed {
					removed = true // this watch only: the same channel may watch twice
					continue
				}
				ws = append(ws, w)
			}
			if len(ws) == 0 {
				ds.watchers.Store(nil)
			} else {
				ds.watchers.Store(&ws)
			}
		})
	}, nil
}

// get returns the state of a driver, pinned: call release when done with
// it. At the bound it first forgets idle drivers (evict).
func (d *drivers) get(name string) (*driverState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tick++
	if ds, ok := d.m[name]; ok {
		ds.used = d.tick
		ds.refs.Add(1)
		return ds, nil
	}
	if len(d.m) >= d.max && d.evict() == 0 {
		return nil, ErrTooManyDrivers
	}
	ds := &driverState{used: d.tick}
	ds.refs.Add(1)
	d.m[name] = ds
	return ds, nil
}

// release unpins a state get returned.
func (d *drivers) release(ds *driverState) { ds.refs.Add(-1) }

// evictBatch is the share of the bound one eviction frees, so that the
// scan it costs is paid once per that many new drivers.
const evictBatch = 8

// evict forgets the least recently used idle drivers, up to max/evictBatch
// (at least one), and returns how many. Idle: not pinned, loaded, every
// accepted point durable, no watcher, and its mutex free; such a state is
// all in the store (its latest position), and no item in a lane refers to
// it. Caller holds d.mu; a state's refs only grow from 0 under it, so none
// is handed out while it is being forgotten.
func (d *drivers) evict() int {
	type cand struct {
		name string
		ds   *driverState
	}
	cands := make([]cand, 0, len(d.m))
	for name, ds := range d.m {
		if ds.refs.Load() == 0 {
			cands = append(cands, cand{name, ds})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ds.used < cands[j].ds.used })
	want := max(1, d.max/evictBatch)
	n := 0
	for _, c := range cands {
		if n >= want {
			break
		}
		if c.ds.idle() {
			delete(d.m, c.name)
			n++
		}
	}
	d.evicted.Add(uint64(n))
	return n
}

// idle reports whether the state holds nothing the store does not. It
// never waits: a state whose mutex is held is busy.
func (ds *driverState) idle() bool {
	if !ds.mu.TryLock() {
		return false
	}
	defer ds.mu.Unlock()
	if !ds.watchMu.TryLock() {
		return false
	}
	defer ds.watchMu.Unlock()
	return ds.loaded && ds.accepted == ds.durable.Load() && ds.watchers.Load() == nil && ds.refs.Load() == 0
}

// DriversEvicted counts the drivers forgotten at committer.max_drivers
// (reloaded from the store on their next point).
func (e *Engine) DriversEvicted() uint64 { return e.drivers.evicted.Load() }

// DriverDurableSeq is the highest durable seq of a driver (0 if unknown).
func (e *Engine) DriverDurableSeq(driver string) (uint64, error) {
	ds, err := e.drivers.get(driver)
	if err != nil {
		return 0, err
	}
	defer e.drivers.release(ds)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if err := e.loadDriver(driver, ds); err != nil {
		return 0, err
	}
	return ds.durable.Load(), nil
}

// loadDriver reads a driver's last durable seq from its latest position
// the first time the driver is seen in this process. Caller holds ds.mu.
func (e *Engine) loadDriver(driver string, ds *driverState) error {
	if ds.loaded {
		return nil
	}
	s, err := e.Snapshot()
	if err != nil {
		return err
	}
	defer s.Close()
	st, ok, err := s.Get(fleet.TablePositions, driver)
	if err != nil {
		return err
	}
	if ok {
		var p struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(st.Value, &p); err != nil {
			return fmt.Errorf("engine: driver %s: stored position: %w", driver, err)
		}
		ds.accepted = p.Seq
		ds.durable.Store(p.Seq)
	}
	ds.loaded = true
	return nil
}

// SubmitPoints accepts a driver's points. Points whose seq is at or below
// the driver's high-water mark are duplicates (a retry); the rest go to the
// driver lane in seq order. With the async contract it answers at once; the
// points become durable within the lane's FlushWithin and DurableSeq moves.
// Nothing is accepted when the lane is full (ErrLaneFull).
func (e *Engine) SubmitPoints(ctx context.Context, driver string, pts []Point) (DriverAck, error) {
	l := e.lanes[LaneDriver]
	l.stats.Arrivals.Add(1)
	if err := e.notPrimary(); err != nil {
		return DriverAck{}, l.refuse(err) // also a resend of duplicates: a standby answers no write
	}
	ds, err := e.drivers.get(driver)
	if err != nil {
		return DriverAck{}, l.refuse(err)
	}
	// Released on return: points still in the lane pin the state by
	// accepted > durable.
	defer e.drivers.release(ds)
	ds.mu.Lock()
	if err := e.loadDriver(driver, ds); err != nil {
		ds.mu.Unlock()
		return DriverAck{}, err
	}
	fresh := make([]Point, 0, len(pts))
	for _, p := range pts {
		if p.Seq > ds.accepted {
			fresh = append(fresh, p)
		}
	}
	slices.SortStableFunc(fresh, func(a, b Point) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	fresh = slices.CompactFunc(fresh, func(a, b Point) bool { return a.Seq == b.Seq })
	ack := DriverAck{Accepted: len(fresh), Duplicates: len(pts) - len(fresh)}
	if len(fresh) == 0 {
		ds.mu.Unlock()
		l.stats.Duplicates.Add(uint64(ack.Duplicates))
		ack.DurableSeq = ds.durable.Load()
		return ack, nil
	}
	// The elastic limit on accepted points (elastic.go): wait for tokens
	// up to the room wait, holding the driver's mutex (its order stands),
	// then refuse like a full lane, with the time until the tokens are
	// there as the Retry-After.
	if ok, wait := e.rate.take(&ds.share, ack.Accepted, e.now()); !ok {
		if wait <= e.cfg.RoomWait && sleepCtx(ctx, wait) {
			ok, wait = e.rate.take(&ds.share, ack.Accepted, e.now())
		}
		if !ok {
			ds.mu.Unlock()
			e.rate.refuse()
			l.stats.reject(reasonOf(ErrLaneFull))
			return DriverAck{}, &LaneFullError{Lane: LaneDriver, RetryAfter: max(wait, time.Second)}
		}
	}
	// The points go to the lane in chunks: a chunk is the unit of a
	// batch, so a dispatch write waits behind at most one chunk being
	// applied, and a request of any size fits in a transaction. A
	// driver's chunks commit in its order (the lane is FIFO per driver,
	// round robin between drivers), so durable_seq moves to the top of
	// the last durable chunk and every point below it is durable too.
	items := make([]*item, 0, (len(fresh)+chunkPoints-1)/chunkPoints)
	for len(fresh) > 0 {
		n := min(len(fresh), chunkPoints)
		items = append(items, e.pointsItem(driver, ds, fresh[:n], l.cfg.Contract != Async))
		fresh = fresh[n:]
	}
	err = e.enqueue(l, items...)
	if errors.Is(err, ErrLaneFull) && e.cfg.RoomWait > 0 {
		// Wait for room for exactly the new points (not the duplicates),
		// holding the driver's mutex: its next request waits behind, in
		// order. One arrival, counted once, refused at most once.
		units := 0
		for _, it := range items {
			units += it.units
		}
		if l.waitRoom(ctx, units, time.Now().Add(e.cfg.RoomWait)) {
			err = e.enqueue(l, items...)
		}
	}
	if err != nil {
		e.rate.refund(&ds.share, ack.Accepted) // not accepted: the limit's tokens go back
		ds.mu.Unlock()
		return DriverAck{}, l.refuse(err)
	}
	ds.accepted = items[len(items)-1].top
	ds.mu.Unlock()
	l.stats.Duplicates.Add(uint64(ack.Duplicates))
	if l.cfg.Contract == Async {
		l.stats.Accepted.Add(uint64(ack.Accepted))
	} else {
		for _, it := range items {
			if _, err := wait(ctx, it); err != nil {
				return DriverAck{}, err
			}
		}
	}
	ack.DurableSeq = ds.durable.Load()
	return ack, nil
}

// chunkPoints is the most points of one driver in one lane item.
const chunkPoints = 512

// pointsItem is one chunk of a driver's points, in seq order.
func (e *Engine) pointsItem(driver string, ds *driverState, pts []Point, wait bool) *item {
	values := make([][]byte, len(pts))
	var size int64
	for i, p := range pts {
		values[i] = p.Value
		size += int64(len(p.Value) + len(driver) + 64)
	}
	top := pts[len(pts)-1].Seq
	it := &item{
		units: len(pts),
		flow:  driver,
		bytes: size,
		top:   top,
		apply: func(b *wal.Batch) (result, error) {
			_, err := b.PutSeries(fleet.TablePositions, driver, values, LaneDriver.String())
			return result{}, err
		},
		durable: func() { ds.advance(top) },
	}
	if wait {
		it.done = make(chan result, 1)
	} else {
		it.redo = func(e *Engine) *item { return e.redoPoints(driver, ds, pts) }
	}
	return it
}

// redoPoints rebuilds an accepted chunk of a driver's points after a store
// reopen (recover.go): the points above what the reopened store holds for
// the driver. The driver already had its 202 for them, and the store
// failure must not lose them. Runs on the committer, in lane order, after
// the drivers' marks were reset: the first chunk of a driver loads its
// stored seq, each chunk then moves the mark to its top.
func (e *Engine) redoPoints(driver string, ds *driverState, pts []Point) *item {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if err := e.loadDriver(driver, ds); err != nil {
		// Cannot tell what the store holds: write them all again rather
		// than lose any (the log may then hold a point twice).
		e.log.Error("reading a driver's stored seq after a store reopen; writing its accepted points again", "driver", driver, "err", err)
		ds.loaded = true
	}
	i := sort.Search(len(pts), func(i int) bool { return pts[i].Seq > ds.accepted })
	rest := pts[i:]
	if len(rest) == 0 {
		return nil
	}
	ds.accepted = rest[len(rest)-1].Seq
	return e.pointsItem(driver, ds, rest, false)
}

// sleepCtx sleeps d, or less when ctx ends first; it reports whether it
// slept the whole d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
