package engine

// A deterministic simulation of the committer's schedule (issue 17): the
// real lanes, round robin, scheduler and committer turn (Engine.turn) over
// a real store, but on a virtual clock, with commit and fsync costs taken
// from a model instead of the disk, and every arrival drawn from one seeded
// PRNG. Nothing runs on another goroutine, so a run is a pure function of
// its seed: a failure replays with -simsched.seed N, and the test checks
// that two runs of a seed trace the same batches.
//
// What it asserts, exactly, in every scenario:
//   - a dispatch write (sync, at the scheduler's target) is committed in
//     the batch after the one in flight when it arrived, and its latency is
//     within what that allows: two commits of a capped batch and two
//     fsyncs, at the model's worst costs;
//   - a batch's capped records stay within the derived cap (or are one
//     chunk of one driver, the smallest unit there is);
//   - per driver, points are committed in seq order and durable_seq never
//     goes back;
//   - every point accepted is in the log once the run drains;
//   - drivers backlogged together get an even share (Jain's index >= 0.9);
//   - a phone flushing 10,000 points delays another driver's new points by
//     at most a few batches, not by its backlog;
//   - after failed fsyncs (the engine refuses, holds the accepted driver
//     points, reopens the store and writes them again) every accepted
//     point is still in the log, once and in order;
//   - every keyed write answered is in the log at the LSN it was answered
//     with (also across failed fsyncs, failed journal writes and a journal
//     without room, pipelined).
//
// Every scenario runs twice: with the committer syncing inline (a fake
// env), and pipelined as the server runs it (pipeline.go): the log's fsync
// and the journal's write are flights beside the commits, each ending at
// its virtual time (simFlights), the journal answering the waited-for
// writes; there the dispatch bound counts two journal writes instead of
// two fsyncs, and a slow-log scenario (the log's fsync ten times the
// journal's) checks that the waited-for lanes keep their SLAs and the cap
// is derived from the journal's measure; journal-no-room (the journal full
// for a third of the run: the log's fsync answers meanwhile) and
// journal-failures (two failed journal writes: the store fails, reopens,
// and nothing answered or accepted is lost) run pipelined only.
//
// testing/synctest is not used: select order and same-instant timers make
// it nondeterministic for this; here nothing is concurrent.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"routehound/fleet"
	"routehound/wal"
)

var (
	simSeed = flag.Uint64("simsched.seed", 0, "replay the scheduler simulation with this seed only")
	simLong = flag.Bool("simsched.long", false, "run the scheduler simulation long: 10,000 phones, 60 virtual seconds, 20 seeds")
)

// simRetention is the engine's retention bound in the simulation: none,
// except in the retention scenario (set around its newSim).
var simRetention Retention

// simPipelined makes newSim's committer pipeline as the server's does
// (pipeline.go): the log's fsync and the journal's write run as flights
// beside the commits, each ending at its virtual time (simFlights), and
// the journal answers the waited-for writes. Off: the committer syncs
// inline, as a test's fake env makes it.
var simPipelined bool

// simCost is the model of the store's costs; slow multiplies them (a disk
// slowing down), jitter adds up to that fraction at random.
type simCost struct {
	fixed  time.Duration // a commit's fixed cost
	perRec time.Duration // each record of a commit
	fsync  time.Duration
	jsync  time.Duration // a journal write and its fdatasync (pipelined)
	jitter float64
}

type simClock struct{ t time.Time }

// simEnv is the committer's env over a real store on the virtual clock.
type simEnv struct {
	s  *sim
	db *wal.DB
}

func (f *simEnv) begin() *wal.Batch {
	f.s.batchCap = f.s.e.sched.cap() // what commitBatch read at its start
	f.s.capMax = max(f.s.capMax, f.s.batchCap)
	return f.db.Begin()
}

func (f *simEnv) commit(b *wal.Batch) error {
	s := f.s
	s.onCommit(b)
	n := b.Len()
	if err := b.Commit(); err != nil {
		return err
	}
	s.clk.t = s.clk.t.Add(s.cost(s.model.fixed + time.Duration(n)*s.model.perRec))
	return nil
}

func (f *simEnv) sync() error {
	s := f.s
	s.clk.t = s.clk.t.Add(s.cost(s.model.fsync))
	s.syncs++
	if len(s.failAt) > 0 && s.clk.t.Sub(s.start) >= s.failAt[0] {
		s.failAt = s.failAt[1:]
		s.faults++
		return errors.New("simulated fsync failure")
	}
	return nil
}

// simPipeEnv is simEnv for the pipelined committer: its sync and journal
// run inside flights, which take their virtual time (simFlights); they
// move no clock themselves.
type simPipeEnv struct{ simEnv }

