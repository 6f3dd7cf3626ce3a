package api

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// frameSeeds are frames as clients send them, and near misses.
var frameSeeds = []string{
	`{"driver":"van-7","points":[{"seq":1,"lat":52.1,"lng":4.3,"ts":"2026-12-07T10:00:00Z"}]}`,
	`{"points":[{"seq":1,"lat":52.1,"lng":4.3,"ts":"2026-12-07T10:00:00Z"}],"driver":"van-7"}`,
	` { "driver" : "v" , "points" : {"seq":2,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"} } `,
	`{"driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z","x":"]}"}]}`,
	`{"driver":"v","points":[1,]}`,
	`{"driver":"v","points":null}`,
	`{"driver":"v","points":[]}`,
	`{"driver":"v","points":[{"seq":1}],"extra":1}`,
	`{"driver":"v","driver":"w","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}]}`,
	`{"Driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}]}`,
	`{"driver":"v\u0041","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}]}`,
	`{"driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}]}x`,
	`{"driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}]`,
	`{"driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}}]}`,
	`{"driver":"v","points":[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z","s":"\"]"}]}`,
	`{"driver":7,"points":[]}`,
	`{"driver":"v"}`,
	`[]`,
	``,
}

// The scanner takes the frames drivers send.
func TestScanFrame(t *testing.T) {
	for i, c := range []struct {
		in             string
		driver, points string
	}{
		{frameSeeds[0], "van-7", `[{"seq":1,"lat":52.1,"lng":4.3,"ts":"2026-12-07T10:00:00Z"}]`},
		{frameSeeds[1], "van-7", `[{"seq":1,"lat":52.1,"lng":4.3,"ts":"2026-12-07T10:00:00Z"}]`},
		{frameSeeds[2], "v", `{"seq":2,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z"}`},
		{frameSeeds[3], "v", `[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z","x":"]}"}]`},
		{frameSeeds[14], "v", `[{"seq":1,"lat":1,"lng":2,"ts":"2026-12-07T10:00:00Z","s":"\"]"}]`},
	} {
		d, p, ok := scanFrame([]byte(c.in))
		if !ok || d != c.driver || string(p) != c.points {
			t.Errorf("case %d: %q, %q, %v; want %q, %q", i, d, p, ok, c.driver, c.points)
		}
	}
	// Everything unusual goes to the strict decoder.
	for _, i := range []int{5, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18} {
		if d, p, ok := scanFrame([]byte(frameSeeds[i])); ok {
			t.Errorf("%s: scanned as %q, %q", frameSeeds[i], d, p)
		}
	}
}

// The scanner never accepts a frame the strict decoder refuses: whatever
// it takes whose points DecodePoints then takes, strict decodes alike.
func FuzzScanFrameAgrees(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		driver, points, ok := scanFrame(b)
		if !ok {
			return
		}
		if _, err := DecodePoints(points, 1000); err != nil {
			return // refused either way
		}
		var fr driverFrame
		if err := strict(b, &fr); err != nil {
			t.Fatalf("%q: scanned (driver %q) but strict refuses: %v", b, driver, err)
		}
		if fr.Driver == nil || *fr.Driver != driver || !bytes.Equal(fr.Points, points) {
			t.Fatalf("%q: scanned driver %q points %q; strict %v %q", b, driver, points, fr.Driver, fr.Points)
		}
	})
}

// A 100-point frame, scanned and strict:
//
//	go test -run '^$' -bench Frame -benchmem ./api
func BenchmarkFrame(b *testing.B) {
	var pts []string
	for i := 0; i < 100; i++ {
		pts = append(pts, fmt.Sprintf(`{"seq":%d,"lat":52.%06d,"lng":4.%06d,"ts":"2026-12-07T10:00:%02dZ","speed_kmh":42.5}`, i+1, i*37, i*53, i%60))
	}
	frame := []byte(`{"driver":"van-0042","points":[` + strings.Join(pts, ",") + `]}`)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for i := 0; i < b.N; i++ {
			if _, _, ok := scanFrame(frame); !ok {
				b.Fatal("not scanned")
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for i := 0; i < b.N; i++ {
			var f driverFrame
			if err := strict(frame, &f); err != nil {
				b.Fatal(err)
			}
		}
	})
}
