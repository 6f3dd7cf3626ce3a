package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/fleet"
	"routehound/internal/natstest"
	"routehound/uplink"
)

// answer is one HTTP answer.
type answer struct {
	status int
	body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

// TestStandbyAnswersShippedIdempotencyKeys: the idempotency entries travel
// with their records, so a promoted standby answers a retry with the same
// Idempotency-Key field for field as the primary did (same status, LSN,
// version, body; no second version), and the same key with another body
// 422 idempotency_key_reused, on each keyed lane.
func TestStandbyAnswersShippedIdempotencyKeys(t *testing.T) {
	ns := natstest.Start(t)
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "depot-i"
	pcfg.Fleet.Events = false // its writes would move the LSNs compared below
	p, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())

	type req struct {
		name, method, path, role, body, key, other string
	}
	reqs := []req{
		{"dispatch", "PUT", "/v1/assignments/r-1", "dispatch", assignment("van-1"), "dispatch-key-1", assignment("van-2")},
		{"warehouse", "POST", "/v1/loading-events", "warehouse",
			`{"terminal":"t1","dock":"D4","shipment":"SH-1","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`, "warehouse-key-1",
			`{"terminal":"t1","dock":"D4","shipment":"SH-2","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`},
		{"tables", "PUT", "/v1/tables/notes/keys/n-1", "dashboard", `{"n":1}`, "tables-key-1", `{"n":2}`},
	}
	do := func(a *Appliance, r req, body string) answer {
		st, b := httpDo(t, r.method, a.URL()+r.path, a.Token(r.role), body, "Idempotency-Key", r.key)
		return answer{st, string(b)}
	}
	first := map[string]answer{}
	for _, r := range reqs {
		a := do(p, r, r.body)
		if a.status != http.StatusCreated {
			t.Fatalf("%s: first write: %v", r.name, a)
		}
		first[r.name] = a
		// Writes after it: the retry must not answer the key's latest.
		if st, b := httpDo(t, "PUT", p.URL()+"/v1/tables/notes/keys/other", p.Token("dashboard"), fmt.Sprintf(`{"after":%q}`, r.name)); st >= 300 {
			t.Fatalf("write after %s: %d %s", r.name, st, b)
		}
	}
	for _, r := range reqs {
		if a := do(p, r, r.body); a != first[r.name] {
			t.Fatalf("%s: the primary's retry answers %v, its first answer was %v", r.name, a, first[r.name])
		}
	}

	scfg := loopbackConfig(t)
	scfg.Uplink.NATSURL, scfg.Uplink.Depot, scfg.Uplink.Follow = ns.URL(), "depot-i", true
	scfg.Fleet.Events = false // promoted, its consumer would write
	s, err := Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	waitUntil(t, 20*time.Second, "the standby to catch up", func() bool {
		return p.Uplink.Acked() == p.Engine.DurableLSN() && s.Engine.DurableLSN() == p.Engine.DurableLSN()
	})
	if err := sameTables(tablesOf(t, p), tablesOf(t, s)); err != nil {
		t.Fatal(err)
	}
	if st, b := httpDo(t, "POST", s.URL()+"/v1/admin/promote", s.Token("admin"), ""); st != http.StatusOK {
		t.Fatalf("promote: %d %s", st, b)
	}
	last := s.Engine.DurableLSN()
	for _, r := range reqs {
		if a := do(s, r, r.body); a != first[r.name] {
			t.Errorf("%s: the promoted standby answers the retry %v; the primary answered %v", r.name, a, first[r.name])
		}
		if a := do(s, r, r.other); a.status != http.StatusUnprocessableEntity || errCode([]byte(a.body)) != "idempotency_key_reused" {
			t.Errorf("%s: the promoted standby answers the key with another body %v, want 422 idempotency_key_reused", r.name, a)
		}
	}
	if got := s.Engine.DurableLSN(); got != last {
		t.Errorf("the retries wrote on the promoted standby: last lsn %d, was %d", got, last)
	}
	rows := tablesOf(t, s)
	if st := rows[fleet.TableAssignments]["r-1"]; st.Version != 1 {
		t.Errorf("assignment r-1 on the promoted standby: version %d, want 1", st.Version)
	}
	if st := rows["notes"]["n-1"]; st.Version != 1 {
		t.Errorf("notes/n-1 on the promoted standby: version %d, want 1", st.Version)
	}
	if n := len(rows[fleet.TableLoading]); n != 1 {
		t.Errorf("the promoted standby holds %d loading events, want 1", n)
	}
	// A new key is a new write there.
	if st, b := httpDo(t, "PUT", s.URL()+"/v1/assignments/r-2", s.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "dispatch-key-2"); st != http.StatusCreated {
		t.Fatalf("a new write on the promoted standby: %d %s", st, b)
	}
}