func (f *simPipeEnv) sync() error {
	s := f.s
	s.syncs++
	if len(s.failAt) > 0 && s.e.now().Sub(s.start) >= s.failAt[0] {
		s.failAt = s.failAt[1:]
		s.faults++
		return errors.New("simulated fsync failure")
	}
	return nil // as simEnv: nothing is power-cut here
}

func (f *simPipeEnv) journal(frames []wal.JournalFrame, covered uint64) (int, error) {
	s := f.s
	at := s.e.now().Sub(s.start)
	if len(s.jFailAt) > 0 && at >= s.jFailAt[0] {
		s.jFailAt = s.jFailAt[1:]
		s.faults++
		return 0, errors.New("simulated journal write failure")
	}
	if at >= s.jNoRoom[0] && at < s.jNoRoom[1] {
		s.jNoRooms++
		return 0, nil // no room: the frames wait for the log's fsync
	}
	s.journals++
	return f.db.JournalWrite(frames, covered)
}

func (f *simPipeEnv) last() uint64 { return f.db.LastLSN() }

// simFlight is a flight started at some virtual time, ending at at.
type simFlight struct {
	at  time.Time
	seq int
	f   func()
}

// simFlights runs the committer's flights in virtual time: each ends (runs)
// when the simulation's clock has passed its end, in the order of their
// ends; meanwhile the committer commits on. While one runs the engine's
// clock reads its end, so that what it measures and answers is timed
// there, not at the end of the commit the committer was in.
type simFlights struct {
	s   *sim
	q   []simFlight // by at, then seq
	seq int
}

func (fl *simFlights) start(kind flightKind, f func()) {
	s := fl.s
	d := s.model.fsync
	if kind == flightJournal {
		d = s.model.jsync
	}
	fl.seq++
	sf := simFlight{at: s.clk.t.Add(s.cost(d)), seq: fl.seq, f: f}
	i, _ := slices.BinarySearchFunc(fl.q, sf, func(a, b simFlight) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	fl.q = slices.Insert(fl.q, i, sf)
}

// settle: the committer waits for every flight (a store failure): the
// clock moves to their ends.
func (fl *simFlights) settle() {
	for len(fl.q) > 0 {
		if fl.q[0].at.After(fl.s.clk.t) {
			fl.s.clk.t = fl.q[0].at
		}
		fl.runFirst()
	}
}

// runDue runs the flights that ended by now.
func (fl *simFlights) runDue() {
	for len(fl.q) > 0 && !fl.q[0].at.After(fl.s.clk.t) {
		fl.runFirst()
	}
}

func (fl *simFlights) runFirst() {
	sf := fl.q[0]
	fl.q = fl.q[1:]
	s := fl.s
	s.flightNow = sf.at
	sf.f()
	s.collectAt(sf.at) // what the journal answered, answered at its end
	s.flightNow = time.Time{}
}

// next is when the next flight ends; ok is false when none flies.
func (fl *simFlights) next() (time.Time, bool) {
	if len(fl.q) == 0 {
		return time.Time{}, false
	}
	return fl.q[0].at, true
}

// simEvent is one arrival.
type simEvent struct {
	at     time.Duration // since the start
	lane   Lane
	driver string
	n      int // points
}

// simWait is a keyed write waiting for its answer.
type simWait struct {
	it      *item
	lane    Lane
	table   string
	key     string
	at      time.Time
	arrival int // batches committed when it arrived
	batch   int // the batch that committed it
}

type sim struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	e     *Engine
	clk   *simClock
	start time.Time
	model simCost
	slow  func(at time.Duration) float64

	events []simEvent
	next   int
	retry  []simEvent // refused driver requests, sent again after Retry-After; by time

	batches   int // committed
	syncs     int
	journals  int    // journal writes (pipelined)
	syncsSeen uint64 // the engine's fsyncs when durable_seq was last checked
	// pipelined: the committer's flights (simPipelined); flightNow is the
	// engine's clock while one ends.
	flights   *simFlights
	flightNow time.Time
	batchCap  int // the cap the batch being built was built under
	capMax    int // the largest cap of the run
	trace     []string

	waits    []*simWait
	lat      map[Lane][]time.Duration
	accepted map[string][]uint64 // driver -> seqs accepted, in order
	seq      map[string]uint64   // driver -> last seq sent
	durable  map[string]uint64   // driver -> last durable_seq seen
	refused  int
	// committed counts each driver's points per batch window (fairness).
	committed map[string]int
	// pending is each driver's chunks not yet committed, in seq order.
	pending map[string][]simChunk
	// pointBatches is, per driver, how many batches each of its requests
	// waited from its arrival to its commit (1: the next batch).
	pointBatches map[string][]int
	maxSlow      float64
	onCommitHook func()            // after each batch's checks
	failAt       []time.Duration   // the first fsync at or after each of these times fails
	jFailAt      []time.Duration   // pipelined: the first journal write at or after each of these fails
	jNoRoom      [2]time.Duration  // pipelined: the journal has no room from [0] to [1]
	jNoRooms     int               // journal writes that found no room
	answered     map[uint64]string // keyed writes answered: LSN -> table/key (checkLog finds each)
	faults       int               // fsyncs failed so far
	unavailable  int               // keyed writes answered ErrUnavailable (their writers retry)
	recoveries   int
	retention    bool      // run the committer's chores with a retention bound (maintain)
	nextMaint    time.Time // when they are due
	trimmed      uint64
}

