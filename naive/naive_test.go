package naive

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"routehound/sim"
)

var tokens = map[string]string{
	"driver": "tok-driver-0123456789", "dispatch": "tok-dispatch-0123456789", "warehouse": "tok-warehouse-0123456789",
	"dashboard": "tok-dashboard-0123456789", "admin": "tok-admin-0123456789",
}

func start(t *testing.T) *Server {
	t.Helper()
	byToken := map[string]string{}
	for role, tok := range tokens {
		byToken[tok] = role
	}
	s, err := Start(Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Tokens: byToken, MaxSubscribersPerTable: 2, PollInterval: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

type reply struct {
	status int
	body   map[string]any
}

func call(t *testing.T, s *Server, method, path, role, body string, hdr ...string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tokens[role])
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode}
	if err := json.Unmarshal(b, &r.body); err != nil {
		t.Fatalf("%s %s: not a JSON object: %q", method, path, b)
	}
	return r
}

func TestDriverPointsEachCommittedOnce(t *testing.T) {
	s := start(t)
	pt := func(seq int) string {
		return `{"seq":` + string(rune('0'+seq)) + `,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`
	}
	r := call(t, s, "POST", "/v1/drivers/d1/locations", "driver", "["+pt(1)+","+pt(2)+"]")
	if r.status != 202 || r.body["accepted"] != 2.0 || r.body["durable_seq"] != 2.0 {
		t.Fatalf("first batch: %d %v", r.status, r.body)
	}
	r = call(t, s, "POST", "/v1/drivers/d1/locations", "driver", "["+pt(2)+","+pt(3)+"]")
	if r.status != 202 || r.body["accepted"] != 1.0 || r.body["duplicates"] != 1.0 || r.body["durable_seq"] != 3.0 {
		t.Fatalf("retry with one new point: %d %v", r.status, r.body)
	}
	r = call(t, s, "POST", "/v1/drivers/d1/locations", "driver", `{"seq":0}`)
	if r.status != 400 || r.body["code"] == nil {
		t.Fatalf("bad point: %d %v", r.status, r.body)
	}
	r = call(t, s, "GET", "/v1/log?after=0&limit=10", "admin", "")
	recs := r.body["records"].([]any)
	if len(recs) != 3 || r.body["next"] != nil {
		t.Fatalf("log: %v", r.body)
	}
	if r := call(t, s, "GET", "/v1/log?after=2", "admin", ""); len(r.body["records"].([]any)) != 1 {
		t.Fatalf("log after 2: %v", r.body)
	}
	if r := call(t, s, "GET", "/v1/log?after=x", "admin", ""); r.status != 400 || r.body["code"] != "bad_parameter" {
		t.Fatalf("bad after: %d %v", r.status, r.body)
	}
	if call(t, s, "POST", "/v1/drivers/d1/locations", "dispatch", pt(4)).status != 403 {
		t.Error("a dispatch token wrote driver points")
	}
	if call(t, s, "POST", "/v1/drivers/d1/locations", "", pt(4)).status != 401 {
		t.Error("no token was accepted")
	}
}

func TestAssignmentsIdempotentAndConditional(t *testing.T) {
	s := start(t)
	body := `{"driver":"d1","stops":[{"id":"s1","lat":52.5,"lng":13.4}],"note":"x"}`
	r := call(t, s, "PUT", "/v1/assignments/R1", "dispatch", body, "Idempotency-Key", "k1")
	if r.status != 201 || r.body["version"] != 1.0 {
		t.Fatalf("create: %d %v", r.status, r.body)
	}
	again := call(t, s, "PUT", "/v1/assignments/R1", "dispatch", body, "Idempotency-Key", "k1")
	if again.status != 201 || again.body["lsn"] != r.body["lsn"] || again.body["committed_at"] != r.body["committed_at"] {
		t.Fatalf("retry did not answer the first answer: %v vs %v", again.body, r.body)
	}
	if r := call(t, s, "PUT", "/v1/assignments/R1", "dispatch", body, "Idempotency-Key", "k2", "If-Match", "7"); r.status != 409 || r.body["code"] != "version_conflict" {
		t.Fatalf("stale If-Match: %d %v", r.status, r.body)
	}
	if r := call(t, s, "PUT", "/v1/assignments/R1", "dispatch", body, "Idempotency-Key", "k3", "If-Match", "1"); r.status != 200 || r.body["version"] != 2.0 {
		t.Fatalf("If-Match current: %d %v", r.status, r.body)
	}
	if r := call(t, s, "PUT", "/v1/assignments/R1", "dispatch", body); r.status != 428 {
		t.Fatalf("no Idempotency-Key: %d %v", r.status, r.body)
	}
	if r := call(t, s, "GET", "/v1/tables/assignments", "dashboard", ""); len(r.body["rows"].([]any)) != 1 {
		t.Fatalf("tables page: %v", r.body)
	}
	ev := `{"terminal":"T1","dock":"D1","shipment":"S1","kind":"loaded","pallets":3,"ts":"2026-11-23T10:00:00Z"}`
	l := call(t, s, "POST", "/v1/loading-events", "warehouse", ev, "Idempotency-Key", "w1")
	l2 := call(t, s, "POST", "/v1/loading-events", "warehouse", ev, "Idempotency-Key", "w1")
	if l.status != 201 || l.body["id"] == "" || l2.body["id"] != l.body["id"] {
		t.Fatalf("loading event and retry: %v %v", l.body, l2.body)
	}
}

