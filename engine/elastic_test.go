package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"routehound/wal"
)

// The limit engages only when the lane refused a submission as full and
// the scheduler is late in the same interval: a busy CPU alone (a spike
// the store keeps up with) and a full lane alone (a slow disk) never
// limit the drivers.
func TestDriverRateEngagesOnlyWhenSaturated(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond) // low 1 ms, high 2 ms
	r.step(10*time.Millisecond, 0, true)
	if l, _, p99 := r.Limit(); l != 0 || p99 != 10*time.Millisecond {
		t.Fatalf("a late scheduler with no lane refusal set a limit: %v (p99 %v)", l, p99)
	}
	r.step(500*time.Microsecond, 100, true)
	if l, _, _ := r.Limit(); l != 0 {
		t.Fatalf("a full lane with a punctual scheduler set a limit: %v", l)
	}
	// 20,000 points accepted in the interval (200,000/s): the first limit
	// is three quarters of that rate.
	var s driverShare
	for range 20 {
		if ok, _ := r.take(&s, 1000, time.Time{}); !ok {
			t.Fatal("no limit refused")
		}
	}
	r.step(3*time.Millisecond, 1, true)
	if l, _, _ := r.Limit(); l != 150_000 {
		t.Fatalf("first limit %v, want 150000 (3/4 of 200,000/s)", l)
	}
	if !r.engaged.Load() {
		t.Fatal("limit set but not engaged")
	}
}

// While engaged: past the high mark the limit falls by a quarter to its
// floor; under the low mark it rises by a tenth; in between it holds. A
// second without any refusal disengages it, and so does the ceiling.
func TestDriverRateStep(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true) // nothing accepted before: the floor
	if l, _, _ := r.Limit(); l != rateFloor {
		t.Fatalf("first limit %v, want the floor", l)
	}
	r.step(500*time.Microsecond, 1, true)
	if l, _, _ := r.Limit(); l != rateFloor*1.1 {
		t.Fatalf("a raise: %v", l)
	}
	r.step(1500*time.Microsecond, 1, true)
	if l, _, _ := r.Limit(); l != rateFloor*1.1 {
		t.Fatalf("between the marks it holds: %v", l)
	}
	r.step(3*time.Millisecond, 1, true)
	if l, _, _ := r.Limit(); l != rateFloor {
		t.Fatalf("a cut: %v, want the floor again", l)
	}
	for i := range quietIntervals - 1 {
		r.step(1500*time.Microsecond, 0, true)
		if l, _, _ := r.Limit(); l == 0 {
			t.Fatalf("disengaged after %d quiet intervals, want %d", i+1, quietIntervals)
		}
	}
	r.step(1500*time.Microsecond, 0, true)
	if l, _, _ := r.Limit(); l != 0 || r.engaged.Load() {
		t.Fatalf("still limited after %d quiet intervals: %v", quietIntervals, l)
	}
	// Rising past the ceiling also ends it.
	r.step(3*time.Millisecond, 1, true)
	for range 200 {
		r.step(500*time.Microsecond, 1, true)
	}
	if l, _, _ := r.Limit(); l != 0 {
		t.Fatalf("past the ceiling the limit is off, got %v", l)
	}
}