// TestStandbyDropsExpiredIdempotencyEntries: an idempotency entry shipped
// with its record but expired by the time a standby applies it is not
// carried: promoted, the standby applies a retry with that key as a new
// write, as the primary would (its entry expired too).
func TestStandbyDropsExpiredIdempotencyEntries(t *testing.T) {
	ns := natstest.Start(t)
	pcfg := loopbackConfig(t)
	pcfg.Uplink.NATSURL, pcfg.Uplink.Depot = ns.URL(), "depot-x"
	pcfg.Fleet.Events = false
	pcfg.Storage.IdempotencyTTL = 5 * time.Second
	p, err := Start(pcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	st, b := httpDo(t, "PUT", p.URL()+"/v1/assignments/r-x", p.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "short")
	if st != http.StatusCreated {
		t.Fatalf("first write: %d %s", st, b)
	}
	var w struct {
		LSN uint64 `json:"lsn"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the primary to ship", func() bool { return p.Uplink.Acked() >= w.LSN })
	// The stream holds the entry with its record, expiring within the TTL.
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
	m, err := stream.GetLastMsgForSubject(context.Background(), uplink.Subject("depot-x", fleet.TableAssignments))
	if err != nil {
		t.Fatal(err)
	}
	var h uplink.IdemHeader
	if err := json.Unmarshal([]byte(m.Header.Get(uplink.HeaderIdem)), &h); err != nil || h.Scope != "dispatch" || string(h.Key) != "short" ||
		h.ExpiresAt <= 0 || h.ExpiresAt > time.Now().Add(6*time.Second).Unix() {
		t.Fatalf("the shipped record's %s header: %q (%v)", uplink.HeaderIdem, m.Header.Get(uplink.HeaderIdem), err)
	}
	// Past its expiry, the standby starts and applies it.
	time.Sleep(time.Until(time.Unix(h.ExpiresAt+1, 0)))
	scfg := loopbackConfig(t)
	scfg.Uplink.NATSURL, scfg.Uplink.Depot, scfg.Uplink.Follow = ns.URL(), "depot-x", true
	s, err := Start(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	waitUntil(t, 20*time.Second, "the standby to catch up", func() bool { return s.Engine.DurableLSN() == p.Engine.DurableLSN() })
	var ents []engine.IdemEntry
	if err := s.Engine.IdemEntries(0, s.Engine.DurableLSN(), func(ie engine.IdemEntry) error { ents = append(ents, ie); return nil }); err != nil || len(ents) != 0 {
		t.Fatalf("the standby holds idempotency entries %+v (%v), want none: the one shipped had expired", ents, err)
	}
	if st, b := httpDo(t, "POST", s.URL()+"/v1/admin/promote", s.Token("admin"), ""); st != http.StatusOK {
		t.Fatalf("promote: %d %s", st, b)
	}
	st, b = httpDo(t, "PUT", s.URL()+"/v1/assignments/r-x", s.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "short")
	var again struct {
		LSN     uint64 `json:"lsn"`
		Version uint64 `json:"version"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &again) != nil || again.Version != 2 || again.LSN <= w.LSN {
		t.Fatalf("the retry after the entry expired: %d %s, want a new write (200, version 2)", st, b)
	}
}
