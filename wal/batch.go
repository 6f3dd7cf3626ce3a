package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Batch is one atomic unit of writes: the log records, the table state they
// produce, the table counters and the idempotency entries, committed as ONE
// Badger transaction. Reads through the batch see its own pending writes, so
// versions and conditions chain correctly inside a batch.
//
// Only one Batch is open at a time; Begin blocks while another is open.
// A Batch must end with Commit or Discard.
type Batch struct {
	db     *DB
	txn    *badger.Txn
	next   uint64 // LSN of the next record
	recs   []Record
	tables map[string]*tableMeta
	size   int64 // estimated bytes in the transaction
	at     time.Time
	done   bool
	// startAt: an empty store's log starts at this LSN (Replay of a
	// primary's log trimmed before it was shipped); 0 otherwise.
	startAt uint64

	// The journal (journal.go): whether the next writes are journaled,
	// the indexes of the journaled records in recs, their idempotency
	// entries, and the frame built at Commit.
	journaling bool
	jrecs      []int
	jidem      []journalIdem
	jframe     JournalFrame
}

type tableMeta struct {
	keys    int64
	lastLSN uint64
}

// TableInfo describes one table.
type TableInfo struct {
	Name    string
	Keys    int64
	LastLSN uint64
}

// Begin opens the batch that the next records go to.
func (db *DB) Begin() *Batch {
	db.writeMu.Lock()
	return &Batch{
		db:     db,
		txn:    db.bdb.NewTransactionAt(db.ts.Load(), true),
		next:   db.last.Load() + 1,
		tables: map[string]*tableMeta{},
		at:     db.now().UTC(),
	}
}

// CommittedAt is the time stamped on every record of the batch: the time
// the batch began, so that an answer built before Commit can carry it.
func (b *Batch) CommittedAt() time.Time { return b.at }

// Len is the number of log records in the batch.
func (b *Batch) Len() int { return len(b.recs) }

// Size estimates the bytes the batch adds to the store.
func (b *Batch) Size() int64 { return b.size }

// Records are the records of the batch, in LSN order.
func (b *Batch) Records() []Record { return b.recs }

// Get reads the current state of a key, including this batch's writes.
func (b *Batch) Get(table, key string) (State, bool, error) {
	return getState(b.txn, table, key)
}

func getState(txn *badger.Txn, table, key string) (State, bool, error) {
	it, err := txn.Get(stateKey(table, key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("wal: get %s/%s: %w", table, key, err)
	}
	var st State
	err = it.Value(func(v []byte) error {
		var derr error
		st, derr = decodeState(v)
		return derr
	})
	if err != nil {
		return State{}, false, fmt.Errorf("wal: get %s/%s: %w", table, key, err)
	}
	return st, true, nil
}

// check applies a write condition: AnyVersion passes, 0 requires the key to
// be absent, any other value must equal the current version.
func check(cur State, exists bool, ifVersion uint64) error {
	if ifVersion == AnyVersion {
		return nil
	}
	have := uint64(0)
	if exists {
		have = cur.Version
	}
	if have != ifVersion {
		return ErrVersionConflict
	}
	return nil
}

func (b *Batch) table(name string) (*tableMeta, error) {
	if m, ok := b.tables[name]; ok {
		return m, nil
	}
	m := &tableMeta{}
	it, err := b.txn.Get(tableKey(name))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("wal: table %s: %w", name, err)
	default:
		if err := it.Value(func(v []byte) error {
			if len(v) != 16 {
				return errCorrupt
			}
			m.keys = int64(be64get(v))
			m.lastLSN = be64get(v[8:])
			return nil
		}); err != nil {
			return nil, fmt.Errorf("wal: table %s: %w", name, err)
		}
	}
	b.tables[name] = m
	return m, nil
}

// Put appends a put record and sets the key's state. value must stay
// unchanged until the batch ends. ifVersion is AnyVersion, 0 (the key must
// not exist) or the version the key must have; otherwise ErrVersionConflict
// and nothing is written.
func (b *Batch) Put(table, key string, value []byte, actor string, ifVersion uint64) (Record, error) {
	cur, exists, err := b.Get(table, key)
	if err != nil {
		return Record{}, err
	}
	if err := check(cur, exists, ifVersion); err != nil {
		return Record{}, err
	}
	tm, err := b.table(table)
	if err != nil {
		return Record{}, err
	}
	r := Record{LSN: b.next, Table: table, Key: key, Op: OpPut, Value: value, Version: cur.Version + 1, Actor: actor, CommittedAt: b.at}
	sk := stateKey(table, key)
	sv := appendState(make([]byte, 0, 16+len(value)), State{Value: value, Version: r.Version, LSN: r.LSN})
	if err := b.txn.Set(sk, sv); err != nil {
		return Record{}, fmt.Errorf("wal: put %s/%s: %w", table, key, err)
	}
	if !exists {
		tm.keys++
	}
	tm.lastLSN = r.LSN
	b.next++
	b.noteJournal(len(b.recs))
	b.recs = append(b.recs, r)
	b.size += int64(2*len(value) + 2*len(key) + 2*len(table) + 64)
	return r, nil
}

