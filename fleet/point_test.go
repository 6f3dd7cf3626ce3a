package fleet

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var pointSamples = []string{
	`{"seq":1,"lat":48.1,"lng":11.5,"ts":"2026-11-23T10:00:00Z","speed_kmh":42.5,"heading":180}`,
	`{"seq":7,"lat":-33.9,"lng":151.2,"ts":"2026-11-23T10:00:00.123+01:00"}`,
	`{"lat":0,"lng":0}`,
	`{"seq":2,"lat":1e1,"lng":-1.5E-3,"ts":"x","extra":"y","n":3}`,
	`{"seq":3,"lat":1,"lng":2,"lat":5}`,
	`{"seq":3,"Lat":1,"lng":2}`,
	`{"seq":3, "lat":1,"lng":2}`,
	`{"seq":3,"lat":1,"lng":2,"ts":"a\"b"}`,
	`{"seq":3,"lat":1,"lng":2,"more":{"a":1}}`,
	`{"seq":3,"lat":null,"lng":2}`,
	`{"seq":-1,"lat":1,"lng":2}`,
	`{"seq":1.5,"lat":1,"lng":2}`,
	`{"seq":"1","lat":1,"lng":2}`,
	`{"seq":1,"lat":1}`,
	`{"seq":1,"lat":1,"lng":2}x`,
	`{"seq":1,"lat":1,"lng":2,}`,
	`{}`,
	`[]`,
	``,
	`{"seq":1,"lat":1,"lng":2`,
	`{"seq":1,"lat":1,"lng":`,
	`{"seq":1,"lat":1,"lng":2,"ts":"2026`,
}

// slowPoint is what encoding/json alone reads of a stored point.
func slowPoint(in string) (storedPoint, error) {
	var s storedPoint
	err := json.Unmarshal([]byte(in), &s)
	if err == nil && (s.Lat == nil || s.Lng == nil) {
		err = errNoLatLng
	}
	return s, err
}

type jsonErr string

func (e jsonErr) Error() string { return string(e) }

const errNoLatLng = jsonErr("no lat or lng")

// fast must answer what encoding/json answers, or leave the value to it.
func checkFastPoint(t *testing.T, in string) {
	var fast PointValue
	ok := fast.fast([]byte(in))
	slow, slowErr := slowPoint(in)
	if !ok {
		return // Decode falls back to encoding/json
	}
	if slowErr != nil {
		t.Fatalf("%q: fast path accepted what encoding/json refuses (%v)", in, slowErr)
	}
	if fast.Seq != slow.Seq || fast.Lat != *slow.Lat || fast.Lng != *slow.Lng || !fast.TS.Equal(ParseTime(slow.TS)) ||
		fast.SpeedKmh != slow.SpeedKmh || fast.Heading != slow.Heading {
		t.Fatalf("%q: fast %+v, encoding/json %+v", in, fast, slow)
	}
}

func TestFastPointMatchesEncodingJSON(t *testing.T) {
	fastOK := 0
	for _, in := range pointSamples {
		checkFastPoint(t, in)
		var p PointValue
		if p.fast([]byte(in)) {
			fastOK++
		}
		var d PointValue
		err := d.Decode([]byte(in))
		_, refErr := slowPoint(in)
		if (err == nil) != (refErr == nil) {
			t.Errorf("%q: Decode error %v, encoding/json %v", in, err, refErr)
		}
	}
	if fastOK < 4 {
		t.Fatalf("the fast path took only %d of the samples", fastOK)
	}
}

