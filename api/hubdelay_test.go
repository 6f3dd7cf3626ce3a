package api_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"routehound/api"
)

// /metrics carries the hub's delays by stage (routehound_hub_delay_seconds):
// a change delivered to a subscriber is counted in each stage, with every
// bucket (two per doubling), and the stages' sums add up to the total's.
func TestHubDelayMetrics(t *testing.T) {
	f := newFixture(t)
	s := f.mustSSE(t, "/v1/tables/hd/events", tok(api.RoleDashboard))
	wantSnapshotEnd(t, s.next(t), 0)
	for i := range 3 {
		l := f.putKey(t, "hd", "k", strconv.Itoa(i))
		wantChange(t, s.next(t), "put", "k", strconv.Itoa(i), l)
	}
	r := f.do(t, "GET", "/metrics", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	value := func(series string) (float64, bool) {
		for line := range strings.SplitSeq(string(r.body), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %q", series, line)
				}
				return x, true
			}
		}
		return 0, false
	}
	var sum float64
	for _, stage := range []string{"feed", "queue", "write", "total"} {
		n, ok := value(`routehound_hub_delay_seconds_count{stage="` + stage + `"}`)
		if !ok || n != 3 {
			t.Fatalf("stage %s: count %v (present %v), want 3", stage, n, ok)
		}
		if inf, _ := value(`routehound_hub_delay_seconds_bucket{stage="` + stage + `",le="+Inf"}`); inf != 3 {
			t.Fatalf("stage %s: +Inf bucket %v", stage, inf)
		}
		// Two buckets per doubling: 1.024 ms (2^10 µs) and 2^10.5 µs are both bounds.
		for _, le := range []string{"0.001024\"", "0.001448154"} {
			found := false
			for line := range strings.SplitSeq(string(r.body), "\n") {
				if strings.HasPrefix(line, `routehound_hub_delay_seconds_bucket{stage="`+stage+`",le="`+le) {
					found = true
				}
			}
			if !found {
				t.Fatalf("stage %s: no bucket le=%s…", stage, le)
			}
		}
		s, _ := value(`routehound_hub_delay_seconds_sum{stage="` + stage + `"}`)
		if stage == "total" {
			if s <= 0 || s < sum*0.999999 || s > sum*1.000001 {
				t.Fatalf("total's sum %v; the stages' add up to %v", s, sum)
			}
		} else {
			sum += s
		}
	}
}