// Max-min: under a limit, 100 phones posting a point a second and two
// clients posting 100 points every 10 ms. The phones stay within their
// share and are never refused; the share finds the water level within a
// few intervals, where the two heavy clients split what the phones leave
// evenly and all together take the limit.
func TestDriverRateCutsTheHeaviestFirst(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true) // engaged at the floor, 5,000 points/s
	phones := make([]driverShare, 100)
	heavy := make([]driverShare, 2)
	var phoneRefused, phoneAccepted int
	heavyLate := make([]int, len(heavy)) // accepted in the last 5 s
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const run, settle = 10 * time.Second, 5 * time.Second
	for at := time.Duration(0); at < run; at += 10 * time.Millisecond {
		now := t0.Add(at)
		if at%controlInterval == 0 && at > 0 {
			r.step(1500*time.Microsecond, 1, true) // held: between the marks, the lane still refusing
		}
		for i := range phones {
			if at%time.Second == time.Duration(i)*10*time.Millisecond { // spread over the second
				if ok, _ := r.take(&phones[i], 1, now); ok {
					phoneAccepted++
				} else {
					phoneRefused++
					r.refuse()
				}
			}
		}
		for i := range heavy {
			ok, _ := r.take(&heavy[i], 100, now)
			if !ok {
				r.refuse() // as SubmitPoints does
			} else if at >= settle {
				heavyLate[i] += 100
			}
		}
	}
	if phoneRefused > 0 {
		t.Fatalf("%d phone points refused under a flood of two heavy clients (%d accepted)", phoneRefused, phoneAccepted)
	}
	if phoneAccepted != 1000 {
		t.Fatalf("phones accepted %d points, want 1000", phoneAccepted)
	}
	a, b := float64(heavyLate[0]), float64(heavyLate[1])
	if min(a, b)/max(a, b) < 0.9 {
		t.Fatalf("the heavy clients got %v and %v points in the last %v: not an even split", a, b, run-settle)
	}
	// What the phones leave: 4,900 points/s for the two.
	want := (rateFloor - 100) * (run - settle).Seconds()
	if got := a + b; got < 0.85*want || got > 1.1*want {
		t.Fatalf("the heavy clients took %v points in the last %v, want about %v (the limit less the phones)", got, run-settle, want)
	}
	if _, share, _ := r.Limit(); share < 1500 || share > 3500 {
		t.Fatalf("share %v points/s, want near 2,450 (the water level)", share)
	}
}

// A refused submission is told when its driver's bucket will hold it; a
// submission larger than the bucket waits for a full one.
func TestDriverRateRetryAfterIsTheDeficit(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true) // 5,000/s, no driver active before: share = limit
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var s driverShare
	// The driver's own bucket holds 2 s of its share (10,000); take it all.
	if ok, _ := r.take(&s, 10_000, t0); !ok {
		t.Fatal("a full bucket refused")
	}
	if ok, wait := r.take(&s, 500, t0); ok || wait != 100*time.Millisecond {
		t.Fatalf("an empty bucket: ok %v, wait %v; want refused with 100ms (500 at 5,000/s)", ok, wait)
	}
	// Before its body is decoded, the driver is taken to ask for 500 again.
	if over, w := r.over(&s, t0.Add(50*time.Millisecond)); !over || w != 50*time.Millisecond {
		t.Fatalf("over: %v %v, want refused with a wait of 50ms", over, w)
	}
	if ok, _ := r.take(&s, 500, t0.Add(100*time.Millisecond)); !ok {
		t.Fatal("refused after the wait it was given")
	}
	if ok, wait := r.take(&s, 50_000, t0.Add(1100*time.Millisecond)); ok || wait != time.Second {
		t.Fatalf("past the bucket: ok %v, wait %v; want refused until the bucket is full (1s)", ok, wait)
	}
}