type simChunk struct {
	top   uint64
	batch int
	at    time.Time
}

// cost is d at the model's slowness now, plus jitter.
func (s *sim) cost(d time.Duration) time.Duration {
	f := s.slow(s.clk.t.Sub(s.start))
	if s.model.jitter > 0 {
		f *= 1 + s.model.jitter*s.rng.Float64()
	}
	return time.Duration(float64(d) * f)
}

func newSim(t *testing.T, seed uint64, model simCost, slow func(time.Duration) float64, maxSlow float64) *sim {
	t.Helper()
	dir := t.TempDir()
	db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.RoomWait = 0     // refuse at once: nothing may block the simulation
	cfg.MinFreeBytes = 0 // no disk checks in virtual time
	cfg.Retention = simRetention
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)),
		clk: &simClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, model: model, slow: slow, maxSlow: maxSlow,
		lat: map[Lane][]time.Duration{}, accepted: map[string][]uint64{}, seq: map[string]uint64{},
		durable: map[string]uint64{}, committed: map[string]int{}, pending: map[string][]simChunk{},
		pointBatches: map[string][]int{},
	}
	s.start = s.clk.t
	// After a simulated fsync failure the engine reopens the store as the
	// server does; the reopen itself runs on the engine's recovery
	// goroutine, which the simulation waits for (its outcome does not
	// depend on timing).
	cfg.Open = func() (*wal.DB, error) { return wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20}) }
	pipelined := simPipelined // also for the stores reopened after a failure
	e, err := build(cfg, db, nil, func(db *wal.DB) commitEnv {
		if pipelined {
			return &simPipeEnv{simEnv{s: s, db: db}}
		}
		return &simEnv{s: s, db: db}
	})
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time {
		if !s.flightNow.IsZero() {
			return s.flightNow
		}
		return s.clk.t
	}
	if pipelined {
		s.flights = &simFlights{s: s}
		e.flights = s.flights
	}
	s.e = e
	t.Cleanup(func() { e.db.Load().Close() })
	return s
}

// add draws arrivals: every driver reports one point every `every` with a
// random phase, from `from` to `to`.
func (s *sim) drivers(prefix string, n int, every, from, to time.Duration) {
	for i := 0; i < n; i++ {
		d := prefix + strconv.Itoa(i)
		for at := from + time.Duration(s.rng.Int64N(int64(every))); at < to; at += every {
			s.events = append(s.events, simEvent{at: at, lane: LaneDriver, driver: d, n: 1})
		}
	}
}

// keyed draws writes on a keyed lane at a rate (Poisson arrivals).
func (s *sim) keyed(l Lane, perSecond float64, from, to time.Duration) {
	for at := from; ; {
		at += time.Duration(s.rng.ExpFloat64() / perSecond * float64(time.Second))
		if at >= to {
			return
		}
		s.events = append(s.events, simEvent{at: at, lane: l})
	}
}

// flush is one driver sending n buffered points at once (a phone after a
// tunnel), in requests of per points back to back.
func (s *sim) flush(driver string, n, per int, at time.Duration) {
	for ; n > 0; n -= per {
		s.events = append(s.events, simEvent{at: at, lane: LaneDriver, driver: driver, n: min(n, per)})
	}
}

// nextAt is when the next arrival is due; ok is false when none is left.
func (s *sim) nextAt() (time.Duration, bool) {
	switch {
	case s.next < len(s.events) && (len(s.retry) == 0 || s.events[s.next].at <= s.retry[0].at):
		return s.events[s.next].at, true
	case len(s.retry) > 0:
		return s.retry[0].at, true
	}
	return 0, false
}

// pop takes the next arrival that is due.
func (s *sim) pop(now time.Duration) (simEvent, bool) {
	at, ok := s.nextAt()
	if !ok || at > now {
		return simEvent{}, false
	}
	if s.next < len(s.events) && s.events[s.next].at == at {
		s.next++
		return s.events[s.next-1], true
	}
	ev := s.retry[0]
	s.retry = s.retry[1:]
	return ev, true
}

