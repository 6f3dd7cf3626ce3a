package engine

import (
	"fmt"
	"os"
	"time"

	"routehound/wal"
)

// Recovery from a storage failure without a process restart (DESIGN.md,
// "Storage faults"). After a failed Sync or Commit nothing of the failed
// batch is acknowledged and the handle is never written again: Badger
// reports a lost write once, and a later Sync on the same handle returns nil
// although the data never reached the disk (PostgreSQL's fsyncgate).
//
// The committer keeps refusing writes (503 + Retry-After, /readyz not
// ready) while a recovery goroutine waits until the data dir takes a
// synced write again and is above the free-space watermark; reads and
// subscriptions go on against the old handle meanwhile. Then it closes the
// old handle (Badger flushes its memtable; Close retries while the disk is
// full) and opens the store anew through Config.Open. The committer swaps
// the new handle in, forgets the drivers' in-memory sequence marks (they
// may count points that were refused), publishes the records the reopened
// store holds past the last published LSN — committed before the failure
// but never acknowledged, so subscribers see no gap — and accepts writes
// again. A write whose answer was an error but that did reach the store is
// found again by its Idempotency-Key or seq on the client's retry.
//
// Between Close and the swap, reads fail (a short window: one Badger open).
// If Open fails maxReopenFailures times in a row, the engine gives up and
// Fatal tells the caller to exit for a supervisor to restart.

// maxReopenFailures is how many failed Opens in a row make the engine give
// up and ask for a restart.
const maxReopenFailures = 5

// recoveryPoll is how often the recovery goroutine checks whether the data
// dir takes writes again.
const recoveryPoll = 500 * time.Millisecond

// recovery is the committer's view of a store reopen in progress.
type recovery struct {
	running bool         // committer-owned: a recovery goroutine is out
	held    []heldItem   // committer-owned: accepted writes with no waiter, to write again after the reopen
	done    chan *wal.DB // cap 1: the reopened store, or nil when given up or stopped
	since   time.Time    // when the failure happened (committer-owned)
	cause   error        // committer-owned
}

// heldItem is an accepted write kept across a store failure, with its lane.
type heldItem struct {
	l  *lane
	it *item
}

// startRecovery launches the recovery goroutine once per failure. Called
// on the committer goroutine; the committer waits for the goroutine's
// answer on rec.done before it returns, so the goroutine has an owner.
func (e *Engine) startRecovery(cause error) {
	if e.rec.running {
		return
	}
	e.rec.running, e.rec.since, e.rec.cause = true, time.Now(), cause
	old := e.db.Load()
	go func() { e.rec.done <- e.reopen(old) }()
}

// reopen waits until the data dir takes writes, closes old and opens the
// store again. It returns nil when the engine stops or Open keeps failing
// (then Fatal is told).
func (e *Engine) reopen(old *wal.DB) *wal.DB {
	fails := 0
	warned := false
	for {
		select {
		case <-e.stop:
			return nil
		case <-time.After(recoveryPoll):
		}
		if err := e.probe(); err != nil {
			if !warned {
				e.log.Warn("storage still failing: writes stay refused", "err", err)
				warned = true
			}
			continue
		}
		if err := old.Close(); err != nil {
			// The memtable could not be flushed: what was synced is in
			// the WAL and comes back on Open; nothing else was answered.
			e.log.Warn("closing the failed store", "err", err)
		}
		db, err := e.cfg.Open()
		if err == nil {
			return db
		}
		fails++
		e.log.Error("reopening the store failed", "err", err, "attempt", fails)
		if fails >= maxReopenFailures {
			select {
			case e.fatal <- fmt.Errorf("engine: reopen after a storage failure failed %d times: %w", fails, err):
			default:
			}
			return nil
		}
	}
}

