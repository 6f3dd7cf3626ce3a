package engine

import (
	"math"
	"time"

	"routehound/wal"
)

// pending holds what is committed but not yet synced: the items to answer
// once an fsync covers them. Their records wait in the engine's pubq
// (pipeline.go) until published.
type pending struct {
	items []*item
	lanes []*lane   // lane of each item
	due   time.Time // the earliest deadline of an item's contract for its fsync
	// deferred: a due fsync waited for one batch, so that it also covers a
	// sync write that was waiting (turn); never twice in a row.
	deferred bool
	target   bool // an item of a lane at the scheduler's target (never capped) is among items
}

func (p *pending) empty() bool { return len(p.items) == 0 }

// run is the committer: the single writer to the wal. It owns p and the
// open batch; everything else reaches it through the lanes.
func (e *Engine) run() {
	defer close(e.stopped)
	var p pending
	e.cur = &p
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextMaint := e.now()
	stopping := false
	stop := e.stop // nil once stopping: a closed channel would spin the select
	for {
		if e.failed.Load() {
			e.refuseAll()
			if stopping && !e.rec.running {
				if n := e.heldUnits(); n > 0 {
					e.log.Error("stopping with the store failed: accepted driver points not written; their drivers resend them above their durable_seq", "points", n)
				}
				return
			}
			stop := e.stop
			if stopping {
				stop = nil // closed: waiting on it would spin
			}
			select {
			case <-e.wake:
			case <-stop:
				stopping = true
			case db := <-e.rec.done:
				e.rec.running = false
				if db != nil {
					// Also when stopping: the held writes are written
					// and synced by the drain below.
					e.resume(db)
				}
			}
			continue
		}
		e.pollFlights()
		if e.failed.Load() {
			continue
		}
		waiting := e.turn(&p, stopping)
		nextMaint = e.maybeMaintain(&p, nextMaint)
		if waiting {
			continue
		}
		if stopping && p.empty() && e.fl.idle() {
			return
		}
		var tc <-chan time.Time
		if !p.empty() && e.fl.syncing == nil {
			timer.Reset(p.due.Sub(e.now()))
			tc = timer.C
		} else {
			// Nothing to sync, or an fsync in flight: its end wakes us.
			timer.Reset(nextMaint.Sub(e.now()))
			tc = timer.C
		}
		select {
		case <-e.wake:
		case <-tc:
		case <-stop:
			stopping, stop = true, nil
		case r := <-e.fl.syncDone:
			e.finishSync(r)
		case r := <-e.fl.jDone:
			e.finishJournal(r)
		}
	}
}

// turn is one turn of the committer: build and commit one batch, then
// sync when a contract is due, or when draining for shutdown and nothing
// waits. It reports whether items still wait. The deterministic simulation
// (simsched_test.go) drives the committer through it on a virtual clock.
//
// A due fsync waits for one more batch when a sync write at the target is
// waiting and none is among the writes it covers: that batch takes the
// sync write first, and one fsync then covers both, where syncing first
// would make the sync write wait for two. The deadlines of the pending
// writes slip by that one batch (its capped records bounded by the
// derived cap, sched.go; the sync writes at the target it takes first are
// not capped, their queue bounds keep them few), never by two: a deferred fsync runs after the next batch whatever
// waits, and one that covers a sync write at the target is not deferred
// (its writer would wait for a third commit).
func (e *Engine) turn(p *pending, stopping bool) (waiting bool) {
	e.commitBatch(p)
	waiting = e.anyWaiting()
	if !p.empty() && (!e.now().Before(p.due) || (stopping && !waiting)) {
		if e.fl.syncing != nil {
			return waiting // the next fsync starts when this one ends
		}
		if !stopping && !p.deferred && !p.target && e.targetWaiting() {
			p.deferred = true
			return waiting
		}
		e.sync(p)
	}
	return waiting
}

// maybeMaintain runs the chores (maintain) when they are due at next, and
// answers when they are due again. Chores take the writer's turn: not
// while a sync write at the target waits, or its fsync was deferred (the
// cap's worst case has no room for them).
func (e *Engine) maybeMaintain(p *pending, next time.Time) time.Time {
	now := e.now()
	if !now.After(next) || p.deferred || e.targetWaiting() {
		return next
	}
	return now.Add(e.maintain())
}

// targetWaiting reports whether a sync lane at the scheduler's target (the
// lanes never capped) has a write waiting.
func (e *Engine) targetWaiting() bool {
	for _, l := range e.order {
		if !l.capped && l.waiting() {
			return true
		}
	}
	return false
}

func (e *Engine) anyWaiting() bool {
	for _, l := range e.order {
		if l.waiting() {
			return true
		}
	}
	return false
}

