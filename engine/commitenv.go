package engine

import "routehound/wal"

// commitEnv is the committer's I/O to the store, behind a small interface
// (after pebble's commitEnv): open a batch that the items apply their
// writes to, commit it, make every commit durable. The committer calls
// nothing else of the store on its write path (maintenance trims the log
// directly), so a test can step it through a fake env that fails or holds
// Commit and Sync at chosen points, deterministically (commitenv_test.go).
//
// An env belongs to one store handle: after a reopen (recover.go) the
// committer takes a new one for the new handle.
type commitEnv interface {
	// begin opens the batch the next items apply to. It blocks while
	// another batch of the store is open.
	begin() *wal.Batch
	// commit commits b as one transaction; b is finished either way (a
	// fake that fails without committing discards it).
	commit(b *wal.Batch) error
	// sync makes every commit so far durable (one fsync).
	sync() error
}

// storeEnv is the env of a real store handle.
type storeEnv struct{ db *wal.DB }

func (s storeEnv) begin() *wal.Batch         { return s.db.Begin() }
func (s storeEnv) commit(b *wal.Batch) error { return b.Commit() }
func (s storeEnv) sync() error               { return s.db.Sync() }

// envFor is the committer's env over db: the store itself, or what the
// engine's test hook wraps it in.
func (e *Engine) envFor(db *wal.DB) commitEnv {
	if e.wrapEnv != nil {
		return e.wrapEnv(db)
	}
	return storeEnv{db}
}

// setEnv gives the committer its env over db, and tells the scheduler
// whether a sync write at its target is answered by the journal (the env
// pipelines, and the target's lanes journal: Engine.journals) or by the
// log's fsync.
func (e *Engine) setEnv(db *wal.DB) {
	e.env = e.envFor(db)
	journaled := false
	if e.pipelined() != nil {
		for _, n := range Lanes {
			lc := e.cfg.Lanes[n]
			if lc.Contract != Async && lc.SLA == e.sched.target && lc.FlushWithin < e.cfg.Lanes[LaneDriver].FlushWithin {
				journaled = true
			}
		}
	}
	e.sched.setJournaled(journaled)
}