// deliver hands the committer every arrival that is due. A refused driver
// request is sent again after the Retry-After it was given, as a phone
// does; nothing else is ever refused.
func (s *sim) deliver() {
	now := s.clk.t.Sub(s.start)
	for {
		ev, ok := s.pop(now)
		if !ok {
			return
		}
		switch ev.lane {
		case LaneDriver:
			pts := make([]Point, ev.n)
			for i := range pts {
				s.seq[ev.driver]++
				q := s.seq[ev.driver]
				pts[i] = Point{Seq: q, Value: []byte(`{"seq":` + strconv.FormatUint(q, 10) + `}`)}
			}
			ack, err := s.e.SubmitPoints(context.Background(), ev.driver, pts)
			if err != nil {
				s.refused++
				s.seq[ev.driver] -= uint64(ev.n) // the phone sends them again later
				wait := max(s.e.RetryAfter(LaneDriver), 10*time.Millisecond)
				ev.at = now + wait
				i, _ := slices.BinarySearchFunc(s.retry, ev.at, func(a simEvent, t time.Duration) int {
					if a.at <= t {
						return -1
					}
					return 1
				})
				s.retry = slices.Insert(s.retry, i, ev)
				continue
			}
			if ack.Accepted != ev.n {
				s.t.Fatalf("seed %d: %s: %d of %d fresh points accepted", s.seed, ev.driver, ack.Accepted, ev.n)
			}
			for _, p := range pts {
				s.accepted[ev.driver] = append(s.accepted[ev.driver], p.Seq)
			}
			s.pending[ev.driver] = append(s.pending[ev.driver], simChunk{top: pts[len(pts)-1].Seq, batch: s.batches, at: s.clk.t})
		default:
			table := fleet.TableAssignments
			if ev.lane == LaneWarehouse {
				table = "loading_events"
			}
			key := fmt.Sprintf("k%d", s.rng.IntN(1000))
			it := s.e.keyedItem(ev.lane, Write{Table: table, Key: key, Value: []byte(`{"v":1}`), IfVersion: wal.AnyVersion})
			if err := s.e.enqueue(s.e.lanes[ev.lane], it); err != nil {
				if errors.Is(err, ErrUnavailable) && s.faults > 0 {
					s.unavailable++
					continue
				}
				s.t.Fatalf("seed %d: a %s write was refused: %v", s.seed, ev.lane, err)
			}
			s.waits = append(s.waits, &simWait{it: it, lane: ev.lane, table: table, key: key, at: s.clk.t, arrival: s.batches})
		}
	}
}

// onCommit checks a batch before it is committed: the cap, per-driver
// order; and notes which waiting writes it holds.
func (s *sim) onCommit(b *wal.Batch) {
	s.batches++
	capped, drivers := 0, map[string]int{}
	var lastSeq = map[string]uint64{}
	for _, r := range b.Records() {
		if r.Actor != LaneDispatch.String() {
			capped++
		}
		if r.Table != fleet.TablePositions {
			continue
		}
		drivers[r.Key]++
		s.committed[r.Key]++
		if cs := s.pending[r.Key]; len(cs) > 0 && cs[0].top == s.seqOf(r) {
			s.pointBatches[r.Key] = append(s.pointBatches[r.Key], s.batches-cs[0].batch)
			s.pending[r.Key] = cs[1:]
		}
		q := s.seqOf(r)
		if q <= lastSeq[r.Key] {
			s.t.Fatalf("seed %d: batch %d: driver %s seq %d after %d", s.seed, s.batches, r.Key, q, lastSeq[r.Key])
		}
		lastSeq[r.Key] = q
	}
	if capped > s.batchCap && !(len(drivers) == 1 && capped <= chunkPoints && capped == b.Len()-s.dispatchIn(b)) {
		s.t.Fatalf("seed %d: batch %d holds %d capped records, cap %d (%d drivers)", s.seed, s.batches, capped, s.batchCap, len(drivers))
	}
	for _, w := range s.waits {
		if w.batch == 0 && !w.it.taken.IsZero() {
			w.batch = s.batches
		}
	}
	s.trace = append(s.trace, fmt.Sprintf("%d:%d:%d", s.clk.t.Sub(s.start).Microseconds(), b.Len(), s.batchCap))
	if s.onCommitHook != nil {
		s.onCommitHook()
	}
}

func (s *sim) seqOf(r wal.Record) uint64 {
	q, _ := strconv.ParseUint(string(r.Value[len(`{"seq":`):len(r.Value)-1]), 10, 64)
	return q
}

func (s *sim) dispatchIn(b *wal.Batch) int {
	n := 0
	for _, r := range b.Records() {
		if r.Actor == LaneDispatch.String() {
			n++
		}
	}
	return n
}

// collect takes the answers given and checks durable_seq.
func (s *sim) collect() { s.collectAt(s.clk.t) }

