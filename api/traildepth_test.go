package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"routehound/api"
	"routehound/config"
)

// deepOffs is n points' device times (seconds) in arrival order: one every
// 2 s, and every 41st late by up to ten minutes (at an odd second: no two
// points share a time).
func deepOffs(n int) []int {
	offs := make([]int, n)
	for i := range offs {
		offs[i] = 2 * (i + 1000)
		if i%41 == 40 {
			offs[i] -= 2*((i*7919)%300) + 1
		}
	}
	return offs
}

// postDeep sends seq i+1 at deepOffs[i], batch points a request.
func (f *fixture) postDeep(t *testing.T, driver string, offs []int, batch int) {
	t.Helper()
	for from := 0; from < len(offs); from += batch {
		var parts []string
		for i := from; i < min(from+batch, len(offs)); i++ {
			parts = append(parts, fmt.Sprintf(`{"seq":%d,"lat":%g,"lng":%g,"ts":%q,"speed_kmh":10,"heading":90}`,
				i+1, 52+float64(i)/1e4, 13+float64(i)/1e4, trailBase.Add(time.Duration(offs[i])*time.Second).Format(time.RFC3339)))
		}
		wantStatus(t, f.do(t, "POST", "/v1/drivers/"+driver+"/locations", tok(api.RoleDriver), "["+strings.Join(parts, ",")+"]"), http.StatusAccepted)
	}
}

// walkDeep pages through path to the end and answers the seqs.
func walkDeep(t *testing.T, f *fixture, path string) []uint64 {
	t.Helper()
	var seqs []uint64
	next := ""
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("more than 200 pages")
		}
		p := path
		if next != "" {
			p += "&cursor=" + url.QueryEscape(next)
		}
		var page trailPageJSON
		f.getJSON(t, p, &page)
		for _, x := range page.Points {
			seqs = append(seqs, x.Seq)
		}
		if page.Next == nil {
			return seqs
		}
		next = *page.Next
	}
}

// inDeviceOrder is the seqs of offs from seq `from` on, in device-time order.
func inDeviceOrder(offs []int, from int) []uint64 {
	var out []uint64
	for i := from - 1; i < len(offs); i++ {
		out = append(out, uint64(i+1))
	}
	slices.SortFunc(out, func(a, b uint64) int { return offs[a-1] - offs[b-1] })
	return out
}

// A trail of 5,000 points (far past the 200 the replica kept before it had
// a configurable depth), with late points, pages out whole in device-time
// order.
func TestTrailHistoryDeep(t *testing.T) {
	f := newFixture(t)
	offs := deepOffs(5000)
	f.postDeep(t, "van-9", offs, 250)
	want := inDeviceOrder(offs, 1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := walkDeep(t, f, "/v1/drivers/van-9/trail?limit=1000")
		if slices.Equal(got, want) {
			break
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			t.Fatalf("trail: %d points, want %d in device-time order", len(got), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Smaller pages and a range give the same order.
	if got := walkDeep(t, f, "/v1/drivers/van-9/trail?limit=333"); !slices.Equal(got, want) {
		t.Fatalf("paged by 333: %d points", len(got))
	}
	q := url.Values{"since": {trailBase.Add(4000 * time.Second).Format(time.RFC3339)},
		"until": {trailBase.Add(8000 * time.Second).Format(time.RFC3339)}, "limit": {"97"}}
	var ranged []uint64
	for _, seq := range want {
		if o := offs[seq-1]; o >= 4000 && o < 8000 {
			ranged = append(ranged, seq)
		}
	}
	if got := walkDeep(t, f, "/v1/drivers/van-9/trail?"+q.Encode()); !slices.Equal(got, ranged) {
		t.Fatalf("since/until: %d points, want %d", len(got), len(ranged))
	}
}

// [replica] trail_max_points bounds the trail: the newest points are kept.
func TestTrailHistoryMaxPoints(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.Replica.TrailMaxPoints = 1000 }})
	offs := deepOffs(3000)
	f.postDeep(t, "van-9", offs, 250)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := walkDeep(t, f, "/v1/drivers/van-9/trail?limit=1000")
		seen := map[uint64]bool{}
		for _, s := range got {
			seen[s] = true
		}
		newest := true
		for seq := uint64(2001); seq <= 3000; seq++ {
			newest = newest && seen[seq]
		}
		if newest {
			if len(got) >= 2*1000+64 {
				t.Fatalf("trail: %d points kept, bound 1000 (a block more at most)", len(got))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trail: %d points, the newest 1000 not all there", len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
