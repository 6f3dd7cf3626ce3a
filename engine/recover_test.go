package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"routehound/fleet"
	"routehound/wal"
)

var errInjected = errors.New("injected storage failure")

// faultPlan fails chosen Commit and Sync calls of every handle opened
// through it: the n-th call of an op fails when fail[op][n].
type faultPlan struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]map[int]bool
	hits  int
}

func (f *faultPlan) check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.fail[op][f.calls[op]] {
		f.hits++
		return fmt.Errorf("%s #%d: %w", op, f.calls[op], errInjected)
	}
	return nil
}

func (f *faultPlan) injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

// TestRecoveryKeepsEveryAcknowledgedWrite fails Commit and Sync at chosen
// points under concurrent async driver points and acknowledged writes,
// lets the engine reopen its store after each failure, and then checks,
// on the store reopened afresh (a restart), that every acknowledged write
// is in the log exactly once, every driver point up to the highest
// durable_seq answered is there exactly once with no point twice, and the
// subscriber saw every LSN once, in order.
func TestRecoveryKeepsEveryAcknowledgedWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail map[string]map[int]bool
	}{
		{"sync", map[string]map[int]bool{"sync": {5: true, 40: true, 41: true}}},
		{"commit", map[string]map[int]bool{"commit": {7: true, 60: true}}},
		{"both", map[string]map[int]bool{"sync": {20: true}, "commit": {45: true, 90: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) { recoveryRun(t, tc.fail) })
	}
}

func recoveryRun(t *testing.T, fail map[string]map[int]bool) {
	dir := t.TempDir()
	plan := &faultPlan{calls: map[string]int{}, fail: fail}
	open := func() (*wal.DB, error) {
		return wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20, Fail: plan.check})
	}
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.Open = open
	e, err := New(cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var published []uint64
	e.Subscribe(func(recs []Record) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			published = append(published, r.LSN)
		}
	})

	wantFailures := 0
	for _, m := range fail {
		wantFailures += len(m)
	}
	ctx := context.Background()
	// Every writer stops once the planned failures have all happened and
	// the engine takes writes again, or after a bounded number of tries.
	done := func() bool { return plan.injected() >= wantFailures && e.Ready() }
	const drivers, writers = 3, 2
	durable := make([]uint64, drivers)
	sent := make([]uint64, drivers)
	var acked [writers][]string
	var wg sync.WaitGroup
	for d := range drivers {
		wg.Go(func() {
			name := fmt.Sprintf("van-%d", d)
			next := uint64(1)
			for try := 0; try < 20000 && !done(); try++ {
				ack, err := e.SubmitPoints(ctx, name, pts(next, next+19))
				if err != nil {
					if !IsStorageRefusal(err) {
						t.Errorf("%s: %v", name, err)
						return
					}
					time.Sleep(2 * time.Millisecond) // refused: the same batch again
					continue
				}
				if ack.DurableSeq < durable[d] {
					t.Errorf("%s: durable_seq went back from %d to %d", name, durable[d], ack.DurableSeq)
				}
				durable[d] = max(durable[d], ack.DurableSeq)
				sent[d] = next + 19
				next += 20
				time.Sleep(time.Millisecond)
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < 20000 && !done(); i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				for try := 0; try < 2000; try++ {
					_, err := e.put(ctx, LaneTables, Write{Table: "t", Key: key, Value: []byte(`{"n":1}`),
						IfVersion: wal.AnyVersion, IdemKey: "idem-" + key, Fingerprint: []byte(key)})
					if err == nil {
						acked[w] = append(acked[w], key)
						break
					}
					if !IsStorageRefusal(err) {
						t.Errorf("put %s: %v", key, err)
						return
					}
					time.Sleep(2 * time.Millisecond) // refused: retried with its key
				}
			}
		})
	}
	wg.Wait()
	if got := plan.injected(); got != wantFailures {
		t.Fatalf("%d injected failures happened, want %d", got, wantFailures)
	}
	// The last points become durable within flush_within.
	waitFor(t, "the last points durable", func() bool {
		for d := range drivers {
			seq, err := e.DriverDurableSeq(fmt.Sprintf("van-%d", d))
			if err != nil || seq < sent[d] {
				return false
			}
		}
		return true
	})
	for d := range drivers {
		durable[d], _ = e.DriverDurableSeq(fmt.Sprintf("van-%d", d))
	}
	// A failed fsync may cover only journaled writes, answered already
	// (pipeline.go): its recovery can still be under way. Two failures
	// can also fall into one recovery: a commit that fails while the
	// fsync in flight fails too (the fsync runs beside the next commits).
	waitFor(t, "the store reopened and writable", func() bool {
		return e.Ready() && e.Totals().Recoveries.Load() >= 1 && e.Totals().StoreFailures.Load() == e.Totals().Recoveries.Load()
	})
	if got := e.Totals().Recoveries.Load(); got == 0 || got > uint64(wantFailures) {
		t.Errorf("%d recoveries, want 1..%d", got, wantFailures)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	if err := e.store().Close(); err != nil {
		t.Fatal(err)
	}

	// A restart: the store opened afresh.
	plan.fail = nil
	db2, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	seqs := map[string]map[uint64]int{}
	puts := map[string]int{}
	var lsns []uint64
	if err := db2.ReadLog(0, db2.LastLSN(), 0, func(r wal.Record) error {
		lsns = append(lsns, r.LSN)
		switch r.Table {
		case fleet.TablePositions:
			var p struct{ Seq uint64 }
			if err := json.Unmarshal(r.Value, &p); err != nil {
				return err
			}
			if seqs[r.Key] == nil {
				seqs[r.Key] = map[uint64]int{}
			}
			seqs[r.Key][p.Seq]++
		case "t":
			puts[r.Key]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for d := range drivers {
		name := fmt.Sprintf("van-%d", d)
		if durable[d] < 20 {
			t.Errorf("%s: durable_seq %d: too few points to test anything", name, durable[d])
		}
		for s := uint64(1); s <= durable[d]; s++ {
			if n := seqs[name][s]; n != 1 {
				t.Errorf("%s seq %d (durable_seq %d answered) is %d times in the log", name, s, durable[d], n)
			}
			checked++
		}
		for s, n := range seqs[name] {
			if n > 1 {
				t.Errorf("%s seq %d is %d times in the log", name, s, n)
			}
		}
	}
	for w := range writers {
		for _, k := range acked[w] {
			if puts[k] != 1 {
				t.Errorf("acknowledged put %s is %d times in the log", k, puts[k])
			}
			checked++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(published) != len(lsns) {
		t.Errorf("the subscriber saw %d records, the log has %d", len(published), len(lsns))
	}
	for i, l := range published {
		if l != uint64(i+1) {
			t.Fatalf("the subscriber's record %d has lsn %d, want %d (gap or repeat)", i, l, i+1)
		}
	}
	t.Logf("%d injected failures, %d recoveries; %d acknowledged writes and points checked; log %d records", plan.injected(), wantFailures, checked, len(lsns))
}
