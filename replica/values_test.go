package replica

import (
	"encoding/json"
	"testing"
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

// fast must answer what encoding/json answers, or leave the value to it.
func checkFastPoint(t *testing.T, in string) {
	var fast pointValue
	ok := fast.fast([]byte(in))
	var slow pointValue
	slowErr := json.Unmarshal([]byte(in), &slow)
	if slowErr == nil && (slow.Lat == nil || slow.Lng == nil) {
		slowErr = errNoLatLng
	}
	if !ok {
		return // decode falls back to encoding/json
	}
	if slowErr != nil {
		t.Fatalf("%q: fast path accepted what encoding/json refuses (%v)", in, slowErr)
	}
	if fast.Seq != slow.Seq || *fast.Lat != *slow.Lat || *fast.Lng != *slow.Lng || fast.TSRaw != slow.TSRaw ||
		fast.SpeedKmh != slow.SpeedKmh || fast.Heading != slow.Heading {
		t.Fatalf("%q: fast %+v, encoding/json %+v", in, fast, slow)
	}
}

type jsonErr string

func (e jsonErr) Error() string { return string(e) }

const errNoLatLng = jsonErr("no lat or lng")

func TestFastPointMatchesEncodingJSON(t *testing.T) {
	fastOK := 0
	for _, in := range pointSamples {
		checkFastPoint(t, in)
		var p pointValue
		if p.fast([]byte(in)) {
			fastOK++
		}
		var d pointValue
		err := d.decode([]byte(in))
		var ref pointValue
		refErr := json.Unmarshal([]byte(in), &ref)
		if (err == nil) != (refErr == nil && ref.Lat != nil && ref.Lng != nil) {
			t.Errorf("%q: decode error %v, encoding/json %v %+v", in, err, refErr, ref)
		}
	}
	if fastOK < 4 {
		t.Fatalf("the fast path took only %d of the samples", fastOK)
	}
}

func FuzzPointDecode(f *testing.F) {
	for _, s := range pointSamples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkFastPoint(t, in)
		var p pointValue
		_ = p.decode([]byte(in)) // never panics
	})
}

// BenchmarkPointDecode: the fast path against encoding/json on the form
// the driver endpoint stores.
func BenchmarkPointDecode(b *testing.B) {
	in := []byte(pointSamples[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var p pointValue
			if !p.fast(in) {
				b.Fatal("not fast")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var p pointValue
			if err := json.Unmarshal(in, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
