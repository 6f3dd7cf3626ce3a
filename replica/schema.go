package replica

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// schemaVersion is stored in meta; a replica written with another version
// is dropped and rebuilt from the log (it is only a cache of the log).
const schemaVersion = 5

// schema creates the read model. Times are Unix nanoseconds (0 = unknown).
// Every row keeps the LSN that wrote it, which orders "newest first".
//
// loading_counts is kept by triggers in the same transaction as loading,
// so LoadingCounts reads a handful of rows instead of grouping every event.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID`,
	// trail_n counts the driver's points since its trail (re)started;
	// trail_ceil is the latest device time among them (Unix ns), which
	// tells a late point (device time before it) from an in-order one.
	//
	// A trail row is a block of one driver's consecutive in-order points,
	// those one applier page brought (packed, trailPointBytes each, oldest
	// first), keyed by the trail_n of its newest point: a page of many
	// points of a driver is one row, not one per point, and cutting the
	// trail to its bound is still one range delete on the key (a
	// block goes once its newest point is past the bound). Since schema 5
	// a block holds only in-order points: none before the ceiling of
	// those before it, so in key order the blocks' device-time ranges
	// (their first and last point) never overlap and never go back, and a
	// range is found by a binary search on the key, then a scan that stops
	// at the page limit (TrailHistory); commit times grow with the key
	// too, so the window cut is a prefix of the key range. (No column is
	// added for those times: they are read from the block, which keeps the
	// per-page insert as it was.) Late points (device time before the
	// ceiling) go to trail_late instead, sorted by device time in chunks of
	// lateChunk keyed by the trail_n of their newest point by arrival,
	// with their range and newest commit time: they are few (a phone
	// resending a buffer), and a history page reads those overlapping it.
	`CREATE TABLE IF NOT EXISTS positions (
		driver TEXT PRIMARY KEY, seq INTEGER NOT NULL, lat REAL NOT NULL, lng REAL NOT NULL,
		speed_kmh REAL NOT NULL, heading REAL NOT NULL, ts INTEGER NOT NULL,
		lsn INTEGER NOT NULL, committed_at INTEGER NOT NULL, trail_n INTEGER NOT NULL,
		trail_ceil INTEGER NOT NULL) WITHOUT ROWID`,
	// trail is a rowid table (its key an index on driver, n) since issue
	// 16: its blocks (up to 16 kB) overflow a 4 kB page, and in a WITHOUT
	// ROWID table every interior cell holds a whole row, so each insert
	// read overflow pages to compare keys and each transaction wrote a
	// leaf and an overflow page per driver. Now the blocks of a
	// transaction are appended next to each other by rowid and the index
	// holds only (driver, n): half the applier's CPU at 400 records a
	// transaction (BENCHMARKS.md, "The replica's cost per driver point").
	// A replica made before keeps its WITHOUT ROWID trail (CREATE ... IF
	// NOT EXISTS leaves it), which the same statements read and write
	// (TestOlderTrailLayoutStillApplies); no schema version, so no
	// rebuild from the log at the upgrade.
	`CREATE TABLE IF NOT EXISTS trail (
		driver TEXT NOT NULL, n INTEGER NOT NULL, pts BLOB NOT NULL,
		PRIMARY KEY (driver, n))`,
	`CREATE TABLE IF NOT EXISTS trail_late (
		driver TEXT NOT NULL, n INTEGER NOT NULL, ts_min INTEGER NOT NULL, ts_max INTEGER NOT NULL,
		at INTEGER NOT NULL, pts BLOB NOT NULL, PRIMARY KEY (driver, n)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS assignments (
		route TEXT PRIMARY KEY, driver TEXT NOT NULL, stops INTEGER NOT NULL, note TEXT NOT NULL,
		version INTEGER NOT NULL, lsn INTEGER NOT NULL, committed_at INTEGER NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS assignments_lsn ON assignments (lsn)`,
	// Since schema 4: every version of a route's assignment as the log
	// brought it (a delete is a row with deleted = 1), keyed by its LSN,
	// the newest AssignmentVersions of each route kept. A rebuild from a
	// snapshot keeps only the versions the snapshot holds (the latest).
	`CREATE TABLE IF NOT EXISTS assignment_versions (
		route TEXT NOT NULL, lsn INTEGER NOT NULL, driver TEXT NOT NULL, stops BLOB NOT NULL,
		note TEXT NOT NULL, version INTEGER NOT NULL, committed_at INTEGER NOT NULL, deleted INTEGER NOT NULL,
		PRIMARY KEY (route, lsn)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS loading (
		id TEXT PRIMARY KEY, terminal TEXT NOT NULL, dock TEXT NOT NULL, shipment TEXT NOT NULL,
		kind TEXT NOT NULL, pallets INTEGER NOT NULL, ts INTEGER NOT NULL,
		lsn INTEGER NOT NULL, committed_at INTEGER NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS loading_lsn ON loading (lsn)`,
	`CREATE INDEX IF NOT EXISTS loading_dock ON loading (dock, lsn)`,
	`CREATE INDEX IF NOT EXISTS loading_shipment ON loading (shipment, lsn)`,
	`CREATE INDEX IF NOT EXISTS loading_terminal ON loading (terminal, lsn)`,
	`CREATE TABLE IF NOT EXISTS loading_counts (dock TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
		PRIMARY KEY (dock, kind)) WITHOUT ROWID`,
	`CREATE TRIGGER IF NOT EXISTS loading_ins AFTER INSERT ON loading BEGIN
		INSERT INTO loading_counts (dock, kind, n) VALUES (NEW.dock, NEW.kind, 1)
			ON CONFLICT (dock, kind) DO UPDATE SET n = n + 1;
	END`,
	`CREATE TRIGGER IF NOT EXISTS loading_del AFTER DELETE ON loading BEGIN
		UPDATE loading_counts SET n = n - 1 WHERE dock = OLD.dock AND kind = OLD.kind;
		DELETE FROM loading_counts WHERE dock = OLD.dock AND kind = OLD.kind AND n <= 0;
	END`,
	`CREATE TRIGGER IF NOT EXISTS loading_upd AFTER UPDATE OF dock, kind ON loading BEGIN
		UPDATE loading_counts SET n = n - 1 WHERE dock = OLD.dock AND kind = OLD.kind;
		DELETE FROM loading_counts WHERE dock = OLD.dock AND kind = OLD.kind AND n <= 0;
		INSERT INTO loading_counts (dock, kind, n) VALUES (NEW.dock, NEW.kind, 1)
			ON CONFLICT (dock, kind) DO UPDATE SET n = n + 1;
	END`,
	// User tables, mirrored as they are in the store.
	`CREATE TABLE IF NOT EXISTS rows (
		tbl TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL,
		lsn INTEGER NOT NULL, committed_at INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID`,
}

