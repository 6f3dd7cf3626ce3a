package engine

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-spaced buckets, four per doubling
// (about 19% resolution), from 1µs to about 70 minutes, with atomic counters:
// recording never takes a lock, so the committer and request goroutines can
// record side by side.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Int64 // nanoseconds
	max    atomic.Int64 // nanoseconds
}

const histBuckets = 4*32 + 1

// bucketOf maps a duration in µs to its bucket: 4 buckets per power of two.
func bucketOf(us uint64) int {
	if us <= 1 {
		return 0
	}
	e := bits.Len64(us) - 1 // 2^e <= us < 2^(e+1)
	var frac uint64
	if e >= 2 {
		frac = (us >> (e - 2)) & 3
	} else {
		frac = (us << (2 - e)) & 3
	}
	b := 4*e + int(frac) + 1
	if b >= histBuckets {
		return histBuckets - 1
	}
	return b
}

// bucketUpper is the upper bound of bucket b.
func bucketUpper(b int) time.Duration {
	if b == 0 {
		return time.Microsecond
	}
	e := (b - 1) / 4
	frac := (b - 1) % 4
	us := math.Ldexp(1+float64(frac+1)/4, e)
	return time.Duration(us * float64(time.Microsecond))
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d/time.Microsecond))].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// HistogramSnapshot is a point-in-time copy of a Histogram.
type HistogramSnapshot struct {
	Counts [histBuckets]uint64
	Count  uint64
	Sum    time.Duration
	Max    time.Duration
}

// Snapshot copies the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Count = h.count.Load()
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	return s
}

// Quantile estimates the q-quantile (0 < q <= 1) as the upper bound of the
// bucket holding it, capped by the maximum seen.
func (s HistogramSnapshot) Quantile(q float64) time.Duration {
	var total uint64
	for _, c := range s.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var cum uint64
	for i, c := range s.Counts {
		cum += c
		if cum >= rank {
			if u := bucketUpper(i); u < s.Max {
				return u
			}
			return s.Max
		}
	}
	return s.Max
}

// Sub is the histogram of what was recorded between old and s (max is s's).
func (s HistogramSnapshot) Sub(old HistogramSnapshot) HistogramSnapshot {
	d := s
	for i := range d.Counts {
		d.Counts[i] -= old.Counts[i]
	}
	d.Count -= old.Count
	d.Sum -= old.Sum
	return d
}

// Buckets calls fn with the cumulative count at each power-of-two bound,
// for export (Prometheus "le" buckets).
func (s HistogramSnapshot) Buckets(fn func(le time.Duration, cumulative uint64)) {
	var cum uint64
	for i, c := range s.Counts {
		cum += c
		if i%4 == 0 {
			fn(bucketUpper(i), cum)
		}
	}
}
