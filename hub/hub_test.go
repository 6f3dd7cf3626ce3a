package hub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit"
	"routehound/internal/testkit/wait"
	"routehound/wal"
)

func newHub(t *testing.T, cfg Config) (*Hub, *engine.Engine) {
	t.Helper()
	h, e, _ := newHubStore(t, cfg)
	return h, e
}

// newHubStore is newHub with the engine's store, for a test that trims it.
func newHubStore(t *testing.T, cfg Config) (*Hub, *engine.Engine, *wal.DB) {
	t.Helper()
	e, db := testkit.Engine(t, nil)
	h := New(e, cfg, nil)
	t.Cleanup(h.Close) // before the engine's cleanup: cleanups run last first
	return h, e, db
}

// recorder is a Sink that keeps what it was sent.
type recorder struct {
	mu       sync.Mutex
	snapLSN  uint64
	snapshot map[string]string // key → value of the last snapshot
	changes  []Row             // changes after the snapshot, in order (value nil = delete)
	resyncs  int
	last     uint64
	block    chan struct{} // when set, Change blocks until it is closed (a stalled consumer)
	delay    time.Duration // when set, each Change takes this long (a slow consumer)
}

func (r *recorder) Snapshot(lsn uint64, rows []Row, first, last, resync bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if first {
		r.snapshot = map[string]string{}
		r.changes = nil
		if resync {
			r.resyncs++
		}
	}
	for _, row := range rows {
		r.snapshot[row.Key] = string(row.Value)
	}
	r.snapLSN = lsn
	r.last = lsn
	return nil
}

func (r *recorder) Change(ev *Event) error {
	if r.block != nil {
		<-r.block
	}
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, Row{Key: ev.Key, Value: ev.Value, Version: ev.Version, LSN: ev.LSN})
	r.last = ev.LSN
	return nil
}

func (r *recorder) Flush() error     { return nil }
func (r *recorder) Heartbeat() error { return nil }

func (r *recorder) lastLSN() uint64 { r.mu.Lock(); defer r.mu.Unlock(); return r.last }

// stream subscribes and runs a stream in the background until the test ends.
func stream(t *testing.T, h *Hub, table string, from *uint64, rec *recorder) (stop func() error) {
	t.Helper()
	sub, err := h.Subscribe(table)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		defer sub.Close()
		done <- h.Stream(ctx, sub, from, rec)
	}()
	var once sync.Once
	var res error
	stop = func() error {
		once.Do(func() { cancel(); res = <-done })
		return res
	}
	t.Cleanup(func() { stop() })
	return stop
}

