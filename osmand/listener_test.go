package osmand

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/internal/testkit"
)

const (
	devA = "phone-a-7f3k9q2x" // registered in the config, driver anna
	devB = "phone-b-m4p8z1w6" // registered through the devices table, driver bob
)

type rig struct {
	e   *engine.Engine
	l   *Listener
	url string
	c   *http.Client
}

func newRig(t testing.TB, secret string, mutate func(*engine.Config)) *rig {
	t.Helper()
	return newRigWith(t, mutate, func(c *Config) { c.PathSecret = secret })
}

// newRigWith is newRig with the listener's configuration changed by lc.
func newRigWith(t testing.TB, mutate func(*engine.Config), lc func(*Config)) *rig {
	t.Helper()
	e, _ := testkit.Engine(t, mutate)
	if _, err := e.PutDevice(context.Background(), devB, []byte(`{"driver":"bob"}`)); err != nil {
		t.Fatal(err)
	}
	cfg := Config{SpeedUnit: Knots, Zone: time.UTC, Devices: map[string]string{devA: "anna"}}
	if lc != nil {
		lc(&cfg)
	}
	l := New(e, cfg, nil)
	ts := httptest.NewServer(l)
	t.Cleanup(ts.Close) // before testkit's cleanup closes the engine and the wal
	return &rig{e: e, l: l, url: ts.URL, c: ts.Client()}
}

