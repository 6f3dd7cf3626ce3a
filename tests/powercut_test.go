//go:build linux

package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"routehound/internal/lossyfs"
	"routehound/internal/testkit"
)

var (
	powercutCycles     = flag.Int("powercut.cycles", 10, "TestPowerCut: number of power cuts (SIGKILL + lossyfs Crash)")
	powercutStoreMB    = flag.Int("powercut.storemb", 0, "TestPowerCutBigStore: build a store of this many MiB, then time restarts after power cuts (0: do not run the measurement)")
	powercutSlowCycles = flag.Int("powercut.slowcycles", 6, "TestPowerCutSlowLog: number of power cuts with the log's fsync slowed")
	powercutPace       = flag.Duration("powercut.pace", 0, "TestPowerCut: drivers pause this long after each batch (long runs keep the log small)")
)

// mountLossy mounts a lossy filesystem for the test, unmounted at its end.
// Without /dev/fuse it fails the test: a power-cut test that silently does
// not run proves nothing. LOSSYFS_ALLOW_SKIP=1 turns that into a skip for
// machines known to lack FUSE.
func mountLossy(t *testing.T) *lossyfs.FS {
	t.Helper()
	dir := t.TempDir()
	return mountLossyAt(t, filepath.Join(dir, "mnt"), filepath.Join(dir, "backing"))
}

func mountLossyAt(t *testing.T, mnt, backing string) *lossyfs.FS {
	t.Helper()
	l, err := lossyfs.Mount(mnt, backing)
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
	t.Cleanup(func() {
		if t.Failed() {
			logCrashes(t, h.logPath)
		}
	})
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
	byFix   map[string]int                   // positions by fixKey (driver, ts, lat, lng): the phones' check reads its drivers
}

func indexFeed(recs []logRecord, bad *issues) *feed {
	f := &feed{records: len(recs), byNote: map[string][]logRecord{}, byKey: map[string][]logRecord{},
		bySeq: map[string]map[int64][]logRecord{}, byFix: map[string]int{}}
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
			var v struct {
				Seq *int64 `json:"seq"` // shadows storedFix.Seq: nil when missing
				storedFix
			}
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Seq == nil {
				bad.add("positions record lsn %d: value %s has no seq (%v)", r.LSN, r.Value, err)
				continue
			}
			if f.bySeq[r.Key] == nil {
				f.bySeq[r.Key] = map[int64][]logRecord{}
			}
			f.bySeq[r.Key][*v.Seq] = append(f.bySeq[r.Key][*v.Seq], r)
			f.byFix[fixKey(r.Key, v.TS, v.Lat, v.Lng)]++ // the phones' check skips other drivers
		}
	}
	return f
}

// driverActor: every point at or below the highest durable_seq answered is
// in the feed once, as sent; no point is there twice.
type driverActor struct{ *driverSim }

func (d driverActor) kind() string { return "driver" }

func (d driverActor) check(f *feed, bad *issues) int { return d.checkLog(f.bySeq[d.name], bad) }

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

// phoneActor: the phone-app clients (OsmAnd listener); every point that
// got 200 is in the feed exactly once, no point is stored twice or
// unsent, and no seq of a phone driver is there twice.
type phoneActor struct{ *phoneFleet }

func (p phoneActor) kind() string { return "phone" }

func (p phoneActor) run(ctx context.Context, _ *harness, rng *rand.Rand, bad *issues) {
	p.phoneFleet.run(ctx, rng, bad)
}

func (p phoneActor) check(f *feed, bad *issues) int {
	drivers := map[string]bool{}
	for _, ph := range p.phones {
		drivers[ph.driver] = true
	}
	for d := range drivers {
		for seq, rs := range f.bySeq[d] {
			if len(rs) > 1 {
				bad.add("phone driver %s seq %d is %d times in the log", d, seq, len(rs))
			}
		}
	}
	return p.phoneFleet.check(f.byFix, bad)
}

