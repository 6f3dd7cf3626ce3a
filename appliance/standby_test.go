package appliance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
	"routehound/uplink"
)

// tablesOf reads every table of a box through its engine: table → key →
// version, LSN and value.
func tablesOf(t *testing.T, a *Appliance) map[string]map[string]engine.State {
	t.Helper()
	s, err := a.Engine.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var names []string
	if _, err := s.Tables("", 0, func(ti engine.TableInfo) error { names = append(names, ti.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]engine.State{}
	for _, n := range names {
		rows := map[string]engine.State{}
		if _, err := s.Scan(n, "", 0, func(k string, st engine.State) error { rows[k] = st; return nil }); err != nil {
			t.Fatal(err)
		}
		out[n] = rows
	}
	return out
}

func sameTables(a, b map[string]map[string]engine.State) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d tables against %d", len(a), len(b))
	}
	for n, rows := range a {
		if len(rows) != len(b[n]) {
			return fmt.Errorf("table %s: %d keys against %d", n, len(rows), len(b[n]))
		}
		for k, v := range rows {
			w := b[n][k]
			if v.Version != w.Version || v.LSN != w.LSN || !bytes.Equal(v.Value, w.Value) {
				return fmt.Errorf("%s/%s: %+v against %+v", n, k, v, w)
			}
		}
	}
	return nil
}

// errCode is the code of a JSON error body.
func errCode(b []byte) string {
	var e struct {
		Code string `json:"code"`
	}
	json.Unmarshal(b, &e)
	return e.Code
}

// waitUntil polls cond every 10 ms for at most d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sseKeys follows a table's SSE stream on a box and sends the key of each
// live change (the events with an id).
func sseKeys(t *testing.T, ctx context.Context, base, token, table string) <-chan string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/tables/"+table+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE on %s: %d", table, resp.StatusCode)
	}
	out := make(chan string, 1024)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		live := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id:"):
				live = true
			case live && strings.HasPrefix(line, "data:"):
				var c struct {
					Key string `json:"key"`
				}
				if json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "data:"))), &c) == nil && c.Key != "" {
					out <- c.Key
				}
				live = false
			case line == "":
				live = false
			}
		}
	}()
	return out
}

