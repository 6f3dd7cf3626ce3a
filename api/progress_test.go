package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"routehound/api"
)

// Dispatch reads a route's progress once the drivers' points reach its
// stops: GET /v1/assignments/{route}/progress answers route_progress (the
// fleet-events consumer's), and the derived tables are read-only through
// the tables API.
func TestRouteProgress(t *testing.T) {
	f := newFixture(t)
	dsp := tok(api.RoleDispatch)
	wantError(t, f.do(t, "GET", "/v1/assignments/r-p/progress", dsp, nil), http.StatusNotFound, "not_found")
	asg := `{"driver":"van-3","stops":[{"id":"s1","lat":52.0,"lng":13.0,"eta":"2026-12-07T10:00:00Z"},{"id":"s2","lat":52.01,"lng":13.0,"radius_m":30}]}`
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-p", dsp, asg, "Idempotency-Key", "p1"), http.StatusCreated)
	wantError(t, f.do(t, "PUT", "/v1/assignments/r-x", dsp, `{"driver":"d","stops":[{"id":"s","lat":1,"lng":1,"radius_m":-4}]}`, "Idempotency-Key", "p2"),
		http.StatusBadRequest, "invalid_field")
	pt := `{"seq":1,"lat":52.0002,"lng":13.0,"ts":"2026-12-07T10:04:00Z"}`
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-3/locations", tok(api.RoleDriver), pt), http.StatusAccepted)

	var p struct {
		Route, Driver string
		Version       uint64
		Stops         []struct {
			ID, Status, ETA string
			ArrivedAt       string `json:"arrived_at"`
			DelayS          *int64 `json:"delay_s"`
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := f.do(t, "GET", "/v1/assignments/r-p/progress", dsp, nil)
		if r.status == http.StatusOK {
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatal(err)
			}
			if len(p.Stops) == 2 && p.Stops[0].Status == "arrived" {
				break
			}
		} else if r.status != http.StatusNotFound {
			t.Fatalf("progress: %s", r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stop was not reached within 10 s: %s", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Route != "r-p" || p.Driver != "van-3" || p.Version != 1 || p.Stops[0].ArrivedAt != "2026-12-07T10:04:00Z" ||
		p.Stops[0].DelayS == nil || *p.Stops[0].DelayS != 240 || p.Stops[1].Status != "pending" {
		t.Fatalf("progress %+v", p)
	}
	r := f.do(t, "GET", "/v1/tables/fleet_events/keys/r-p/s1/stop.arrived", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	var row struct{ Value map[string]any }
	if err := json.Unmarshal(r.body, &row); err != nil {
		t.Fatal(err)
	}
	if row.Value["type"] != "stop.arrived" || row.Value["driver"] != "van-3" || fmt.Sprint(row.Value["delay_s"]) != "240" {
		t.Fatalf("event %s", r.body)
	}
	for _, table := range []string{"fleet_events", "route_progress", "fleet_consumer"} {
		wantError(t, f.do(t, "PUT", "/v1/tables/"+table+"/keys/k", tok(api.RoleAdmin), `{"v":1}`), http.StatusForbidden, "read_only_table")
	}
}

// Geofences: dispatch puts a fence, a driver's points stay inside for the
// dwell (30 s by default) and it enters; deleting the fence exits it with
// reason "deleted". Both events are rows of fleet_events, keyed
// <fence>/<driver>/<lsn>.
func TestFences(t *testing.T) {
	f := newFixture(t)
	dsp := tok(api.RoleDispatch)
	wantError(t, f.do(t, "PUT", "/v1/fences/depot", dsp, `{"lat":52.5,"lng":13.4,"radius_m":0}`), http.StatusBadRequest, "invalid_field")
	wantError(t, f.do(t, "PUT", "/v1/fences/depot", dsp, `{"lat":52.5,"lng":13.4,"radius_m":150,"colour":"red"}`), http.StatusBadRequest, "unknown_field")
	wantError(t, f.do(t, "GET", "/v1/fences/depot", dsp, nil), http.StatusNotFound, "not_found")
	wantError(t, f.do(t, "DELETE", "/v1/fences/depot", dsp, nil), http.StatusNotFound, "not_found")
	wantStatus(t, f.do(t, "PUT", "/v1/fences/depot", dsp, `{"name":"Depot","lat":52.5,"lng":13.4,"radius_m":150}`), http.StatusCreated)
	wantStatus(t, f.do(t, "GET", "/v1/fences/depot", tok(api.RoleAdmin), nil), http.StatusOK)
	pts := `[{"seq":1,"lat":52.5001,"lng":13.4,"ts":"2026-12-07T10:00:00Z"},{"seq":2,"lat":52.5002,"lng":13.4,"ts":"2026-12-07T10:00:40Z"}]`
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-9/locations", tok(api.RoleDriver), pts), http.StatusAccepted)
	events := func(want int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := f.do(t, "GET", "/v1/tables/fleet_events", tok(api.RoleDashboard), nil)
			wantStatus(t, r, http.StatusOK)
			var page struct {
				Rows []struct {
					Key   string
					Value map[string]any
				}
			}
			if err := json.Unmarshal(r.body, &page); err != nil {
				t.Fatal(err)
			}
			if len(page.Rows) >= want {
				var out []map[string]any
				for _, row := range page.Rows {
					row.Value["key"] = row.Key
					out = append(out, row.Value)
				}
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("fleet_events: %s, want %d rows", r.body, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	evs := events(1)
	if e := evs[0]; e["type"] != "fence.enter" || e["fence"] != "depot" || e["name"] != "Depot" || e["driver"] != "van-9" ||
		e["at"] != "2026-12-07T10:00:40Z" || e["since"] != "2026-12-07T10:00:00Z" || e["key"] != fmt.Sprintf("depot/van-9/%v", e["point_lsn"]) {
		t.Fatalf("enter: %v", e)
	}
	wantStatus(t, f.do(t, "DELETE", "/v1/fences/depot", dsp, nil), http.StatusOK)
	evs = events(2)
	var exit map[string]any
	for _, e := range evs {
		if e["type"] == "fence.exit" {
			exit = e
		}
	}
	if exit == nil || exit["reason"] != "deleted" || exit["driver"] != "van-9" {
		t.Fatalf("exit: %v", evs)
	}
}