// tableLog is the committed log of one table, read back from the wal.
func tableLog(t *testing.T, e *engine.Engine, table string, after uint64) []engine.Record {
	t.Helper()
	var out []engine.Record
	if err := e.ReadLog(after, 0, func(r engine.Record) error {
		if r.Table == table {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.Eventually(t, 10*time.Second, what, cond)
}

func put(e *engine.Engine, table, key, value string) (engine.WriteResult, error) {
	return e.PutKey(context.Background(), engine.Write{Table: table, Key: key, Value: []byte(value), IfVersion: engine.AnyVersion})
}

// Several writers and subscribers on several tables: every subscriber's
// sequence is exactly the committed log of its table after its start
// point, in order, without gap or duplicate, and snapshot + changes give
// the table's final state.
func TestSubscribersSeeExactlyTheCommittedLog(t *testing.T) {
	h, e := newHub(t, Config{})
	tables := []string{"a", "b", "c"}
	type subscriber struct {
		table string
		from  *uint64
		rec   *recorder
	}
	var subs []subscriber
	startSubs := func(withFrom bool) {
		for _, tb := range tables {
			rec := &recorder{}
			var from *uint64
			if withFrom {
				n := e.DurableLSN()
				from = &n
			}
			stream(t, h, tb, from, rec)
			subs = append(subs, subscriber{tb, from, rec})
		}
	}
	startSubs(false) // before any write: empty snapshots
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < 150; i++ {
				tb := tables[rng.IntN(len(tables))]
				key := fmt.Sprintf("k%d", rng.IntN(20))
				if rng.IntN(5) == 0 {
					e.PutKey(context.Background(), engine.Write{Table: tb, Key: key, Delete: true, IfVersion: engine.AnyVersion})
				} else if _, err := put(e, tb, key, fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)); err != nil {
					t.Error(err)
				}
				if w == 0 && i == 50 {
					startSubs(false) // mid-stream snapshots
				}
				if w == 0 && i == 100 {
					startSubs(true) // mid-stream resumes from the durable LSN
				}
			}
		}()
	}
	wg.Wait()
	if err := e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	final := e.DurableLSN()
	for _, s := range subs {
		want := tableLog(t, e, s.table, 0)
		lastOfTable := uint64(0)
		if len(want) > 0 {
			lastOfTable = want[len(want)-1].LSN
		}
		waitUntil(t, "subscriber to catch up", func() bool { return s.rec.lastLSN() >= lastOfTable })
		s.rec.mu.Lock()
		start := s.rec.snapLSN
		if s.from != nil {
			start = *s.from
		}
		var exp []engine.Record
		for _, r := range want {
			if r.LSN > start {
				exp = append(exp, r)
			}
		}
		if len(s.rec.changes) != len(exp) {
			t.Fatalf("table %s from %d: %d changes, the log has %d", s.table, start, len(s.rec.changes), len(exp))
		}
		state := map[string]string{}
		for k, v := range s.rec.snapshot {
			state[k] = v
		}
		for i, c := range s.rec.changes {
			if c.LSN != exp[i].LSN || c.Key != exp[i].Key || string(c.Value) != string(exp[i].Value) {
				t.Fatalf("table %s change %d: got lsn %d %s=%s, log has lsn %d %s=%s", s.table, i, c.LSN, c.Key, c.Value, exp[i].LSN, exp[i].Key, exp[i].Value)
			}
			if c.Value == nil {
				delete(state, c.Key)
			} else {
				state[c.Key] = string(c.Value)
			}
		}
		s.rec.mu.Unlock()
		if s.from == nil {
			snap, _ := e.Snapshot()
			truth := map[string]string{}
			snap.Scan(s.table, "", 0, func(k string, st engine.State) error { truth[k] = string(st.Value); return nil })
			snap.Close()
			if fmt.Sprint(truth) != fmt.Sprint(state) {
				t.Fatalf("table %s: snapshot + changes = %v, the table holds %v", s.table, state, truth)
			}
		}
	}
	t.Logf("%d subscribers checked against a log of %d records", len(subs), final)
}

// Disconnect mid-stream, write more, resume from the last LSN: exactly the
// missed changes.
func TestResumeDeliversExactlyTheMissedChanges(t *testing.T) {
	h, e := newHub(t, Config{})
	rec := &recorder{}
	stop := stream(t, h, "t", nil, rec)
	for i := 0; i < 10; i++ {
		put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
	}
	waitUntil(t, "10 changes", func() bool { return rec.lastLSN() == 10 })
	stop()
	last := rec.lastLSN()
	var lastT uint64 // the LSN of the last write to t
	for i := 10; i < 25; i++ {
		r, err := put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		lastT = r.LSN
		put(e, "other", "x", fmt.Sprint(i)) // another table's records are not delivered
	}
	rec2 := &recorder{}
	stream(t, h, "t", &last, rec2)
	// Wait for the last write's own LSN: a write answered once its journal
	// frame is durable can be ahead of the log's durable LSN, and the
	// feed moves with the log.
	waitUntil(t, "resume to catch up", func() bool { return rec2.lastLSN() >= lastT })
	rec2.mu.Lock()
	defer rec2.mu.Unlock()
	if len(rec2.changes) != 15 || rec2.snapshot != nil {
		t.Fatalf("resume got %d changes (snapshot %v), want exactly the 15 missed", len(rec2.changes), rec2.snapshot)
	}
	for i, c := range rec2.changes {
		if c.Key != fmt.Sprint("k", i+10) {
			t.Fatalf("change %d is %s", i, c.Key)
		}
	}
}

