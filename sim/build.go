package sim

import (
	"slices"
	"sync/atomic"
	"time"
)

// build turns the recorders and the verification into the report.
func build(o Options, start, offerEnd time.Time, recs map[string]*recorder, vs *viewerStats, stalled *atomic.Int64, acks *Acks, v *Verification) *Report {
	s := o.Scenario
	dur := offerEnd.Sub(start)
	r := &Report{System: o.Target.Name, Target: o.Target.URL, Scenario: s, RunID: o.RunID, StartedAt: start.UTC(),
		DurationS: dur.Seconds(), Verify: v}
	from, to, hasSpike := s.window()
	if hasSpike {
		r.SpikeWindowS = []float64{from.Seconds(), to.Seconds()}
	}
	warm := warmUp(from)
	bucket := max(time.Second, s.Duration/60)

	present := map[string]bool{
		ActorDriver: s.Drivers > 0, ActorDispatch: s.Dispatchers > 0, ActorWarehouse: s.Terminals > 0,
		ActorTables: s.UserTables > 0, ActorViewer: s.Viewers+s.StormViewers > 0 || s.UserTables > 0,
	}
	for _, name := range []string{ActorDriver, ActorDispatch, ActorWarehouse, ActorTables, ActorViewer} {
		if !present[name] {
			continue
		}
		rec := recs[name]
		samples, reasons := rec.snapshot()
		slices.SortFunc(samples, func(a, b sample) int { return cmpDur(a.at, b.at) })
		all := latencies(samples, 0, 1<<62)
		a := ActorReport{Actor: name, Offered: rec.offered.Load(), Accepted: rec.accepted.Load(), Rejected: reasons,
			Samples: len(all), P50ms: ms(quantile(all, 0.5)), P99ms: ms(quantile(all, 0.99)),
			Checked: v.Checked[name], Lost: v.Lost[name]}
		if len(all) > 0 {
			a.MaxMs = ms(all[len(all)-1])
		}
		sla := o.SLA[name]
		if name == ActorViewer {
			sla = ViewerSLA
		}
		a.SLAms = ms(sla)
		a.WithinSLA = sla == 0 || a.P99ms <= a.SLAms
		for t0 := time.Duration(0); t0 < dur; t0 += bucket {
			l := latencies(samples, t0, t0+bucket)
			a.Series = append(a.Series, Bucket{T: t0.Seconds(), Count: len(l), P50ms: ms(quantile(l, 0.5)), P99ms: ms(quantile(l, 0.99))})
		}
		if hasSpike && name != ActorViewer && s.Spike != name {
			before, during := latencies(samples, warm, from), latencies(samples, from, to)
			iso := &Isolation{P99BeforeMs: ms(quantile(before, 0.99)), P99SpikeMs: ms(quantile(during, 0.99)), Before: len(before), During: len(during)}
			if iso.P99BeforeMs > 0 {
				iso.Ratio = iso.P99SpikeMs / iso.P99BeforeMs
			}
			a.Isolation = iso
		}
		switch name {
		case ActorDriver:
			dp := &DriverPoints{Stalled: stalled.Load(), Durable: v.durableAll, Unconfirmed: v.Unconfirmed,
				DurablePerSec: float64(v.durableIn) / dur.Seconds(),
				DurableP50ms:  ms(quantile(v.durable, 0.5)), DurableP99ms: ms(quantile(v.durable, 0.99))}
			if len(v.durable) > 0 {
				dp.DurableMaxMs = ms(v.durable[len(v.durable)-1])
			}
			if hasSpike {
				var n int
				for _, at := range v.commits {
					if off := at.Sub(start); off >= from && off < to {
						n++
					}
				}
				dp.DurablePerSecSpike = float64(n) / (to - from).Seconds()
			}
			for _, d := range acks.drivers {
				dp.Recorded += d.points
				dp.Accepted += int64(d.accepted)
			}
			a.Driver = dp
			a.WithinSLA = sla == 0 || (dp.DurableP99ms <= a.SLAms && a.P99ms <= a.SLAms)
		case ActorViewer:
			c := vs.connect.snapshotLatencies()
			a.Viewers = &ViewerCounts{Connected: vs.connected.Load(), Events: vs.events.Load(), ConnectP99ms: ms(quantile(c, 0.99))}
		}
		r.Actors = append(r.Actors, a)
	}
	return r
}

func (r *recorder) snapshotLatencies() []time.Duration {
	ss, _ := r.snapshot()
	return latencies(ss, 0, 1<<62)
}

// warmUp is the start of the "before" stretch of an isolation ratio:
// connections and caches settle first.
func warmUp(from time.Duration) time.Duration { return min(from/4, 2*time.Second) }