// pick chooses the lane that gives the next item of a batch (sched.go): a
// sync lane at the scheduler's target with work first (never capped);
// then, while the batch has room under the derived cap (capped: the units
// of every other lane in it so far), the other sync lanes in order, and
// the ack or async lane whose oldest waiting item is due first.
func (e *Engine) pick(capped, ncap int) *lane {
	var best *lane
	var due time.Time
	for _, l := range e.order {
		if !l.capped {
			if l.waiting() {
				return l
			}
			continue
		}
		if capped >= ncap {
			continue
		}
		if l.cfg.Contract == Sync {
			if l.waiting() {
				return l
			}
			continue
		}
		at, ok := l.oldest()
		if !ok {
			continue
		}
		if d := at.Add(l.cfg.SLA); best == nil || d.Before(due) {
			best, due = l, d
		}
	}
	return best
}

// commitBatch builds one bounded batch from the lanes and commits it.
func (e *Engine) commitBatch(p *pending) {
	var b *wal.Batch
	ncap := e.sched.cap()
	capped := 0 // units of capped lanes in the batch (every lane but the sync lanes at the target)
	t0 := e.now()
	n0 := len(p.items)
	for {
		// No rule cuts the batch for a sync writer waiting in it: the cap
		// already bounds what it waits for (sched.go).
		l := e.pick(capped, ncap)
		if l == nil {
			break
		}
		if b == nil {
			// Open the batch first, then choose again: items that arrived
			// while it opened may outrank the one first seen.
			b = e.env.begin()
			continue
		}
		it := l.peek()
		if now := e.now(); l.cfg.MaxWait > 0 && now.Sub(it.arrived) > l.cfg.MaxWait {
			// Waited past its bound: refused, not applied, so it takes
			// no room in the batch and no share of the cap.
			l.pop()
			it.taken = now
			l.stats.QueueWait.Observe(it.taken.Sub(it.arrived))
			l.stats.reject(reasonOf(ErrQueueTimeout))
			e.answer(l, it, result{err: ErrQueueTimeout})
			continue
		}
		if b.Len() > 0 && (b.Len()+it.units > e.cfg.BatchRecords || b.Size()+it.bytes > e.cfg.BatchBytes) {
			break // the batch is full; the item opens the next one
		}
		if l.capped && capped > 0 && capped+it.units > ncap {
			break // past the derived cap; the item opens the next batch
		}
		l.pop()
		it.taken = e.now()
		l.stats.QueueWait.Observe(it.taken.Sub(it.arrived))
		if l.capped {
			capped += it.units
		}
		ta := e.now()
		size0, recs0 := b.Size(), b.Len()
		it.journaled = e.journals(l, it)
		b.Journal(it.journaled)
		j0 := b.Journaled()
		res, err := it.apply(b)
		if it.journaled && b.Journaled() == j0 {
			// Nothing of it is in the journal (a refusal, or replayed
			// records): the log's fsync answers it, as it did before.
			it.journaled = false
		}
		if err != nil {
			// The batch cannot be committed whole. Items already applied
			// may be async (accepted, no waiter), so they cannot be failed
			// one by one: stop the engine, answer everyone, let a restart
			// recover from the last good commit.
			b.Discard()
			e.failStore(err, p, []*item{it}, []*lane{l})
			return
		}
		it.res = res
		l.stats.BytesWritten.Add(uint64(b.Size() - size0))
		l.stats.Records.Add(uint64(b.Len() - recs0))
		l.stats.CommitterNanos.Add(int64(e.now().Sub(ta)))
		p.items = append(p.items, it)
		p.lanes = append(p.lanes, l)
		if !l.capped {
			p.target = true
		}
		// A journaled write makes the log's fsync due as its contract
		// says, although the journal answers it: a batch that also holds
		// unjournaled records (driver points), and the batches behind it,
		// are published by that fsync, and readers (subscribers, the
		// replica, the uplink) get them one fsync after their writers at
		// most (a batch of journaled writes only is published with its
		// journal frame: publishDurable). Delaying it to the drivers'
		// flush_within cut device flushes beside the journal's, but made
		// every reader's view lag by up to 10 ms.
		within := l.cfg.FlushWithin
		if due := it.taken.Add(within); p.due.IsZero() || due.Before(p.due) {
			p.due = due
		}
	}
	if b == nil {
		return
	}
	if b.Len() == 0 && len(p.items) == n0 {
		b.Discard()
		return
	}
	tc := e.now()
	recs := b.Records()
	if err := e.env.commit(b); err != nil {
		e.failStore(err, p, nil, nil)
		return
	}
	commit := e.now().Sub(tc)
	e.sched.observeCommit(commit, len(recs))
	var seg *unpublished
	if len(recs) > 0 {
		seg = e.pubq.add(recs, b.JournalsAll())
	}
	e.totals.Batches.Add(1)
	e.totals.CommitNanos.Add(int64(commit))
	e.totals.BusyNanos.Add(int64(e.now().Sub(t0)))
	e.share(p.lanes[n0:], p.items[n0:], commit, func(s *LaneStats) { s.Batches.Add(1) })
	e.queueJournal(b, p.items[n0:], p.lanes[n0:], seg)
}