// Resuming from an LSN the log no longer holds gets a resync snapshot.
func TestResumePastRetentionResyncs(t *testing.T) {
	h, e, db := newHubStore(t, Config{})
	for i := 0; i < 5; i++ {
		put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
	}
	if _, _, err := db.Trim(wal.Retention{MaxBytes: 1}, 100); err != nil {
		t.Fatal(err)
	}
	from := uint64(1)
	rec := &recorder{}
	stream(t, h, "t", &from, rec)
	waitUntil(t, "resync", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.resyncs == 1 && len(rec.snapshot) == 5 })
	put(e, "t", "k9", "9")
	waitUntil(t, "change after resync", func() bool { return rec.lastLSN() == 6 })
}

// A subscriber that never reads does not delay the others; it ends resynced
// or closed with a reason, and its memory stays bounded by its buffer.
func TestSlowConsumerIsIsolatedAndClosed(t *testing.T) {
	h, e := newHub(t, Config{Buffer: 16, MaxResyncs: 1, ResyncWindow: time.Hour})
	slow := &recorder{block: make(chan struct{})}
	stopSlow := stream(t, h, "t", nil, slow)
	fast := &recorder{}
	stream(t, h, "t", nil, fast)
	// Both start from an empty snapshot: every write below is a change.
	waitUntil(t, "snapshots", func() bool {
		fast.mu.Lock()
		defer fast.mu.Unlock()
		slow.mu.Lock()
		defer slow.mu.Unlock()
		return fast.snapshot != nil && slow.snapshot != nil
	})
	var lat []time.Duration
	for i := 0; i < 200; i++ {
		r, err := put(e, "t", fmt.Sprint("k", i%10), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		waitUntil(t, "fast subscriber", func() bool { return fast.lastLSN() >= r.LSN })
		lat = append(lat, time.Since(t0))
	}
	if d := h.Stats().Dropped.Load(); d == 0 {
		t.Fatal("the slow subscriber's buffer never overflowed")
	}
	close(slow.block) // let it go: it must now resync
	for i := 0; i < 100; i++ {
		r, _ := put(e, "t", "x", fmt.Sprint(i))
		waitUntil(t, "fast subscriber", func() bool { return fast.lastLSN() >= r.LSN })
	}
	waitUntil(t, "the stalled subscriber to resync", func() bool { return h.Stats().Resyncs.Load() > 0 })
	stopSlow()
	fast.mu.Lock()
	n := len(fast.changes)
	fast.mu.Unlock()
	if n != 300 {
		t.Fatalf("the fast subscriber got %d changes, want 300", n)
	}
	t.Logf("fast subscriber commit→receipt max %v over 200 writes beside a stalled one", maxDur(lat))
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// A subscriber that keeps falling behind is closed with a reason after
// MaxResyncs resyncs.
func TestPersistentlySlowConsumerIsClosed(t *testing.T) {
	h, e := newHub(t, Config{Buffer: 4, MaxResyncs: 2, ResyncWindow: time.Hour})
	slow := &recorder{delay: 20 * time.Millisecond}
	sub, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := h.Stream(context.Background(), sub, nil, slow)
		sub.Close()
		done <- err
	}()
	var res error
	for i := 0; res == nil && i < 2000; i++ {
		put(e, "t", "k", fmt.Sprint(i))
		select {
		case res = <-done:
		default:
		}
	}
	if res == nil {
		select {
		case res = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a consumer slower than the writes was never closed")
		}
	}
	var ce *ClosedError
	if !errors.As(res, &ce) || ce.Reason != "slow_consumer" {
		t.Fatalf("stream ended with %v, want closed for slow_consumer", res)
	}
	if h.Stats().Closes()["slow_consumer"] != 1 || h.Stats().Resyncs.Load() != 2 {
		t.Fatalf("closes %v resyncs %d", h.Stats().Closes(), h.Stats().Resyncs.Load())
	}
	if h.Stats().Subscribers.Load() != 0 {
		t.Fatalf("%d subscribers left registered", h.Stats().Subscribers.Load())
	}
}

// The subscriber after the limit is refused; a freed slot is reusable.
func TestSubscriberLimit(t *testing.T) {
	h, _ := newHub(t, Config{MaxSubscribersPerTable: 100})
	var subs []*Sub
	for i := 0; i < 100; i++ {
		s, err := h.Subscribe("t")
		if err != nil {
			t.Fatalf("subscriber %d: %v", i+1, err)
		}
		subs = append(subs, s)
	}
	if _, err := h.Subscribe("t"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("101st subscriber: %v", err)
	}
	if _, err := h.Subscribe("other"); err != nil {
		t.Fatalf("another table is not limited by this one: %v", err)
	}
	subs[0].Close()
	subs[0].Close()
	if _, err := h.Subscribe("t"); err != nil {
		t.Fatalf("after one left: %v", err)
	}
	if got := h.Stats().Refused.Load(); got != 1 {
		t.Fatalf("refused count %d", got)
	}
}

// MaxSubscribers bounds all tables together: the next subscriber of any
// table is refused, however few its own table has; concurrent subscribers
// on different tables (different shards) never pass it together; a freed
// slot is reusable, and Close of a refused-then-retried subscriber frees it.
func TestGlobalSubscriberLimit(t *testing.T) {
	const limit = 50
	h, _ := newHub(t, Config{MaxSubscribers: limit, MaxSubscribersPerTable: limit})
	var (
		mu      sync.Mutex
		subs    []*Sub
		refused int
		wg      sync.WaitGroup
	)
	for i := range 4 * limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := h.Subscribe(fmt.Sprintf("t%d", i%37))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				subs = append(subs, s)
			case errors.Is(err, ErrTooManySubscribers):
				refused++
			default:
				t.Errorf("subscriber %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if len(subs) != limit || refused != 3*limit {
		t.Fatalf("%d subscribed, %d refused; want %d and %d", len(subs), refused, limit, 3*limit)
	}
	if got := h.Stats().Subscribers.Load(); got != limit {
		t.Fatalf("subscriber count %d, want %d", got, limit)
	}
	if got := h.Stats().Refused.Load(); got != 3*limit {
		t.Fatalf("refused count %d, want %d", got, 3*limit)
	}
	if _, err := h.Subscribe("a-table-with-none"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("a new table past the global limit: %v", err)
	}
	subs[0].Close()
	subs[0].Close() // twice: the slot is given back once
	s, err := h.Subscribe("a-table-with-none")
	if err != nil {
		t.Fatalf("after one left: %v", err)
	}
	if _, err := h.Subscribe("a-table-with-none"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("the freed slot was counted twice: %v", err)
	}
	s.Close()
	if got := h.Stats().Subscribers.Load(); got != limit-1 {
		t.Fatalf("subscriber count %d, want %d", got, limit-1)
	}
}

// A refusal at the per-table limit does not take a global slot.
func TestPerTableRefusalKeepsGlobalSlots(t *testing.T) {
	h, _ := newHub(t, Config{MaxSubscribers: 3, MaxSubscribersPerTable: 2})
	for range 2 {
		if _, err := h.Subscribe("t"); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		if _, err := h.Subscribe("t"); !errors.Is(err, ErrTooManySubscribers) {
			t.Fatalf("past the table's limit: %v", err)
		}
	}
	if _, err := h.Subscribe("u"); err != nil {
		t.Fatalf("the third global slot: %v", err)
	}
	if _, err := h.Subscribe("v"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("past the global limit: %v", err)
	}
}

// flushCounter is a Sink that records how many changes each Flush sent;
// its first Change waits on entered/release (a write in progress).
type flushCounter struct {
	mu       sync.Mutex
	snapshot bool
	pending  []uint64   // LSNs given to Change since the last Flush
	flushes  [][]uint64 // LSNs sent by each Flush, in order
	entered  chan struct{}
	release  chan struct{}
	held     bool
}

func (f *flushCounter) Snapshot(uint64, []Row, bool, bool, bool) error {
	f.mu.Lock()
	f.snapshot = true
	f.mu.Unlock()
	return nil
}

func (f *flushCounter) Change(ev *Event) error {
	f.mu.Lock()
	hold := !f.held
	f.held = true
	f.pending = append(f.pending, ev.LSN)
	f.mu.Unlock()
	if hold {
		close(f.entered)
		<-f.release
	}
	return nil
}

func (f *flushCounter) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) > 0 {
		f.flushes = append(f.flushes, f.pending)
		f.pending = nil
	}
	return nil
}