// collectAt takes the answers given, answered at the time at.
func (s *sim) collectAt(at time.Time) {
	kept := s.waits[:0]
	for _, w := range s.waits {
		select {
		case r := <-w.it.done:
			if errors.Is(r.err, ErrUnavailable) && s.faults > 0 {
				s.unavailable++ // its fsync failed: the writer retries
				continue
			}
			if r.err != nil {
				s.t.Fatalf("seed %d: a %s write failed: %v", s.seed, w.lane, r.err)
			}
			s.lat[w.lane] = append(s.lat[w.lane], at.Sub(w.at))
			if s.answered == nil {
				s.answered = map[uint64]string{}
			}
			s.answered[r.write.LSN] = w.table + "/" + w.key
			if w.lane == LaneDispatch && w.batch > w.arrival+1 {
				s.t.Fatalf("seed %d: a dispatch write that arrived after batch %d was committed in batch %d", s.seed, w.arrival, w.batch)
			}
		default:
			kept = append(kept, w)
		}
	}
	clear(s.waits[len(kept):])
	s.waits = kept
	if n := s.e.totals.Fsyncs.Load(); n == s.syncsSeen {
		return
	} else {
		s.syncsSeen = n
	}
	for d := range s.accepted {
		q, err := s.e.DriverDurableSeq(d)
		if err != nil {
			s.t.Fatal(err)
		}
		if q < s.durable[d] {
			s.t.Fatalf("seed %d: driver %s durable_seq went back from %d to %d", s.seed, d, s.durable[d], q)
		}
		s.durable[d] = q
	}
}

// run plays the events, then drains.
func (s *sim) run() {
	slices.SortStableFunc(s.events, func(a, b simEvent) int { return cmp.Compare(a.at, b.at) })
	var p pending
	if s.flights != nil {
		s.e.cur = &p // the pipelined committer's own pending set (Engine.sync)
	}
	for turns := 0; ; turns++ {
		if turns > 50_000_000 {
			s.t.Fatalf("seed %d: no end after %d turns", s.seed, turns)
		}
		if s.e.failed.Load() {
			// The committer's failed state (run): refuse or hold what is
			// queued, then take the reopened store.
			s.e.refuseAll()
			s.collect()
			if !s.e.rec.running {
				s.t.Fatalf("seed %d: the store failed with no recovery running", s.seed)
			}
			db := <-s.e.rec.done
			s.e.rec.running = false
			if db == nil {
				s.t.Fatalf("seed %d: the store could not be reopened", s.seed)
			}
			s.e.resume(db)
			s.recoveries++
			if (s.flights != nil) != (s.e.pipelined() != nil) {
				s.t.Fatalf("seed %d: the reopened store's committer pipelines: %v, want %v", s.seed, s.e.pipelined() != nil, s.flights != nil)
			}
			continue
		}
		if s.flights != nil {
			// As the run loop: what came back before the next batch.
			s.flights.runDue()
			s.e.pollFlights()
			if s.e.failed.Load() {
				continue
			}
		}
		s.deliver()
		_, more := s.nextAt()
		done := !more
		waiting := s.e.turn(&p, done)
		if s.retention {
			// The committer's chores, retention steps at the model's cost
			// (a delete costs what a record of a commit does).
			before := s.e.totals.Trimmed.Load()
			s.nextMaint = s.e.maybeMaintain(&p, s.nextMaint)
			if n := s.e.totals.Trimmed.Load() - before; n > 0 {
				s.clk.t = s.clk.t.Add(s.cost(s.model.fixed + time.Duration(n)*s.model.perRec))
				s.trimmed += n
			}
		}
		s.collect()
		if waiting {
			continue
		}
		flying := s.flights != nil && (!s.e.fl.idle() || len(s.flights.q) > 0)
		if done && p.empty() && !flying {
			break
		}
		// Idle: on to the next arrival, the pending fsync's deadline (none
		// while an fsync flies: its end wakes the committer) or the next
		// flight's end.
		var at time.Time
		if next, ok := s.nextAt(); ok {
			at = s.start.Add(next)
		}
		if !p.empty() && s.e.fl.syncing == nil && (at.IsZero() || p.due.Before(at)) {
			at = p.due
		}
		if s.flights != nil {
			if end, ok := s.flights.next(); ok && (at.IsZero() || end.Before(at)) {
				at = end
			}
		}
		if at.After(s.clk.t) {
			s.clk.t = at
		}
	}
	if len(s.waits) > 0 {
		s.t.Fatalf("seed %d: %d writes never answered", s.seed, len(s.waits))
	}
}

