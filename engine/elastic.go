package engine

import (
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// driverRate is an elastic limit on the driver points the engine accepts
// (issue 17). Go has no goroutine priorities, and under a driver flood the
// CPU is spent per accepted point — decoding, the committer, Badger's
// flushes and compactions, the replica — not in concurrent handlers
// (BENCHMARKS.md, "The elastic admission gate, again"). So what keeps
// the box responsive for the sync lanes is the accepted *rate*, held
// where the Go scheduler keeps up: every controlInterval the controller
// reads the p99 of the runtime's scheduling latency over the last
// interval; above schedHigh (2/5 of the tightest SLA: 2 ms for dispatch's
// 5 ms) it cuts the rate by a quarter, down to rateFloor; below schedLow
// (1/5 of it) it raises it by a tenth, and past rateCeiling the limit is
// off. Nothing of it is configured: the thresholds follow the SLA.
//
// A driver submission takes tokens for its new points; when there are
// too few it waits up to the room wait for them (holding its driver's
// mutex, so the driver's order stands), then is refused like a full lane,
// with a Retry-After of the bucket's deficit. The bucket holds a tenth of
// a second of the rate, so a burst of that size passes at once.
type driverRate struct {
	mu     sync.Mutex
	limit  float64 // points/s; 0: no limit
	tokens float64
	last   time.Time

	schedP99 atomic.Int64 // ns: the last interval's scheduling latency p99
	low      time.Duration
	high     time.Duration
}

const (
	controlInterval = 100 * time.Millisecond
	rateFloor       = 5000      // points/s: a flood never starves the drivers below this
	rateCeiling     = 1_000_000 // points/s: above, the limit is off
	rateFirst       = 100_000   // points/s: the limit the first cut starts from
)

func newDriverRate(target time.Duration) *driverRate {
	return &driverRate{low: target / 5, high: 2 * target / 5}
}

// step applies one interval's scheduling latency p99 to the limit.
func (r *driverRate) step(p99 time.Duration) {
	r.schedP99.Store(int64(p99))
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case p99 > r.high:
		if r.limit == 0 {
			r.limit = rateFirst
		}
		r.limit = math.Max(r.limit*0.75, rateFloor)
	case p99 < r.low && r.limit > 0:
		if r.limit *= 1.1; r.limit > rateCeiling {
			r.limit = 0
		}
	}
}

// take takes n tokens at now; when there are too few it takes none and
// says how long until there are.
func (r *driverRate) take(n int, now time.Time) (ok bool, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit == 0 {
		return true, 0
	}
	burst := r.limit / 10
	if !r.last.IsZero() {
		r.tokens = math.Min(r.tokens+now.Sub(r.last).Seconds()*r.limit, burst)
	}
	r.last = now
	need := math.Min(float64(n), burst) // a request larger than the burst waits for a full bucket
	if r.tokens >= need {
		r.tokens -= float64(n) // may go negative: the next ones wait it off
		return true, 0
	}
	return false, time.Duration((need - r.tokens) / r.limit * float64(time.Second))
}

// Limit is the current limit (0: none) and the scheduling latency p99 it
// was set from.
func (r *driverRate) Limit() (float64, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limit, time.Duration(r.schedP99.Load())
}

// control runs the controller until stop is closed.
func (r *driverRate) control(stop <-chan struct{}) {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	var prev []uint64
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
		if prev != nil {
			r.step(histP99(h.Counts, prev, h.Buckets))
		}
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
