package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

// scanSeeds are bodies the fast path takes and bodies it must leave to
// the JSON path; FuzzScanPointsAgrees starts from them.
var scanSeeds = []string{
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	` {"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"} `,
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z","speed_kmh":3,"heading":90},{"seq":2,"lat":-90,"lng":180,"ts":"2026-11-23T10:00:00.5+01:00"}]`,
	"[ {\"seq\":1,\"lat\":-0,\"lng\":1e1,\"ts\":\"2026-11-23T10:00:00Z\"} ,\n{\"seq\":9007199254740992,\"lat\":1.5E-3,\"lng\":0.0,\"ts\":\"2026-11-23T10:00:00Z\"} ]\n",
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]x`,
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"},]`,
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}][]`,
	`[{"seq":1, "lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"SEQ":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"seq":2,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z","speed_kmh":null}]`,
	`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00\u005a"}]`,
	`[{"seq":01,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1.0,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":18446744073709551616,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":18446744073709551615,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`{"seq":9007199254740993,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`[{"seq":1,"lat":1e999,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"lat":+1,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"lat":1.,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"lat":91,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":0,"lat":1,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}]`,
	`[{"seq":1,"lat":1,"lng":13.4,"ts":"noon"}]`,
	`[{"seq":1,"lat":1,"lng":13.4,"ts":"2026-11-23T10:00:00Z","x":1}]`,
	`[{"seq":1,"lat":1,"lng":13.4}]`,
	`[{}]`, `[]`, `[1]`, `{}`, `null`, ``, `[`, `{"seq":1`,
}

// TestScanPointsTakesTheCommonBody: a compact array of valid points, and
// the same with whitespace between the points, goes the fast path.
func TestScanPointsTakesTheCommonBody(t *testing.T) {
	for i, body := range scanSeeds[:4] {
		if _, ok := scanPoints([]byte(body), 100); !ok {
			t.Errorf("seed %d: the fast path gave up on %s", i, body)
		}
	}
	for _, body := range scanSeeds[4:] {
		if pts, ok := scanPoints([]byte(body), 100); ok {
			t.Errorf("the fast path took %s: %+v", body, pts)
		}
	}
	// Past the bound: left to the JSON path, which refuses it.
	if _, ok := scanPoints([]byte(scanSeeds[2]), 1); ok {
		t.Error("the fast path took 2 points with a bound of 1")
	}
}

// FuzzScanPointsAgrees: whatever the fast path takes, the JSON path takes
// too, with the same seqs and the same values, and DecodePoints answers
// it; so the fast path changes the cost of a body, never its answer.
func FuzzScanPointsAgrees(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := scanPoints(body, 8)
		if !ok {
			return
		}
		slow, err := decodePointsJSON(body, 8)
		if err != nil {
			t.Fatalf("fast path took %q, JSON path refused it: %v", body, err)
		}
		for _, p := range fast {
			if p.Seq == 0 || p.Seq > MaxSeq {
				t.Fatalf("%q: the fast path took seq %d, outside 1..2^53", body, p.Seq)
			}
		}
		if len(fast) != len(slow) {
			t.Fatalf("%q: fast %d points, JSON %d", body, len(fast), len(slow))
		}
		for i := range fast {
			if fast[i].Seq != slow[i].Seq || !bytes.Equal(fast[i].Value, slow[i].Value) {
				t.Fatalf("%q point %d: fast {%d %s}, JSON {%d %s}", body, i, fast[i].Seq, fast[i].Value, slow[i].Seq, slow[i].Value)
			}
		}
	})
}

