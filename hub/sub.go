package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"routehound/engine"
)

// Sub is one subscription to one table.
type Sub struct {
	h     *Hub
	table string
	owner string // the client connection (SubscribeFrom), "" for none
	// q is the subscriber's bounded buffer (at most Config.Buffer events),
	// allocated only while something waits: nil for an idle subscriber.
	// Policy when full: the event is dropped and behind is set; the
	// subscriber's goroutine then resyncs. The stream takes the whole
	// queue at once (one batch, one write) and gives the drained slice
	// back as spare, kept only while small.
	mu     sync.Mutex
	q      []*Event
	spare  []*Event
	wake   chan struct{} // capacity 1: something was queued, or behind was set
	behind atomic.Bool

	done       chan struct{}
	closeOnce  sync.Once
	reason     atomic.Pointer[string]
	removeOnce sync.Once
}

// Table is the subscribed table.
func (s *Sub) Table() string { return s.table }

// offer queues evs (consecutive changes of the subscriber's table, in
// LSN order) without blocking: it runs on the hub's fan-out goroutine. A
// buffer they do not fit in marks the subscriber behind instead (it
// resyncs from a snapshot, which holds them): the buffer never holds more
// than Config.Buffer events.
func (s *Sub) offer(evs []*Event) {
	if s.behind.Load() {
		s.h.stats.Dropped.Add(uint64(len(evs)))
		return
	}
	s.mu.Lock()
	if len(s.q)+len(evs) > s.h.cfg.Buffer {
		s.mu.Unlock()
		s.behind.Store(true)
		s.h.stats.Dropped.Add(uint64(len(evs)))
		s.signal()
		return
	}
	if s.q == nil {
		s.q, s.spare = s.spare, nil
	}
	first := len(s.q) == 0
	s.q = append(s.q, evs...)
	s.mu.Unlock()
	s.h.stats.Enqueued.Add(uint64(len(evs)))
	if first {
		s.signal() // the stream takes everything queued, so only the first of a batch wakes it
	}
}

// signal wakes the subscriber's stream, unless a wake-up is pending.
func (s *Sub) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// keepSpare is the largest drained batch (in events) a subscriber keeps
// for the next one: an idle subscriber that once had a burst holds at
// most this, a busy one reuses its slice and allocates nothing per event.
const keepSpare = 256

// take removes and returns everything queued (nil when nothing is).
func (s *Sub) take() []*Event {
	s.mu.Lock()
	b := s.q
	s.q = nil
	s.mu.Unlock()
	return b
}

// recycle gives a batch that take returned back, once its events are
// sent: cleared (the events can be collected) and kept if small.
func (s *Sub) recycle(b []*Event) {
	if cap(b) > keepSpare {
		return
	}
	clear(b)
	s.mu.Lock()
	if s.spare == nil {
		s.spare = b[:0]
	}
	s.mu.Unlock()
}

// releaseSpare frees the drained batch kept for the next burst: the
// stream calls it after a heartbeat interval without traffic, so that a
// subscriber that was busy once holds no buffer while idle.
func (s *Sub) releaseSpare() {
	s.mu.Lock()
	s.spare = nil
	s.mu.Unlock()
}

// drop empties the buffer and frees it (a resync starts over).
func (s *Sub) drop() {
	s.mu.Lock()
	s.q, s.spare = nil, nil
	s.mu.Unlock()
}

// kill ends the subscription from outside (shutdown, slow consumer).
func (s *Sub) kill(reason string) {
	s.closeOnce.Do(func() {
		s.reason.Store(&reason)
		s.h.stats.closedFor(reason)
		close(s.done)
	})
}

// Close unregisters the subscription. Safe to call twice.
func (s *Sub) Close() {
	s.removeOnce.Do(func() { s.h.remove(s) })
	s.closeOnce.Do(func() { close(s.done) })
}

// Sink is what a transport implements to carry a stream.
type Sink interface {
	// Snapshot sends one page of a snapshot at lsn. resync marks a snapshot
	// that replaces what the client holds (the first page of it says so);
	// last marks the final page, after which changes follow.
	Snapshot(lsn uint64, rows []Row, first, last, resync bool) error
	// Change sends one committed change; it may buffer until Flush.
	Change(ev *Event) error
	// Flush sends what Change buffered; called when no event is waiting.
	Flush() error
	// Heartbeat keeps an idle stream alive (and detects a dead peer). A
	// sink may free its buffers there when nothing was sent since the
	// last heartbeat.
	Heartbeat() error
}

