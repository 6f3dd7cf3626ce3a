package ui

import (
	"fmt"
	"net/http"
	"time"

	"routehound/engine"
)

// channelCard is one actor channel (lane) on the Channels page.
type channelCard struct {
	Lane, Contract    string
	Offered, Accepted float64 // per second, last sample
	AcceptedTotal     uint64
	Arrivals          uint64
	Duplicates        uint64
	Depth, Bound      int64
	BoundWhy          string // where the bound comes from (engine.LaneBoundWhy)
	// The last Window's writes (about gradeWindow): their count, queue
	// wait and end-to-end latency; the card is graded on these.
	Window             time.Duration
	Count              uint64
	QueueP50, QueueP99 time.Duration
	LatP50, LatP99     time.Duration
	// Since the start, for reference (never graded, never mixed with the
	// window's figures on one line).
	AllP50, AllP99 time.Duration
	AllCount       uint64
	SLA            time.Duration
	Status         string // ok | warn | bad | idle
	Rejected       []engine.Reason
	Share          float64 // share of the committer's time, 0..1
	SparkAccepted  string  // SVG polyline points
	SparkDepth     string
	// Consumer is the fleet-events consumer, on the events lane's card.
	Consumer *consumerLine
}

// costLine is one actor's line of the cost ledger; the total line is the
// sum of the lines.
type costLine struct {
	Lane      string
	Records   uint64
	Bytes     uint64
	Fsyncs    uint64 // fsyncs that covered a write of the lane (shared)
	Committer time.Duration
	Share     float64
	QueueTime time.Duration // sum of queue waits
}

type channelsView struct {
	Cards       []channelCard
	Cost        []costLine
	Total       costLine
	StoreFsyncs uint64
	Busy        time.Duration
	DurableLSN  uint64
	Sched       engine.SchedStats
}

const sparkW, sparkH = 240.0, 40.0

// grade is a card's status: its recent window's p99 against the SLA when
// the window holds at least gradeMinSamples writes, and the queue against
// its bound; a lane with too few recent writes and a queue below half its
// bound is "idle" (two writes, one of them a new store's first fsync, must
// not paint a quiet lane red).
func grade(count uint64, p99, sla time.Duration, depth, bound int64) string {
	if count >= gradeMinSamples {
		return status(p99, sla, depth, bound)
	}
	if q := status(0, sla, depth, bound); q != "ok" {
		return q
	}
	return "idle"
}

// status grades a p99 against the SLA, and the queue against its bound.
func status(p99, sla time.Duration, depth, bound int64) string {
	s := "ok"
	if sla > 0 && p99 > 2*sla {
		return "bad"
	}
	if sla > 0 && p99 > sla {
		s = "warn"
	}
	if bound > 0 && depth*10 >= bound*9 {
		return "bad"
	}
	if bound > 0 && depth*2 >= bound {
		s = "warn"
	}
	return s
}

