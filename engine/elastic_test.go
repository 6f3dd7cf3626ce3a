package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"routehound/wal"
)

// The controller's rule: past the high mark (2/5 of the target) the
// limit falls by a quarter to its floor; under the low mark (1/5) it rises
// by a tenth until it is off; in between it holds.
func TestDriverRateStep(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond) // low 1 ms, high 2 ms
	if l, _ := r.Limit(); l != 0 {
		t.Fatalf("limit %v at start, want none", l)
	}
	r.step(500 * time.Microsecond)
	if l, _ := r.Limit(); l != 0 {
		t.Fatalf("a quiet scheduler set a limit: %v", l)
	}
	r.step(3 * time.Millisecond)
	if l, p99 := r.Limit(); l != rateFirst*0.75 || p99 != 3*time.Millisecond {
		t.Fatalf("first cut: %v (p99 %v), want %v", l, p99, rateFirst*0.75)
	}
	r.step(1500 * time.Microsecond) // between the marks: holds
	if l, _ := r.Limit(); l != rateFirst*0.75 {
		t.Fatalf("held: %v", l)
	}
	for range 50 {
		r.step(10 * time.Millisecond)
	}
	if l, _ := r.Limit(); l != rateFloor {
		t.Fatalf("after many cuts: %v, want the floor %v", l, float64(rateFloor))
	}
	r.step(500 * time.Microsecond)
	if l, _ := r.Limit(); l != rateFloor*1.1 {
		t.Fatalf("a raise: %v", l)
	}
	for range 200 {
		r.step(500 * time.Microsecond)
	}
	if l, _ := r.Limit(); l != 0 {
		t.Fatalf("past the ceiling the limit is off, got %v", l)
	}
}

// The bucket: no limit takes all; under a limit it holds a tenth of a
// second of it, and a request waits for what it lacks.
func TestDriverRateTake(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, _ := r.take(1_000_000, t0); !ok {
		t.Fatal("no limit refused")
	}
	r.limit = 1000 // points/s: a burst of 100
	if ok, wait := r.take(50, t0); ok || wait != 50*time.Millisecond {
		t.Fatalf("an empty bucket: ok %v, wait %v; want a wait of 50ms", ok, wait)
	}
	if ok, _ := r.take(50, t0.Add(50*time.Millisecond)); !ok {
		t.Fatal("50 points after 50 ms at 1000/s refused")
	}
	if ok, wait := r.take(500, t0.Add(60*time.Millisecond)); ok || wait != 90*time.Millisecond {
		// more than the burst waits for a full bucket: 100 tokens, 10 there
		t.Fatalf("a request past the burst: ok %v, wait %v; want 90ms", ok, wait)
	}
	if ok, _ := r.take(500, t0.Add(150*time.Millisecond)); !ok {
		t.Fatal("a full bucket refused a large request")
	}
	if ok, _ := r.take(1, t0.Add(200*time.Millisecond)); ok {
		t.Fatal("the large request's debt was not paid off first")
	}
}

// Under a limit a driver's submission waits for its tokens up to the room
// wait, then is refused like a full lane with the bucket's deficit as its
// Retry-After (at least a second).
func TestSubmitPointsUnderTheRateLimit(t *testing.T) {
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.RoomWait = 20 * time.Millisecond
	e, err := build(cfg, db, nil, nil) // no controller: the limit is set here
	if err != nil {
		t.Fatal(err)
	}
	e.rate.limit = 100_000 // a burst of 10,000
	ctx := context.Background()
	if _, err := e.SubmitPoints(ctx, "d1", pts(1, 100)); err != nil {
		t.Fatalf("100 points under 100,000/s (a 1 ms wait): %v", err)
	}
	e.rate.limit = rateFloor // a burst of 500: 1,000 points wait 100 ms, past the room wait
	_, err = e.SubmitPoints(ctx, "d2", pts(1, 1000))
	var full *LaneFullError
	if !errors.As(err, &full) || full.Lane != LaneDriver || full.RetryAfter < time.Second {
		t.Fatalf("1,000 points at the floor: %v, want a lane_full with a Retry-After of 1s or more", err)
	}
	if s, _ := e.DriverDurableSeq("d2"); s != 0 {
		t.Fatalf("a refused driver has durable_seq %d", s)
	}
	// Its resend is fresh, not a duplicate.
	e.rate.limit = 0
	ack, err := e.SubmitPoints(ctx, "d2", pts(1, 1000))
	if err != nil || ack.Accepted != 1000 {
		t.Fatalf("the resend: %+v %v", ack, err)
	}
}