func (f *flushCounter) Heartbeat() error { return nil }

func (f *flushCounter) sent() [][]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.flushes)
}

// TestBurstIsOneFlush: the changes that queue for a subscriber while it
// writes go out together, in LSN order, with one Flush (one write for the
// transports); the buffer is given back once they are sent.
func TestBurstIsOneFlush(t *testing.T) {
	h, e := newHub(t, Config{Buffer: 1024})
	sub, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	fc := &flushCounter{entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Stream(ctx, sub, nil, fc) }()
	defer func() {
		cancel()
		<-done
		sub.Close()
	}()
	waitUntil(t, "the snapshot", func() bool { fc.mu.Lock(); defer fc.mu.Unlock(); return fc.snapshot })
	sub.mu.Lock()
	idle := sub.q == nil && sub.spare == nil
	sub.mu.Unlock()
	if !idle {
		t.Fatal("an idle subscriber holds a buffer")
	}

	first, err := put(e, "t", "k0", "0")
	if err != nil {
		t.Fatal(err)
	}
	<-fc.entered // the stream is writing the first change: the next ones queue
	var want []uint64
	const burst = 500 // more than keepSpare: the batch is not kept
	for i := 1; i <= burst; i++ {
		r, err := put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.LSN)
	}
	waitUntil(t, "the burst queued", func() bool { return h.Stats().Enqueued.Load() == burst+1 })
	close(fc.release)
	waitUntil(t, "the burst sent", func() bool { return len(fc.sent()) == 2 })
	got := fc.sent()
	if !slices.Equal(got[0], []uint64{first.LSN}) || !slices.Equal(got[1], want) {
		t.Fatalf("flushes %v; want [%d] then the %d queued changes in one", got, first.LSN, burst)
	}
	if d := h.Stats().Delivered.Load(); d != burst+1 {
		t.Fatalf("delivered %d, want %d", d, burst+1)
	}
	sub.mu.Lock()
	q, spare := sub.q, sub.spare
	sub.mu.Unlock()
	if q != nil || cap(spare) > keepSpare {
		t.Fatalf("after the burst: queue %d (want none), spare capacity %d (want at most %d)", len(q), cap(spare), keepSpare)
	}
}

