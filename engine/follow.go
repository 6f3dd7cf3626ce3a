package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"routehound/wal"
)

// Following another box's log: a warm standby (issue 20).
//
// A standby's engine refuses every write with ErrNotPrimary; its one
// writer is the follower (package uplink), which hands it the records the
// primary shipped, in LSN order, through ApplyFollowed. Those records are
// written at their own LSNs, versions and commit times (wal.Batch.Replay)
// by the committer, as one more item of a lane: committed, fsynced, then
// published to the durability feed like any batch. So the standby's log,
// tables, durability feed, hub, replica and retention are the primary's,
// with nothing of theirs changed, and nothing ApplyFollowed answered as
// applied is lost on a power cut (it answers after the fsync).
//
// The records go through the events lane: a standby runs no fleet-events
// consumer (the derived tables come from the primary's log), so the lane
// is free, and its ledger line counts what the standby applied.
//
// Promote makes the engine a writer again: its next LSN follows the last
// record applied. A primary fenced by a promoted standby calls
// SetNotPrimary and refuses writes from then on.

// ErrNotPrimary refuses a write on a box that is not the writer of its
// depot: a standby following the primary's log, or a primary fenced by a
// standby promoted in its place.
var ErrNotPrimary = errors.New("engine: not the primary")

// follow is the engine's role (the Engine's field follow).
type follow struct {
	on  atomic.Bool // writes are refused with ErrNotPrimary
	mu  sync.Mutex
	why string // why, for the refusal's message and the status
	// applyMu serializes ApplyFollowed: one follower, records in order.
	applyMu sync.Mutex
	// central: the refusal is a central view's (central.go).
	central atomic.Bool
}

// NotPrimaryError is ErrNotPrimary with the reason this box is not the
// primary.
type NotPrimaryError struct {
	Why     string
	Central bool // a central view (central.go): errors.Is(err, ErrCentralReadOnly) holds too
}

func (e *NotPrimaryError) Error() string {
	if e.Why == "" {
		return ErrNotPrimary.Error()
	}
	return ErrNotPrimary.Error() + ": " + e.Why
}
func (e *NotPrimaryError) Is(target error) bool {
	return target == ErrNotPrimary || e.Central && target == ErrCentralReadOnly
}

// SetNotPrimary makes the engine refuse every write with a
// NotPrimaryError saying why (a standby; a fenced primary). Writes already
// queued are committed.
func (e *Engine) SetNotPrimary(why string) {
	e.follow.mu.Lock()
	e.follow.why = why
	e.follow.mu.Unlock()
	e.follow.on.Store(true)
}

// NotPrimary reports whether writes are refused with ErrNotPrimary, and
// why.
func (e *Engine) NotPrimary() (bool, string) {
	if !e.follow.on.Load() {
		return false, ""
	}
	e.follow.mu.Lock()
	defer e.follow.mu.Unlock()
	return true, e.follow.why
}

// notPrimary is admit's check.
func (e *Engine) notPrimary() error {
	if !e.follow.on.Load() {
		return nil
	}
	_, why := e.NotPrimary()
	return &NotPrimaryError{Why: why, Central: e.follow.central.Load()}
}

// Promote makes the engine the writer: writes are accepted again, and the
// next LSN follows the last record in the store (the last one applied).
// What the engine kept in memory of the store while it followed is
// reloaded on first use: each driver's seqs (the points of the log it
// applied moved them) and the user tables' quota counts.
func (e *Engine) Promote() {
	e.follow.applyMu.Lock() // no apply in flight
	defer e.follow.applyMu.Unlock()
	e.drivers.reset()
	u := &e.usage
	u.mu.Lock()
	u.db, u.tables, u.deltas = nil, nil, nil
	u.mu.Unlock()
	e.follow.on.Store(false)
}

// ApplyFollowed writes records another box committed (its shipped log),
// in LSN order, at their own LSNs, versions and commit times, and answers
// once they are durable and published: the last LSN the store then holds.
// Records at or below the store's last LSN are skipped (sent again). A
// record past the next LSN leaves a gap the primary's shipping skipped
// (records it dropped, logged there): void records (wal.VoidTable) fill
// it, so the log stays gapless; an empty store starts its log at the first
// record instead. It works while the engine refuses writes (NotPrimary);
// it is refused while the store has failed or is closing (retry after the
// reopen: what was not answered is applied again from the store's last
// LSN).
func (e *Engine) ApplyFollowed(ctx context.Context, recs []Record) (uint64, error) {
	return e.ApplyFollowedIdem(ctx, recs, nil)
}

