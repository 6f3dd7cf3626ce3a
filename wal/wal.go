package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Sentinel errors. The engine maps them to its own answers.
var (
	// ErrVersionConflict: a conditional write named a version the key does not have.
	ErrVersionConflict = errors.New("wal: version conflict")
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("wal: not found")
	// ErrTrimmed: the requested LSN is older than the retained log.
	ErrTrimmed = errors.New("wal: lsn older than the retained log")
	// ErrFailed: an earlier Sync or Commit failed; the handle must be closed
	// and the store reopened (or the process restarted) before any more writes.
	ErrFailed = errors.New("wal: store failed, reopen required")
	// ErrClosed: the handle is closed or closing (a reopen after a storage
	// failure, or shutdown); take the store's current handle and retry.
	ErrClosed = errors.New("wal: store closed")
)

// AnyVersion makes a Put or Delete unconditional.
const AnyVersion = ^uint64(0)

// Options configure Open.
type Options struct {
	// Dir holds the Badger files.
	Dir string
	// MemoryBytes caps what Badger keeps in memory: memtables, block cache and
	// index cache are sized from it. 0 means 96 MiB.
	MemoryBytes int64
	// Logger receives Badger's own warnings and errors; nil discards them.
	Logger *slog.Logger
	// Now stamps commits (committed_at) and judges retention by age; nil
	// means time.Now. Tests set it to move time.
	Now func() time.Time
	// Fail, when set, is asked before each Commit ("commit") and Sync
	// ("sync"); an error it returns fails that call as a storage error
	// would (the handle is failed from then on). A failed sync still leaves
	// its commits in the store, as a real one may. For tests of recovery.
	Fail func(op string) error
}

// DB is the store. Exactly one Batch may be open at a time (the committer's);
// ReadLog and Snapshot are safe for concurrent use.
type DB struct {
	bdb  *badger.DB
	dir  string
	lock *os.File // the data dir's flock (lockDir), released by Close

	writeMu sync.Mutex // held by the one open Batch, and by Trim: one writer at a time

	// Owned by the writer (under writeMu), published atomically for readers.
	last     atomic.Uint64 // last committed LSN
	first    atomic.Uint64 // oldest retained LSN (last+1 when the log is empty)
	logBytes atomic.Int64  // bytes of retained log records (keys + values)
	failed   atomic.Bool
	// ts is the Badger version of the last commit. The store runs Badger
	// in managed mode: the one writer numbers its commits itself, so that
	// opening a transaction never waits for Badger's oracle (whose
	// watermark goroutine, under load, left the committer waiting 5-20 ms
	// for a turn of the scheduler before each batch: BENCHMARKS.md,
	// "Badger in managed mode"). Readers read at ts, which moves only
	// after a commit is wholly in the memtable.
	ts        atomic.Uint64
	discardTs uint64 // last version given to Badger's SetDiscardTs; writer only

	maxBatchBytes int64
	journal       *journal // journal.go; nil until Open has replayed it
	now           func() time.Time
	fail          func(op string) error
	closeOnce     sync.Once
	closeErr      error

	// Readers never touch a closed Badger handle (its memtable is nil then,
	// its oracle stopped): each read counts itself in readers while it
	// runs, Close waits until none runs. Once Close has begun, new reads
	// (nested ones too) answer ErrClosed at once, so nothing waits on
	// Close and Close waits only for reads already running.
	rmu     sync.Mutex
	rdone   *sync.Cond // signalled when readers drops to 0
	readers int
	closing bool // Close has begun
	closed  bool // the Badger handle is closed
	// reading counts the open read transactions by their version: the
	// oldest bounds what compaction may discard (advanceDiscard).
	reading map[uint64]int
}

// rlock admits a read, or answers ErrClosed; runlock ends it.
func (db *DB) rlock() error {
	db.rmu.Lock()
	defer db.rmu.Unlock()
	if db.closing {
		return ErrClosed
	}
	db.readers++
	return nil
}

