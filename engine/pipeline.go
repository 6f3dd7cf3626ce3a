package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"routehound/wal"
)

// The pipelined commit (docs/design.md §3, "The journal"). With a store
// that journals (storeEnv), the committer does not wait for an fsync: the
// log's fsync runs on a goroutine of its own while the next batches are
// built and committed, and the writes whose writers wait for durability
// (the sync and ack lanes) are also written to the store's journal, whose
// own fdatasync, on a second goroutine, answers them. A dispatch write no
// longer waits for a driver batch's fsync: it waits for its own batch's
// commit and a small file's fdatasync. An item answered by the journal is
// not answered again by the log's fsync.
//
// Records are published (the feed, and so subscribers, the replica and the
// uplink) as a prefix of the log: a batch once everything up to its last
// LSN is durable, in the log's synced prefix or in the journal. A batch
// whose journal frame holds every one of its records (writes of the
// journaled lanes only) is published when that frame is durable, if every
// batch before it is published; any other batch (driver points, whose
// durability is the log's fsync) waits for the log's fsync, and so do the
// journaled batches behind it. After a crash or a failed fsync, wal.Open
// re-applies the journal's frames at their LSNs, so a published record is
// never taken back and the log has no hole below the durable LSN.
//
// Every committed item is in exactly one pending set: the committer's p,
// or the one whose fsync is in flight. The journal's frames only point at
// items, to answer them early: the journal's goroutine answers them itself
// right after its fdatasync (an atomic flag makes the first answer the
// only one), so a dispatch write does not wait for the committer to come
// back from the batch it is committing; it publishes the batches it holds
// whole first, when every batch before them is published. The
// committed batches wait for publication in pubq, under whose mutex every
// publication happens, by either goroutine. Results come back on channels
// the run loop selects on (and polls between batches); everything else
// stays owned by the committer goroutine.

// pipelinedEnv is an env whose sync may run beside the next commits and
// that journals. A test's fake env is not one: the committer then syncs
// inline, as the deterministic simulation models it.
type pipelinedEnv interface {
	commitEnv
	// journal makes frames durable in the journal (wal.DB.JournalWrite).
	journal(frames []wal.JournalFrame, covered uint64) (int, error)
	// last is the LSN of the last commit.
	last() uint64
}

func (s storeEnv) journal(frames []wal.JournalFrame, covered uint64) (int, error) {
	return s.db.JournalWrite(frames, covered)
}

func (s storeEnv) last() uint64 { return s.db.LastLSN() }

// flights is the committer's view of the fsync and the journal write in
// flight.
type flights struct {
	syncing  *pending       // the pending set whose fsync is in flight; nil when none
	syncLast uint64         // the last LSN committed when that fsync began
	syncDone chan syncEnd   // cap 1
	covered  uint64         // the highest LSN a finished fsync of the log covers
	jq       []journalFrame // committed frames not yet handed to the journal
	jflight  []journalFrame // the journal write in flight; nil when none
	jDone    chan journalEnd
	// noRoom, noRoomAt: the journal found no room for jq's head while the log
	// covered this LSN; nothing is written to it again until the log
	// covers more (0: not waiting).
	noRoom   bool
	noRoomAt uint64
}

type syncEnd struct {
	err error
	d   time.Duration
}

type journalEnd struct {
	n   int
	err error
	d   time.Duration
}

// journalFrame is one batch's journaled writes and the items they answer.
type journalFrame struct {
	f     wal.JournalFrame
	items []*item
	lanes []*lane
	// seg is the batch awaiting publication (pubq) when the frame holds
	// every one of its records: marked once the frame is durable, which
	// publishes it (publishDurable). nil otherwise.
	seg *unpublished
}

// flightKind names what a flight does: the log's fsync or a journal write.
type flightKind int

const (
	flightSync flightKind = iota
	flightJournal
)

// flightRunner runs the flights beside the committer. The engine's is
// goroutines; the deterministic simulation runs each at its virtual end
// (simsched_test.go).
type flightRunner interface {
	// start runs f beside the committer; f sends its result on the
	// flight's channel (cap 1: it never blocks).
	start(kind flightKind, f func())
	// settle runs every started flight to its end now: the committer is
	// about to wait for their results (settleFlights).
	settle()
}

// fly runs f beside the committer.
func (e *Engine) fly(kind flightKind, f func()) {
	if e.flights != nil {
		e.flights.start(kind, f)
		return
	}
	go f()
}

func (f *flights) init(covered uint64) {
	f.syncDone = make(chan syncEnd, 1)
	f.jDone = make(chan journalEnd, 1)
	f.covered = covered
}

func (f *flights) idle() bool { return f.syncing == nil && f.jflight == nil }

// pipelined is the committer's env when it pipelines, or nil.
func (e *Engine) pipelined() pipelinedEnv {
	pe, _ := e.env.(pipelinedEnv)
	return pe
}

