package testkit

import (
	"bytes"
	"compress/gzip"
	"database/sql"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// MBTiles writes a tiny MBTiles file (a SQLite database: metadata and
// tiles, rows in TMS order) under dir and answers its path: every tile of
// zoom levels 0..maxZoom. format "png" gives 256×256 PNG tiles, a colour
// per zoom with a dark border; "pbf" gives gzipped stand-ins of vector
// tiles (the bytes "z/x/y" gzipped, as tools store vector tiles). extra
// metadata rows (name, value pairs) are added or override.
func MBTiles(t testing.TB, dir, format string, maxZoom int, extra ...string) string {
	t.Helper()
	return MBTilesRegion(t, dir, format, maxZoom, maxZoom, [4]float64{-180, -85, 180, 85}, extra...)
}

// MBTilesRegion is MBTiles whose zoom levels past fullZoom hold only the
// tiles over region (west, south, east, north in degrees) and one tile
// around, as an export of a region is; its bounds metadata is region.
func MBTilesRegion(t testing.TB, dir, format string, fullZoom, maxZoom int, region [4]float64, extra ...string) string {
	t.Helper()
	path := filepath.Join(dir, "region.mbtiles")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE metadata (name TEXT, value TEXT)`,
		`CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)`,
		`CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	meta := []string{"name", "test region", "format", format, "minzoom", "0", "maxzoom", fmt.Sprint(maxZoom),
		"bounds", fmt.Sprintf("%g,%g,%g,%g", region[0], region[1], region[2], region[3]), "attribution", "test tiles <b>not markup</b>"}
	meta = append(meta, extra...)
	for i := 0; i+1 < len(meta); i += 2 {
		if _, err := db.Exec(`DELETE FROM metadata WHERE name = ?`, meta[i]); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO metadata (name, value) VALUES (?, ?)`, meta[i], meta[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for z := 0; z <= maxZoom; z++ {
		x0, y0, x1, y1 := 0, 0, 1<<z-1, 1<<z-1
		if z > fullZoom {
			x0, y1 = tileOf(z, region[0], region[1])
			x1, y0 = tileOf(z, region[2], region[3])
			x0, y0, x1, y1 = max(x0-1, 0), max(y0-1, 0), min(x1+1, 1<<z-1), min(y1+1, 1<<z-1)
		}
		for x := x0; x <= x1; x++ {
			for y := y0; y <= y1; y++ {
				var b []byte
				if format == "pbf" {
					b = gzipped(t, fmt.Sprintf("%d/%d/%d", z, x, y))
				} else {
					b = TilePNG(t, z, (x+y)%2 == 1)
				}
				tms := (1 << z) - 1 - y
				if _, err := db.Exec(`INSERT INTO tiles VALUES (?, ?, ?, ?)`, z, x, tms, b); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return path
}

// tileOf is the XYZ tile of zoom z holding lng, lat (web mercator).
func tileOf(z int, lng, lat float64) (x, y int) {
	n := float64(int(1) << z)
	r := lat * math.Pi / 180
	x = int((lng + 180) / 360 * n)
	y = int((1 - math.Log(math.Tan(r)+1/math.Cos(r))/math.Pi) / 2 * n)
	return min(max(x, 0), int(n)-1), min(max(y, 0), int(n)-1)
}

// TilePNG is a 256×256 PNG tile of zoom z: a colour per zoom level (a
// shade darker for odd tiles, a checkerboard), a dark border.
func TilePNG(t testing.TB, z int, odd bool) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 256, 256))
	fill := color.RGBA{R: uint8(150 + 13*(z%8)), G: uint8(210 - 9*(z%8)), B: uint8(190 + 7*(z%8)), A: 255}
	if odd {
		fill.R, fill.G, fill.B = fill.R-18, fill.G-18, fill.B-18
	}
	for y := range 256 {
		for x := range 256 {
			c := fill
			if x < 2 || y < 2 || x > 253 || y > 253 {
				c = color.RGBA{R: 40, G: 60, B: 80, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(t testing.TB, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