// TestStandbyFollowsPromotesAndFences: a standby (serve --follow) rebuilds
// every table from the stream and keeps following, its subscribers see the
// primary's changes, and it answers every write 503 not_primary; promoted,
// it takes writes with LSNs following the last shipped record and ships
// them; the old primary's next record is refused by the stream, and the old
// primary turns read-only, loudly (not_primary, GET /v1/uplink, /metrics).
func TestStandbyFollowsPromotesAndFences(t *testing.T) {
	ns := natstest.Start(t)
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "depot-s"
	p, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	write := func(a *Appliance, i int) (int, []byte) {
		switch i % 4 {
		case 0:
			return httpDo(t, "PUT", a.URL()+fmt.Sprintf("/v1/assignments/r-%d", i), a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", fmt.Sprint("a", i))
		case 1:
			return httpDo(t, "POST", a.URL()+"/v1/loading-events", a.Token("warehouse"),
				fmt.Sprintf(`{"terminal":"t1","dock":"D4","shipment":"SH-%d","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`, i), "Idempotency-Key", fmt.Sprint("w", i))
		case 2:
			return httpDo(t, "PUT", a.URL()+fmt.Sprintf("/v1/tables/notes/keys/n-%d", i%10), a.Token("dashboard"), fmt.Sprintf(`{"i":%d}`, i))
		default:
			return httpDo(t, "POST", a.URL()+"/v1/drivers/van-1/locations", a.Token("driver"),
				fmt.Sprintf(`[{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-12-07T08:00:%02dZ"}]`, i, i%60))
		}
	}
	for i := range 40 {
		if st, b := write(p, i); st >= 300 {
			t.Fatalf("primary write %d: %d %s", i, st, b)
		}
	}

	scfg := loopbackConfig(t)
	scfg.Uplink.NATSURL, scfg.Uplink.Depot, scfg.Uplink.Follow = ns.URL(), "depot-s", true
	s, err := Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	caughtUp := func() bool {
		return p.Uplink.Acked() == p.Engine.DurableLSN() && s.Engine.DurableLSN() == p.Engine.DurableLSN()
	}
	// The primary's fleet-events consumer writes after the writes it
	// derives from: equal once both are quiet.
	var diff error
	equal := func() bool {
		if !caughtUp() {
			return false
		}
		diff = sameTables(tablesOf(t, p), tablesOf(t, s))
		return diff == nil && caughtUp()
	}
	waitUntil(t, 20*time.Second, "the standby to catch up with equal tables", equal)

	// Subscribers of the standby see the primary's later changes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys := sseKeys(t, ctx, s.URL(), s.Token("dashboard"), "notes")
	time.Sleep(100 * time.Millisecond) // past the snapshot
	for i := 40; i < 80; i++ {
		if st, b := write(p, i); st >= 300 {
			t.Fatalf("primary write %d: %d %s", i, st, b)
		}
	}
	waitUntil(t, 20*time.Second, "the standby to follow with equal tables", equal)
	seen := map[string]bool{}
	for len(seen) < 5 { // n-0, n-2, n-4, n-6, n-8
		select {
		case k, ok := <-keys:
			if !ok {
				t.Fatalf("the standby's SSE stream ended after %v", seen)
			}
			seen[k] = true
		case <-ctx.Done():
			t.Fatalf("the standby's subscriber saw only %v", seen)
		}
	}

	// Every write answers 503 not_primary.
	for i := range 4 {
		st, b := write(s, 100+i)
		if st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
			t.Fatalf("standby write %d: %d %s", i, st, b)
		}
	}
	if st, b := httpDo(t, "GET", s.URL()+"/readyz", "", ""); st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
		t.Fatalf("standby /readyz: %d %s", st, b)
	}
	var status struct {
		Role    string               `json:"role"`
		Fenced  bool                 `json:"fenced"`
		Epoch   uint64               `json:"epoch"`
		Standby *uplink.FollowStatus `json:"standby"`
	}
	if st, b := httpDo(t, "GET", s.URL()+"/v1/uplink", s.Token("admin"), ""); st != http.StatusOK || json.Unmarshal(b, &status) != nil ||
		status.Role != "standby" || status.Standby == nil || status.Standby.AppliedLSN == 0 || status.Standby.AppliedLSN > p.Engine.DurableLSN() || status.Epoch != 1 {
		t.Fatalf("standby GET /v1/uplink: %d %s", st, b)
	}
	if _, m := httpDo(t, "GET", s.URL()+"/metrics", s.Token("admin"), ""); !strings.Contains(string(m), "routehound_standby_connected 1\n") ||
		!strings.Contains(string(m), "routehound_standby_applied_lsn ") || !strings.Contains(string(m), "routehound_standby_promoted 0\n") {
		t.Error("the standby's /metrics lacks routehound_standby_connected 1, its applied lsn or promoted 0")
	}
	if page := dashboardPage(t, s, "/ui/system"); !strings.Contains(page, `data-field="uplink-role">standby (epoch 1)<`) || !strings.Contains(page, "last LSN applied") {
		t.Errorf("the standby's System page does not say it is a standby")
	}
	if page := dashboardPage(t, s, "/ui/"); strings.Contains(page, `data-field="consumer-lag"`) {
		t.Errorf("the standby's Channels page shows a fleet-events consumer: a standby runs none")
	}
	if st, b := httpDo(t, "POST", p.URL()+"/v1/admin/promote", p.Token("admin"), ""); st != http.StatusConflict || errCode(b) != "not_standby" {
		t.Fatalf("promoting the primary: %d %s", st, b)
	}

	// Promote: the primary is alive (a partition, say) but the standby
	// takes over.
	last := s.Engine.DurableLSN()
	t0 := time.Now()
	st, b := httpDo(t, "POST", s.URL()+"/v1/admin/promote", s.Token("admin"), "")
	var res uplink.PromoteResult
	if st != http.StatusOK || json.Unmarshal(b, &res) != nil || res.Epoch != 2 || res.LastLSN < last || res.LastLSN > p.Engine.DurableLSN() {
		t.Fatalf("promote: %d %s (last lsn %d)", st, b, last)
	}
	st, b = httpDo(t, "PUT", s.URL()+"/v1/assignments/r-new", s.Token("dispatch"), assignment("van-2"), "Idempotency-Key", "new")
	var w struct {
		LSN uint64 `json:"lsn"`
	}
	if st != http.StatusCreated || json.Unmarshal(b, &w) != nil || w.LSN <= res.LastLSN {
		t.Fatalf("first write after the promotion: %d %s (last shipped lsn %d)", st, b, last)
	}
	t.Logf("promote → first accepted write: %v (promotion %d ms)", time.Since(t0), res.TookMs)
	if page := dashboardPage(t, s, "/ui/"); !strings.Contains(page, `data-field="consumer-lag"`) {
		t.Errorf("the promoted box's Channels page lacks the fleet-events consumer it started at its promotion")
	}
	var lsns []uint64
	if err := s.Engine.ReadLog(last-1, 0, func(r engine.Record) error { lsns = append(lsns, r.LSN); return nil }); err != nil {
		t.Fatal(err)
	}
	for i, l := range lsns {
		if l != last+uint64(i) {
			t.Fatalf("the promoted box's log after lsn %d: %v", last-1, lsns)
		}
	}
	waitUntil(t, 20*time.Second, "the promoted box to ship", func() bool {
		return s.Uplink != nil && s.Uplink.Acked() >= w.LSN
	})

	// The old primary, still connected to NATS, sees the marker and turns
	// read-only; a write it took before it did is refused by the stream.
	if st, b := write(p, 200); st >= 300 && errCode(b) != "not_primary" { // an assignment: i%4 == 0
		t.Fatalf("old primary's write right after the promotion: %d %s", st, b)
	}
	waitUntil(t, 20*time.Second, "the old primary to be fenced", func() bool { return p.Uplink.Fenced() })
	for i := range 4 {
		st, b := write(p, 300+i)
		if st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
			t.Fatalf("fenced primary's write %d: %d %s", i, st, b)
		}
	}
	if st, b := httpDo(t, "GET", p.URL()+"/v1/uplink", p.Token("admin"), ""); st != http.StatusOK || json.Unmarshal(b, &status) != nil || status.Role != "fenced" || !status.Fenced {
		t.Fatalf("fenced primary's GET /v1/uplink: %d %s", st, b)
	}
	if page := dashboardPage(t, p, "/ui/system"); !strings.Contains(page, `data-field="uplink-role">FENCED`) {
		t.Errorf("the fenced primary's System page does not say FENCED")
	}
	if _, m := httpDo(t, "GET", p.URL()+"/metrics", p.Token("admin"), ""); !strings.Contains(string(m), "routehound_uplink_fenced 1\n") {
		t.Error("the fenced primary's /metrics lacks routehound_uplink_fenced 1")
	}
	// The stream holds the promoted box's assignment, not the old
	// primary's, and the promoted box goes on shipping.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(context.Background(), "ROUTEHOUND")
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(context.Background(), uplink.Subject("depot-s", "assignments"))
	if err != nil {
		t.Fatal(err)
	}
	var body uplink.Message
	if err := json.Unmarshal(m.Data, &body); err != nil || body.Key != "r-new" || m.Header.Get(uplink.HeaderEpoch) != "2" {
		t.Fatalf("the stream's last assignment: %s %v (epoch %s)", m.Data, err, m.Header.Get(uplink.HeaderEpoch))
	}
	if st, b := httpDo(t, "PUT", s.URL()+"/v1/tables/notes/keys/after", s.Token("dashboard"), `{"ok":true}`); st != http.StatusCreated {
		t.Fatalf("promoted box's write: %d %s", st, b)
	}
	waitUntil(t, 20*time.Second, "the promoted box to ship on", func() bool { return s.Uplink.Acked() == s.Engine.DurableLSN() })
	if s.Uplink.Fenced() || s.Uplink.Status().Refused {
		t.Fatalf("promoted box's uplink: %+v", s.Uplink.Status())
	}

	// The promoted box restarted (its config still says follow) is the
	// depot's writer, not a standby again.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s2, err := Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown(context.Background())
	if st, b := httpDo(t, "PUT", s2.URL()+"/v1/tables/notes/keys/after-restart", s2.Token("dashboard"), `{"ok":true}`); st != http.StatusCreated {
		t.Fatalf("restarted promoted box's write: %d %s", st, b)
	}
	waitUntil(t, 20*time.Second, "the restarted promoted box to ship", func() bool {
		return s2.Uplink != nil && s2.Uplink.Acked() == s2.Engine.DurableLSN() && s2.Uplink.Epoch() == 2
	})

	// The old primary restarted stays fenced, from its first request on.
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Shutdown(context.Background())
	if st, b := write(p2, 400); st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
		t.Fatalf("restarted fenced primary's write: %d %s", st, b)
	}
	if st, b := httpDo(t, "GET", p2.URL()+"/v1/uplink", p2.Token("admin"), ""); st != http.StatusOK || json.Unmarshal(b, &status) != nil || status.Role != "fenced" {
		t.Fatalf("restarted fenced primary's GET /v1/uplink: %d %s", st, b)
	}
}

