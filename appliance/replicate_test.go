package appliance

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"routehound/internal/natstest"
)

// TestReplicatedLanesWaitForJetStream: with [uplink] replicate, a dispatch
// or warehouse write is answered only once JetStream acknowledged it; with
// NATS down it answers 503 not_replicated after replicate_timeout (durable
// here), while a lane not replicated answers at once; NATS back, the retry
// with the same Idempotency-Key answers the same write, now in the stream.
func TestReplicatedLanesWaitForJetStream(t *testing.T) {
	ns := natstest.Start(t)
	cfg := loopbackConfig(t)
	cfg.Uplink.NATSURL, cfg.Uplink.Depot = ns.URL(), "depot-r"
	cfg.Uplink.Replicate, cfg.Uplink.ReplicateTimeout = []string{"dispatch", "warehouse"}, 500*time.Millisecond
	cfg.Fleet.Events = false
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	var ans struct {
		LSN uint64 `json:"lsn"`
	}
	for i, w := range []func() (int, []byte){
		func() (int, []byte) {
			return httpDo(t, "PUT", a.URL()+"/v1/assignments/r-1", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k1")
		},
		func() (int, []byte) {
			return httpDo(t, "POST", a.URL()+"/v1/loading-events", a.Token("warehouse"),
				`{"terminal":"t1","dock":"D4","shipment":"SH-1","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`, "Idempotency-Key", "w1")
		},
	} {
		st, b := w()
		if st != http.StatusCreated || json.Unmarshal(b, &ans) != nil {
			t.Fatalf("write %d: %d %s", i, st, b)
		}
		if acked := a.Uplink.Acked(); acked < ans.LSN {
			t.Fatalf("write %d answered at lsn %d with JetStream's acknowledgement at %d", i, ans.LSN, acked)
		}
	}

	ns.Stop()
	t0 := time.Now()
	st, b := httpDo(t, "PUT", a.URL()+"/v1/assignments/r-2", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k2")
	if st != http.StatusServiceUnavailable || errCode(b) != "not_replicated" {
		t.Fatalf("dispatch with NATS down: %d %s", st, b)
	}
	if d := time.Since(t0); d < 400*time.Millisecond {
		t.Fatalf("not_replicated after %v, before replicate_timeout", d)
	}
	if st, b := httpDo(t, "PUT", a.URL()+"/v1/tables/notes/keys/k", a.Token("dashboard"), `{"a":1}`); st != http.StatusCreated {
		t.Fatalf("a lane not replicated with NATS down: %d %s", st, b)
	}
	lsn := a.Engine.DurableLSN()

	ns.Restart()
	var retry struct {
		LSN     uint64 `json:"lsn"`
		Version uint64 `json:"version"`
	}
	waitUntil(t, 30*time.Second, "the retry to be answered", func() bool {
		st, b := httpDo(t, "PUT", a.URL()+"/v1/assignments/r-2", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k2")
		return st == http.StatusCreated && json.Unmarshal(b, &retry) == nil
	})
	if retry.Version != 1 || retry.LSN >= lsn || a.Uplink.Acked() < retry.LSN {
		t.Fatalf("retry after NATS came back: %+v (durable lsn then %d, acked %d)", retry, lsn, a.Uplink.Acked())
	}
}
