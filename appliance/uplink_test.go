package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"routehound/internal/natstest"
	"routehound/uplink"
)

// httpDo sends one request with a bearer token and answers status and body.
func httpDo(t *testing.T, method, url, token, body string, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func assignment(driver string) string {
	return fmt.Sprintf(`{"driver":%q,"stops":[{"id":"s1","lat":52.5,"lng":13.4}],"note":"n"}`, driver)
}

// TestServeWithUplink: `serve` with [uplink] ships what dispatch writes;
// GET /v1/uplink (admin) and /metrics report the position and the lag;
// the state file holds the acknowledged LSN after shutdown.
func TestServeWithUplink(t *testing.T) {
	ns := natstest.Start(t)
	cfg := loopbackConfig(t)
	cfg.Uplink.NATSURL, cfg.Uplink.Depot = ns.URL(), "depot-a"
	cfg.Fleet.Events = false // its writes would move the LSN under the exact checks below
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	for i := range 50 {
		if st, b := httpDo(t, "PUT", a.URL()+fmt.Sprintf("/v1/assignments/r-%d", i), a.Token("dispatch"), assignment("van-1"),
			"Idempotency-Key", fmt.Sprint("k", i)); st != http.StatusCreated {
			t.Fatalf("assignment %d: %d %s", i, st, b)
		}
	}
	if err := a.Engine.WaitCommitted(context.Background()); err != nil { // answered by the journal, published by the log's fsync
		t.Fatal(err)
	}
	last := a.Engine.DurableLSN()
	var s uplink.Status
	for range 1000 {
		st, b := httpDo(t, "GET", a.URL()+"/v1/uplink", a.Token("admin"), "")
		if st != http.StatusOK {
			t.Fatalf("GET /v1/uplink: %d %s", st, b)
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if s.AckedLSN >= last {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !s.Enabled || !s.Connected || s.AckedLSN < last || s.LagRecords != 0 || s.Depot != "depot-a" || s.Stream != "ROUTEHOUND" {
		t.Fatalf("uplink status: %+v (durable lsn %d)", s, last)
	}
	if st, _ := httpDo(t, "GET", a.URL()+"/v1/uplink", a.Token("dispatch"), ""); st != http.StatusForbidden {
		t.Fatalf("GET /v1/uplink with a dispatch token: %d", st)
	}
	_, m := httpDo(t, "GET", a.URL()+"/metrics", a.Token("admin"), "")
	for _, want := range []string{"routehound_uplink_lag_records 0", "routehound_uplink_lag_seconds 0", "routehound_uplink_dropped_records_total 0",
		fmt.Sprintf("routehound_uplink_acked_lsn %d", s.AckedLSN), "routehound_uplink_connected 1"} {
		if !strings.Contains(string(m), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The dashboard's System page shows it.
	page := dashboardPage(t, a, "/ui/system")
	for _, want := range []string{"Uplink to NATS JetStream", fmt.Sprintf(`data-field="uplink-acked">%d<`, s.AckedLSN), `data-field="uplink-connected">yes<`} {
		if !strings.Contains(page, want) {
			t.Errorf("System page lacks %q", want)
		}
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Other writers (the fleet-events consumer) may have committed more
	// after the status was read: the state file holds at least what was
	// acknowledged then, and no more than the log holds.
	raw, err := os.ReadFile(filepath.Join(a.Dir, "uplink.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		AckedLSN uint64 `json:"acked_lsn"`
		Depot    string `json:"depot"`
		Stream   string `json:"stream"`
		Exact    bool   `json:"exact"`
	}
	if err := json.Unmarshal(raw, &state); err != nil {
		t.Fatalf("state file after shutdown: %q: %v", raw, err)
	}
	if final := a.Engine.DurableLSN(); state.AckedLSN < s.AckedLSN || state.AckedLSN > final ||
		state.Depot != "depot-a" || state.Stream != "ROUTEHOUND" || !state.Exact {
		t.Fatalf("state file after shutdown: %s; want acked_lsn in [%d, %d], depot-a, ROUTEHOUND, exact", raw, s.AckedLSN, final)
	}
}