// TestStandbyRestartReadsOn: a standby restarted on its data dir reads the
// stream on from where it was (standby.json), not from its start, and
// catches up with what the primary wrote meanwhile; so it does after NATS
// restarted.
func TestStandbyRestartReadsOn(t *testing.T) {
	ns := natstest.Start(t)
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "depot-t"
	pcfg.Fleet.Events = false
	p, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if st, b := httpDo(t, "PUT", p.URL()+fmt.Sprintf("/v1/tables/notes/keys/k-%d", i), p.Token("dashboard"), fmt.Sprintf(`{"i":%d}`, i)); st >= 300 {
				t.Fatalf("put %d: %d %s", i, st, b)
			}
		}
	}
	put(0, 100)
	scfg := loopbackConfig(t)
	scfg.Uplink.NATSURL, scfg.Uplink.Depot, scfg.Uplink.Follow = ns.URL(), "depot-t", true
	s, err := Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the standby to catch up", func() bool { return s.Engine.DurableLSN() == p.Engine.DurableLSN() })
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(100, 130)
	s, err = Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	waitUntil(t, 20*time.Second, "the restarted standby to catch up", func() bool {
		return p.Uplink.Acked() == p.Engine.DurableLSN() && s.Engine.DurableLSN() == p.Engine.DurableLSN()
	})
	if err := sameTables(tablesOf(t, p), tablesOf(t, s)); err != nil {
		t.Fatal(err)
	}
	st := s.role.follower.Status()
	if st.Applied != 30 || st.Pending != 0 {
		t.Fatalf("the restarted standby applied %d records (want the 30 new ones), %d pending", st.Applied, st.Pending)
	}
	if st, b := httpDo(t, "PUT", s.URL()+"/v1/tables/notes/keys/x", s.Token("dashboard"), `{"a":1}`); st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
		t.Fatalf("restarted standby's write: %d %s", st, b)
	}

	// NATS restarted: the primary keeps writing, the standby reconnects
	// and catches up.
	ns.Stop()
	put(130, 160)
	ns.Restart()
	waitUntil(t, 30*time.Second, "the standby to catch up after NATS restarted", func() bool {
		return p.Uplink.Acked() == p.Engine.DurableLSN() && s.Engine.DurableLSN() == p.Engine.DurableLSN()
	})
	if err := sameTables(tablesOf(t, p), tablesOf(t, s)); err != nil {
		t.Fatal(err)
	}
}