// checkLog reads the whole log back: every accepted point is there, once,
// in seq order per driver.
func (s *sim) checkLog() {
	if s.retention {
		s.checkRetainedLog()
		return
	}
	got := map[string][]uint64{}
	keyed := 0
	err := s.e.ReadLog(0, 0, func(r Record) error {
		if r.Table == fleet.TablePositions {
			got[r.Key] = append(got[r.Key], s.seqOf(wal.Record{Value: r.Value}))
		}
		if want, ok := s.answered[r.LSN]; ok {
			if want != r.Table+"/"+r.Key {
				s.t.Fatalf("seed %d: lsn %d holds %s/%s, the write answered there was %s", s.seed, r.LSN, r.Table, r.Key, want)
			}
			keyed++
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	if keyed != len(s.answered) {
		s.t.Fatalf("seed %d: %d keyed writes answered, %d of them in the log at their LSN", s.seed, len(s.answered), keyed)
	}
	for d, want := range s.accepted {
		if !slices.Equal(got[d], want) {
			s.t.Fatalf("seed %d: driver %s: the log holds %d points, %d accepted (first difference near %v)", s.seed, d, len(got[d]), len(want), firstDiff(got[d], want))
		}
	}
}

// checkRetainedLog checks what retention left: per driver, the points
// kept are a suffix of those accepted (the newest, in order, none twice).
func (s *sim) checkRetainedLog() {
	got := map[string][]uint64{}
	first := s.e.store().FirstLSN()
	err := s.e.ReadLog(first-1, 0, func(r Record) error {
		if r.Table == fleet.TablePositions {
			got[r.Key] = append(got[r.Key], s.seqOf(wal.Record{Value: r.Value}))
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	for d, have := range got {
		want := s.accepted[d]
		if len(have) > len(want) || !slices.Equal(have, want[len(want)-len(have):]) {
			s.t.Fatalf("seed %d: driver %s: the retained log holds %d points that are not the newest %d accepted", s.seed, d, len(have), len(have))
		}
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// dispatchBound is the longest a dispatch write may take by the schedule's
// rule (sched.go): the batch in flight at its arrival and its fsync, then
// its own batch and fsync, each batch within the largest cap derived in
// the run (or one driver chunk, the unit a batch cannot split) plus the
// sync writes, at the slowest costs.
func (s *sim) dispatchBound() time.Duration {
	f := s.maxSlow * (1 + s.model.jitter)
	c := time.Duration(max(s.capMax, chunkPoints) + 16)
	sync := s.model.fsync
	if s.flights != nil && s.jNoRoom[1] == 0 {
		sync = s.model.jsync // answered by the journal (pipeline.go); else, without room, by the log
	}
	return time.Duration(f * float64(2*(s.model.fixed+c*s.model.perRec)+2*sync))
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := slices.Clone(ds)
	slices.Sort(c)
	return c[min(len(c)-1, int(q*float64(len(c))))]
}

func (s *sim) hash() uint64 {
	h := fnv.New64a()
	for _, t := range s.trace {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// simScenario builds one scenario's arrivals on a sim.
type simScenario struct {
	name  string
	slow  func(at time.Duration) float64
	max   float64 // the largest slow factor
	setup func(s *sim, phones int, dur time.Duration)
	check func(t *testing.T, s *sim)
	// model changes the costs' model; pipelinedOnly: the scenario is
	// about the journal (the inline committer cannot meet it).
	model         func(simCost) simCost
	pipelinedOnly bool
}

func steady(float64) func(time.Duration) float64 { return func(time.Duration) float64 { return 1 } }

func TestSimulatedSchedule(t *testing.T) {
	model := simCost{fixed: 80 * time.Microsecond, perRec: 3 * time.Microsecond, fsync: time.Millisecond, jsync: 500 * time.Microsecond, jitter: 0.3}
	phones, dur, seeds := 1000, 6*time.Second, []uint64{1, 2, 3}
	if *simLong {
		phones, dur = 10000, 60*time.Second
		seeds = nil
		for i := uint64(1); i <= 20; i++ {
			seeds = append(seeds, i)
		}
	}
	if *simSeed != 0 {
		seeds = []uint64{*simSeed}
	}
	base := func(s *sim, phones int, dur time.Duration) {
		s.drivers("p", phones, 5*time.Second, 0, dur)
		s.keyed(LaneDispatch, 10, 0, dur)
		s.keyed(LaneWarehouse, 3, 0, dur)
		s.keyed(LaneTables, 2, 0, dur)
	}
	scenarios := []simScenario{
		{name: "steady", slow: steady(1), max: 1, setup: base},
		{name: "driver-spike", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			base(s, phones, dur)
			// 10x: nine more reports per phone per 5 s in the middle third.
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
		}},
		{name: "warehouse-burst", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			base(s, phones, dur)
			s.keyed(LaneWarehouse, 300, dur/3, 2*dur/3)
		}},
		{name: "slow-disk", max: 3, slow: func(at time.Duration) float64 {
			if at > 2*time.Second {
				return 3
			}
			return 1
		}, setup: base},
		{name: "slow-log", slow: steady(1), max: 1, pipelinedOnly: true, setup: func(s *sim, phones int, dur time.Duration) {
			// The log's fsync ten times the journal's, in a driver spike
			// (a big memtable to flush, a log on a slower device): the
			// waited-for lanes keep their SLAs on the journal, and the
			// batch cap is derived from the journal's measure, not the
			// log's (which alone takes the target: infeasible).
			base(s, phones, dur)
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
		}, model: func(m simCost) simCost { m.fsync = 10 * m.jsync; return m }, check: func(t *testing.T, s *sim) {
			st := s.e.Sched()
			if st.SyncFrom != "journal" || st.Infeasible || st.LogSync < 2*time.Millisecond {
				t.Fatalf("seed %d: the schedule at the end: %+v, want the cap from the journal's measure, feasible, beside a slow log", s.seed, st)
			}
		}},
		{name: "journal-no-room", slow: steady(1), max: 1, pipelinedOnly: true, setup: func(s *sim, phones int, dur time.Duration) {
			// The journal full for the middle third, in a driver spike: the
			// waited-for writes are answered by the log's fsync meanwhile,
			// in order, and by the journal again after.
			base(s, phones, dur)
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
			s.jNoRoom = [2]time.Duration{dur / 3, 2 * dur / 3}
		}, check: func(t *testing.T, s *sim) {
			if s.jNoRooms == 0 || s.journals == 0 {
				t.Fatalf("seed %d: %d journal writes found no room, %d wrote: want both", s.seed, s.jNoRooms, s.journals)
			}
			if n := s.e.totals.JournalNoRoom.Load(); n == 0 {
				t.Fatalf("seed %d: the engine counted no frame without room", s.seed)
			}
			if st := s.e.Sched(); st.SyncFrom != "journal" {
				t.Fatalf("seed %d: after the journal had room again: %+v, want the cap from its measure", s.seed, st)
			}
		}},
		{name: "journal-failures", slow: steady(1), max: 1, pipelinedOnly: true, setup: func(s *sim, phones int, dur time.Duration) {
			// Journal writes fail twice in a spike with a phone flushing:
			// the engine fails the store as for an fsync, holds the accepted
			// driver points, reopens and writes them again.
			base(s, phones, dur)
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
			s.flush("stuck", 10000, 500, dur/3)
			s.jFailAt = []time.Duration{dur/3 + 10*time.Millisecond, dur / 2}
		}, check: func(t *testing.T, s *sim) {
			if s.faults != 2 || s.recoveries != 2 || s.e.totals.StoreFailures.Load() != 2 {
				t.Fatalf("seed %d: %d journal writes failed, %d recoveries, %d store failures; want 2, 2, 2", s.seed, s.faults, s.recoveries, s.e.totals.StoreFailures.Load())
			}
		}},
		{name: "fsync-failures", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			// In a driver spike with a phone flushing: the driver lane holds
			// accepted points, not yet written, when the fsyncs fail.
			base(s, phones, dur)
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
			s.flush("stuck", 10000, 500, dur/3)
			s.failAt = []time.Duration{dur/3 + 10*time.Millisecond, dur / 2}
		}, check: func(t *testing.T, s *sim) {
			// checkLog already proved every accepted point is in the log,
			// the held ones written again after the reopen.
			if held := s.e.totals.StoreFailures.Load(); held != 2 {
				t.Fatalf("seed %d: %d store failures counted, want 2", s.seed, held)
			}
			if s.faults != 2 || s.recoveries != 2 {
				t.Fatalf("seed %d: %d fsyncs failed, %d recoveries; want 2 and 2", s.seed, s.faults, s.recoveries)
			}
		}},
		{name: "retention", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			// The log at its bound from the first seconds, through a
			// 10x spike: the committer trims as it commits.
			s.retention = true
			base(s, phones, dur)
			s.drivers("p", phones, 5*time.Second/9, dur/3, 2*dur/3)
		}, check: func(t *testing.T, s *sim) {
			if s.trimmed == 0 {
				t.Fatalf("seed %d: retention trimmed nothing", s.seed)
			}
		}},
		{name: "stuck-phone", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			base(s, phones, dur)
			s.flush("stuck", 10000, 500, dur/3)
		}, check: func(t *testing.T, s *sim) {
			// Every other driver's points arriving during the flush are
			// durable within a few batches, not behind the 10,000.
			worst := 0
			for d, bs := range s.pointBatches {
				if d == "stuck" {
					continue
				}
				for _, b := range bs {
					worst = max(worst, b)
				}
			}
			if worst > 4 {
				t.Fatalf("seed %d: a driver's new point waited %d batches behind a flushing phone", s.seed, worst)
			}
		}},
		{name: "backlogged-drivers", slow: steady(1), max: 1, setup: func(s *sim, phones int, dur time.Duration) {
			base(s, phones, dur)
			for i := 0; i < flushers; i++ {
				s.flush("b"+strconv.Itoa(i), 1000, 100, dur/3)
			}
		}, check: func(t *testing.T, s *sim) {
			// fairness is measured while all twenty are backlogged: see run
		}},
	}
	// Each scenario twice: the committer syncing inline (a fake env), and
	// pipelined as the server runs it (the log's fsync beside the commits,
	// the journal answering the waited-for writes).
	type modedScenario struct {
		simScenario
		pipelined bool
	}
	var runs []modedScenario
	for _, pipelined := range []bool{false, true} {
		for _, sc := range scenarios {
			if sc.pipelinedOnly && !pipelined {
				continue
			}
			runs = append(runs, modedScenario{sc, pipelined})
		}
	}
	for _, sc := range runs {
		name := "inline/" + sc.name
		if sc.pipelined {
			name = "pipelined/" + sc.name
		}
		t.Run(name, func(t *testing.T) {
			for _, seed := range seeds {
				var hashes []uint64
				for rep := 0; rep < 2; rep++ {
					if rep == 1 && *simLong {
						break // determinism is checked on the short runs
					}
					simRetention = Retention{}
					if sc.name == "retention" {
						simRetention = Retention{MaxBytes: 32 << 10}
					}
					simPipelined = sc.pipelined
					m := model
					if sc.model != nil {
						m = sc.model(m)
					}
					s := newSim(t, seed, m, sc.slow, sc.max)
					simRetention, simPipelined = Retention{}, false
					sc.setup(s, phones, dur)
					var fair []float64
					if sc.name == "backlogged-drivers" {
						s.fairness(&fair, dur/3)
					}
					s.run()
					s.checkLog()
					if bound := s.dispatchBound(); pct(s.lat[LaneDispatch], 1) > bound {
						t.Fatalf("seed %d: dispatch max %v past the schedule's bound %v", seed, pct(s.lat[LaneDispatch], 1), bound)
					}
					if sc.name == "backlogged-drivers" && len(fair) == 0 {
						t.Fatalf("seed %d: five of the flushing drivers were never backlogged together", seed)
					}
					if sc.max == 1 {
						// Costs the target can be met at: every keyed lane
						// within its SLA at p99, in virtual time.
						for _, l := range []Lane{LaneDispatch, LaneWarehouse, LaneTables} {
							if p99, sla := pct(s.lat[l], 0.99), s.e.cfg.Lanes[l].SLA; p99 > sla {
								t.Fatalf("seed %d: %s p99 %v past its SLA %v", seed, l, p99, sla)
							}
						}
					}
					if len(fair) > 0 {
						j := jain(fair)
						if j < 0.9 {
							t.Fatalf("seed %d: Jain's index %.3f over the backlogged drivers (%v)", seed, j, fair)
						}
						if rep == 0 {
							t.Logf("seed %d: Jain's index %.3f over %d backlogged drivers", seed, j, len(fair))
						}
					}
					if sc.check != nil {
						sc.check(t, s)
					}
					hashes = append(hashes, s.hash())
					if rep == 0 {
						t.Logf("seed %d: %d batches, %d fsyncs, %d journal writes (%d failed, %d recoveries, %d keyed writes answered unavailable), %d refused; dispatch p50 %v p99 %v max %v (bound %v); warehouse p99 %v; tables p99 %v",
							seed, s.batches, s.syncs, s.journals, s.faults, s.recoveries, s.unavailable, s.refused, pct(s.lat[LaneDispatch], 0.5), pct(s.lat[LaneDispatch], 0.99), pct(s.lat[LaneDispatch], 1), s.dispatchBound(),
							pct(s.lat[LaneWarehouse], 0.99), pct(s.lat[LaneTables], 0.99))
					}
				}
				if len(hashes) == 2 && hashes[0] != hashes[1] {
					t.Fatalf("seed %d: two runs traced different batches: the simulation is not deterministic", seed)
				}
			}
		})
	}
}

// flushers is how many drivers flush 1,000 points each at once in the
// backlogged-drivers scenario.
const flushers = 10

// fairness samples the points committed per flushing driver over a window
// in which a set of them is backlogged together in the lane: from the first
// commit at which at least five of b0..b9 have points admitted and not
// yet committed, to the first commit at which one of those five or more
// has none left waiting. The lane admits requests first come while it has
// room (an accepted point is never dropped to make room), so which
// drivers are in it is admission's doing; how they share the committer
// once in is the round robin's, and that is what this measures.
func (s *sim) fairness(out *[]float64, from time.Duration) {
	base := map[string]int{}
	var set []string
	over := false
	s.onCommitHook = func() {
		if over || s.clk.t.Sub(s.start) < from {
			return
		}
		if set == nil {
			var in []string
			for i := 0; i < flushers; i++ {
				if d := "b" + strconv.Itoa(i); len(s.pending[d]) > 0 {
					in = append(in, d)
				}
			}
			if len(in) >= 5 {
				set = in
				for _, d := range set {
					base[d] = s.committed[d]
				}
			}
			return
		}
		for _, d := range set {
			if len(s.pending[d]) == 0 {
				over = true
			}
		}
		if over {
			for _, d := range set {
				*out = append(*out, float64(s.committed[d]-base[d]))
			}
		}
	}
}