func (db *DB) runlock() {
	db.rmu.Lock()
	db.readers--
	if db.readers == 0 {
		db.rdone.Broadcast()
	}
	db.rmu.Unlock()
}

// readTxn opens a read transaction at the last commit and counts it in
// reading; endRead discards it. Callers hold rlock (or own the handle).
func (db *DB) readTxn() (*badger.Txn, uint64) {
	db.rmu.Lock()
	ts := db.ts.Load()
	db.reading[ts]++
	db.rmu.Unlock()
	return db.bdb.NewTransactionAt(ts, false), ts
}

func (db *DB) endRead(txn *badger.Txn, ts uint64) {
	txn.Discard()
	db.rmu.Lock()
	if db.reading[ts]--; db.reading[ts] <= 0 {
		delete(db.reading, ts)
	}
	db.rmu.Unlock()
}

// view runs fn in a read transaction at the last commit.
func (db *DB) view(fn func(txn *badger.Txn) error) error {
	txn, ts := db.readTxn()
	defer db.endRead(txn, ts)
	return fn(txn)
}

// ReleaseVersions lets compaction drop the versions no reader can see any
// more: those older than the oldest open read, or than the last commit
// when none is open. In managed mode Badger keeps every version until told,
// so the writer calls it now and then (the engine: once a second), or a key
// overwritten by every driver point would keep all its versions. It takes
// the writer's turn.
func (db *DB) ReleaseVersions() {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	db.advanceDiscard()
}

// advanceDiscard is ReleaseVersions under writeMu; every commit runs it, so
// that compaction drops overwritten versions as soon as no reader needs
// them (a driver's position is overwritten by every point: with a lag,
// compactions carry those versions and their table builders grow).
func (db *DB) advanceDiscard() {
	db.rmu.Lock()
	oldest := db.ts.Load()
	for ts := range db.reading {
		oldest = min(oldest, ts)
	}
	db.rmu.Unlock()
	if oldest > db.discardTs {
		db.discardTs = oldest
		db.bdb.SetDiscardTs(oldest)
	}
}