// TestTwoStandbysOnePromotion: two standbys promoted at once (the primary
// gone) end with one writer. Of two claims of the same epoch one is
// refused (503 promote_failed) and that box stays a standby, following the
// winner; a promotion that comes after the other's took the next epoch and
// fenced it (it turns read-only). Either way the stream holds one history.
func TestTwoStandbysOnePromotion(t *testing.T) {
	ns := natstest.Start(t)
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "depot-2"
	pcfg.Fleet.Events = false
	p, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if st, b := httpDo(t, "PUT", p.URL()+fmt.Sprintf("/v1/tables/notes/keys/k-%d", i), p.Token("dashboard"), `{"p":1}`); st >= 300 {
			t.Fatalf("put %d: %d %s", i, st, b)
		}
	}
	if err := p.Engine.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the primary to ship", func() bool { return p.Uplink.Acked() == p.Engine.DurableLSN() })
	last := p.Engine.DurableLSN()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var boxes [2]*Appliance
	for i := range boxes {
		c := loopbackConfig(t)
		c.Uplink.NATSURL, c.Uplink.Depot, c.Uplink.Follow = ns.URL(), "depot-2", true
		c.Fleet.Events = false
		if boxes[i], err = Start(c, nil); err != nil {
			t.Fatal(err)
		}
		defer boxes[i].Shutdown(context.Background())
	}
	waitUntil(t, 20*time.Second, "both standbys to catch up", func() bool {
		return boxes[0].Engine.DurableLSN() == last && boxes[1].Engine.DurableLSN() == last
	})
	type answer struct {
		status int
		body   []byte
	}
	answers := make(chan answer, 2)
	for _, a := range boxes {
		go func() {
			st, b := httpDo(t, "POST", a.URL()+"/v1/admin/promote", a.Token("admin"), "")
			answers <- answer{st, b}
		}()
	}
	var won, lost int
	for range 2 {
		a := <-answers
		switch {
		case a.status == http.StatusOK:
			won++
		case a.status == http.StatusServiceUnavailable && errCode(a.body) == "promote_failed":
			lost++
		default:
			t.Fatalf("promote: %d %s", a.status, a.body)
		}
	}
	if won < 1 {
		t.Fatalf("no promotion won (%d lost)", lost)
	}
	var winner, loser *Appliance
	waitUntil(t, 20*time.Second, "one writer", func() bool {
		np0, _ := boxes[0].Engine.NotPrimary()
		np1, _ := boxes[1].Engine.NotPrimary()
		switch {
		case !np0 && np1:
			winner, loser = boxes[0], boxes[1]
		case np0 && !np1:
			winner, loser = boxes[1], boxes[0]
		default:
			return false
		}
		return true
	})
	t.Logf("%d promotions answered 200, %d promote_failed", won, lost)
	for i := range 20 {
		if st, b := httpDo(t, "PUT", winner.URL()+fmt.Sprintf("/v1/tables/notes/keys/w-%d", i), winner.Token("dashboard"), `{"w":1}`); st >= 300 {
			t.Fatalf("winner's put %d: %d %s", i, st, b)
		}
	}
	if st, b := httpDo(t, "PUT", loser.URL()+"/v1/tables/notes/keys/l", loser.Token("dashboard"), `{"l":1}`); st != http.StatusServiceUnavailable || errCode(b) != "not_primary" {
		t.Fatalf("loser's put: %d %s", st, b)
	}
	if err := winner.Engine.WaitCommitted(context.Background()); err != nil { // answered by the journal; published just after
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the winner to ship", func() bool { return winner.Uplink.Acked() == winner.Engine.DurableLSN() })
	if won == 2 {
		// The first promoted box was fenced by the second.
		if loser.Uplink == nil || !loser.Uplink.Fenced() || winner.Uplink.Epoch() != 3 {
			t.Fatalf("after two promotions: loser %+v, winner epoch %d", loser.uplinkStatus(), winner.Uplink.Epoch())
		}
		return
	}
	waitUntil(t, 20*time.Second, "the loser to follow the winner", func() bool {
		return loser.Engine.DurableLSN() == winner.Engine.DurableLSN()
	})
	if err := sameTables(tablesOf(t, winner), tablesOf(t, loser)); err != nil {
		t.Fatal(err)
	}
	if st := loser.role.follower.Status(); st.Epoch != 2 || st.Role != "standby" {
		t.Fatalf("the loser's follower: %+v", st)
	}
}

