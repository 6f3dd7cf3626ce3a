package engine

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"routehound/wal"
)

// The durability feed: the one way to learn that something became durable.
//
// After each Sync the committer hands the records it covered to the feed's
// tail (converted once when committed, not copied again), stores the
// durable LSN, answers the writers and closes the notify channel, replacing
// it with a new one (as litestream's Notify does); for a batch its frame
// holds whole the journal's goroutine publishes and notifies, then answers
// (pipeline.go). That is all either does for publication: the hub's
// fan-out, the replica, the driver stream and Subscribe each follow the
// feed on a goroutine of their own, as a Cursor or by waiting on Notify.
//
// The tail is a bounded window of the most recently durable records
// (tailRecords, tailBytes). A cursor reads from it while it keeps up and
// from the log (the store) when it fell behind the window; ReadLog serves
// from it too. Records from the tail are shared: readers must not modify
// them.
//
// After a store reopen (recover.go) the committer hands the feed the
// records the reopened store holds past the durable LSN (committed before
// the failure, never published), and notifies even when there were none,
// so that a cursor that met the closed store reads again.

// Bounds of the tail: the most recently durable records kept in memory.
// Always at least the newest batch. Variables for the tests.
var (
	tailRecords       = 1 << 16
	tailBytes   int64 = 32 << 20
)

// cursorChunk bounds the records one Cursor.Next returns.
const cursorChunk = 4096

var (
	// ErrStopped answers a wait on the feed once the engine has stopped
	// and every durable record was read: the durable LSN will not move
	// again.
	ErrStopped = errors.New("engine: stopped")
	// ErrNotCommitted answers WaitDurable for an LSN the store has not
	// committed: waiting for it would wait for writes not yet made (or
	// lost with a failed store before they were durable).
	ErrNotCommitted = errors.New("engine: lsn not committed")
)

// feed is the engine's durability feed.
type feed struct {
	notify atomic.Pointer[chan struct{}] // closed and replaced when the durable LSN moves (or the store is swapped)

	mu    sync.Mutex // guards the tail; never held across I/O or a reader's callback
	segs  []segment  // segs[head:] is the tail, oldest first; LSNs contiguous across segments
	head  int
	recs  int   // records in the tail
	bytes int64 // their estimated size

	subMu sync.Mutex
	subs  []chan struct{} // closed when a Subscribe goroutine returns; Close waits for them
}

// segment is one batch's records, handed over by the committer or the
// journal's goroutine and never modified afterwards.
type segment struct {
	recs  []Record
	bytes int64
	at    time.Time // when they became durable
}

func (f *feed) init() {
	n := make(chan struct{})
	f.notify.Store(&n)
}

// bump closes the channel in p and puts a new one there. Safe from several
// goroutines: each closes the channel its own swap took out.
func bump(p *atomic.Pointer[chan struct{}]) {
	ch := make(chan struct{})
	close(*p.Swap(&ch))
}

// newSegment converts a committed batch's records once (readers share
// them), off the publication's lock.
func newSegment(ws []wal.Record) segment {
	sg := segment{recs: records(ws)}
	for i := range sg.recs {
		sg.bytes += recordBytes(&sg.recs[i])
	}
	return sg
}

func recordBytes(r *Record) int64 {
	return int64(len(r.Value) + len(r.Key) + len(r.Table) + len(r.Actor) + 96)
}

// publish makes records durable for the readers, in LSN order, with
// pubq.mu held (pipeline.go): the committer after the fsync that covered
// them, before it answers their writers, or the journal's goroutine for a
// batch its frame holds whole, before it answers that batch's writers;
// then notify wakes the readers. It reports whether the durable LSN moved.
func (e *Engine) publish(segs []segment) (moved bool) {
	f := &e.feed
	var last uint64
	now := time.Now()
	f.mu.Lock()
	for _, sg := range segs {
		if len(sg.recs) == 0 {
			continue
		}
		sg.at = now
		f.segs = append(f.segs, sg)
		f.recs += len(sg.recs)
		f.bytes += sg.bytes
		last = sg.recs[len(sg.recs)-1].LSN
	}
	for len(f.segs)-f.head > 1 && (f.recs > tailRecords || f.bytes > tailBytes) {
		old := f.segs[f.head]
		f.recs -= len(old.recs)
		f.bytes -= old.bytes
		f.segs[f.head] = segment{}
		f.head++
	}
	if f.head > 64 && f.head*2 > len(f.segs) {
		n := copy(f.segs, f.segs[f.head:])
		clear(f.segs[n:])
		f.segs, f.head = f.segs[:n], 0
	}
	f.mu.Unlock()
	if last > 0 {
		// After the tail holds them: a reader that sees the LSN finds
		// the records in the tail (or, if it lost the race, in the log).
		e.durable.Store(last)
	}
	return last > 0
}