// probe checks that the data dir is above the free-space watermark and
// takes a small synced write.
func (e *Engine) probe() error {
	if e.cfg.DataDir == "" {
		return nil
	}
	e.checkDisk()
	if e.diskLow.Load() {
		return ErrDiskLow
	}
	f, err := os.CreateTemp(e.cfg.DataDir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("engine: probe %s: %w", e.cfg.DataDir, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(make([]byte, 64<<10)); err != nil {
		return fmt.Errorf("engine: probe write in %s: %w", e.cfg.DataDir, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("engine: probe fsync in %s: %w", e.cfg.DataDir, err)
	}
	return nil
}

// resume swaps the reopened store in and accepts writes again. Runs on the
// committer goroutine.
func (e *Engine) resume(db *wal.DB) {
	published := e.durable.Load()
	var gap []wal.Record
	err := db.ReadLog(published, db.LastLSN(), 0, func(r wal.Record) error {
		gap = append(gap, r)
		return nil
	})
	if err != nil {
		// Readers that need them read the log again (or resync); the
		// store itself is sound.
		e.log.Error("reading the records committed before the failure", "err", err, "after_lsn", published)
		gap = nil
	}
	e.db.Store(db)
	e.setEnv(db)
	e.fl.covered = db.LastLSN() // Open synced what it recovered and replayed
	e.drivers.reset()
	redone := e.redoHeld()
	// Through the feed, like every durable record: subscribers see no gap.
	// The feed notifies even without records, so that a cursor that met
	// the closed store reads again from the new one.
	e.pubq.mu.Lock() // every publication is under it (pipeline.go); no flight runs now
	switch last := db.LastLSN(); {
	case len(gap) == 0 && last > published:
		// Unreadable: the tail must not hold a hole; cursors read the
		// log (or find it trimmed) past it.
		e.dropTail()
		e.durable.Store(last)
	case last < published:
		// The reopened store holds less than was durable: its next LSNs
		// are not after the tail's.
		e.log.Error("the reopened store holds less than was durable", "last_lsn", last, "durable_lsn", published)
		e.dropTail()
	}
	e.publish([]segment{newSegment(gap)})
	e.pubq.mu.Unlock()
	e.notify(true)
	e.totals.Recoveries.Add(1)
	e.failed.Store(false)
	e.log.Info("storage recovered: store reopened, accepting writes",
		"durable_lsn", e.durable.Load(), "republished", len(gap), "rewritten", redone, "refused_for", time.Since(e.rec.since).Round(time.Millisecond))
}

// redoHeld puts the writes held across the failure back at the head of
// their lanes, in their order, less what the reopened store already holds
// (committed before the failure, made durable by the reopen). It returns
// the units queued again. Runs on the committer before writes are accepted
// again, so that they go ahead of any new write.
func (e *Engine) redoHeld() int {
	held := e.rec.held
	e.rec.held = nil
	byLane := map[*lane][]*item{}
	released := map[*lane]int{}
	n := 0
	for _, h := range held {
		released[h.l] += h.it.units
		it := h.it.redo(e)
		if it == nil {
			continue
		}
		it.arrived, it.redos = h.it.arrived, h.it.redos+1
		byLane[h.l] = append(byLane[h.l], it)
		n += it.units
	}
	for l, units := range released {
		l.requeue(byLane[l], units)
	}
	return n
}

// reset makes every driver reload its durable seq from the store on its
// next submission: a driver's accepted mark may count points whose batch
// failed.
func (d *drivers) reset() {
	d.mu.Lock()
	states := make([]*driverState, 0, len(d.m))
	for _, ds := range d.m {
		states = append(states, ds)
	}
	d.mu.Unlock()
	for _, ds := range states {
		ds.mu.Lock()
		ds.loaded = false
		ds.accepted = 0
		ds.mu.Unlock()
	}
}

// Refusal reasons, for the writes_refused metric.
const (
	RefusingNone    = ""
	RefusingClosing = "closing"
	RefusingStorage = "storage_failed"
	RefusingDisk    = "disk_low"
)

// Refusing says why the engine refuses writes now, or RefusingNone.
func (e *Engine) Refusing() string {
	switch {
	case e.closing.Load():
		return RefusingClosing
	case e.failed.Load():
		return RefusingStorage
	case e.diskLow.Load():
		return RefusingDisk
	}
	return RefusingNone
}