// PutSeries appends one put record per value to one key, in order, and
// sets the key's state to the last value only: the log keeps the whole
// series (a driver's trail), the state the latest (its position). It is
// unconditional. values must stay unchanged until the batch ends.
func (b *Batch) PutSeries(table, key string, values [][]byte, actor string) ([]Record, error) {
	if len(values) == 0 {
		return nil, nil
	}
	cur, exists, err := b.Get(table, key)
	if err != nil {
		return nil, err
	}
	tm, err := b.table(table)
	if err != nil {
		return nil, err
	}
	start := len(b.recs)
	for i, v := range values {
		b.recs = append(b.recs, Record{LSN: b.next + uint64(i), Table: table, Key: key, Op: OpPut, Value: v,
			Version: cur.Version + uint64(i) + 1, Actor: actor, CommittedAt: b.at})
		b.size += int64(len(v) + len(key) + len(table) + 40)
	}
	last := b.recs[len(b.recs)-1]
	sv := appendState(make([]byte, 0, 16+len(last.Value)), State{Value: last.Value, Version: last.Version, LSN: last.LSN})
	if err := b.txn.Set(stateKey(table, key), sv); err != nil {
		b.recs = b.recs[:start]
		return nil, fmt.Errorf("wal: put series %s/%s: %w", table, key, err)
	}
	b.size += int64(len(sv) + len(key) + len(table) + 16)
	if !exists {
		tm.keys++
	}
	tm.lastLSN = last.LSN
	b.next += uint64(len(values))
	for i := start; i < len(b.recs); i++ {
		b.noteJournal(i)
	}
	return b.recs[start:], nil
}

// Delete appends a delete record and removes the key's state: ErrNotFound
// when the key does not exist, ErrVersionConflict when ifVersion does not
// match.
func (b *Batch) Delete(table, key, actor string, ifVersion uint64) (Record, error) {
	cur, exists, err := b.Get(table, key)
	if err != nil {
		return Record{}, err
	}
	if !exists {
		return Record{}, ErrNotFound
	}
	if err := check(cur, exists, ifVersion); err != nil {
		return Record{}, err
	}
	tm, err := b.table(table)
	if err != nil {
		return Record{}, err
	}
	r := Record{LSN: b.next, Table: table, Key: key, Op: OpDelete, Actor: actor, CommittedAt: b.at}
	if err := b.txn.Delete(stateKey(table, key)); err != nil {
		return Record{}, fmt.Errorf("wal: delete %s/%s: %w", table, key, err)
	}
	tm.keys--
	tm.lastLSN = r.LSN
	b.next++
	b.noteJournal(len(b.recs))
	b.recs = append(b.recs, r)
	b.size += int64(2*len(key) + 2*len(table) + 64)
	return r, nil
}

