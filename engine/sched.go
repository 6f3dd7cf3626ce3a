package engine

import (
	"math"
	"sort"
	"sync"
	"time"
)

// The committer's schedule is derived from the lanes' contracts and SLAs
// and from measured costs; nothing of it is configured (issue 17).
//
//   - Order: sync lanes first, tightest SLA first; the sync lanes at the
//     tightest SLA (the target) take all they have into every batch (their
//     queue bounds keep that small). Then the ack and async lanes by
//     earliest deadline: the lane whose next item's arrival + SLA comes
//     first.
//   - Batch cap: a sync write at the target waits, at worst, for the
//     batch being committed when it arrived, that batch's fsync, its own
//     batch (which holds the capped records of the other lanes too, the
//     looser sync lanes as well) and its fsync: two commits of the cap and
//     two fsyncs. So cap = (target - 2*sync - 2*fixed) / (2*perRecord),
//     within [minBatchCap, BatchRecords]. (The committer saves the first
//     fsync in the common case, deferring a due fsync by one batch for a
//     sync write that waits: Engine.turn. Not when the batch in flight
//     already holds one, so the worst case stands.) When even the floor
//     cannot meet the target (a slow disk), the cap is the floor and
//     Infeasible says so. No rule closes a batch early for a sync write
//     in it: the cap already bounds what that write waits for. The
//     deterministic simulation (simsched_test.go) checks the bound.
//
// The costs are moving averages, so the cap follows the box: a cold cache,
// compaction or a competing process raise the cost per record and shrink
// the batches.
//
// Which fsync: with the journal (pipeline.go) a sync write at the target is
// answered by the journal's fdatasync, not the log's fsync, so "fsync"
// above is the journal's while it is measured: at least journalMinSamples
// writes, the last within journalFresh. The log's fsync is measured all
// the time; a journal measure that went stale (dispatch quiet for a while)
// falls back to it: on one disk the log's fsync, which writes the
// memtable's pages as well, costs at least what the journal's does, so the
// fallback errs on the small, safe side until the journal is measured
// again.

// journalFresh and journalMinSamples: when the journal's measure stands
// for the fsync a sync write waits for.
const (
	journalFresh      = 10 * time.Second
	journalMinSamples = 4
)

// minBatchCap is the smallest derived cap: below it the fixed cost of a
// commit dominates and driver throughput collapses for no gain.
const minBatchCap = 64

// ewma weights: a new sample counts for 1/8 (costs) or 1/16 (deviation).
const (
	ewmaGain    = 1.0 / 8
	ewmaDevGain = 1.0 / 16
)

// sched is the committer's measured costs and the cap derived from them.
// The committer writes it; readers (the dashboard, metrics) take Stats.
type sched struct {
	mu       sync.Mutex
	target   time.Duration // the tightest SLA of a sync lane (ack when none)
	fixed    float64       // ns: commit of a batch of few records
	perRec   float64       // ns per record of a commit
	syncMean float64       // ns: one fsync
	syncDev  float64       // ns: its mean absolute deviation
	batchCap int           // derived: ack and async records in one batch
	infeas   bool          // the target cannot be met even at minBatchCap
	fixedCap int           // tests: a fixed cap instead of the derived one
	maxCap   int           // the hard cap of a batch (Config.BatchRecords)

	// The journal's write and fdatasync (pipeline.go), when a sync write
	// at the target is answered by it (journaled).
	journaled bool
	jMean     float64   // ns
	jDev      float64   // ns: mean absolute deviation
	jSamples  int       // since the journal was set
	jAt       time.Time // the last sample
	fromJ     bool      // derived: the cap used the journal's measure
	syncUsed  float64   // derived: the fsync the cap was derived with (ns)
	now       func() time.Time
}

// SchedStats is what the committer derived, and from what.
type SchedStats struct {
	Target          time.Duration // the tightest SLA it schedules for
	CommitFixed     time.Duration // measured: a commit of a few records
	CommitPerRecord time.Duration // measured: each record more
	Sync            time.Duration // measured: the fsync a sync write at the target waits for, mean + 2 deviations
	SyncFrom        string        // which: "journal" (its fdatasync) or "log" (the log's fsync)
	LogSync         time.Duration // measured: the log's fsync, mean + 2 deviations
	JournalSync     time.Duration // measured: the journal's write and fdatasync, mean + 2 deviations (0: none yet)
	BatchCap        int           // derived: ack and async records per batch
	Infeasible      bool          // the target is not met even at the smallest cap

	// The elastic limit on accepted driver points (elastic.go).
	SchedP99      time.Duration // measured: the Go scheduler's latency p99, last 100 ms
	SchedHigh     time.Duration // derived: 2/5 of the target; above it the limit engages or falls
	DriverLimit   float64       // derived: points/s (0: none)
	DriverShare   float64       // derived: one driver's max-min share, points/s
	DriverRefused uint64        // submissions the limit refused since start
}

