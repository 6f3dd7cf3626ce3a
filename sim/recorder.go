package sim

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Actor names as they appear in reports.
const (
	ActorDriver    = "driver"
	ActorDispatch  = "dispatch"
	ActorWarehouse = "warehouse"
	ActorTables    = "tables"
	ActorViewer    = "viewer"
)

// sample is one latency observation: when it started (offset from the run's
// start) and how long it took.
type sample struct {
	at, lat time.Duration
}

// recorder collects one actor's outcomes. Samples are bounded by the run's
// length and rates (a few MB at the largest scenario); reasons by the set
// of error codes.
type recorder struct {
	start time.Time

	offered  atomic.Int64
	accepted atomic.Int64

	mu      sync.Mutex
	samples []sample
	reasons map[string]int64
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, reasons: map[string]int64{}}
}

// ok records an accepted request that began at t0 and ended now.
func (r *recorder) ok(t0 time.Time, now time.Time) {
	r.accepted.Add(1)
	r.observe(t0, now.Sub(t0))
}

// observe records a latency without counting a request (viewer deliveries).
func (r *recorder) observe(t0 time.Time, lat time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, sample{at: t0.Sub(r.start), lat: lat})
	r.mu.Unlock()
}

// reject counts a refusal or failure by its reason (an error code such as
// lane_full, or "transport").
func (r *recorder) reject(reason string) {
	r.mu.Lock()
	r.reasons[reason]++
	r.mu.Unlock()
}

// snapshot copies the samples and reasons.
func (r *recorder) snapshot() ([]sample, map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int64, len(r.reasons))
	for k, v := range r.reasons {
		m[k] = v
	}
	return slices.Clone(r.samples), m
}

// recent returns the count and p99 of samples that began at or after from.
func (r *recorder) recent(from time.Duration) (int, time.Duration) {
	r.mu.Lock()
	i, _ := slices.BinarySearchFunc(r.samples, from, func(s sample, t time.Duration) int {
		return cmpDur(s.at, t)
	})
	// Samples are appended in completion order, nearly sorted by start;
	// the search finds a good enough cut for a progress line.
	lats := make([]time.Duration, 0, len(r.samples)-i)
	for _, s := range r.samples[i:] {
		lats = append(lats, s.lat)
	}
	r.mu.Unlock()
	slices.Sort(lats)
	return len(lats), quantile(lats, 0.99)
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// quantile of sorted durations (nearest rank); 0 when empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latencies of samples that began in [from, to), sorted.
func latencies(ss []sample, from, to time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		if s.at >= from && s.at < to {
			out = append(out, s.lat)
		}
	}
	slices.Sort(out)
	return out
}
