//go:build linux

package tests

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	faultSeeds = flag.Int("faults.seeds", 2, "TestFaultSequence: number of seeded fault sequences (each on a fresh store)")
	faultSeed  = flag.Uint64("faults.seed", 0, "TestFaultSequence: run this one seed (0: seeds from the clock)")
	faultKeep  = flag.String("faults.keep", "", "TestFaultSequence: copy the store as the power cut left it, and the server log, to this new directory (one seed)")
)

// TestFaultSequence runs the sequence that once lost acknowledged writes:
// under mixed load (8 drivers posting 100-point batches, a dispatcher and
// two terminals with Idempotency-Key, readers of single keys), the disk is
// full for 2 s, then three consecutive fsyncs fail with EIO (their pages
// dropped, as Linux does), the server recovers, load goes on, and then the
// power is cut. After the restart every write acknowledged in the whole run
// (dispatch and warehouse answers, driver points at or below a durable_seq
// answered) is in the log exactly once; no read ever answered 500.
func TestFaultSequence(t *testing.T) {
	seeds := []uint64{}
	if *faultSeed != 0 {
		seeds = append(seeds, *faultSeed)
	} else {
		base := uint64(time.Now().UnixNano())
		for i := range *faultSeeds {
			seeds = append(seeds, base+uint64(i)*7919)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { faultSequence(t, seed) })
	}
}