// Idem returns the answer stored for an idempotency key, including one set
// earlier in this batch.
func (b *Batch) Idem(scope, key string) ([]byte, bool, error) {
	it, err := b.txn.Get(idemKey(scope, key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("wal: idempotency key %s/%s: %w", scope, key, err)
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return nil, false, fmt.Errorf("wal: idempotency key %s/%s: %w", scope, key, err)
	}
	return v, true, nil
}

// SetIdem stores the answer of an idempotency key, kept for ttl (0:
// forever). The empty scope is reserved (SetIdemFor's copies).
func (b *Batch) SetIdem(scope, key string, answer []byte, ttl time.Duration) error {
	if scope == "" {
		return fmt.Errorf("wal: set idempotency key %q: the empty scope is reserved", key)
	}
	return b.setIdem(scope, key, answer, expiresAt(ttl), b.journaling)
}

// expiresAt is Badger's expiry of an entry kept for ttl from now (0:
// never), in Unix seconds, as badger.Entry.WithTTL computes it.
func expiresAt(ttl time.Duration) uint64 {
	if ttl <= 0 {
		return 0
	}
	return uint64(time.Now().Add(ttl).Unix())
}

// setIdem stores an idempotency entry expiring at expires (Unix seconds,
// 0: never), journaled when journal is set.
func (b *Batch) setIdem(scope, key string, answer []byte, expires uint64, journal bool) error {
	e := badger.NewEntry(idemKey(scope, key), answer)
	e.ExpiresAt = expires
	if journal {
		b.jidem = append(b.jidem, journalIdem{scope: scope, key: key, answer: answer, expires: int64(expires)})
	}
	if err := b.txn.SetEntry(e); err != nil {
		if scope == "" && len(key) == 8 {
			return fmt.Errorf("wal: set the idempotency entry of lsn %d: %w", be64get([]byte(key)), err)
		}
		return fmt.Errorf("wal: set idempotency key %s/%s: %w", scope, key, err)
	}
	b.size += int64(len(scope) + len(key) + len(answer) + 32)
	return nil
}

// Commit writes the batch as one transaction: log records, table state, table counters, idempotency entries and the LSN
// counters. It is not durable until Sync. On error nothing of the batch is
// in the store, and the store is marked failed: Badger may have applied part
// of a failed commit to its memtable (DESIGN.md, "Storage faults").
func (b *Batch) Commit() error {
	if b.done {
		return errors.New("wal: commit of a finished batch")
	}
	defer b.end()
	db := b.db
	b.buildJournalFrame()
	if db.failed.Load() {
		b.txn.Discard()
		return ErrFailed
	}
	if len(b.recs) == 0 && len(b.tables) == 0 {
		// Idempotency entries alone are still worth committing.
		if err := db.commitTxn(b.txn); err != nil {
			db.failed.Store(true)
			return fmt.Errorf("wal: commit idempotency entries: %w", err)
		}
		return nil
	}
	var logBytes int64
	// Every entry's key and value are cut from one slab per batch: Badger
	// keeps the slices until the commit, and one allocation replaces two
	// per entry. Consecutive records go as runs (record.go).
	need := 0
	for i := range b.recs {
		need += 9 + 2*binary.MaxVarintLen64 + recordSize(&b.recs[i])
	}
	slab := make([]byte, 0, need)
	for i := 0; i < len(b.recs); {
		j, size := i+1, recordSize(&b.recs[i])
		for j < len(b.recs) && j-i < runMaxRecords {
			s := recordSize(&b.recs[j])
			if size+s > runMaxBytes {
				break
			}
			size += s
			j++
		}
		k0 := len(slab)
		slab = appendLogKey(slab, b.recs[j-1].LSN)
		v0 := len(slab)
		if j-i == 1 {
			slab = appendRecord(slab, &b.recs[i])
		} else {
			slab = appendRun(slab, b.recs[i:j])
		}
		k, v := slab[k0:v0:v0], slab[v0:len(slab):len(slab)]
		if err := b.txn.Set(k, v); err != nil {
			b.txn.Discard()
			return fmt.Errorf("wal: commit batch of %d at lsn %d: %w", len(b.recs), b.recs[0].LSN, err)
		}
		logBytes += int64(len(k) + len(v))
		i = j
	}
	for name, m := range b.tables {
		v := make([]byte, 16)
		be64put(v, uint64(m.keys))
		be64put(v[8:], m.lastLSN)
		if err := b.txn.Set(tableKey(name), v); err != nil {
			b.txn.Discard()
			return fmt.Errorf("wal: commit table %s: %w", name, err)
		}
	}
	last := b.next - 1
	total := db.logBytes.Load() + logBytes
	if err := b.txn.Set([]byte("mlast"), be64(last)); err != nil {
		b.txn.Discard()
		return fmt.Errorf("wal: commit batch at lsn %d: %w", last, err)
	}
	if err := b.txn.Set(metaLogBytes, be64(uint64(total))); err != nil {
		b.txn.Discard()
		return fmt.Errorf("wal: commit batch at lsn %d: %w", last, err)
	}
	if b.startAt > 0 {
		if err := b.txn.Set(metaFirst, be64(b.startAt)); err != nil {
			b.txn.Discard()
			return fmt.Errorf("wal: commit batch at lsn %d: %w", last, err)
		}
	}
	err := db.injected("commit")
	if err != nil {
		b.txn.Discard()
	} else {
		err = db.commitTxn(b.txn)
	}
	if err != nil {
		db.failed.Store(true)
		first := uint64(0)
		if len(b.recs) > 0 {
			first = b.recs[0].LSN
		}
		return fmt.Errorf("wal: commit batch of %d at lsn %d: %w", len(b.recs), first, err)
	}
	db.logBytes.Store(total)
	if b.startAt > 0 {
		db.first.Store(b.startAt)
	}
	db.last.Store(last)
	return nil
}

// commitTxn commits the writer's transaction as the next version. Under
// writeMu.
func (db *DB) commitTxn(txn *badger.Txn) error {
	ts := db.ts.Load() + 1
	if err := txn.CommitAt(ts, nil); err != nil {
		return err
	}
	db.ts.Store(ts)
	db.advanceDiscard()
	return nil
}

// Journaled counts the records and idempotency entries the batch has
// journaled so far: an item whose apply added none has nothing in the
// journal (a refusal, or a replayed record) and waits for the log.
func (b *Batch) Journaled() int { return len(b.jrecs) + len(b.jidem) }

// JournalsAll reports whether the journal frame holds every record of the
// batch: once that frame is durable, so is each of the batch's records,
// whether or not the log's fsync covered them yet (wal.Open re-applies a
// frame's records at their LSNs).
func (b *Batch) JournalsAll() bool { return len(b.recs) > 0 && len(b.jrecs) == len(b.recs) }

// noteJournal marks recs[i] journaled when the batch journals now.
func (b *Batch) noteJournal(i int) {
	if b.journaling {
		b.jrecs = append(b.jrecs, i)
	}
}

// Discard drops the batch; nothing of it is written.
func (b *Batch) Discard() {
	if b.done {
		return
	}
	b.txn.Discard()
	b.end()
}

func (b *Batch) end() {
	b.done = true
	b.db.writeMu.Unlock()
}