// TestPowerCut runs the real binary with its data dir on a lossy
// filesystem. Drivers, a dispatcher and warehouse terminals drive it
// and phones (the OsmAnd listener, apps' behaviour) concurrently; at a random moment of every cycle the server is SIGKILLed
// and everything not fsynced is dropped (a power cut), then it restarts on
// the same mount. At the end every confirmed dispatch, every acknowledged
// warehouse event and every driver point at or below a durable_seq the
// driver received and every phone point that got 200 must be in the
// change feed exactly once.
func TestPowerCut(t *testing.T) {
	powerCut(t, *powercutCycles, 0)
}

// TestPowerCutSlowLog is TestPowerCut with the store's log slow to fsync
// (Badger's memtable logs, *.mem, take 40 ms more per fsync than the
// other files): the journal answers the waited-for writes long before the
// log's fsync covers them, so the power cuts land between the two, and the
// restarts must write back from the journal what the log lost.
func TestPowerCutSlowLog(t *testing.T) {
	powerCut(t, *powercutSlowCycles, 40*time.Millisecond)
}

func powerCut(t *testing.T, maxCycles int, slowLog time.Duration) {
	l := mountLossy(t)
	l.SetSlowFsync(".mem", slowLog)
	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 0xbadc0de))
	bad := &issues{t: t}
	phones := newPhoneFleet(t, 4, "phone-van")
	for _, p := range phones.phones {
		p.pace = *powercutPace
	}
	h := newHarness(t, phones.toml)
	onLossy(t, h, l)

	var drivers []*driverSim
	var actors []powerActor
	for i := 1; i <= 4; i++ {
		d := &driverSim{name: fmt.Sprintf("truck-%02d", i), pace: *powercutPace}
		drivers = append(drivers, d)
		actors = append(actors, driverActor{d})
	}
	actors = append(actors, writerActor{newDispatcher(drivers[0].name)})
	for i := 1; i <= 2; i++ {
		actors = append(actors, writerActor{newTerminal(fmt.Sprintf("T%d", i))})
	}
	actors = append(actors, phoneActor{phones})

	cycles := 0
	var unsynced int64 // bytes the power cuts dropped
	var recover []time.Duration
	t0 := time.Now()
	for cycles < maxCycles && !t.Failed() {
		cycles++
		ts := time.Now()
		h.start()
		if cycles > 1 {
			recover = append(recover, time.Since(ts))
		} else {
			phones.register(t, h)
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
		if !isDriver(drivers, name) && !phones.isDriver(name) {
			bad.add("positions has points of unknown driver %q", name)
		}
	}
	for _, k := range []string{"dispatch", "warehouse", "driver", "phone"} {
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
	// Restarts that found acknowledged writes in the journal only (the
	// log's fsync had not covered them: wal/journal.go).
	replays := strings.Count(readFrom(h.logPath, 0), "from the journal that the store's log had lost")
	if slowLog > 0 && replays == 0 {
		t.Errorf("no restart in %d power cuts with the log's fsync %v slower wrote anything back from the journal: the test did not test it", cycles, slowLog)
	}
	t.Logf("%d power cuts in %v (%.2fs a cycle; restart to ready median %v, max %v; seed %d): checked dispatch %d, warehouse %d, driver points %d (of %d sent), phone points %d (%d phones); log %d records; the cuts dropped %d KiB unsynced, lossyfs wrote through %d fsyncs; %d restarts re-applied writes from the journal",
		cycles, elapsed.Round(time.Millisecond), elapsed.Seconds()/float64(cycles),
		testkit.PercentileLower(recover, 50).Round(time.Millisecond), testkit.PercentileLower(recover, 100).Round(time.Millisecond), seed,
		checked["dispatch"], checked["warehouse"], checked["driver"], sentPoints(drivers), checked["phone"], len(phones.phones), f.records,
		unsynced>>10, st.Fsyncs, replays)
}

// sseTail follows one table's SSE stream from LSN 0 and keeps every put.
type sseTail struct {
	mu     sync.Mutex
	puts   []logRecord // key and lsn, in arrival order
	closed error       // why the stream ended, once it has
}

func (s *sseTail) follow(ctx context.Context, h *harness, table string) {
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1/tables/"+table+"/events?from=0", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+h.tokens["dashboard"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET events: status %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "put":
				var r logRecord
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &r); err != nil {
					return fmt.Errorf("bad put event %q: %v", line, err)
				}
				s.mu.Lock()
				s.puts = append(s.puts, r)
				s.mu.Unlock()
			case strings.HasPrefix(line, "data: ") && event != "":
				return fmt.Errorf("stream sent %s: %s", event, line)
			case line == "":
				event = ""
			}
		}
		return fmt.Errorf("stream ended: %v", sc.Err())
	}()
	s.mu.Lock()
	s.closed = err
	s.mu.Unlock()
}

