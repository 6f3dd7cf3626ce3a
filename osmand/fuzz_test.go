package osmand

import (
	"errors"
	"testing"
	"time"
)

// FuzzDecode: no input panics, and every answer is one of the three
// outcomes the listener maps (a report, no device, malformed); a position
// it accepts is inside the valid ranges and its value encodes.
func FuzzDecode(f *testing.F) {
	f.Add("id=352099001761481&timestamp=1763899200&lat=52.52&lon=13.40&speed=10.0&bearing=87.5&altitude=34.0&accuracy=12.0&batt=76.0", "", "")
	f.Add("", "application/x-www-form-urlencoded", "id=a8f3e21c-dev&timestamp=1763899202000&lat=48.8566&lon=2.3522&charge=false")
	f.Add("", "application/json", `{"location":{"timestamp":"2026-11-23T11:59:58.123Z","coords":{"latitude":40.7,"longitude":-74.0,"speed":12.5,"heading":-1},"battery":{"level":0.42,"is_charging":true},"activity":{"type":"still"}},"device_id":"traccar9"}`)
	f.Add("deviceid=x&location=45.1,7.65&timestamp=2026-11-23%2010:00:00", "", "")
	f.Add("id=x&lat=1.0E-4&lon=-2.5e+1&timestamp=2026-11-23T10:00:00+0200", "", "")
	f.Add("id=x&timestamp=1.7638992E9&batt=31", "", "")
	f.Add("id=x&lat=%zz", "application/json", "[1,2]")
	f.Fuzz(func(t *testing.T, query, ct, body string) {
		r, err := Decode(query, ct, []byte(body), Options{SpeedUnit: MPS, Zone: time.UTC, Now: now})
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoDevice) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if r.Device == "" {
			t.Fatal("a report without a device")
		}
		if r.Position && (r.Lat < -90 || r.Lat > 90 || r.Lon < -180 || r.Lon > 180) {
			t.Fatalf("position out of range: %v,%v", r.Lat, r.Lon)
		}
		if r.SpeedKmh != nil && (*r.SpeedKmh < 0 || *r.SpeedKmh > 1000) {
			t.Fatalf("speed %v", *r.SpeedKmh)
		}
		if r.FixGiven && (r.Fix.Before(minFix) || r.Fix.After(now.Add(maxFuture))) {
			t.Fatalf("fix %v", r.Fix)
		}
		if len(r.Attrs) > MaxAttrs {
			t.Fatalf("%d attributes", len(r.Attrs))
		}
		if _, err := r.PointValue(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.StatusValue("driver", now); err != nil {
			t.Fatal(err)
		}
	})
}