// ClosedError ends a stream that the hub closed, with its reason.
type ClosedError struct{ Reason string }

func (e *ClosedError) Error() string { return "hub: subscription closed: " + e.Reason }

// Stream runs a subscription into sink until ctx ends, the sink fails or
// the hub closes it. With from == nil it starts with a snapshot; with from
// = N it sends only the changes after N (from the log), or a resync
// snapshot when the log no longer holds them or when N is more than
// MaxCatchUp records behind the durable LSN (a replay that long would
// read up to the whole retained log for one request; a snapshot costs the
// table's size).
func (h *Hub) Stream(ctx context.Context, s *Sub, from *uint64, sink Sink) error {
	err := h.stream(ctx, s, from, sink)
	var ce *ClosedError
	if err != nil && ctx.Err() == nil && !errors.As(err, &ce) {
		// The transport could not write within its timeout, or the peer
		// went away mid-write: count it as a close with a reason.
		s.kill("write_failed")
	}
	return err
}

func (h *Hub) stream(ctx context.Context, s *Sub, from *uint64, sink Sink) error {
	var last uint64
	var err error
	if from == nil {
		last, err = h.snapshot(s, sink, false)
	} else if d := h.e.DurableLSN(); d > *from && d-*from > uint64(h.cfg.MaxCatchUp) {
		h.stats.CatchUpResyncs.Add(1)
		last, err = h.resync(s, sink)
	} else {
		last, err = h.catchUp(ctx, s, *from, sink)
		if errors.Is(err, engine.ErrTrimmed) {
			last, err = h.resync(s, sink)
		}
	}
	if errors.Is(err, engine.ErrReopening) {
		last, err = h.resyncAfterReopen(ctx, s, sink)
	}
	if err != nil {
		return err
	}
	hb := time.NewTicker(h.cfg.Heartbeat)
	defer hb.Stop()
	var resyncs []time.Time
	sent := false // since the last heartbeat
	for {
		if s.behind.Load() {
			// The buffer overflowed: what it holds is incomplete. Start
			// over from a fresh snapshot, unless this keeps happening.
			now := time.Now()
			resyncs = append(resyncs, now)
			for len(resyncs) > 0 && now.Sub(resyncs[0]) > h.cfg.ResyncWindow {
				resyncs = resyncs[1:]
			}
			if len(resyncs) > h.cfg.MaxResyncs {
				s.kill("slow_consumer")
				return &ClosedError{Reason: "slow_consumer"}
			}
			last, err = h.resync(s, sink)
			if errors.Is(err, engine.ErrReopening) {
				last, err = h.resyncAfterReopen(ctx, s, sink)
			}
			if err != nil {
				return err
			}
			continue
		}
		if batch := s.take(); len(batch) > 0 {
			// Everything that queued since the last write goes out in one
			// write (the sink may cut a very large batch).
			if last, err = h.deliver(s, sink, batch, last); err != nil {
				return err
			}
			sent = true
			continue
		}
		select {
		case <-s.wake:
		case <-hb.C:
			if !sent {
				s.releaseSpare() // a heartbeat without traffic: the subscriber is idle again
			}
			sent = false
			if err := sink.Heartbeat(); err != nil {
				return err
			}
		case <-s.done:
			r := "closed"
			if p := s.reason.Load(); p != nil {
				r = *p
			}
			return &ClosedError{Reason: r}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// deliver sends a batch that take returned (the changes after last) in
// one flush, gives the batch back, counts it and times it; it returns the
// LSN of the last change sent. A function of its own, not inlined, so that
// its frame (the delay runs) is on the stack only while it delivers: a
// stream goroutine waits, idle, with stream's frame on its stack, and an
// idle subscriber's stack must not grow past a size class for it.
//
//go:noinline
func (h *Hub) deliver(s *Sub, sink Sink, batch []*Event, last uint64) (uint64, error) {
	taken := h.clock()
	var runs delayRuns
	n := 0
	for _, ev := range batch {
		if ev.LSN <= last {
			continue // already in the snapshot or the catch-up
		}
		if err := sink.Change(ev); err != nil {
			return last, err
		}
		runs.add(ev)
		n++
		last = ev.LSN
	}
	s.recycle(batch)
	if n > 0 {
		if err := sink.Flush(); err != nil {
			return last, err
		}
		h.stats.Delivered.Add(uint64(n))
		h.recordDelays(&runs, taken, h.clock())
	}
	return last, nil
}

// resync empties the buffer, clears behind and sends a fresh snapshot. The
// snapshot is taken after behind is cleared, so every event dropped while
// it was set (published, hence committed, before) is in the snapshot.
func (h *Hub) resync(s *Sub, sink Sink) (uint64, error) {
	h.stats.Resyncs.Add(1)
	s.drop()
	s.behind.Store(false)
	return h.snapshot(s, sink, true)
}

// reopenWait bounds how long a subscription waits for the store to be
// reopened after a storage failure (normally well under a second).
const reopenWait = 30 * time.Second

// resyncAfterReopen sends a resync snapshot once the store is reopened: a
// snapshot or catch-up that met the store while it was being reopened may
// have sent part of what it had, so the client starts over from a snapshot
// that replaces what it holds. The subscription is not ended. The engine's
// feed notifies when the reopened store is swapped in.
func (h *Hub) resyncAfterReopen(ctx context.Context, s *Sub, sink Sink) (uint64, error) {
	deadline := time.NewTimer(reopenWait)
	defer deadline.Stop()
	for {
		swapped := h.e.Notify()
		last, err := h.resync(s, sink)
		if !errors.Is(err, engine.ErrReopening) {
			return last, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.done:
			return 0, &ClosedError{Reason: "closed"}
		case <-deadline.C:
			return last, err
		case <-swapped:
		}
	}
}

// errPageFull ends a snapshot page's scan at its byte budget.
var errPageFull = errors.New("hub: snapshot page full")

// snapshot sends the table's state at one LSN, in pages, and returns it.
func (h *Hub) snapshot(s *Sub, sink Sink, resync bool) (uint64, error) {
	snap, err := h.e.Snapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Close()
	lsn := snap.LSN()
	after := ""
	first := true
	rows := make([]Row, 0, h.cfg.SnapshotPage)
	for {
		rows = rows[:0]
		var bytes int64
		more, err := snap.Scan(s.table, after, h.cfg.SnapshotPage, func(k string, st engine.State) error {
			// A page is cut at SnapshotBytes too (at least one row), so
			// that large values never make one frame of hundreds of MB.
			n := int64(len(k) + len(st.Value) + 64)
			if len(rows) > 0 && bytes+n > h.cfg.SnapshotBytes {
				return errPageFull
			}
			bytes += n
			rows = append(rows, Row{Key: k, Value: st.Value, Version: st.Version, LSN: st.LSN})
			return nil
		})
		if errors.Is(err, errPageFull) {
			more, err = true, nil
		}
		if err != nil {
			return 0, fmt.Errorf("hub: snapshot of %s: %w", s.table, err)
		}
		if err := sink.Snapshot(lsn, rows, first, !more, resync); err != nil {
			return 0, err
		}
		first = false
		if !more {
			return lsn, nil
		}
		after = rows[len(rows)-1].Key
	}
}

// catchUp sends the table's records after `from` from the log, in chunks,
// until it reaches the durable LSN; live events at or below what it sent
// are skipped afterwards.
func (h *Hub) catchUp(ctx context.Context, s *Sub, from uint64, sink Sink) (uint64, error) {
	// A page rendered from a snapshot may name an LSN committed but not yet
	// durable (at most one group-commit interval ahead): wait for it. An
	// LSN the store never reached (a client from another store, or from
	// before a power cut) gets a resync, never a silent skip.
	if from > h.e.DurableLSN() {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := h.e.WaitDurable(wctx, from)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, engine.ErrTrimmed
		}
	}
	const chunk = 1000
	last := from
	for {
		var evs []*Event
		n := 0
		err := h.e.ReadLog(last, chunk, func(r engine.Record) error {
			n++
			last = r.LSN
			if r.Table == s.table {
				evs = append(evs, newEvent(&r))
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		for _, ev := range evs {
			if err := sink.Change(ev); err != nil {
				return 0, err
			}
			h.stats.Delivered.Add(1)
		}
		if err := sink.Flush(); err != nil {
			return 0, err
		}
		if n < chunk {
			return last, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}
