package engine

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"routehound/wal"
)

// item is one write waiting in a lane: one request of one actor.
type item struct {
	arrived time.Time
	units   int    // what it counts against the lane bound (driver: points)
	flow    string // whose turn it takes in the driver lane's round robin: the driver
	bytes   int64  // estimated bytes it adds to a batch
	// apply writes the item into the batch. It returns the item's own
	// outcome (res.err may be an item-level refusal such as a version
	// conflict); a non-nil error means the batch itself is broken.
	apply func(b *wal.Batch) (result, error)
	// done receives the outcome once durable (nil for async writers).
	done chan result
	// durable runs in the committer once the item is durable (driver seq).
	durable func()
	top     uint64 // driver items: the highest seq of the chunk
	// redo rebuilds an accepted item that has no waiter (an async driver
	// chunk, already answered 202) after a store reopen: the part the
	// reopened store does not hold, or nil when it holds all of it. Runs
	// on the committer. Nil for items whose writer waits for the answer.
	redo  func(e *Engine) *item
	redos int // how many store failures this write has been carried across

	res   result
	taken time.Time
	out   bool // popped from its lane (the driver lane's arrival order skips it)
	// journaled: its writes went to the journal too (pipeline.go).
	journaled bool
	// answered: it was answered, by the journal's goroutine right after
	// its fdatasync or by the committer after the log's fsync, whichever
	// came first; the other leaves it alone (Engine.answer).
	answered atomic.Bool
}

// result is the outcome of one item.
type result struct {
	write WriteResult // a keyed write's answer
	phone PhoneAck    // a phone point's answer
	err   error
	dup   bool // answered from an earlier write: not counted as accepted again
}

// lane is one actor's bounded queue and its ledger line.
//
// The bound counts units waiting in the queue AND units taken by the
// committer until they are durable, so a slow fsync backs up into the lane
// and its own writer gets the backpressure, nobody else.
type lane struct {
	name   Lane
	cfg    LaneConfig
	capped bool // its units count against the derived batch cap: every lane but a sync lane at the scheduler's target (sched.go)

	mu    sync.Mutex
	queue []*item // FIFO; bounded by cfg.QueueBound units through depth
	head  int
	fair  *drr // the driver lane's queue instead of queue: fair among drivers (drr.go)
	// arrivals is the driver lane's items in arrival order (popped ones
	// skipped lazily): its oldest waiting item, for the committer's
	// earliest-deadline choice, which the round robin's next item is not.
	arrivals []*item
	arrHead  int
	depth    int           // units queued + in flight; guarded by mu, mirrored in stats
	room     chan struct{} // non-nil while a writer waits for room (WaitRoom); closed by release

	// The drain rate (units released per second), measured over spans of
	// at least drainSpan, smoothed: RetryAfter's estimate. Guarded by mu.
	drainAt    time.Time
	drainUnits int
	drainRate  float64
	// capRate is the drain rate over spans in which the lane never ran
	// empty: what the committer can take from it, not what arrived
	// (Little's law's throughput for the driver lane's bound).
	capRate float64
	emptied bool      // the lane ran empty in the current span
	littles bool      // the bound is derived from capRate and the SLA (the driver lane)
	capAt   time.Time // when capRate was last measured (a backlogged span); stale after capacityFresh

	stats LaneStats
	now   func() time.Time // the engine's clock
}

// drainSpan is the shortest span the drain rate is measured over.
const drainSpan = 100 * time.Millisecond

func newLane(name Lane, cfg LaneConfig, now func() time.Time) *lane {
	l := &lane{name: name, cfg: cfg, littles: name == LaneDriver, now: now}
	if name == LaneDriver {
		// A quantum of one chunk: a backlogged driver gets a chunk a
		// round, a driver with fewer points gets all of them.
		l.fair = newDRR(chunkPoints)
	}
	return l
}

