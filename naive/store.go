package naive

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"routehound/fleet"
)

// store is the one SQLite database: a log of every write (lsn = rowid),
// the current state per (table, key), idempotency answers and each
// driver's last seq.
type store struct {
	db *sql.DB
}

var errConflict = errors.New("version conflict")
var errIdemMismatch = errors.New("idempotency key reused for another request")

const schema = `
CREATE TABLE IF NOT EXISTS log(lsn INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, key TEXT NOT NULL,
  op TEXT NOT NULL, value TEXT, version INTEGER NOT NULL, actor TEXT NOT NULL, committed_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_tbl ON log(tbl, lsn);
CREATE TABLE IF NOT EXISTS state(tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT, version INTEGER NOT NULL,
  lsn INTEGER NOT NULL, PRIMARY KEY(tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idem(scope TEXT NOT NULL, key TEXT NOT NULL, fp BLOB NOT NULL, status INTEGER NOT NULL,
  answer BLOB NOT NULL, PRIMARY KEY(scope, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drivers(driver TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
`

func openStore(dir string) (*store, error) {
	path := filepath.Join(dir, "naive.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(30000)")
	if err != nil {
		return nil, fmt.Errorf("naive: open %s: %w", path, err)
	}
	// One connection: every reader and writer of every actor queues for it.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("naive: schema of %s: %w", path, err)
	}
	return &store{db: db}, nil
}

// write is one keyed write and its idempotency key.
type write struct {
	table, key, actor string
	value             []byte
	ifVersion         *uint64 // nil: unconditional; 0: create only
	idemScope, idem   string
	fp                []byte
}

// result of a committed write.
type result struct {
	version     uint64
	lsn         uint64
	committedAt time.Time
	created     bool
}

// put commits one write in its own transaction (fsync at COMMIT). With an
// idempotency key already used, it answers the stored answer (replayed).
// answer builds the reply stored with the key.
func (s *store) put(ctx context.Context, w write, answer func(result) (int, []byte)) (int, []byte, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("naive: begin: %w", err)
	}
	defer tx.Rollback()
	if w.idem != "" {
		var fp, ans []byte
		var status int
		err := tx.QueryRowContext(ctx, `SELECT fp, status, answer FROM idem WHERE scope=? AND key=?`, w.idemScope, w.idem).Scan(&fp, &status, &ans)
		if err == nil {
			if !bytes.Equal(fp, w.fp) {
				return 0, nil, errIdemMismatch
			}
			return status, ans, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, nil, fmt.Errorf("naive: idempotency lookup: %w", err)
		}
	}
	var cur uint64
	err = tx.QueryRowContext(ctx, `SELECT version FROM state WHERE tbl=? AND key=?`, w.table, w.key).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("naive: read %s/%s: %w", w.table, w.key, err)
	}
	if w.ifVersion != nil && *w.ifVersion != cur {
		return 0, nil, errConflict
	}
	r := result{version: cur + 1, committedAt: time.Now().UTC(), created: cur == 0}
	res, err := tx.ExecContext(ctx, `INSERT INTO log(tbl, key, op, value, version, actor, committed_at) VALUES(?,?,?,?,?,?,?)`,
		w.table, w.key, "put", string(w.value), r.version, w.actor, r.committedAt.Format(time.RFC3339Nano))
	if err != nil {
		return 0, nil, fmt.Errorf("naive: log %s/%s: %w", w.table, w.key, err)
	}
	lsn, _ := res.LastInsertId()
	r.lsn = uint64(lsn)
	if _, err := tx.ExecContext(ctx, `INSERT INTO state(tbl, key, value, version, lsn) VALUES(?,?,?,?,?)
		ON CONFLICT(tbl, key) DO UPDATE SET value=excluded.value, version=excluded.version, lsn=excluded.lsn`,
		w.table, w.key, string(w.value), r.version, r.lsn); err != nil {
		return 0, nil, fmt.Errorf("naive: state %s/%s: %w", w.table, w.key, err)
	}
	status, ans := answer(r)
	if w.idem != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO idem(scope, key, fp, status, answer) VALUES(?,?,?,?,?)`, w.idemScope, w.idem, w.fp, status, ans); err != nil {
			return 0, nil, fmt.Errorf("naive: idempotency key: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, fmt.Errorf("naive: commit %s/%s: %w", w.table, w.key, err)
	}
	return status, ans, nil
}

// point commits one driver point in its own transaction: log, position
// and the driver's seq. dup is true when seq is not above the last one.
func (s *store) point(ctx context.Context, driver string, seq uint64, value []byte) (dup bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("naive: begin: %w", err)
	}
	defer tx.Rollback()
	var last uint64
	err = tx.QueryRowContext(ctx, `SELECT seq FROM drivers WHERE driver=?`, driver).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("naive: driver %s: %w", driver, err)
	}
	if seq <= last {
		return true, nil
	}
	var cur uint64
	err = tx.QueryRowContext(ctx, `SELECT version FROM state WHERE tbl=? AND key=?`, fleet.TablePositions, driver).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("naive: position of %s: %w", driver, err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO log(tbl, key, op, value, version, actor, committed_at) VALUES(?,?,?,?,?,?,?)`,
		fleet.TablePositions, driver, "put", string(value), cur+1, string(fleet.ActorDriver), time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return false, fmt.Errorf("naive: log point of %s: %w", driver, err)
	}
	lsn, _ := res.LastInsertId()
	if _, err := tx.ExecContext(ctx, `INSERT INTO state(tbl, key, value, version, lsn) VALUES(?,?,?,?,?)
		ON CONFLICT(tbl, key) DO UPDATE SET value=excluded.value, version=excluded.version, lsn=excluded.lsn`,
		fleet.TablePositions, driver, string(value), cur+1, lsn); err != nil {
		return false, fmt.Errorf("naive: position of %s: %w", driver, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO drivers(driver, seq) VALUES(?,?) ON CONFLICT(driver) DO UPDATE SET seq=excluded.seq`, driver, seq); err != nil {
		return false, fmt.Errorf("naive: seq of %s: %w", driver, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("naive: commit point of %s: %w", driver, err)
	}
	return false, nil
}

func (s *store) driverSeq(ctx context.Context, driver string) (uint64, error) {
	var seq uint64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM drivers WHERE driver=?`, driver).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, err
}