// The engine: under a limit a driver's submission waits for its tokens
// up to the room wait, then is refused like a full lane with a
// Retry-After of at least a second; nothing of it is accepted, so its
// resend is fresh. AdmitPoints refuses an over-share driver before its
// body is decoded and lets a driver within its share through.
func TestSubmitPointsUnderTheRateLimit(t *testing.T) {
	db, err := wal.Open(wal.Options{Dir: t.TempDir(), MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.RoomWait = 20 * time.Millisecond
	e, err := build(cfg, db, nil, nil) // no controller: the test steps the limit
	if err != nil {
		t.Fatal(err)
	}
	go e.run()
	defer e.Close(context.Background())
	ctx := context.Background()
	e.rate.step(3*time.Millisecond, 1, true) // engaged at the floor
	if _, err := e.SubmitPoints(ctx, "light", pts(1, 5)); err != nil {
		t.Fatalf("5 points within a share: %v", err)
	}
	// One driver active in the last interval: the share is the limit,
	// a bucket 10,000.
	e.rate.step(1500*time.Microsecond, 1, true)
	if _, err := e.SubmitPoints(ctx, "heavy", pts(1, 10_000)); err != nil {
		t.Fatalf("a new driver's full bucket refused: %v", err)
	}
	_, err = e.SubmitPoints(ctx, "heavy", pts(10_001, 11_000))
	var full *LaneFullError
	if !errors.As(err, &full) || full.Lane != LaneDriver || full.RetryAfter < time.Second {
		t.Fatalf("1,000 points past the share: %v, want a lane_full with a Retry-After of 1s or more", err)
	}
	if err := e.AdmitPoints("heavy"); !errors.As(err, &full) {
		t.Fatalf("AdmitPoints let an over-share driver through: %v", err)
	}
	if err := e.AdmitPoints("light"); err != nil {
		t.Fatalf("AdmitPoints refused a driver within its share: %v", err)
	}
	if _, err := e.SubmitPoints(ctx, "light", pts(6, 10)); err != nil {
		t.Fatalf("the light driver refused: %v", err)
	}
	if n := e.DriverRateRefused(); n != 2 {
		t.Fatalf("refused by the limit: %d, want 2", n)
	}
	// Nothing of the refused submission was accepted: its resend is fresh.
	for range quietIntervals + 1 { // the first one still sees the refusals
		e.rate.step(1500*time.Microsecond, 0, true)
	}
	if l, _, _ := e.DriverRateLimit(); l != 0 {
		t.Fatalf("the limit stayed after %d quiet intervals: %v", quietIntervals, l)
	}
	ack, err := e.SubmitPoints(ctx, "heavy", pts(10_001, 11_000))
	if err != nil || ack.Accepted != 1000 {
		t.Fatalf("the resend: %+v %v", ack, err)
	}
	waitFor(t, "heavy durable to 11,000", func() bool {
		s, _ := e.DriverDurableSeq("heavy")
		return s == 11_000
	})
}

// A spike of many light drivers over the limit — here 2,000 drivers posting
// 5 points a second, twice the floor — is not refused even with the limit
// engaged and held at its floor (the scheduler late all along): no driver
// passes the share of the drivers active in an interval.
func TestDriverRateSparesASpikeOfLightDrivers(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true) // engaged at the floor
	drivers := make([]driverShare, 2000)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var refused, accepted int
	for at := time.Duration(0); at < 10*time.Second; at += 10 * time.Millisecond {
		if at%controlInterval == 0 && at > 0 {
			r.step(3*time.Millisecond, 1, true) // late, and the lane overflowing: cut, to the floor
		}
		slot := int(at%time.Second) / int(10*time.Millisecond) // 100 slots a second
		for i := slot; i < len(drivers); i += 100 {
			if ok, _ := r.take(&drivers[i], 5, t0.Add(at)); ok {
				accepted += 5
			} else {
				refused++
			}
		}
	}
	if l, _, _ := r.Limit(); l != rateFloor {
		t.Fatalf("limit %v, want the floor", l)
	}
	if refused > 0 {
		t.Fatalf("%d of the light drivers' submissions refused (%d points accepted)", refused, accepted)
	}
}

// A driver refused for a large submission is not refused before decoding
// for ever once the share shrank below that submission: the pre-check asks
// for at most a full bucket, as take does.
func TestDriverRatePrecheckAfterTheShareShrank(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true) // 5,000/s, share 5,000, bucket 10,000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var s driverShare
	if ok, _ := r.take(&s, 10_000, t0); !ok {
		t.Fatal("a full bucket refused")
	}
	if ok, _ := r.take(&s, 10_000, t0); ok { // refused: it will ask for 10,000 again
		t.Fatal("an empty bucket accepted")
	}
	r.mu.Lock()
	r.share = 100 // many drivers now: a bucket of 200
	r.mu.Unlock()
	if over, _ := r.over(&s, t0.Add(10*time.Second)); over {
		t.Fatal("refused before decoding with a full bucket: the pre-check asked for more than a bucket holds")
	}
}