var catchUpRecords = flag.Int("standby.records", 100000, "BenchmarkStandbyCatchUp: driver points the primary ships before the standby starts")

// BenchmarkStandbyCatchUp measures how fast a new standby rebuilds its
// store from the stream: the primary ships -standby.records driver points
// (200 drivers, 500-point batches) to an in-process NATS on loopback, then
// a standby starts on an empty data dir; reported: records applied per
// second until its durable LSN is the primary's, and the time.
//
//	go test -run '^$' -bench StandbyCatchUp -benchtime 1x ./appliance
func BenchmarkStandbyCatchUp(b *testing.B) {
	ns := natstest.Start(b)
	pcfg := loopbackConfig(b)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "catchup"
	pcfg.Fleet.Events = false
	p, err := Start(pcfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx := context.Background()
	seq := map[int]uint64{}
	for n := 0; n < *catchUpRecords; n += 500 {
		d := (n / 500) % 200
		pts := make([]engine.Point, 500)
		for i := range pts {
			seq[d]++
			pts[i] = engine.Point{Seq: seq[d], Value: fmt.Appendf(nil, `{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-12-07T08:00:00Z"}`, seq[d])}
		}
		for {
			if _, err := p.Engine.SubmitPoints(ctx, fmt.Sprint("d-", d), pts); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond) // a full lane
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for p.Uplink.Acked() < p.Engine.DurableLSN() || p.Engine.DurableLSN() < uint64(*catchUpRecords) {
		if time.Now().After(deadline) {
			b.Fatalf("the primary did not ship %d records in 5 min", *catchUpRecords)
		}
		time.Sleep(10 * time.Millisecond)
	}
	last := p.Engine.DurableLSN()
	b.ResetTimer()
	var took time.Duration
	for range b.N {
		scfg := loopbackConfig(b)
		scfg.Uplink.NATSURL, scfg.Uplink.Depot, scfg.Uplink.Follow = ns.URL(), "catchup", true
		scfg.Fleet.Events = false
		t0 := time.Now()
		s, err := Start(scfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		for s.Engine.DurableLSN() < last {
			if time.Since(t0) > 5*time.Minute {
				b.Fatalf("the standby applied %d of %d records in 5 min", s.Engine.DurableLSN(), last)
			}
			time.Sleep(2 * time.Millisecond)
		}
		took += time.Since(t0)
		s.Shutdown(context.Background())
	}
	b.StopTimer()
	b.ReportMetric(float64(last)*float64(b.N)/took.Seconds(), "records/s")
	b.ReportMetric(took.Seconds()/float64(b.N), "s/catch-up")
}
