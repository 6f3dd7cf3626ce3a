package api

import (
	"encoding/json"
	"testing"
)

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
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("error is not an api error: %v", err)
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
