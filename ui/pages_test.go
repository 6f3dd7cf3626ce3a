package ui

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"routehound/engine"
)

func TestChannelsPageShowsTheLedger(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.put("t1", "a", `1`)
	f.put("t1", "b", `2`)
	f.points(1, "d1", "d2", "d3")
	if _, err := f.e.PutAssignment(context.Background(), "r1", []byte(`{"driver":"d1","stops":[]}`), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	// The assignment's answer may come from the journal before the log's
	// fsync that the schedule observes; the cap may move once more then.
	if err := f.e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	capBefore := f.e.Sched().BatchCap
	st, body, _ := f.get(c, "/ui/")
	capAfter := f.e.Sched().BatchCap
	if st != 200 {
		t.Fatalf("channels: %d", st)
	}
	want := map[string]uint64{"driver": 3, "dispatch": 1, "warehouse": 0, "tables": 2}
	for lane, n := range want {
		got := fieldIn(t, body, `data-lane="`+lane+`"`, "accepted")
		if got != strconv.FormatUint(n, 10) {
			t.Errorf("lane %s: accepted %q, want %d", lane, got, n)
		}
	}
	// The SLA of each lane is shown, from config.
	if !strings.Contains(body, "SLA 5.0ms") || !strings.Contains(body, "SLA 50.0ms") {
		t.Error("channel cards do not show the lanes' SLA")
	}
	// Each bound says where it comes from: the keyed lanes' and the events
	// lane's are their queue_bound; the drivers' ceiling while nothing was
	// backlogged.
	if !strings.Contains(body, `title="queue_bound 1024: its writers wait for their answers, so their own number bounds them"`) ||
		!strings.Contains(body, `title="queue_bound 16384, the ceiling, until the lane&#39;s capacity is measured while it stays backlogged"`) ||
		!strings.Contains(body, `title="queue_bound 4096: the fleet-events consumer sizes its writes by it"`) {
		t.Errorf("the lanes' bounds do not say where they come from:\n%s", body)
	}
	// The cost total is the sum of the lines.
	var sum int64
	for _, lane := range engine.Lanes {
		sum += atoi(t, fieldIn(t, body, `data-cost="`+lane.String()+`"`, "records"))
	}
	if total := atoi(t, fieldIn(t, body, `data-cost="total"`, "records")); total != sum || total != 6 {
		t.Errorf("cost total records %d, sum of lines %d, want both 6", total, sum)
	}
	// The schedule the committer derived, and from what.
	if got := fieldIn(t, body, `id="sched"`, "sched-cap"); got != strconv.Itoa(capBefore) && got != strconv.Itoa(capAfter) {
		t.Errorf("schedule: batch cap %q, want the engine's %d (or %d)", got, capBefore, capAfter)
	}
	if got := fieldIn(t, body, `id="sched"`, "sched-target"); got != "5.0ms" {
		t.Errorf("schedule: target %q, want dispatch's SLA 5.0ms", got)
	}
	// The elastic driver limit: off on a quiet box, nothing refused.
	if got := fieldIn(t, body, `id="sched"`, "sched-driver-limit"); got != "off" {
		t.Errorf("schedule: driver limit %q on a quiet box, want off", got)
	}
	if got := fieldIn(t, body, `id="sched"`, "sched-driver-refused"); got != "0" {
		t.Errorf("schedule: refused by the limit %q, want 0", got)
	}
	if !strings.Contains(body, `data-live="/ui/live/channels"`) {
		t.Error("channels page is not live")
	}
}

func TestFleetPage(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.points(1, "d1", "d2")
	f.points(2, "d1")
	st, body, _ := f.get(c, "/ui/fleet")
	if st != 200 {
		t.Fatalf("fleet: %d", st)
	}
	for _, d := range []string{"d1", "d2"} {
		if !strings.Contains(body, `data-driver="`+d+`"`) {
			t.Errorf("no fleet row for %s", d)
		}
	}
	if got := fieldIn(t, body, `data-driver="d1"`, "seq"); got != "2" {
		t.Errorf("d1 durable seq %q, want 2", got)
	}
	if n := strings.Count(body, "<circle"); n != 2 {
		t.Errorf("plot has %d dots, want 2", n)
	}
	st, body, _ = f.get(c, "/ui/fleet?driver=d1")
	if st != 200 || !strings.Contains(body, `class="trail"`) || !strings.Contains(body, "2 points from the log") {
		t.Errorf("trail of d1: %d, no 2-point trail", st)
	}
	if st, _, _ := f.get(c, "/ui/fleet?driver=bad%20name"); st != http.StatusBadRequest {
		t.Errorf("bad driver: %d, want 400", st)
	}
}

func TestRoutesAndWarehousePages(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if _, err := f.e.PutAssignment(ctx, fmt.Sprintf("r%d", i), []byte(fmt.Sprintf(`{"driver":"d%d","stops":[{"id":"s1"},{"id":"s2"}],"note":"n%d"}`, i, i)), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	_, body, _ := f.get(c, "/ui/routes")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(body, fmt.Sprintf(`data-route="r%d"`, i)) {
			t.Errorf("no row for route r%d", i)
		}
	}
	if !strings.Contains(body, `<a href="/ui/fleet/d2">d2</a>`) || !strings.Contains(body, `<td class="num">2</td>`) {
		t.Error("route rows lack driver or stop count")
	}
	for i, ev := range []struct{ dock, ship, kind string }{{"D1", "S1", "arrived"}, {"D1", "S2", "loaded"}, {"D2", "S1", "arrived"}, {"D1", "S1", "arrived"}} {
		v := fmt.Sprintf(`{"terminal":"T","dock":%q,"shipment":%q,"kind":%q,"pallets":%d,"ts":"2026-11-23T10:00:00Z"}`, ev.dock, ev.ship, ev.kind, i)
		if _, err := f.e.AddLoadingEvent(ctx, fmt.Sprintf("01J%03d", i), []byte(v), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, body, _ = f.get(c, "/ui/warehouse")
	if n := strings.Count(body, "data-event="); n != 4 {
		t.Errorf("feed has %d events, want 4", n)
	}
	if !regexp.MustCompile(`data-dock="D1" data-kind="arrived"><td>D1</td><td>arrived</td><td class="num">2</td>`).MatchString(body) {
		t.Error("counts do not show 2 arrived at D1")
	}
	// Newest first.
	if strings.Index(body, `data-event="01J003"`) > strings.Index(body, `data-event="01J000"`) {
		t.Error("feed is not newest first")
	}
	_, body, _ = f.get(c, "/ui/warehouse?dock=D1&shipment=S1")
	if n := strings.Count(body, "data-event="); n != 2 {
		t.Errorf("filtered feed has %d events, want 2 (D1/S1)", n)
	}
	if !strings.Contains(body, "dock=D1") || !strings.Contains(body, "shipment=S1") {
		t.Error("the live URL does not carry the filter")
	}
}

func TestSystemPage(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	r := f.put("t1", "a", `1`)
	sub, err := f.h.Subscribe("t1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, body, _ := f.get(c, "/ui/system")
	if got := fieldIn(t, body, `id="system"`, "lsn"); got != strconv.FormatUint(r.LSN, 10) {
		t.Errorf("system LSN %q, want %d", got, r.LSN)
	}
	if got := fieldIn(t, body, `id="system"`, "subscribers"); got != "1" {
		t.Errorf("subscribers %q, want 1", got)
	}
	for _, want := range []string{"log size", "retention", "store on disk", "Go heap", "uptime", `data-table="t1"`, "/s)"} {
		if !strings.Contains(body, want) {
			t.Errorf("system page lacks %q", want)
		}
	}
}

func TestTablePagesCRUD(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	csrf := f.login(c, dashToken)
	f.put("t1", "a", `{"n":1}`)
	f.points(1, "d1")
	_, body, _ := f.get(c, "/ui/tables")
	for _, want := range []string{`data-table="t1"`, `data-table="positions"`, "built-in, read-only"} {
		if !strings.Contains(body, want) {
			t.Errorf("tables list lacks %q", want)
		}
	}
	if st, _, h := f.get(c, "/ui/tables?open=newtab"); st != http.StatusSeeOther || h.Get("Location") != "/ui/tables/newtab" {
		t.Errorf("open a table: %d %q", st, h.Get("Location"))
	}

	put := func(form url.Values) (int, string) {
		form.Set("csrf", csrf)
		st, body, h := f.post(c, "/ui/tables/t1/put", form)
		if st == http.StatusSeeOther {
			_, body, _ = f.get(c, h.Get("Location"))
		}
		return st, body
	}
	st, body := put(url.Values{"key": {"b"}, "value": {`{"x": [1, 2]}`}})
	if st != http.StatusSeeOther || !strings.Contains(body, `data-key="b"`) || !strings.Contains(body, `{&#34;x&#34;:[1,2]}`) {
		t.Fatalf("create b: %d\n%s", st, body)
	}
	// Update with the version read, then a stale update: a clear conflict.
	if st, _ = put(url.Values{"key": {"b"}, "value": {`2`}, "version": {"1"}}); st != http.StatusSeeOther {
		t.Fatalf("update b at version 1: %d", st)
	}
	st, body = put(url.Values{"key": {"b"}, "value": {`3`}, "version": {"1"}})
	if st != http.StatusConflict || !strings.Contains(body, "Conflict: key &#34;b&#34; changed since you loaded it") {
		t.Fatalf("stale update: %d, want 409 with a conflict message\n%s", st, body)
	}
	if !strings.Contains(body, `<textarea name="value" rows="2" required>3</textarea>`) {
		t.Error("the refused edit is not kept in the form")
	}
	if st, body = put(url.Values{"key": {"c"}, "value": {`{bad`}}); st != http.StatusBadRequest || !strings.Contains(body, "value must be JSON") {
		t.Errorf("bad JSON: %d", st)
	}
	// Edit link pre-fills key, value and version.
	_, body, _ = f.get(c, "/ui/tables/t1?edit=b")
	if !strings.Contains(body, `name="version" value="2"`) {
		t.Error("edit does not pre-fill the version")
	}
	// Delete with the row's control.
	if !strings.Contains(body, `data-action="delete"`) {
		t.Fatal("no delete control")
	}
	st, _, h := f.post(c, "/ui/tables/t1/delete", url.Values{"key": {"b"}, "version": {"2"}, "csrf": {csrf}})
	if st != http.StatusSeeOther {
		t.Fatalf("delete: %d", st)
	}
	_, body, _ = f.get(c, h.Get("Location"))
	if strings.Contains(body, `data-key="b"`) || !strings.Contains(body, `data-key="a"`) {
		t.Error("after delete, b is shown or a is gone")
	}
	// Built-in tables: no controls, and a forged POST is refused.
	_, body, _ = f.get(c, "/ui/tables/positions")
	if !strings.Contains(body, `data-key="d1"`) || strings.Contains(body, `data-action="delete"`) || strings.Contains(body, `id="put-form"`) {
		t.Error("positions: row missing or edit controls shown")
	}
	if st, _, _ := f.post(c, "/ui/tables/positions/put", url.Values{"key": {"d1"}, "value": {"1"}, "csrf": {csrf}}); st != http.StatusForbidden {
		t.Errorf("put on a built-in table: %d, want 403", st)
	}
}

func TestTablePaging(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	for i := 0; i < pageSize+5; i++ {
		f.put("big", fmt.Sprintf("k%04d", i), `0`)
	}
	_, body, _ := f.get(c, "/ui/tables/big")
	if n := strings.Count(body, "data-key="); n != pageSize {
		t.Fatalf("first page has %d rows, want %d", n, pageSize)
	}
	last := fmt.Sprintf("k%04d", pageSize-1)
	if !strings.Contains(body, "after="+last) || !strings.Contains(body, "until="+last) {
		t.Fatal("no next-page link, or the live URL lacks the page's range")
	}
	_, body, _ = f.get(c, "/ui/tables/big?after="+last)
	if n := strings.Count(body, "data-key="); n != 5 {
		t.Errorf("second page has %d rows, want 5", n)
	}
}

// fieldIn finds the element marked by anchor, then the text of the first
// [data-field=field] after it.
func fieldIn(t *testing.T, body, anchor, field string) string {
	t.Helper()
	i := strings.Index(body, anchor)
	if i < 0 {
		t.Fatalf("no %s in page", anchor)
	}
	m := regexp.MustCompile(`data-field="` + regexp.QuoteMeta(field) + `"[^>]*>([^<]*)<`).FindStringSubmatch(body[i:])
	if m == nil {
		t.Fatalf("no data-field=%s after %s", field, anchor)
	}
	return strings.TrimSpace(m[1])
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

// The System page shows the scheduler's latency and the GC's share of CPU
// over the last sample (issue 17: the signals of CPU contention).
func TestSystemPageShowsRuntimeSignals(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	// Some work between two samples, so that both signals have something
	// to measure.
	for i := range 200 {
		f.put("t1", fmt.Sprint("k", i), `1`)
	}
	f.u.sampler.take(time.Now())
	st, body, _ := f.get(c, "/ui/system")
	if st != 200 {
		t.Fatalf("system: %d", st)
	}
	sched, gc := f.u.sampler.runtime()
	if got := fieldIn(t, body, `id="system"`, "sched-p99"); got != fmtDur(sched) {
		t.Errorf("scheduling latency p99 %q, want the sampler's %s", got, fmtDur(sched))
	}
	if got := fieldIn(t, body, `id="system"`, "gc-share"); got != pct(gc) || gc < 0 || gc > 1 {
		t.Errorf("GC share %q (sampler %v), want a fraction shown as %s", got, gc, pct(gc))
	}
}

// histP99Since takes the percentile of what was counted since the last
// sample only.
func TestHistP99Since(t *testing.T) {
	h := &metrics.Float64Histogram{Buckets: []float64{0, 0.001, 0.002, math.Inf(1)}, Counts: []uint64{100, 10, 5}}
	if got := histP99Since(h, []uint64{2, 10, 0}); got != 2*time.Millisecond {
		t.Fatalf("p99 %v, want 2ms (the last bucket's lower bound: its upper is +Inf)", got)
	}
	if got := histP99Since(h, []uint64{100, 10, 5}); got != 0 {
		t.Fatalf("p99 of nothing %v, want 0", got)
	}
	if got := histP99Since(h, []uint64{0, 0, 0}); got != 2*time.Millisecond {
		t.Fatalf("p99 %v over 115 samples with 5 above 2ms, want 2ms", got)
	}
}

// TestTablePageCutAtByteBudget: a table page is cut at MaxPageBytes, not
// only at pageSize rows, and its next link reads the rest; a value over
// the engine's max_value_bytes is refused with 413 and a clear message.
func TestTablePageCutAtByteBudget(t *testing.T) {
	f := newFixture(t, Options{MaxPageBytes: 64 << 10})
	c := f.client()
	csrf := f.login(c, dashToken)
	v := `"` + strings.Repeat("v", 20<<10) + `"`
	for i := range 10 {
		f.put("big", fmt.Sprintf("k%02d", i), v)
	}
	seen, after := 0, ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("the next link never ended")
		}
		_, body, _ := f.get(c, "/ui/tables/big?after="+after)
		n := strings.Count(body, "data-key=")
		if n == 0 || n > 3 {
			t.Fatalf("page after %q has %d rows of 20 KiB, want 1 to 3 within 64 KiB", after, n)
		}
		seen += n
		last := fmt.Sprintf("k%02d", seen-1)
		if seen == 10 {
			if strings.Contains(body, `rel="next"`) {
				t.Fatal("the last page links to a next one")
			}
			break
		}
		if !strings.Contains(body, "after="+last) {
			t.Fatalf("page ending at %s has no next link", last)
		}
		after = last
	}
	st, body, _ := f.post(c, "/ui/tables/big/put", url.Values{"key": {"huge"}, "value": {`"` + strings.Repeat("v", 256<<10) + `"`}, "csrf": {csrf}})
	if st != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too large") {
		t.Fatalf("a 256 KiB value: %d, want 413 with a message", st)
	}
}