// send makes one request; it returns the status, or an error when the
// connection was closed without one.
func (r *rig) send(t *testing.T, method, path, ct, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, r.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	res, err := r.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

func (r *rig) want(t *testing.T, status int, method, path, ct, body string) {
	t.Helper()
	got, b, err := r.send(t, method, path, ct, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if got != status {
		t.Fatalf("%s %s %s: status %d (%q), want %d", method, path, body, got, b, status)
	}
	if status == http.StatusOK && b != "" {
		t.Fatalf("a 200 must have an empty body, got %q", b)
	}
}

func (r *rig) records(t *testing.T, table string) []engine.Record {
	t.Helper()
	var out []engine.Record
	err := r.e.ReadLog(0, 0, func(rec engine.Record) error {
		if rec.Table == table {
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (r *rig) state(t *testing.T, table, key string) map[string]any {
	t.Helper()
	s, err := r.e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, ok, err := s.Get(table, key)
	if err != nil || !ok {
		t.Fatalf("%s/%s: %v %v", table, key, ok, err)
	}
	var m map[string]any
	if err := json.Unmarshal(st.Value, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestListenerStoresPointsDurablyOnce(t *testing.T) {
	r := newRig(t, "", nil)
	q := "/?id=" + devA + "&timestamp=1763899200&lat=52.52&lon=13.405&speed=10&bearing=90&batt=80&accuracy=5&altitude=30&custom=x"
	r.want(t, 200, "POST", q, "", "")
	// Answered 200 only once durable: the durable LSN covers the point.
	recs := r.records(t, fleet.TablePositions)
	if len(recs) != 1 || recs[0].Key != "anna" || r.e.DurableLSN() < recs[0].LSN {
		t.Fatalf("positions after 200: %+v (durable %d)", recs, r.e.DurableLSN())
	}
	var p map[string]any
	json.Unmarshal(recs[0].Value, &p)
	want := map[string]any{"seq": 1763899200000.0, "lat": 52.52, "lng": 13.405, "ts": "2025-11-23T12:00:00.000Z",
		"speed_kmh": 18.52, "heading": 90.0, "battery": 80.0, "accuracy": 5.0, "altitude": 30.0}
	for k, v := range want {
		if p[k] != v {
			t.Fatalf("%s = %v want %v in %s", k, p[k], v, recs[0].Value)
		}
	}
	// The device id is the phone's only credential: positions (readable by
	// every dashboard token) never carry it (issue 18).
	if strings.Contains(string(recs[0].Value), devA) {
		t.Fatalf("the positions value carries the device id: %s", recs[0].Value)
	}
	if !strings.HasPrefix(string(recs[0].Value), `{"seq":`) {
		t.Fatalf("seq first: %s", recs[0].Value)
	}
	// The resend (the phone missed the 200) stores nothing.
	r.want(t, 200, "POST", q, "", "")
	if n := len(r.records(t, fleet.TablePositions)); n != 1 {
		t.Fatalf("%d records after a resend", n)
	}
	// Every request shape lands under the device's driver.
	r.want(t, 200, "GET", "/?id="+devB+"&lat=1&lon=2&timestamp=1763899201", "", "")
	r.want(t, 200, "POST", "/", "application/x-www-form-urlencoded", "id="+devB+"&lat=1.5&lon=2&timestamp=1763899202")
	r.want(t, 200, "POST", "/", "application/json",
		`{"location":{"timestamp":"2025-11-23T12:00:03Z","coords":{"latitude":1.6,"longitude":2,"speed":1,"heading":-1}},"device_id":"`+devB+`"}`)
	if got := r.state(t, fleet.TablePositions, "bob"); got["lat"] != 1.6 || got["device"] != nil || got["speed_kmh"] != 3.6 {
		t.Fatalf("bob's position: %v", got)
	}
	if n := len(r.records(t, fleet.TablePositions)); n != 4 {
		t.Fatalf("%d records, want 4", n)
	}
	st := r.e.Phone()
	if st.Points.Load() != 4 || st.Duplicates.Load() != 1 {
		t.Fatalf("points %d duplicates %d", st.Points.Load(), st.Duplicates.Load())
	}
}

func TestListenerRefusals(t *testing.T) {
	r := newRig(t, "", nil)
	// An unknown device is answered as a registered one is (200, empty
	// body: the answer does not tell which ids exist) and stores nothing.
	r.want(t, 200, "GET", "/?id=unknown-device-001&lat=1&lon=2", "", "")
	r.want(t, 200, "GET", "/?id=123456&lat=1&lon=2", "", "")                 // short ids are never registered
	r.want(t, 200, "GET", "/?id=unknown-device-001&lat=north&lon=2", "", "") // malformed from a stranger: not kept
	r.want(t, 400, "GET", "/?lat=1&lon=2", "", "")
	r.want(t, 413, "POST", "/?id="+devA, "application/x-www-form-urlencoded", "x="+strings.Repeat("a", 70<<10))
	for _, tb := range []string{fleet.TablePositions, fleet.TableQuarantine, fleet.TableDeviceStatus} {
		if n := len(r.records(t, tb)); n != 0 {
			t.Fatalf("%d records in %s after refusals", n, tb)
		}
	}
	if st := r.e.Phone(); st.Unknown.Load() != 3 || st.NoDevice.Load() != 1 {
		t.Fatalf("unknown %d no device %d", st.Unknown.Load(), st.NoDevice.Load())
	}
	// The refusals are on the driver lane's ledger line too.
	want := map[string]uint64{"unknown_device": 3, "no_device": 1, "body_too_large": 1}
	for _, rj := range r.e.Lane(engine.LaneDriver).Rejected() {
		if want[rj.Reason] != rj.Count {
			t.Fatalf("driver lane rejections %v, want %v", r.e.Lane(engine.LaneDriver).Rejected(), want)
		}
		delete(want, rj.Reason)
	}
	if len(want) != 0 {
		t.Fatalf("missing rejections %v", want)
	}
}

func TestListenerPathSecret(t *testing.T) {
	r := newRig(t, "s3cret-path-42", nil)
	q := "?id=" + devA + "&lat=1&lon=2&timestamp=1763899200"
	for _, p := range []string{"/" + q, "/osmand/" + q, "/osmand/wrong-secret/" + q, "/osmand/s3cret-path-4/" + q, "/x/osmand/s3cret-path-42/" + q} {
		r.want(t, 404, "GET", p, "", "")
	}
	if n := len(r.records(t, fleet.TablePositions)); n != 0 {
		t.Fatalf("%d points through a wrong secret", n)
	}
	r.want(t, 200, "GET", "/osmand/s3cret-path-42"+q, "", "")
	r.want(t, 200, "POST", "/osmand/s3cret-path-42/anything/else?id="+devA+"&lat=1.5&lon=2&timestamp=1763899200", "", "")
	if n := len(r.records(t, fleet.TablePositions)); n != 2 {
		t.Fatalf("%d points through the right secret", n)
	}
	if r.e.Phone().BadSecret.Load() != 5 {
		t.Fatalf("bad secret count %d", r.e.Phone().BadSecret.Load())
	}
	// A quarantined request does not keep the secret.
	r.want(t, 200, "GET", "/osmand/s3cret-path-42/?id="+devA+"&lat=x&lon=1", "", "")
	q0 := r.state(t, fleet.TableQuarantine, devA+"~00")
	if strings.Contains(q0["path"].(string), "s3cret") {
		t.Fatalf("the secret is in the quarantine: %v", q0)
	}
}

func TestListenerHeartbeatIsAStatus(t *testing.T) {
	r := newRig(t, "", nil)
	r.want(t, 200, "POST", "/?id="+devA+"&timestamp=1763899200&batt=42&charge=true", "", "")
	r.want(t, 200, "POST", "/", "application/json", `{"location":{"timestamp":"2025-11-23T12:00:00Z","event":"heartbeat","battery":{"level":0.4,"is_charging":false}},"device_id":"`+devB+`"}`)
	if n := len(r.records(t, fleet.TablePositions)); n != 0 {
		t.Fatalf("a heartbeat stored %d points", n)
	}
	a := r.state(t, fleet.TableDeviceStatus, devA)
	if a["battery"] != 42.0 || a["charging"] != true || a["driver"] != "anna" || a["ts"] != "2025-11-23T12:00:00.000Z" {
		t.Fatalf("status of A: %v", a)
	}
	if b := r.state(t, fleet.TableDeviceStatus, devB); b["battery"] != 40.0 || b["driver"] != "bob" {
		t.Fatalf("status of B: %v", b)
	}
	if r.e.Phone().Statuses.Load() != 2 {
		t.Fatalf("statuses %d", r.e.Phone().Statuses.Load())
	}
}

func TestListenerQuarantinesMalformed(t *testing.T) {
	r := newRig(t, "", nil)
	r.want(t, 200, "POST", "/track?id="+devA+"&lat=91&lon=2", "", "")
	r.want(t, 200, "POST", "/", "application/json", `{"device_id":"`+devB+`","location":{"coords":`)
	r.want(t, 200, "POST", "/?id="+devA, "application/x-www-form-urlencoded", "lat=1&lon=\xff\xfe")
	if n := len(r.records(t, fleet.TablePositions)); n != 0 {
		t.Fatalf("malformed requests stored %d points", n)
	}
	q := r.state(t, fleet.TableQuarantine, devA+"~00")
	if q["query"] != "id="+devA+"&lat=91&lon=2" || q["path"] != "/track" || q["method"] != "POST" || q["driver"] != "anna" ||
		!strings.Contains(q["error"].(string), "lat") {
		t.Fatalf("quarantine entry: %v", q)
	}
	if q := r.state(t, fleet.TableQuarantine, devB+"~00"); q["body"] != `{"device_id":"`+devB+`","location":{"coords":` {
		t.Fatalf("quarantined JSON: %v", q)
	}
	if q := r.state(t, fleet.TableQuarantine, devA+"~01"); q["body_base64"] == nil {
		t.Fatalf("a non-UTF-8 body is kept as base64: %v", q)
	}
	if r.e.Phone().Quarantined.Load() != 3 {
		t.Fatalf("quarantined %d", r.e.Phone().Quarantined.Load())
	}
	// The quarantine is bounded per device: the slots are reused.
	for i := range QuarantineSlots + 3 {
		r.want(t, 200, "GET", "/?id="+devB+"&lat=x&lon=1&n="+string(rune('a'+i%26)), "", "")
	}
	s, _ := r.e.Snapshot()
	defer s.Close()
	n := 0
	s.Scan(fleet.TableQuarantine, "", 1000, func(string, engine.State) error { n++; return nil })
	if n != QuarantineSlots+2 {
		t.Fatalf("%d quarantine keys, want %d", n, QuarantineSlots+2)
	}
}

// A full driver lane closes the connection without a status, and the
// point is not stored; once the lane drains, the retry gets its 200.
func TestListenerLaneFullClosesTheConnection(t *testing.T) {
	r := newRig(t, "", func(c *engine.Config) {
		l := c.Lanes[engine.LaneDriver]
		l.QueueBound = 2
		l.FlushWithin = time.Hour // the async points below hold the lane until the engine closes
		c.Lanes[engine.LaneDriver] = l
	})
	if _, err := r.e.SubmitPoints(context.Background(), "filler", []engine.Point{{Seq: 1, Value: []byte(`{"seq":1}`)}, {Seq: 2, Value: []byte(`{"seq":2}`)}}); err != nil {
		t.Fatal(err)
	}
	status, _, err := r.send(t, "GET", "/?id="+devA+"&lat=1&lon=2&timestamp=1763899200", "", "")
	if err == nil {
		t.Fatalf("a full lane answered %d; want the connection closed", status)
	}
	status, _, err = r.send(t, "GET", "/?id="+devA+"&lat=x&lon=2", "", "")
	if err == nil {
		t.Fatalf("a full lane answered a malformed request %d", status)
	}
	if r.e.Phone().ClosedFull.Load() != 2 {
		t.Fatalf("closed_lane_full %d", r.e.Phone().ClosedFull.Load())
	}
	for _, tb := range []string{fleet.TablePositions, fleet.TableQuarantine} {
		for _, rec := range r.records(t, tb) {
			if rec.Key == "anna" || strings.HasPrefix(rec.Key, devA) {
				t.Fatalf("stored on a full lane: %+v", rec)
			}
		}
	}
}

// FuzzListener: whatever a client sends, the listener answers 200, 400,
// 404 or 413 — never a 5xx — and a 200 leaves a durable record (or was a
// resend of one, or named an unknown device: answered alike, counted).
func FuzzListener(f *testing.F) {
	f.Add("GET", "/", "id="+devA+"&lat=1&lon=2&timestamp=1763899200", "", "")
	f.Add("POST", "/", "", "application/x-www-form-urlencoded", "id="+devB+"&lat=1.5&lon=2&batt=3")
	f.Add("POST", "/x", "", "application/json", `{"device_id":"`+devA+`","location":{"coords":{"latitude":1,"longitude":2}}}`)
	f.Add("PUT", "/", "id="+devA+"&lat=91", "", "")
	f.Add("GET", "/", "id="+devA+"&batt=50", "", "")
	f.Add("GET", "/", "lat=1&lon=2", "", "")
	f.Add("DELETE", "/osmand/x", "id=stranger-device&lat=1&lon=2", "text/plain", "\xff")
	r := newRig(f, "", nil)
	f.Fuzz(func(t *testing.T, method, path, query, ct, body string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") || len(method) > 16 {
			method = "POST"
		}
		req := httptest.NewRequest("GET", "/", strings.NewReader(body))
		req.Method = method
		req.URL.Path = "/" + strings.TrimLeft(path, "/")
		req.URL.RawQuery = query
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		lsn, dups, unknown := r.e.DurableLSN(), r.e.Phone().Duplicates.Load(), r.e.Phone().Unknown.Load()
		w := httptest.NewRecorder()
		r.l.ServeHTTP(w, req)
		switch w.Code {
		case 200:
			if w.Body.Len() != 0 {
				t.Fatalf("200 with a body %q", w.Body.String())
			}
			if r.e.DurableLSN() <= lsn && r.e.Phone().Duplicates.Load() == dups && r.e.Phone().Unknown.Load() == unknown {
				t.Fatalf("200 without a durable record (lsn %d → %d)", lsn, r.e.DurableLSN())
			}
		case 400, 404, 413:
		default:
			t.Fatalf("status %d for %s %s?%s %q %q", w.Code, method, path, query, ct, body)
		}
	})
}
