package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
	"routehound/uplink"
)

// change is one log record as the central view must hold it: the depot's
// table, key, op and value, in the depot's LSN order.
type change struct {
	Table, Key, Op, Value string
}

func (c change) String() string { return c.Op + " " + c.Table + "/" + c.Key + " " + c.Value }

// logChanges reads a box's whole log: every record, as a change, in LSN
// order.
func logChanges(t *testing.T, e *engine.Engine) []change {
	t.Helper()
	var out []change
	if err := e.ReadLog(0, 0, func(r engine.Record) error {
		out = append(out, change{Table: r.Table, Key: r.Key, Op: r.Op.String(), Value: string(r.Value)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// depotChanges is the part of a central view's log that is one depot's:
// its records (keys <depot>/…, the prefix cut), in the view's LSN order.
func depotChanges(all []change, depot string) []change {
	var out []change
	for _, c := range all {
		if k, ok := strings.CutPrefix(c.Key, depot+"/"); ok && c.Table != uplink.CentralTable {
			c.Key = k
			out = append(out, c)
		}
	}
	return out
}

// publishedDepot publishes records of a depot straight into a stream, in
// the uplink's format (subject, Nats-Msg-Id, body), as the depot's uplink
// would, and keeps what it published.
type publishedDepot struct {
	t       *testing.T
	name    string
	js      jetstream.JetStream
	lsn     uint64
	changes []change
	state   map[string]map[string]string // table → key → value
}

func (s *publishedDepot) publish(table, key, op, value string) {
	s.t.Helper()
	s.lsn++
	v := json.RawMessage("null")
	if op == "put" {
		v = json.RawMessage(value)
	}
	body, err := json.Marshal(uplink.Message{LSN: s.lsn, Depot: s.name, Table: table, Key: key, Op: op, Value: v, Version: 1,
		Actor: "tables", CommittedAt: time.Now().UTC()})
	if err != nil {
		s.t.Fatal(err)
	}
	m := nats.NewMsg(uplink.Subject(s.name, table))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, uplink.MsgID(s.name, s.lsn))
	m.Header.Set(uplink.HeaderLSN, strconv.FormatUint(s.lsn, 10))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		s.t.Fatalf("publish %s lsn %d: %v", s.name, s.lsn, err)
	}
	if op == "put" {
		s.changes = append(s.changes, change{Table: table, Key: key, Op: op, Value: value})
		if s.state[table] == nil {
			s.state[table] = map[string]string{}
		}
		s.state[table][key] = value
	} else {
		s.changes = append(s.changes, change{Table: table, Key: key, Op: op})
		delete(s.state[table], key)
	}
}

// writes puts n rows into the depot's notes and deletes one in ten.
func (s *publishedDepot) writes(from, n int) {
	for i := from; i < from+n; i++ {
		s.publish("notes", fmt.Sprintf("s-%d", i%7), "put", fmt.Sprintf(`{"south":%d}`, i))
		if i%10 == 9 {
			s.publish("notes", fmt.Sprintf("s-%d", i%7), "delete", "")
		}
	}
}

// centralPositions reads the depots' cursors of a central view (GET
// /v1/uplink).
func centralPositions(t *testing.T, c *Appliance) map[string]uplink.DepotPosition {
	t.Helper()
	st, b := httpDo(t, "GET", c.URL()+"/v1/uplink", c.Token("admin"), "")
	var s uplink.CentralStatus
	if st != http.StatusOK || json.Unmarshal(b, &s) != nil || s.Role != "central" {
		t.Fatalf("central GET /v1/uplink: %d %s", st, b)
	}
	out := map[string]uplink.DepotPosition{}
	for _, d := range s.Depots {
		out[d.Depot] = d
	}
	return out
}

// TestCentralViewOfTwoDepots: a central view (serve --central) follows two
// depots shipping to one JetStream, one through a real primary's uplink
// into a stream for several depots, the other published
// in the uplink's format into a stream of its own; a third stream of
// other subjects is left alone. The view holds both depots' rows under
// <depot>/<key>, with their versions, and shows the depot as a column
// (tables API, ?depot= filter, dashboard); its subscribers see the depots'
// changes live; every write answers 503 central_read_only. Its log holds
// each depot's records exactly once, in the depot's order, also after the
// view was stopped while both depots went on and restarted (the cursors
// are in its store): no gap, no duplicate.
func TestCentralViewOfTwoDepots(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Streams may not overlap: one for several depots (north, east), one
	// of south's own, and one of other subjects.
	for name, subj := range map[string][]string{"ROUTEHOUND": {"routehound.north.>", "routehound.east.>"}, "RH_SOUTH": {"routehound.south.>"}, "OTHER": {"other.>"}} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subj, Storage: jetstream.FileStorage}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "other.x", []byte("not a record")); err != nil {
		t.Fatal(err)
	}

	// Depot north: a primary shipping to the shared stream.
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot, pcfg.Uplink.Stream = ns.URL(), "north", "ROUTEHOUND"
	pcfg.Fleet.Events = false
	north, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer north.Shutdown(context.Background())
	northWrites := func(from, n int) {
		t.Helper()
		var lastSeq uint64
		for i := from; i < from+n; i++ {
			var st int
			var b []byte
			switch i % 3 {
			case 0:
				st, b = httpDo(t, "PUT", north.URL()+fmt.Sprintf("/v1/tables/notes/keys/n-%d", i%5), north.Token("dashboard"), fmt.Sprintf(`{"north":%d}`, i))
			case 1:
				st, b = httpDo(t, "PUT", north.URL()+fmt.Sprintf("/v1/assignments/r-%d", i%4), north.Token("dispatch"), assignment("van-1"), "Idempotency-Key", fmt.Sprint("a", i))
			default:
				st, b = httpDo(t, "POST", north.URL()+"/v1/drivers/van-1/locations", north.Token("driver"),
					fmt.Sprintf(`[{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-12-07T08:00:%02dZ"}]`, i, i%60))
				lastSeq = uint64(i)
			}
			if st >= 300 {
				t.Fatalf("north write %d: %d %s", i, st, b)
			}
			if i%8 == 7 {
				if st, b := httpDo(t, "DELETE", north.URL()+fmt.Sprintf("/v1/tables/notes/keys/n-%d", i%5), north.Token("dashboard"), ""); st != http.StatusOK && st != http.StatusNotFound {
					t.Fatalf("north delete %d: %d %s", i, st, b)
				}
			}
		}
		// Points are durable after their 202, and a write answered by the
		// journal is published just after: caughtUp targets north's DurableLSN().
		waitUntil(t, 30*time.Second, "van-1's points to be durable", func() bool {
			s, _ := north.Engine.DriverDurableSeq("van-1")
			return s >= lastSeq
		})
		if err := north.Engine.WaitCommitted(ctx); err != nil {
			t.Fatal(err)
		}
	}
	northWrites(0, 30)
	south := &publishedDepot{t: t, name: "south", js: js, state: map[string]map[string]string{}}
	south.writes(0, 10)
	// A message of no RouteHound format in south's stream is read past,
	// loudly, not a stop of the stream.
	if _, err := js.Publish(ctx, uplink.Subject("south", "notes"), []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	south.writes(10, 10)

	ccfg := loopbackConfig(t)
	ccfg.Central.NATSURL = ns.URL()
	c, err := Start(ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Shutdown(context.Background())
		}
	}()
	caughtUp := func() bool {
		if north.Uplink.Acked() != north.Engine.DurableLSN() {
			return false
		}
		p := centralPositions(t, c)
		return p["north"].LSN == north.Engine.DurableLSN() && p["south"].LSN == south.lsn
	}
	waitUntil(t, 30*time.Second, "the central view to catch up with both depots", caughtUp)

	// Subscribers of the view see the depots' later changes.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	keys := sseKeys(t, sctx, c.URL(), c.Token("dashboard"), "notes")
	time.Sleep(100 * time.Millisecond) // past the snapshot
	northWrites(30, 12)
	south.writes(20, 5)
	waitUntil(t, 30*time.Second, "the central view to follow both depots", caughtUp)
	seen := map[string]bool{}
	for !seen["north/n-3"] || !seen["south/s-0"] {
		select {
		case k, ok := <-keys:
			if !ok {
				t.Fatalf("the view's SSE stream ended after %v", seen)
			}
			seen[k] = true
		case <-sctx.Done():
			t.Fatalf("the view's subscriber saw only %v", seen)
		}
	}
	scancel()

	// The rows: every table of north under north/, versions as north's;
	// south's rows under south/; the depot as a column.
	check := func() {
		t.Helper()
		ct, nt := tablesOf(t, c), tablesOf(t, north)
		for table, rows := range nt {
			for k, st := range rows {
				got, ok := ct[table]["north/"+k]
				if !ok || got.Version != st.Version || !bytes.Equal(got.Value, st.Value) {
					t.Fatalf("central %s/north/%s: %+v (present %v), north has %+v", table, k, got, ok, st)
				}
			}
		}
		for table, rows := range south.state {
			for k, v := range rows {
				if got, ok := ct[table]["south/"+k]; !ok || string(got.Value) != v {
					t.Fatalf("central %s/south/%s: %s (present %v), south published %s", table, k, got.Value, ok, v)
				}
			}
		}
		for table, rows := range ct {
			for k := range rows {
				d, rest, _ := strings.Cut(k, "/")
				switch {
				case table == uplink.CentralTable:
				case d == "north":
					if _, ok := nt[table][rest]; !ok {
						t.Fatalf("central %s/%s: north has no such key", table, k)
					}
				case d == "south":
					if _, ok := south.state[table][rest]; !ok {
						t.Fatalf("central %s/%s: south has no such key", table, k)
					}
				default:
					t.Fatalf("central %s/%s: not a depot's key", table, k)
				}
			}
		}
		// The log: each depot's records once, in its order.
		all := logChanges(t, c.Engine)
		if got, want := depotChanges(all, "north"), logChanges(t, north.Engine); !slices.Equal(got, want) {
			t.Fatalf("the view's log holds %d records of north, north's log %d (a gap, a duplicate or out of order)\n got %v\nwant %v", len(got), len(want), got, want)
		}
		if got := depotChanges(all, "south"); !slices.Equal(got, south.changes) {
			t.Fatalf("the view's log holds %d records of south, south published %d\n got %v\nwant %v", len(got), len(south.changes), got, south.changes)
		}
	}
	check()

	var page struct {
		Rows []struct {
			Depot string `json:"depot"`
			Key   string `json:"key"`
		} `json:"rows"`
	}
	st, b := httpDo(t, "GET", c.URL()+"/v1/tables/notes", c.Token("dashboard"), "")
	if st != http.StatusOK || json.Unmarshal(b, &page) != nil || len(page.Rows) == 0 {
		t.Fatalf("central GET /v1/tables/notes: %d %s", st, b)
	}
	depots := map[string]bool{}
	for _, r := range page.Rows {
		if !strings.HasPrefix(r.Key, r.Depot+"/") {
			t.Fatalf("row %q has depot %q", r.Key, r.Depot)
		}
		depots[r.Depot] = true
	}
	if !depots["north"] || !depots["south"] {
		t.Fatalf("GET /v1/tables/notes shows the depots %v, want north and south: %s", depots, b)
	}
	page.Rows = nil
	st, b = httpDo(t, "GET", c.URL()+"/v1/tables/notes?depot=south", c.Token("dashboard"), "")
	if st != http.StatusOK || json.Unmarshal(b, &page) != nil || len(page.Rows) != len(south.state["notes"]) {
		t.Fatalf("central GET /v1/tables/notes?depot=south: %d %s (south has %d notes)", st, b, len(south.state["notes"]))
	}
	for _, r := range page.Rows {
		if r.Depot != "south" {
			t.Fatalf("?depot=south answers a row of %q: %s", r.Depot, b)
		}
	}
	if st, b := httpDo(t, "GET", c.URL()+"/v1/tables/notes?depot=no.such", c.Token("dashboard"), ""); st != http.StatusBadRequest || errCode(b) != "bad_parameter" {
		t.Fatalf("?depot=no.such: %d %s", st, b)
	}
	if st, b := httpDo(t, "GET", north.URL()+"/v1/tables/notes?depot=south", north.Token("dashboard"), ""); st != http.StatusBadRequest || errCode(b) != "bad_parameter" {
		t.Fatalf("?depot= on a depot's own box: %d %s", st, b)
	}
	if page := dashboardPage(t, c, "/ui/tables/notes"); !strings.Contains(page, "<th>depot</th>") || !strings.Contains(page, `<td data-field="depot">south</td>`) ||
		strings.Contains(page, `id="put-form"`) {
		t.Errorf("the view's dashboard table page lacks the depot column, or offers a put form:\n%s", page)
	}

	if page := dashboardPage(t, c, "/ui/system"); !strings.Contains(page, "Central view of the depots") ||
		!strings.Contains(page, `data-field="central-depot-south">LSN `+strconv.FormatUint(south.lsn, 10)+` in RH_SOUTH, 0 missing, `) ||
		!strings.Contains(page, `data-field="central-rejected-south">0 rejected<`) ||
		!strings.Contains(page, `data-field="central-connected">yes<`) {
		t.Errorf("the view's System page lacks the depots' cursors:\n%s", page)
	}

	// The history (the replica) holds the depots' drivers and routes
	// under <depot>/<name>, asked for with ?depot=.
	waitUntil(t, 30*time.Second, "the view's replica to catch up", func() bool { return c.Replica.LSN() == c.Engine.DurableLSN() })
	// The dashboard (over the replica) matches a route to its driver by
	// the driver's key here: north's routes name van-1, north/van-1 here.
	if page := dashboardPage(t, c, "/ui/fleet/north%2Fvan-1"); !strings.Contains(page, "<td>north/r-1</td>") || strings.Contains(page, "No route is assigned") {
		t.Errorf("the view's driver page of north/van-1 does not list north's route r-1:\n%s", page)
	}
	if page := dashboardPage(t, c, "/ui/routes"); !strings.Contains(page, `<a href="/ui/fleet/north%2Fvan-1">north/van-1</a>`) {
		t.Errorf("the view's Routes page does not link north's routes to north/van-1:\n%s", page)
	}
	var trail struct {
		Driver string            `json:"driver"`
		Points []json.RawMessage `json:"points"`
	}
	var want struct {
		Points []json.RawMessage `json:"points"`
	}
	if st, b := httpDo(t, "GET", north.URL()+"/v1/drivers/van-1/trail?limit=1000", north.Token("dashboard"), ""); st != http.StatusOK || json.Unmarshal(b, &want) != nil || len(want.Points) == 0 {
		t.Fatalf("north's trail: %d %s", st, b)
	}
	if st, b := httpDo(t, "GET", c.URL()+"/v1/drivers/van-1/trail?depot=north&limit=1000", c.Token("dashboard"), ""); st != http.StatusOK ||
		json.Unmarshal(b, &trail) != nil || trail.Driver != "north/van-1" || len(trail.Points) != len(want.Points) {
		t.Fatalf("the view's trail of north's van-1: %d %s (north has %d points)", st, b, len(want.Points))
	}
	var hist, nhist struct {
		Route    string            `json:"route"`
		Versions []json.RawMessage `json:"versions"`
	}
	if st, b := httpDo(t, "GET", north.URL()+"/v1/assignments/r-1/history", north.Token("dashboard"), ""); st != http.StatusOK || json.Unmarshal(b, &nhist) != nil {
		t.Fatalf("north's route history: %d %s", st, b)
	}
	if st, b := httpDo(t, "GET", c.URL()+"/v1/assignments/r-1/history?depot=north", c.Token("dashboard"), ""); st != http.StatusOK ||
		json.Unmarshal(b, &hist) != nil || hist.Route != "north/r-1" || len(hist.Versions) == 0 || len(hist.Versions) != len(nhist.Versions) {
		t.Fatalf("the view's history of north's r-1: %d %s (north has %d versions)", st, b, len(nhist.Versions))
	}
	if st, b := httpDo(t, "GET", north.URL()+"/v1/assignments/r-1/history?depot=north", north.Token("dashboard"), ""); st != http.StatusBadRequest || errCode(b) != "bad_parameter" {
		t.Fatalf("?depot= on a depot's own history: %d %s", st, b)
	}

	// Every write answers 503 central_read_only, and so does /readyz.
	for _, w := range []struct{ method, path, role, body string }{
		{"PUT", "/v1/tables/notes/keys/x", "dashboard", `{"a":1}`},
		{"DELETE", "/v1/tables/notes/keys/north/n-0", "dashboard", ""},
		{"PUT", "/v1/assignments/r-9", "dispatch", assignment("van-2")},
		{"POST", "/v1/drivers/van-9/locations", "driver", `[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-12-07T08:00:00Z"}]`},
		{"POST", "/v1/loading-events", "warehouse", `{"terminal":"t1","dock":"D4","shipment":"SH-1","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`},
	} {
		st, b := httpDo(t, w.method, c.URL()+w.path, c.Token(w.role), w.body, "Idempotency-Key", "k1")
		var e struct{ Code, Message string }
		if st != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || e.Code != "central_read_only" || e.Message == "" {
			t.Fatalf("central %s %s: %d %s", w.method, w.path, st, b)
		}
	}
	if st, b := httpDo(t, "GET", c.URL()+"/readyz", "", ""); st != http.StatusServiceUnavailable || errCode(b) != "central_read_only" {
		t.Fatalf("central /readyz: %d %s", st, b)
	}
	if _, m := httpDo(t, "GET", c.URL()+"/metrics", c.Token("admin"), ""); !strings.Contains(string(m), `routehound_central_depot_lsn{depot="south"} `+strconv.FormatUint(south.lsn, 10)) ||
		!strings.Contains(string(m), `routehound_central_stream_connected{stream="RH_SOUTH"} 1`) ||
		!strings.Contains(string(m), `routehound_central_stream_skipped_total{stream="RH_SOUTH"} 1`) {
		t.Errorf("the view's /metrics lacks the depots' LSNs or the streams")
	}

	// Restart: the view stops; both depots go on (south's stream skips
	// one LSN: a record its uplink dropped); the view comes back on its
	// data dir and resumes from its cursors.
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true
	northWrites(42, 20)
	south.writes(25, 10)
	south.lsn++ // dropped at the depot: never in the stream
	south.writes(35, 5)
	var logBuf lockedBuffer
	c, err = Start(ccfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stopped = false
	waitUntil(t, 30*time.Second, "the restarted central view to catch up", caughtUp)
	check()
	// It read on from its cursors, not the streams' start (the LSNs would
	// hide a re-read; this says the cursors' sequences were used).
	logs := logBuf.String()
	for _, st := range []string{"ROUTEHOUND", "RH_SOUTH"} {
		m := regexp.MustCompile(`central: reading the stream".* stream=` + st + ` .*after_seq=(\d+)`).FindStringSubmatch(logs)
		if m == nil || m[1] == "0" || strings.Contains(logs, "from its start") {
			t.Fatalf("the restarted view did not read %s on from its cursor: %v\n%s", st, m, logs)
		}
	}
	sst, err := js.Stream(ctx, "RH_SOUTH")
	if err != nil {
		t.Fatal(err)
	}
	if p := centralPositions(t, c)["south"]; p.Missing != 1 || p.Stream != "RH_SOUTH" || !p.StreamCreated.Equal(sst.CachedInfo().Created) {
		t.Fatalf("south's cursor after the skipped LSN: %+v, want missing 1 in RH_SOUTH created %v", p, sst.CachedInfo().Created)
	}
	if p := centralPositions(t, c)["north"]; p.Stream != "ROUTEHOUND" || p.Missing != 0 || p.Records != north.Engine.DurableLSN() {
		t.Fatalf("north's cursor: %+v (north's last lsn %d)", p, north.Engine.DurableLSN())
	}

	// A depot whose stream appears while the view runs is found (the
	// streams are listed again every 5 s).
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RH_WEST", Subjects: []string{"routehound.west.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	west := &publishedDepot{t: t, name: "west", js: js, state: map[string]map[string]string{}}
	west.writes(0, 3)
	waitUntil(t, 30*time.Second, "the view to find the new stream of depot west", func() bool {
		return centralPositions(t, c)["west"].LSN == west.lsn
	})
	if got := depotChanges(logChanges(t, c.Engine), "west"); !slices.Equal(got, west.changes) {
		t.Fatalf("the view's log of west: %v, want %v", got, west.changes)
	}
}

// lockedBuffer is a log's destination that several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dashboardPage logs in to a box's dashboard with the admin token and
// answers the page at path.
func dashboardPage(t *testing.T, a *Appliance, path string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	resp, err := hc.Get(a.URL() + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(b))
	if csrf == nil {
		t.Fatalf("no login form: %s", b)
	}
	if resp, err = hc.PostForm(a.URL()+"/ui/login", url.Values{"csrf": {csrf[1]}, "token": {a.Token("admin")}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = hc.Get(a.URL() + path); err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, err = io.ReadAll(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard %s: %d %v", path, resp.StatusCode, err)
	}
	return string(b)
}

// TestCentralConfig: [central] excludes [uplink] (a view is no depot) and
// checks its depots and streams.
func TestCentralConfig(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Central.NATSURL = "nats://127.0.0.1:1"
	cfg.Uplink.NATSURL, cfg.Uplink.Depot = "nats://127.0.0.1:1", "d"
	if _, err := Start(cfg, nil); err == nil || !strings.Contains(err.Error(), "central.nats_url and uplink.nats_url") {
		t.Fatalf("central with an uplink: %v", err)
	}
	cfg = loopbackConfig(t)
	cfg.Central.NATSURL, cfg.Central.Depots = "nats://127.0.0.1:1", []string{"a.b"}
	if _, err := Start(cfg, nil); err == nil || !strings.Contains(err.Error(), "central.depots") {
		t.Fatalf("central with a bad depot: %v", err)
	}
	// Each record is applied with its depot's cursor: the events lane
	// must take two writes.
	cfg = loopbackConfig(t)
	cfg.Central.NATSURL = "nats://127.0.0.1:1"
	cfg.Lanes.Events.QueueBound = 1
	if _, err := Start(cfg, nil); err == nil || !strings.Contains(err.Error(), "lanes.events.queue_bound") {
		t.Fatalf("central with an events lane of bound 1: %v", err)
	}
}
