package ui

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	htmlpkg "html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit"
)

func openTestTiles(t *testing.T, format string, maxZoom int, extra ...string) *Tiles {
	t.Helper()
	tl, err := OpenTiles(testkit.MBTiles(t, t.TempDir(), format, maxZoom, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// The tiles of an MBTiles file, XYZ order on the wire (TMS in the file),
// behind the session, with the format's content type.
func TestTilesEndpoint(t *testing.T) {
	f := newFixture(t, Options{Tiles: openTestTiles(t, "png", 2)})
	c := f.client()
	if st, _, h := f.get(c, "/ui/tiles/0/0/0"); st != http.StatusSeeOther || h.Get("Location") != "/ui/login" {
		t.Fatalf("a tile without a session: %d %s", st, h.Get("Location"))
	}
	f.login(c, dashToken)
	for _, p := range []string{"/ui/tiles/0/0/0", "/ui/tiles/2/3/0", "/ui/tiles/2/0/3.png", "/ui/tiles/1/1/0"} {
		st, body, h := f.get(c, p)
		if st != http.StatusOK || h.Get("Content-Type") != "image/png" || !bytes.HasPrefix([]byte(body), []byte("\x89PNG")) {
			t.Fatalf("%s: %d %s %.20q", p, st, h.Get("Content-Type"), body)
		}
		if !strings.Contains(h.Get("Cache-Control"), "private") {
			t.Fatalf("%s: Cache-Control %q", p, h.Get("Cache-Control"))
		}
	}
	for _, c2 := range []struct {
		path string
		st   int
	}{
		{"/ui/tiles/3/0/0", http.StatusNotFound}, // past the file's zoom levels
		{"/ui/tiles/1/2/0", http.StatusBadRequest},
		{"/ui/tiles/1/0/2", http.StatusBadRequest},
		{"/ui/tiles/-1/0/0", http.StatusBadRequest},
		{"/ui/tiles/31/0/0", http.StatusBadRequest},
		{"/ui/tiles/a/0/0", http.StatusBadRequest},
		{"/ui/tiles/1/0/x.png", http.StatusBadRequest},
	} {
		if st, _, _ := f.get(c, c2.path); st != c2.st {
			t.Fatalf("%s: %d, want %d", c2.path, st, c2.st)
		}
	}
}

// The row flip: tile z/x/y is row 2^z-1-y of the file.
func TestTilesFlipRows(t *testing.T) {
	tl := openTestTiles(t, "pbf", 2)
	defer tl.Close()
	for _, c := range [][3]int{{0, 0, 0}, {1, 0, 0}, {1, 0, 1}, {2, 3, 1}} {
		b, err := tl.Tile(context.Background(), c[0], c[1], c[2])
		if err != nil {
			t.Fatal(err)
		}
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(r)
		if want := fmt.Sprintf("%d/%d/%d", c[0], c[1], c[2]); string(raw) != want {
			t.Fatalf("tile %v holds %q, want %q", c, raw, want)
		}
	}
}

// A vector file is served as stored (gzip, Content-Encoding) and the pages
// keep their plot: the vendored Leaflet draws raster tiles only.
func TestVectorTilesServedAsStored(t *testing.T) {
	f := newFixture(t, Options{Tiles: openTestTiles(t, "pbf", 1)})
	c := f.client()
	f.login(c, dashToken)
	req, _ := http.NewRequest("GET", f.srv.URL+"/ui/tiles/1/1/0", nil)
	req.Header.Set("Accept-Encoding", "identity") // read the bytes as sent
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-protobuf" || resp.Header.Get("Content-Encoding") != "gzip" || !bytes.HasPrefix(b, gzipMagic) {
		t.Fatalf("pbf tile: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"))
	}
	f.points(1, "d1")
	if _, body, _ := f.get(c, "/ui/fleet"); strings.Contains(body, `id="map"`) || !strings.Contains(body, `id="fleet-plot"`) {
		t.Fatal("a vector basemap replaced the plot with a map Leaflet cannot draw")
	}
}

func TestOpenTilesRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "x.mbtiles")
	if err := os.WriteFile(notDB, []byte("not sqlite"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing":         filepath.Join(dir, "nope.mbtiles"),
		"not sqlite":      notDB,
		"a directory":     dir,
		"unknown format":  testkit.MBTiles(t, t.TempDir(), "tiff", 0),
		"bad zoom":        testkit.MBTiles(t, t.TempDir(), "png", 0, "maxzoom", "x"),
		"bad bounds":      testkit.MBTiles(t, t.TempDir(), "png", 0, "bounds", "1,2,3"),
		"no format":       testkit.MBTiles(t, t.TempDir(), "", 0),
		"a ? in the name": filepath.Join(dir, "a?b"),
	} {
		if tl, err := OpenTiles(path); err == nil {
			tl.Close()
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.mbtiles")); err == nil {
		t.Error("opening a missing file created it")
	}
}

var dataAttr = func(name string) *regexp.Regexp { return regexp.MustCompile(`data-` + name + `="([^"]*)"`) }

func mapData(t *testing.T, body, name string, v any) {
	t.Helper()
	m := dataAttr(name).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no data-%s in the page", name)
	}
	if err := json.Unmarshal([]byte(htmlpkg.UnescapeString(m[1])), v); err != nil {
		t.Fatalf("data-%s %q: %v", name, m[1], err)
	}
}

