package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// ReadLog calls fn for each record with after < LSN <= upto, in LSN order, at
// most limit records (limit <= 0: no limit); rec.Value is a copy fn may keep.
// It answers ErrTrimmed when records after `after` were removed by retention:
// the reader has missed changes and must start again from a snapshot.
// It answers ErrClosed once the handle is closing.
func (db *DB) ReadLog(after, upto uint64, limit int, fn func(Record) error) error {
	if err := db.rlock(); err != nil {
		return err
	}
	defer db.runlock()
	if upto > db.last.Load() {
		upto = db.last.Load()
	}
	if after >= upto {
		if after+1 < db.first.Load() && after < db.last.Load() {
			return ErrTrimmed
		}
		return nil
	}
	return db.view(func(txn *badger.Txn) error {
		// No prefetch: log values are inline in Badger's tables (far below
		// its value threshold), so Value reads them in place, where a
		// prefetch would copy up to 64 runs of 4 KiB for a short read.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}})
		defer it.Close()
		want := after + 1
		n := 0
		errLimit := errors.New("limit")
		for it.Seek(logKey(want)); it.Valid() && want <= upto; it.Next() {
			last := binary.BigEndian.Uint64(it.Item().Key()[1:])
			err := it.Item().Value(func(v []byte) error {
				first, _, err := entrySpan(last, v)
				if err != nil {
					return err
				}
				if first > want {
					// LSNs are gap-free and retention only removes the
					// oldest, so a jump means the records before first
					// are gone.
					return ErrTrimmed
				}
				// One record at a time: a reader that stops early (its
				// fn's error, the limit) decodes no more of the run.
				return eachRecord(last, v, want, upto, func(rec Record) error {
					if err := fn(rec); err != nil {
						return err
					}
					want++
					n++
					if limit > 0 && n >= limit {
						return errLimit
					}
					return nil
				})
			})
			var fe fnError
			switch {
			case err == nil:
			case errors.As(err, &fe) && fe.err == errLimit:
				return nil
			case errors.As(err, &fe):
				return fe.err
			case errors.Is(err, ErrTrimmed):
				return ErrTrimmed
			default:
				return fmt.Errorf("wal: read log entry at lsn %d: %w", last, err)
			}
		}
		if want <= upto {
			return ErrTrimmed // everything from want on was trimmed while we read
		}
		return nil
	})
}

// Snapshot is a consistent read view of table state at one LSN. Close it
// when done: an open snapshot holds Badger's read timestamp back.
//
// Its LSN may include commits not yet synced (at most one group-commit
// interval); callers that promise durability cap what they publish by the
// durable LSN instead.
//
// Each read through a snapshot holds its store open while it runs; once the
// store is closing they answer ErrClosed.
type Snapshot struct {
	db  *DB
	txn *badger.Txn
	ts  uint64 // its Badger version
	lsn uint64
	// released: Close ran (under the store's rmu).
	released bool
}

// Snapshot opens a read view of the committed state, or answers ErrClosed.
func (db *DB) Snapshot() (*Snapshot, error) {
	if err := db.rlock(); err != nil {
		return nil, err
	}
	defer db.runlock()
	txn, ts := db.readTxn()
	lsn, _, err := getUint(txn, []byte("mlast"))
	if err != nil {
		db.endRead(txn, ts)
		return nil, fmt.Errorf("wal: snapshot: %w", err)
	}
	return &Snapshot{db: db, txn: txn, ts: ts, lsn: lsn}, nil
}

// LSN is the last LSN whose effects the snapshot holds.
func (s *Snapshot) LSN() uint64 { return s.lsn }

// Close releases the snapshot. Safe to call twice, and after the store
// closed (then there is nothing to release).
func (s *Snapshot) Close() {
	db := s.db
	db.rmu.Lock()
	if db.closed {
		db.rmu.Unlock()
		return
	}
	if s.released {
		db.rmu.Unlock()
		return
	}
	s.released = true
	db.readers++ // also while closing: Close waits for the discard
	db.rmu.Unlock()
	db.endRead(s.txn, s.ts)
	db.runlock()
}

// Get reads one key.
func (s *Snapshot) Get(table, key string) (State, bool, error) {
	if err := s.db.rlock(); err != nil {
		return State{}, false, err
	}
	defer s.db.runlock()
	return getState(s.txn, table, key)
}

// Scan calls fn for the keys of table greater than after, in key order, at
// most limit (limit <= 0: all). more reports whether keys remain.
func (s *Snapshot) Scan(table, after string, limit int, fn func(key string, st State) error) (more bool, err error) {
	if err := s.db.rlock(); err != nil {
		return false, err
	}
	defer s.db.runlock()
	prefix := statePrefix(table)
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	start := stateKey(table, after)
	n := 0
	for it.Seek(start); it.Valid(); it.Next() {
		k := it.Item().Key()
		key := string(k[len(prefix):])
		if after != "" && key <= after {
			continue
		}
		if limit > 0 && n >= limit {
			return true, nil
		}
		var st State
		if err := it.Item().Value(func(v []byte) error {
			var derr error
			st, derr = decodeState(v)
			return derr
		}); err != nil {
			return false, fmt.Errorf("wal: scan %s at %q: %w", table, key, err)
		}
		if err := fn(key, st); err != nil {
			return false, err
		}
		n++
	}
	return false, nil
}

// Table describes one table; ok is false when it has never had a key.
func (s *Snapshot) Table(name string) (TableInfo, bool, error) {
	if err := s.db.rlock(); err != nil {
		return TableInfo{}, false, err
	}
	defer s.db.runlock()
	it, err := s.txn.Get(tableKey(name))
	if err == badger.ErrKeyNotFound {
		return TableInfo{Name: name}, false, nil
	}
	if err != nil {
		return TableInfo{}, false, fmt.Errorf("wal: table %s: %w", name, err)
	}
	ti := TableInfo{Name: name}
	err = it.Value(func(v []byte) error {
		if len(v) != 16 {
			return errCorrupt
		}
		ti.Keys, ti.LastLSN = int64(be64get(v)), be64get(v[8:])
		return nil
	})
	return ti, err == nil, err
}

// Tables calls fn for tables named after `after`, in name order, at most
// limit (<= 0: all); more reports whether tables remain. A table whose keys
// were all deleted is still listed, with Keys 0.
func (s *Snapshot) Tables(after string, limit int, fn func(TableInfo) error) (more bool, err error) {
	if err := s.db.rlock(); err != nil {
		return false, err
	}
	defer s.db.runlock()
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindTable}, PrefetchValues: true})
	defer it.Close()
	n := 0
	for it.Seek(tableKey(after)); it.Valid(); it.Next() {
		name := string(it.Item().Key()[1:])
		if after != "" && name <= after {
			continue
		}
		if limit > 0 && n >= limit {
			return true, nil
		}
		ti := TableInfo{Name: name}
		if err := it.Item().Value(func(v []byte) error {
			if len(v) != 16 {
				return errCorrupt
			}
			ti.Keys, ti.LastLSN = int64(be64get(v)), be64get(v[8:])
			return nil
		}); err != nil {
			return false, fmt.Errorf("wal: tables at %q: %w", name, err)
		}
		if err := fn(ti); err != nil {
			return false, err
		}
		n++
	}
	return false, nil
}
