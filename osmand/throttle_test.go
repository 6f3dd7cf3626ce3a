package osmand

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"routehound/fleet"
)

// Issue 18, point 5: guessing device ids is limited per source address.
// Unknown and registered ids get the same answer; a phone repeating its
// one unknown id costs one guess; past MaxUnknownDevices distinct unknown
// ids the address's requests (a registered device's too) are closed
// without an answer and counted; another address's phones are untouched.
func TestListenerThrottlesDeviceGuessing(t *testing.T) {
	r := newRigWith(t, nil, func(c *Config) { c.MaxUnknownDevices = 5; c.UnknownDeviceWindow = time.Hour })
	known := "/?id=" + devA + "&lat=1&lon=2&timestamp=1763899200"
	_, knownBody, err := r.send(t, "GET", known, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The answer to an unknown id is the answer to a registered one.
	st, unknownBody, err := r.send(t, "GET", "/?id=guess-000000&lat=1&lon=2", "", "")
	if err != nil || st != http.StatusOK || unknownBody != knownBody {
		t.Fatalf("unknown id: %d %q %v; a registered one: %q", st, unknownBody, err, knownBody)
	}
	for range 20 { // one misconfigured phone repeating its id: one guess
		r.want(t, 200, "GET", "/?id=guess-000000&lat=1&lon=2", "", "")
	}
	for i := 1; i < 5; i++ {
		r.want(t, 200, "GET", fmt.Sprintf("/?id=guess-%06d&lat=1&lon=2", i), "", "")
	}
	// 5 distinct guesses: the address is blocked, whatever it sends.
	for _, path := range []string{"/?id=guess-999999&lat=1&lon=2", known} {
		if st, b, err := r.send(t, "GET", path, "", ""); err == nil {
			t.Fatalf("%s from a blocked address answered %d %q", path, st, b)
		}
	}
	// At least one per request: net/http's client may resend a GET once
	// on a fresh connection when a reused one closes without an answer.
	if got := r.e.Phone().Throttled.Load(); got < 2 {
		t.Fatalf("throttled %d, want 2 or more", got)
	}
	if got := r.e.Phone().Unknown.Load(); got != 25 {
		t.Fatalf("unknown %d, want 25", got)
	}
	// A registered phone on another address is untouched.
	req := httptest.NewRequest("GET", "/?id="+devB+"&lat=3&lon=4&timestamp=1763899300", nil)
	req.RemoteAddr = "192.0.2.77:40000"
	w := httptest.NewRecorder()
	r.l.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("another address's registered phone: %d %q", w.Code, w.Body.String())
	}
	if got := r.state(t, fleet.TablePositions, "bob"); got["lat"] != 3.0 {
		t.Fatalf("bob's point from another address not stored: %v", got)
	}
	// Nothing of a guess was stored.
	if n := len(r.records(t, fleet.TableQuarantine)) + len(r.records(t, fleet.TableDeviceStatus)); n != 0 {
		t.Fatalf("%d records of guesses", n)
	}
}

// Wrong path secrets count as guesses too (404, before any device is
// looked at: the same answer for a registered and an unknown id).
func TestListenerThrottlesSecretGuessing(t *testing.T) {
	r := newRigWith(t, nil, func(c *Config) {
		c.PathSecret = "right-secret-1"
		c.MaxUnknownDevices = 3
		c.UnknownDeviceWindow = time.Hour
	})
	_, b1, _ := r.send(t, "GET", "/osmand/wrong-0/?id="+devA+"&lat=1&lon=2", "", "")
	_, b2, _ := r.send(t, "GET", "/osmand/wrong-0/?id=guess-000001&lat=1&lon=2", "", "")
	if b1 != b2 {
		t.Fatalf("a wrong secret answers differently for a registered (%q) and an unknown (%q) id", b1, b2)
	}
	r.want(t, 404, "GET", "/osmand/wrong-1/?id="+devA+"&lat=1&lon=2", "", "")
	r.want(t, 404, "GET", "/osmand/wrong-2/?id="+devA+"&lat=1&lon=2", "", "")
	if st, _, err := r.send(t, "GET", "/osmand/right-secret-1/?id="+devA+"&lat=1&lon=2&timestamp=1763899200", "", ""); err == nil {
		t.Fatalf("the right secret from a blocked address answered %d", st)
	}
}