func TestStreamSnapshotChangesAndLimit(t *testing.T) {
	s := start(t)
	call(t, s, "PUT", "/v1/tables/t1/keys/a", "dashboard", `{"n":1}`)
	open := func() (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest("GET", s.URL()+"/v1/tables/t1/events", nil)
		req.Header.Set("Authorization", "Bearer "+tokens["dashboard"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, bufio.NewReader(resp.Body)
	}
	resp, rd := open()
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe: %d", resp.StatusCode)
	}
	want := []string{"event: put", `data: {"key":"a","value":{"n":1},"version":1,"lsn":1}`, "", "event: snapshot"}
	for _, w := range want {
		line, err := rd.ReadString('\n')
		if err != nil || strings.TrimRight(line, "\n") != w {
			t.Fatalf("want %q, got %q (%v)", w, line, err)
		}
	}
	call(t, s, "PUT", "/v1/tables/t1/keys/b", "dashboard", `{"n":2}`)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, `data: {"key":"b"`) {
			break
		}
	}
	if r2, _ := open(); r2.StatusCode != 200 {
		t.Fatalf("second subscriber: %d", r2.StatusCode)
	}
	if r3, _ := open(); r3.StatusCode != 429 {
		t.Fatalf("third subscriber over the limit of 2: %d", r3.StatusCode)
	}
}

// TestSimDrivesNaive runs the simulator's own clients against the
// baseline: same endpoints, same answers, and nothing lost.
func TestSimDrivesNaive(t *testing.T) {
	s := start(t)
	sc, err := sim.Lookup("peak-shift")
	if err != nil {
		t.Fatal(err)
	}
	sc = sc.Scaled(0.01)
	sc.Duration, sc.DriverInterval, sc.Viewers = 2*time.Second, 200*time.Millisecond, 2
	sc.DispatchRate, sc.WarehouseRate = 20, 20
	sc.StreamShare = 0.5 // half the drivers over /v1/drivers/stream
	res, err := sim.Run(context.Background(), sim.Options{Scenario: sc, Target: sim.Target{Name: "naive", URL: s.URL(), Tokens: tokens},
		SLA: map[string]time.Duration{sim.ActorDriver: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	if !r.Verify.OK || r.Lost() != 0 {
		t.Fatalf("lost: %v", r.Verify.Problems)
	}
	for _, a := range []string{sim.ActorDriver, sim.ActorDispatch, sim.ActorWarehouse, sim.ActorViewer} {
		if ar := r.Actor(a); ar == nil || ar.Accepted == 0 || ar.Samples == 0 {
			t.Errorf("%s: %+v", a, ar)
		}
	}
	if d := r.Actor(sim.ActorDriver).Driver; d.Durable == 0 || d.Unconfirmed != 0 || d.Accepted < d.Recorded/2 {
		t.Errorf("driver points: %+v", d)
	}
	if rej := r.Actor(sim.ActorDriver).Rejected; len(rej) > 0 {
		t.Errorf("driver refusals (the stream must work as over HTTP): %v", rej)
	}
	if v := r.Actor(sim.ActorViewer).Viewers; v.Events == 0 || v.Connected != 2 {
		t.Errorf("viewers (one SSE, one WebSocket): %+v", v)
	}
}
