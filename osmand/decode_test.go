package osmand

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func opts() Options { return Options{SpeedUnit: Knots, Zone: time.UTC, Now: now} }

func f(v float64) *float64 { return &v }

func near(a *float64, b float64) bool { return a != nil && math.Abs(*a-b) < 1e-3 } // speeds are kept to 3 decimals

// want describes the parts of a Report a case checks.
type want struct {
	device   string
	position bool
	lat, lon float64
	fix      time.Time
	speed    *float64 // km/h
	heading  *float64
	altitude *float64
	accuracy *float64
	battery  *float64
	charging *bool
	attrs    map[string]any
}

func check(t *testing.T, name string, r Report, err error, w want) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if r.Device != w.device || r.Position != w.position {
		t.Fatalf("%s: device %q position %v, want %q %v", name, r.Device, r.Position, w.device, w.position)
	}
	if w.position && (math.Abs(r.Lat-w.lat) > 1e-9 || math.Abs(r.Lon-w.lon) > 1e-9) {
		t.Fatalf("%s: at %v,%v want %v,%v", name, r.Lat, r.Lon, w.lat, w.lon)
	}
	if !w.fix.IsZero() && !r.Fix.Equal(w.fix) {
		t.Fatalf("%s: fix %v want %v", name, r.Fix, w.fix)
	}
	for _, c := range []struct {
		n         string
		got, want *float64
	}{{"speed", r.SpeedKmh, w.speed}, {"heading", r.Heading, w.heading}, {"altitude", r.Altitude, w.altitude},
		{"accuracy", r.Accuracy, w.accuracy}, {"battery", r.Battery, w.battery}} {
		if (c.want == nil) != (c.got == nil) || (c.want != nil && !near(c.got, *c.want)) {
			t.Fatalf("%s: %s = %v want %v", name, c.n, deref(c.got), deref(c.want))
		}
	}
	if (w.charging == nil) != (r.Charging == nil) || (w.charging != nil && *w.charging != *r.Charging) {
		t.Fatalf("%s: charging %v want %v", name, r.Charging, w.charging)
	}
	if w.attrs != nil {
		if len(r.Attrs) != len(w.attrs) {
			t.Fatalf("%s: attrs %v want %v", name, r.Attrs, w.attrs)
		}
		for k, v := range w.attrs {
			if r.Attrs[k] != v {
				t.Fatalf("%s: attr %s = %#v want %#v", name, k, r.Attrs[k], v)
			}
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func tr() *bool { b := true; return &b }
func fa() *bool { b := false; return &b }

// Real-looking requests, one or more per app version.
func TestDecodeAppVersions(t *testing.T) {
	form := "application/x-www-form-urlencoded"
	cases := []struct {
		name      string
		query, ct string
		body      string
		want      want
	}{
		{
			name:  "Traccar Client Android 6 (legacy): POST with the query string, empty body",
			query: "id=352099001761481&timestamp=1763899200&lat=52.520008&lon=13.404954&speed=10.0&bearing=87.5&altitude=34.0&accuracy=12.0&batt=76.0",
			want: want{device: "352099001761481", position: true, lat: 52.520008, lon: 13.404954,
				fix: time.Unix(1763899200, 0), speed: f(18.52), heading: f(87.5), altitude: f(34), accuracy: f(12), battery: f(76)},
		},
		{
			name:  "Traccar Client iOS 6 (legacy): the same shape with charge",
			query: "id=ios-7d1c2f0a9b&timestamp=1763899201&lat=-33.8688&lon=151.2093&speed=0.0&bearing=0.0&altitude=58.1&accuracy=5.0&batt=100.0&charge=true",
			want: want{device: "ios-7d1c2f0a9b", position: true, lat: -33.8688, lon: 151.2093,
				fix: time.Unix(1763899201, 0), speed: f(0), heading: f(0), altitude: f(58.1), accuracy: f(5), battery: f(100), charging: tr()},
		},
		{
			name: "Traccar Client Android 10.x: form body",
			ct:   form,
			body: "id=android10-a8f3e21c&timestamp=1763899202000&lat=48.8566&lon=2.3522&speed=5.39&bearing=270.0&altitude=35.0&accuracy=3.9&batt=54.0&charge=false",
			want: want{device: "android10-a8f3e21c", position: true, lat: 48.8566, lon: 2.3522,
				fix: time.UnixMilli(1763899202000), speed: f(5.39 * 1.852), heading: f(270), altitude: f(35), accuracy: f(3.9), battery: f(54), charging: fa()},
		},
		{
			name:  "Traccar Client 10.x: query and form merged, the body wins",
			query: "id=merged-device-01&lat=1&lon=1",
			ct:    form + "; charset=UTF-8",
			body:  "lat=10.5&lon=20.25&timestamp=1763899203",
			want:  want{device: "merged-device-01", position: true, lat: 10.5, lon: 20.25, fix: time.Unix(1763899203, 0)},
		},
		{
			name: "Traccar Client 9.x iOS: JSON body, m/s, battery 0..1",
			ct:   "application/json",
			body: `{"location":{"timestamp":"2026-11-23T11:59:58.123Z","coords":{"latitude":40.7128,"longitude":-74.006,"accuracy":4.8,"speed":12.5,"heading":181.2,"altitude":10.4},"is_moving":true,"odometer":1234.5,"event":"motionchange","battery":{"level":0.42,"is_charging":true},"activity":{"type":"in_vehicle"},"extras":{}},"device_id":"traccar9-ios-55aa"}`,
			want: want{device: "traccar9-ios-55aa", position: true, lat: 40.7128, lon: -74.006,
				fix: time.Date(2026, 11, 23, 11, 59, 58, 123e6, time.UTC), speed: f(45), heading: f(181.2), altitude: f(10.4), accuracy: f(4.8), battery: f(42), charging: tr(),
				attrs: map[string]any{"is_moving": true, "odometer": 1234.5, "event": "motionchange", "activity.type": "in_vehicle"}},
		},
		{
			name: "Traccar Client 9.x Android: -1 means unknown speed, heading, battery",
			ct:   "application/json; charset=utf-8",
			body: `{"location":{"timestamp":"2026-11-23T13:00:00+01:00","coords":{"latitude":51.5,"longitude":-0.12,"accuracy":20,"speed":-1,"heading":-1,"altitude":0},"battery":{"level":-1,"is_charging":false},"is_moving":false},"device_id":12345678}`,
			want: want{device: "12345678", position: true, lat: 51.5, lon: -0.12, fix: now, accuracy: f(20), altitude: f(0), charging: fa(),
				attrs: map[string]any{"is_moving": false}},
		},
		{
			name: "Traccar Client 9.x: heartbeat, a location without coords",
			ct:   "application/json",
			body: `{"location":{"timestamp":"2026-11-23T11:00:00Z","event":"heartbeat","battery":{"level":0.9,"is_charging":false}},"device_id":"traccar9-heartbeat"}`,
			want: want{device: "traccar9-heartbeat", position: false, fix: now.Add(-time.Hour), battery: f(90), charging: fa(),
				attrs: map[string]any{"event": "heartbeat"}},
		},
		{
			name:  "OsmAnd online tracking: GET, timestamp in ms, hdop, speed in m/s as configured",
			query: "lat=59.3293&lon=18.0686&timestamp=1763899204123&hdop=3.2&altitude=28.0&speed=0.0&id=osmand-phone-42",
			want:  want{device: "osmand-phone-42", position: true, lat: 59.3293, lon: 18.0686, fix: time.UnixMilli(1763899204123), speed: f(0), altitude: f(28)},
		},
		{
			name:  "deviceid alias, heading alias, location=lat,lon",
			query: "deviceid=alias-device-01&location=45.1,7.65&heading=12&timestamp=1763899205",
			want:  want{device: "alias-device-01", position: true, lat: 45.1, lon: 7.65, heading: f(12), fix: time.Unix(1763899205, 0)},
		},
		{
			name:  "exponent numbers",
			query: "id=exp-device-0001&lat=1.0E-4&lon=-2.5e+1&speed=1E1&altitude=1.2E2&timestamp=1763899206",
			want:  want{device: "exp-device-0001", position: true, lat: 0.0001, lon: -25, speed: f(18.52), altitude: f(120), fix: time.Unix(1763899206, 0)},
		},
		{
			name:  "heartbeat: no lat/lon, battery only",
			query: "id=heartbeat-dev-01&timestamp=1763899207&batt=31.0&charge=true",
			want:  want{device: "heartbeat-dev-01", position: false, fix: time.Unix(1763899207, 0), battery: f(31), charging: tr()},
		},
		{
			name:  "extra fields kept as attributes: numbers and strings",
			query: "id=attrs-device-01&lat=1&lon=2&timestamp=1763899208&driverUniqueId=A17&rpm=2200&motion=true&ignition=1.5e0",
			want: want{device: "attrs-device-01", position: true, lat: 1, lon: 2, fix: time.Unix(1763899208, 0),
				attrs: map[string]any{"driverUniqueId": "A17", "rpm": 2200.0, "motion": "true", "ignition": 1.5}},
		},
		{
			name:  "percent-encoded values",
			query: "id=enc%2Ddevice%2D01&lat=1&lon=2&timestamp=2026-11-23%2010%3A00%3A00&note=hello%20world",
			want: want{device: "enc-device-01", position: true, lat: 1, lon: 2, fix: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
				attrs: map[string]any{"note": "hello world"}},
		},
	}
	for _, c := range cases {
		r, err := Decode(c.query, c.ct, []byte(c.body), opts())
		check(t, c.name, r, err, c.want)
	}
}

func TestTimestampRules(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no tzdata:", err) // the zone rule is also covered with a fixed zone below
	}
	fixed := time.FixedZone("X", -5*3600)
	cases := []struct {
		ts   string
		zone *time.Location
		want time.Time
	}{
		{"1763899200", time.UTC, time.Unix(1763899200, 0)},         // seconds
		{"1000000000", time.UTC, time.Unix(1000000000, 0)},         // small: seconds
		{"2147483647", time.UTC, time.UnixMilli(2147483647)},       // at the limit: milliseconds (1970 → refused below)
		{"1763899200123", time.UTC, time.UnixMilli(1763899200123)}, // milliseconds
		{"1.7638992E9", time.UTC, time.Unix(1763899200, 0)},        // exponent seconds
		{"2026-11-23T10:00:00Z", time.UTC, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
		{"2026-11-23T10:00:00.5+02:00", time.UTC, time.Date(2026, 11, 23, 8, 0, 0, 5e8, time.UTC)},
		{"2026-11-23T10:00:00%2B0200", time.UTC, time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)},
		{"2026-11-23T10:00:00", fixed, time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)}, // no offset: configured zone
		{"2026-11-23 10:00:00", fixed, time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)},
		{"2026-11-23 10:00:00", berlin, time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)},
		{"2026-07-01 10:00:00", berlin, time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)}, // summer time
		{"", time.UTC, now}, // absent: receipt
	}
	for _, c := range cases {
		o := opts()
		o.Zone = c.zone
		r, err := Decode("id=ts-device-0001&lat=1&lon=1&timestamp="+c.ts, "", nil, o)
		if c.ts == "2147483647" {
			if !errors.Is(err, ErrMalformed) { // 1970 is before minFix
				t.Fatalf("%s: %v", c.ts, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.ts, err)
		}
		if !r.Fix.Equal(c.want) || r.FixGiven != (c.ts != "") {
			t.Fatalf("%s in %v: %v (given %v), want %v", c.ts, c.zone, r.Fix, r.FixGiven, c.want)
		}
	}
}

