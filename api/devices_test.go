package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/fleet"
)

// newDevicesFixture is the server with configured devices registered in
// the configuration file ([[osmand.devices]]; the phone listener stays off).
func newDevicesFixture(t *testing.T, configured map[string]string) *fixture {
	t.Helper()
	return newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		for id, driver := range configured {
			c.Osmand.Devices = append(c.Osmand.Devices, config.Device{ID: id, Driver: driver})
		}
	}})
}

func TestDevices(t *testing.T) {
	f := newDevicesFixture(t, map[string]string{"configured-phone-1": "bob"})
	admin := tok(api.RoleAdmin)
	const id = "k3v9-q1x7-m2p8"

	wantError(t, f.do(t, "GET", "/v1/devices/"+id, admin, nil), http.StatusNotFound, "not_found")
	r := f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]string{"driver": "anna"})
	wantStatus(t, r, http.StatusCreated)
	m := object(t, r, "id", "driver", "source", "version", "lsn")
	if str(t, m["id"]) != id || str(t, m["driver"]) != "anna" || str(t, m["source"]) != "api" || num[uint64](t, m["version"]) != 1 {
		t.Fatalf("put: %v", r)
	}
	lsn := num[uint64](t, m["lsn"])
	drv, ok, err := f.eng.DeviceDriver(id)
	if err != nil || !ok || drv != "anna" {
		t.Fatalf("engine lookup after PUT: %q %v %v", drv, ok, err)
	}
	// Moving the phone to another driver is an update.
	r = f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]string{"driver": "carl"})
	wantStatus(t, r, http.StatusOK)
	r = f.do(t, "GET", "/v1/devices/"+id, admin, nil)
	wantStatus(t, r, http.StatusOK)
	m = object(t, r, "id", "driver", "source", "version", "lsn")
	if str(t, m["driver"]) != "carl" || num[uint64](t, m["version"]) != 2 || num[uint64](t, m["lsn"]) <= lsn {
		t.Fatalf("get: %v", r)
	}
	// The table is readable through the tables API and read-only there.
	wantStatus(t, f.do(t, "GET", "/v1/tables/devices/keys/"+id, admin, nil), http.StatusOK)
	wantError(t, f.do(t, "PUT", "/v1/tables/devices/keys/"+id, admin, map[string]string{"driver": "eve"}), http.StatusForbidden, "read_only_table")
	wantError(t, f.do(t, "PUT", "/v1/tables/quarantine/keys/x", admin, map[string]string{}), http.StatusForbidden, "read_only_table")
	wantError(t, f.do(t, "PUT", "/v1/tables/device_status/keys/x", admin, map[string]string{}), http.StatusForbidden, "read_only_table")

	r = f.do(t, "DELETE", "/v1/devices/"+id, admin, nil)
	wantStatus(t, r, http.StatusOK)
	object(t, r, "id", "lsn")
	if _, ok, _ := f.eng.DeviceDriver(id); ok {
		t.Fatal("device still registered after DELETE")
	}
	wantError(t, f.do(t, "DELETE", "/v1/devices/"+id, admin, nil), http.StatusNotFound, "not_found")
	wantError(t, f.do(t, "GET", "/v1/devices/"+id, admin, nil), http.StatusNotFound, "not_found")

	// Config devices show, and cannot be changed here.
	r = f.do(t, "GET", "/v1/devices/configured-phone-1", admin, nil)
	wantStatus(t, r, http.StatusOK)
	m = object(t, r, "id", "driver", "source")
	if str(t, m["source"]) != "config" || str(t, m["driver"]) != "bob" {
		t.Fatalf("config device: %v", r)
	}
	wantError(t, f.do(t, "PUT", "/v1/devices/configured-phone-1", admin, map[string]string{"driver": "x"}), http.StatusConflict, "device_in_config")
	wantError(t, f.do(t, "DELETE", "/v1/devices/configured-phone-1", admin, nil), http.StatusConflict, "device_in_config")
}

