package ui

import (
	"math"
	"runtime/metrics"
	"time"
)

// runtimeStat follows two runtime signals of issue 17 from one sample to
// the next: the scheduling latency (how long runnable goroutines waited for
// a P: what a dispatcher's request waits when both cores are busy) and the
// share of CPU the garbage collector took.
type runtimeStat struct {
	samples []metrics.Sample
	prevLat []uint64
	prevGC  float64
	prevAll float64

	schedP99 time.Duration // last interval's p99 scheduling latency
	gcShare  float64       // last interval's GC share of the process's CPU
}

const (
	mSchedLatencies = "/sched/latencies:seconds"
	mGCCPU          = "/cpu/classes/gc/total:cpu-seconds"
	mAllCPU         = "/cpu/classes/total:cpu-seconds"
)

func newRuntimeStat() *runtimeStat {
	r := &runtimeStat{samples: []metrics.Sample{{Name: mSchedLatencies}, {Name: mGCCPU}, {Name: mAllCPU}}}
	r.read(true)
	return r
}

// read takes a sample; first only records the baseline.
func (r *runtimeStat) read(first bool) {
	metrics.Read(r.samples)
	lat := r.samples[0].Value
	if lat.Kind() == metrics.KindFloat64Histogram {
		h := lat.Float64Histogram()
		if !first {
			r.schedP99 = histP99Since(h, r.prevLat)
		}
		r.prevLat = append(r.prevLat[:0], h.Counts...)
	}
	if r.samples[1].Value.Kind() == metrics.KindFloat64 && r.samples[2].Value.Kind() == metrics.KindFloat64 {
		gc, all := r.samples[1].Value.Float64(), r.samples[2].Value.Float64()
		if !first && all > r.prevAll {
			r.gcShare = (gc - r.prevGC) / (all - r.prevAll)
		}
		r.prevGC, r.prevAll = gc, all
	}
}

// histP99Since is the 99th percentile of what h counted since prev (the
// bucket's upper bound; 0 when nothing was counted).
func histP99Since(h *metrics.Float64Histogram, prev []uint64) time.Duration {
	delta := func(i int) uint64 {
		c := h.Counts[i]
		if i < len(prev) && prev[i] <= c {
			c -= prev[i]
		}
		return c
	}
	var total uint64
	for i := range h.Counts {
		total += delta(i)
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(float64(total) * 0.99))
	var seen uint64
	for i := range h.Counts {
		seen += delta(i)
		if seen >= want {
			up := h.Buckets[i+1]
			if math.IsInf(up, 1) {
				up = h.Buckets[i]
			}
			return time.Duration(up * float64(time.Second))
		}
	}
	return 0
}