func TestSpeedUnits(t *testing.T) {
	for _, c := range []struct {
		unit SpeedUnit
		want float64
	}{{Knots, 18.52}, {KMH, 10}, {MPS, 36}, {MPH, 16.09344}, {"", 18.52}} {
		o := opts()
		o.SpeedUnit = c.unit
		r, err := Decode("id=speed-device-01&lat=1&lon=1&speed=10", "", nil, o)
		if err != nil || !near(r.SpeedKmh, c.want) {
			t.Fatalf("%s: %v %v want %v", c.unit, deref(r.SpeedKmh), err, c.want)
		}
	}
	// JSON speed is m/s whatever the setting.
	o := opts()
	o.SpeedUnit = KMH
	r, err := Decode("", "application/json", []byte(`{"device_id":"json-speed-01","location":{"coords":{"latitude":1,"longitude":1,"speed":10}}}`), o)
	if err != nil || !near(r.SpeedKmh, 36) {
		t.Fatalf("json: %v %v", deref(r.SpeedKmh), err)
	}
	r, _ = Decode("id=speed-device-01&lat=1&lon=1&speed=-1", "", nil, opts())
	if r.SpeedKmh != nil {
		t.Fatalf("negative speed kept: %v", *r.SpeedKmh)
	}
	if !KMH.Valid() || SpeedUnit("furlongs").Valid() {
		t.Fatal("Valid")
	}
}

