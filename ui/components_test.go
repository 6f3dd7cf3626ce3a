package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	"routehound/engine"
)

func TestComponents(t *testing.T) {
	ctx := context.Background()
	card := channelCard{Lane: "dispatch", Contract: "sync", AcceptedTotal: 12345, Depth: 950, Bound: 1000, BoundWhy: "derived: 50.0k/s × 20ms",
		SLA: 5 * time.Millisecond, LatP99: 12 * time.Millisecond, Status: status(12*time.Millisecond, 5*time.Millisecond, 950, 1000),
		Rejected: []engine.Reason{{Reason: "lane_full", Count: 7}}, SparkAccepted: sparkPoints([]float64{0, 5, 10}, 300, 240, 40)}
	got := html(ctx, channelCardBody(card))
	for _, want := range []string{`data-field="accepted">12345<`, `950 / <span data-field="bound" title="derived: 50.0k/s × 20ms">1000</span>`, "SLA 5.0ms", "<td>lane_full</td>", `class="badge bad"`, `width="95.0"`, `points="`} {
		if !strings.Contains(got, want) {
			t.Errorf("channel card lacks %q:\n%s", want, got)
		}
	}
	cases := []struct {
		p99, sla     time.Duration
		depth, bound int64
		want         string
	}{
		{time.Millisecond, 5 * time.Millisecond, 0, 100, "ok"},
		{6 * time.Millisecond, 5 * time.Millisecond, 0, 100, "warn"},
		{11 * time.Millisecond, 5 * time.Millisecond, 0, 100, "bad"},
		{time.Millisecond, 5 * time.Millisecond, 60, 100, "warn"},
		{time.Millisecond, 5 * time.Millisecond, 95, 100, "bad"},
	}
	for _, c := range cases {
		if got := status(c.p99, c.sla, c.depth, c.bound); got != c.want {
			t.Errorf("status(%v, %v, %d/%d) = %s, want %s", c.p99, c.sla, c.depth, c.bound, got, c.want)
		}
	}

	// A key row escapes keys and values, and shows controls only when
	// the table is writable.
	row := tableRow{Key: `<x>"k`, Value: `"<script>alert(1)</script>"`, Version: 3, LSN: 9}
	rw := html(ctx, keyRow("t", false, "tok", row))
	if strings.Contains(rw, "<script>") || !strings.Contains(rw, "&lt;script&gt;") {
		t.Errorf("value not escaped: %s", rw)
	}
	if !strings.Contains(rw, `data-key="&lt;x&gt;&#34;k"`) || !strings.Contains(rw, `data-action="delete"`) || !strings.Contains(rw, `value="tok"`) {
		t.Errorf("writable row: %s", rw)
	}
	if ro := html(ctx, keyRow("positions", true, "tok", row)); strings.Contains(ro, "data-action") || strings.Contains(ro, "tok") {
		t.Errorf("read-only row has controls: %s", ro)
	}

	now := time.Now()
	fresh := html(ctx, fleetRow(Position{Driver: "d1", Seq: 4, TS: now.Add(-time.Second)}, now))
	stale := html(ctx, fleetRow(Position{Driver: "d2", TS: now.Add(-time.Hour)}, now))
	if strings.Contains(fresh, "stale") || !strings.Contains(stale, `class="stale"`) || !strings.Contains(fresh, `data-driver="d1"`) {
		t.Errorf("fleet rows: fresh %s / stale %s", fresh, stale)
	}

	p := makePlot([]Position{{Driver: "a", Lat: 0, Lng: 0, TS: now}, {Driver: "b", Lat: 1, Lng: 2, TS: now}}, nil, now)
	if len(p.Dots) != 2 || p.Dots[0].X != 12 || p.Dots[0].Y != plotH-12 || p.Dots[1].X != plotW-12 || p.Dots[1].Y != 12 {
		t.Errorf("plot does not span the bounding box: %+v", p.Dots)
	}
}

func TestSparkPointsScales(t *testing.T) {
	got := sparkPoints([]float64{0, 10}, 3, 100, 40)
	// Newest at the right edge; the maximum at the top (y=1), zero at the bottom (y=39).
	if got != "50.0,39.0 100.0,1.0" {
		t.Errorf("sparkPoints = %q", got)
	}
	if sparkPoints(nil, 3, 100, 40) != "" {
		t.Error("no samples must give no points")
	}
}

// A central view's System card shows each depot's records its engine
// rejected (skipped for good), marked as an error, with the last one.
func TestSystemCentralCardShowsRejected(t *testing.T) {
	v := systemView{Uplink: UplinkView{Role: "central", Enabled: true, Connected: true, Depots: []UplinkDepot{
		{Name: "north", Stream: "RH", LSN: 40, Missing: 1, Rejected: 2, LastRejected: `lsn 37 (stream seq 90), table "bad!t", key "k": table "bad!t": only letters`},
		{Name: "south", Stream: "RH", LSN: 9},
	}}}
	got := html(context.Background(), systemBody(v))
	for _, want := range []string{
		`data-field="central-depot-north">LSN 40 in RH, 1 missing, `,
		`<span class="error" data-field="central-rejected-north">2 rejected</span>`,
		`data-field="central-last-rejected-north">last rejected: lsn 37 (stream seq 90), table &#34;bad!t&#34;`,
		`data-field="central-rejected-south">0 rejected</span>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the central card lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "central-last-rejected-south") {
		t.Errorf("south rejected nothing, yet its card tells a last one:\n%s", got)
	}
}
