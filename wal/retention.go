package wal

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Retention bounds the log. Zero fields do not bound.
type Retention struct {
	MaxAge   time.Duration // drop records committed longer ago than this
	MaxBytes int64         // drop the oldest records while the log is larger
	// Hold keeps the records after HoldAfter (a log shipper's records not
	// yet shipped) whatever MaxAge and MaxBytes say, until the log is
	// larger than HoldMaxBytes (0: no bound); past it the oldest of them
	// go too.
	Hold         bool
	HoldAfter    uint64
	HoldMaxBytes int64
}

// Trim deletes at most max of the oldest log entries (a record, or a run
// of records from one batch: record.go) that the retention policy no
// longer keeps, in one transaction, and answers how many entries and
// records it deleted. A run goes whole, once its last record may go. The caller runs it between batches (it takes the writer's turn),
// and calls it again while it answers max, so that a writer waits at most
// one bounded trim. Table state is never trimmed.
func (db *DB) Trim(p Retention, max int) (entries, records int, err error) {
	if p.MaxAge <= 0 && p.MaxBytes <= 0 {
		return 0, 0, nil
	}
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	if db.failed.Load() {
		return 0, 0, ErrFailed
	}
	cutoff := time.Time{}
	if p.MaxAge > 0 {
		cutoff = db.now().Add(-p.MaxAge)
	}
	total := db.logBytes.Load()
	first := db.first.Load()
	txn := db.bdb.NewTransactionAt(db.ts.Load(), true)
	defer txn.Discard()
	// Values are read only to judge age, from an entry's last record (the
	// newest of a run: a standby's replayed run spans several batches),
	// in place: no prefetch, which would copy whole runs (up to 4 KiB
	// each) and made a step of 128 entries take 2-3 ms instead of 0.5-1.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}})
	n := 0
	for it.Seek(logKey(first)); it.Valid() && n < max; it.Next() {
		item := it.Item()
		lsn := binary.BigEndian.Uint64(item.Key()[1:]) // an entry's last LSN (record.go)
		size := int64(9 + item.ValueSize())
		old := false
		if !cutoff.IsZero() {
			if err := item.Value(func(v []byte) error {
				r, err := entryLast(lsn, v)
				old = err == nil && r.CommittedAt.Before(cutoff)
				return err
			}); err != nil {
				it.Close()
				return 0, 0, fmt.Errorf("wal: trim at lsn %d: %w", lsn, err)
			}
		}
		if p.Hold && lsn > p.HoldAfter {
			if !(p.HoldMaxBytes > 0 && total > p.HoldMaxBytes) {
				break
			}
		} else if !old && !(p.MaxBytes > 0 && total > p.MaxBytes) {
			break
		}
		if err := txn.Delete(item.KeyCopy(nil)); err != nil {
			it.Close()
			return 0, 0, fmt.Errorf("wal: trim at lsn %d: %w", lsn, err)
		}
		total -= size
		records += int(lsn + 1 - first)
		first = lsn + 1
		n++
	}
	it.Close()
	if n == 0 {
		return 0, 0, nil
	}
	if err := txn.Set(metaFirst, be64(first)); err != nil {
		return 0, 0, fmt.Errorf("wal: trim to lsn %d: %w", first, err)
	}
	if err := txn.Set(metaLogBytes, be64(uint64(total))); err != nil {
		return 0, 0, fmt.Errorf("wal: trim to lsn %d: %w", first, err)
	}
	if err := db.commitTxn(txn); err != nil {
		db.failed.Store(true)
		return 0, 0, fmt.Errorf("wal: trim to lsn %d: %w", first, err)
	}
	db.first.Store(first)
	db.logBytes.Store(total)
	return n, records, nil
}