// push queues items, all or none, or refuses with ErrLaneFull when the
// lane's bound would be passed. Policy when full: reject with
// backpressure, never wait.
func (l *lane) push(items ...*item) error {
	units := 0
	for _, it := range items {
		units += it.units
	}
	l.mu.Lock()
	if l.depth+units > l.bound() {
		l.mu.Unlock()
		return ErrLaneFull
	}
	l.depth += units
	if l.fair != nil {
		for _, it := range items {
			l.fair.push(it)
		}
		l.arrivals = append(l.arrivals, items...)
	} else {
		l.queue = append(l.queue, items...)
	}
	l.mu.Unlock()
	l.stats.Depth.Add(int64(units))
	return nil
}

// requeue puts items at the head of the queue, ahead of anything queued
// since, without the bound check: they were admitted before. units is what
// they counted against the bound already (released here).
func (l *lane) requeue(items []*item, units int) {
	add := 0
	for _, it := range items {
		add += it.units
	}
	l.mu.Lock()
	// The held units never drained while the store reopened: a span over
	// the reopen would measure the recovery, not the lane.
	l.drainAt, l.drainUnits = time.Time{}, 0
	if l.fair != nil {
		l.fair.requeue(items)
	} else {
		l.queue = append(append([]*item(nil), items...), l.queue[l.head:]...)
		l.head = 0
	}
	l.depth += add - units
	if add < units && l.room != nil {
		close(l.room) // depth fell: writers waiting for room look again
		l.room = nil
	}
	l.mu.Unlock()
	l.stats.Depth.Add(int64(add - units))
}

// pop takes the next item, or nil: the oldest, or in the driver lane the
// next in the drivers' round robin. Its units stay in depth until release.
func (l *lane) pop() *item {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fair != nil {
		it := l.fair.pop()
		if it != nil {
			it.out = true
		}
		if l.fair.items == 0 && len(l.fair.front) == 0 {
			clear(l.arrivals) // nothing waits: nothing to skip later
			l.arrivals, l.arrHead = l.arrivals[:0], 0
		}
		return it
	}
	if l.head == len(l.queue) {
		return nil
	}
	it := l.queue[l.head]
	l.queue[l.head] = nil
	l.head++
	if l.head == len(l.queue) { // empty: reuse the backing array from the start
		l.queue, l.head = l.queue[:0], 0
	} else if l.head > 1024 && l.head*2 > len(l.queue) {
		n := copy(l.queue, l.queue[l.head:])
		l.queue, l.head = l.queue[:n], 0
	}
	return it
}

// peek returns the item pop returns next without taking it, or nil.
func (l *lane) peek() *item {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fair != nil {
		return l.fair.peek()
	}
	if l.head == len(l.queue) {
		return nil
	}
	return l.queue[l.head]
}

// oldest is when the oldest item waiting in the lane arrived; ok is false
// when none waits. In the driver lane that is not the round robin's next
// item: a backlogged driver's oldest chunk makes the lane as urgent as it
// is (items put back after a store reopen come first and are the oldest).
func (l *lane) oldest() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fair == nil {
		if l.head == len(l.queue) {
			return time.Time{}, false
		}
		return l.queue[l.head].arrived, true
	}
	if len(l.fair.front) > 0 {
		return l.fair.front[0].arrived, true
	}
	for l.arrHead < len(l.arrivals) && l.arrivals[l.arrHead].out {
		l.arrivals[l.arrHead] = nil
		l.arrHead++
	}
	if l.arrHead > 1024 && l.arrHead*2 > len(l.arrivals) {
		n := copy(l.arrivals, l.arrivals[l.arrHead:])
		clear(l.arrivals[n:])
		l.arrivals, l.arrHead = l.arrivals[:n], 0
	}
	if l.arrHead == len(l.arrivals) {
		return time.Time{}, false
	}
	return l.arrivals[l.arrHead].arrived, true
}

// waiting reports whether the queue holds an item.
func (l *lane) waiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fair != nil {
		return l.fair.waiting()
	}
	return l.head < len(l.queue)
}

// release gives back the units of items that are durable or answered.
// Only committed units count toward the drain rate: refusals (a queue
// timeout, a failed store) free room but say nothing of how fast the lane
// drains. The committer answers a batch's items one by one and notes their
// units as drained once, after the last (drainTally): a span of the rate
// that ended at a batch's first answer would hold one unit for the whole
// time the batch took (a first capacity of 5 writes/s for 500).
func (l *lane) release(units int, committed bool) {
	l.mu.Lock()
	l.depth -= units
	if l.depth == 0 {
		l.emptied = true // drained all it had: this span measured arrivals too
	}
	if committed {
		l.drainedLocked(units)
	}
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
	l.mu.Unlock()
	l.stats.Depth.Add(-int64(units))
}

