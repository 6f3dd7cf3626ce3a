package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Idempotency entries with the record they answer (issue 20: they travel
// to a warm standby with their record).
//
// SetIdemFor stores an idempotency entry twice, in the same transaction
// and with the same expiry: under its scope and key, where Idem finds it
// (a retry), and as a copy keyed by the LSN of the record it answers (the
// reserved empty scope, key be64(lsn); value: the scope, the key and the
// answer), where IdemEntries finds it in LSN order beside the log. A log
// shipper reads the copies of the records it ships; a standby writes them
// with the records (ReplayIdem), so that it answers a retry as the primary
// would, and keeps them the same way. Both expire together; the journal
// carries the copy as one more entry, so a replayed record gets it back
// with its own.

// IdemEntry is an idempotency entry with the LSN of the record it answers.
type IdemEntry struct {
	LSN    uint64 // the record it answers
	Scope  string
	Key    string
	Answer []byte
	// ExpiresAt is when the entry expires, in Unix seconds (0: never).
	ExpiresAt uint64
}

// Expired reports whether the entry has expired at now.
func (e IdemEntry) Expired(now time.Time) bool {
	return e.ExpiresAt > 0 && e.ExpiresAt <= uint64(max(now.Unix(), 0))
}

// appendIdemCopy encodes the copy's value: scope, key, answer.
func appendIdemCopy(b []byte, scope, key string, answer []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(scope)))
	b = append(b, scope...)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, answer...)
}

var errIdemCopy = errors.New("wal: corrupt idempotency entry copy")

// decodeIdemCopy decodes a copy's value; the answer is copied.
func decodeIdemCopy(lsn uint64, v []byte, expires uint64) (IdemEntry, error) {
	e := IdemEntry{LSN: lsn, ExpiresAt: expires}
	for _, dst := range []*string{&e.Scope, &e.Key} {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return IdemEntry{}, fmt.Errorf("%w at lsn %d", errIdemCopy, lsn)
		}
		*dst = string(v[k : k+int(n)])
		v = v[k+int(n):]
	}
	if e.Scope == "" {
		return IdemEntry{}, fmt.Errorf("%w at lsn %d: empty scope", errIdemCopy, lsn)
	}
	e.Answer = append([]byte(nil), v...)
	return e, nil
}

// batchHolds reports whether lsn is a record of the batch.
func (b *Batch) batchHolds(lsn uint64) bool {
	return len(b.recs) > 0 && lsn >= b.recs[0].LSN && lsn <= b.recs[len(b.recs)-1].LSN
}

// SetIdemFor stores the answer of an idempotency key, kept for ttl (0:
// forever), as SetIdem does, and ties it to the record at lsn, one of this
// batch's, which it answers: IdemEntries finds it with that record. A
// record has at most one entry.
func (b *Batch) SetIdemFor(lsn uint64, scope, key string, answer []byte, ttl time.Duration) error {
	if scope == "" {
		return fmt.Errorf("wal: set idempotency key %q: the empty scope is reserved", key)
	}
	if !b.batchHolds(lsn) {
		return fmt.Errorf("wal: set idempotency key %s/%s for lsn %d: not a record of the batch", scope, key, lsn)
	}
	return b.setIdemFor(IdemEntry{LSN: lsn, Scope: scope, Key: key, Answer: answer, ExpiresAt: expiresAt(ttl)}, b.journaling)
}

// setIdemFor writes the entry and its copy, with one expiry.
func (b *Batch) setIdemFor(e IdemEntry, journal bool) error {
	if err := b.setIdem(e.Scope, e.Key, e.Answer, e.ExpiresAt, journal); err != nil {
		return err
	}
	k := idemLinkKey(e.LSN)
	v := appendIdemCopy(make([]byte, 0, 2*binary.MaxVarintLen64+len(e.Scope)+len(e.Key)+len(e.Answer)), e.Scope, e.Key, e.Answer)
	return b.setIdem("", string(k[2:]), v, e.ExpiresAt, journal)
}

// ReplayIdem writes an idempotency entry another store's log shipped with
// its record e.LSN (a standby's), which this batch replayed: the entry and
// its copy, expiring when they expire there (what is left of their TTL).
// An expired entry is dropped: it answers false, writing nothing. Not
// journaled, as Replay's records are not.
func (b *Batch) ReplayIdem(e IdemEntry) (bool, error) {
	if e.Scope == "" {
		return false, fmt.Errorf("wal: replay the idempotency entry of lsn %d: empty scope", e.LSN)
	}
	if !b.batchHolds(e.LSN) {
		return false, fmt.Errorf("wal: replay idempotency key %s/%s for lsn %d: not a record of the batch", e.Scope, e.Key, e.LSN)
	}
	if e.Expired(time.Now()) {
		return false, nil
	}
	if err := b.setIdemFor(e, false); err != nil {
		return false, err
	}
	return true, nil
}

// IdemEntries calls fn, in LSN order, for the unexpired idempotency
// entries tied to records with after < LSN <= upto (SetIdemFor,
// ReplayIdem). e.Answer is a copy fn may keep. It answers ErrClosed once
// the handle is closing.
func (db *DB) IdemEntries(after, upto uint64, fn func(IdemEntry) error) error {
	if after >= upto {
		return nil
	}
	if err := db.rlock(); err != nil {
		return err
	}
	defer db.runlock()
	return db.view(func(txn *badger.Txn) error {
		prefix := []byte{kindIdem, 0}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(idemLinkKey(after + 1)); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: key of %d bytes", errIdemCopy, len(k))
			}
			lsn := binary.BigEndian.Uint64(k[len(prefix):])
			if lsn > upto {
				return nil
			}
			var e IdemEntry
			if err := item.Value(func(v []byte) error {
				var derr error
				e, derr = decodeIdemCopy(lsn, v, item.ExpiresAt())
				return derr
			}); err != nil {
				return fmt.Errorf("wal: read the idempotency entry of lsn %d: %w", lsn, err)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}