func TestMalformed(t *testing.T) {
	cases := []struct{ name, query, ct, body string }{
		{"lat without lon", "id=bad-device-0001&lat=1", "", ""},
		{"lat out of range", "id=bad-device-0001&lat=91&lon=1", "", ""},
		{"lon out of range", "id=bad-device-0001&lat=1&lon=-181", "", ""},
		{"lat not a number", "id=bad-device-0001&lat=north&lon=1", "", ""},
		{"NaN", "id=bad-device-0001&lat=NaN&lon=1", "", ""},
		{"Inf", "id=bad-device-0001&lat=1&lon=Inf", "", ""},
		{"location without comma", "id=bad-device-0001&location=12.5", "", ""},
		{"bad timestamp", "id=bad-device-0001&lat=1&lon=1&timestamp=yesterday", "", ""},
		{"NaN timestamp", "id=bad-device-0001&lat=1&lon=1&timestamp=NaN", "", ""},
		{"timestamp before 2000", "id=bad-device-0001&lat=1&lon=1&timestamp=315964800", "", ""},
		{"timestamp far ahead", "id=bad-device-0001&lat=1&lon=1&timestamp=1900000000", "", ""},
		{"speed over 1000 km/h", "id=bad-device-0001&lat=1&lon=1&speed=600", "", ""},
		{"bearing over 360", "id=bad-device-0001&lat=1&lon=1&bearing=361", "", ""},
		{"charge not a bool", "id=bad-device-0001&lat=1&lon=1&charge=maybe", "", ""},
		{"bad escape", "id=bad-device-0001&lat=1&lon=1&x=%zz", "", ""},
		{"json syntax", "", "application/json", `{"device_id":"bad-device-0001","location":`},
		{"json no location", "", "application/json", `{"device_id":"bad-device-0001"}`},
		{"json lat as string", "", "application/json", `{"device_id":"bad-device-0001","location":{"coords":{"latitude":"1","longitude":1}}}`},
		{"json two values", "", "application/json", `{"device_id":"bad-device-0001","location":{}} {}`},
	}
	for _, c := range cases {
		r, err := Decode(c.query, c.ct, []byte(c.body), opts())
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %v (%+v)", c.name, err, r)
		}
		if r.Device != "bad-device-0001" {
			t.Fatalf("%s: the device id is lost for the quarantine: %q", c.name, r.Device)
		}
	}
	many := "id=many-attrs-0001&lat=1&lon=1"
	for i := range MaxAttrs + 1 {
		many += "&a" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=1"
	}
	if _, err := Decode(many, "", nil, opts()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many attributes: %v", err)
	}
}

