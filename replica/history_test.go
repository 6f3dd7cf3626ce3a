package replica

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// Every version of a route is kept with its LSN, a delete too, oldest
// first, paged after an LSN.
func TestAssignmentHistoryKeepsEveryVersion(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	ctx := context.Background()
	var lsns []uint64
	for i := range 5 {
		lsns = append(lsns, s.put(t, fleet.TableAssignments, "r1", fmt.Sprintf(`{"driver":"d%d","stops":[{"id":"s","lat":1.5,"lng":2.5}],"note":"v%d"}`, i, i)))
	}
	s.put(t, fleet.TableAssignments, "other", `{"driver":"x","stops":[],"note":""}`)
	lsns = append(lsns, s.del(t, fleet.TableAssignments, "r1"))
	last := s.put(t, fleet.TableAssignments, "r1", `{"driver":"back","stops":[],"note":"again"}`)
	lsns = append(lsns, last)
	waitLSN(t, r, last)

	vs, more, err := r.AssignmentHistory(ctx, "r1", 0, 0)
	if err != nil || more || len(vs) != len(lsns) {
		t.Fatalf("history: %d versions, more %v, err %v; want %d", len(vs), more, err, len(lsns))
	}
	for i, v := range vs {
		if v.LSN != lsns[i] || v.Route != "r1" || v.CommittedAt.IsZero() {
			t.Fatalf("version %d: %+v, want lsn %d with a commit time", i, v, lsns[i])
		}
	}
	if vs[2].Driver != "d2" || vs[2].Note != "v2" || vs[2].Deleted {
		t.Fatalf("version 2: %+v", vs[2])
	}
	var stops []fleet.Stop
	if err := json.Unmarshal(vs[0].Stops, &stops); err != nil || len(stops) != 1 || *stops[0].Lat != 1.5 {
		t.Fatalf("stops %s: %v", vs[0].Stops, err)
	}
	if !vs[5].Deleted || vs[6].Deleted || vs[6].Driver != "back" {
		t.Fatalf("delete then put: %+v %+v", vs[5], vs[6])
	}
	// Paged two at a time after the last LSN seen.
	var got []uint64
	after := uint64(0)
	for range 10 {
		page, more, err := r.AssignmentHistory(ctx, "r1", after, 2)
		if err != nil || len(page) == 0 || len(page) > 2 {
			t.Fatalf("page after %d: %d versions, %v", after, len(page), err)
		}
		for _, v := range page {
			got = append(got, v.LSN)
		}
		after = page[len(page)-1].LSN
		if !more {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(lsns) {
		t.Fatalf("paged %v, want %v", got, lsns)
	}
	if vs, more, err := r.AssignmentHistory(ctx, "nope", 0, 0); err != nil || more || len(vs) != 0 {
		t.Fatalf("unknown route: %v %v %v", vs, more, err)
	}
}

// A route keeps its newest AssignmentVersions.
func TestAssignmentHistoryIsBounded(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	var last uint64
	for i := range AssignmentVersions + 5 {
		last = s.put(t, fleet.TableAssignments, "r1", fmt.Sprintf(`{"driver":"d","stops":[],"note":"%d"}`, i))
	}
	waitLSN(t, r, last)
	var n int
	if err := r.rdb.QueryRow(`SELECT count(*) FROM assignment_versions WHERE route = 'r1'`).Scan(&n); err != nil || n != AssignmentVersions {
		t.Fatalf("%d versions kept (%v), want %d", n, err, AssignmentVersions)
	}
	vs, _, err := r.AssignmentHistory(context.Background(), "r1", 0, 1)
	if err != nil || len(vs) != 1 || vs[0].Note != "5" {
		t.Fatalf("oldest kept: %+v %v", vs, err)
	}
}

// A replica of schema 3 (no versions) is rebuilt from the log, which
// fills the versions.
func TestSchema3IsRebuiltWithVersions(t *testing.T) {
	s := newStore(t, "")
	path := filepath.Join(t.TempDir(), "replica.db")
	r, err := Open(path, s.e, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.put(t, fleet.TableAssignments, "r1", `{"driver":"d1","stops":[],"note":""}`)
	waitLSN(t, r, s.put(t, fleet.TableAssignments, "r1", `{"driver":"d2","stops":[],"note":""}`))
	r.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE meta SET value = 3 WHERE name = 'schema_version'`, `DROP TABLE assignment_versions`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	r = openReplica(t, path, s.e)
	waitLSN(t, r, 2)
	vs, _, err := r.AssignmentHistory(context.Background(), "r1", 0, 0)
	if err != nil || len(vs) != 2 || vs[0].Driver != "d1" || vs[1].Driver != "d2" {
		t.Fatalf("after the rebuild: %+v %v", vs, err)
	}
}

func TestLoadingHistoryFiltersAndPages(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	ctx := context.Background()
	var last uint64
	for i := range 12 {
		dock, kind := "D1", "loaded"
		if i%3 == 0 {
			dock = "D2"
		}
		if i%2 == 0 {
			kind = "unloaded"
		}
		v := fmt.Sprintf(`{"terminal":"T%d","dock":%q,"shipment":"S%d","kind":%q,"pallets":1,"ts":"2026-11-23T09:%02d:00Z"}`, i%2, dock, i%4, kind, i)
		last = s.put(t, fleet.TableLoading, fmt.Sprintf("ev-%02d", i), v)
	}
	waitLSN(t, r, last)
	all, more, err := r.LoadingHistory(ctx, fleet.LoadingQuery{})
	if err != nil || more || len(all) != 12 {
		t.Fatalf("all: %d %v %v", len(all), more, err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].LSN <= all[i-1].LSN {
			t.Fatalf("not in LSN order: %d after %d", all[i].LSN, all[i-1].LSN)
		}
	}
	t0 := time.Date(2026, 11, 23, 9, 3, 0, 0, time.UTC)
	for _, c := range []struct {
		q    fleet.LoadingQuery
		want func(fleet.LoadingRow) bool
	}{
		{fleet.LoadingQuery{Dock: "D2"}, func(e fleet.LoadingRow) bool { return e.Dock == "D2" }},
		{fleet.LoadingQuery{Terminal: "T1", Kind: "loaded"}, func(e fleet.LoadingRow) bool { return e.Terminal == "T1" && e.Kind == "loaded" }},
		{fleet.LoadingQuery{Shipment: "S2"}, func(e fleet.LoadingRow) bool { return e.Shipment == "S2" }},
		{fleet.LoadingQuery{Since: t0, Until: t0.Add(4 * time.Minute)}, func(e fleet.LoadingRow) bool { return !e.TS.Before(t0) && e.TS.Before(t0.Add(4*time.Minute)) }},
	} {
		got, _, err := r.LoadingHistory(ctx, c.q)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range all {
			if c.want(e) {
				n++
			}
		}
		if len(got) != n || n == 0 {
			t.Fatalf("%+v: %d events, want %d", c.q, len(got), n)
		}
		for _, e := range got {
			if !c.want(e) {
				t.Fatalf("%+v answered %+v", c.q, e)
			}
		}
	}
	page, more, err := r.LoadingHistory(ctx, fleet.LoadingQuery{AfterLSN: all[4].LSN, Limit: 3})
	if err != nil || !more || len(page) != 3 || page[0].ID != all[5].ID {
		t.Fatalf("page: %+v %v %v", page, more, err)
	}
}

// The trail in device-time order within bounds, after a cursor.
func TestTrailHistoryInDeviceTimeOrder(t *testing.T) {
	s := newStore(t, "")
	r := openReplica(t, "", s.e)
	ctx := context.Background()
	// Seqs arrive in order, device times do not: seq 2 was taken first.
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	offs := []int{5, 0, 10, 15, 20, 25}
	var pts []engine.Point
	for i, o := range offs {
		pts = append(pts, engine.Point{Seq: uint64(i + 1), Value: fmt.Appendf(nil, `{"seq":%d,"lat":1,"lng":2,"ts":%q,"speed_kmh":3,"heading":0}`,
			i+1, base.Add(time.Duration(o)*time.Second).Format(time.RFC3339))})
	}
	if _, err := s.e.SubmitPoints(ctx, "d1", pts); err != nil {
		t.Fatal(err)
	}
	waitLSN(t, r, s.durable(t))
	got, more, err := r.TrailHistory(ctx, fleet.TrailQuery{Driver: "d1"})
	if err != nil || more || len(got) != 6 {
		t.Fatalf("trail: %d %v %v", len(got), more, err)
	}
	if got[0].Seq != 2 || got[1].Seq != 1 || got[5].Seq != 6 {
		t.Fatalf("not in device-time order: %d %d … %d", got[0].Seq, got[1].Seq, got[5].Seq)
	}
	got, more, err = r.TrailHistory(ctx, fleet.TrailQuery{Driver: "d1", Since: base.Add(5 * time.Second), Until: base.Add(20 * time.Second), Limit: 2})
	if err != nil || !more || len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 3 {
		t.Fatalf("bounded page: %+v %v %v", got, more, err)
	}
	c := fleet.CursorOf(got[1])
	got, more, err = r.TrailHistory(ctx, fleet.TrailQuery{Driver: "d1", Since: base.Add(5 * time.Second), Until: base.Add(20 * time.Second), After: &c, Limit: 2})
	if err != nil || more || len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("next page: %+v %v %v", got, more, err)
	}
}
