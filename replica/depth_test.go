package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

var depthBase = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// tsPoint is point seq at device time depthBase + off seconds.
func tsPoint(seq uint64, off int) engine.Point {
	return engine.Point{Seq: seq, Value: fmt.Appendf(nil, `{"seq":%d,"lat":%g,"lng":%g,"ts":%q,"speed_kmh":10,"heading":90}`,
		seq, 48+float64(seq)/1e4, 11+float64(seq)/1e4, depthBase.Add(time.Duration(off)*time.Second).Format(time.RFC3339))}
}

// lateOffs is n points' device times (seconds) in arrival order: one every
// 2 s, and every 37th point late by up to ten minutes (at an odd second,
// so that no two points share a time).
func lateOffs(n int) []int {
	rng := rand.New(rand.NewPCG(7, 22))
	offs := make([]int, n)
	for i := range offs {
		offs[i] = 2 * (i + 1000)
		if i%37 == 36 {
			offs[i] -= 2*rng.IntN(300) + 1
		}
	}
	return offs
}

// submit sends the points of offs (seq i+1 at offs[i]) in batches.
func (s *store) submit(t testing.TB, driver string, offs []int, batch int) {
	t.Helper()
	for from := 0; from < len(offs); from += batch {
		var pts []engine.Point
		for i := from; i < min(from+batch, len(offs)); i++ {
			pts = append(pts, tsPoint(uint64(i+1), offs[i]))
		}
		if _, err := s.e.SubmitPoints(context.Background(), driver, pts); err != nil {
			t.Fatal(err)
		}
	}
}

// walkHistory pages through q, limit points a page, and answers the seqs.
func walkHistory(t *testing.T, r *Replica, q fleet.TrailQuery) []uint64 {
	t.Helper()
	var seqs []uint64
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("too many pages")
		}
		page, more, err := r.TrailHistory(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > max(q.Limit, 1) || (more && len(page) == 0) {
			t.Fatalf("a page of %d points (limit %d), more %v", len(page), q.Limit, more)
		}
		for _, p := range page {
			seqs = append(seqs, p.Seq)
		}
		if !more {
			return seqs
		}
		c := fleet.CursorOf(page[len(page)-1])
		q.After = &c
	}
}