// journals reports whether an item of lane l is journaled: a writer waits
// for it, its lane is not the drivers' (whose points change no key but
// their driver's position, which unjournaled points change too), and its
// contract wants it durable sooner than the log's next fsync would come
// anyway (the drivers' flush_within): an ack lane that lets its writes
// wait longer (a warehouse configured to share fsyncs over a minute)
// keeps waiting for the log.
//
// Never an item with a durable hook (the driver lane's): the journal's
// goroutine answers journaled items while the committer runs synced(),
// which calls durable hooks unguarded.
func (e *Engine) journals(l *lane, it *item) bool {
	return it.done != nil && l.cfg.Contract != Async && e.pipelined() != nil &&
		l.cfg.FlushWithin < e.lanes[LaneDriver].cfg.FlushWithin
}

// queueJournal takes the journaled items of a committed batch with its
// frame, and starts a journal write when none is in flight.
func (e *Engine) queueJournal(b *wal.Batch, items []*item, lanes []*lane, seg *unpublished) {
	f, ok := b.JournalFrame()
	if !ok {
		return
	}
	jf := journalFrame{f: f}
	if seg != nil && seg.whole {
		jf.seg = seg
	}
	for i, it := range items {
		if it.journaled {
			jf.items = append(jf.items, it)
			jf.lanes = append(jf.lanes, lanes[i])
		}
	}
	e.fl.jq = append(e.fl.jq, jf)
	e.startJournal()
}

// startJournal hands the queued frames to the journal goroutine when no
// write is in flight. Frames the log's fsync already covers are dropped:
// their items were answered with it.
//
// Frames stay in order: one that found no room keeps its place at the head
// of the queue, and no later frame is written before it is (a later frame
// answered first could be a retry of its write, answered "replayed" while
// the original is durable nowhere yet).
func (e *Engine) startJournal() {
	pe := e.pipelined()
	if e.fl.jflight != nil || len(e.fl.jq) == 0 || pe == nil {
		return
	}
	if e.fl.noRoom && e.fl.covered <= e.fl.noRoomAt {
		return // wait for the log to cover more of the journal
	}
	e.fl.noRoom, e.fl.noRoomAt = false, 0
	q := e.fl.jq[:0]
	for _, jf := range e.fl.jq {
		if jf.f.Last > e.fl.covered {
			q = append(q, jf)
		}
	}
	e.fl.jq = nil
	if len(q) == 0 {
		return
	}
	e.fl.jflight = q
	frames := make([]wal.JournalFrame, len(q))
	for i, jf := range q {
		frames[i] = jf.f
	}
	covered := e.fl.covered
	t0 := e.now() // the engine's clock: the simulation's flights take virtual time
	e.fly(flightJournal, func() {
		n, err := pe.journal(frames, covered)
		d := e.now().Sub(t0)
		if err == nil {
			// Answered here, not after the hop back to the committer: under
			// load that hop waited for the batch being committed and for a
			// core (issue 17). Only the frames the journal holds; the rest
			// keep their place (finishJournal). Their batches held whole
			// are durable: published first, if the batches before them
			// are, as the log's fsync publishes before it answers. The
			// lock is never held long: the records were converted when
			// committed (pubq.add), publishing appends them to the tail.
			for _, jf := range q[:n] {
				if jf.seg != nil {
					jf.seg.jdone.Store(true)
				}
			}
			e.pubq.mu.Lock()
			moved := e.publishLocked(0)
			e.pubq.mu.Unlock()
			e.notify(moved)
			e.answerJournaled(q[:n])
		}
		e.fl.jDone <- journalEnd{n, err, d}
	})
}

// finishJournal takes the result of the journal write in flight, whose
// goroutine already answered the items of the frames it made durable. A
// frame it found no room for keeps its place and is answered by the log's
// fsync unless the journal takes it later.
func (e *Engine) finishJournal(r journalEnd) {
	fl := e.fl.jflight
	e.fl.jflight = nil
	if r.err != nil {
		e.failStore(r.err, e.cur, nil, nil)
		return
	}
	e.totals.JournalWrites.Add(1)
	e.totals.JournalTime.Observe(r.d)
	if r.n > 0 {
		e.sched.observeJournal(r.d) // an fdatasync: what the journal's answers cost
	}
	if r.n < len(fl) {
		// Frames that wait for the log's fsync: until the journal answers
		// again, the log's fsync is what a sync write waits for.
		e.sched.journalNoRoom()
	}
	// fl[:r.n] were answered by the journal's goroutine (startJournal),
	// which also published the batches they hold whole when the batches
	// before them were published; those batches may have been since (the
	// log's fsync), so publish what they now allow.
	e.notify(e.publishDurable(e.fl.covered))
	if rest := fl[r.n:]; len(rest) > 0 {
		// No room: they keep their place, ahead of what came since.
		e.totals.JournalNoRoom.Add(uint64(len(rest)))
		e.fl.jq = append(rest[:len(rest):len(rest)], e.fl.jq...)
		e.fl.noRoom, e.fl.noRoomAt = true, e.fl.covered
	}
	e.startJournal()
}

func (e *Engine) answerJournaled(frames []journalFrame) {
	var drain drainTally
	for _, jf := range frames {
		for i, it := range jf.items {
			if e.answer(jf.lanes[i], it, it.res) {
				drain.add(jf.lanes[i], it.units)
			}
		}
	}
	drain.note()
}