// TestIdleSubscriberFreesItsBuffer: a subscriber keeps its drained batch
// for the next burst only until a heartbeat interval passes without
// traffic; then it holds no buffer, as before its first change.
func TestIdleSubscriberFreesItsBuffer(t *testing.T) {
	h, e := newHub(t, Config{Heartbeat: 20 * time.Millisecond})
	sub, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Stream(ctx, sub, nil, rec) }()
	defer func() {
		cancel()
		<-done
		sub.Close()
	}()
	var last uint64
	for i := range 20 {
		r, err := put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = r.LSN
	}
	waitUntil(t, "the changes delivered", func() bool { return rec.lastLSN() >= last })
	waitUntil(t, "the buffer freed after an idle heartbeat", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.q == nil && sub.spare == nil
	})
}

// Clients counts the client connections holding subscriptions, not the
// server's own feeds (owner "").
func TestClientsCountsConnectionsNotFeeds(t *testing.T) {
	h, _ := newHub(t, Config{})
	feed, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	if n := h.Clients(); n != 0 {
		t.Fatalf("a server feed counted as %d clients", n)
	}
	a1, err := h.SubscribeFrom("10.0.0.1:5000", "t")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := h.SubscribeFrom("10.0.0.1:5000", "u")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.SubscribeFrom("10.0.0.2:5000", "t")
	if err != nil {
		t.Fatal(err)
	}
	if n := h.Clients(); n != 2 {
		t.Fatalf("two connections counted as %d", n)
	}
	a1.Close()
	a2.Close()
	b.Close()
	if n := h.Clients(); n != 0 {
		t.Fatalf("%d clients after every subscription closed", n)
	}
}
