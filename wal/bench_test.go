package wal_test

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"routehound/internal/testkit"
	"routehound/wal"
)

// Issue 3 asks for "the ceiling of a bare Badger loop writing the same
// records in the same batches" beside the HTTP driver figure. These
// benchmarks give that ceiling (BenchmarkBareBadger) and the cost the wal
// layer adds on top of it (BenchmarkWALBatch), both with the driver lane's
// group commit: one Sync every 10 ms, as flush_within does for drivers.
//
//	go test -run '^$' -bench . -benchtime 3s ./wal
//
// One op is one batch of benchPointsPerBatch points; the figure that
// matters is the custom metric points/s (durable: the last Sync is timed).

const (
	benchPointsPerBatch = 100                   // what an HTTP driver sends in one POST
	benchDrivers        = 16                    // batches rotate over this many drivers
	benchSyncEvery      = 10 * time.Millisecond // the driver lane's flush_within
	benchMemoryBytes    = 96 << 20              // config.Default() storage.memory_mb
)

// benchPoint is a driver point as the api stores it: compact JSON of about
// 120 bytes, with its seq.
func benchPoint(seq uint64) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"lat":%.6f,"lng":%.6f,"ts":"2026-03-14T09:26:53.589Z","speed_kmh":%.1f,"heading":%.1f}`,
		seq, 52.0+float64(seq%1000)*1e-4, 13.0+float64(seq%997)*1e-4, float64(seq%130), float64(seq%360))
}

// benchBatches pre-encodes the point values of n batches (outside the timed
// region); batch i belongs to driver i%benchDrivers.
func benchBatches(n int) [][][]byte {
	out := make([][][]byte, n)
	for i := range out {
		vals := make([][]byte, benchPointsPerBatch)
		base := uint64(i/benchDrivers) * benchPointsPerBatch
		for j := range vals {
			vals[j] = benchPoint(base + uint64(j) + 1)
		}
		out[i] = vals
	}
	return out
}

// p99ms is the nearest-rank 99th percentile of d (testkit.Percentile) in
// milliseconds.
func p99ms(d []time.Duration) float64 {
	return float64(testkit.Percentile(d, 99)) / float64(time.Millisecond)
}

func benchDriver(i int) string { return fmt.Sprintf("bench-driver-%02d", i%benchDrivers) }

// bareOptions are the Badger options wal.Open uses (wal/wal.go, Open), for
// MemoryBytes = benchMemoryBytes. Keep the two in step.
func bareOptions(dir string) badger.Options {
	mem := int64(benchMemoryBytes)
	return badger.DefaultOptions(dir).
		WithMemTableSize(mem / 4).
		WithNumMemtables(2).
		WithBlockCacheSize(mem / 4).
		WithIndexCacheSize(mem / 8).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithValueLogFileSize(64 << 20).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithSyncWrites(false).
		WithLogger(nil)
}

// BenchmarkBareBadger is the ceiling: raw Badger, one transaction per batch
// of 100 points, each point one log key ('l' + be64 LSN) holding the point
// JSON, plus one state key per batch (the driver's latest point), and
// db.Sync() whenever 10 ms have passed since the last one (group commit in
// the writer loop, as the engine's committer does it).
func BenchmarkBareBadger(b *testing.B) {
	db, err := badger.Open(bareOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	batches := benchBatches(min(b.N, 4096))
	var syncs []time.Duration // duration of each Sync
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	lastSync := start
	lsn := uint64(0)
	for i := 0; i < b.N; i++ {
		vals := batches[i%len(batches)]
		txn := db.NewTransaction(true)
		for _, v := range vals {
			lsn++
			k := make([]byte, 9)
			k[0] = 'l'
			binary.BigEndian.PutUint64(k[1:], lsn)
			if err := txn.Set(k, v); err != nil {
				b.Fatal(err)
			}
		}
		if err := txn.Set([]byte("spositions\x00"+benchDriver(i)), vals[len(vals)-1]); err != nil {
			b.Fatal(err)
		}
		if err := txn.Commit(); err != nil {
			b.Fatal(err)
		}
		if now := time.Now(); now.Sub(lastSync) >= benchSyncEvery {
			if err := db.Sync(); err != nil {
				b.Fatal(err)
			}
			syncs = append(syncs, time.Since(now))
			lastSync = now
		}
	}
	t := time.Now()
	if err := db.Sync(); err != nil { // everything durable before the clock stops
		b.Fatal(err)
	}
	syncs = append(syncs, time.Since(t))
	elapsed := time.Since(start)
	b.StopTimer()
	points := float64(b.N * benchPointsPerBatch)
	b.ReportMetric(points/elapsed.Seconds(), "points/s")
	b.ReportMetric(float64(len(syncs))*1000/points, "fsyncs/1000pts")
	b.ReportMetric(p99ms(syncs), "fsync-p99-ms")
}

// BenchmarkWALBatch is the same workload through the wal layer: one
// Begin / PutSeries / Commit per batch of 100 points (log records with the
// wal's record encoding, state, table counter and LSN meta keys), and
// Sync every 10 ms.
func BenchmarkWALBatch(b *testing.B) {
	db, err := wal.Open(wal.Options{Dir: b.TempDir(), MemoryBytes: benchMemoryBytes})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	batches := benchBatches(min(b.N, 4096))
	var syncs []time.Duration // duration of each Sync
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	lastSync := start
	for i := 0; i < b.N; i++ {
		bt := db.Begin()
		if _, err := bt.PutSeries("positions", benchDriver(i), batches[i%len(batches)], "driver"); err != nil {
			bt.Discard()
			b.Fatal(err)
		}
		if err := bt.Commit(); err != nil {
			b.Fatal(err)
		}
		if now := time.Now(); now.Sub(lastSync) >= benchSyncEvery {
			if err := db.Sync(); err != nil {
				b.Fatal(err)
			}
			syncs = append(syncs, time.Since(now))
			lastSync = now
		}
	}
	t := time.Now()
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	syncs = append(syncs, time.Since(t))
	elapsed := time.Since(start)
	b.StopTimer()
	points := float64(b.N * benchPointsPerBatch)
	b.ReportMetric(points/elapsed.Seconds(), "points/s")
	b.ReportMetric(float64(len(syncs))*1000/points, "fsyncs/1000pts")
	b.ReportMetric(p99ms(syncs), "fsync-p99-ms")
}

// BenchmarkManyTables measures what a table costs on disk and to read back
// when a box holds very many small tables (docs/design.md §6: the seed
// figure is 1,000,000 tables). One op creates one table with one key
// (a ~60-byte JSON value); puts are committed 1,000 to a transaction.
//
//	go test -run '^$' -bench ManyTables -benchtime 1000000x ./wal
func BenchmarkManyTables(b *testing.B) {
	dir := b.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: benchMemoryBytes})
	if err != nil {
		b.Fatal(err)
	}
	value := []byte(`{"status":"open","dock":"D7","updated":"2026-11-23T10:00:00Z"}`)
	b.ResetTimer()
	for i := 0; i < b.N; {
		batch := db.Begin()
		for j := 0; j < 1000 && i < b.N; j++ {
			if _, err := batch.Put(fmt.Sprintf("t%07d", i), "k", value, "tables", wal.AnyVersion); err != nil {
				b.Fatal(err)
			}
			i++
		}
		if err := batch.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	t0 := time.Now()
	snap, err := db.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	_, err = snap.Tables("", 0, func(wal.TableInfo) error { n++; return nil })
	snap.Close()
	if err != nil {
		b.Fatal(err)
	}
	listed := time.Since(t0)
	if n != b.N {
		b.Fatalf("listed %d tables, want %d", n, b.N)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	var allocated int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			var st syscall.Stat_t
			if syscall.Stat(path, &st) == nil {
				allocated += st.Blocks * 512
			}
		}
		return nil
	})
	b.ReportMetric(float64(allocated)/float64(b.N), "disk-B/table")
	b.ReportMetric(float64(listed.Milliseconds()), "list-all-ms")
}