// dataTables are cleared by a rebuild (loading_counts follows loading by
// its trigger, and is cleared after it for good measure).
var dataTables = []string{"positions", "trail", "trail_late", "assignments", "assignment_versions", "loading", "loading_counts", "rows"}

// Meta names.
const (
	metaApplied = "applied_lsn"
	metaSchema  = "schema_version"
)

// synchronous is the writer's sync mode; benchmarks compare others.
var synchronous = "OFF"

// dsn builds the driver's data source name of the file at path. Pragmas
// run on every new connection.
func dsn(path string, reader bool) (string, error) {
	if strings.ContainsAny(path, "?#") {
		return "", fmt.Errorf("replica: path %q: '?' and '#' are not allowed in the file name", path)
	}
	p := []string{"busy_timeout(5000)", "temp_store(MEMORY)"}
	if reader {
		// Readers never write; each keeps a small page cache.
		p = append(p, "query_only(1)", "cache_size(-4000)")
	} else {
		// The replica is rebuilt from the log after a crash: no fsyncs.
		p = append(p, "synchronous("+synchronous+")", "cache_size(-16000)")
	}
	p = append(p, "journal_mode(WAL)")
	q := make([]string, len(p))
	for i, v := range p {
		q[i] = "_pragma=" + v
	}
	return path + "?" + strings.Join(q, "&"), nil
}

// migrate creates the schema, or drops a replica of another schema version
// so that it is rebuilt from the log. It answers the applied LSN.
func migrate(ctx context.Context, conn *sql.Conn) (uint64, error) {
	var have int64
	err := conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = ?`, metaSchema).Scan(&have)
	switch {
	case err == nil && have != schemaVersion:
		for _, t := range append([]string{"meta"}, dataTables...) {
			if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
				return 0, fmt.Errorf("replica: drop %s of schema %d: %w", t, have, err)
			}
		}
	case err == nil, err == sql.ErrNoRows:
	case strings.Contains(err.Error(), "no such table"):
	default:
		return 0, fmt.Errorf("replica: read schema version: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, fmt.Errorf("replica: create schema: %w", err)
	}
	for _, s := range schema {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			conn.ExecContext(ctx, "ROLLBACK")
			return 0, fmt.Errorf("replica: create schema: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, metaSchema, schemaVersion); err != nil {
		conn.ExecContext(ctx, "ROLLBACK")
		return 0, fmt.Errorf("replica: create schema: %w", err)
	}
	var applied int64
	err = conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = ?`, metaApplied).Scan(&applied)
	if err != nil && err != sql.ErrNoRows {
		conn.ExecContext(ctx, "ROLLBACK")
		return 0, fmt.Errorf("replica: read applied lsn: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return 0, fmt.Errorf("replica: create schema: %w", err)
	}
	return uint64(applied), nil
}
