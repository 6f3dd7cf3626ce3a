package ui

import (
	"testing"
	"time"

	"routehound/fleetevents"
)

// A stop's grade on the Routes page: green up to 5 minutes late (or no
// eta), amber up to 15, red later or skipped; a pending stop turns amber
// once its eta has passed.
func TestStopClass(t *testing.T) {
	d := func(s int64) *int64 { return &s }
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		s    fleetevents.StopProgress
		want string
	}{
		{fleetevents.StopProgress{Status: "arrived"}, "stop ok"},
		{fleetevents.StopProgress{Status: "arrived", DelayS: d(-600)}, "stop ok"},
		{fleetevents.StopProgress{Status: "departed", DelayS: d(300)}, "stop ok"},
		{fleetevents.StopProgress{Status: "arrived", DelayS: d(301)}, "stop warn"},
		{fleetevents.StopProgress{Status: "arrived", DelayS: d(901)}, "stop bad"},
		{fleetevents.StopProgress{Status: "skipped"}, "stop bad"},
		{fleetevents.StopProgress{Status: "pending", ETA: "2026-12-07T11:00:00Z"}, "stop pending"},
		{fleetevents.StopProgress{Status: "pending", ETA: "2026-12-07T09:00:00Z"}, "stop pending warn"},
		{fleetevents.StopProgress{Status: "pending"}, "stop pending"},
	} {
		if got := stopClass(c.s, now); got != c.want {
			t.Errorf("%+v: %q, want %q", c.s, got, c.want)
		}
	}
	for s, want := range map[int64]string{42: "+42s", -30: "-30s", 720: "+12m", 3900: "+1h5m"} {
		if got := fmtDelay(s); got != want {
			t.Errorf("fmtDelay(%d) = %q, want %q", s, got, want)
		}
	}
}
