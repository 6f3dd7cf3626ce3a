package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"routehound/engine"
	"routehound/wal"
)

// Issue 3: driver points/s accepted and durable, in process (no HTTP).
//
//	go test -run '^$' -bench DriverInProcess -benchtime 3s ./engine
//
// One op is one batch of benchPointsPerBatch points. The custom metrics are
// the figures: accepted-pts/s (points / time until the last SubmitPoints
// returned) and durable-pts/s (points / time until every driver's
// DriverDurableSeq reached its last seq; ns/op is timed the same way).

const (
	benchPointsPerBatch = 100
	benchWorkers        = 8 // submitting goroutines, one driver each
)

// pointTemplate holds the parts of a ~120-byte point around its seq, so
// that building a point is two copies and one integer format.
type pointTemplate struct{ pre, post []byte }

var benchTemplates = func() []pointTemplate {
	t := make([]pointTemplate, benchPointsPerBatch)
	for j := range t {
		t[j] = pointTemplate{
			pre: []byte(`{"seq":`),
			post: fmt.Appendf(nil, `,"lat":%.6f,"lng":%.6f,"ts":"2026-03-14T09:26:%02d.589Z","speed_kmh":%.1f,"heading":%.1f}`,
				52.0+float64(j)*1e-4, 13.0+float64(j)*1e-4, j%60, float64(j%130), float64(j*7%360)),
		}
	}
	return t
}()

// benchPoints builds one batch with seqs from+1 … from+n.
func benchPoints(from uint64) []engine.Point {
	pts := make([]engine.Point, benchPointsPerBatch)
	for j := range pts {
		t := benchTemplates[j]
		seq := from + uint64(j) + 1
		v := make([]byte, 0, len(t.pre)+20+len(t.post))
		v = append(v, t.pre...)
		v = strconv.AppendUint(v, seq, 10)
		v = append(v, t.post...)
		pts[j] = engine.Point{Seq: seq, Value: v}
	}
	return pts
}

// BenchmarkDriverInProcess: benchWorkers goroutines call SubmitPoints with
// batches of 100 points for distinct drivers, with the default engine
// configuration over a wal with the default 96 MiB memory cap. A full lane
// (ErrLaneFull) is answered by a short backoff and a resend of the same
// batch, as a well-behaved driver would.
func BenchmarkDriverInProcess(b *testing.B) {
	db, err := wal.Open(wal.Options{Dir: b.TempDir(), MemoryBytes: 96 << 20})
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.New(engine.DefaultConfig(), db, nil)
	if err != nil {
		db.Close()
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			b.Error(err)
		}
		db.Close()
	}()

	ctx := context.Background()
	fsyncs0 := e.Totals().Fsyncs.Load()
	var next, full atomic.Int64
	last := make([]uint64, benchWorkers) // each worker's last accepted seq
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range benchWorkers {
		driver := fmt.Sprintf("bench-%02d", w)
		wg.Go(func() {
			seq := uint64(0)
			for next.Add(1) <= int64(b.N) {
				pts := benchPoints(seq)
				for {
					ack, err := e.SubmitPoints(ctx, driver, pts)
					if errors.Is(err, engine.ErrLaneFull) {
						full.Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						b.Error(err)
						return
					}
					if ack.Accepted != len(pts) {
						b.Errorf("driver %s: accepted %d of %d", driver, ack.Accepted, len(pts))
						return
					}
					break
				}
				seq += benchPointsPerBatch
			}
			last[w] = seq
		})
	}
	wg.Wait()
	accepted := time.Since(start)
	waitDurable(b, e, last)
	durable := time.Since(start)
	b.StopTimer()

	points := float64(b.N * benchPointsPerBatch)
	b.ReportMetric(points/accepted.Seconds(), "accepted-pts/s")
	b.ReportMetric(points/durable.Seconds(), "durable-pts/s")
	b.ReportMetric(float64(e.Totals().Fsyncs.Load()-fsyncs0)*1000/points, "fsyncs/1000pts")
	b.ReportMetric(float64(full.Load()), "lane-full-retries")
}

// waitDurable polls until driver bench-%02d w has durable seq last[w], for
// every w.
func waitDurable(b *testing.B, e *engine.Engine, last []uint64) {
	deadline := time.Now().Add(30 * time.Second)
	for w, want := range last {
		driver := fmt.Sprintf("bench-%02d", w)
		for {
			got, err := e.DriverDurableSeq(driver)
			if err != nil {
				b.Fatal(err)
			}
			if got >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("driver %s: durable seq %d, want %d after 30s", driver, got, want)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// BenchmarkDiskPerPoint measures what a driver point costs on disk: the
// capacity plan (docs/design.md §5) turns it into disk per day.
//
//	go test -run '^$' -bench DiskPerPoint -benchtime 2000x ./engine
//
// One op is one batch of 100 points from one of 8 drivers. After the run
// the store is closed (Badger flushes its memtable) and reopened (so that
// its WAL is replayed and truncated), and every file's allocated blocks are
// summed: what `du` shows, not the sparse apparent size of Badger's
// preallocated files.
func BenchmarkDiskPerPoint(b *testing.B) {
	dir := b.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 96 << 20})
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.New(engine.DefaultConfig(), db, nil)
	if err != nil {
		db.Close()
		b.Fatal(err)
	}
	ctx := context.Background()
	seqs := make([]uint64, benchWorkers)
	for i := range b.N {
		w := i % benchWorkers
		for {
			_, err := e.SubmitPoints(ctx, fmt.Sprintf("disk-%02d", w), benchPoints(seqs[w]))
			if errors.Is(err, engine.ErrLaneFull) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			break
		}
		seqs[w] += benchPointsPerBatch
	}
	b.StopTimer()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.Close(cctx); err != nil {
		b.Fatal(err)
	}
	logical := db.LogBytes()
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	db, err = wal.Open(wal.Options{Dir: dir, MemoryBytes: 96 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	var allocated int64
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return err
		}
		allocated += st.Blocks * 512
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	points := float64(b.N * benchPointsPerBatch)
	b.ReportMetric(float64(allocated)/points, "disk-B/pt")
	b.ReportMetric(float64(logical)/points, "log-B/pt")
	b.ReportMetric(float64(allocated)/(1<<20), "disk-MiB")
}