// wantOrder is the seqs of offs (seq i+1 at offs[i]) kept (keep), within
// [since, until) seconds, in device-time order.
func wantOrder(offs []int, keep func(seq int) bool, since, until int) []uint64 {
	var idx []int
	for i, o := range offs {
		if keep(i+1) && o >= since && o < until {
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(a, b int) int { return offs[a] - offs[b] })
	out := make([]uint64, len(idx))
	for i, x := range idx {
		out[i] = uint64(x + 1)
	}
	return out
}

// A deep trail with late points pages out whole, in device-time order,
// within bounds, whatever the page size.
func TestTrailHistoryDeepWithLatePoints(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	offs := lateOffs(5000)
	s.submit(t, "d1", offs, 97)
	s.submit(t, "d2", offs[:10], 10)
	waitLSN(t, r, s.durable(t))
	var late int
	if err := r.rdb.QueryRow(`SELECT count(*) FROM trail_late WHERE driver = 'd1'`).Scan(&late); err != nil || late == 0 {
		t.Fatalf("late blocks: %d %v; the test wants some", late, err)
	}
	all := func(int) bool { return true }
	for _, c := range []struct{ limit, since, until int }{
		{1000, 0, 1 << 30}, {100, 0, 1 << 30}, {7, 0, 1 << 30}, {250, 3000, 7000}, {1, 5001, 5040},
	} {
		q := fleet.TrailQuery{Driver: "d1", Limit: c.limit}
		if c.since > 0 {
			q.Since, q.Until = depthBase.Add(time.Duration(c.since)*time.Second), depthBase.Add(time.Duration(c.until)*time.Second)
		}
		got, want := walkHistory(t, r, q), wantOrder(offs, all, c.since, c.until)
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d [%d, %d): %d points, want %d; first difference at %d", c.limit, c.since, c.until,
				len(got), len(want), firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The count bound keeps the newest points by arrival, late ones too, and
// history answers exactly those in device-time order.
func TestTrailDepthByMaxPoints(t *testing.T) {
	s := newStore(t, "")
	const max = 1000
	r := openReplica(t, "", s.e, Options{TrailMaxPoints: max})
	offs := lateOffs(3000)
	s.submit(t, "d1", offs, 50)
	waitLSN(t, r, s.durable(t))
	trail, err := r.Trail(context.Background(), "d1", max)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != max || trail[0].Seq != 3000 || trail[max-1].Seq != 3000-max+1 {
		t.Fatalf("trail: %d points, newest %d, oldest %d", len(trail), trail[0].Seq, trail[len(trail)-1].Seq)
	}
	// History: the newest max points at least, and what the cut of
	// whole blocks keeps besides (a block goes once its newest point is
	// past the bound: under 2*max in all), each once, in device-time order.
	got := walkHistory(t, r, fleet.TrailQuery{Driver: "d1", Limit: 300})
	if len(got) < max || len(got) >= 2*max+lateChunk {
		t.Fatalf("history: %d points, want %d to %d", len(got), max, 2*max+lateChunk)
	}
	seen := map[uint64]bool{}
	for i, seq := range got {
		if seen[seq] || (i > 0 && offs[seq-1] <= offs[got[i-1]-1]) {
			t.Fatalf("point %d (seq %d) repeated or out of device-time order", i, seq)
		}
		seen[seq] = true
	}
	for seq := uint64(3000 - max + 1); seq <= 3000; seq++ {
		if !seen[seq] {
			t.Fatalf("history lacks seq %d, one of the newest %d", seq, max)
		}
	}
}

// The window cut drops the points committed before it, in-order and late
// ones, and keeps the newer ones and the latest position.
func TestTrailDepthByWindow(t *testing.T) {
	old := sweepEvery
	sweepEvery = 0
	defer func() { sweepEvery = old }()
	g := &genSource{drivers: 3, at: time.Now().Add(-2 * time.Hour)}
	r := openReplica(t, "", g, Options{TrailWindow: time.Hour})
	ctx := context.Background()
	g.publish(300)
	waitLSN(t, r, 300)
	if trail, err := r.Trail(ctx, "driver-00001", 0); err != nil || len(trail) != 0 {
		t.Fatalf("points committed two hours ago, window one hour: %d kept (%v)", len(trail), err)
	}
	if ps, err := r.Positions(ctx); err != nil || len(ps) != 3 {
		t.Fatalf("positions: %d (%v)", len(ps), err)
	}
	g.at = time.Now()
	g.publish(600)
	waitLSN(t, r, 600)
	trail, err := r.Trail(ctx, "driver-00001", 0)
	if err != nil || len(trail) != 100 {
		t.Fatalf("points committed now: %d kept, want 100 (%v)", len(trail), err)
	}
	for _, p := range trail {
		if p.LSN <= 300 {
			t.Fatalf("an expired point is kept: %+v", p)
		}
	}
}

// BenchmarkTrailHistoryPage: one page of a 10,000-point trail (with late
// points, sent 50 a request), at its middle: what a history pull costs a
// page at the default depth.
func BenchmarkTrailHistoryPage(b *testing.B) {
	s := newStore(b, "")
	r := openReplica(b, "", s.e)
	offs := lateOffs(10000)
	s.submit(b, "d1", offs, 50)
	waitLSN(b, r, s.durable(b))
	for _, limit := range []int{100, 1000} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			q := fleet.TrailQuery{Driver: "d1", Limit: limit, Since: depthBase.Add(2 * (1000 + 5000) * time.Second)}
			for b.Loop() {
				pts, _, err := r.TrailHistory(context.Background(), q)
				if err != nil || len(pts) != limit {
					b.Fatalf("%d points, %v", len(pts), err)
				}
			}
		})
	}
}
