package engine

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// The cap is what the committer can commit within the tightest sync SLA
// once an fsync and two fixed commit costs are paid; it is clamped to the
// floor (and flagged infeasible) and to the hard cap.
func TestSchedDerivesTheCap(t *testing.T) {
	cfg := DefaultConfig()
	s := newSched(cfg)
	if s.target != 5*time.Millisecond {
		t.Fatalf("target %v, want dispatch's 5ms", s.target)
	}
	set := func(fixed, perRec, sync, dev float64) {
		s.mu.Lock()
		s.fixed, s.perRec, s.syncMean, s.syncDev = fixed, perRec, sync, dev
		s.derive()
		s.mu.Unlock()
	}
	// 5ms - (1ms + 2*0.25ms) - 2*0.1ms = 3.3ms at 2µs a record: 1650.
	set(100e3, 2e3, 1e6, 0.25e6)
	if st := s.Stats(); st.BatchCap != 1650 || st.Infeasible {
		t.Fatalf("stats %+v, want a cap of 1650", st)
	}
	set(100e3, 0.1e3, 1e6, 0) // 33,000 records fit: the hard cap
	if c := s.cap(); c != cfg.BatchRecords {
		t.Fatalf("cap %d, want the hard cap %d", c, cfg.BatchRecords)
	}
	set(100e3, 2e3, 6e6, 0) // the fsync alone is past the target
	if st := s.Stats(); st.BatchCap != minBatchCap || !st.Infeasible {
		t.Fatalf("stats %+v, want the floor, infeasible", st)
	}
	cfg.FixedBatchCap = 10
	if c := newSched(cfg).cap(); c != 10 {
		t.Fatalf("fixed cap %d, want 10", c)
	}
}

// Measured costs move the cap: slower commits per record shrink it.
func TestSchedFollowsMeasuredCosts(t *testing.T) {
	s := newSched(DefaultConfig())
	for range 100 {
		s.observeSync(time.Millisecond)
		s.observeCommit(50*time.Microsecond, 4)
		s.observeCommit(50*time.Microsecond+1000*time.Microsecond, 1000) // 1µs a record
	}
	fast := s.Stats()
	for range 100 {
		s.observeCommit(50*time.Microsecond+4000*time.Microsecond, 1000) // 4µs a record
	}
	slow := s.Stats()
	if fast.CommitPerRecord < 900*time.Nanosecond || fast.CommitPerRecord > 1100*time.Nanosecond {
		t.Fatalf("per record %v, want about 1µs", fast.CommitPerRecord)
	}
	if !(slow.BatchCap < fast.BatchCap) || slow.BatchCap < minBatchCap {
		t.Fatalf("cap %d at 1µs a record, %d at 4µs: want smaller, above the floor", fast.BatchCap, slow.BatchCap)
	}
}

// The schedule order comes from the contracts and SLAs, not from the
// order of the lanes.
func TestScheduleOrder(t *testing.T) {
	cfg := DefaultConfig()
	if got := scheduleOrder(cfg); !slices.Equal(got, []Lane{LaneDispatch, LaneTables, LaneWarehouse, LaneDriver}) {
		t.Fatalf("default order %v", got)
	}
	d, tb := cfg.Lanes[LaneDispatch], cfg.Lanes[LaneTables]
	d.SLA, tb.SLA = 30*time.Millisecond, 10*time.Millisecond
	cfg.Lanes[LaneDispatch], cfg.Lanes[LaneTables] = d, tb
	if got := scheduleOrder(cfg); !slices.Equal(got, []Lane{LaneTables, LaneDispatch, LaneWarehouse, LaneDriver}) {
		t.Fatalf("order with a tighter tables SLA %v", got)
	}
}

// Between the ack and async lanes the committer takes the item due first:
// a loading event that arrived after a driver chunk but is due earlier
// (20 ms SLA against 50 ms) commits first.
func TestEarliestDeadlineBetweenAckAndAsync(t *testing.T) {
	e, db := newEngine(t, nil)
	ctx := context.Background()
	b := db.Begin() // hold the committer while the lanes fill
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 5)); err != nil {
		t.Fatal(err)
	}
	done := make(chan WriteResult, 1)
	go func() {
		r, err := e.AddLoadingEvent(ctx, "ev", []byte(`{}`), WriteOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "the loading event queued", func() bool { return e.lanes[LaneWarehouse].waiting() })
	b.Discard()
	if r := <-done; r.LSN != 1 {
		t.Fatalf("loading event at LSN %d, want 1: before the driver points queued ahead of it", r.LSN)
	}
	waitFor(t, "the points durable", func() bool { return e.DurableLSN() == 6 })
}

// A full lane's refusal says how long its queue takes to drain at the rate
// it drained lately; errors.Is still knows it as ErrLaneFull.
func TestLaneFullCarriesTheDrainTime(t *testing.T) {
	l := newLane(LaneWarehouse, LaneConfig{Contract: Ack, QueueBound: 10_000, SLA: 20 * time.Millisecond})
	if err := l.refuse(ErrLaneFull); !errors.Is(err, ErrLaneFull) {
		t.Fatalf("refusal %v is not ErrLaneFull", err)
	} else if lf := err.(*LaneFullError); lf.Lane != LaneWarehouse || lf.RetryAfter != 0 {
		t.Fatalf("before any drain: %+v, want no estimate", lf)
	}
	// 2,000 units released over at least one second: at most 2,000/s.
	l.mu.Lock()
	l.depth = 5000
	l.drainAt = time.Now().Add(-time.Second)
	l.mu.Unlock()
	l.release(2000)
	l.mu.Lock()
	rate := l.drainRate
	l.mu.Unlock()
	if rate <= 1500 || rate > 2000 {
		t.Fatalf("drain rate %.0f/s, want just under 2,000/s", rate)
	}
	// 3,000 units left at that rate: about 1.5 s.
	err := l.refuse(ErrLaneFull)
	var lf *LaneFullError
	if !errors.As(err, &lf) || lf.RetryAfter < 1500*time.Millisecond || lf.RetryAfter > 2*time.Second {
		t.Fatalf("refusal %v, want about 1.5 s to drain", err)
	}
	if r := l.stats.Rejected(); len(r) != 1 || r[0].Reason != "lane_full" || r[0].Count != 2 {
		t.Fatalf("rejections %+v, want 2 lane_full", r)
	}
}
