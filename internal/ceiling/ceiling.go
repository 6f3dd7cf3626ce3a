// Package ceiling measures the two storage ceilings a driver-ingest figure
// is judged against (issue 16), on the filesystem of a given directory:
// bare Badger's synced-batch rate and the disk's fsyncs/s. Both run for a
// fixed duration and clean up the files they create.
package ceiling

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// RecordBytes and TxnRecords are the shape of the Badger ceiling: 200-byte
// records committed in synced transactions of 1,000.
const (
	RecordBytes = 200
	TxnRecords  = 1000
)

// maxTxns bounds the Badger loop whatever the clock does.
const maxTxns = 10_000_000

// Badger opens a fresh Badger DB (default options, SyncWrites on) in a new
// directory under dir and commits 200-byte records in transactions of
// 1,000 for about d. It returns committed records per second; the DB and
// its directory are removed before it returns.
func Badger(ctx context.Context, dir string, d time.Duration) (float64, error) {
	if d <= 0 {
		return 0, errors.New("ceiling: badger: duration must be > 0")
	}
	tmp, err := os.MkdirTemp(dir, "ceiling-badger-")
	if err != nil {
		return 0, fmt.Errorf("ceiling: badger: temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	opts := badger.DefaultOptions(tmp).WithSyncWrites(true).WithLogger(nil).WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return 0, fmt.Errorf("ceiling: badger: open %s: %w", tmp, err)
	}
	value := make([]byte, RecordBytes)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var key [16]byte
	copy(key[:8], "ceiling:")
	var seq uint64
	start := time.Now()
	deadline := start.Add(d)
	var records int64
	for n := 0; n < maxTxns && time.Now().Before(deadline); n++ {
		if err := ctx.Err(); err != nil {
			db.Close()
			return 0, fmt.Errorf("ceiling: badger: %w", err)
		}
		txn := db.NewTransaction(true)
		for range TxnRecords {
			seq++
			binary.BigEndian.PutUint64(key[8:], seq)
			if err := txn.Set(append([]byte(nil), key[:]...), value); err != nil {
				txn.Discard()
				db.Close()
				return 0, fmt.Errorf("ceiling: badger: set: %w", err)
			}
		}
		if err := txn.Commit(); err != nil {
			db.Close()
			return 0, fmt.Errorf("ceiling: badger: commit: %w", err)
		}
		records += TxnRecords
	}
	elapsed := time.Since(start)
	if err := db.Close(); err != nil {
		return 0, fmt.Errorf("ceiling: badger: close: %w", err)
	}
	return float64(records) / elapsed.Seconds(), nil
}

// maxSyncs bounds the fsync loop whatever the clock does.
const maxSyncs = 100_000_000

// Fsync writes 4 KiB at the start of a file in a new directory under dir
// and fdatasyncs it, in a loop for about d, and returns syncs per second.
// The file is removed before it returns.
func Fsync(ctx context.Context, dir string, d time.Duration) (float64, error) {
	if d <= 0 {
		return 0, errors.New("ceiling: fsync: duration must be > 0")
	}
	f, err := os.CreateTemp(dir, "ceiling-fsync-")
	if err != nil {
		return 0, fmt.Errorf("ceiling: fsync: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	// The first write allocates the block, so that the loop measures
	// rewrites of an allocated block, as a log's group commit mostly does.
	if _, err := f.WriteAt(buf, 0); err != nil {
		return 0, fmt.Errorf("ceiling: fsync: write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("ceiling: fsync: %s: %w", f.Name(), err)
	}
	start := time.Now()
	deadline := start.Add(d)
	var syncs int64
	for n := 0; n < maxSyncs && time.Now().Before(deadline); n++ {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("ceiling: fsync: %w", err)
		}
		binary.BigEndian.PutUint64(buf, uint64(n))
		if _, err := f.WriteAt(buf, 0); err != nil {
			return 0, fmt.Errorf("ceiling: fsync: write %s: %w", f.Name(), err)
		}
		if err := fdatasync(f); err != nil {
			return 0, fmt.Errorf("ceiling: fsync: %s: %w", f.Name(), err)
		}
		syncs++
	}
	return float64(syncs) / time.Since(start).Seconds(), nil
}
