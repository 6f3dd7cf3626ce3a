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
	p99               time.Duration // end-to-end latency p99 of the second
}

// sampler keeps the last n per-second samples of each lane (a ring per
// lane, bounded), for the Channels sparklines and rates.
type sampler struct {
	e *engine.Engine
	n int

	mu    sync.Mutex
	rings map[engine.Lane][]sample // oldest first, len <= n
	prev  map[engine.Lane]laneCounters
	at    time.Time

	fsyncs      uint64
	fsyncPerSec float64 // store fsyncs per second, last sample

	rt *runtimeStat // scheduling latency and GC share, last sample
}

type laneCounters struct {
	arrivals, accepted uint64
	latency            engine.HistogramSnapshot
}

func newSampler(e *engine.Engine, n int) *sampler {
	return &sampler{e: e, n: n, rings: map[engine.Lane][]sample{}, prev: map[engine.Lane]laneCounters{}, rt: newRuntimeStat()}
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
		cur := laneCounters{arrivals: st.Arrivals.Load(), accepted: st.Accepted.Load(), latency: st.Latency.Snapshot()}
		p := s.prev[name]
		s.prev[name] = cur
		if first || dt <= 0 {
			continue
		}
		smp := sample{
			offered:  float64(cur.arrivals-p.arrivals) / dt,
			accepted: float64(cur.accepted-p.accepted) / dt,
			depth:    st.Depth.Load(),
			p99:      cur.latency.Sub(p.latency).Quantile(0.99),
		}
		r := append(s.rings[name], smp)
		if len(r) > s.n {
			r = append(r[:0], r[len(r)-s.n:]...)
		}
		s.rings[name] = r
	}
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
