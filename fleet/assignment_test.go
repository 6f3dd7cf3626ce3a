package fleet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// What the fleet-events consumer derives from one record must fit one
// write: a stop's id and eta and a fence's name are short, and a route's
// progress at its longest is at most MaxProgressBytes (route_too_large).
func TestDerivedSizeLimits(t *testing.T) {
	stops := func(n, idLen int, eta string) string {
		var b strings.Builder
		b.WriteString(`{"driver":"van-1","stops":[`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"id":"%0*d","lat":1,"lng":2,"eta":%q}`, idLen, i, eta)
		}
		b.WriteString("]}")
		return b.String()
	}
	code := func(err error) string {
		var be *BodyError
		if errors.As(err, &be) {
			return be.Code
		}
		return fmt.Sprint(err)
	}
	const eta = "2026-12-07T12:00:00Z"
	if _, err := DecodeAssignment([]byte(stops(1, MaxStopID, eta))); err != nil {
		t.Fatalf("a stop id of %d bytes: %v", MaxStopID, err)
	}
	if _, err := DecodeAssignment([]byte(stops(1, MaxStopID+1, eta))); code(err) != CodeInvalidField {
		t.Fatalf("a stop id of %d bytes: %v", MaxStopID+1, err)
	}
	etaOf := func(n int) string { // an RFC 3339 time of n bytes
		return "2026-12-07T12:00:00." + strings.Repeat("1", n-len("2026-12-07T12:00:00.Z")) + "Z"
	}
	if _, err := DecodeAssignment([]byte(stops(1, 4, etaOf(MaxETA)))); err != nil {
		t.Fatalf("an eta of %d bytes: %v", MaxETA, err)
	}
	if _, err := DecodeAssignment([]byte(stops(1, 4, etaOf(MaxETA+1)))); code(err) != CodeInvalidField {
		t.Fatalf("an eta of %d bytes: %v", MaxETA+1, err)
	}
	// 1,000 stops with short ids fit; with ids of 100 bytes they do not.
	if _, err := DecodeAssignment([]byte(stops(MaxStops, 8, eta))); err != nil {
		t.Fatalf("%d stops: %v", MaxStops, err)
	}
	a, err := DecodeAssignment([]byte(stops(MaxStops, 100, eta)))
	if code(err) != CodeRouteTooLarge {
		t.Fatalf("%d stops of ids of 100 bytes: %v", MaxStops, err)
	}
	if n := a.ProgressBytes(); n <= MaxProgressBytes {
		t.Fatalf("progress of %d bytes refused", n)
	}
	fence := func(name string) error {
		_, err := DecodeFence([]byte(fmt.Sprintf(`{"name":%q,"lat":1,"lng":2,"radius_m":50}`, name)))
		return err
	}
	if err := fence(strings.Repeat("n", MaxFenceName)); err != nil {
		t.Fatalf("a fence name of %d bytes: %v", MaxFenceName, err)
	}
	if err := fence(strings.Repeat("n", MaxFenceName+1)); code(err) != CodeInvalidField {
		t.Fatalf("a fence name of %d bytes: %v", MaxFenceName+1, err)
	}
}