// startSync hands p to the fsync goroutine: p's items are answered and its
// records published when the fsync returns (finishSync).
func (e *Engine) startSync(p *pending, pe pipelinedEnv) {
	s := &pending{}
	*s = *p
	*p = pending{}
	e.fl.syncing = s
	e.fl.syncLast = pe.last()
	t0 := e.now()
	e.fly(flightSync, func() {
		err := pe.sync()
		e.fl.syncDone <- syncEnd{err, e.now().Sub(t0)}
	})
}

// finishSync completes the fsync in flight.
func (e *Engine) finishSync(r syncEnd) {
	s := e.fl.syncing
	e.fl.syncing = nil
	if r.err != nil {
		e.cur.takeFront(s)
		e.failStore(r.err, e.cur, nil, nil)
		return
	}
	e.fl.covered = max(e.fl.covered, e.fl.syncLast)
	e.synced(s, r.d, e.fl.covered)
	e.startJournal() // drops what the fsync covered
}

// pubq holds the committed batches not yet published, in LSN order. The
// committer adds each batch it commits; a batch leaves it, published,
// once it and every batch before it are durable: covered by the log's
// fsync, or held whole by a durable journal frame. mu also orders the
// publications: every publish (feed.go) happens under it, by the
// committer or by the journal's goroutine, and is short (the records are
// converted before: add).
type pubq struct {
	mu   sync.Mutex
	segs fifo[*unpublished] // oldest first
	out  []segment          // scratch for publishLocked
}

// unpublished is one committed batch awaiting publication.
type unpublished struct {
	seg   segment // its records, converted for the feed
	last  uint64
	whole bool        // its journal frame holds every one of its records
	jdone atomic.Bool // that frame is durable (set by the journal's goroutine)
}

// add queues a committed batch's records (not empty), converted here, off
// the lock. Committer only.
func (q *pubq) add(recs []wal.Record, whole bool) *unpublished {
	u := &unpublished{seg: newSegment(recs), last: recs[len(recs)-1].LSN, whole: whole}
	q.mu.Lock()
	q.segs.add(u)
	q.mu.Unlock()
	return u
}

// drop forgets every unpublished batch (a store failure: the reopen
// publishes what the reopened store holds past the durable LSN).
func (q *pubq) drop() {
	q.mu.Lock()
	q.segs.reset()
	q.mu.Unlock()
}

// publishDurable publishes the batches at the front of pubq that are
// durable: every one up to covered (the log's fsync covered them; the
// committer ran their drivers' durable hooks first), then those held whole
// by a durable journal frame, stopping at the first batch that waits for
// the log's fsync, so that the feed stays a prefix of the log. It reports
// whether the durable LSN moved. Committer only.
func (e *Engine) publishDurable(covered uint64) bool {
	e.pubq.mu.Lock()
	defer e.pubq.mu.Unlock()
	return e.publishLocked(covered)
}

// publishLocked is publishDurable with pubq.mu held. The journal's
// goroutine calls it with covered 0: batches held whole by the journal
// only, never one whose durable hooks the committer has not run.
func (e *Engine) publishLocked(covered uint64) bool {
	q := &e.pubq
	out := q.out[:0]
	var early uint64
	for !q.segs.empty() {
		u := q.segs.first()
		if u.last > covered {
			if !u.whole || !u.jdone.Load() {
				break
			}
			early++
		}
		out = append(out, u.seg)
		q.segs.drop()
	}
	if len(out) == 0 {
		return false
	}
	e.totals.JournalPublished.Add(early)
	moved := e.publish(out)
	clear(out)
	q.out = out[:0]
	return moved
}

// takeFront puts s's items before p's (a failed fsync's, older).
func (p *pending) takeFront(s *pending) {
	p.items = append(s.items, p.items...)
	p.lanes = append(s.lanes, p.lanes...)
}

// pollFlights takes the results that came back, without waiting.
func (e *Engine) pollFlights() {
	for !e.failed.Load() {
		select {
		case r := <-e.fl.syncDone:
			e.finishSync(r)
		case r := <-e.fl.jDone:
			e.finishJournal(r)
		default:
			return
		}
	}
}

// settleFlights waits for the fsync and the journal write in flight (a
// store failure): what they made durable is answered as usual; the items
// of a failed fsync join p, to be held or refused with it.
func (e *Engine) settleFlights(p *pending) {
	if e.flights != nil {
		e.flights.settle()
	}
	if e.fl.jflight != nil {
		<-e.fl.jDone // what it made durable, it answered (startJournal)
		e.fl.jflight = nil
	}
	e.fl.jq, e.fl.noRoom, e.fl.noRoomAt = nil, false, 0
	if s := e.fl.syncing; s != nil {
		r := <-e.fl.syncDone
		e.fl.syncing = nil
		if r.err == nil {
			e.fl.covered = max(e.fl.covered, e.fl.syncLast)
			e.synced(s, r.d, e.fl.covered)
		} else {
			p.takeFront(s)
		}
	}
}