// ApplyFollowedIdem is ApplyFollowed with the idempotency entries shipped
// with the records (at most one per record, by its LSN): each is written
// in the same batch as its record, expiring when it expires on the
// primary (what is left of its TTL), so that once promoted this box
// answers a retry with the same Idempotency-Key (or a phone's resend) as
// the primary would have. An expired entry is dropped, and so is the
// entry of a record the store holds already (it came with it, if at all).
func (e *Engine) ApplyFollowedIdem(ctx context.Context, recs []Record, idem []IdemEntry) (uint64, error) {
	e.follow.applyMu.Lock()
	defer e.follow.applyMu.Unlock()
	for _, r := range recs {
		if r.Op != OpPut && r.Op != OpDelete {
			return e.store().LastLSN(), fmt.Errorf("engine: apply lsn %d: unknown op %d", r.LSN, r.Op)
		}
	}
	var byLSN map[uint64]IdemEntry
	if len(idem) > 0 {
		byLSN = make(map[uint64]IdemEntry, len(idem))
		for _, ie := range idem {
			byLSN[ie.LSN] = ie
		}
	}
	recs = e.fillGaps(recs)
	l := e.lanes[LaneEvents]
	most := max(min(e.cfg.BatchRecords, l.Bound()), 1)
	for len(recs) > 0 {
		n, size := 0, int64(0)
		for n < len(recs) && n < most {
			s := int64(2*len(recs[n].Value) + 2*len(recs[n].Key) + 2*len(recs[n].Table) + 64)
			if ie, ok := byLSN[recs[n].LSN]; ok {
				s += int64(2 * (len(ie.Scope) + len(ie.Key) + len(ie.Answer) + 48))
			}
			if n > 0 && size+s > e.cfg.BatchBytes/2 {
				break
			}
			size += s
			n++
		}
		chunk := recs[:n]
		recs = recs[n:]
		if chunk[len(chunk)-1].LSN <= e.store().LastLSN() {
			continue // all there already
		}
		if err := e.applyChunk(ctx, l, chunk, size, byLSN); err != nil {
			return e.store().LastLSN(), err
		}
	}
	return e.store().LastLSN(), nil
}

// applyChunk writes one batch's worth of followed records, with their
// idempotency entries (by LSN), through lane l and waits until they are
// durable.
func (e *Engine) applyChunk(ctx context.Context, l *lane, chunk []Record, size int64, idem map[uint64]IdemEntry) error {
	l.stats.Arrivals.Add(1)
	it := &item{units: len(chunk), bytes: size + 256, done: make(chan result, 1)}
	it.apply = func(b *wal.Batch) (result, error) {
		var last uint64
		for _, r := range chunk {
			w := wal.Record{LSN: r.LSN, Table: r.Table, Key: r.Key, Op: wal.Op(r.Op), Value: r.Value, Version: r.Version,
				Actor: r.Actor, CommittedAt: r.CommittedAt}
			ok, err := b.Replay(w)
			if err != nil {
				return result{}, err
			}
			if !ok {
				continue
			}
			last = r.LSN
			if ie, has := idem[r.LSN]; has && r.Table != wal.VoidTable {
				if _, err := b.ReplayIdem(walIdem(ie)); err != nil {
					return result{}, fmt.Errorf("engine: apply the idempotency entry of lsn %d: %w", r.LSN, err)
				}
			}
		}
		return result{write: WriteResult{LSN: last}}, nil
	}
	// The lane may still count the previous chunk: its waiter is answered
	// before its units are released (committer.go answer), and the next
	// chunk can come in between. Wait for room, as a driver does, then
	// push again.
	deadline := time.Now().Add(followRoomWait)
	for {
		err := e.enqueueFollowed(l, it)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLaneFull) || !l.waitRoom(ctx, it.units, deadline) {
			return l.refuse(err)
		}
	}
	_, err := wait(ctx, it)
	return err
}

// followRoomWait bounds how long a followed chunk waits for room in the
// lane before the apply is refused (and retried by the follower).
const followRoomWait = 5 * time.Second

// fillGaps drops the records the store holds already and puts void
// records (wal.VoidTable) where the records skip LSNs, except before the
// first record of an empty store (its log starts there).
func (e *Engine) fillGaps(recs []Record) []Record {
	prev := e.store().LastLSN()
	var out []Record
	for i, r := range recs {
		if r.LSN <= prev {
			continue
		}
		if r.LSN > prev+1 && prev > 0 {
			if out == nil {
				out = append(make([]Record, 0, len(recs)), recs[:i]...)
			}
			e.log.Error("STANDBY GAP: the primary's shipped log skips records (it dropped them: see its UPLINK DROPPED RECORDS); void records fill the gap",
				"after_lsn", prev, "before_lsn", r.LSN, "records", r.LSN-prev-1)
			for v := prev + 1; v < r.LSN; v++ {
				out = append(out, Record{LSN: v, Table: wal.VoidTable, Key: "lost", Op: OpDelete, Actor: "standby", CommittedAt: r.CommittedAt})
			}
		}
		if out != nil {
			out = append(out, r)
		}
		prev = r.LSN
	}
	if out == nil {
		return recs
	}
	return out
}

// enqueueFollowed is enqueue for the follower: not refused for
// NotPrimary, which refuses every other writer.
func (e *Engine) enqueueFollowed(l *lane, it *item) error {
	switch {
	case e.closing.Load() || e.failed.Load():
		return ErrUnavailable
	case e.diskLow.Load():
		return ErrDiskLow
	}
	it.arrived = e.now()
	if err := l.push(it); err != nil {
		return err
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}
