package api_test

// Issue 18, point 5 over HTTP: the paths that take a device id tell no
// one but an admin which ids exist.

import (
	"fmt"
	"net/http"
	"testing"

	"routehound/api"
)

// TestDeviceIDsAnswerAlike (point 5): every HTTP path that takes a device
// id answers a non-admin token, or none, the same for an id that exists
// and one that does not, before the id is looked at.
func TestDeviceIDsAnswerAlike(t *testing.T) {
	f := newFixture(t)
	known, unknown := "phone-known-0001", "phone-nope-0001"
	wantStatus(t, f.do(t, "PUT", "/v1/devices/"+known, tok(api.RoleAdmin), `{"driver":"van-1"}`), http.StatusCreated)
	for _, ep := range []struct{ method, path, body string }{
		{"GET", "/v1/devices/%s", ""},
		{"PUT", "/v1/devices/%s", `{"driver":"van-2"}`},
		{"DELETE", "/v1/devices/%s", ""},
		{"GET", "/v1/tables/devices/keys/%s", ""},
		{"GET", "/v1/tables/device_status/keys/%s", ""},
	} {
		for _, role := range append([]api.Role{""}, fxRoles...) {
			if role == api.RoleAdmin {
				continue
			}
			var body any
			if ep.body != "" {
				body = ep.body
			}
			a := f.do(t, ep.method, fmt.Sprintf(ep.path, known), tok(role), body)
			b := f.do(t, ep.method, fmt.Sprintf(ep.path, unknown), tok(role), body)
			if a.status != b.status || string(a.body) != string(b.body) || a.status < 400 {
				t.Errorf("%s %s as %q: an existing id answers %v, an unknown one %v", ep.method, ep.path, role, a, b)
			}
		}
	}
	// The device is untouched by all that.
	r := f.do(t, "GET", "/v1/devices/"+known, tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	if d := str(t, object(t, r)["driver"]); d != "van-1" {
		t.Fatalf("device after the probes: %s", r.body)
	}
}