func (s *store) lastLSN(ctx context.Context) (uint64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(lsn) FROM log`).Scan(&n); err != nil {
		return 0, fmt.Errorf("naive: last lsn: %w", err)
	}
	return uint64(n.Int64), nil
}

// row is one key's state, as the tables API answers it.
type row struct {
	Key     string  `json:"key"`
	Value   rawJSON `json:"value"`
	Version uint64  `json:"version"`
	LSN     uint64  `json:"lsn"`
}

// rows pages a table's state by key.
func (s *store) rows(ctx context.Context, table, after string, limit int) ([]row, bool, error) {
	q, err := s.db.QueryContext(ctx, `SELECT key, value, version, lsn FROM state WHERE tbl=? AND key>? ORDER BY key LIMIT ?`, table, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("naive: scan %s: %w", table, err)
	}
	defer q.Close()
	out := []row{}
	for q.Next() {
		var r row
		var v string
		if err := q.Scan(&r.Key, &v, &r.Version, &r.LSN); err != nil {
			return nil, false, fmt.Errorf("naive: scan %s: %w", table, err)
		}
		r.Value = rawJSON(v)
		out = append(out, r)
	}
	if err := q.Err(); err != nil {
		return nil, false, fmt.Errorf("naive: scan %s: %w", table, err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// logRecord is one log row as GET /v1/log answers it.
type logRecord struct {
	LSN         uint64  `json:"lsn"`
	Table       string  `json:"table"`
	Key         string  `json:"key"`
	Op          string  `json:"op"`
	Value       rawJSON `json:"value"`
	Version     uint64  `json:"version"`
	Actor       string  `json:"actor"`
	CommittedAt string  `json:"committed_at"`
}

// log reads up to limit records after lsn, of one table when table != "".
func (s *store) log(ctx context.Context, after uint64, limit int, table string) ([]logRecord, error) {
	var q *sql.Rows
	var err error
	if table == "" {
		q, err = s.db.QueryContext(ctx, `SELECT lsn, tbl, key, op, value, version, actor, committed_at FROM log WHERE lsn>? ORDER BY lsn LIMIT ?`, after, limit)
	} else {
		q, err = s.db.QueryContext(ctx, `SELECT lsn, tbl, key, op, value, version, actor, committed_at FROM log WHERE tbl=? AND lsn>? ORDER BY lsn LIMIT ?`, table, after, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("naive: read log after %d: %w", after, err)
	}
	defer q.Close()
	out := []logRecord{}
	for q.Next() {
		var r logRecord
		var v string
		if err := q.Scan(&r.LSN, &r.Table, &r.Key, &r.Op, &v, &r.Version, &r.Actor, &r.CommittedAt); err != nil {
			return nil, fmt.Errorf("naive: read log: %w", err)
		}
		r.Value = rawJSON(v)
		out = append(out, r)
	}
	return out, q.Err()
}

// rawJSON is a stored JSON value, written as is.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) {
	if r == "" {
		return []byte("null"), nil
	}
	return []byte(r), nil
}
