package testkit

import (
	"bytes"
	"compress/gzip"
	"database/sql"
	"fmt"
	"image"
	"image/color"
	"image/png"
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
		"bounds", "-180,-85,180,85", "attribution", "test tiles <b>not markup</b>"}
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
		for x := 0; x < 1<<z; x++ {
			for y := 0; y < 1<<z; y++ {
				var b []byte
				if format == "pbf" {
					b = gzipped(t, fmt.Sprintf("%d/%d/%d", z, x, y))
				} else {
					b = TilePNG(t, z)
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

// TilePNG is a 256×256 PNG tile of zoom z: a colour per zoom level, a
// dark border.
func TilePNG(t testing.TB, z int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 256, 256))
	fill := color.RGBA{R: uint8(120 + 40*z), G: 200, B: uint8(240 - 50*z), A: 255}
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
