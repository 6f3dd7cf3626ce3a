package api_test

// Tests of issue 18's hardening (part C, point 6): user-table quotas, the
// fleet's disk reserve, and resumes far behind answered with a resync.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"routehound/api"
	"routehound/config"
)

// TestUserTableQuotasOverHTTP (point 6b): past tables.max_keys_per_table a
// new key is refused with 403 quota_exceeded over HTTP and the WebSocket,
// nothing is written; an overwrite and a delete are taken.
func TestUserTableQuotasOverHTTP(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.Tables.MaxKeysPerTable = 2 }})
	dash := tok(api.RoleDashboard)
	f.putKey(t, "q", "a", `1`)
	published(t, f, f.putKey(t, "q", "b", `1`)) // answered by the journal; published just after
	before := f.eng.DurableLSN()
	wantError(t, f.do(t, "PUT", "/v1/tables/q/keys/c", dash, `1`), http.StatusForbidden, "quota_exceeded")
	ws := f.mustWS(t, dash)
	ws.send(t, map[string]any{"op": "put", "table": "q", "key": "c", "value": json.RawMessage(`1`), "id": "q1"})
	wantWSError(t, ws.next(t), "quota_exceeded", "q1")
	if f.eng.DurableLSN() != before {
		t.Fatalf("a refused write moved the log: %d → %d", before, f.eng.DurableLSN())
	}
	f.putKey(t, "q", "a", `2`) // not a new key
	f.deleteKey(t, "q", "b")
	f.putKey(t, "q", "c", `1`)
}

// TestDiskReserveOverHTTP (point 6a): with free disk below min_free_mb +
// reserve_mb, a user table's write is refused with 507 disk_reserved while
// dispatch and a driver are taken and /readyz stays ready.
func TestDiskReserveOverHTTP(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Storage.MinFreeMB = 1       // far below the free space
		c.Storage.ReserveMB = 1 << 40 // and the reserve far above it
	}})
	wantError(t, f.do(t, "PUT", "/v1/tables/junk/keys/k", tok(api.RoleDashboard), `1`), 507, "disk_reserved")
	r := f.do(t, "PUT", "/v1/assignments/r-reserve", tok(api.RoleDispatch), assignJSON("van-1", "in the reserve"), "Idempotency-Key", "reserve-1")
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		t.Fatalf("dispatch in the reserve: %v", r)
	}
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-1/locations", tok(api.RoleDriver), pointJSON(1)), http.StatusAccepted)
	wantStatus(t, f.do(t, "GET", "/readyz", "", nil), http.StatusOK)
}

// TestSSEResumeFarBehindResyncs (point 6e): ?from= more than
// hub.max_catch_up records behind answers a resync snapshot, not a replay.
func TestSSEResumeFarBehindResyncs(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.Hub.MaxCatchUp = 5 }})
	for i := range 12 {
		f.putKey(t, "far", fmt.Sprint("k", i%3), fmt.Sprint(i))
	}
	s := f.mustSSE(t, "/v1/tables/far/events?from=0", tok(api.RoleDashboard))
	if ev := s.next(t); ev.event != "resync" {
		t.Fatalf("first event %v, want resync", ev)
	}
	rows := 0
	for {
		ev := s.next(t)
		if ev.event == "snapshot" {
			break
		}
		if ev.event != "put" || ev.hasID {
			t.Fatalf("inside the resync snapshot: %v", ev)
		}
		rows++
	}
	if rows != 3 {
		t.Fatalf("%d snapshot rows, want the table's 3", rows)
	}
}
