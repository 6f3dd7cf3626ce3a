package api_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"routehound/api"
	"routehound/config"
)

// The history endpoints (issue 22) read the replica: every test waits for
// the replica to have applied its writes, by the page's lsn, bounded.

type trailPageJSON struct {
	Driver string  `json:"driver"`
	LSN    uint64  `json:"lsn"`
	Next   *string `json:"next"`
	Points []struct {
		Seq         uint64  `json:"seq"`
		Lat         float64 `json:"lat"`
		Lng         float64 `json:"lng"`
		SpeedKmh    float64 `json:"speed_kmh"`
		TS          *string `json:"ts"`
		LSN         uint64  `json:"lsn"`
		CommittedAt *string `json:"committed_at"`
	} `json:"points"`
}

// waitReplica polls a history page until the replica's LSN reaches lsn.
func (f *fixture) waitReplica(t testing.TB, lsn uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := f.do(t, "GET", "/v1/loading-events?limit=1", tok(api.RoleDashboard), nil)
		wantStatus(t, r, http.StatusOK)
		var p struct {
			LSN uint64 `json:"lsn"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		if p.LSN >= lsn {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not reach lsn %d (at %d)", lsn, p.LSN)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trailPoints posts points of driver whose device times are base+offs[i]
// seconds (seq i+1), lat 52+i/100, and waits for the replica.
func (f *fixture) trailPoints(t testing.TB, driver string, base time.Time, offs []int) {
	t.Helper()
	var parts []string
	for i, o := range offs {
		parts = append(parts, fmt.Sprintf(`{"seq":%d,"lat":%g,"lng":%g,"ts":%q,"speed_kmh":%d,"heading":90}`,
			i+1, 52+float64(i)/100, 13+float64(i)/100, base.Add(time.Duration(o)*time.Second).Format(time.RFC3339), 10+i))
	}
	wantStatus(t, f.do(t, "POST", "/v1/drivers/"+driver+"/locations", tok(api.RoleDriver), "["+strings.Join(parts, ",")+"]"), http.StatusAccepted)
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Counted over every page (a page may be cut by bytes), bounded.
		n, next := 0, ""
		for range 100 {
			var p trailPageJSON
			q := "/v1/drivers/" + driver + "/trail?limit=1000"
			if next != "" {
				q += "&cursor=" + url.QueryEscape(next)
			}
			f.getJSON(t, q, &p)
			n += len(p.Points)
			if p.Next == nil {
				break
			}
			next = *p.Next
		}
		if n == len(offs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica holds %d points of %s, want %d", n, driver, len(offs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) getJSON(t testing.TB, path string, v any) resp {
	t.Helper()
	r := f.do(t, "GET", path, tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, r.body)
	}
	return r
}

var trailBase = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// Seq 2 was taken first on the device: device-time order is not seq order.
var trailOffs = []int{10, 0, 20, 30, 40, 50, 60}

func TestTrailHistory(t *testing.T) {
	f := newFixture(t)
	f.trailPoints(t, "van-7", trailBase, trailOffs)
	var all trailPageJSON
	f.getJSON(t, "/v1/drivers/van-7/trail", &all)
	if all.Driver != "van-7" || all.Next != nil || len(all.Points) != 7 {
		t.Fatalf("trail: %+v", all)
	}
	wantSeqs := []uint64{2, 1, 3, 4, 5, 6, 7}
	for i, p := range all.Points {
		if p.Seq != wantSeqs[i] || p.TS == nil || p.CommittedAt == nil || p.LSN == 0 {
			t.Fatalf("point %d: %+v, want seq %d with ts, lsn and committed_at", i, p, wantSeqs[i])
		}
	}
	// Bounds: since inclusive, until exclusive.
	var b trailPageJSON
	q := url.Values{"since": {trailBase.Add(10 * time.Second).Format(time.RFC3339)}, "until": {trailBase.Add(40 * time.Second).Format(time.RFC3339)}}
	f.getJSON(t, "/v1/drivers/van-7/trail?"+q.Encode(), &b)
	if got := seqsOf(b); got != "1 3 4" {
		t.Fatalf("since/until: seqs %s, want 1 3 4", got)
	}
	// Paged by rows: two a page, every point once, in order.
	if got := walkTrail(t, f, "/v1/drivers/van-7/trail?limit=2"); got != "2 1 3 4 5 6 7" {
		t.Fatalf("paged by 2: %s", got)
	}
	// An unknown driver: an empty trail.
	var none trailPageJSON
	f.getJSON(t, "/v1/drivers/nobody/trail", &none)
	if len(none.Points) != 0 || none.Next != nil {
		t.Fatalf("unknown driver: %+v", none)
	}
}

func seqsOf(p trailPageJSON) string {
	var s []string
	for _, x := range p.Points {
		s = append(s, strconv.FormatUint(x.Seq, 10))
	}
	return strings.Join(s, " ")
}

// walkTrail follows next from path to the end (bounded) and answers the
// seqs seen.
func walkTrail(t *testing.T, f *fixture, path string) string {
	t.Helper()
	var seqs []string
	next := ""
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("more than 50 pages")
		}
		p := path
		if next != "" {
			p += "&cursor=" + url.QueryEscape(next)
		}
		var page trailPageJSON
		f.getJSON(t, p, &page)
		if len(page.Points) == 0 {
			t.Fatalf("an empty page before the end (%s)", p)
		}
		if s := seqsOf(page); s != "" {
			seqs = append(seqs, s)
		}
		if page.Next == nil {
			return strings.Join(seqs, " ")
		}
		next = *page.Next
	}
}

// A page is cut at http.max_page_bytes (at least one point), and next
// continues it.
func TestTrailHistoryByteBound(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.HTTP.MaxPageBytes = 300 }})
	f.trailPoints(t, "van-7", trailBase, trailOffs)
	var first trailPageJSON
	f.getJSON(t, "/v1/drivers/van-7/trail?limit=1000", &first)
	if len(first.Points) != 1 || first.Next == nil {
		t.Fatalf("a 300-byte page: %d points, next %v", len(first.Points), first.Next)
	}
	if got := walkTrail(t, f, "/v1/drivers/van-7/trail?limit=1000"); got != "2 1 3 4 5 6 7" {
		t.Fatalf("paged by bytes: %s", got)
	}
	// Loading events and route versions are cut the same way.
	for i := range 3 {
		body := fmt.Sprintf(`{"terminal":"t1","dock":"D1","shipment":"S%d","kind":"loaded","pallets":1,"ts":"2026-11-23T08:00:00Z"}`, i)
		wantStatus(t, f.do(t, "POST", "/v1/loading-events", tok(api.RoleWarehouse), body, "Idempotency-Key", fmt.Sprintf("bb-%d", i)), http.StatusCreated)
	}
	var last uint64
	for i := range 3 {
		r := f.do(t, "PUT", "/v1/assignments/r-b", tok(api.RoleDispatch), assignJSON("van-7", strconv.Itoa(i)), "Idempotency-Key", fmt.Sprintf("bba-%d", i))
		last = num[uint64](t, object(t, r, "route", "version", "lsn", "committed_at")["lsn"])
	}
	f.waitReplica(t, last)
	for _, c := range []struct{ path, rows string }{
		{"/v1/loading-events?limit=1000", "events"},
		{"/v1/assignments/r-b/history?limit=1000", "versions"},
	} {
		n, next := 0, ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatalf("%s: more than 10 pages", c.path)
			}
			q := c.path
			if next != "" {
				q += "&cursor=" + next
			}
			var page map[string]json.RawMessage
			f.getJSON(t, q, &page)
			var rows []json.RawMessage
			if err := json.Unmarshal(page[c.rows], &rows); err != nil || len(rows) != 1 {
				t.Fatalf("%s: a 300-byte page holds %d %s (%v), want 1", q, len(rows), c.rows, err)
			}
			n++
			if string(page["next"]) == "null" {
				break
			}
			if err := json.Unmarshal(page["next"], &next); err != nil {
				t.Fatal(err)
			}
		}
		if n != 3 {
			t.Fatalf("%s: %d pages of one, want 3", c.path, n)
		}
	}

	// An export is cut the same way; X-Next-Cursor continues it.
	r := f.do(t, "GET", "/v1/drivers/van-7/trail?format=csv", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(rows) != 2 || r.header.Get("X-Next-Cursor") == "" {
		t.Fatalf("csv page: %d rows (%v), X-Next-Cursor %q", len(rows), err, r.header.Get("X-Next-Cursor"))
	}
}

// The exports hold the same points, parsed back.
func TestTrailExports(t *testing.T) {
	f := newFixture(t)
	f.trailPoints(t, "van-7", trailBase, trailOffs)
	var js trailPageJSON
	f.getJSON(t, "/v1/drivers/van-7/trail", &js)

	// GPX 1.1.
	r := f.do(t, "GET", "/v1/drivers/van-7/trail?format=gpx", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/gpx+xml" {
		t.Fatalf("gpx Content-Type %q", ct)
	}
	if cd := r.header.Get("Content-Disposition"); !strings.Contains(cd, `filename="van-7-trail.gpx"`) {
		t.Fatalf("Content-Disposition %q", cd)
	}
	var gpx struct {
		XMLName xml.Name
		Version string `xml:"version,attr"`
		Creator string `xml:"creator,attr"`
		Trk     []struct {
			Name string `xml:"name"`
			Seg  []struct {
				Pts []struct {
					Lat  float64 `xml:"lat,attr"`
					Lon  float64 `xml:"lon,attr"`
					Time string  `xml:"time"`
					Name string  `xml:"name"`
				} `xml:"trkpt"`
			} `xml:"trkseg"`
		} `xml:"trk"`
	}
	if err := xml.Unmarshal(r.body, &gpx); err != nil {
		t.Fatalf("gpx: %v\n%s", err, r.body)
	}
	if gpx.XMLName.Space != "http://www.topografix.com/GPX/1/1" || gpx.XMLName.Local != "gpx" || gpx.Version != "1.1" || gpx.Creator == "" {
		t.Fatalf("gpx root %+v version %q creator %q", gpx.XMLName, gpx.Version, gpx.Creator)
	}
	if len(gpx.Trk) != 1 || gpx.Trk[0].Name != "van-7" || len(gpx.Trk[0].Seg) != 1 || len(gpx.Trk[0].Seg[0].Pts) != len(js.Points) {
		t.Fatalf("gpx: want one track of one segment of %d points: %s", len(js.Points), r.body)
	}
	for i, p := range gpx.Trk[0].Seg[0].Pts {
		want := js.Points[i]
		if p.Lat != want.Lat || p.Lon != want.Lng || p.Time != *want.TS || p.Name != "seq "+strconv.FormatUint(want.Seq, 10) {
			t.Fatalf("gpx point %d: %+v, want %+v", i, p, want)
		}
	}
	// GPX 1.1's wptType sequence: time comes before name, name before desc.
	if i, j, k := bytes.Index(r.body, []byte("<time>")), bytes.Index(r.body, []byte("<name>seq")), bytes.Index(r.body, []byte("<desc>")); !(i < j && j < k) {
		t.Fatalf("trkpt children out of the schema's order: %s", r.body)
	}

	// GeoJSON (RFC 7946): [lng, lat].
	r = f.do(t, "GET", "/v1/drivers/van-7/trail?format=geojson", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/geo+json" {
		t.Fatalf("geojson Content-Type %q", ct)
	}
	var gj struct {
		Type     string `json:"type"`
		Features []struct {
			Type     string `json:"type"`
			Geometry struct {
				Type        string    `json:"type"`
				Coordinates []float64 `json:"coordinates"`
			} `json:"geometry"`
			Properties struct {
				Seq uint64 `json:"seq"`
				TS  string `json:"ts"`
			} `json:"properties"`
		} `json:"features"`
	}
	if err := json.Unmarshal(r.body, &gj); err != nil {
		t.Fatal(err)
	}
	if gj.Type != "FeatureCollection" || len(gj.Features) != len(js.Points) {
		t.Fatalf("geojson: %s", r.body)
	}
	for i, ft := range gj.Features {
		want := js.Points[i]
		if ft.Type != "Feature" || ft.Geometry.Type != "Point" || len(ft.Geometry.Coordinates) != 2 ||
			ft.Geometry.Coordinates[0] != want.Lng || ft.Geometry.Coordinates[1] != want.Lat || ft.Properties.Seq != want.Seq || ft.Properties.TS != *want.TS {
			t.Fatalf("geojson feature %d: %+v, want %+v", i, ft, want)
		}
	}

	// CSV: a header, then the points.
	r = f.do(t, "GET", "/v1/drivers/van-7/trail?format=csv", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(rows) != len(js.Points)+1 {
		t.Fatalf("csv: %v\n%s", err, r.body)
	}
	if strings.Join(rows[0], ",") != "seq,ts,lat,lng,speed_kmh,heading,lsn,committed_at" {
		t.Fatalf("csv header %v", rows[0])
	}
	for i, row := range rows[1:] {
		want := js.Points[i]
		lat, _ := strconv.ParseFloat(row[2], 64)
		lng, _ := strconv.ParseFloat(row[3], 64)
		if row[0] != strconv.FormatUint(want.Seq, 10) || row[1] != *want.TS || lat != want.Lat || lng != want.Lng {
			t.Fatalf("csv row %d: %v, want %+v", i, row, want)
		}
	}
	if r.header.Get("X-Next-Cursor") != "" {
		t.Fatalf("a whole export has X-Next-Cursor %q", r.header.Get("X-Next-Cursor"))
	}
}

type loadingPageJSON struct {
	LSN    uint64  `json:"lsn"`
	Next   *string `json:"next"`
	Events []struct {
		ID, Terminal, Dock, Shipment, Kind string
		LSN                                uint64  `json:"lsn"`
		TS                                 *string `json:"ts"`
		CommittedAt                        *string `json:"committed_at"`
	} `json:"events"`
}

func TestLoadingEventsHistory(t *testing.T) {
	f := newFixture(t)
	wh := tok(api.RoleWarehouse)
	type ev struct{ terminal, dock, shipment, kind string }
	evs := []ev{{"t1", "D1", "S1", "arrived"}, {"t1", "D1", "S1", "loaded"}, {"t2", "D2", "S2", "arrived"},
		{"t2", "D2", "S2", "unloaded"}, {"t1", "D1", "S3", "loaded"}, {"t2", "D1", "S3", "departed"}}
	var last uint64
	for i, e := range evs {
		body := fmt.Sprintf(`{"terminal":%q,"dock":%q,"shipment":%q,"kind":%q,"pallets":%d,"ts":"2026-11-23T08:%02d:00Z"}`, e.terminal, e.dock, e.shipment, e.kind, i, i)
		r := f.do(t, "POST", "/v1/loading-events", wh, body, "Idempotency-Key", fmt.Sprintf("le-%d", i))
		wantStatus(t, r, http.StatusCreated)
		last = num[uint64](t, object(t, r, "id", "lsn")["lsn"])
	}
	f.waitReplica(t, last)
	for _, c := range []struct {
		query string
		want  []int // indexes in evs, in commit order
	}{
		{"", []int{0, 1, 2, 3, 4, 5}},
		{"dock=D1", []int{0, 1, 4, 5}},
		{"shipment=S2", []int{2, 3}},
		{"terminal=t2&kind=arrived", []int{2}},
		{"kind=loaded&dock=D1", []int{1, 4}},
		{"since=2026-11-23T08:02:00Z&until=2026-11-23T08:05:00Z", []int{2, 3, 4}},
		{"dock=none", nil},
	} {
		var p loadingPageJSON
		f.getJSON(t, "/v1/loading-events?"+c.query, &p)
		var got []string
		for _, e := range p.Events {
			got = append(got, e.Shipment+"/"+e.Kind)
			if e.CommittedAt == nil || e.TS == nil {
				t.Fatalf("%s: event without times: %+v", c.query, e)
			}
		}
		var want []string
		for _, i := range c.want {
			want = append(want, evs[i].shipment+"/"+evs[i].kind)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || p.Next != nil {
			t.Fatalf("%q: %v (next %v), want %v", c.query, got, p.Next, want)
		}
	}
	// Paged by one: every event once, in LSN order.
	var lsns []uint64
	next := ""
	for pages := 0; pages < 20; pages++ {
		q := "/v1/loading-events?limit=1"
		if next != "" {
			q += "&cursor=" + next
		}
		var p loadingPageJSON
		f.getJSON(t, q, &p)
		for _, e := range p.Events {
			lsns = append(lsns, e.LSN)
		}
		if p.Next == nil {
			break
		}
		next = *p.Next
	}
	if len(lsns) != len(evs) {
		t.Fatalf("paged: %d events, want %d", len(lsns), len(evs))
	}
	for i := 1; i < len(lsns); i++ {
		if lsns[i] <= lsns[i-1] {
			t.Fatalf("not in LSN order: %v", lsns)
		}
	}
}

func TestAssignmentHistory(t *testing.T) {
	f := newFixture(t)
	dsp := tok(api.RoleDispatch)
	type put struct {
		lsn uint64
		at  string
	}
	var puts []put
	for i := range 4 {
		r := f.do(t, "PUT", "/v1/assignments/r-9", dsp, assignJSON(fmt.Sprintf("van-%d", i), fmt.Sprintf("v%d", i)), "Idempotency-Key", fmt.Sprintf("ah-%d", i))
		m := object(t, r, "route", "version", "lsn", "committed_at")
		puts = append(puts, put{num[uint64](t, m["lsn"]), str(t, m["committed_at"])})
	}
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-other", dsp, assignJSON("x", ""), "Idempotency-Key", "ah-other"), http.StatusCreated)
	f.waitReplica(t, puts[len(puts)-1].lsn)
	type page struct {
		Route    string  `json:"route"`
		Next     *string `json:"next"`
		Versions []struct {
			Version     uint64            `json:"version"`
			LSN         uint64            `json:"lsn"`
			CommittedAt string            `json:"committed_at"`
			Op          string            `json:"op"`
			Driver      string            `json:"driver"`
			Note        string            `json:"note"`
			Stops       []json.RawMessage `json:"stops"`
		} `json:"versions"`
	}
	var all page
	f.getJSON(t, "/v1/assignments/r-9/history", &all)
	if all.Route != "r-9" || len(all.Versions) != 4 || all.Next != nil {
		t.Fatalf("history: %+v", all)
	}
	for i, v := range all.Versions {
		if v.Version != uint64(i+1) || v.LSN != puts[i].lsn || v.Op != "put" || v.Driver != fmt.Sprintf("van-%d", i) || len(v.Stops) != 2 {
			t.Fatalf("version %d: %+v, want lsn %d", i, v, puts[i].lsn)
		}
		at, err := time.Parse(time.RFC3339Nano, v.CommittedAt)
		want, _ := time.Parse(time.RFC3339Nano, puts[i].at)
		if err != nil || !at.Equal(want) {
			t.Fatalf("version %d committed_at %s, the PUT answered %s", i, v.CommittedAt, puts[i].at)
		}
	}
	// One a page.
	var seen []uint64
	next := ""
	for pages := 0; pages < 10; pages++ {
		q := "/v1/assignments/r-9/history?limit=1"
		if next != "" {
			q += "&cursor=" + next
		}
		var p page
		f.getJSON(t, q, &p)
		for _, v := range p.Versions {
			seen = append(seen, v.LSN)
		}
		if p.Next == nil {
			break
		}
		next = *p.Next
	}
	if len(seen) != 4 || seen[3] != puts[3].lsn {
		t.Fatalf("paged: %v", seen)
	}
	var none page
	f.getJSON(t, "/v1/assignments/nope/history", &none)
	if len(none.Versions) != 0 {
		t.Fatalf("unknown route: %+v", none)
	}
}

// Every bad parameter is a 400 with its stable code, and nothing else
// happens.
func TestHistoryBadParameters(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ path, code string }{
		{"/v1/drivers/van-1/trail?since=yesterday", "bad_time"},
		{"/v1/drivers/van-1/trail?until=2026-13-01T00:00:00Z", "bad_time"},
		{"/v1/drivers/van-1/trail?since=1960-01-01T00:00:00Z", "bad_time"},
		{"/v1/drivers/van-1/trail?since=1970-01-01T00:00:00Z", "bad_time"},
		// Past int64 Unix nanoseconds (2262-04-11T23:47:16.854775807Z):
		// UnixNano would wrap and answer an empty page.
		{"/v1/drivers/van-1/trail?until=2600-01-01T00:00:00Z", "bad_time"},
		{"/v1/drivers/van-1/trail?until=2262-04-11T23:47:17Z", "bad_time"},
		{"/v1/drivers/van-1/trail?since=9999-12-31T23:59:59Z", "bad_time"},
		{"/v1/loading-events?until=2600-01-01T00:00:00Z", "bad_time"},
		{"/v1/drivers/van-1/trail?since=2026-11-23T09:00:00Z&until=2026-11-23T08:00:00Z", "bad_range"},
		{"/v1/drivers/van-1/trail?since=2026-11-23T08:00:00Z&until=2026-11-23T08:00:00Z", "bad_range"},
		{"/v1/drivers/van-1/trail?cursor=abc", "bad_cursor"},
		{"/v1/drivers/van-1/trail?cursor=12", "bad_cursor"},
		{"/v1/drivers/van-1/trail?cursor=-1.2", "bad_cursor"},
		{"/v1/drivers/van-1/trail?format=kml", "bad_format"},
		{"/v1/drivers/van-1/trail?limit=0", "bad_parameter"},
		{"/v1/drivers/van-1/trail?limit=1001", "bad_parameter"},
		{"/v1/drivers/van-1/trail?limit=x", "bad_parameter"},
		{"/v1/drivers/van-1/trail?sinse=2026-11-23T08:00:00Z", "bad_parameter"},
		{"/v1/drivers/van-1/trail?format=gpx&format=csv", "bad_parameter"},
		{"/v1/drivers/bad%20name/trail", "bad_name"},
		{"/v1/loading-events?since=x", "bad_time"},
		{"/v1/loading-events?since=2026-11-23T09:00:00Z&until=2026-11-23T08:00:00Z", "bad_range"},
		{"/v1/loading-events?cursor=x", "bad_cursor"},
		{"/v1/loading-events?cursor=-1", "bad_cursor"},
		{"/v1/loading-events?kind=stolen", "bad_parameter"},
		{"/v1/loading-events?dock=", "bad_parameter"},
		{"/v1/loading-events?dock=" + strings.Repeat("d", 257), "bad_parameter"},
		{"/v1/loading-events?limit=0", "bad_parameter"},
		{"/v1/loading-events?format=csv", "bad_parameter"},
		{"/v1/loading-events?dock=a&dock=b", "bad_parameter"},
		{"/v1/assignments/r-1/history?cursor=x", "bad_cursor"},
		{"/v1/assignments/r-1/history?limit=5000", "bad_parameter"},
		{"/v1/assignments/r-1/history?since=2026-11-23T08:00:00Z", "bad_parameter"},
		{"/v1/assignments/bad%20route/history", "bad_name"},
	} {
		t.Run(c.path, func(t *testing.T) {
			wantError(t, f.do(t, "GET", c.path, tok(api.RoleDashboard), nil), http.StatusBadRequest, c.code)
		})
	}
}
