package hub

import (
	"math"
	"sync/atomic"
	"time"
)

// Where a change waits between its commit and a subscriber's socket, on
// the server's clock, per delivered change (one change to one subscriber):
// the stages add up to the total. Exported as
// routehound_hub_delay_seconds{stage}.
//
//	feed   durable (published after the log's fsync, or after the journal's
//	       fdatasync for a batch the journal holds whole) → the
//	       fan-out offered it to the subscribers (the feed's wake-up of the
//	       fan-out goroutine, and its work on the records before)
//	queue  offered → taken by the subscriber's stream (the stream
//	       goroutine's wake-up, and the writes it was busy with)
//	write  taken → written to the socket (encoding, the write syscall)
//	total  durable → written to the socket
//
// Changes replayed from the log (a resume's catch-up) are not counted. A
// change the fan-out read from the store (it fell behind the feed's tail
// in memory, which knows when each record became durable) counts in queue
// and write only.
type DelayStage int

// The stages, in the order a change goes through them.
const (
	StageFeed DelayStage = iota
	StageQueue
	StageWrite
	StageTotal
	delayStages
)

// DelayStages are the stages with their names, for export.
var DelayStages = [...]struct {
	Stage DelayStage
	Name  string
}{{StageFeed, "feed"}, {StageQueue, "queue"}, {StageWrite, "write"}, {StageTotal, "total"}}

// Delay buckets: two per doubling (about 41% apart), from 1µs to about 17
// s; the last one also counts everything longer.
const delayBuckets = 50

// DelayBound is the upper bound of bucket b: 2^(b/2) µs.
func DelayBound(b int) time.Duration {
	return time.Duration(math.Exp2(float64(b)/2) * float64(time.Microsecond))
}

func delayBucket(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	b := int(math.Ceil(2 * math.Log2(us)))
	if b >= delayBuckets {
		return delayBuckets - 1
	}
	// Rounding of Log2 near a bound: keep d ≤ DelayBound(b).
	if d > DelayBound(b) && b < delayBuckets-1 {
		b++
	}
	return b
}

// delayHist counts delays in buckets, with a weight: one observation
// stands for the n changes that waited the same (a batch), so that the
// streams record once per write, not once per change.
type delayHist struct {
	counts [delayBuckets]atomic.Uint64
	sum    atomic.Int64 // nanoseconds, weighted
}

func (h *delayHist) observe(d time.Duration, n int) {
	if n <= 0 {
		return
	}
	d = max(d, 0)
	h.counts[delayBucket(d)].Add(uint64(n))
	h.sum.Add(int64(d) * int64(n))
}

// DelaySnapshot is a copy of one stage's histogram: Counts[b] changes
// waited at most DelayBound(b) (and more than DelayBound(b-1)); the last
// bucket also holds the longer ones.
type DelaySnapshot struct {
	Counts [delayBuckets]uint64
	Count  uint64
	Sum    time.Duration
}

// Delay returns a copy of one stage's histogram.
func (s *Stats) Delay(st DelayStage) DelaySnapshot {
	var out DelaySnapshot
	if st < 0 || st >= delayStages {
		return out
	}
	h := &s.delay[st]
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
		out.Count += out.Counts[i]
	}
	out.Sum = time.Duration(h.sum.Load())
	return out
}

// delayRun is a run of changes of one fan-out batch in a stream's batch:
// they share their durable and offered times.
type delayRun struct {
	durable, offered int64 // Hub.clock
	n                int
}

// maxDelayRuns bounds the runs a stream tracks per write; the changes of
// later runs are counted with the last one tracked (their total is
// overstated by at most the spread of those runs: only in a long burst).
const maxDelayRuns = 8

// delayRuns collects the runs of one write, on the stream's stack.
type delayRuns struct {
	r [maxDelayRuns]delayRun
	n int
}

func (d *delayRuns) add(ev *Event) {
	if ev.offered == 0 {
		return // from the log (catch-up): not timed
	}
	if d.n > 0 {
		last := &d.r[d.n-1]
		if last.offered == ev.offered && last.durable == ev.durable || d.n == maxDelayRuns {
			last.n++
			return
		}
	}
	d.r[d.n] = delayRun{durable: ev.durable, offered: ev.offered, n: 1}
	d.n++
}

// record counts the runs' queue, write and total delays: taken and
// written on Hub.clock.
func (h *Hub) recordDelays(d *delayRuns, taken, written int64) {
	for _, r := range d.r[:d.n] {
		h.stats.delay[StageQueue].observe(time.Duration(taken-r.offered), r.n)
		h.stats.delay[StageWrite].observe(time.Duration(written-taken), r.n)
		if r.durable != 0 {
			h.stats.delay[StageTotal].observe(time.Duration(written-r.durable), r.n)
		}
	}
}

// clock is the hub's monotonic clock: nanoseconds since the hub started
// (never 0 once started: 0 marks "not timed").
func (h *Hub) clock() int64 { return int64(time.Since(h.t0)) + 1 }