// drained counts units committed together (released before) toward the
// drain rate.
func (l *lane) drained(units int) {
	l.mu.Lock()
	l.drainedLocked(units)
	l.mu.Unlock()
}

func (l *lane) drainedLocked(units int) {
	l.drainUnits += units
	if now := l.now(); l.drainAt.IsZero() {
		l.drainAt, l.drainUnits, l.emptied = now, 0, l.depth == 0
	} else if d := now.Sub(l.drainAt); d >= drainSpan {
		r := float64(l.drainUnits) / d.Seconds()
		l.drainRate = ewma(l.drainRate, r)
		if !l.emptied {
			l.capRate = ewma(l.capRate, r)
			l.capAt = now
		}
		l.drainAt, l.drainUnits, l.emptied = now, 0, l.depth == 0
	}
}

// drainTally adds up what a batch's answers drained from each lane, for
// one lane.drained each once they are all answered.
type drainTally struct {
	lanes [8]*lane
	units [8]int
	n     int
}

func (t *drainTally) add(l *lane, units int) {
	for i := range t.n {
		if t.lanes[i] == l {
			t.units[i] += units
			return
		}
	}
	if t.n == len(t.lanes) { // more lanes than there are: never
		l.drained(units)
		return
	}
	t.lanes[t.n], t.units[t.n] = l, units
	t.n++
}

// note counts the tally toward each lane's drain rate.
func (t *drainTally) note() {
	for i := range t.n {
		t.lanes[i].drained(t.units[i])
	}
}

func ewma(old, sample float64) float64 {
	if old == 0 {
		return sample
	}
	return old + (sample-old)/4
}

// littleFloor is the smallest derived bound of the driver lane: a few
// chunks of concurrent requests always fit.
const littleFloor = 4 * chunkPoints

// capacityFresh is how long a measured capacity stands without a new
// backlogged span: a capacity measured in a stall is not kept once the
// lane drains faster than it and never stays backlogged again.
const capacityFresh = 10 * time.Second

// capacity is capRate while fresh, else 0. Caller holds mu.
func (l *lane) capacity() float64 {
	if l.capRate <= 0 || l.now().Sub(l.capAt) > capacityFresh {
		return 0
	}
	return l.capRate
}

// bound is the lane's admission bound now. The driver lane's is what the
// committer can take from it within its SLA at its measured capacity
// (Little's law: queue = throughput x time), at least littleFloor and at
// most its queue_bound, which is also the bound while no capacity is
// measured (or the last went stale); the other lanes' is their queue_bound
// (their writers wait for their answers, so their own number bounds them:
// a bound derived for them refused the 65th writer of a burst with a
// Retry-After from a capacity measured in a stall long gone, where the
// queue drained in milliseconds; see docs/design.md §3). Caller holds mu.
func (l *lane) bound() int {
	c := l.capacity()
	if !l.littles || c <= 0 {
		return l.cfg.QueueBound
	}
	n := int(c * l.cfg.SLA.Seconds())
	return min(l.cfg.QueueBound, max(n, littleFloor))
}

// BoundWhy says where the bound in force comes from, for the Channels
// page: the capacity measured (per second, 0 while none is fresh) and
// whether the bound is derived from it rather than queue_bound.
func (l *lane) BoundWhy() (capacity float64, derived bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.capacity()
	return c, l.littles && c > 0 && l.bound() < l.cfg.QueueBound
}

// Bound is bound under the lane's lock.
func (l *lane) Bound() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bound()
}

