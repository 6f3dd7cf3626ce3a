package engine

import (
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// driverRate is an elastic limit on the driver points the engine accepts
// (issue 17), shared out max-min between the drivers that post.
//
// Go has no goroutine priorities, and under a driver flood the CPU is
// spent per accepted point — decoding, the committer, Badger's flushes and
// compactions, the replica — not in concurrent handlers (BENCHMARKS.md,
// "The elastic admission gate, again"). So what keeps the box responsive
// for the sync lanes is the accepted *rate*, held where the Go scheduler
// keeps up.
//
// When it engages. Only when there is someone to protect, the drivers
// offer more than the box takes, and the box shows it. Someone to
// protect: another actor was active in the last foregroundWindow (a write
// to a keyed lane, a signed-in dashboard request, an API request by
// another role: Engine.NoteForeground) or is watching now (a client's
// subscription, an open live page: SetForeground); with drivers
// alone on the box, limiting them buys nobody anything and halved what
// a flood of them made durable (BENCHMARKS.md, "The log in runs"). Then,
// in one control interval (100 ms) the driver lane
// was full when a submission arrived (it waited for room, or was refused
// as full), and the p99 of the runtime's scheduling
// latency passed schedHigh (2/5 of the tightest SLA: 2 ms for dispatch's
// 5 ms). A spike the store keeps up with never fills the lane, so it is
// never limited, however busy the CPU is (goal 3 of issue 17: isolation
// is not bought by refusing drivers the box can take).
//
// While engaged, every interval: with nobody to protect any more, the
// limit is off; above schedHigh the limit falls by a
// quarter, to rateFloor at the lowest; below schedLow (1/5 of the SLA) it
// rises by a tenth. After a second without a refusal, or past rateCeiling,
// the limit is off again. The first limit is three quarters of the rate
// the engine accepted in the interval before. Nothing of it is configured:
// the thresholds follow the SLA.
//
// Max-min shares. The limit is shared out between the drivers, not
// taken first come first served: each driver has a bucket filled at the
// share (holding shareWindow of it), and a submission is accepted when
// its driver's bucket holds it (a submission larger than the bucket
// waits for a full one and leaves it in debt). The share is the water
// level of max-min fairness, found by feedback: it starts at the limit
// over the drivers active in the interval before; each interval, when
// the accepted rate was over the limit it shrinks in proportion, and when
// some driver was refused while the accepted rate stayed under the
// limit it grows (by at most half). So a flood is cut at its heaviest
// sources: phones that post a point every few seconds stay under the
// share and are never refused, and the few clients posting as fast as
// they can split what is left evenly, whatever the order of their
// requests. A refused submission is answered like a full lane, with a
// Retry-After of the time until its driver's bucket holds it.
type driverRate struct {
	mu    sync.Mutex
	limit float64 // points/s; 0: no limit
	share float64 // points/s per driver: the max-min water level, by feedback
	quiet int     // intervals without a refusal while engaged

	engaged  atomic.Bool   // limit > 0: lets the unlimited path skip the mutex
	schedP99 atomic.Int64  // ns: the last interval's scheduling latency p99
	epoch    atomic.Uint32 // the control interval's number, for counting active drivers
	active   atomic.Int64  // drivers that submitted in this interval
	accepted atomic.Int64  // points accepted in this interval
	refused  atomic.Int64  // submissions refused by the limit in this interval
	// Refused counts every submission the limit refused since start.
	Refused atomic.Uint64

	low, high time.Duration
}

const (
	controlInterval = 100 * time.Millisecond
	rateFloor       = 5000      // points/s: a flood never starves the drivers below this
	rateCeiling     = 1_000_000 // points/s: above, the limit is off
	quietIntervals  = 10        // a second without a refusal disengages the limit
	// foregroundWindow is how long after another actor's last activity
	// the limit may still engage (or stay engaged): long, so that a
	// dispatcher writing every few minutes into a flood finds the box
	// already protected, not its first write answering for it.
	foregroundWindow = 5 * time.Minute
	shareWindow      = 2.0 // seconds of its share a driver's bucket holds
)

// driverShare is a driver's bucket; guarded by its driverState's mu.
type driverShare struct {
	epoch  uint32 // the interval in which the driver was last counted active
	tokens float64
	last   time.Time
	want   float64 // the points of its last refused submission (0 after an accepted one)
}

func newDriverRate(target time.Duration) *driverRate {
	return &driverRate{low: target / 5, high: 2 * target / 5}
}

// step applies one interval's readings to the limit: the scheduling
// latency p99 and how many driver submissions found the lane full (waits
// for room and refusals, the limit's own included).
func (r *driverRate) step(p99 time.Duration, laneFull uint64, foreground bool) {
	r.schedP99.Store(int64(p99))
	accepted := float64(r.accepted.Swap(0))
	refused := r.refused.Swap(0)
	active := r.active.Swap(0)
	r.epoch.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit == 0 {
		if !foreground || laneFull == 0 || p99 <= r.high {
			return
		}
		r.limit = math.Max(accepted/controlInterval.Seconds()*0.75, rateFloor)
		r.share = r.limit / float64(max(active, 1))
		r.quiet = 0
		r.engaged.Store(true)
		return
	}
	if !foreground {
		r.limit, r.share = 0, 0
		r.engaged.Store(false)
		return
	}
	old := r.limit
	switch {
	case p99 > r.high:
		r.limit = math.Max(r.limit*0.75, rateFloor)
	case p99 < r.low:
		r.limit *= 1.1
	}
	if refused == 0 && laneFull == 0 {
		r.quiet++
	} else {
		r.quiet = 0
	}
	if r.quiet >= quietIntervals || r.limit > rateCeiling {
		r.limit, r.share = 0, 0
		r.engaged.Store(false)
		return
	}
	// The share follows the limit, then moves toward the water level.
	r.share *= r.limit / old
	rate := accepted / controlInterval.Seconds()
	switch {
	case rate > r.limit:
		r.share *= math.Max(r.limit/rate, 0.5)
	case refused > 0:
		r.share *= math.Min(r.limit/math.Max(rate, 1), 1.5)
	}
	r.share = math.Max(r.share, r.limit/float64(max(active, 1)))
}

// take takes n points for the driver whose bucket is s (its driverState's
// mu held) at now. When they cannot be taken it takes nothing and says
// how long until they can.
func (r *driverRate) take(s *driverShare, n int, now time.Time) (ok bool, wait time.Duration) {
	if ep := r.epoch.Load(); s.epoch != ep {
		s.epoch = ep
		r.active.Add(1)
	}
	if !r.engaged.Load() {
		r.accepted.Add(int64(n))
		return true, 0
	}
	r.mu.Lock()
	share := r.share
	r.mu.Unlock()
	if share == 0 {
		r.accepted.Add(int64(n))
		return true, 0
	}
	full := share * shareWindow
	if s.last.IsZero() {
		s.tokens = full // a driver new to the limit starts with a full bucket
	} else {
		s.tokens = math.Min(s.tokens+now.Sub(s.last).Seconds()*share, full)
	}
	s.last = now
	need := math.Min(float64(n), full) // more than the bucket waits for a full one
	if s.tokens < need {
		s.want = need
		return false, time.Duration((need - s.tokens) / share * float64(time.Second))
	}
	// May go negative: the next ones wait it off. At most a bucket's debt,
	// so a phone that uploads what it buffered offline waits at most two
	// bucket fills before its live points pass again.
	s.tokens = math.Max(s.tokens-float64(n), -full)
	s.want = 0
	r.accepted.Add(int64(n))
	return true, 0
}

// refuse counts a submission the limit refused (once, however often it
// was tried).
func (r *driverRate) refuse() {
	r.refused.Add(1)
	r.Refused.Add(1)
}

// refund gives back the n points take took for a submission that the
// lane then refused: they were not accepted.
func (r *driverRate) refund(s *driverShare, n int) {
	r.accepted.Add(-int64(n))
	if r.engaged.Load() && !s.last.IsZero() {
		s.tokens += float64(n)
	}
}

// over says whether the driver whose bucket is s would be refused now,
// without taking anything, and the wait: a driver refused last time is
// taken to ask for as many points again (at least one). It lets a
// request be refused before its body is decoded.
func (r *driverRate) over(s *driverShare, now time.Time) (bool, time.Duration) {
	if !r.engaged.Load() || s.last.IsZero() {
		return false, 0
	}
	r.mu.Lock()
	share := r.share
	r.mu.Unlock()
	if share == 0 {
		return false, 0
	}
	full := share * shareWindow
	own := math.Min(s.tokens+now.Sub(s.last).Seconds()*share, full)
	// At most a full bucket: the share may have shrunk since the refusal,
	// and take asks no more than a full bucket either.
	want := math.Max(math.Min(s.want, full), 1)
	if own >= want {
		return false, 0
	}
	return true, time.Duration((want - own) / share * float64(time.Second))
}

// Limit is the current limit (0: none), the share of one driver, and the
// scheduling latency p99 they were set from.
func (r *driverRate) Limit() (limit, share float64, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limit, r.share, time.Duration(r.schedP99.Load())
}

// control runs the controller until stop is closed; laneFull reads the
// driver lane's count of submissions that found it full (waited for room
// or were refused), foreground whether another actor is active.
func (r *driverRate) control(stop <-chan struct{}, laneFull func() uint64, foreground func() bool) {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	var prev []uint64
	prevFull := laneFull()
	t := time.NewTicker(controlInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindFloat64Histogram {
			return // not available in this runtime: no limit
		}
		h := s[0].Value.Float64Histogram()
		full := laneFull()
		if prev != nil {
			r.step(histP99(h.Counts, prev, h.Buckets), full-prevFull, foreground())
		}
		prevFull = full
		prev = append(prev[:0], h.Counts...)
	}
}

// histP99 is the p99 of the counts added since prev, as the upper bound of
// its bucket (0 when nothing was added).
func histP99(counts, prev []uint64, buckets []float64) time.Duration {
	var total uint64
	for i := range counts {
		total += counts[i] - prev[i]
	}
	if total == 0 {
		return 0
	}
	var acc uint64
	for i := range counts {
		acc += counts[i] - prev[i]
		if float64(acc) >= 0.99*float64(total) {
			up := buckets[i+1]
			if math.IsInf(up, 1) {
				up = buckets[i]
			}
			return time.Duration(up * float64(time.Second))
		}
	}
	return 0
}