// notify wakes the feed's readers when the durable LSN moved (the
// drivers' watchers were woken as their seqs moved: WatchDriver). The
// committer calls it last, after answering the writers (the journal's
// goroutine, before answering its own, so that the fan-out starts with
// the answer): the goroutine
// woken last tends to run first, and a reader that looks before the
// wake-up already finds the new LSN.
func (e *Engine) notify(moved bool) {
	if moved {
		bump(&e.feed.notify)
	}
}

// dropTail empties the tail (after a store reopen whose records past the
// durable LSN could not be read, so that the tail never has a hole):
// cursors read from the log again.
func (e *Engine) dropTail() {
	f := &e.feed
	f.mu.Lock()
	clear(f.segs)
	f.segs, f.head, f.recs, f.bytes = f.segs[:0], 0, 0, 0
	f.mu.Unlock()
}

// fromTail appends to out the tail's records after `after`, at most limit
// (0: all), as sub-slices of its segments. ok is false when the tail does
// not hold the record after `after` (the reader fell behind it, or it is
// empty): then the log has them.
func (e *Engine) fromTail(after uint64, limit int, out [][]Record) (_ [][]Record, ok bool) {
	f := &e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	live := f.segs[f.head:]
	if len(live) == 0 {
		return out, after >= e.durable.Load()
	}
	lastSeg := live[len(live)-1].recs
	if after >= lastSeg[len(lastSeg)-1].LSN {
		return out, true
	}
	if after+1 < live[0].recs[0].LSN {
		return out, false
	}
	i := sort.Search(len(live), func(i int) bool { return live[i].recs[0].LSN > after+1 }) - 1
	n := 0
	for ; i < len(live); i++ {
		recs := live[i].recs
		if first := recs[0].LSN; after+1 > first {
			recs = recs[after+1-first:]
		}
		if limit > 0 && n+len(recs) > limit {
			recs = recs[: limit-n : limit-n]
		}
		out = append(out, recs)
		n += len(recs)
		if limit > 0 && n >= limit {
			break
		}
	}
	return out, true
}

// DurableAt is when the record at lsn became durable (when it was
// published, right after the Sync or the journal write that made it
// durable), while the feed's
// tail holds it: for measuring how long after that a reader got it.
func (e *Engine) DurableAt(lsn uint64) (time.Time, bool) {
	f := &e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	live := f.segs[f.head:]
	if len(live) == 0 || lsn < live[0].recs[0].LSN {
		return time.Time{}, false
	}
	i := sort.Search(len(live), func(i int) bool { return live[i].recs[0].LSN > lsn }) - 1
	if r := live[i].recs; lsn > r[len(r)-1].LSN {
		return time.Time{}, false
	}
	return live[i].at, true
}

// tailStart is the LSN just before the oldest record of the tail (the
// durable LSN when the tail is empty): a cursor placed there reads from
// memory only.
func (e *Engine) tailStart() uint64 {
	f := &e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.head == len(f.segs) {
		return e.durable.Load()
	}
	return f.segs[f.head].recs[0].LSN - 1
}

// readStore reads durable records from the store (ReadLog without the
// tail).
func (e *Engine) readStore(after uint64, limit int, fn func(Record) error) error {
	err := e.db.Load().ReadLog(after, e.durable.Load(), limit, func(r wal.Record) error { return fn(record(&r)) })
	if errors.Is(err, wal.ErrTrimmed) {
		return ErrTrimmed
	}
	return err
}

// Notify returns a channel that is closed when the durable LSN next moves
// (or the store was reopened after a failure). Take it before reading the
// state it guards (DurableLSN, a cursor), then wait on it: a move in
// between closes it, so no wake-up is lost.
func (e *Engine) Notify() <-chan struct{} { return *e.feed.notify.Load() }

// isStopped reports whether the committer has returned: the durable LSN
// will not move again.
func (e *Engine) isStopped() bool {
	select {
	case <-e.stopped:
		return true
	default:
		return false
	}
}

// WaitCommitted waits until everything committed so far is durable and
// published: a write answered by the journal (pipeline.go) is published
// as it is answered when its batch holds journaled writes only and none
// before it waits, else once the log's fsync covers it, a few
// milliseconds later; a driver's durable seq moves just before its
// batch is published.
func (e *Engine) WaitCommitted(ctx context.Context) error {
	return e.WaitDurable(ctx, e.store().LastLSN())
}