func TestDevicesRefusals(t *testing.T) {
	f := newDevicesFixture(t, nil)
	admin := tok(api.RoleAdmin)
	const id = "k3v9-q1x7-m2p8"
	for _, role := range []api.Role{api.RoleDriver, api.RoleDispatch, api.RoleWarehouse, api.RoleDashboard} {
		wantError(t, f.do(t, "PUT", "/v1/devices/"+id, tok(role), map[string]string{"driver": "anna"}), http.StatusForbidden, "forbidden")
		wantError(t, f.do(t, "GET", "/v1/devices/"+id, tok(role), nil), http.StatusForbidden, "forbidden")
	}
	wantError(t, f.do(t, "PUT", "/v1/devices/"+id, "", map[string]string{"driver": "anna"}), http.StatusUnauthorized, "unauthorized")
	// Short ids are refused: the id is the phone's only credential.
	wantError(t, f.do(t, "PUT", "/v1/devices/123456", admin, map[string]string{"driver": "anna"}), http.StatusBadRequest, "bad_device_id")
	wantError(t, f.do(t, "GET", "/v1/devices/123456", admin, nil), http.StatusBadRequest, "bad_device_id")
	wantError(t, f.do(t, "PUT", "/v1/devices/bad%20device%20id", admin, map[string]string{"driver": "anna"}), http.StatusBadRequest, "bad_device_id")
	wantError(t, f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]string{}), http.StatusBadRequest, "invalid_field")
	wantError(t, f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]string{"driver": "not ok"}), http.StatusBadRequest, "bad_name")
	wantError(t, f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]any{"driver": "anna", "extra": 1}), http.StatusBadRequest, "unknown_field")
	wantError(t, f.do(t, "PUT", "/v1/devices/"+id, admin, "{"), http.StatusBadRequest, "bad_json")
	wantError(t, f.do(t, "POST", "/v1/devices/"+id, admin, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	if _, ok, _ := f.eng.DeviceDriver(id); ok {
		t.Fatal("a refused PUT registered the device")
	}
}

// TestDeviceIDsAdminOnly (issue 18): a device id is a phone's only
// credential, so the tables that hold them (devices, device_status,
// quarantine) are read by the admin only, on every read path: a page, a
// key, the log with and without a table filter, SSE and WebSocket
// subscriptions. The admin still reads all of them.
func TestDeviceIDsAdminOnly(t *testing.T) {
	f := newDevicesFixture(t, nil)
	admin, dash := tok(api.RoleAdmin), tok(api.RoleDashboard)
	const id = "secret-phone-7q2x"
	wantStatus(t, f.do(t, "PUT", "/v1/devices/"+id, admin, map[string]string{"driver": "anna"}), http.StatusCreated)
	ctx := context.Background()
	if err := f.eng.PutPhoneRecord(ctx, fleet.TableDeviceStatus, id, []byte(`{"device":"`+id+`","driver":"anna"}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.eng.PutPhoneRecord(ctx, fleet.TableQuarantine, id+"~00", []byte(`{"device":"`+id+`"}`)); err != nil {
		t.Fatal(err)
	}
	control := f.do(t, "PUT", "/v1/tables/notes/keys/k", dash, map[string]int{"v": 1})
	wantStatus(t, control, http.StatusCreated)
	published(t, f, num[uint64](t, object(t, control)["lsn"])) // answered by the journal; published just after

	secret := map[string]string{fleet.TableDevices: id, fleet.TableDeviceStatus: id, fleet.TableQuarantine: id + "~00"}
	for table, key := range secret {
		for _, p := range []string{"/v1/tables/" + table, "/v1/tables/" + table + "/keys/" + key, "/v1/log?table=" + table} {
			wantError(t, f.do(t, "GET", p, dash, nil), http.StatusForbidden, "forbidden")
			if r := f.do(t, "GET", p, admin, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), id) {
				t.Fatalf("admin GET %s: %v", p, r)
			}
		}
		if s, r := f.openSSE(t, "/v1/tables/"+table+"/events", dash); s != nil {
			t.Fatalf("dashboard subscribed to %s over SSE", table)
		} else {
			wantError(t, r, http.StatusForbidden, "forbidden")
		}
		f.mustSSE(t, "/v1/tables/"+table+"/events", admin).close()
		ws := f.mustWS(t, dash)
		ws.send(t, map[string]any{"op": "subscribe", "table": table})
		if fr := ws.next(t); fr.Type != "error" || fr.Code != "forbidden" {
			t.Fatalf("dashboard WebSocket subscribe %s: %v", table, fr)
		}
		// The refused subscription leaves the connection usable.
		ws.subscribe(t, "notes")
		if rows, _ := f.mustWS(t, admin).subscribe(t, table); len(rows) != 1 {
			t.Fatalf("admin WebSocket snapshot of %s: %v", table, rows)
		}
	}
	// The unfiltered log skips the secret tables for a dashboard token, and
	// still pages to the end; the admin reads every record.
	r := f.do(t, "GET", "/v1/log?after=0&limit=1000", dash, nil)
	wantStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.body), id) || !strings.Contains(string(r.body), `"notes"`) {
		t.Fatalf("dashboard log: %s", r.body)
	}
	r = f.do(t, "GET", "/v1/log?after=0&limit=1000", admin, nil)
	for table := range secret {
		if !strings.Contains(string(r.body), `"table":"`+table+`"`) {
			t.Fatalf("admin log without %s: %s", table, r.body)
		}
	}
}

// TestLegacyPositionsWithoutDeviceID (issue 18): phone points stored
// before device ids became admin-only carry a "device" member; a dashboard
// token reads positions without it on every path (page, key, log, SSE and
// WebSocket snapshot and changes), the admin as stored.
func TestLegacyPositionsWithoutDeviceID(t *testing.T) {
	f := newDevicesFixture(t, nil)
	admin, dash := tok(api.RoleAdmin), tok(api.RoleDashboard)
	const id = "legacy-phone-4k8w"
	fix := int64(1763899200000)
	legacy := func() {
		t.Helper()
		fix += 1000
		if _, err := f.eng.SubmitPhonePoint(context.Background(), engine.PhonePoint{Driver: "anna", Device: id, FixMs: fix, Lat: 52.5, Lng: 13.4,
			Value: []byte(`{"lat":52.5,"lng":13.4,"ts":"2025-11-23T12:00:00.000Z","device":"` + id + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	legacy()
	sse := f.mustSSE(t, "/v1/tables/positions/events", dash)
	// The snapshot (a row, its end) before the change below: the stream's
	// snapshot is taken when it starts, and a change written before that
	// would be in the snapshot instead of after it (seen on a loaded box).
	for range 2 {
		if ev := sse.next(t); strings.Contains(ev.data, id) {
			t.Errorf("SSE event %v", ev)
		}
	}
	ws := f.mustWS(t, dash)
	rows, _ := ws.subscribe(t, fleet.TablePositions)
	legacy() // a change after the snapshot
	for _, p := range []string{"/v1/tables/positions", "/v1/tables/positions/keys/anna", "/v1/log?table=positions", "/v1/log"} {
		r := f.do(t, "GET", p, dash, nil)
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.body), id) || !strings.Contains(string(r.body), `"lat":52.5`) {
			t.Errorf("dashboard GET %s: %s", p, r.body)
		}
		if r := f.do(t, "GET", p, admin, nil); !strings.Contains(string(r.body), id) {
			t.Errorf("admin GET %s lost the stored value: %s", p, r.body)
		}
	}
	if len(rows) != 1 || strings.Contains(string(rows[0].Value), id) || !strings.Contains(string(rows[0].Value), `"lat":52.5`) {
		t.Errorf("WebSocket snapshot: %+v", rows)
	}
	if fr := ws.next(t); fr.Type != "change" || strings.Contains(fr.raw, id) || !strings.Contains(fr.raw, `"lat":52.5`) {
		t.Errorf("WebSocket change: %v", fr)
	}
	if ev := sse.next(t); strings.Contains(ev.data, id) || !strings.Contains(ev.data, `"lat":52.5`) { // the change
		t.Errorf("SSE change %v", ev)
	}
}
