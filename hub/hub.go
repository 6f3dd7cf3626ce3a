package hub

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// Errors of the hub; the api maps them to answers.
var (
	// ErrTooManySubscribers: the table has MaxSubscribersPerTable
	// subscribers, the hub has MaxSubscribers in all, or the client
	// connection holds MaxSubscribersPerConn.
	ErrTooManySubscribers = errors.New("hub: too many subscribers")
	// ErrClosed: the hub is shutting down.
	ErrClosed = errors.New("hub: closed")
)

// Config bounds the hub. Heartbeat, WriteTimeout and MaxMessageBytes are
// the transports' (api's SSE and WebSocket handlers, ui's live endpoint):
// they read them with Hub.Config so that one [hub] section sets them.
type Config struct {
	MaxSubscribers         int // subscribers of all tables together
	MaxSubscribersPerTable int
	MaxSubscribersPerConn  int // subscribers of one client connection (SubscribeFrom's owner)
	// MaxCatchUp bounds the log records a stream resuming from an LSN
	// replays: further behind, it gets a resync snapshot instead (a
	// request cannot make the server read the whole retained log).
	MaxCatchUp      int
	Buffer          int           // events buffered per subscriber
	Heartbeat       time.Duration // SSE comment / WebSocket ping interval
	WriteTimeout    time.Duration // one write to a subscriber
	SnapshotPage    int           // rows per snapshot frame
	SnapshotBytes   int64         // bytes of rows per snapshot frame, about (0: 4 MiB)
	MaxResyncs      int           // resyncs within ResyncWindow before a subscriber is closed
	ResyncWindow    time.Duration
	MaxMessageBytes int64 // largest WebSocket message read
}

func (c *Config) defaults() {
	if c.MaxSubscribers <= 0 {
		c.MaxSubscribers = 10000
	}
	if c.MaxSubscribersPerTable <= 0 {
		c.MaxSubscribersPerTable = 100
	}
	if c.MaxSubscribersPerConn <= 0 {
		c.MaxSubscribersPerConn = 4
	}
	if c.MaxCatchUp <= 0 {
		c.MaxCatchUp = 10000
	}
	if c.Buffer <= 0 {
		c.Buffer = 1024
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.SnapshotPage <= 0 {
		c.SnapshotPage = 500
	}
	if c.SnapshotBytes <= 0 {
		c.SnapshotBytes = 4 << 20
	}
	if c.MaxResyncs <= 0 {
		c.MaxResyncs = 3
	}
	if c.ResyncWindow <= 0 {
		c.ResyncWindow = time.Minute
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 1 << 20
	}
}

const shardCount = 64

// Hub indexes subscribers by table and fans committed records out to them.
type Hub struct {
	e    *engine.Engine
	cfg  Config
	log  *slog.Logger
	seed maphash.Seed

	shards [shardCount]shard

	closeMu sync.Mutex
	closed  bool

	ownerMu sync.Mutex
	owners  map[string]int // subscriptions per client connection; bounded by the open subscriptions

	stopFanout context.CancelFunc
	fanoutDone chan struct{}

	t0    time.Time // Hub.clock's origin
	evBuf []*Event  // publish's events of one table run, reused (the fan-out goroutine's)

	stats Stats
}

type shard struct {
	mu     sync.Mutex
	tables map[string][]*Sub // copy-on-write slices: publish reads one without holding mu while it sends
}

// Stats counts the hub's work; all fields are atomic or locked.
type Stats struct {
	Subscribers atomic.Int64
	Published   atomic.Uint64 // records offered to at least one subscriber
	Enqueued    atomic.Uint64 // events put in subscriber buffers
	Delivered   atomic.Uint64 // events written to clients
	Dropped     atomic.Uint64 // events not buffered because a subscriber was behind
	Resyncs     atomic.Uint64
	// CatchUpResyncs are the resumes from an LSN more than MaxCatchUp
	// records behind, answered with a resync (counted in Resyncs too).
	CatchUpResyncs atomic.Uint64
	Refused        atomic.Uint64 // subscriptions refused at the per-table or the global limit

	delay [delayStages]delayHist // commit → socket, by stage (delay.go)

	mu     sync.Mutex
	closes map[string]uint64 // reason → subscribers closed by the hub
}

func (s *Stats) closedFor(reason string) {
	s.mu.Lock()
	if s.closes == nil {
		s.closes = map[string]uint64{}
	}
	s.closes[reason]++
	s.mu.Unlock()
}

// Closes returns the subscribers closed by the hub, by reason.
func (s *Stats) Closes() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.closes))
	for k, v := range s.closes {
		out[k] = v
	}
	return out
}