// retryAfter is how long the lane's queue takes to drain at its measured
// rate: what a refused writer is told to wait (0 when nothing is measured).
// The rate is the larger of the capacity measured while the lane stayed
// backlogged (while fresh) and the plain drain rate: a drain rate taken
// while the writers trickled in measures their arrivals, and told the first
// writers refused in a burst to wait 25 s for a queue that drained in 0.2
// (TestRetryAfterIsTheQueuesDrainTime). A lane
// that stopped draining keeps its last rate: the stall shows in the depth,
// and the estimate stays finite.
func (l *lane) retryAfter() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	rate := max(l.drainRate, l.capacity()) // the faster: a stale or trickling measure overstates the wait
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(l.depth) / rate * float64(time.Second))
}

// waitRoom waits until units fit under the bound, at most until deadline
// or ctx's end; it reports whether they fit when it returned. They may no
// longer fit when the caller pushes: push decides.
func (l *lane) waitRoom(ctx context.Context, units int, deadline time.Time) bool {
	var timer *time.Timer
	for {
		l.mu.Lock()
		if l.depth+units <= l.bound() {
			l.mu.Unlock()
			return true
		}
		if l.room == nil {
			l.room = make(chan struct{})
		}
		room := l.room
		l.mu.Unlock()
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		if timer == nil {
			l.stats.RoomWaits.Add(1) // once per wait, not per wake-up
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		select {
		case <-room:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// LaneStats is one lane's line of the cost ledger. All fields are updated
// atomically and may be read at any time.
type LaneStats struct {
	Arrivals       atomic.Uint64 // requests that reached the lane (accepted or not)
	Accepted       atomic.Uint64 // units accepted (driver: new points; others: writes)
	Duplicates     atomic.Uint64 // units answered from an earlier write (seq or Idempotency-Key)
	Depth          atomic.Int64  // units queued + in flight
	RoomWaits      atomic.Uint64 // requests that found the lane full and waited for room (WaitRoom)
	Records        atomic.Uint64 // log records written
	BytesWritten   atomic.Uint64 // bytes added to the store (estimate: log + state + idempotency)
	Batches        atomic.Uint64 // batches that held at least one of the lane's writes
	Fsyncs         atomic.Uint64 // fsyncs that covered at least one of the lane's writes
	CommitterNanos atomic.Int64  // committer time spent on the lane: apply + its share of commit and fsync
	QueueWait      Histogram     // arrival → taken by the committer
	Latency        Histogram     // arrival → durable (the answer of sync and ack writers)

	rejMu    sync.Mutex
	rejected map[string]uint64 // reason → requests; the reason set is fixed and small
}

// reject counts one refused request by reason.
func (s *LaneStats) reject(reason string) {
	s.rejMu.Lock()
	if s.rejected == nil {
		s.rejected = map[string]uint64{}
	}
	s.rejected[reason]++
	s.rejMu.Unlock()
}

// rejectedFor is the count of refusals for one reason.
func (s *LaneStats) rejectedFor(reason string) uint64 {
	s.rejMu.Lock()
	defer s.rejMu.Unlock()
	return s.rejected[reason]
}

// Rejected returns the refusals by reason, sorted by reason.
func (s *LaneStats) Rejected() []Reason {
	s.rejMu.Lock()
	defer s.rejMu.Unlock()
	out := make([]Reason, 0, len(s.rejected))
	for r, n := range s.rejected {
		out = append(out, Reason{r, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}

// Reason is a count of refusals for one reason.
type Reason struct {
	Reason string
	Count  uint64
}

// reasonOf names an error for the ledger: the API's error code for it, so
// that /metrics, the dashboard and the API say one name.
func reasonOf(err error) string {
	if errors.Is(err, ErrLaneFull) {
		return "lane_full"
	}
	if errors.Is(err, ErrNotPrimary) {
		return "not_primary"
	}
	switch err {
	case ErrLaneFull:
		return "lane_full"
	case ErrQueueTimeout:
		return "queue_timeout"
	case ErrUnavailable:
		return "unavailable"
	case ErrDiskLow:
		return "disk_low"
	case ErrVersionConflict:
		return "version_conflict"
	case ErrNotFound:
		return "not_found"
	case ErrIdempotencyMismatch:
		return "idempotency_key_reused"
	case ErrTooManyDrivers:
		return "too_many_drivers"
	case ErrTooLarge:
		return "body_too_large"
	}
	return "error"
}
