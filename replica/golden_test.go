package replica

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// goldenLog is a log of driver points with what the applier must handle
// besides the common case: late points (device time going back), deletes
// in the middle of a page and points after them, values only
// encoding/json reads (whitespace, a time with an offset), values it
// cannot read (skipped), a trail bound small enough for a page to bring
// more points of a driver than it keeps, and three pages.
func goldenLog() []engine.Record {
	rng := rand.New(rand.NewPCG(16, 16))
	const drivers = 40
	seq := make([]uint64, drivers)
	ts := make([]time.Time, drivers)
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var recs []engine.Record
	for i := range 20000 {
		d := rng.IntN(drivers)
		key := fmt.Sprintf("drv-%02d", d)
		if rng.IntN(400) == 0 {
			recs = append(recs, engine.Record{Table: fleet.TablePositions, Key: key, Op: engine.OpDelete})
			continue
		}
		seq[d]++
		if ts[d].IsZero() {
			ts[d] = t0
		}
		at := ts[d].Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		if rng.IntN(20) == 0 {
			at = ts[d].Add(-time.Duration(rng.IntN(60)) * time.Second) // late
		} else {
			ts[d] = at
		}
		p := fleet.PointValue{Seq: seq[d], Lat: 48 + rng.Float64(), Lng: 11 + rng.Float64(), TS: at,
			SpeedKmh: float64(rng.IntN(1200)) / 10, Heading: float64(rng.IntN(3600)) / 10}
		v := p.AppendJSON(nil)
		switch i % 97 {
		case 1:
			v = []byte(strings.Replace(string(v), `,"lat"`, `, "lat"`, 1))
		case 2:
			v = []byte(strings.Replace(string(v), `Z"`, `+01:30"`, 1))
		case 3:
			v = []byte(`{"seq":` + fmt.Sprint(seq[d]) + `,"lat":"x"}`)
		case 4:
			v = []byte(`{"seq":` + fmt.Sprint(seq[d]) + `,"lat":1.25,"lng":-2.5e-3,"ts":"2026-11-23T10:00:00.1234567891Z","speed_kmh":0.1}`)
		}
		recs = append(recs, engine.Record{Table: fleet.TablePositions, Key: key, Op: engine.OpPut, Value: v, Version: seq[d]})
	}
	return recs
}

// dumpReplica is every row of the replica's positions, trail and
// trail_late, in key order.
func dumpReplica(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b strings.Builder
	for _, q := range []string{
		`SELECT driver, seq, lat, lng, speed_kmh, heading, ts, lsn, committed_at, trail_n, trail_ceil FROM positions ORDER BY driver`,
		`SELECT driver, n, hex(pts) FROM trail ORDER BY driver, n`,
		`SELECT driver, n, ts_min, ts_max, at, hex(pts) FROM trail_late ORDER BY driver, n`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

// goldenSum is the SHA-256 of dumpReplica after goldenLog, as the applier
// of 9574d43 (before issue 16's changes to it) wrote it. A change that
// alters what the replica stores changes it: say why in the commit.
const goldenSum = "afbc9d620e5ad601f286fd7ac45f004ecee445fc814f1a6bd42b918851db3213"

// applyGolden applies goldenLog to a replica at path (bound 50 points a
// driver) and answers the SHA-256 of its rows.
func applyGolden(t *testing.T, path string) string {
	t.Helper()
	f := &fakeSource{}
	f.commit(time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC), goldenLog()...)
	r, err := OpenWith(path, f, nil, Options{TrailMaxPoints: 50})
	if err != nil {
		t.Fatal(err)
	}
	waitLSN(t, r, f.DurableLSN())
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Batches != 3 || st.Skipped == 0 {
		t.Fatalf("%d pages, %d skipped: the log no longer has the shape it was made for", st.Batches, st.Skipped)
	}
	dump := dumpReplica(t, path)
	sum := sha256.Sum256([]byte(dump))
	return hex.EncodeToString(sum[:])
}

// TestApplyMatchesGolden: the applier stores the golden log as it did
// before its per-point costs were cut, row for row and byte for byte.
func TestApplyMatchesGolden(t *testing.T) {
	if got := applyGolden(t, filepath.Join(t.TempDir(), "r.db")); got != goldenSum {
		t.Fatalf("the replica's rows changed: sha256 %s, want %s", got, goldenSum)
	}
}

// TestOlderTrailLayoutStillApplies: a replica made before the trail was a
// rowid table keeps its WITHOUT ROWID trail, and the applier writes the
// same rows to it; a new replica gets the rowid table.
func TestOlderTrailLayoutStillApplies(t *testing.T) {
	for _, older := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "r.db")
		if older {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(`CREATE TABLE trail (driver TEXT NOT NULL, n INTEGER NOT NULL, pts BLOB NOT NULL,
				PRIMARY KEY (driver, n)) WITHOUT ROWID`); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
		if got := applyGolden(t, path); got != goldenSum {
			t.Fatalf("older layout %v: the replica's rows changed: sha256 %s, want %s", older, got, goldenSum)
		}
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		var ddl string
		err = db.QueryRow(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'trail'`).Scan(&ddl)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ddl, "WITHOUT ROWID") != older {
			t.Fatalf("older layout %v: the trail is %s", older, ddl)
		}
	}
}