// New builds a hub and starts its fan-out, which follows the engine's
// durable records from now on (until Close, or until the engine stops).
func New(e *engine.Engine, cfg Config, log *slog.Logger) *Hub {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{e: e, cfg: cfg, log: log, seed: maphash.MakeSeed(), fanoutDone: make(chan struct{}), owners: map[string]int{}, t0: time.Now()}
	for i := range h.shards {
		h.shards[i].tables = map[string][]*Sub{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stopFanout = cancel
	go h.fanout(ctx, e.Follow(e.DurableLSN()))
	return h
}

// fanout is the hub's one goroutine between the engine and the
// subscribers: a cursor on the engine's durability feed that offers each
// durable record, in LSN order, to the subscribers of its table. The
// committer only hands records to the feed; what a record costs here (one
// offer per subscriber of its table) is no longer the single writer's.
func (h *Hub) fanout(ctx context.Context, c *engine.Cursor) {
	defer close(h.fanoutDone)
	for {
		recs, err := c.Next(ctx)
		switch {
		case err == nil:
			h.publish(recs)
			continue
		case ctx.Err() != nil, errors.Is(err, engine.ErrStopped):
			return
		}
		// The records after the cursor cannot be read (the fan-out fell
		// behind the feed's tail and the log no longer holds them): no
		// subscriber may go on as if it had them. Every subscriber
		// registered now resyncs from a snapshot taken after this point,
		// which holds everything durable up to `to`; the fan-out goes on
		// after it.
		to := h.e.DurableLSN()
		h.log.Warn("hub fan-out cannot read the records after its cursor; every subscriber resyncs", "after_lsn", c.After(), "to_lsn", to, "err", err)
		h.behindAll()
		c.Seek(to)
	}
}

// behindAll marks every subscriber as behind: its goroutine resyncs.
func (h *Hub) behindAll() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, subs := range sh.tables {
			for _, s := range subs {
				s.behind.Store(true)
				s.signal()
			}
		}
		sh.mu.Unlock()
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// Config is the hub's effective configuration.
func (h *Hub) Config() Config { return h.cfg }

func (h *Hub) shard(table string) *shard {
	return &h.shards[maphash.String(h.seed, table)%shardCount]
}

// publish runs on the fan-out goroutine with durable records in LSN
// order. It must not block: offers are non-blocking (a subscriber whose
// buffer is full is marked behind and resyncs).
//
// Consecutive records of one table are offered together: each subscriber
// of the table takes them under one lock and is woken once, so that a
// group commit of n changes costs a subscriber one wake-up and one write,
// not n (the stream would otherwise often take the first alone, while the
// fan-out was still offering the next).
func (h *Hub) publish(recs []engine.Record) {
	if len(recs) == 0 {
		return
	}
	now := h.clock()
	var durable int64 // a cursor's batch is one commit's records: one durable time
	if at, ok := h.e.DurableAt(recs[0].LSN); ok {
		durable = int64(at.Sub(h.t0)) + 1
	}
	evs := h.evBuf[:0]
	for i := 0; i < len(recs); {
		table := recs[i].Table
		j := i + 1
		for j < len(recs) && recs[j].Table == table {
			j++
		}
		sh := h.shard(table)
		sh.mu.Lock()
		subs := sh.tables[table]
		sh.mu.Unlock()
		if len(subs) > 0 {
			evs = evs[:0]
			for k := i; k < j; k++ {
				ev := newEvent(&recs[k])
				ev.durable, ev.offered = durable, now
				evs = append(evs, ev)
			}
			h.stats.Published.Add(uint64(len(evs)))
			for _, s := range subs {
				s.offer(evs)
			}
			if durable != 0 {
				h.stats.delay[StageFeed].observe(time.Duration(now-durable), len(evs)*len(subs))
			}
		}
		i = j
	}
	clear(evs) // the subscribers hold the events, not this slice
	if cap(evs) > keepSpare {
		evs = nil
	}
	h.evBuf = evs[:0]
}

// Subscribe registers a subscriber of table that no client connection
// owns (a server-side feed): SubscribeFrom with owner "".
func (h *Hub) Subscribe(table string) (*Sub, error) { return h.SubscribeFrom("", table) }

// SubscribeFrom registers a subscriber of table for a client connection
// (owner: its remote address, "" for none): from now on it receives every
// record of the table published, until Close. At most
// MaxSubscribersPerTable per table, MaxSubscribers in all and
// MaxSubscribersPerConn per owner (ErrTooManySubscribers).
func (h *Hub) SubscribeFrom(owner, table string) (*Sub, error) {
	if err := fleet.CheckName("table", table); err != nil {
		return nil, err
	}
	h.closeMu.Lock()
	defer h.closeMu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if !h.takeOwner(owner) {
		h.stats.Refused.Add(1)
		return nil, fmt.Errorf("%w: this connection has the maximum number of subscriptions (hub.max_subscribers_per_conn = %d)", ErrTooManySubscribers, h.cfg.MaxSubscribersPerConn)
	}
	sh := h.shard(table)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.tables[table]
	if len(cur) >= h.cfg.MaxSubscribersPerTable {
		h.giveOwner(owner)
		h.stats.Refused.Add(1)
		return nil, fmt.Errorf("%w: table %s has the maximum number of subscribers (hub.max_subscribers_per_table = %d)", ErrTooManySubscribers, table, h.cfg.MaxSubscribersPerTable)
	}
	// The global count is reserved before the subscriber is registered and
	// given back by remove, so that concurrent Subscribes on different
	// shards cannot together pass the cap.
	if n := h.stats.Subscribers.Add(1); n > int64(h.cfg.MaxSubscribers) {
		h.stats.Subscribers.Add(-1)
		h.giveOwner(owner)
		h.stats.Refused.Add(1)
		return nil, fmt.Errorf("%w: the server has the maximum number of subscribers (hub.max_subscribers = %d)", ErrTooManySubscribers, h.cfg.MaxSubscribers)
	}
	s := &Sub{h: h, table: table, owner: owner, wake: make(chan struct{}, 1), done: make(chan struct{})}
	next := make([]*Sub, len(cur), len(cur)+1)
	copy(next, cur)
	sh.tables[table] = append(next, s)
	return s, nil
}

// Clients is the number of client connections holding subscriptions
// (SubscribeFrom with an owner), without the server's own feeds (the
// dashboard's fleet feed): people and services watching. O(1): the
// driver limit's controller asks every 100 ms.
func (h *Hub) Clients() int {
	h.ownerMu.Lock()
	defer h.ownerMu.Unlock()
	return len(h.owners)
}

// takeOwner counts one more subscription of owner, unless it holds
// MaxSubscribersPerConn already.
func (h *Hub) takeOwner(owner string) bool {
	if owner == "" {
		return true
	}
	h.ownerMu.Lock()
	defer h.ownerMu.Unlock()
	if h.owners[owner] >= h.cfg.MaxSubscribersPerConn {
		return false
	}
	h.owners[owner]++
	return true
}

func (h *Hub) giveOwner(owner string) {
	if owner == "" {
		return
	}
	h.ownerMu.Lock()
	defer h.ownerMu.Unlock()
	if h.owners[owner]--; h.owners[owner] <= 0 {
		delete(h.owners, owner)
	}
}

func (h *Hub) remove(s *Sub) {
	defer h.giveOwner(s.owner)
	sh := h.shard(s.table)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.tables[s.table]
	next := make([]*Sub, 0, len(cur))
	for _, x := range cur {
		if x != s {
			next = append(next, x)
		}
	}
	if len(next) == 0 {
		delete(sh.tables, s.table)
	} else {
		sh.tables[s.table] = next
	}
	h.stats.Subscribers.Add(-1)
}

// TableCount is a table and its number of subscribers.
type TableCount struct {
	Table       string
	Subscribers int
}

// TopTables lists the n tables with the most subscribers.
func (h *Hub) TopTables(n int) []TableCount {
	var out []TableCount
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for t, subs := range sh.tables {
			out = append(out, TableCount{t, len(subs)})
		}
		sh.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subscribers != out[j].Subscribers {
			return out[i].Subscribers > out[j].Subscribers
		}
		return out[i].Table < out[j].Table
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Close ends every subscription with reason "shutdown", refuses new ones
// and stops the fan-out. Safe to call twice.
func (h *Hub) Close() {
	h.closeMu.Lock()
	h.closed = true
	h.closeMu.Unlock()
	h.stopFanout()
	<-h.fanoutDone
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		var all []*Sub
		for _, subs := range sh.tables {
			all = append(all, subs...)
		}
		sh.mu.Unlock()
		for _, s := range all {
			s.kill("shutdown")
		}
	}
}
