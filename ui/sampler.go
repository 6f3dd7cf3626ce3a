package ui

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"routehound/engine"
)

// sample is one second of one lane.
type sample struct {
	offered, accepted float64 // per second
	depth             int64
}

// gradeWindow is how far back a Channels card grades its lane: the p50/p99
// shown and graded are of the writes of about the last gradeWindow, and
// only when there were at least gradeMinSamples of them; fewer is "idle"
// (a new store's first fsync on an idle box is no reason for a red card).
const (
	gradeWindow     = 30 * time.Second
	gradeMinSamples = 20
)

// cumul is one lane's cumulative histograms at a sampler tick: the
// difference of two is the writes between them.
type cumul struct {
	at            time.Time
	latency, wait engine.HistogramSnapshot
}

// sampler keeps the last n per-second samples of each lane (a ring per
// lane, bounded), for the Channels sparklines and rates, and the
// cumulative histograms of about the last gradeWindow, for the cards'
// grades.
type sampler struct {
	e *engine.Engine
	n int

	mu    sync.Mutex
	rings map[engine.Lane][]sample // oldest first, len <= n
	// hist: the cumulative histograms of each lane at the ticks of the last
	// gradeWindow (and the one before it), oldest first.
	hist map[engine.Lane][]cumul
	prev map[engine.Lane]laneCounters
	at   time.Time

	fsyncs      uint64
	fsyncPerSec float64 // store fsyncs per second, last sample

	rt *runtimeStat // scheduling latency and GC share, last sample
}

type laneCounters struct {
	arrivals, accepted uint64
}

func newSampler(e *engine.Engine, n int) *sampler {
	return &sampler{e: e, n: n, rings: map[engine.Lane][]sample{}, hist: map[engine.Lane][]cumul{}, prev: map[engine.Lane]laneCounters{}, rt: newRuntimeStat()}
}

func (s *sampler) run(done <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	s.take(time.Now())
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			s.take(now)
		}
	}
}

// take records one sample of every lane.
func (s *sampler) take(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dt := now.Sub(s.at).Seconds()
	first := s.at.IsZero()
	s.at = now
	f := s.e.Totals().Fsyncs.Load()
	if !first && dt > 0 {
		s.fsyncPerSec = float64(f-s.fsyncs) / dt
	}
	s.fsyncs = f
	s.rt.read(false)
	for _, name := range engine.Lanes {
		st := s.e.Lane(name)
		cur := laneCounters{arrivals: st.Arrivals.Load(), accepted: st.Accepted.Load()}
		p := s.prev[name]
		s.prev[name] = cur
		h := append(s.hist[name], cumul{at: now, latency: st.Latency.Snapshot(), wait: st.QueueWait.Snapshot()})
		// Keep the newest tick at or before now-gradeWindow as the base,
		// and every tick after it.
		for len(h) > 1 && !h[1].at.After(now.Add(-gradeWindow)) {
			h = h[1:]
		}
		s.hist[name] = h // append reallocates once the trimmed front uses up the capacity: bounded
		if first || dt <= 0 {
			continue
		}
		smp := sample{
			offered:  float64(cur.arrivals-p.arrivals) / dt,
			accepted: float64(cur.accepted-p.accepted) / dt,
			depth:    st.Depth.Load(),
		}
		r := append(s.rings[name], smp)
		if len(r) > s.n {
			r = append(r[:0], r[len(r)-s.n:]...)
		}
		s.rings[name] = r
	}
}

// base is a lane's cumulative histograms about gradeWindow ago (the oldest
// kept; sooner after the start); ok is false before the first tick.
func (s *sampler) base(lane engine.Lane) (cumul, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hist[lane]
	if len(h) == 0 {
		return cumul{}, false
	}
	return h[0], true
}

// series returns a copy of a lane's samples, oldest first.
func (s *sampler) series(lane engine.Lane) []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.rings[lane]...)
}

// last is the newest sample of a lane (zero when none yet).
func (s *sampler) last(lane engine.Lane) sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rings[lane]
	if len(r) == 0 {
		return sample{}
	}
	return r[len(r)-1]
}

// sparkPoints scales values into a w×h box as an SVG polyline's points,
// newest at the right; n is the number of slots (the ring's size).
func sparkPoints(values []float64, n int, w, h float64) string {
	if len(values) == 0 {
		return ""
	}
	maxV := 0.0
	for _, v := range values {
		maxV = max(maxV, v)
	}
	if maxV == 0 {
		maxV = 1
	}
	step := w / float64(max(n-1, 1))
	x0 := w - step*float64(len(values)-1)
	var b strings.Builder
	for i, v := range values {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x0+step*float64(i), h-1-(h-2)*v/maxV)
	}
	return b.String()
}

// runtime is the last sample's p99 scheduling latency and GC share of CPU.
func (s *sampler) runtime() (time.Duration, float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rt.schedP99, s.rt.gcShare
}

// fsyncRate is the store's fsyncs per second over the last sample.
func (s *sampler) fsyncRate() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fsyncPerSec
}