// A value Decode refuses still gives what parsed (the dashboard shows it).
func TestPointDecodeKeepsWhatParsed(t *testing.T) {
	var p PointValue
	if err := p.Decode([]byte(`{"seq":"7","lat":1.5,"lng":2.5,"ts":"2026-11-23T10:00:00Z"}`)); err == nil {
		t.Fatal("a string seq was taken")
	}
	if p.Lat != 1.5 || p.Lng != 2.5 || p.TS.IsZero() {
		t.Fatalf("%+v", p)
	}
	p = PointValue{Seq: 9}
	if err := p.Decode([]byte(`{"seq":1,"lat":1}`)); err == nil || p.Seq != 1 || p.Lat != 1 || p.Lng != 0 {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestPointAppendJSON(t *testing.T) {
	p := PointValue{Seq: 42, Lat: 52.5, Lng: -13.25, TS: time.Date(2026, 11, 23, 10, 0, 0, 5, time.FixedZone("x", 3600)), SpeedKmh: 31.25, Heading: 359.96}
	got := string(p.AppendJSON([]byte("x")))
	want := `x{"seq":42,"lat":52.500000,"lng":-13.250000,"ts":"2026-11-23T09:00:00.000000005Z","speed_kmh":31.2,"heading":360.0}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var back PointValue
	if !back.fast([]byte(got[1:])) {
		t.Fatal("the encoding is not the fast path's form")
	}
	pts, err := DecodePoints([]byte(got[1:]), 1)
	if err != nil || pts[0].Seq != 42 {
		t.Fatalf("the driver API refuses its own encoding: %v", err)
	}
}

func FuzzPointDecode(f *testing.F) {
	for _, s := range pointSamples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkFastPoint(t, in)
		var p PointValue
		_ = p.Decode([]byte(in)) // never panics
	})
}

// BenchmarkPointDecode: the fast path against the one before issue 16
// and encoding/json, on the form the driver endpoint stores.
func BenchmarkPointDecode(b *testing.B) {
	in := []byte(pointSamples[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var p PointValue
			if !p.fast(in) {
				b.Fatal("not fast")
			}
		}
	})
	b.Run("before", func(b *testing.B) { // the fast path before issue 16's scanner
		for b.Loop() {
			var p PointValue
			if !refFast(&p, in) {
				b.Fatal("not fast")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var p storedPoint
			if err := json.Unmarshal(in, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecodePoints: the driver decoder never panics, and what it accepts
// is what the log may keep: every value is one valid JSON object whose seq
// is the point's seq, within the request's bound.
func FuzzDecodePoints(f *testing.F) {
	for _, s := range []string{
		`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
		`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z","speed_kmh":3,"heading":90}, {"seq":2,"lat":-90,"lng":180,"ts":"2026-11-23T10:00:00.5+01:00"}]`,
		`[]`, `[{"seq":1}]`, `{"seq":"1"}`, `[1,2]`, `null`, `[{"seq":1,"lat":1,"lng":1,"ts":"x"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		pts, err := DecodePoints(body, 100)
		if err != nil {
			if _, ok := err.(*BodyError); !ok {
				t.Fatalf("error is not a BodyError: %v", err)
			}
			return
		}
		if len(pts) == 0 || len(pts) > 100 {
			t.Fatalf("%d points accepted", len(pts))
		}
		for _, p := range pts {
			var v struct {
				Seq uint64 `json:"seq"`
			}
			if err := json.Unmarshal(p.Value, &v); err != nil || v.Seq != p.Seq || p.Seq == 0 {
				t.Fatalf("accepted point %q: seq %d, decode %v", p.Value, p.Seq, err)
			}
		}
	})
}

// BenchmarkDecodePoints: a phone's batch of 256 points, as the driver
// endpoint decodes it.
func BenchmarkDecodePoints(b *testing.B) {
	var body []byte
	body = append(body, '[')
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 256 {
		if i > 0 {
			body = append(body, ',')
		}
		p := PointValue{Seq: uint64(i + 1), Lat: 52.4, Lng: 13.3, TS: t0.Add(time.Duration(i) * time.Second), SpeedKmh: 40, Heading: 90}
		body = p.AppendJSON(body)
	}
	body = append(body, ']')
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodePoints(body, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodePointsRefusals(t *testing.T) {
	ts := `"2026-11-23T10:00:00Z"`
	for _, c := range []struct{ body, code, msg string }{
		{`{"lat":1,"lng":2,"ts":` + ts + `}`, CodeInvalidField, `field "seq": required (the driver's sequence number, an integer >= 1)`},
		{`{"seq":0,"lat":1,"lng":2,"ts":` + ts + `}`, CodeInvalidField, `field "seq": must be >= 1`},
		{`{"seq":1,"lat":91,"lng":2,"ts":` + ts + `}`, CodeInvalidField, `field "lat": latitude 91 is outside -90..90`},
		{`{"seq":1,"lng":2,"ts":` + ts + `}`, CodeInvalidField, `field "lat": required`},
		{`[{"seq":1,"lat":1,"lng":181,"ts":` + ts + `}]`, CodeInvalidField, `field "[0].lng": longitude 181 is outside -180..180`},
		{`{"seq":1,"lat":1,"lng":2,"ts":` + ts + `,"speed_kmh":-1}`, CodeInvalidField, `field "speed_kmh": -1 is outside 0..1000`},
		{`[{"seq":1,"lat":1,"lng":2,"ts":` + ts + `},{"seq":2,"lat":1,"lng":2,"ts":` + ts + `,"heading":361}]`, CodeInvalidField, `field "[1].heading": 361 is outside 0..360`},
		{`{"seq":1,"lat":1,"lng":2}`, CodeInvalidField, `field "ts": required (RFC 3339 time)`},
		{`[{"seq":1,"lat":1,"lng":2,"ts":"noon"}]`, CodeInvalidField, `field "[0].ts": "noon" is not an RFC 3339 time`},
		{`{"seq":"1"}`, CodeInvalidField, `field "seq": expected uint64, got JSON string`},
		{`{"seq":1,"lat":1,"lng":2,"ts":` + ts + `,"alt":3}`, CodeUnknownField, `unknown field "alt"`},
		{`[{"seq":1,"alt":3}]`, CodeUnknownField, `point 0: unknown field "alt"`},
		{`[]`, CodeBadJSON, `empty array: send at least one point`},
		{`{"seq":1} {}`, CodeBadJSON, `the body holds more than one JSON value`},
		{`[{"seq":1,"lat":1,"lng":2,"ts":` + ts + `},{"seq":2,"lat":1,"lng":2,"ts":` + ts + `},{"seq":3}]`, CodeTooManyPoints, `more than 2 points in one request`},
	} {
		_, err := DecodePoints([]byte(c.body), 2)
		be, ok := err.(*BodyError)
		if !ok || be.Code != c.code || be.Message != c.msg || Message(err) != c.msg || err.Error() != c.code+": "+c.msg {
			t.Errorf("%s: got %#v, want %s %q", c.body, err, c.code, c.msg)
		}
		if c.code == CodeInvalidField && !strings.HasPrefix(c.msg, `field "`+be.Field+`"`) {
			t.Errorf("%s: field %q", c.body, be.Field)
		}
	}
}