func faultSequence(t *testing.T, seed uint64) {
	l := mountLossy(t)
	master := rand.New(rand.NewPCG(seed, 0xfa017))
	bad := &issues{t: t}
	h := newHarness(t, "")
	onLossy(t, h, l)

	var drivers []*driverSim
	var actors []powerActor
	for i := 1; i <= 8; i++ {
		d := &driverSim{name: fmt.Sprintf("truck-%02d", i), batch: 100}
		drivers = append(drivers, d)
		actors = append(actors, driverActor{d})
	}
	actors = append(actors, writerActor{newDispatcher(drivers[0].name)})
	for i := 1; i <= 2; i++ {
		actors = append(actors, writerActor{newTerminal(fmt.Sprintf("T%d", i))})
	}

	h.start()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range actors {
		rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
		wg.Go(func() { a.run(ctx, h, rng, bad) })
	}
	// A subscriber of the warehouse table follows the whole run: it must
	// not be ended by the faults, and sees each loading put once, in order.
	tail := &sseTail{}
	tailCtx, tailStop := context.WithCancel(ctx)
	var tailDone sync.WaitGroup
	tailDone.Go(func() { tail.follow(tailCtx, h, "loading") })
	var reads, unavailable atomic.Int64
	badReads := &issues{t: t, max: 3} // apart, so that lost writes are not hidden behind them
	for range 2 {
		rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
		wg.Go(func() { hammerReads(ctx, h, rng, badReads, &reads, &unavailable) })
	}

	waitReady := func(what string) time.Duration {
		t0 := time.Now()
		for !h.ready() {
			if time.Since(t0) > 30*time.Second {
				t.Fatalf("%s: not ready within 30s", what)
			}
			if h.proc.exited() {
				t.Fatalf("%s: the server exited", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(t0)
	}
	sleep := func(min, spread time.Duration) {
		time.Sleep(min + time.Duration(master.Int64N(int64(spread))))
	}

	sleep(500*time.Millisecond, time.Second)
	// 1. The disk is full for 2 s.
	l.SetNoSpace(true)
	time.Sleep(2 * time.Second)
	l.SetNoSpace(false)
	full := waitReady("after the disk was full")

	// 2. Three consecutive fsyncs fail with EIO, their pages dropped.
	sleep(100*time.Millisecond, 500*time.Millisecond)
	before := l.Stats().FsyncErrors
	l.FailFsyncs(3)
	t0 := time.Now()
	for l.Stats().FsyncErrors < before+3 {
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("only %d of 3 injected fsync errors hit in 10s", l.Stats().FsyncErrors-before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	eio := waitReady("after the fsync errors")

	// 3. Load goes on, then the power is cut.
	sleep(time.Second, 500*time.Millisecond)
	// The subscriber, before the cut: what it saw is the log's loading
	// records, in order, none twice, none missing, up to where it is.
	time.Sleep(200 * time.Millisecond)
	seen, tailErr := tail.snapshot()
	if tailErr != nil {
		t.Errorf("the loading subscription ended during the faults: %v", tailErr)
	}
	tailStop()
	tailDone.Wait()
	h.kill() // before cancel: whatever was answered before the kill counts
	unsynced := l.UnsyncedBytes()
	l.Crash()
	cancel()
	wg.Wait()

	// 4. Restart and read back.
	if *faultKeep != "" {
		// The store as the power cut left it, and below the server log.
		if out, err := exec.Command("cp", "-a", l.Backing(), *faultKeep).CombinedOutput(); err != nil {
			t.Logf("keeping the store: %v %s", err, out)
		}
	}
	h.start()
	if *faultKeep != "" {
		defer exec.Command("cp", h.logPath, filepath.Join(*faultKeep, "server.log")).Run()
	}
	recs := readLog(t, h)
	h.stop()
	f := indexFeed(recs, bad)
	var loading []logRecord
	for _, r := range recs {
		if r.Table == "loading" {
			loading = append(loading, r)
		}
	}
	if len(seen) == 0 || len(seen) > len(loading) {
		t.Errorf("the subscriber saw %d loading puts; the log has %d", len(seen), len(loading))
	}
	for i := range min(len(seen), len(loading)) {
		if seen[i].Key != loading[i].Key || seen[i].LSN != loading[i].LSN {
			t.Errorf("subscriber event %d: %s at lsn %d; the log has %s at lsn %d", i, seen[i].Key, seen[i].LSN, loading[i].Key, loading[i].LSN)
			break
		}
	}
	checked := map[string]int{}
	for _, a := range actors {
		checked[a.kind()] += a.check(f, bad)
	}
	for _, k := range []string{"dispatch", "warehouse", "driver"} {
		if checked[k] == 0 {
			t.Errorf("no %s write was acknowledged", k)
		}
	}
	logCrashes(t, h.logPath)
	if n := bad.count(); n > 0 {
		t.Errorf("%d acknowledged writes lost, doubled or answered wrong (seed %d; rerun with -faults.seed %d)", n, seed, seed)
	}
	if n := badReads.count(); n > 0 {
		t.Errorf("%d reads answered neither 200, 404 nor 503 (seed %d)", n, seed)
	}
	var serverLines []string
	for _, line := range strings.Split(readFrom(h.logPath, 0), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			serverLines = append(serverLines, line)
		}
	}
	if t.Failed() {
		t.Logf("server warnings and errors:\n%s", strings.Join(serverLines, "\n"))
	}
	st := l.Stats()
	t.Logf("seed %d: ready %v after the disk was full, %v after the fsync errors; checked dispatch %d, warehouse %d, driver points %d (of %d sent), subscriber puts %d; %d reads (%d answered 503); log %d records; ENOSPC %d, fsync EIO %d, the cut dropped %d KiB",
		seed, full.Round(time.Millisecond), eio.Round(time.Millisecond), checked["dispatch"], checked["warehouse"],
		checked["driver"], sentPoints(drivers), len(seen), reads.Load(), unavailable.Load(), f.records, st.NoSpace, st.FsyncErrors, unsynced>>10)
}

// hammerReads reads single keys and table pages as the dashboard does until
// ctx ends. A read may be refused with 503 while the store reopens, never
// answered 500.
func hammerReads(ctx context.Context, h *harness, rng *rand.Rand, bad *issues, reads, unavailable *atomic.Int64) {
	paths := []string{"/v1/tables/assignments/keys/R-01", "/v1/tables/loading?limit=5", "/v1/tables/positions/keys/truck-01"}
	for ctx.Err() == nil {
		r, err := h.do(ctx, http.MethodGet, paths[rng.IntN(len(paths))], "dashboard", "", nil)
		if err != nil {
			pause(ctx, 20*time.Millisecond) // the server is being killed
			continue
		}
		reads.Add(1)
		switch r.status {
		case http.StatusOK, http.StatusNotFound:
		case http.StatusServiceUnavailable:
			unavailable.Add(1)
			if err := r.retryAfter(); err != nil {
				bad.add("read: %v", err)
			}
		default:
			bad.add("read: %s", r)
		}
		pause(ctx, time.Duration(rng.IntN(5))*time.Millisecond)
	}
}
