package wal

import (
	"errors"
	"fmt"
	"time"
)

// Replaying another store's log: a warm standby writes the records its
// primary committed (shipped through NATS JetStream) into its own store, at
// their own LSNs, versions and commit times, so that the standby's log,
// table state and counters are the primary's and everything that reads
// them (the durability feed, subscriptions, the replica, retention) works
// unchanged.

// VoidTable is the table of a void record: an LSN the standby's log holds
// no record for, because the primary's shipping skipped it (dropped by
// retention before it was shipped, or refused by JetStream). A void record
// changes no key; it keeps the log gapless.
const VoidTable = "$void"

// ErrReplayGap answers Replay for a record that is not the next LSN of a
// store that already holds records: the caller fills the gap with void
// records (VoidTable) first.
var ErrReplayGap = errors.New("wal: replayed record leaves a gap")

// Replay writes r as the primary committed it: the log record at r.LSN,
// the key's state (value, r.Version, r.LSN; removed for a delete) and the
// table's counters. It answers false, writing nothing, for a record at or
// below the batch's last LSN (the store holds it already: a re-sent record).
// The next LSN must be r.LSN, except in an empty store, whose log then
// starts at r.LSN (the primary's log was trimmed before it was shipped).
// r.Value must stay unchanged until the batch ends.
func (b *Batch) Replay(r Record) (bool, error) {
	if r.LSN < b.next {
		return false, nil
	}
	if r.LSN > b.next {
		if b.next != 1 || len(b.recs) > 0 || b.db.first.Load() > 1 {
			return false, fmt.Errorf("%w: lsn %d after lsn %d", ErrReplayGap, r.LSN, b.next-1)
		}
		b.next, b.startAt = r.LSN, r.LSN
	}
	if r.Op != OpPut && r.Op != OpDelete {
		return false, fmt.Errorf("wal: replay lsn %d: unknown op %d", r.LSN, r.Op)
	}
	if r.Table == VoidTable {
		return true, b.void(r.LSN, r.CommittedAt)
	}
	_, exists, err := b.Get(r.Table, r.Key)
	if err != nil {
		return false, err
	}
	tm, err := b.table(r.Table)
	if err != nil {
		return false, err
	}
	sk := stateKey(r.Table, r.Key)
	if r.Op == OpDelete {
		r.Value, r.Version = nil, 0
		if exists {
			if err := b.txn.Delete(sk); err != nil {
				return false, fmt.Errorf("wal: replay delete %s/%s: %w", r.Table, r.Key, err)
			}
			tm.keys--
		}
	} else {
		sv := appendState(make([]byte, 0, 16+len(r.Value)), State{Value: r.Value, Version: r.Version, LSN: r.LSN})
		if err := b.txn.Set(sk, sv); err != nil {
			return false, fmt.Errorf("wal: replay put %s/%s: %w", r.Table, r.Key, err)
		}
		if !exists {
			tm.keys++
		}
	}
	tm.lastLSN = r.LSN
	b.next++
	b.recs = append(b.recs, r)
	b.size += int64(2*len(r.Value) + 2*len(r.Key) + 2*len(r.Table) + 64)
	return true, nil
}

// void writes a void record at lsn (Replay of a VoidTable record).
func (b *Batch) void(lsn uint64, at time.Time) error {
	if lsn != b.next {
		return fmt.Errorf("%w: void lsn %d after lsn %d", ErrReplayGap, lsn, b.next-1)
	}
	b.recs = append(b.recs, Record{LSN: lsn, Table: VoidTable, Key: "lost", Op: OpDelete, Actor: "standby", CommittedAt: at})
	b.next = lsn + 1
	b.size += int64(len(VoidTable) + 64)
	return nil
}