// With a raster basemap the Fleet page is a map: the drivers in the map's
// data, Leaflet and map.js loaded; the live frames carry the moves.
func TestFleetMapAndLiveMoves(t *testing.T) {
	f := newFixture(t, Options{Tiles: openTestTiles(t, "png", 2)})
	c := f.client()
	f.login(c, dashToken)
	f.points(1, "d1", "d2")
	_, body, _ := f.get(c, "/ui/fleet")
	for _, want := range []string{`id="map"`, `src="/ui/assets/leaflet/leaflet.js"`, `src="/ui/assets/map.js"`, `href="/ui/assets/leaflet/leaflet.css"`, `data-tiles="/ui/tiles/{z}/{x}/{y}"`, `data-maxzoom="2"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("fleet page without %s", want)
		}
	}
	if strings.Contains(body, `id="fleet-plot"`) {
		t.Fatal("the fleet page draws the plot beside the map")
	}
	var pts []mapPoint
	mapData(t, body, "points", &pts)
	if len(pts) != 2 || pts[0].Driver != "d1" || pts[0].Lat != 48.1 {
		t.Fatalf("map points %+v", pts)
	}
	for _, a := range []string{"leaflet/leaflet.js", "leaflet/leaflet.css", "leaflet/images/marker-icon.png", "leaflet/LICENSE", "map.js"} {
		if st, _, _ := f.get(c, "/ui/assets/"+a); st != 200 {
			t.Fatalf("asset %s: %d", a, st)
		}
	}
	m := regexp.MustCompile(`data-live="([^"]+)"`).FindStringSubmatch(body)
	ls := f.live(c, htmlpkg.UnescapeString(m[1]))
	f.points(2, "d2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		fr, _ := ls.next(t, 10*time.Second)
		if len(fr.Points) > 0 {
			if fr.Points[0].Driver != "d2" || fr.Points[0].Lat != 48.1 {
				t.Fatalf("frame points %+v", fr.Points)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no frame with the move")
		}
	}
}

// Without a basemap, no points travel in the frames and the plot stays.
func TestNoMapWithoutTiles(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.points(1, "d1")
	_, body, _ := f.get(c, "/ui/fleet")
	if strings.Contains(body, `id="map"`) || strings.Contains(body, "leaflet") || !strings.Contains(body, `id="fleet-plot"`) {
		t.Fatal("a map without map_tiles")
	}
	if st, _, _ := f.get(c, "/ui/tiles/0/0/0"); st != http.StatusNotFound {
		t.Fatalf("tiles without map_tiles: %d", st)
	}
}