// backgroundWorkers is Badger's BackgroundWorkers, half the cores (at least
// one): per compaction, how many of its key ranges are iterated and how
// many of its tables written at once, and for every table builder (a
// flush's too) how many goroutines compress its blocks (third_party/badger,
// patch 10; two compactors and a flush may still run at once).
// Upstream's parallelism put dozens of CPU-bound goroutines in the run
// queues during a compaction on 2 cores, and up to 46 MB of a compaction's
// table builders in the heap; every hop of a dispatch write waited behind them, and the
// heap against the Go memory limit made the collector run back to back
// (BENCHMARKS.md, "Badger's background work bounded").
func backgroundWorkers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Open opens or creates the store in opt.Dir and recovers the LSN counters.
func Open(opt Options) (*DB, error) {
	mem := opt.MemoryBytes
	if mem <= 0 {
		mem = 96 << 20
	}
	// A small box: two memtables of mem/8 each, caches of mem/4 and mem/8.
	// The memtable size also sizes Badger's table builders (2x the table
	// size each, up to 8 kept in a pool), which dominate the heap under a
	// steady write load: mem/4 with the default 96 MiB gave a 520 MiB RSS,
	// mem/8 gives about 190 MiB (BENCHMARKS.md). The largest transaction is
	// 15% of a memtable.
	// Badger needs a transaction to hold a 1 MiB value (its default value
	// threshold): at least 8 MiB of memtable.
	// Badger's default ValueThreshold (1 MiB) is kept on purpose: values
	// live in the WAL and the LSM, never in a value log that a power cut
	// could lose behind a durable table (checkTail, DESIGN.md).
	bo := badger.DefaultOptions(opt.Dir).
		WithMemTableSize(max(mem/8, 8<<20)).
		WithNumMemtables(2).
		WithBlockCacheSize(mem / 4).
		WithIndexCacheSize(mem / 8).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithValueLogFileSize(64 << 20).
		WithDetectConflicts(false). // one writer: nothing to detect
		WithInlineWrites(true).     // one writer: commit on its own goroutine (patch 7)
		WithMetricsEnabled(false).
		WithSyncWrites(false). // group commit: the caller calls Sync
		WithLogger(badgerLogger{opt.Logger}).
		WithBackgroundWorkers(backgroundWorkers())
	lock, err := lockDir(opt.Dir)
	if err != nil {
		return nil, err
	}
	unlock := func() {
		if lock != nil {
			lock.Close() // releases the flock
		}
	}
	removed, err := removeEmptyLogFiles(opt.Dir)
	if err != nil {
		unlock()
		return nil, err
	}
	if len(removed) > 0 && opt.Logger != nil {
		opt.Logger.Warn("removed empty log files left by a power cut", "files", removed)
	}
	bdb, err := badger.OpenManaged(bo)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("wal: open %s: %w", opt.Dir, err)
	}
	db := &DB{bdb: bdb, dir: opt.Dir, lock: lock, maxBatchBytes: bdb.MaxBatchSize(), now: opt.Now, fail: opt.Fail, reading: map[uint64]int{}}
	// The versions go on from the newest one in the store, whether Badger
	// or this writer numbered it (a store written before managed mode
	// opens as it was).
	db.ts.Store(bdb.MaxVersion())
	db.rdone = sync.NewCond(&db.rmu)
	// No reader yet: the compactions Badger starts on open may drop every
	// version below the newest at once (they ran with a discard version of
	// 0 until the first commit, and kept every overwritten version of the
	// tables they merged).
	db.advanceDiscard()
	if db.now == nil {
		db.now = time.Now
	}
	if err := db.recover(); err != nil {
		bdb.Close()
		unlock()
		return nil, fmt.Errorf("wal: recover %s: %w", opt.Dir, err)
	}
	if err := db.checkTail(); err != nil {
		bdb.Close()
		unlock()
		return nil, fmt.Errorf("wal: recover %s: %w", opt.Dir, err)
	}
	if err := db.markFormat(); err != nil {
		bdb.Close()
		unlock()
		return nil, fmt.Errorf("wal: open %s: %w", opt.Dir, err)
	}
	replayed, voided, err := db.openJournal()
	if err != nil {
		bdb.Close()
		unlock()
		return nil, fmt.Errorf("wal: recover %s: %w", opt.Dir, err)
	}
	if replayed > 0 && opt.Logger != nil {
		opt.Logger.Warn("re-applied acknowledged writes from the journal that the store's log had lost",
			"writes", replayed, "void_lsns", voided, "last_lsn", db.last.Load())
	}
	return db, nil
}

// logFormat is the layout of the log this code writes: 2 = runs of records
// (record.go). Open records it in the store before any write, and refuses
// a store marked with a later one. A store once opened by this code holds
// runs after its first batch, which a RouteHound before runs cannot read:
// there is no downgrade past it (README, "Upgrades").
const logFormat = 2

var metaFormat = []byte("mformat")

func (db *DB) markFormat() error {
	var have uint64
	err := db.view(func(txn *badger.Txn) error {
		v, ok, err := getUint(txn, metaFormat)
		if ok {
			have = v
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case have > logFormat:
		return fmt.Errorf("the store's log format is %d, newer than this RouteHound reads (%d): run the release that wrote it", have, logFormat)
	case have == logFormat:
		return nil
	}
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	defer txn.Discard()
	if err := txn.Set(metaFormat, be64(logFormat)); err != nil {
		return err
	}
	if err := db.commitTxn(txn); err != nil {
		return fmt.Errorf("mark the log format: %w", err)
	}
	return nil
}

// recover reads the counters back. The last LSN is the highest log key, or
// the meta counter when retention has emptied the log.
func (db *DB) recover() error {
	return db.view(func(txn *badger.Txn) error {
		var last, first uint64
		var logBytes int64
		if v, ok, err := getUint(txn, []byte("mlast")); err != nil {
			return err
		} else if ok {
			last = v
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}, Reverse: true})
		it.Seek(logKey(^uint64(0)))
		if it.Valid() {
			if l := binary.BigEndian.Uint64(it.Item().Key()[1:]); l > last {
				last = l
			}
		}
		it.Close()
		if v, ok, err := getUint(txn, metaFirst); err != nil {
			return err
		} else if ok {
			first = v
		} else {
			first = 1
		}
		if v, ok, err := getUint(txn, metaLogBytes); err != nil {
			return err
		} else if ok {
			logBytes = int64(v)
		}
		if first > last+1 {
			first = last + 1
		}
		db.last.Store(last)
		db.first.Store(first)
		db.logBytes.Store(logBytes)
		return nil
	})
}