// A phone back in coverage uploads what it buffered while the limit is on:
// accepted (its bucket was full), it owes at most one bucket, so its live
// points pass again within two bucket fills, not after the whole upload's
// worth of its share. Points the lane then refuses are given back.
func TestDriverRateDebtIsBounded(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.step(3*time.Millisecond, 1, true)
	r.mu.Lock()
	r.share = 2.5 // a bucket of 5
	r.mu.Unlock()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var s driverShare
	if ok, _ := r.take(&s, 500, t0); !ok {
		t.Fatal("a full bucket refused the upload")
	}
	if s.tokens != -5 {
		t.Fatalf("debt %v, want one bucket (-5)", s.tokens)
	}
	if ok, _ := r.take(&s, 1, t0.Add(4*time.Second+500*time.Millisecond)); !ok {
		t.Fatal("a live point refused 4.5 s after the upload (the debt is one bucket: 2.4 s to pay, 0.4 s more for the point)")
	}
	before := r.accepted.Load()
	var u driverShare
	if ok, _ := r.take(&u, 3, t0); !ok {
		t.Fatal("refused")
	}
	r.refund(&u, 3)
	if r.accepted.Load() != before || u.tokens != 5 {
		t.Fatalf("after the refund: accepted %d (was %d), tokens %v (want 5)", r.accepted.Load(), before, u.tokens)
	}
}

// The limit engages only while another actor is active: with drivers alone
// on a saturated box it stays off, and once the other actor is gone for
// foregroundWindow it goes off.
func TestDriverLimitOnlyWithSomeoneToProtect(t *testing.T) {
	r := newDriverRate(5 * time.Millisecond)
	r.accepted.Store(8000)
	r.step(3*time.Millisecond, 1, false)
	if l, _, _ := r.Limit(); l != 0 {
		t.Fatalf("engaged at %.0f points/s with nobody to protect", l)
	}
	r.accepted.Store(8000)
	r.step(3*time.Millisecond, 1, true)
	if l, _, _ := r.Limit(); l == 0 {
		t.Fatalf("not engaged on a saturated box with another actor active")
	}
	r.step(3*time.Millisecond, 1, false)
	if l, _, _ := r.Limit(); l != 0 || r.engaged.Load() {
		t.Fatalf("still engaged (%.0f points/s) once nobody is left to protect", l)
	}
}

// What counts as another actor: a write to a keyed lane (not the drivers'
// or the events lane), NoteForeground, the wiring's hook; each for
// foregroundWindow.
func TestForegroundActivity(t *testing.T) {
	e, _ := builtEngine(t, nil)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return at }
	if e.foregroundActive() {
		t.Fatal("active before anyone came")
	}
	if err := e.enqueue(e.lanes[LaneDriver], &item{units: 1, done: make(chan result, 1)}); err != nil {
		t.Fatal(err)
	}
	if e.foregroundActive() {
		t.Fatal("a driver's submission counted as another actor")
	}
	it := e.keyedItem(LaneDispatch, Write{Table: "assignments", Key: "r1", Value: []byte(`{}`), IfVersion: AnyVersion})
	if err := e.enqueue(e.lanes[LaneDispatch], it); err != nil {
		t.Fatal(err)
	}
	if !e.foregroundActive() {
		t.Fatal("a dispatch write did not count")
	}
	at = at.Add(foregroundWindow + time.Millisecond)
	if e.foregroundActive() {
		t.Fatal("still active past the window")
	}
	e.NoteForeground()
	if !e.foregroundActive() {
		t.Fatal("NoteForeground did not count")
	}
	at = at.Add(foregroundWindow + time.Millisecond)
	live := true
	e.SetForeground(func() bool { return live })
	if !e.foregroundActive() {
		t.Fatal("the hook's live subscribers did not count")
	}
	live = false
	if e.foregroundActive() {
		t.Fatal("active with the hook saying no and nothing in the window")
	}
}