func (s *sseTail) snapshot() ([]logRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logRecord(nil), s.puts...), s.closed
}

// TestStorageFaults injects EIO on fsync, ENOSPC on writes and a low
// free-space figure into the lossy filesystem under the real binary. While
// a fault lasts a write is never acknowledged (503 JSON + Retry-After),
// a phone point gets its connection closed (no status), /readyz is not
// ready, the writes_refused metric names the reason, and
// reads and subscriptions keep working. Once the fault is gone the server
// reopens its store and accepts writes with no restart, the subscriber sees
// no gap, and after a power cut every acknowledged write is there once.
func TestStorageFaults(t *testing.T) {
	l := mountLossy(t)
	pf := newPhoneFleet(t, 1, "phone-van") // the config's device: no registration needed
	phone := pf.phones[0]
	h := newHarness(t, pf.toml)
	onLossy(t, h, l)
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	tail := &sseTail{}
	subCtx, subCancel := context.WithCancel(ctx)
	var subDone sync.WaitGroup
	subDone.Go(func() { tail.follow(subCtx, h, "loading") })
	defer func() { subCancel(); subDone.Wait() }()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	term := newTerminal("T-fault")
	post := func(req idemRequest) *reply {
		t.Helper()
		r, err := h.do(ctx, req.method, req.path, "warehouse", req.key, req.body)
		if err != nil {
			t.Fatalf("POST %s: %v", req.path, err)
		}
		if r.status == http.StatusCreated || r.status == http.StatusOK {
			c, err := term.parse(req, r)
			if err != nil {
				t.Fatal(err)
			}
			term.confirmed = append(term.confirmed, c)
		}
		return r
	}
	mustWrite := func(n int) {
		t.Helper()
		for range n {
			if r := post(term.newReq(rng)); r.status != http.StatusCreated {
				t.Fatalf("write with no fault: %s", r)
			}
		}
	}
	refused := func(what string, r *reply) {
		t.Helper()
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %s, want 503", what, r)
		}
		if err := r.errorBody(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := r.retryAfter(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	metric := func(line string) bool {
		r, err := h.do(ctx, http.MethodGet, "/metrics", "admin", "", nil)
		return err == nil && r.status == http.StatusOK && strings.Contains(string(r.body), line)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// phoneDelivers: the phone's oldest fix gets 200 (a new fix if it
	// holds none).
	phoneDelivers := func(what string) {
		t.Helper()
		if len(phone.pending) == 0 {
			phone.makeFix(rng)
		}
		if status, body, err := phone.send(ctx, pf.base); err != nil || status != http.StatusOK || len(body) != 0 {
			t.Fatalf("%s: phone point: %d %q %v, want 200 and no body", what, status, body, err)
		}
	}
	whileRefused := func(reason string) {
		t.Helper()
		// A phone point is not acknowledged: the connection is closed with
		// no status, so the app keeps the fix and retries it.
		if len(phone.pending) == 0 {
			phone.makeFix(rng)
		}
		if status, body, err := phone.send(ctx, pf.base); err == nil {
			t.Errorf("%s: phone point answered %d %q, want its connection closed", reason, status, body)
		}
		if h.ready() {
			t.Errorf("%s: /readyz answers 200 while writes are refused", reason)
		}
		if !metric(`routehound_writes_refused{reason="` + reason + `"} 1`) {
			t.Errorf("%s: /metrics does not say writes_refused{reason=%q} 1", reason, reason)
		}
		r, err := h.do(ctx, http.MethodGet, "/v1/tables/loading?limit=5", "dashboard", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Errorf("%s: reading a table while writes are refused: %v %v", reason, r, err)
		}
		pts, _ := json.Marshal([]point{makePoint(1, rng)})
		r, err = h.do(ctx, http.MethodPost, "/v1/drivers/truck-f/locations", "driver", "", pts)
		if err != nil {
			t.Fatal(err)
		}
		refused(reason+": driver point", r)
	}

	mustWrite(5)
	phoneDelivers("no fault")
	for _, fault := range []struct {
		name string
		set  func(bool)
	}{
		{"fsync EIO", l.SetFsyncEIO},
		{"ENOSPC", l.SetNoSpace},
	} {
		fault.set(true)
		// The write whose fsync fails is refused, and so is every later one.
		failed := term.newReq(rng)
		refused(fault.name+": write during the fault", post(failed))
		refused(fault.name+": next write", post(term.newReq(rng)))
		whileRefused("storage_failed")
		if !metric("routehound_store_failures_total") {
			t.Errorf("%s: no store_failures_total metric", fault.name)
		}
		time.Sleep(time.Second) // the server must not resume while the fault lasts
		if h.ready() {
			t.Fatalf("%s: ready again while the fault lasts", fault.name)
		}
		fault.set(false)
		waitFor(fault.name+": ready after the fault", h.ready)
		// The refused write, retried with its key: stored once, whether or
		// not the failed commit reached the disk.
		if r := post(failed); r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("%s: retry of the refused write: %s", fault.name, r)
		}
		phoneDelivers(fault.name + ": the refused phone point, retried after the fault")
		mustWrite(5)
	}

	// The free-space watermark.
	l.SetFreeBytes(1 << 20)
	waitFor("disk_low refusal", func() bool { return !h.ready() })
	r := post(term.newReq(rng))
	refused("disk low", r)
	whileRefused("disk_low")
	l.SetFreeBytes(-1)
	waitFor("ready after the disk has room", h.ready)
	phoneDelivers("disk low: the refused phone point, retried after the fault")
	mustWrite(5)

	if !metric("routehound_store_recoveries_total 2") {
		t.Errorf("/metrics does not count 2 store recoveries")
	}

	// The subscriber saw every loading record of the log, in LSN order,
	// with no gap across the reopens. The log is read again until it holds
	// what the subscriber saw last: a warehouse write is answered by the
	// journal, and reaches the log's reads (and the subscriber) once the
	// log's fsync covers it, a moment later.
	var want, got []logRecord
	var subErr error
	waitFor("subscriber catching up", func() bool {
		got, subErr = tail.snapshot()
		want = filterTable(readLog(t, h), "loading")
		if subErr != nil || len(got) < len(want) {
			return subErr != nil
		}
		return len(got) == 0 || len(want) > 0 && want[len(want)-1].LSN >= got[len(got)-1].LSN
	})
	if subErr != nil {
		t.Fatalf("the subscription ended: %v", subErr)
	}
	if len(got) != len(want) {
		lsns := func(rs []logRecord) []int64 {
			var out []int64
			for _, r := range rs {
				out = append(out, int64(r.LSN))
			}
			return out
		}
		t.Fatalf("subscriber saw %d puts, the log has %d loading records: subscriber lsns %v, log lsns %v",
			len(got), len(want), lsns(got), lsns(want))
	}
	for i := range want {
		if got[i].Key != want[i].Key || got[i].LSN != want[i].LSN {
			t.Fatalf("subscriber event %d: %s at lsn %d, the log has %s at lsn %d", i, got[i].Key, got[i].LSN, want[i].Key, want[i].LSN)
		}
	}

	// A power cut after all this: every acknowledged write is there once.
	h.kill()
	l.Crash()
	h.start()
	bad := &issues{t: t}
	f := indexFeed(readLog(t, h), bad)
	n := writerActor{term}.check(f, bad)
	np := pf.check(f.byFix, bad)
	h.stop()
	if n < 20 {
		t.Errorf("only %d writes acknowledged", n)
	}
	if np != 4 || len(phone.pending) != 0 {
		t.Errorf("phone: %d points acknowledged, %d pending; want 4 and 0 (before, and after each of 3 faults)", np, len(phone.pending))
	}
	for _, line := range strings.Split(readFrom(h.logPath, 0), "\n") {
		if strings.Contains(line, "storage") || strings.Contains(line, "free disk") {
			t.Log("server: " + line)
		}
	}
	t.Logf("%d warehouse writes and %d phone points acknowledged across EIO, ENOSPC and disk-low faults and a power cut; subscriber saw %d puts", n, np, len(got))
}

// TestPowerCutBigStore measures the time from start to ready after a power
// cut with a big store (-powercut.storemb=1024). The loader is the binary
// itself: 8 drivers post batches of 500 points over HTTP to a server whose
// data dir is the backing dir (no FUSE), until the store's allocated size
// reaches the target; the server stops cleanly. Then the backing dir is
// mounted lossy and each cycle starts the server, writes for a moment
// (drivers, a dispatcher), SIGKILLs it and drops the unsynced data.
func TestPowerCutBigStore(t *testing.T) {
	if *powercutStoreMB <= 0 {
		t.Skip("a measurement: run with -powercut.storemb=1024")
	}
	dir := t.TempDir()
	mnt, backing := filepath.Join(dir, "mnt"), filepath.Join(dir, "backing")
	h := newHarness(t, "")
	h.dataDir = filepath.Join(backing, "data")
	if err := os.MkdirAll(h.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(h.dataDir, "store")
	target := int64(*powercutStoreMB) << 20

	t0 := time.Now()
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var loadErr error
	var errOnce sync.Once
	var sent atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			name := fmt.Sprintf("load-%02d", i)
			seq := int64(0)
			for ctx.Err() == nil && allocated(store) < target {
				batch := make([]point, 500)
				for j := range batch {
					seq++
					batch[j] = makePoint(seq, rng)
				}
				r, err := h.do(ctx, http.MethodPost, "/v1/drivers/"+name+"/locations", "driver", "", batch)
				switch {
				case err != nil:
					errOnce.Do(func() { loadErr = err })
					return
				case r.status == http.StatusAccepted:
					sent.Add(int64(len(batch)))
				case r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable:
					seq -= int64(len(batch))
					pause(ctx, 10*time.Millisecond)
				default:
					errOnce.Do(func() { loadErr = fmt.Errorf("load: %s", r) })
					return
				}
			}
		})
	}
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	h.stop()
	loaded := time.Since(t0)
	t.Logf("loaded %d points, store %d MiB allocated, in %v", sent.Load(), allocated(store)>>20, loaded.Round(time.Second))

	l := mountLossyAt(t, mnt, backing)
	h.dataDir = filepath.Join(mnt, "data")
	master := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	drv := &driverSim{name: "truck-big"}
	disp := newDispatcher(drv.name)
	bad := &issues{t: t}
	var ready []time.Duration
	var loadedLSN int64
	const cycles = 5
	for c := 0; c <= cycles && !t.Failed(); c++ {
		ts := time.Now()
		h.start()
		if c > 0 { // the first start follows a clean stop, not a power cut
			ready = append(ready, time.Since(ts))
		} else {
			loadedLSN = durableLSN(t, h)
		}
		cctx, ccancel := context.WithCancel(context.Background())
		var cw sync.WaitGroup
		cw.Go(func() { drv.run(cctx, h, rand.New(rand.NewPCG(master.Uint64(), 1)), bad) })
		cw.Go(func() { disp.run(cctx, h, rand.New(rand.NewPCG(master.Uint64(), 2)), bad) })
		time.Sleep(300 * time.Millisecond)
		h.kill()
		l.Crash()
		ccancel()
		cw.Wait()
	}
	h.start()
	f := indexFeed(readLogAfter(t, h, loadedLSN), bad)
	h.stop()
	n := writerActor{disp}.check(f, bad) + driverActor{drv}.check(f, bad)
	if n == 0 {
		t.Error("nothing was acknowledged in the cycles")
	}
	t.Logf("store %d MiB: start to ready after a power cut, %d cuts: median %v, max %v; %d acknowledged writes checked",
		allocated(store)>>20, len(ready), testkit.PercentileLower(ready, 50).Round(time.Millisecond), testkit.PercentileLower(ready, 100).Round(time.Millisecond), n)
}