func (u *UI) channels() channelsView {
	var v channelsView
	var sum int64
	for _, name := range engine.Lanes {
		sum += u.e.Lane(name).CommitterNanos.Load()
	}
	for _, name := range engine.Lanes {
		st := u.e.Lane(name)
		cfg := u.e.LaneConfig(name)
		qw, lat := st.QueueWait.Snapshot(), st.Latency.Snapshot()
		last := u.sampler.last(name)
		series := u.sampler.series(name)
		acc := make([]float64, len(series))
		dep := make([]float64, len(series))
		for i, s := range series {
			acc[i], dep[i] = s.accepted, float64(s.depth)
		}
		share := 0.0
		cn := st.CommitterNanos.Load()
		if sum > 0 {
			share = float64(cn) / float64(sum)
		}
		// Graded on the last gradeWindow's writes: the cumulative
		// histograms now minus those of the sampler's tick about
		// gradeWindow ago (since the start, before the first tick).
		win, wait, span := lat, qw, u.e.Uptime()
		if b, ok := u.sampler.base(name); ok {
			win, wait, span = lat.Sub(b.latency), qw.Sub(b.wait), time.Since(b.at)
		}
		c := channelCard{
			Lane: name.String(), Contract: string(cfg.Contract),
			Offered: last.offered, Accepted: last.accepted,
			AcceptedTotal: st.Accepted.Load(), Arrivals: st.Arrivals.Load(), Duplicates: st.Duplicates.Load(),
			Depth: st.Depth.Load(), Bound: int64(u.e.LaneBound(name)),
			Window: span.Round(time.Second), Count: win.Count,
			QueueP50: wait.Quantile(0.5), QueueP99: wait.Quantile(0.99),
			LatP50: win.Quantile(0.5), LatP99: win.Quantile(0.99),
			AllP50: lat.Quantile(0.5), AllP99: lat.Quantile(0.99), AllCount: lat.Count,
			SLA:      cfg.SLA,
			Rejected: st.Rejected(), Share: share,
			SparkAccepted: sparkPoints(acc, u.sampler.n, sparkW, sparkH),
			SparkDepth:    sparkPoints(dep, u.sampler.n, sparkW, sparkH),
		}
		c.BoundWhy = boundWhy(u.e, name, cfg)
		c.Status = grade(c.Count, c.LatP99, cfg.SLA, c.Depth, c.Bound)
		if name == engine.LaneEvents {
			c.Consumer = u.consumerLine()
		}
		v.Cards = append(v.Cards, c)
		line := costLine{Lane: name.String(), Records: st.Records.Load(), Bytes: st.BytesWritten.Load(), Fsyncs: st.Fsyncs.Load(),
			Committer: time.Duration(cn), Share: share, QueueTime: qw.Sum}
		v.Cost = append(v.Cost, line)
		v.Total.Records += line.Records
		v.Total.Bytes += line.Bytes
		v.Total.Fsyncs += line.Fsyncs
		v.Total.Committer += line.Committer
		v.Total.Share += line.Share
		v.Total.QueueTime += line.QueueTime
	}
	v.Total.Lane = "total"
	t := u.e.Totals()
	v.StoreFsyncs = t.Fsyncs.Load()
	v.Busy = time.Duration(t.BusyNanos.Load())
	v.DurableLSN = u.e.DurableLSN()
	v.Sched = u.e.Sched()
	return v
}

func (u *UI) channelsPage(w http.ResponseWriter, r *http.Request, s *session) {
	render(w, r, http.StatusOK, channelsPage(u.chrome(s, "channels", "/ui/live/channels"), u.channels()))
}

// boundWhy says where a lane's bound comes from: the driver lane's derived
// from the capacity measured while it stayed backlogged and its SLA
// (Little's law), or its queue_bound ceiling; the other lanes' queue_bound.
func boundWhy(e *engine.Engine, name engine.Lane, cfg engine.LaneConfig) string {
	capacity, derived := e.LaneBoundWhy(name)
	switch {
	case derived:
		return fmt.Sprintf("derived: the capacity measured while the lane stayed backlogged (%s) × its SLA (%s), at least a floor; queue_bound %d is the ceiling", fmtRate(capacity), fmtDur(cfg.SLA), cfg.QueueBound)
	case name == engine.LaneEvents:
		return fmt.Sprintf("queue_bound %d: the fleet-events consumer sizes its writes by it", cfg.QueueBound)
	case name != engine.LaneDriver:
		return fmt.Sprintf("queue_bound %d: its writers wait for their answers, so their own number bounds them", cfg.QueueBound)
	case capacity > 0:
		return fmt.Sprintf("queue_bound %d, the ceiling: below the capacity measured (%s) × its SLA (%s)", cfg.QueueBound, fmtRate(capacity), fmtDur(cfg.SLA))
	}
	return fmt.Sprintf("queue_bound %d, the ceiling, until the lane's capacity is measured while it stays backlogged", cfg.QueueBound)
}