func newSched(cfg Config, now func() time.Time) *sched {
	s := &sched{maxCap: cfg.BatchRecords, fixedCap: cfg.FixedBatchCap, now: now}
	for _, want := range []Contract{Sync, Ack} {
		for _, l := range Lanes {
			lc := cfg.Lanes[l]
			if lc.Contract == want && lc.SLA > 0 && (s.target == 0 || lc.SLA < s.target) {
				s.target = lc.SLA
			}
		}
		if s.target > 0 {
			break
		}
	}
	if s.target == 0 {
		s.target = 50 * time.Millisecond
	}
	// Until measured: a fast disk's costs, so that the first batches are
	// neither tiny nor unbounded.
	s.fixed, s.perRec, s.syncMean = 100e3, 2e3, 1e6
	s.derive()
	return s
}

// observeCommit records a commit of recs records that took d.
func (s *sched) observeCommit(d time.Duration, recs int) {
	if recs <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := float64(d)
	if recs < 16 {
		s.fixed += ewmaGain * (ns - s.fixed)
	} else {
		per := max(ns-s.fixed, 0) / float64(recs)
		s.perRec += ewmaGain * (per - s.perRec)
	}
	s.derive()
}

// observeSync records an fsync that took d.
func (s *sched) observeSync(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := float64(d)
	s.syncDev += ewmaDevGain * (math.Abs(ns-s.syncMean) - s.syncDev)
	s.syncMean += ewmaGain * (ns - s.syncMean)
	s.derive()
}

// observeJournal records a journal write and fdatasync that took d.
func (s *sched) observeJournal(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := float64(d)
	if s.jSamples == 0 {
		s.jMean, s.jDev = ns, 0
	} else {
		s.jDev += ewmaDevGain * (math.Abs(ns-s.jMean) - s.jDev)
		s.jMean += ewmaGain * (ns - s.jMean)
	}
	s.jSamples++
	s.jAt = s.now()
	s.derive()
}

// journalNoRoom: the journal found no room, its frames wait for the log's
// fsync; its measure is not fresh until it answers again.
func (s *sched) journalNoRoom() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jAt = time.Time{}
	s.derive()
}

// setJournaled says whether a sync write at the target is answered by the
// journal (the store's env pipelines: pipeline.go). A new store handle
// starts the journal's measure afresh.
func (s *sched) setJournaled(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.journaled, s.jSamples, s.jMean, s.jDev = on, 0, 0, 0
	s.derive()
}

// syncCost is the fsync a sync write at the target waits for, mean and two
// deviations, and whether it is the journal's. Caller holds mu.
func (s *sched) syncCost() (float64, bool) {
	if s.journaled && s.jSamples >= journalMinSamples && s.now().Sub(s.jAt) <= journalFresh {
		return s.jMean + 2*s.jDev, true
	}
	return s.syncMean + 2*s.syncDev, false
}

// derive computes the cap from the costs. Caller holds mu.
func (s *sched) derive() {
	if s.fixedCap > 0 {
		s.batchCap, s.infeas = s.fixedCap, false
		return
	}
	sync, fromJ := s.syncCost()
	s.fromJ, s.syncUsed = fromJ, sync
	budget := float64(s.target) - 2*sync - 2*s.fixed
	n := minBatchCap
	s.infeas = true
	if s.perRec > 0 && budget > 0 {
		if c := budget / (2 * s.perRec); c >= minBatchCap {
			n, s.infeas = int(min(c, float64(s.maxCap))), false
		}
	}
	s.batchCap = min(n, s.maxCap)
}

// cap is the derived cap now.
func (s *sched) cap() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batchCap
}

// Stats is a copy of what the scheduler measured and derived.
func (s *sched) Stats() SchedStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	sync, fromJ := s.syncUsed, s.fromJ
	if s.fixedCap > 0 { // derive did not choose
		sync, fromJ = s.syncCost()
	}
	from := "log"
	if fromJ {
		from = "journal"
	}
	var j time.Duration
	if s.jSamples > 0 {
		j = time.Duration(s.jMean + 2*s.jDev)
	}
	return SchedStats{
		Target:          s.target,
		CommitFixed:     time.Duration(s.fixed),
		CommitPerRecord: time.Duration(s.perRec),
		Sync:            time.Duration(sync),
		SyncFrom:        from,
		LogSync:         time.Duration(s.syncMean + 2*s.syncDev),
		JournalSync:     j,
		BatchCap:        s.batchCap,
		Infeasible:      s.infeas,
	}
}

// Sched is what the committer measured and derived for its batches.
func (e *Engine) Sched() SchedStats {
	st := e.sched.Stats()
	st.DriverLimit, st.DriverShare, st.SchedP99 = e.rate.Limit()
	st.SchedHigh = e.rate.high
	st.DriverRefused = e.rate.Refused.Load()
	return st
}

// scheduleOrder is the lanes' order derived from their contracts and SLAs:
// sync lanes first, then ack, then async; within a contract, tightest SLA
// first (ties: the Lane order).
func scheduleOrder(cfg Config) []Lane {
	rank := map[Contract]int{Sync: 0, Ack: 1, Async: 2}
	out := append([]Lane(nil), Lanes...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := cfg.Lanes[out[i]], cfg.Lanes[out[j]]
		if rank[a.Contract] != rank[b.Contract] {
			return rank[a.Contract] < rank[b.Contract]
		}
		return a.SLA < b.SLA
	})
	return out
}