// durableLSN asks /readyz for the durable LSN.
func durableLSN(t *testing.T, h *harness) int64 {
	t.Helper()
	r, err := h.do(context.Background(), http.MethodGet, "/readyz", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		DurableLSN *int64 `json:"durable_lsn"`
	}
	if err := r.decode(&v); err != nil || v.DurableLSN == nil {
		t.Fatalf("GET /readyz: %s (%v)", r, err)
	}
	return *v.DurableLSN
}

// allocated is the disk space the files under dir take (du), 0 if missing.
func allocated(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

// logCrashes shows the first lines of every Go panic or fatal error in the
// server log: the harness shows only the log's tail, which for a crash is
// the goroutine dump.
func logCrashes(t *testing.T, path string) {
	lines := strings.Split(readFrom(path, 0), "\n")
	shown := 0
	for i, line := range lines {
		if shown < 5 && (strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") ||
			strings.HasPrefix(line, "unexpected fault") || strings.HasPrefix(line, "routehound:")) {
			shown++
			t.Logf("server crash at log line %d:\n%s", i+1, strings.Join(lines[i:min(len(lines), i+30)], "\n"))
		}
	}
}

// TestPowerCutRightAfterAJournaledAnswer cuts the power right after a
// dispatch write was answered while the store's log takes long to fsync
// (Badger's *.mem files, 300 ms more per fsync): the answer came from the
// journal, the log had not synced it, and the restart must write it back
// from the journal, at its LSN, with nothing else answered missing.
func TestPowerCutRightAfterAJournaledAnswer(t *testing.T) {
	l := mountLossy(t)
	h := newHarness(t, "")
	onLossy(t, h, l)
	h.start()
	l.SetSlowFsync(".mem", 300*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var answered []logRecord
	for i := range 3 {
		body := map[string]any{"driver": "van-1", "stops": []any{}, "note": fmt.Sprintf("cut-%d", i)}
		r, err := h.do(ctx, http.MethodPut, fmt.Sprintf("/v1/assignments/R-%d", i), "dispatch", fmt.Sprintf("cut-key-%d", i), body)
		if err != nil {
			t.Fatal(err)
		}
		var a struct {
			LSN int64 `json:"lsn"`
		}
		if r.status/100 != 2 || r.decode(&a) != nil {
			t.Fatalf("dispatch write %d: %s", i, r)
		}
		answered = append(answered, logRecord{LSN: a.LSN, Table: "assignments", Key: fmt.Sprintf("R-%d", i)})
	}
	h.kill()
	if l.UnsyncedBytes() == 0 {
		t.Fatal("nothing was left unsynced at the cut: the log's fsync was not slow enough to test anything")
	}
	l.Crash()
	l.SetSlowFsync("", 0)
	h.start()
	recs := readLog(t, h)
	h.stop()
	byLSN := map[int64]logRecord{}
	for _, r := range recs {
		byLSN[r.LSN] = r
	}
	for _, a := range answered {
		got, ok := byLSN[a.LSN]
		if !ok || got.Table != a.Table || got.Key != a.Key {
			t.Errorf("answered %s/%s at lsn %d; after the cut the log has %+v (%v)", a.Table, a.Key, a.LSN, got, ok)
		}
	}
	if n := strings.Count(readFrom(h.logPath, 0), "from the journal that the store's log had lost"); n != 1 {
		t.Errorf("%d restarts wrote back from the journal, want 1 (answered %+v)", n, answered)
	}
}

// filterTable is the records of one table.
func filterTable(rs []logRecord, table string) []logRecord {
	var out []logRecord
	for _, r := range rs {
		if r.Table == table {
			out = append(out, r)
		}
	}
	return out
}
