package ui

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// Tiles is an MBTiles file (https://github.com/mapbox/mbtiles-spec): a
// SQLite database with a metadata table (name, value) and the tiles in
// tiles(zoom_level, tile_column, tile_row, tile_data), rows in TMS order
// (row 0 at the south). The dashboard serves its tiles at
// /ui/tiles/{z}/{x}/{y} (XYZ order, y 0 at the north) and draws its maps
// on them. Opened read-only; safe for concurrent use.
type Tiles struct {
	db    *sql.DB
	stmt  *sql.Stmt
	Path  string
	Meta  TileMeta
	ctype string
}

// TileMeta is what the pages need of the metadata table.
type TileMeta struct {
	Name        string
	Format      string // png, jpg, webp or pbf
	MinZoom     int
	MaxZoom     int
	Attribution string
	// Bounds is west, south, east, north in degrees; all zero when the
	// file does not say.
	Bounds [4]float64
}

// Raster reports whether a map library without a vector renderer (the
// vendored Leaflet) can draw the tiles.
func (m TileMeta) Raster() bool { return m.Format != "pbf" }

var tileTypes = map[string]string{
	"png":  "image/png",
	"jpg":  "image/jpeg",
	"jpeg": "image/jpeg",
	"webp": "image/webp",
	"pbf":  "application/x-protobuf",
}

// maxTileZoom bounds z (2^z tiles a side fits an int64 far past it).
const maxTileZoom = 30

// OpenTiles opens the MBTiles file at path read-only and reads its
// metadata; a file that is missing, not an MBTiles database or of an
// unknown format is an error.
func OpenTiles(path string) (*Tiles, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("ui: map tiles %q: '?' and '#' are not allowed in the file name", path)
	}
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("ui: map tiles: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("ui: map tiles %s: not a regular file", path)
	}
	db, err := sql.Open("sqlite", "file:"+strings.ReplaceAll(path, "%", "%25")+"?mode=ro&_pragma=query_only(1)&_pragma=busy_timeout(2000)")
	if err != nil {
		return nil, fmt.Errorf("ui: map tiles %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	t := &Tiles{db: db, Path: path}
	if err := t.readMeta(); err != nil {
		db.Close()
		return nil, fmt.Errorf("ui: map tiles %s: %w", path, err)
	}
	t.stmt, err = db.Prepare(`SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ui: map tiles %s: not an MBTiles file (no tiles table): %w", path, err)
	}
	return t, nil
}

func (t *Tiles) readMeta() error {
	rows, err := t.db.Query(`SELECT name, value FROM metadata`)
	if err != nil {
		return fmt.Errorf("not an MBTiles file (no metadata table): %w", err)
	}
	defer rows.Close()
	m := TileMeta{MinZoom: 0, MaxZoom: 18}
	for n := 0; rows.Next(); n++ {
		if n > 10000 {
			return errors.New("the metadata table has more than 10000 rows")
		}
		var name string
		var value sql.NullString
		if err := rows.Scan(&name, &value); err != nil {
			return fmt.Errorf("read metadata: %w", err)
		}
		v := strings.TrimSpace(value.String)
		switch name {
		case "name":
			m.Name = v
		case "format":
			m.Format = strings.ToLower(v)
		case "attribution":
			m.Attribution = v
		case "minzoom", "maxzoom":
			z, err := strconv.Atoi(v)
			if err != nil || z < 0 || z > maxTileZoom {
				return fmt.Errorf("metadata %s %q is not a zoom level from 0 to %d", name, v, maxTileZoom)
			}
			if name == "minzoom" {
				m.MinZoom = z
			} else {
				m.MaxZoom = z
			}
		case "bounds":
			parts := strings.Split(v, ",")
			if len(parts) != 4 {
				return fmt.Errorf("metadata bounds %q is not west,south,east,north", v)
			}
			for i, p := range parts {
				f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
				if err != nil {
					return fmt.Errorf("metadata bounds %q is not west,south,east,north", v)
				}
				m.Bounds[i] = f
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read metadata: %w", err)
	}
	if m.Format == "" {
		return errors.New("the metadata has no format (png, jpg, webp or pbf)")
	}
	ct, ok := tileTypes[m.Format]
	if !ok {
		return fmt.Errorf("metadata format %q is not png, jpg, webp or pbf", m.Format)
	}
	if m.MinZoom > m.MaxZoom {
		return fmt.Errorf("metadata minzoom %d is above maxzoom %d", m.MinZoom, m.MaxZoom)
	}
	t.Meta, t.ctype = m, ct
	return nil
}

// Close closes the file.
func (t *Tiles) Close() error {
	t.stmt.Close()
	return t.db.Close()
}

// errNoTile is a tile the file does not hold.
var errNoTile = errors.New("ui: no such tile")

// Tile reads the tile at z/x/y in XYZ order (y 0 at the north).
func (t *Tiles) Tile(ctx context.Context, z, x, y int) ([]byte, error) {
	tms := (1 << z) - 1 - y
	var b []byte
	err := t.stmt.QueryRowContext(ctx, z, x, tms).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoTile
	}
	if err != nil {
		return nil, fmt.Errorf("ui: tile %d/%d/%d of %s: %w", z, x, y, t.Path, err)
	}
	return b, nil
}

// parseTile reads z, x and y of /ui/tiles/{z}/{x}/{y}; y may carry an
// extension (3.png).
func parseTile(zs, xs, ys string) (z, x, y int, err error) {
	if i := strings.IndexByte(ys, '.'); i >= 0 {
		ys = ys[:i]
	}
	bad := fmt.Errorf("a tile is /ui/tiles/{z}/{x}/{y} with 0 <= z <= %d and 0 <= x, y < 2^z", maxTileZoom)
	z, err1 := strconv.Atoi(zs)
	if err1 != nil || z < 0 || z > maxTileZoom {
		return 0, 0, 0, bad
	}
	x, err2 := strconv.Atoi(xs)
	y, err3 := strconv.Atoi(ys)
	if err2 != nil || err3 != nil || x < 0 || y < 0 || x >= 1<<z || y >= 1<<z {
		return 0, 0, 0, bad
	}
	return z, x, y, nil
}

var gzipMagic = []byte{0x1f, 0x8b}

// tileHandler serves GET /ui/tiles/{z}/{x}/{y} (behind the session, as
// every page): the tile's bytes with the content type of the file's
// format; a gzipped vector tile (as tools store them) is sent as stored,
// with Content-Encoding: gzip. 404 for a tile the file does not hold.
func (u *UI) tileHandler(w http.ResponseWriter, r *http.Request, _ *session) {
	t := u.opt.Tiles
	if t == nil {
		fail(w, http.StatusNotFound, "no_map_tiles", "no basemap is configured ([ui] map_tiles)")
		return
	}
	z, x, y, err := parseTile(r.PathValue("z"), r.PathValue("x"), r.PathValue("y"))
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_parameter", err.Error())
		return
	}
	b, err := t.Tile(r.Context(), z, x, y)
	if errors.Is(err, errNoTile) {
		fail(w, http.StatusNotFound, "no_tile", fmt.Sprintf("the basemap has no tile %d/%d/%d", z, x, y))
		return
	}
	if err != nil {
		u.internal(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", t.ctype)
	if t.Meta.Format == "pbf" && bytes.HasPrefix(b, gzipMagic) {
		h.Set("Content-Encoding", "gzip")
	}
	// Private: behind the session. The file does not change while the box runs.
	h.Set("Cache-Control", "private, max-age=3600")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