func getUint(txn *badger.Txn, k []byte) (uint64, bool, error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var v uint64
	err = it.Value(func(b []byte) error {
		if len(b) != 8 {
			return errCorrupt
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err == nil, err
}

// LastLSN is the LSN of the last committed record (0 for an empty store).
// Committed is not durable: see Sync.
func (db *DB) LastLSN() uint64 { return db.last.Load() }

// FirstLSN is the oldest LSN still in the log; LastLSN()+1 when it is empty.
func (db *DB) FirstLSN() uint64 { return db.first.Load() }

// LogBytes is the size of the retained log records, keys and values.
func (db *DB) LogBytes() int64 { return db.logBytes.Load() }

// MaxBatchBytes is the largest transaction Badger accepts with these
// options; a caller must keep its batches well below it.
func (db *DB) MaxBatchBytes() int64 { return db.maxBatchBytes }

// Size reports Badger's on-disk LSM and value-log sizes.
// It reports zeros once the handle is closed.
func (db *DB) Size() (lsm, vlog int64) {
	if db.rlock() != nil {
		return 0, 0
	}
	defer db.runlock()
	return db.bdb.Size()
}

// Sync makes every commit so far durable (fsync of Badger's WAL and value
// log). After an error the store is failed: Badger reports a lost write only
// once, so nothing committed since the last good Sync may be acknowledged,
// and no later write may be trusted to this handle.
func (db *DB) Sync() error {
	if db.failed.Load() {
		return ErrFailed
	}
	err := db.injected("sync")
	if err == nil {
		err = db.bdb.Sync()
	}
	if err != nil {
		db.failed.Store(true)
		return fmt.Errorf("wal: sync %s at lsn %d: %w", db.dir, db.last.Load(), err)
	}
	return nil
}

// injected asks Options.Fail whether op fails.
func (db *DB) injected(op string) error {
	if db.fail == nil {
		return nil
	}
	return db.fail(op)
}

// Failed reports whether a Sync or Commit has failed on this handle.
func (db *DB) Failed() bool { return db.failed.Load() }

// Close flushes and closes the store. Reads in progress finish first; reads
// that start meanwhile or later answer ErrClosed. Safe to call twice.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.rmu.Lock()
		db.closing = true
		for db.readers > 0 {
			db.rdone.Wait()
		}
		db.closed = true
		db.rmu.Unlock()
		if err := db.bdb.Close(); err != nil {
			db.closeErr = fmt.Errorf("wal: close %s: %w", db.dir, err)
		}
		if db.journal != nil {
			db.journal.close()
		}
		if db.lock != nil {
			db.lock.Close() // after Badger let go of the dir
		}
	})
	return db.closeErr
}

// RunGC reclaims value-log space; cheap when there is nothing to reclaim.
func (db *DB) RunGC() {
	if db.rlock() != nil {
		return
	}
	defer db.runlock()
	for db.bdb.RunValueLogGC(0.5) == nil {
	}
}

// badgerLogger sends Badger's warnings and errors to slog and drops its
// chatty info and debug lines.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error(fmt.Sprintf(f, a...), "component", "badger")
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn(fmt.Sprintf(f, a...), "component", "badger")
	}
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