// share splits a committer cost among the lanes of items by their units,
// and runs once(lane) for each lane present.
func (e *Engine) share(lanes []*lane, items []*item, d time.Duration, once func(*LaneStats)) {
	total := 0
	per := map[*lane]int{}
	for i, l := range lanes {
		per[l] += items[i].units
		total += items[i].units
	}
	if total == 0 {
		return
	}
	for l, u := range per {
		l.stats.CommitterNanos.Add(int64(d) * int64(u) / int64(total))
		once(&l.stats)
	}
}

// sync makes every pending commit durable with one fsync, then publishes
// the records to the durability feed (feed.go), answers the waiters and
// wakes the feed's readers, in that order: a writer's answer never comes
// before its record is durable for the readers. Publishing is a handoff
// (the tail takes the batches' record slices, the notify channel is
// closed): the readers follow the feed on goroutines of their own, nothing
// of theirs runs here.
//
// With a pipelined env (pipeline.go) the fsync runs on a goroutine of its
// own and synced completes it when it returns.
func (e *Engine) sync(p *pending) {
	if pe := e.pipelined(); pe != nil && e.cur == p {
		e.startSync(p, pe)
		return
	}
	t0 := e.now()
	if err := e.env.sync(); err != nil {
		e.failStore(err, p, nil, nil)
		return
	}
	e.synced(p, e.now().Sub(t0), math.MaxUint64) // inline: it covers every commit
}

// synced completes p once an fsync that took d covers it and every commit
// up to the LSN covered.
func (e *Engine) synced(p *pending, d time.Duration, covered uint64) {
	e.sched.observeSync(d)
	e.totals.Fsyncs.Add(1)
	e.totals.SyncNanos.Add(int64(d))
	e.totals.BusyNanos.Add(int64(d))
	e.totals.SyncTime.Observe(d)
	e.share(p.lanes, p.items, d, func(s *LaneStats) { s.Fsyncs.Add(1) })
	// The drivers' durable seqs first, so that a driver stream that looks
	// once the feed moved reads them moved.
	for _, it := range p.items {
		if it.durable != nil && it.res.err == nil {
			it.durable()
			it.durable = nil
		}
	}
	moved := e.publishDurable(covered) // and the journaled batches behind them (pipeline.go)
	var drain drainTally
	for i, it := range p.items {
		if e.answer(p.lanes[i], it, it.res) { // unless the journal did (pipeline.go)
			drain.add(p.lanes[i], it.units)
		}
	}
	drain.note()
	e.notify(moved)
	clear(p.items)
	clear(p.lanes)
	*p = pending{items: p.items[:0], lanes: p.lanes[:0]}
}

// answer completes one item: the waiter gets its result, the lane its units
// back, the ledger the latency. It reports whether it answered it now: a
// committed item's caller counts its units toward the lane's drain rate
// (drainTally), with the rest of the batch, whatever its own outcome (a
// version conflict took the committer's time as a write did). It runs on the committer, or on the
// journal's goroutine for a journaled item (pipeline.go): it touches only
// the item, its lane's atomic ledger and its lane's locked queue.
func (e *Engine) answer(l *lane, it *item, r result) (drained bool) {
	if !it.answered.CompareAndSwap(false, true) {
		return false // once: by the journal or by the log's fsync (pipeline.go)
	}
	if r.err == nil {
		if it.durable != nil {
			it.durable()
			it.durable = nil
		}
		if l.cfg.Contract != Async && !r.dup {
			l.stats.Accepted.Add(uint64(it.units))
		}
	} else if it.done == nil {
		// An async write that failed after it was accepted is not silently
		// dropped: it only fails with the store, and then the client resends
		// everything above its durable_seq.
		l.stats.reject(reasonOf(r.err))
	}
	l.stats.Latency.Observe(e.now().Sub(it.arrived))
	// Units back first: a writer answered below may write again at once,
	// and must find its lane's room (TestAnsweredWriterFindsRoom).
	l.release(it.units, false) // its drain is the caller's to count
	if it.done != nil {
		it.done <- r // buffered: never blocks the committer
	}
	return true
}

