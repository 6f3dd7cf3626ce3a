package replica_test

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"routehound/appliance"
	"routehound/config"
)

// The appliance opens the replica at DATA/replica.db, feeds it, exports its
// lag on /metrics and closes it on shutdown.
func TestApplianceWiresTheReplica(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Storage.MinFreeMB = 0
	// The metrics below are compared with one durable LSN: no fleet-events
	// consumer writing records of its own meanwhile.
	cfg.Fleet.Events = false
	a, err := appliance.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	if a.Replica == nil {
		t.Fatal("no replica")
	}
	if _, err := os.Stat(filepath.Join(a.Dir, "replica.db")); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest("PUT", a.URL()+"/v1/assignments/r1", strings.NewReader(`{"driver":"d1","stops":[],"note":"hi"}`))
	req.Header.Set("Authorization", "Bearer "+a.Token("dispatch"))
	req.Header.Set("Idempotency-Key", "k1")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put assignment: %s", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Answered by the journal; published just after.
	if err := a.Engine.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	lsn := a.Engine.DurableLSN()
	if err := a.Replica.WaitLSN(ctx, lsn); err != nil {
		t.Fatal(err)
	}
	asg, err := a.Replica.Assignments(ctx, 0)
	if err != nil || len(asg) != 1 || asg[0].Route != "r1" || asg[0].Note != "hi" {
		t.Fatalf("replica assignments: %+v %v", asg, err)
	}

	req, _ = http.NewRequest("GET", a.URL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+a.Token("admin"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && strings.HasPrefix(f[0], "routehound_replica_") {
			got[f[0]] = f[1]
		}
	}
	if got["routehound_replica_applied_lsn"] != strconv.FormatUint(lsn, 10) ||
		got["routehound_replica_lag_records"] != "0" || got["routehound_replica_lag_seconds"] != "0" {
		t.Fatalf("replica metrics: %v", got)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Replica.Positions(context.Background()); err == nil {
		t.Fatal("the replica is still open after shutdown")
	}
}
