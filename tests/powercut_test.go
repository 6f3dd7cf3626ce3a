//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"routehound/internal/lossyfs"
)

var powercutCycles = flag.Int("powercut.cycles", 10, "TestPowerCut: number of power cuts (SIGKILL + lossyfs Crash)")

// mountLossy mounts a lossy filesystem for the test, unmounted at its end.
// Without /dev/fuse it fails the test: a power-cut test that silently does
// not run proves nothing. LOSSYFS_ALLOW_SKIP=1 turns that into a skip for
// machines known to lack FUSE.
func mountLossy(t *testing.T) *lossyfs.FS {
	t.Helper()
	dir := t.TempDir()
	l, err := lossyfs.Mount(filepath.Join(dir, "mnt"), filepath.Join(dir, "backing"))
	if errors.Is(err, lossyfs.ErrNoFuse) && os.Getenv("LOSSYFS_ALLOW_SKIP") == "1" {
		t.Skipf("%v (LOSSYFS_ALLOW_SKIP=1)", err)
	}
	if err != nil {
		t.Fatalf("power-cut tests need FUSE (set LOSSYFS_ALLOW_SKIP=1 to skip): %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// onLossy moves the harness's data dir onto the lossy mount.
func onLossy(t *testing.T, h *harness, l *lossyfs.FS) {
	t.Helper()
	h.dataDir = filepath.Join(l.Dir(), "data")
	if err := os.MkdirAll(h.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// powerActor is one client kind of the power-cut test: it runs against the
// server until ctx ends (one cycle), keeps across cycles what the server
// confirmed, and at the end checks the change feed against it. A phone-app
// (OsmAnd) client joins the test by implementing it.
type powerActor interface {
	run(ctx context.Context, h *harness, rng *rand.Rand, bad *issues)
	// check reports every confirmed write missing or duplicated in the
	// feed, and returns how many confirmed writes it checked.
	check(f *feed, bad *issues) int
	kind() string
}

// feed is the change feed indexed for the checks.
type feed struct {
	records int
	byNote  map[string][]logRecord           // assignments, by the note of the value
	byKey   map[string][]logRecord           // loading, by key
	bySeq   map[string]map[int64][]logRecord // positions: driver → seq → records
}

func indexFeed(recs []logRecord, bad *issues) *feed {
	f := &feed{records: len(recs), byNote: map[string][]logRecord{}, byKey: map[string][]logRecord{},
		bySeq: map[string]map[int64][]logRecord{}}
	for _, r := range recs {
		switch r.Table {
		case "assignments":
			var v struct{ Note string }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				bad.add("assignments record lsn %d: value %s: %v", r.LSN, r.Value, err)
			}
			f.byNote[v.Note] = append(f.byNote[v.Note], r)
		case "loading":
			f.byKey[r.Key] = append(f.byKey[r.Key], r)
		case "positions":
			var v struct{ Seq *int64 }
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Seq == nil {
				bad.add("positions record lsn %d: value %s has no seq (%v)", r.LSN, r.Value, err)
				continue
			}
			if f.bySeq[r.Key] == nil {
				f.bySeq[r.Key] = map[int64][]logRecord{}
			}
			f.bySeq[r.Key][*v.Seq] = append(f.bySeq[r.Key][*v.Seq], r)
		}
	}
	return f
}

// driverActor: every point at or below the highest durable_seq answered is
// in the feed once, as sent; no point is there twice.
type driverActor struct{ *driverSim }

func (d driverActor) kind() string { return "driver" }

func (d driverActor) check(f *feed, bad *issues) int {
	for seq, rs := range f.bySeq[d.name] {
		if len(rs) > 1 {
			bad.add("driver %s seq %d is %d times in the log", d.name, seq, len(rs))
		}
		if seq < 1 || seq > int64(len(d.points)) {
			bad.add("driver %s seq %d is in the log but was never sent", d.name, seq)
			continue
		}
		if want, _ := json.Marshal(d.points[seq-1]); !sameJSON(rs[0].Value, want) {
			bad.add("driver %s seq %d: log value %s, sent %s", d.name, seq, rs[0].Value, want)
		}
	}
	for seq := int64(1); seq <= d.durable; seq++ {
		if len(f.bySeq[d.name][seq]) == 0 {
			bad.add("driver %s seq %d is missing from the log although durable_seq %d was answered", d.name, seq, d.durable)
		}
	}
	return int(d.durable)
}

// writerActor: a dispatcher or a terminal; every confirmed write is in the
// feed exactly once at the LSN answered.
type writerActor struct{ *syncWriter }

func (w writerActor) kind() string { return w.role }

func (w writerActor) check(f *feed, bad *issues) int {
	for _, c := range w.confirmed {
		found := f.byKey[c.key]
		if c.note != "" {
			found = f.byNote[c.note]
		}
		switch {
		case len(found) != 1:
			bad.add("%s write %q (key %q, answered lsn %d) is %d times in the log, want once",
				w.role, c.note, c.key, c.lsn, len(found))
		case found[0].Table != c.table || found[0].Key != c.key || found[0].LSN != c.lsn || found[0].Op != "put":
			bad.add("%s write %q: log has %s/%s op %s at lsn %d, the server answered %s/%s at lsn %d",
				w.role, c.note, found[0].Table, found[0].Key, found[0].Op, found[0].LSN, c.table, c.key, c.lsn)
		}
	}
	return len(w.confirmed)
}

// TestPowerCut runs the real binary with its data dir on a lossy
// filesystem. Drivers, a dispatcher and warehouse terminals drive it
// concurrently; at a random moment of every cycle the server is SIGKILLed
// and everything not fsynced is dropped (a power cut), then it restarts on
// the same mount. At the end every confirmed dispatch, every acknowledged
// warehouse event and every driver point at or below a durable_seq the
// driver received must be in the change feed exactly once.
func TestPowerCut(t *testing.T) {
	l := mountLossy(t)
	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 0xbadc0de))
	bad := &issues{t: t}
	h := newHarness(t, "")
	onLossy(t, h, l)

	var drivers []*driverSim
	var actors []powerActor
	for i := 1; i <= 4; i++ {
		d := &driverSim{name: fmt.Sprintf("truck-%02d", i)}
		drivers = append(drivers, d)
		actors = append(actors, driverActor{d})
	}
	actors = append(actors, writerActor{newDispatcher(drivers[0].name)})
	for i := 1; i <= 2; i++ {
		actors = append(actors, writerActor{newTerminal(fmt.Sprintf("T%d", i))})
	}

	cycles := 0
	var unsynced int64 // bytes the power cuts dropped
	var recover []time.Duration
	t0 := time.Now()
	for cycles < *powercutCycles && !t.Failed() {
		cycles++
		ts := time.Now()
		h.start()
		if cycles > 1 {
			recover = append(recover, time.Since(ts))
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, a := range actors {
			rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
			wg.Go(func() { a.run(ctx, h, rng, bad) })
		}
		time.Sleep(200*time.Millisecond + time.Duration(master.IntN(600))*time.Millisecond)
		// The power cut: the process dies, then everything it did not
		// fsync is gone. Whatever was answered before the kill counts as
		// answered.
		h.kill()
		unsynced += l.UnsyncedBytes()
		l.Crash()
		cancel()
		wg.Wait()
	}
	if t.Failed() {
		t.Fatalf("stopped after %d power cuts (seed %d)", cycles, seed)
	}
	elapsed := time.Since(t0)

	h.start()
	recs := readLog(t, h)
	h.stop()

	f := indexFeed(recs, bad)
	checked := map[string]int{}
	for _, a := range actors {
		checked[a.kind()] += a.check(f, bad)
	}
	for name := range f.bySeq {
		if !isDriver(drivers, name) {
			bad.add("positions has points of unknown driver %q", name)
		}
	}
	for _, k := range []string{"dispatch", "warehouse", "driver"} {
		if checked[k] == 0 {
			t.Errorf("no %s write was confirmed in %d power cuts", k, cycles)
		}
	}
	if unsynced == 0 {
		t.Errorf("no power cut dropped any unsynced data: the test did not test anything")
	}
	if n := bad.count(); n > 0 {
		t.Errorf("%d issues in total (seed %d)", n, seed)
	}
	st := l.Stats()
	t.Logf("%d power cuts in %v (%.2fs a cycle; restart to ready median %v, max %v; seed %d): checked dispatch %d, warehouse %d, driver points %d (of %d sent); log %d records; the cuts dropped %d KiB unsynced, lossyfs wrote through %d fsyncs",
		cycles, elapsed.Round(time.Millisecond), elapsed.Seconds()/float64(cycles),
		percentile(recover, 50).Round(time.Millisecond), percentile(recover, 100).Round(time.Millisecond), seed,
		checked["dispatch"], checked["warehouse"], checked["driver"], sentPoints(drivers), f.records,
		unsynced>>10, st.Fsyncs)
}
