package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	"routehound/engine"
)

func cardOf(t *testing.T, v channelsView, lane string) channelCard {
	t.Helper()
	for _, c := range v.Cards {
		if c.Lane == lane {
			return c
		}
	}
	t.Fatalf("no card for %s", lane)
	return channelCard{}
}

// On an idle box the Dispatch card is not red: two writes (one a new
// store's first fsync, over twice the SLA) are too few to grade, and the
// card says idle; its since-start p99 is shown apart, never graded, never
// on one line with a window's p50 (issue 23).
func TestCardIsIdleOnFewWrites(t *testing.T) {
	f := newFixture(t, Options{})
	st := f.e.Lane(engine.LaneDispatch)
	sla := f.e.LaneConfig(engine.LaneDispatch).SLA
	// The sampler's first tick (at its start) is the window's base for
	// the next gradeWindow: the writes after it are the window's.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := f.u.sampler.base(engine.LaneDispatch); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sampler took no first tick")
		}
	}
	st.Latency.Observe(2*sla + time.Millisecond)
	st.Latency.Observe(sla / 5)
	c := cardOf(t, f.u.channels(), "dispatch")
	if c.Status != "idle" || c.Count != 2 || c.AllP99 <= 2*sla {
		t.Fatalf("two writes: status %s, count %d, since-start p99 %v", c.Status, c.Count, c.AllP99)
	}
	got := html(context.Background(), channelCardArticle(c))
	for _, want := range []string{`class="card lane idle"`, `class="badge idle"`, "idle: graded from 20 writes", "since start p50/p99", `data-field="window">2 writes`} {
		if !strings.Contains(got, want) {
			t.Errorf("idle card lacks %q:\n%s", want, got)
		}
	}
	// Enough writes in the window: graded on them, slow ones included.
	for range gradeMinSamples {
		st.Latency.Observe(sla / 5)
	}
	if c := cardOf(t, f.u.channels(), "dispatch"); c.Status != "bad" || c.Count != gradeMinSamples+2 {
		t.Fatalf("%d writes, two of them slow: status %s count %d p99 %v", gradeMinSamples+2, c.Status, c.Count, c.LatP99)
	}
	// A full queue is graded whatever the writes.
	if g := grade(0, 0, sla, 95, 100); g != "bad" {
		t.Errorf("no writes, queue at 95%%: %s", g)
	}
	if g := grade(gradeMinSamples-1, time.Hour, sla, 0, 100); g != "idle" {
		t.Errorf("too few writes: %s", g)
	}
}

// The grading window slides: writes older than gradeWindow leave it, so a
// slow start does not stay red once there is fast traffic.
func TestGradeWindowSlides(t *testing.T) {
	f := newFixture(t, Options{})
	s := newSampler(f.e, 300) // ticked by hand, apart from the UI's own
	st := f.e.Lane(engine.LaneDispatch)
	sla := f.e.LaneConfig(engine.LaneDispatch).SLA
	t0 := time.Now()
	s.take(t0)
	for range 5 {
		st.Latency.Observe(3 * sla)
	}
	for i := 1; i <= 40; i++ {
		if i == 35 {
			for range gradeMinSamples {
				st.Latency.Observe(sla / 5)
			}
		}
		s.take(t0.Add(time.Duration(i) * time.Second))
	}
	b, ok := s.base(engine.LaneDispatch)
	if !ok || !b.at.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("base at %v, want t0+10s", b.at.Sub(t0))
	}
	win := st.Latency.Snapshot().Sub(b.latency)
	if win.Count != gradeMinSamples || grade(win.Count, win.Quantile(0.99), sla, 0, 100) != "ok" {
		t.Fatalf("window of the last 30 s: %d writes, p99 %v", win.Count, win.Quantile(0.99))
	}
	if n := len(s.hist[engine.LaneDispatch]); n > int(gradeWindow/time.Second)+1 {
		t.Fatalf("%d ticks kept", n)
	}
}