// The driver page: last point and speed, the trail, its routes and the
// loading events of its shipments (the stop ids of its routes).
func TestDriverPage(t *testing.T) {
	for _, withMap := range []bool{false, true} {
		t.Run(fmt.Sprint("map=", withMap), func(t *testing.T) {
			opt := Options{}
			if withMap {
				opt.Tiles = openTestTiles(t, "png", 1)
			}
			f := newFixture(t, opt)
			c := f.client()
			f.login(c, dashToken)
			f.points(1, "van-3", "other")
			f.points(2, "van-3")
			ctx := context.Background()
			if _, err := f.e.PutAssignment(ctx, "r7", []byte(`{"driver":"van-3","stops":[{"id":"SH-1","lat":48.2,"lng":11.6},{"id":"SH-2","lat":48.3,"lng":11.7}],"note":"morning"}`), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.e.PutAssignment(ctx, "r8", []byte(`{"driver":"other","stops":[{"id":"SH-9","lat":1,"lng":2}],"note":""}`), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
				t.Fatal(err)
			}
			for i, sh := range []string{"SH-1", "SH-9", "SH-2"} {
				v := fmt.Sprintf(`{"terminal":"t1","dock":"D1","shipment":%q,"kind":"loaded","pallets":%d,"ts":"2026-11-23T08:00:00Z"}`, sh, i+1)
				if _, err := f.e.AddLoadingEvent(ctx, fmt.Sprintf("ev%d", i), []byte(v), engine.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			st, body, _ := f.get(c, "/ui/fleet/van-3")
			if st != 200 {
				t.Fatalf("driver page: %d %s", st, body)
			}
			for _, want := range []string{"Driver van-3", `data-driver="van-3"`, "42.5 km/h", ">r7<", "morning", ">SH-1<", ">SH-2<"} {
				if !strings.Contains(body, want) {
					t.Errorf("driver page without %q", want)
				}
			}
			if strings.Contains(body, ">SH-9<") || strings.Contains(body, ">r8<") || strings.Contains(body, `data-driver="other"`) {
				t.Error("the driver page shows another driver's route or shipment")
			}
			if !strings.Contains(body, "Trail of the last hour: 2 points") {
				t.Error("the trail of the last hour is not 2 points")
			}
			if withMap {
				var stops []mapStop
				mapData(t, body, "stops", &stops)
				var trail [][2]float64
				mapData(t, body, "trail", &trail)
				if len(stops) != 2 || stops[0].ID != "SH-1" || len(trail) != 2 || !strings.Contains(body, `data-follow="van-3"`) {
					t.Errorf("map data: stops %+v trail %v", stops, trail)
				}
			} else if !strings.Contains(body, `class="trail"`) {
				t.Error("no trail in the plot")
			}
			if !strings.Contains(body, "map=1") {
				t.Error("the driver page is not live (the fleet view without a plot)")
			}
			if st, _, _ := f.get(c, "/ui/fleet/bad%20name"); st != http.StatusBadRequest {
				t.Errorf("bad driver: %d", st)
			}
			if st, body, _ := f.get(c, "/ui/fleet/nobody"); st != 200 || !strings.Contains(body, "No report of nobody") {
				t.Errorf("unknown driver: %d", st)
			}
			// A central view's driver keys are depot/driver (the map links
			// to them escaped); one slash only, both parts names.
			if st, _, _ := f.get(c, "/ui/fleet/north%2Fvan-3"); st != 200 {
				t.Errorf("a central view's driver key: %d", st)
			}
			for _, bad := range []string{"north%2F", "%2Fvan-3", "a%2Fb%2Fc", "no%20rth%2Fvan-3"} {
				if st, _, _ := f.get(c, "/ui/fleet/"+bad); st != http.StatusBadRequest {
					t.Errorf("driver key %s: %d, want 400", bad, st)
				}
			}
		})
	}
}

// The Routes page's map shows every route's stops.
func TestRoutesMapStops(t *testing.T) {
	f := newFixture(t, Options{Tiles: openTestTiles(t, "png", 1)})
	c := f.client()
	f.login(c, dashToken)
	r, err := f.e.PutAssignment(context.Background(), "r1", []byte(`{"driver":"d1","stops":[{"id":"a","lat":48.2,"lng":11.6},{"id":"b","lat":48.3,"lng":11.7}],"note":""}`), engine.WriteOptions{IfVersion: engine.AnyVersion})
	if err != nil {
		t.Fatal(err)
	}
	// Answered by the journal; published just after.
	if err := f.e.WaitDurable(context.Background(), r.LSN); err != nil {
		t.Fatal(err)
	}
	_, body, _ := f.get(c, "/ui/routes")
	var stops []mapStop
	mapData(t, body, "stops", &stops)
	if len(stops) != 2 || stops[1].ID != "b" || stops[1].Route != "r1" || stops[1].Driver != "d1" {
		t.Fatalf("routes map stops %+v", stops)
	}
	// Live: a route's new stops replace its old ones; a deleted route has none.
	m := regexp.MustCompile(`data-live="([^"]+)"`).FindStringSubmatch(body)
	ls := f.live(c, htmlpkg.UnescapeString(m[1]))
	if _, err := f.e.PutAssignment(context.Background(), "r1", []byte(`{"driver":"d2","stops":[{"id":"a","lat":48.2,"lng":11.6},{"id":"b","lat":48.3,"lng":11.7},{"id":"c","lat":48.4,"lng":11.8}],"note":""}`), engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	var got []string
	wait := func(want string) {
		t.Helper()
		// Frames coalesce per key: wait for each change before the next.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			fr, _ := ls.next(t, 5*time.Second)
			for _, r := range fr.Routes {
				got = append(got, fmt.Sprintf("%s:%d", r.Route, len(r.Stops)))
				if len(r.Stops) > 0 && r.Stops[len(r.Stops)-1].ID != "c" {
					t.Fatalf("live stops %+v", r.Stops)
				}
			}
			if len(got) > 0 && got[len(got)-1] == want {
				return
			}
		}
		t.Fatalf("live route stops %v, want %s", got, want)
	}
	wait("r1:3")
	if _, err := f.e.DeleteAssignment(context.Background(), "r1", engine.WriteOptions{IfVersion: engine.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	wait("r1:0")
}

// On a central view every key is <depot>/<key>, while an assignment's
// value names its driver as its depot wrote it: the pages match a route to
// its driver by the driver's key there, <depot>/<driver>. Two depots with a
// driver of the same name: each driver page lists its own depot's route
// only, the Routes page links each route to its own depot's driver, and
// the maps' stops name that key.
func TestCentralRouteDriverIsItsDepotsDriver(t *testing.T) {
	f := newFixture(t, Options{Tiles: openTestTiles(t, "png", 1)})
	c := f.client()
	f.login(c, dashToken)
	f.e.SetCentral("a central view")
	now := time.Now().UTC().Format(time.RFC3339Nano)
	point := func(lat float64) []byte {
		return []byte(fmt.Sprintf(`{"seq":1,"lat":%f,"lng":11.5,"ts":%q,"speed_kmh":42.5,"heading":90}`, lat, now))
	}
	if _, err := f.e.ApplyCentral(context.Background(), []engine.CentralWrite{
		{Table: "positions", Key: "north/van-3", Value: point(48.1), Actor: "driver"},
		{Table: "positions", Key: "south/van-3", Value: point(47.1), Actor: "driver"},
		{Table: "assignments", Key: "north/r7", Value: []byte(`{"driver":"van-3","stops":[{"id":"SH-1","lat":48.2,"lng":11.6}],"note":"north morning"}`), Actor: "dispatch"},
		{Table: "assignments", Key: "south/r7", Value: []byte(`{"driver":"van-3","stops":[{"id":"SH-9","lat":47.2,"lng":11.7}],"note":"south morning"}`), Actor: "dispatch"},
		{Table: "assignments", Key: "south/r8", Value: []byte(`{"driver":"","stops":[],"note":"unassigned"}`), Actor: "dispatch"},
	}); err != nil {
		t.Fatal(err)
	}

	for depot, other := range map[string]string{"north": "south", "south": "north"} {
		st, body, _ := f.get(c, "/ui/fleet/"+depot+"%2Fvan-3")
		if st != http.StatusOK {
			t.Fatalf("%s's driver page: %d %s", depot, st, body)
		}
		if !strings.Contains(body, ">"+depot+"/r7<") || !strings.Contains(body, depot+" morning") {
			t.Errorf("%s/van-3's page does not list %s/r7", depot, depot)
		}
		if strings.Contains(body, ">"+other+"/r7<") || strings.Contains(body, "No route is assigned") {
			t.Errorf("%s/van-3's page lists %s's route, or none", depot, other)
		}
		var stops []mapStop
		mapData(t, body, "stops", &stops)
		if len(stops) != 1 || stops[0].Route != depot+"/r7" || stops[0].Driver != depot+"/van-3" {
			t.Errorf("%s/van-3's map stops %+v; want %s/r7's, naming %s/van-3", depot, stops, depot, depot)
		}
	}

	_, body, _ := f.get(c, "/ui/routes")
	for _, depot := range []string{"north", "south"} {
		if want := `<a href="/ui/fleet/` + depot + `%2Fvan-3">` + depot + `/van-3</a>`; !strings.Contains(body, want) {
			t.Errorf("the Routes page lacks %s", want)
		}
	}
	if strings.Contains(body, `href="/ui/fleet/van-3"`) || strings.Contains(body, `href="/ui/fleet/"`) {
		t.Error("the Routes page links a route to a driver without its depot, or to no driver")
	}
	var stops []mapStop
	mapData(t, body, "stops", &stops)
	got := map[string]string{}
	for _, s := range stops {
		got[s.Route] = s.Driver
	}
	if len(got) != 2 || got["north/r7"] != "north/van-3" || got["south/r7"] != "south/van-3" {
		t.Errorf("the Routes map's stops name %v; want each route's depot's van-3", got)
	}
}
