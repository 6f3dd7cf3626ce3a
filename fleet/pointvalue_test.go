package fleet

import (
	"math"
	"strconv"
	"testing"
	"time"
)

// timeSeeds are times ParseTime reads by hand and times it leaves to
// time.Parse; FuzzParseTimeAgrees starts from them.
var timeSeeds = []string{
	"2026-11-23T10:00:00Z",
	"2026-11-23T10:00:00.5Z",
	"2026-11-23T10:00:00.123456789Z",
	"2026-11-23T10:00:00.1234567891Z",
	"2024-02-29T23:59:59Z",
	"2023-02-29T00:00:00Z",
	"2000-02-29T00:00:00Z",
	"1900-02-29T00:00:00Z",
	"0000-01-01T00:00:00Z",
	"0000-03-01T00:00:00Z",
	"9999-12-31T23:59:59.999999999Z",
	"1969-12-31T23:59:59.9Z",
	"1970-01-01T00:00:00Z",
	"2026-13-01T00:00:00Z",
	"2026-11-31T00:00:00Z",
	"2026-11-23T24:00:00Z",
	"2026-11-23T10:60:00Z",
	"2026-11-23T10:00:60Z",
	"2026-11-23T10:00:00.Z",
	"2026-11-23T10:00:00,5Z",
	"2026-11-23t10:00:00Z",
	"2026-11-23T10:00:00z",
	"2026-11-23T10:00:00+01:00",
	"2026-11-23T10:00:00.5-00:00",
	"2026-1-23T10:00:00Z",
	"+026-11-23T10:00:00Z",
	"2026-11-23T10:00:00",
	"2026-11-23 10:00:00Z",
	"noon", "", "Z",
}

// TestParseTimeTakesTheCommonForm: the UTC form is read by hand, the rest
// left to time.Parse, and both answer what time.Parse answers.
func TestParseTimeTakesTheCommonForm(t *testing.T) {
	for _, s := range timeSeeds[:13] {
		if _, ok := parseTimeZ(s); !ok && s != "2023-02-29T00:00:00Z" && s != "1900-02-29T00:00:00Z" && s != "2026-11-23T10:00:00.1234567891Z" {
			t.Errorf("%q: left to time.Parse", s)
		}
	}
	for _, s := range timeSeeds[13:] {
		if tm, ok := parseTimeZ(s); ok {
			t.Errorf("%q: read by hand as %v", s, tm)
		}
	}
	for _, s := range timeSeeds {
		checkParseTime(t, s)
	}
	if got := ParseTime("2024-02-29T23:59:59.25Z"); got != time.Date(2024, 2, 29, 23, 59, 59, 250000000, time.UTC) {
		t.Fatalf("got %v", got)
	}
}

func checkParseTime(t *testing.T, s string) {
	t.Helper()
	want := refParseTime(s)
	if got := ParseTime(s); !sameTime(got, want) {
		t.Fatalf("%q: ParseTime %v (%s), time.Parse %v (%s)", s, got, got.Location(), want, want.Location())
	}
	if got, ok := parseTimeZ(s); ok {
		ref, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || got != ref {
			t.Fatalf("%q: read by hand as %v, time.Parse %v %v", s, got, ref, err)
		}
	}
}

// sameTime: the same instant, monotonic reading and zone. time.Parse
// makes a new Location for an offset that is not Local's, so two parses
// of one string are == only in UTC (which the hand-read form is, and is
// compared with ==).
func sameTime(a, b time.Time) bool {
	if a == b {
		return true
	}
	an, ao := a.Zone()
	bn, bo := b.Zone()
	return a.Equal(b) && a.Round(0) == a && b.Round(0) == b && an == bn && ao == bo &&
		a.Location().String() == b.Location().String()
}

// FuzzParseTimeAgrees: ParseTime answers what time.Parse answers (to the
// bit: ==, so the same instant, location and no monotonic reading), for
// every string.
func FuzzParseTimeAgrees(f *testing.F) {
	for _, s := range timeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParseTime(t, s)
	})
}

// checkPointAgrees: Decode answers what the decoder before issue 16 did
// (refDecode): the same error or none, and the same fields to the bit.
func checkPointAgrees(t *testing.T, in []byte) {
	t.Helper()
	var got, want PointValue
	gotErr, wantErr := got.Decode(in), refDecode(&want, in)
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("%q: error %v, before %v", in, gotErr, wantErr)
	}
	if got.Seq != want.Seq || !sameTime(got.TS, want.TS) || math.Float64bits(got.Lat) != math.Float64bits(want.Lat) ||
		math.Float64bits(got.Lng) != math.Float64bits(want.Lng) || math.Float64bits(got.SpeedKmh) != math.Float64bits(want.SpeedKmh) ||
		math.Float64bits(got.Heading) != math.Float64bits(want.Heading) {
		t.Fatalf("%q: got %+v, before %+v", in, got, want)
	}
}

// FuzzPointValueAgrees: whatever the stored value, Decode answers what it
// answered before its scanner was rewritten, so the replica, the
// dashboard and the history read every older store the same.
func FuzzPointValueAgrees(f *testing.F) {
	for _, s := range pointSamples {
		f.Add([]byte(s))
	}
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	for _, s := range timeSeeds {
		f.Add([]byte(`{"seq":1,"lat":1,"lng":2,"ts":"` + s + `"}`))
	}
	for _, s := range numberSeeds {
		f.Add([]byte(`{"seq":` + s + `,"lat":` + s + `,"lng":2,"speed_kmh":` + s + `}`))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkPointAgrees(t, in)
	})
}

// BenchmarkParseTime: the stored point's time, read by hand against
// time.Parse, in one run.
func BenchmarkParseTime(b *testing.B) {
	s := "2026-11-23T10:00:00.123Z"
	b.Run("ParseTime", func(b *testing.B) {
		for b.Loop() {
			if ParseTime(s).IsZero() {
				b.Fatal("zero")
			}
		}
	})
	b.Run("time.Parse", func(b *testing.B) {
		for b.Loop() {
			if refParseTime(s).IsZero() {
				b.Fatal("zero")
			}
		}
	})
}

// numberSeeds are JSON numbers parseFloat reads by hand (at most 15
// digits, no exponent) and ones it leaves to strconv.
var numberSeeds = []string{
	"0", "-0", "0.0", "-0.0", "1", "-1", "48.12345", "-33.9", "180", "359.9", "42.5",
	"123456789012345", "-123456789012345", "12345678901234.5", "0.00000000000001", "0.000000000000001",
	"1234567890123456", "0.1234567890123456789", "9007199254740993", "1e1", "1.5E-3", "1e999", "-1e-999",
	"0.1", "0.2", "0.3", "2.2250738585072014e-308", "179769313486231570000000000000000000000",
}

// FuzzParseFloatAgrees: parseFloat and parseUint answer what strconv
// answers for every JSON number, to the bit.
func FuzzParseFloatAgrees(f *testing.F) {
	for _, s := range numberSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !jsonNumber([]byte(s)) {
			return
		}
		got, ok := parseFloat([]byte(s))
		want, err := strconv.ParseFloat(s, 64)
		if ok != (err == nil) || ok && math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%q: parseFloat %v %v (%x), strconv %v %v (%x)", s, got, ok, math.Float64bits(got), want, err, math.Float64bits(want))
		}
		u, ok := parseUint([]byte(s))
		wu, err := strconv.ParseUint(s, 10, 64)
		if ok != (err == nil) || ok && u != wu {
			t.Fatalf("%q: parseUint %v %v, strconv %v %v", s, u, ok, wu, err)
		}
	})
}
