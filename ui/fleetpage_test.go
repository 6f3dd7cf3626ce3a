package ui

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The Fleet list is paged (100 drivers a page), in natural order (d-2
// before d-10), with positions to 5 decimals and ages for a person; the
// count and the plot are the whole fleet's (issue 23).
func TestFleetPagedNaturalOrder(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	drivers := make([]string, 150)
	for i := range drivers {
		drivers[i] = fmt.Sprintf("d-%d", i)
	}
	f.points(1, drivers...)
	rowRe := regexp.MustCompile(`data-driver="([^"]+)"`)
	st, body, _ := f.get(c, "/ui/fleet")
	if st != http.StatusOK {
		t.Fatalf("fleet: %d", st)
	}
	rows := rowRe.FindAllStringSubmatch(body[strings.Index(body, `id="fleet-rows"`):], -1)
	if len(rows) != fleetPageSize || rows[0][1] != "d-0" || rows[2][1] != "d-2" || rows[10][1] != "d-10" || rows[99][1] != "d-99" {
		t.Fatalf("page 1: %d rows, first %v", len(rows), rows[:min(len(rows), 12)])
	}
	for _, want := range []string{`<span id="fleet-count">150</span>`, "page 1 of 2", `href="/ui/fleet?page=2"`, "48.10000, 11.50000", "paged=1"} {
		if !strings.Contains(body, want) {
			t.Errorf("page 1 lacks %q", want)
		}
	}
	if n := strings.Count(body, "<circle"); n != 150 {
		t.Errorf("plot has %d dots, want every driver's", n)
	}
	// Live, a paged list updates its own rows and adds none (a new driver
	// would land at the end of a page it may not belong on).
	ls := f.live(c, liveOf(t, body))
	f.points(2, "d-3", "new-driver")
	got := map[string]string{}
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("live rows: %v", got)
		}
		fr, _ := ls.next(t, 5*time.Second)
		for _, u := range fr.Upsert {
			got[rowRe.FindStringSubmatch(u.HTML)[1]] = u.Parent
		}
	}
	if got["d-3"] != "" || got["new-driver"] != "" {
		t.Errorf("a paged list's upserts name a parent (they would add rows): %v", got)
	}
	_, body, _ = f.get(c, "/ui/fleet?page=2")
	rows = rowRe.FindAllStringSubmatch(body[strings.Index(body, `id="fleet-rows"`):], -1)
	// 151 drivers now: the new one is listed in its place on a reload.
	if len(rows) != 51 || rows[0][1] != "d-100" || rows[49][1] != "d-149" || rows[50][1] != "new-driver" || !strings.Contains(body, `href="/ui/fleet?page=1"`) {
		t.Fatalf("page 2: %d rows, first %v", len(rows), rows[:min(len(rows), 3)])
	}
	if st, _, _ := f.get(c, "/ui/fleet?page=x"); st != http.StatusBadRequest {
		t.Errorf("page=x: %d, want 400", st)
	}
	if st, body, _ := f.get(c, "/ui/fleet?page=9"); st != http.StatusOK || !strings.Contains(body, "page 2 of 2") {
		t.Errorf("past the last page: %d, want the last", st)
	}
}

func TestNaturalOrderAndAges(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{
		{"d-2", "d-10", true}, {"d-10", "d-2", false}, {"d-10", "d-100", true}, {"van-7", "van-07", true},
		{"a", "b", true}, {"d-1x", "d-1y", true}, {"d1", "d1", false}, {"d", "d1", true}, {"x9", "x10a", true},
	} {
		if got := natLess(c.a, c.b); got != c.less {
			t.Errorf("natLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
	now := time.Now()
	for _, c := range []struct {
		ago  time.Duration
		want string
	}{
		{42 * time.Second, "42s"}, {12*time.Minute + 5*time.Second, "12m 5s"}, {5*time.Hour + 12*time.Minute, "5h 12m"},
		{19819*time.Minute + 44*time.Second, "13 d"}, {-time.Second, "0s"},
	} {
		if got := fmtAge(now, now.Add(-c.ago)); got != c.want {
			t.Errorf("fmtAge(%v) = %q, want %q", c.ago, got, c.want)
		}
	}
}