// WaitDurable waits until lsn is durable. It fails at once with
// ErrNotCommitted when the store has not committed lsn (a waiter would
// wait for writes not yet made), with ErrStopped once the engine stopped
// short of it, or with ctx's error.
func (e *Engine) WaitDurable(ctx context.Context, lsn uint64) error {
	for {
		ch := e.Notify()
		stopped := e.isStopped() // before the LSN: once stopped, it is final
		if e.durable.Load() >= lsn {
			return nil
		}
		if lsn > e.db.Load().LastLSN() {
			return ErrNotCommitted
		}
		if stopped {
			return ErrStopped
		}
		select {
		case <-ch:
		case <-e.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cursor follows the durable records after an LSN, in LSN order, with no
// gap and no repeat: from the feed's tail while it keeps up, from the log
// when it fell behind. One goroutine uses a cursor.
type Cursor struct {
	e     *Engine
	after uint64
}

// Follow returns a cursor at after: its first records are those after it.
func (e *Engine) Follow(after uint64) *Cursor { return &Cursor{e: e, after: after} }

// After is the LSN of the last record the cursor returned (or where it was
// placed).
func (c *Cursor) After() uint64 { return c.after }

// Seek places the cursor at after.
func (c *Cursor) Seek(after uint64) { c.after = after }

// Next waits until records after the cursor are durable and returns the
// next of them (at most cursorChunk), moving the cursor past them. The
// records are shared with the other readers: do not modify them.
//
// Errors: ctx's; ErrStopped once the engine stopped and the cursor has
// every durable record; ErrTrimmed when the records after the cursor left
// the tail and the log no longer holds them; a store read error. While
// the store is reopened after a failure a cursor behind the tail waits for
// the reopen.
func (c *Cursor) Next(ctx context.Context) ([]Record, error) {
	e := c.e
	var one [1][]Record
	for {
		ch := e.Notify()
		stopped := e.isStopped() // before the LSN: once stopped, it is final
		if c.after >= e.durable.Load() {
			if stopped {
				return nil, ErrStopped
			}
		} else {
			var recs []Record
			segs, ok := e.fromTail(c.after, cursorChunk, one[:0])
			var err error
			if ok {
				if len(segs) > 0 {
					recs = segs[0]
				}
			} else {
				err = e.readStore(c.after, cursorChunk, func(r Record) error {
					recs = append(recs, r)
					return nil
				})
			}
			switch {
			case err == nil && len(recs) > 0:
				c.after = recs[len(recs)-1].LSN
				return recs, nil
			case err == nil:
				// Below the durable LSN and in neither the tail nor the
				// log: the log lost them (a restore, a reopen that found
				// less than was durable).
				return nil, ErrTrimmed
			case errors.Is(err, ErrReopening) && !stopped:
				// The store is being reopened: the swap notifies.
			default:
				return nil, err
			}
		}
		select {
		case <-ch:
		case <-e.stopped:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Subscribe registers fn to receive every record durable from now on, in
// LSN order, in batches, on a goroutine of its own that follows the feed
// (a Cursor), never on the committer. A slow fn delays only itself: it
// reads from the log once it falls behind the tail. Close returns once
// every subscriber has had every durable record.
func (e *Engine) Subscribe(fn func([]Record)) {
	c := e.Follow(e.DurableLSN())
	done := make(chan struct{})
	f := &e.feed
	f.subMu.Lock()
	f.subs = append(f.subs, done)
	f.subMu.Unlock()
	go func() {
		defer close(done)
		for {
			ch := e.Notify()
			recs, err := c.Next(context.Background())
			switch {
			case err == nil:
				fn(recs)
				continue
			case errors.Is(err, ErrStopped):
				return
			case errors.Is(err, ErrTrimmed):
				// Gone from the log: what the subscriber missed cannot
				// be read any more. Go on from the oldest record the
				// tail holds.
				to := e.tailStart()
				e.log.Error("a subscriber fell behind the retained log; records skipped", "after_lsn", c.After(), "to_lsn", to)
				c.Seek(to)
				continue
			}
			e.log.Error("a subscriber cannot read the log; retrying at the next commit", "after_lsn", c.After(), "err", err)
			if e.isStopped() {
				return
			}
			select {
			case <-ch:
			case <-e.stopped:
			}
		}
	}()
}

// subscribersDone waits until every Subscribe goroutine has returned (the
// committer has stopped: each returns once it has every durable record).
func (e *Engine) subscribersDone(ctx context.Context) error {
	f := &e.feed
	f.subMu.Lock()
	subs := append([]chan struct{}(nil), f.subs...)
	f.subMu.Unlock()
	for _, done := range subs {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