func TestNoDevice(t *testing.T) {
	for _, c := range []struct{ q, ct, body string }{
		{"lat=1&lon=1", "", ""},
		{"id=&lat=1&lon=1", "", ""},
		{"", "application/json", `{"location":{"coords":{"latitude":1,"longitude":1}}}`},
		{"", "application/json", `not json`},
	} {
		if _, err := Decode(c.q, c.ct, []byte(c.body), opts()); !errors.Is(err, ErrNoDevice) {
			t.Fatalf("%q %q: %v", c.q, c.body, err)
		}
	}
	// The id may also come in the query of a JSON request.
	r, err := Decode("id=query-id-0001", "application/json", []byte(`{"location":{"coords":{"latitude":1,"longitude":1}}}`), opts())
	if err != nil || r.Device != "query-id-0001" || !r.Position {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestPointValue(t *testing.T) {
	r, err := Decode("id=value-device-01&lat=1.5&lon=2.5&speed=10&bearing=90&batt=50&accuracy=3&altitude=7&hdop=1.1&foo=bar&timestamp=1763899200123", "", nil, opts())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := r.PointValue()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"lat": 1.5, "lng": 2.5, "ts": "2025-11-23T12:00:00.123Z", "speed_kmh": 18.52, "heading": 90.0,
		"battery": 50.0, "accuracy": 3.0, "altitude": 7.0, "hdop": 1.1}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("%s = %#v want %#v in %s", k, m[k], v, raw)
		}
	}
	if strings.Contains(string(raw), "value-device-01") {
		t.Fatalf("the point carries the device id (the phone's credential): %s", raw)
	}
	if a, _ := m["attrs"].(map[string]any); a["foo"] != "bar" {
		t.Fatalf("attrs in %s", raw)
	}
	if _, ok := m["seq"]; ok {
		t.Fatalf("seq is the committer's: %s", raw)
	}
	r, _ = Decode("id=value-device-01&lat=1&lon=1", "", nil, opts())
	raw, _ = r.PointValue()
	if err := json.Unmarshal(raw, &m); err != nil || m["ts_is_receipt"] != true || m["ts"] != "2026-11-23T12:00:00.000Z" {
		t.Fatalf("receipt time: %s", raw)
	}
}