// failStore stops the engine's writes after a storage error: nothing of the
// failed batch or of the unsynced commits is acknowledged, writes are
// refused, and the store is reopened in the background (recover.go) or,
// without Config.Open, main is told so it can restart the process
// (DESIGN.md, "Storage faults"). Writes that were accepted with no waiter
// (async driver points, answered 202) are not dropped: they are held and
// written again once the store is reopened.
func (e *Engine) failStore(err error, p *pending, extra []*item, extraLanes []*lane) {
	e.failed.Store(true)
	e.settleFlights(p)
	e.totals.StoreFailures.Add(1)
	if e.cfg.Open != nil {
		e.log.Error("storage failed: refusing writes until the store is reopened", "err", err, "durable_lsn", e.durable.Load())
	} else {
		e.log.Error("storage failed: refusing writes until restart", "err", err, "durable_lsn", e.durable.Load())
	}
	for i, it := range p.items {
		if !it.answered.Load() {
			e.holdOrRefuse(p.lanes[i], it)
		}
	}
	for i, it := range extra {
		e.holdOrRefuse(extraLanes[i], it)
	}
	*p = pending{}
	// What was not published is not durable for the readers: the reopen
	// publishes what the reopened store holds past the durable LSN.
	e.pubq.drop()
	e.refuseAll()
	if e.cfg.Open != nil {
		e.startRecovery(err) // see recover.go
		return
	}
	select {
	case e.fatal <- err:
	default:
	}
}

// maxRedos is how many store failures in a row an accepted write is carried
// across before it is given up (then a restart's contract applies: the
// driver resends above its durable_seq).
const maxRedos = 3

// holdOrRefuse answers an item that cannot be written now: a writer that
// waits gets ErrUnavailable (it retries, with its Idempotency-Key or seq);
// an accepted write with no waiter is held for the reopened store. Runs on
// the committer while the store is failed.
func (e *Engine) holdOrRefuse(l *lane, it *item) {
	if it.done == nil && it.redo != nil && it.redos < maxRedos && e.cfg.Open != nil {
		e.rec.held = append(e.rec.held, heldItem{l, it})
		return
	}
	if it.done == nil && it.redo != nil {
		e.log.Error("giving up an accepted write after repeated store failures; its driver must resend above its durable_seq",
			"lane", l.name, "units", it.units, "store_failures", it.redos+1)
	}
	e.answer(l, it, result{err: ErrUnavailable})
}

// heldUnits counts the units of the writes held for a reopen.
func (e *Engine) heldUnits() int {
	n := 0
	for _, h := range e.rec.held {
		n += h.it.units
	}
	return n
}

// refuseAll empties the lanes while the store is failed: see holdOrRefuse.
func (e *Engine) refuseAll() {
	for _, l := range e.order {
		for it := l.pop(); it != nil; it = l.pop() {
			e.holdOrRefuse(l, it)
		}
	}
}

// maintain runs the periodic chores between batches and says when to come
// back: once a second the free-space check and releasing the store's old
// versions to compaction; and one bounded retention step, at the next turn
// again while there is more to trim.
//
// A retention step takes the writer's turn, so a dispatch write that
// arrives during it waits for it like for a batch: it deletes at most
// twice the derived cap (about 1 ms), never the thousand records a step
// used to take (3-8 ms; BENCHMARKS.md, "Retention steps bounded by the
// cap"). The committer does not run it while a sync write at the target
// waits or an fsync was deferred for one (run).
func (e *Engine) maintain() time.Duration {
	if e.failed.Load() {
		return time.Second // the handle is never written again (failStore)
	}
	db := e.db.Load()
	now := e.now()
	if !now.Before(e.choresAt) {
		e.choresAt = now.Add(time.Second)
		e.checkDisk()
		db.ReleaseVersions()
	}
	chunk := 2 * e.sched.cap()
	t0 := e.now()
	n, recs, err := db.Trim(e.cfg.Retention.wal(), chunk)
	e.totals.BusyNanos.Add(int64(e.now().Sub(t0)))
	if err != nil {
		e.log.Error("log retention failed", "err", err)
		return time.Second
	}
	e.totals.Trimmed.Add(uint64(recs))
	switch {
	case n == chunk:
		return 0 // more to trim: one step per committer turn
	case n > 0:
		return trimEvery // at the bound: keep up in small steps
	}
	return time.Second
}

// trimEvery is how soon retention looks again once it caught up with a log
// at its bound: what the log grows by meanwhile is trimmed in a few steps
// of the cap, not in one long one.
const trimEvery = 100 * time.Millisecond