// TestSeqAboveMaxRefused: a seq above 2^53 is refused (invalid_field) by
// both paths, alone or in an array; 2^53 itself is taken by both.
func TestSeqAboveMaxRefused(t *testing.T) {
	const pt = `,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`
	for _, seq := range []string{"9007199254740993", "18446744073709551615", "10000000000000000"} {
		for _, body := range []string{`{"seq":` + seq + pt, `[{"seq":1` + pt + `,{"seq":` + seq + pt + `]`} {
			if _, ok := scanPoints([]byte(body), 8); ok {
				t.Errorf("the fast path took %s", body)
			}
			for name, decode := range map[string]func([]byte, int) ([]RawPoint, error){"DecodePoints": DecodePoints, "decodePointsJSON": decodePointsJSON} {
				_, err := decode([]byte(body), 8)
				var be *BodyError
				if !errors.As(err, &be) || be.Code != CodeInvalidField || !strings.Contains(be.Message, "seq") {
					t.Errorf("%s(%s) = %v, want invalid_field on seq", name, body, err)
				}
			}
		}
	}
	body := []byte(`{"seq":9007199254740992` + pt)
	fast, ok := scanPoints(body, 8)
	slow, err := decodePointsJSON(body, 8)
	if !ok || err != nil || fast[0].Seq != MaxSeq || slow[0].Seq != MaxSeq {
		t.Errorf("seq 2^53: fast %v %v, JSON %v %v; both must take it", fast, ok, slow, err)
	}
}

// BenchmarkDecodePointsJSON is BenchmarkDecodePoints on the JSON path
// alone: the fast path's gain.
func BenchmarkDecodePointsJSON(b *testing.B) {
	body := []byte("[" + strings.Repeat(`{"seq":1,"lat":52.4,"lng":13.3,"ts":"2026-11-23T10:00:00Z","speed_kmh":40,"heading":90},`, 255) +
		`{"seq":2,"lat":52.4,"lng":13.3,"ts":"2026-11-23T10:00:00Z","speed_kmh":40,"heading":90}]`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodePointsJSON(body, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// placeSeeds are stored points ScanPlace takes, and values it must leave
// to encoding/json; FuzzScanPlaceAgrees starts from them.
var placeSeeds = []string{
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z","speed_kmh":3,"heading":90}`,
	`{"lat":-0,"lng":1e1,"ts":"2026-11-23T10:00:00.5+01:00","charging":true,"provider":"gps","x":false}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"} `,
	`{"seq":1, "lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"LAT":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":52.5,"lat":53,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":null,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":"52.5","lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00\u005a"}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":2026}`,
	`{"seq":1,"lat":52.5,"lng":13.4}`,
	`{"seq":1,"lat":1e999,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z","o":{"a":1}}`,
	`{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-11-23T10:00:00Z"}x`,
	`{"lat":1,"lng":2,"ts":"t","n":nul}`, `{}`, `{`, `[]`, ``, `{"lat":1,`,
}

// TestScanPlaceTakesTheStoredForm: the values the endpoints store go the
// fast path, with the fields as sent.
func TestScanPlaceTakesTheStoredForm(t *testing.T) {
	for i, v := range placeSeeds[:3] {
		if _, _, _, ok := ScanPlace([]byte(v)); !ok {
			t.Errorf("seed %d: ScanPlace gave up on %s", i, v)
		}
	}
	for _, v := range placeSeeds[3:] {
		if lat, lng, ts, ok := ScanPlace([]byte(v)); ok {
			t.Errorf("ScanPlace took %s: %v %v %q", v, lat, lng, ts)
		}
	}
	lat, lng, ts, _ := ScanPlace([]byte(placeSeeds[2]))
	if lat != 0 || lng != 10 || ts != "2026-11-23T10:00:00.5+01:00" {
		t.Errorf("read %v %v %q", lat, lng, ts)
	}
}

// FuzzScanPlaceAgrees: whatever ScanPlace takes, encoding/json reads the
// same lat, lng and ts from.
func FuzzScanPlaceAgrees(f *testing.F) {
	for _, s := range placeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lat, lng, ts, ok := ScanPlace(b)
		if !ok {
			return
		}
		var v struct {
			Lat *float64 `json:"lat"`
			Lng *float64 `json:"lng"`
			TS  *string  `json:"ts"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("ScanPlace took %q, encoding/json refuses it: %v", b, err)
		}
		if v.Lat == nil || v.Lng == nil || v.TS == nil || *v.Lat != lat || *v.Lng != lng || *v.TS != ts ||
			math.Signbit(*v.Lat) != math.Signbit(lat) || math.Signbit(*v.Lng) != math.Signbit(lng) {
			t.Fatalf("%q: ScanPlace %v %v %q, encoding/json %+v", b, lat, lng, ts, v)
		}
	})
}
