//go:build linux

package tests

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"routehound/internal/testkit"
)

// The offline basemap in a real headless Chromium against the real binary
// (issue 22): with [ui] map_tiles naming a tiny MBTiles file made here
// (PNG tiles), the Fleet page loads its tiles from the box
// and nothing from elsewhere, draws a marker per driver, and a marker moves
// when its driver reports. Screenshots go to tests/artifacts/ (fleet-map,
// driver-map, routes-map); ROUTEHOUND_UPDATE_DOCS=1 also writes them to docs/.
func TestFleetMapInBrowser(t *testing.T) {
	chrome := browserPath(t)
	// The world to zoom 2, then a region around the drivers to zoom 11, as
	// an export of a region holds.
	tiles := testkit.MBTilesRegion(t, t.TempDir(), "png", 2, 11, [4]float64{13.2, 52.35, 13.7, 52.65})
	h := newHarness(t, fmt.Sprintf("[ui]\nframe_interval = \"200ms\"\nmap_tiles = %q\n", tiles))
	h.start()
	defer h.stop()
	artifacts := os.Getenv("ROUTEHOUND_ARTIFACTS")
	if artifacts == "" {
		artifacts = "artifacts"
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	report := func(driver string, seq int64, lat, lng float64) {
		t.Helper()
		pts := []point{{Seq: seq, Lat: lat, Lng: lng, TS: time.Now().UTC().Format(time.RFC3339), SpeedKmh: 30, Heading: 90}}
		if r, err := h.do(context.Background(), "POST", "/v1/drivers/"+driver+"/locations", "driver", "", pts); err != nil || r.status != http.StatusAccepted {
			t.Fatalf("post a point of %s: %v %v", driver, r, err)
		}
	}
	report("map-d1", 1, 52.50, 13.30)
	report("map-d2", 1, 52.60, 13.60)
	report("map-d1", 2, 52.52, 13.35)
	if r, err := h.do(context.Background(), "PUT", "/v1/assignments/map-r1", "dispatch", "map-r1-1",
		map[string]any{"driver": "map-d1", "note": "", "stops": []map[string]any{{"id": "SH-1", "lat": 52.55, "lng": 13.4}, {"id": "SH-2", "lat": 52.45, "lng": 13.5}}}); err != nil || r.status/100 != 2 {
		t.Fatalf("put an assignment: %v %v", r, err)
	}
	if r, err := h.do(context.Background(), "POST", "/v1/loading-events", "warehouse", "map-ev-1",
		map[string]any{"terminal": "t1", "dock": "D4", "shipment": "SH-1", "kind": "loaded", "pallets": 12, "ts": time.Now().UTC().Format(time.RFC3339)}); err != nil || r.status/100 != 2 {
		t.Fatalf("post a loading event: %v %v", r, err)
	}

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1200, 900), chromedp.Flag("disable-gpu", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	step := func(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(tab, within)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// until polls a JavaScript expression (a string) until ok accepts it.
	until := func(what, js string, within time.Duration, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			sctx, cancel := context.WithTimeout(tab, time.Second)
			s, err := chromedp.Run(sctx, chromedp.Evaluate[string](js))
			cancel()
			if err == nil && ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s is %q (%v) after %v", what, js, s, err, within)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	shot := func(name string) []byte {
		t.Helper()
		sctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(artifacts, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		return png
	}

	step("log in", 15*time.Second,
		chromedp.Navigate(h.base+"/ui/login"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), h.tokens["dashboard"]),
		chromedp.Submit(chromedp.CSS(`form`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-lane="driver"]`)),
	)
	step("open the Fleet page", 10*time.Second,
		chromedp.Navigate(h.base+"/ui/fleet"),
		chromedp.WaitVisible(chromedp.CSS(`#map`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)),
	)
	// Tiles come from the box and are drawn; nothing from elsewhere.
	until("tiles drawn", `String(document.querySelectorAll("#map img.leaflet-tile-loaded").length)`, 10*time.Second,
		func(s string) bool { return atoiOr(s) >= 2 })
	until("tile requests to the box", `String(performance.getEntriesByType("resource").filter(function(e){return e.name.indexOf(location.origin+"/ui/tiles/")===0;}).length)`,
		5*time.Second, func(s string) bool { return atoiOr(s) >= 2 })
	foreign := until("requests elsewhere", `JSON.stringify(performance.getEntriesByType("resource").map(function(e){return e.name;}).filter(function(n){return n.indexOf(location.origin+"/")!==0;}))`,
		time.Second, func(string) bool { return true })
	if foreign != "[]" {
		t.Fatalf("the page fetched from elsewhere than the box: %s", foreign)
	}
	srcs := until("tile sources", `JSON.stringify(Array.from(document.querySelectorAll("#map img.leaflet-tile")).map(function(i){return i.src;}))`,
		time.Second, func(string) bool { return true })
	if !strings.Contains(srcs, h.base+"/ui/tiles/") || strings.Count(srcs, "http") != strings.Count(srcs, h.base+"/ui/tiles/") {
		t.Fatalf("tiles not all from the box: %s", srcs)
	}
	// A marker per driver.
	until("two markers", `String(document.querySelectorAll("path.rh-marker").length)`, 5*time.Second,
		func(s string) bool { return s == "2" })
	pos := `JSON.stringify(window.rhMap.positions()["map-d1"])`
	path := `(document.querySelector('path.rh-marker[data-driver="map-d1"]')||{getAttribute:function(){return "";}}).getAttribute("d")`
	if p := until("map-d1's marker", pos, 5*time.Second, func(s string) bool { return s != "" }); p != "[52.52,13.35]" {
		t.Fatalf("map-d1's marker at %s, want [52.52,13.35]", p)
	}
	d0 := until("map-d1's marker path", path, 5*time.Second, func(s string) bool { return s != "" })
	shot("fleet-map-before")

	// The driver reports: its marker moves, live, without a reload.
	t0 := time.Now()
	report("map-d1", 3, 52.56, 13.47)
	until("map-d1's marker moves", pos, 5*time.Second, func(s string) bool { return s == "[52.56,13.47]" })
	t.Logf("marker moved %v after the report", time.Since(t0))
	if d1 := until("map-d1's marker path", path, 2*time.Second, func(s string) bool { return s != "" }); d1 == d0 {
		t.Fatalf("the marker's drawn path did not change: %q", d1)
	}
	if p := until("map-d2's marker", `JSON.stringify(window.rhMap.positions()["map-d2"])`, time.Second, func(string) bool { return true }); p != "[52.6,13.6]" {
		t.Fatalf("map-d2 moved too: %s", p)
	}
	if s := until("live state", `document.getElementById("live-state").textContent`, time.Second, func(string) bool { return true }); s != "live" {
		t.Fatalf("live state %q after the move", s)
	}
	png := shot("fleet-map")
	if os.Getenv("ROUTEHOUND_UPDATE_DOCS") == "1" {
		if err := os.WriteFile("../docs/fleet-map.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The driver page: its marker, its trail of the last hour, its route's stops.
	step("open the driver page", 10*time.Second,
		chromedp.Navigate(h.base+"/ui/fleet/map-d1"),
		chromedp.WaitVisible(chromedp.CSS(`#map`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)),
	)
	until("the driver's marker", `String(document.querySelectorAll("path.rh-marker").length)`, 5*time.Second, func(s string) bool { return s == "1" })
	until("the trail", `String(document.querySelectorAll("path.rh-trail").length)`, 5*time.Second, func(s string) bool { return s == "1" })
	until("the route's stops", `String(document.querySelectorAll("path.rh-stop").length)`, 5*time.Second, func(s string) bool { return s == "2" })
	report("map-d1", 4, 52.45, 13.45)
	until("the driver's marker moves", pos, 5*time.Second, func(s string) bool { return s == "[52.45,13.45]" })
	if s := until("the shipment's loading event", `(document.getElementById("driver-events")||{textContent:""}).textContent`, time.Second, func(string) bool { return true }); !strings.Contains(s, "SH-1") || !strings.Contains(s, "loaded") {
		t.Fatalf("the driver page's loading events: %q", s)
	}
	// The Routes page: the route's stops, replaced live when dispatch changes them.
	step("open the Routes page", 10*time.Second,
		chromedp.Navigate(h.base+"/ui/routes"),
		chromedp.WaitVisible(chromedp.CSS(`#map`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)),
	)
	until("the route's stops", `String(document.querySelectorAll("path.rh-stop").length)`, 5*time.Second, func(s string) bool { return s == "2" })
	if r, err := h.do(context.Background(), "PUT", "/v1/assignments/map-r1", "dispatch", "map-r1-2",
		map[string]any{"driver": "map-d1", "note": "", "stops": []map[string]any{{"id": "SH-1", "lat": 52.55, "lng": 13.4}, {"id": "SH-2", "lat": 52.45, "lng": 13.5}, {"id": "SH-3", "lat": 52.5, "lng": 13.6}}}); err != nil || r.status/100 != 2 {
		t.Fatalf("change the assignment: %v %v", r, err)
	}
	until("the route's stops change live", `String(document.querySelectorAll("path.rh-stop").length)`, 5*time.Second, func(s string) bool { return s == "3" })
	shot("routes-map")

	step("back to the driver page", 10*time.Second,
		chromedp.Navigate(h.base+"/ui/fleet/map-d1"),
		chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)),
	)
	until("the driver's route's stops", `String(document.querySelectorAll("path.rh-stop").length)`, 5*time.Second, func(s string) bool { return s == "3" })
	png = shot("driver-map")
	if os.Getenv("ROUTEHOUND_UPDATE_DOCS") == "1" {
		if err := os.WriteFile("../docs/driver-map.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
