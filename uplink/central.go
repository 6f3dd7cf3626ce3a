package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"routehound/engine"
)

// The central view (issue 20, part 4): one box follows several depots'
// shipped logs and serves them read-only. For each JetStream stream that
// holds depots' records (one stream for all depots, or one per depot) a
// goroutine reads the stream with an ordered consumer, in stream order,
// and writes each depot's records into the central engine
// (engine.ApplyCentral) under the key <depot>/<key> of the same table, at
// the central engine's own LSNs. With them, in the same atomic item, it
// writes each depot's cursor into the table CentralTable (key: the depot):
// the stream, the stream sequence and the depot's LSN of the last record
// applied. So a crash never parts the records from their cursor: a restart
// reads the cursors back from the store, reads each stream on after the
// last sequence applied, and skips every record of a depot at or below its
// LSN (a re-send, or a stream read again from its start): no gap, no
// duplicate. Epoch markers are read past (the depot's history is whatever
// the stream holds, whoever wrote it).

// CentralTable holds the central view's cursor of each depot (key: the
// depot; value: a DepotPosition). It is written with the records it covers
// and readable like any table: a dashboard can watch it to see each
// depot's progress.
const CentralTable = engine.CentralCursorTable

// streamMarkPrefix keys, in CentralTable, a streamMark (no depot name holds
// a $, and a depot's own table of that name is under <depot>/).
const streamMarkPrefix = "$stream/"

// streamMark says that, following every depot, every message of the stream
// (created then) through Seq was read: where a session following every
// depot reads it on. Depots' cursors cannot say it: a depot that was not
// followed (before [central] depots was widened to every depot) has none,
// and its records lie below the others' cursors.
type streamMark struct {
	Stream  string    `json:"stream"`
	Created time.Time `json:"stream_created"`
	Seq     uint64    `json:"stream_seq"`
}

// CentralConfig configures a central view.
type CentralConfig struct {
	URL     string   // NATS server URL(s), comma-separated
	Depots  []string // the depots followed; empty: every depot the streams hold
	Streams []string // the streams read; empty: every stream under routehound.>, looked for every Discover
	// Discover is how often the streams are listed again (empty
	// Streams); default 5 s.
	Discover time.Duration
	// Timeout bounds one JetStream request; default 5 s.
	Timeout time.Duration
	// MaxBackoff bounds the wait between two connection attempts of a
	// stream's reader; default 5 s.
	MaxBackoff time.Duration
}

// DepotPosition is a depot's cursor (CentralTable's value, and a line of
// the central view's status).
type DepotPosition struct {
	Depot  string `json:"depot"`
	Stream string `json:"stream"`
	// StreamCreated is when that stream was created: a stream of the same
	// name created since (deleted, made again) is read from its start.
	StreamCreated time.Time `json:"stream_created"`
	StreamSeq     uint64    `json:"stream_seq"` // the stream sequence of the depot's last record applied
	LSN           uint64    `json:"lsn"`        // the depot's LSN of it
	At            time.Time `json:"committed_at"`
	Records       uint64    `json:"records"` // the depot's records applied, all told
	// Missing counts the depot's LSNs the stream skipped (records its
	// uplink dropped, or the stream's limits removed before they were
	// read): told in the log, and here.
	Missing uint64 `json:"missing"`
	// Rejected counts the depot's records this view's engine can never
	// apply (engine.ErrCentralRejected: a table or key it cannot hold, a
	// value that is no JSON or larger than a batch): each is skipped,
	// logged (CENTRAL REJECTED A RECORD) and counted here, and the cursor
	// moves past it, so it never stops the depot's later records. The
	// depot and its stream still hold it.
	Rejected uint64 `json:"rejected"`
	// LastRejected is the last of them: where to find it, and why.
	LastRejected *RejectedRecord `json:"last_rejected,omitempty"`
}

// RejectedRecord is a depot's record the central view's engine rejected.
type RejectedRecord struct {
	LSN       uint64 `json:"lsn"`        // the depot's
	StreamSeq uint64 `json:"stream_seq"` // in Stream of the cursor
	Table     string `json:"table"`
	Key       string `json:"key"` // the depot's, at most 200 bytes of it
	Op        string `json:"op"`
	Error     string `json:"error"`
}

// Central follows depots' streams into a central engine.
type Central struct {
	cfg CentralConfig
	log *slog.Logger
	e   *engine.Engine

	// applyMu makes computing a batch from the cursors, applying it and
	// moving the cursors one step: readers of several streams never
	// apply the same depot's record twice.
	applyMu sync.Mutex
	mu      sync.Mutex // guards pos and streams
	pos     map[string]DepotPosition
	marks   map[string]streamMark // by stream
	streams map[string]*centralStream
	// stale: an apply answered an error, yet may be in the store (a failed
	// sync, the store reopened): pos is read again from the store before
	// the next apply.
	stale atomic.Bool

	// applyFn, when set (a test's, before Start), stands for the
	// engine's ApplyCentral.
	applyFn func(context.Context, []engine.CentralWrite) (uint64, error)

	applied   atomic.Uint64
	lastErrMu sync.Mutex
	lastErr   string
	lastErrAt time.Time

	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup
}

// centralStream is one stream's reader.
type centralStream struct {
	name      string
	idle      atomic.Bool // holds none of the depots followed: not read (nor in Status)
	connected atomic.Bool
	sessions  atomic.Uint64
	pending   atomic.Uint64
	skipped   atomic.Uint64 // messages read past that were no record
}

// OpenCentral makes a central view's follower; Start it with the engine.
func OpenCentral(cfg CentralConfig, log *slog.Logger) (*Central, error) {
	if cfg.URL == "" {
		return nil, errors.New("central: the NATS URL must be set")
	}
	for _, d := range cfg.Depots {
		if err := CheckDepot(d); err != nil {
			return nil, fmt.Errorf("central: %w", err)
		}
	}
	if cfg.Discover <= 0 {
		cfg.Discover = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Central{cfg: cfg, log: log.With("part", "central"), pos: map[string]DepotPosition{}, marks: map[string]streamMark{},
		streams: map[string]*centralStream{}}, nil
}

// Start makes the engine refuse writes (central_read_only), reads the
// depots' cursors from the store and follows the streams.
func (c *Central) Start(e *engine.Engine) error {
	if n, _ := e.ApplyCentralMax(); n < 2 {
		return fmt.Errorf("central: the engine takes %d writes per apply; a central view needs at least 2 (a record and its depot's cursor): raise the events lane's queue bound", n)
	}
	c.e = e
	e.SetCentral("this box is a central view of the depots' shipped logs: it serves reads only")
	if err := c.loadPositions(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(ctx)
	return nil
}

// Close stops following; an apply in flight completes first.
func (c *Central) Close() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.wg.Wait()
	c.cancel = nil
}

// loadPositions reads the depots' cursors from CentralTable.
func (c *Central) loadPositions() error {
	snap, err := c.e.Snapshot()
	if err != nil {
		return fmt.Errorf("central: read the depots' cursors: %w", err)
	}
	defer snap.Close()
	pos := map[string]DepotPosition{}
	marks := map[string]streamMark{}
	_, err = snap.Scan(CentralTable, "", 0, func(k string, st engine.State) error {
		if name, ok := strings.CutPrefix(k, streamMarkPrefix); ok {
			var m streamMark
			if err := json.Unmarshal(st.Value, &m); err != nil || m.Stream != name {
				c.log.Warn("central: a stream's mark in "+CentralTable+" cannot be read; following every depot, the stream is read again from its start", "stream", name, "err", err)
				return nil
			}
			marks[name] = m
			return nil
		}
		if strings.Contains(k, "/") {
			return nil // a depot's own table of that name (<depot>/<key>)
		}
		var p DepotPosition
		if err := json.Unmarshal(st.Value, &p); err != nil || p.Depot != k {
			c.log.Warn("central: a cursor in "+CentralTable+" cannot be read; that depot is read again from its streams' start (its records are applied again)", "depot", k, "err", err)
			return nil
		}
		pos[k] = p
		return nil
	})
	if err != nil {
		return fmt.Errorf("central: read the depots' cursors: %w", err)
	}
	c.mu.Lock()
	c.pos, c.marks = pos, marks
	c.mu.Unlock()
	return nil
}

func (c *Central) setErr(err error) {
	c.lastErrMu.Lock()
	c.lastErr, c.lastErrAt = err.Error(), time.Now()
	c.lastErrMu.Unlock()
}

// run starts a reader per stream: the configured ones, or every stream
// under routehound.> as it is found.
func (c *Central) run(ctx context.Context) {
	defer close(c.done)
	if len(c.cfg.Streams) > 0 {
		for _, s := range c.cfg.Streams {
			c.startStream(ctx, s)
		}
		<-ctx.Done()
		return
	}
	for {
		names, err := c.discover(ctx)
		if err != nil && ctx.Err() == nil {
			c.setErr(err)
			c.log.Warn("central: cannot list the streams; trying again", "err", err, "retry_in", c.cfg.Discover)
		}
		for _, s := range names {
			c.startStream(ctx, s)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.Discover):
		}
	}
}

// discover lists the streams whose subjects lie under routehound.>.
func (c *Central) discover(ctx context.Context) ([]string, error) {
	nc, err := nats.Connect(c.cfg.URL, nats.NoReconnect(), nats.Name("routehound central"), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(c.cfg.URL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	l := js.StreamNames(cctx, jetstream.WithStreamListSubject("routehound.>"))
	var out []string
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		return out, fmt.Errorf("list the streams: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// startStream starts the reader of stream name unless it runs.
func (c *Central) startStream(ctx context.Context, name string) {
	c.mu.Lock()
	if _, ok := c.streams[name]; ok {
		c.mu.Unlock()
		return
	}
	s := &centralStream{name: name}
	c.streams[name] = s
	c.mu.Unlock()
	c.log.Info("central: following a stream", "stream", name)
	c.wg.Go(func() { c.follow(ctx, s) })
}

// follow reads one stream, session after session, until ctx ends.
func (c *Central) follow(ctx context.Context, s *centralStream) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		before := c.applied.Load()
		err := c.session(ctx, s)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoDepots) {
			// Not an error: another stream of the same NATS. Looked at
			// again now and then (its subjects may change).
			if !s.idle.Swap(true) {
				c.log.Info("central: the stream holds none of the depots followed; not read", "stream", s.name, "why", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(max(c.cfg.MaxBackoff, c.cfg.Discover)):
			}
			continue
		}
		s.idle.Store(false)
		if errors.Is(err, jetstream.ErrStreamNotFound) && len(c.cfg.Streams) == 0 {
			// Deleted for good, or made again soon: discovery starts a
			// reader when it lists it again.
			c.mu.Lock()
			delete(c.streams, s.name)
			c.mu.Unlock()
			c.log.Warn("central: the stream is gone; not read until it is listed again", "stream", s.name, "err", err)
			return
		}
		if err == nil {
			err = errors.New("the stream's reader ended")
		}
		c.setErr(fmt.Errorf("stream %s: %w", s.name, err))
		if c.applied.Load() > before {
			backoff = 100 * time.Millisecond
		}
		c.log.Warn("central: reading the stream stopped; reconnecting (reads go on, from what was applied)", "stream", s.name, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

// errNoDepots ends a session on a stream holding none of the depots
// followed: it is looked at again after the backoff.
var errNoDepots = errors.New("the stream holds none of the depots followed")

// filters are the consumer's subjects on a stream of those subjects: the
// depots followed that the stream covers, or (every depot) its subjects
// under routehound.>.
func (c *Central) filters(subjects []string) []string {
	var out []string
	if len(c.cfg.Depots) == 0 {
		for _, s := range subjects {
			if covers(s, "routehound.>") {
				return []string{"routehound.>"}
			}
			if covers("routehound.>", s) || strings.HasPrefix(s, "routehound.") {
				out = append(out, s)
			}
		}
		return out
	}
	for _, d := range c.cfg.Depots {
		if coversAny(subjects, DepotSubjects(d)) {
			out = append(out, DepotSubjects(d))
		}
	}
	return out
}

// resumeSeq is where a session reads stream on (created then, of those
// subjects): after the last message read from it; from its start when it
// is not the stream the cursors were read from (created at another time).
// Following every depot, that is the stream's mark (every message before
// it was applied or read past while every depot was followed; a view that
// followed a list of depots has none, and reads the stream from its
// start). Following some depots, it is the lowest cursor of those the
// stream covers, and the stream's start when one of them has none there (a
// depot added to [central] depots since: its records were read past); the
// depots' LSNs skip what is applied.
func (c *Central) resumeSeq(stream string, created time.Time, subjects []string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cfg.Depots) == 0 {
		// The stream's mark, written by sessions following every depot;
		// none (the view followed a list of depots until now, or the
		// stream is new): from the start, the depots' LSNs skip what is
		// applied.
		m, ok := c.marks[stream]
		if !ok {
			return 0
		}
		if !m.Created.Equal(created) {
			c.log.Warn("central: the stream was created again since its records were read here; reading it from its start", "stream", stream,
				"created", created, "read_created", m.Created)
			return 0
		}
		return m.Seq
	}
	var seq uint64
	first := true
	for _, d := range c.cfg.Depots {
		if !coversAny(subjects, DepotSubjects(d)) {
			continue // its records cannot be in this stream (streams do not overlap)
		}
		p, ok := c.pos[d]
		if !ok || p.Stream != stream {
			return 0
		}
		if !p.StreamCreated.IsZero() && !p.StreamCreated.Equal(created) {
			// Another stream of that name (deleted and made again): its
			// sequences say nothing of where this view was.
			c.log.Warn("central: the stream was created again since its records were read here; reading it from its start", "stream", stream,
				"depot", d, "created", created, "read_created", p.StreamCreated)
			return 0
		}
		if first || p.StreamSeq < seq {
			seq, first = p.StreamSeq, false
		}
	}
	return seq
}

// session reads stream s until the connection fails or ctx ends.
func (c *Central) session(ctx context.Context, s *centralStream) error {
	closed := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(c.cfg.URL, nats.NoReconnect(), nats.Name("routehound central "+s.name), nats.Timeout(2*time.Second),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { close(closed) }) }))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(c.cfg.URL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	st, err := js.Stream(cctx, s.name)
	cancel()
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.name, err)
	}
	info := st.CachedInfo()
	filters := c.filters(info.Config.Subjects)
	if len(filters) == 0 {
		return fmt.Errorf("%w (its subjects: %q)", errNoDepots, info.Config.Subjects)
	}
	from := c.resumeSeq(s.name, info.Created, info.Config.Subjects)
	if from > info.State.LastSeq {
		// The stream is behind where this view was (recreated, purged):
		// read it from its start; the depots' LSNs skip what is applied.
		c.log.Warn("central: the stream ends before the last message applied here; reading it from its start", "stream", s.name,
			"applied_seq", from, "stream_last_seq", info.State.LastSeq)
		from = 0
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
	cons, err := st.OrderedConsumer(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("ordered consumer on %s %q: %w", s.name, filters, err)
	}
	// A stream deleted (and maybe made again under its name) ends the
	// session: the ordered consumer would go on at the old sequence in the
	// new stream, and the cursors would keep the old stream's creation
	// time. The next session reads the new stream from its start.
	gone := make(chan struct{})
	var goneOnce sync.Once
	if sub, err := nc.Subscribe(jetstream.DefaultAPIPrefix+"EVENT.ADVISORY.STREAM.DELETED."+s.name, func(*nats.Msg) {
		goneOnce.Do(func() { close(gone) })
	}); err != nil {
		c.log.Warn("central: cannot watch the stream's deletion; its creation time is checked every discover interval and when the consumer is made again", "stream", s.name, "err", err)
	} else {
		defer sub.Unsubscribe()
	}
	check := time.NewTicker(c.cfg.Discover)
	defer check.Stop()
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	s.sessions.Add(1)
	s.idle.Store(false)
	s.connected.Store(true)
	c.log.Info("central: reading the stream", "url", nc.ConnectedUrlRedacted(), "stream", s.name, "subjects", filters, "after_seq", from)

	msgs, errc, stop := pump(ctx, it)
	defer stop()
	maxN, maxBytes := c.e.ApplyCentralMax()
	// consumer is the ordered consumer's name of the messages read: it
	// changes when the consumer is made again (the stream lost it), and
	// the stream is checked then before its messages are applied.
	var consumer string
	var carry jetstream.Msg // the first message of a consumer made again
	for {
		var m jetstream.Msg
		ok := true
		if carry != nil {
			m, carry = carry, nil
		} else {
			select {
			case <-ctx.Done():
				return nil
			case <-closed:
				return fmt.Errorf("connection lost: %w", nonNil(nc.LastError()))
			case <-gone:
				return fmt.Errorf("stream %s: %w (deleted)", s.name, errStreamChanged)
			case <-check.C:
				if err := c.sameStream(ctx, st, info.Created); err != nil {
					return err
				}
				continue
			case m, ok = <-msgs:
			}
		}
		if !ok {
			select {
			case err := <-errc:
				return fmt.Errorf("consume: %w", err)
			default:
				return nil
			}
		}
		// Take what else arrived, up to a batch, and apply it in one go.
		var batch []shipped
		var size int64
		var lastSeq uint64 // of the messages taken, records or not
		for {
			r, err := readShipped(m)
			if r.consumer != "" && r.consumer != consumer {
				if len(batch) > 0 {
					carry = m // applied once the batch before it is
					break
				}
				if consumer != "" {
					if err := c.sameStream(ctx, st, info.Created); err != nil {
						return err
					}
				}
				consumer = r.consumer
			}
			if err != nil {
				// Not a record of the format (another producer on the
				// subjects, or a damaged message): read past, loudly,
				// rather than stop every depot of the stream behind it.
				s.skipped.Add(1)
				c.setErr(fmt.Errorf("stream %s: %w", s.name, err))
				c.log.Error("CENTRAL SKIPPED A MESSAGE: not a RouteHound record; read past (a depot record lost with it shows as a gap of its depot)",
					"stream", s.name, "err", err)
			}
			s.pending.Store(r.pending)
			lastSeq = max(lastSeq, r.seq)
			if r.msg != nil {
				batch = append(batch, r)
				size += int64(2*len(r.msg.Value) + 2*len(r.msg.Key) + 2*(len(r.msg.Table)+len(r.msg.Depot)) + 64)
			}
			// Room for the records and a cursor per depot (at most one
			// per record).
			if 2*len(batch)+2 > maxN || size > maxBytes/2 {
				break
			}
			select {
			case m, ok = <-msgs:
			default:
				ok = false
			}
			if !ok {
				break
			}
		}
		select {
		case <-gone:
			return fmt.Errorf("stream %s: %w (deleted)", s.name, errStreamChanged)
		default:
		}
		if err := c.apply(ctx, s.name, info.Created, batch, lastSeq); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// errStreamChanged ends a session on a stream deleted, or made again under
// its name, since the session began.
var errStreamChanged = errors.New("the stream was deleted or created again")

// sameStream checks that the stream is still the one a session began on
// (created then).
func (c *Central) sameStream(ctx context.Context, st jetstream.Stream, created time.Time) error {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	info, err := st.Info(cctx)
	if err != nil {
		return fmt.Errorf("check stream %s: %w", st.CachedInfo().Config.Name, err)
	}
	if !info.Created.Equal(created) {
		return fmt.Errorf("stream %s: %w (created %v, read since %v)", info.Config.Name, errStreamChanged, info.Created, created)
	}
	return nil
}

// shipped is one message of a stream: a depot's record, or nil for what is
// read past (an epoch marker).
type shipped struct {
	msg      *Message
	seq      uint64
	pending  uint64
	consumer string // the consumer's name it came through
}

// readShipped decodes a stream message: a record (Message) of the depot
// its subject names, or an epoch marker (msg nil).
func readShipped(m jetstream.Msg) (shipped, error) {
	md, err := m.Metadata()
	if err != nil {
		return shipped{}, fmt.Errorf("message metadata: %w", err)
	}
	out := shipped{seq: md.Sequence.Stream, pending: md.NumPending, consumer: md.Consumer}
	parts := strings.SplitN(m.Subject(), ".", 3)
	if len(parts) < 3 || parts[0] != "routehound" {
		return out, fmt.Errorf("stream seq %d: subject %q is not routehound.<depot>.<table>", out.seq, m.Subject())
	}
	if strings.HasPrefix(parts[2], "$") {
		return out, nil // an epoch marker (fence.go)
	}
	if err := CheckDepot(parts[1]); err != nil {
		// Following every depot, the depot is whatever the subject says:
		// one that is no depot name would make keys no depot can own.
		return out, fmt.Errorf("stream seq %d: subject %q: %w", out.seq, m.Subject(), err)
	}
	var b Message
	if err := json.Unmarshal(m.Data(), &b); err != nil {
		return out, fmt.Errorf("the record at stream seq %d (%s): %w", out.seq, m.Subject(), err)
	}
	if b.Depot != parts[1] || b.Table != parts[2] || b.LSN == 0 || b.Op != "put" && b.Op != "delete" {
		return out, fmt.Errorf("the record at stream seq %d is not a RouteHound record of its subject %s (depot %q, table %q, lsn %d, op %q)",
			out.seq, m.Subject(), b.Depot, b.Table, b.LSN, b.Op)
	}
	out.msg = &b
	return out, nil
}

// apply writes a batch of one stream's records with the cursors of their
// depots, skipping what each depot's cursor says is applied; following
// every depot, with the stream's mark at lastSeq, the last message read.
func (c *Central) apply(ctx context.Context, stream string, created time.Time, batch []shipped, lastSeq uint64) error {
	every := len(c.cfg.Depots) == 0
	if len(batch) == 0 && !every {
		return nil
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.stale.Load() {
		// The last apply answered an error but may be in the store: the
		// cursors are what the store holds, not what this view kept.
		if err := c.loadPositions(); err != nil {
			return fmt.Errorf("read the cursors again after a failed apply: %w", err)
		}
		c.stale.Store(false)
		c.log.Info("central: the depots' cursors read again from the store after a failed apply")
	}
	c.mu.Lock()
	mark, markOK := c.marks[stream]
	if every && (!markOK || !mark.Created.Equal(created) || mark.Seq < lastSeq) {
		mark, markOK = streamMark{Stream: stream, Created: created.UTC(), Seq: lastSeq}, true
	} else {
		markOK = false // no mark to write
	}
	next := map[string]DepotPosition{}
	var order []string
	var ws []engine.CentralWrite
	for _, r := range batch {
		b := r.msg
		if len(c.cfg.Depots) > 0 && !slices.Contains(c.cfg.Depots, b.Depot) {
			continue
		}
		p, ok := next[b.Depot]
		if !ok {
			p = c.pos[b.Depot]
			p.Depot = b.Depot
		}
		if b.LSN <= p.LSN {
			continue // applied already (a re-send, or the stream read again)
		}
		if p.LSN == 0 && b.LSN > 1 {
			// The depot's first record here is not its first: the stream
			// lost those before (limits, an uplink that dropped them).
			c.log.Error("CENTRAL GAP: the depot's first record in the stream is not its first; the records before it are not in this view",
				"depot", b.Depot, "stream", stream, "before_lsn", b.LSN, "records", b.LSN-1)
			p.Missing += b.LSN - 1
		}
		if p.LSN > 0 && b.LSN > p.LSN+1 {
			c.log.Error("CENTRAL GAP: the depot's shipped log skips records (its uplink dropped them, or the stream's limits removed them before they were read); they are not in this view",
				"depot", b.Depot, "stream", stream, "after_lsn", p.LSN, "before_lsn", b.LSN, "records", b.LSN-p.LSN-1)
			p.Missing += b.LSN - p.LSN - 1
		}
		if !ok {
			order = append(order, b.Depot)
		}
		p.Stream, p.StreamCreated, p.StreamSeq, p.LSN, p.At = stream, created.UTC(), r.seq, b.LSN, b.CommittedAt.UTC()
		if strings.HasPrefix(b.Table, "$") {
			p.Records++ // a void record: no key changes
			next[b.Depot] = p
			continue
		}
		w := engine.CentralWrite{Table: b.Table, Key: b.Depot + "/" + b.Key, Delete: b.Op == "delete", Actor: b.Actor, Depot: b.Depot, LSN: b.LSN}
		if !w.Delete {
			w.Value = []byte(b.Value)
		}
		if err := c.e.CheckCentralWrite(w); err != nil {
			// Never applicable here, whatever the retry: skipped for
			// good, loudly, with the cursor moved past it (in the same
			// item as the depot's next records), rather than stop the
			// depot's stream behind it. Errors a retry may cure come
			// from ApplyCentral below and end the session instead.
			p.Rejected++
			p.LastRejected = &RejectedRecord{LSN: b.LSN, StreamSeq: r.seq, Table: b.Table, Key: clipKey(b.Key), Op: b.Op, Error: err.Error()}
			next[b.Depot] = p
			c.setErr(fmt.Errorf("stream %s: depot %s lsn %d rejected: %w", stream, b.Depot, b.LSN, err))
			c.log.Error("CENTRAL REJECTED A RECORD: this view's engine can never apply it; skipped, the depot's cursor moves past it (the depot and its stream still hold it)",
				"depot", b.Depot, "stream", stream, "stream_seq", r.seq, "lsn", b.LSN, "table", b.Table, "key", clipKey(b.Key), "op", b.Op, "err", err)
			continue
		}
		p.Records++
		next[b.Depot] = p
		ws = append(ws, w)
	}
	c.mu.Unlock()
	if len(next) == 0 && !markOK {
		return nil
	}
	for _, d := range order {
		v, err := json.Marshal(next[d])
		if err != nil {
			return fmt.Errorf("central: encode the cursor of depot %s: %w", d, err)
		}
		// Tied to the depot's new LSN: the engine skips it (and the
		// records) where the store's cursor is there already.
		ws = append(ws, engine.CentralWrite{Table: CentralTable, Key: d, Value: v, Actor: "central", Depot: d, LSN: next[d].LSN})
	}
	records := len(ws) - len(order)
	if maxN, _ := c.e.ApplyCentralMax(); markOK && len(ws) < maxN {
		// The mark only saves reading again (the LSNs skip what is
		// applied): left for the next batch when there is no room.
		v, err := json.Marshal(mark)
		if err != nil {
			return fmt.Errorf("central: encode the mark of stream %s: %w", stream, err)
		}
		ws = append(ws, engine.CentralWrite{Table: CentralTable, Key: streamMarkPrefix + stream, Value: v, Actor: "central"})
	} else {
		markOK = false
	}
	if len(ws) == 0 {
		return nil
	}
	// Not cut by ctx: an apply the committer took completes, so that the
	// cursors in memory are what the store holds.
	apply := c.e.ApplyCentral
	if c.applyFn != nil {
		apply = c.applyFn
	}
	if _, err := apply(context.WithoutCancel(ctx), ws); err != nil {
		// A transient error (a full lane, a failed or closing store, a
		// low disk): the session ends and the next one reads the stream
		// again from the cursors, so the batch is retried, nothing
		// skipped. It may be in the store all the same (a failed sync,
		// then the store reopened): the cursors are read again before the
		// next apply, and the engine skips what its stored cursors cover.
		// (A write the engine can never apply was left out above.)
		c.stale.Store(true)
		return fmt.Errorf("apply %d records of stream %s: %w", records, stream, err)
	}
	c.mu.Lock()
	if markOK {
		c.marks[stream] = mark
	}
	var n uint64
	for _, d := range order {
		n += next[d].Records - c.pos[d].Records
		c.pos[d] = next[d]
	}
	c.mu.Unlock()
	c.applied.Add(n)
	return nil
}

// clipKey cuts a key for the status and the log (a rejected one may be
// long).
func clipKey(k string) string {
	if len(k) <= 200 {
		return k
	}
	return strings.ToValidUTF8(k[:200], "") + "…"
}

// CentralStatus is GET /v1/uplink on a central view.
type CentralStatus struct {
	Role        string          `json:"role"` // "central"
	URL         string          `json:"url"`
	Streams     []StreamStatus  `json:"streams"`
	Depots      []DepotPosition `json:"depots"`
	Applied     uint64          `json:"applied_records"` // since start
	DurableLSN  uint64          `json:"durable_lsn"`     // this view's own log
	LastError   string          `json:"last_error,omitempty"`
	LastErrorAt string          `json:"last_error_at,omitempty"`
}

// StreamStatus is a stream's reader in CentralStatus.
type StreamStatus struct {
	Stream    string `json:"stream"`
	Connected bool   `json:"connected"`
	Pending   uint64 `json:"pending"` // messages of the stream after the last one read
	Sessions  uint64 `json:"sessions"`
	Skipped   uint64 `json:"skipped"` // messages read past that were no RouteHound record
}

// Status reports the streams read and each depot's cursor.
func (c *Central) Status() CentralStatus {
	s := CentralStatus{Role: "central", URL: redact(c.cfg.URL), Applied: c.applied.Load(), Streams: []StreamStatus{}, Depots: []DepotPosition{}}
	if c.e != nil {
		s.DurableLSN = c.e.DurableLSN()
	}
	c.mu.Lock()
	for _, st := range c.streams {
		if st.idle.Load() {
			continue
		}
		s.Streams = append(s.Streams, StreamStatus{Stream: st.name, Connected: st.connected.Load(), Pending: st.pending.Load(), Sessions: st.sessions.Load(),
			Skipped: st.skipped.Load()})
	}
	for _, p := range c.pos {
		s.Depots = append(s.Depots, p)
	}
	c.mu.Unlock()
	sort.Slice(s.Streams, func(i, j int) bool { return s.Streams[i].Stream < s.Streams[j].Stream })
	sort.Slice(s.Depots, func(i, j int) bool { return s.Depots[i].Depot < s.Depots[j].Depot })
	c.lastErrMu.Lock()
	s.LastError = c.lastErr
	if !c.lastErrAt.IsZero() {
		s.LastErrorAt = c.lastErrAt.UTC().Format(time.RFC3339)
	}
	c.lastErrMu.Unlock()
	return s
}

// Collector returns a Prometheus collector of the central view
// (routehound_central_*): each depot's LSN, records applied, missing and
// rejected, and the streams read.
func (c *Central) Collector() prometheus.Collector {
	return &centralCollector{c: c,
		lsn:       prometheus.NewDesc("routehound_central_depot_lsn", "The depot's LSN of its last record this central view applied.", []string{"depot"}, nil),
		records:   prometheus.NewDesc("routehound_central_depot_records_total", "The depot's records this central view applied, all told.", []string{"depot"}, nil),
		missing:   prometheus.NewDesc("routehound_central_depot_missing_records_total", "The depot's LSNs its stream skipped (dropped by its uplink, or removed by the stream's limits before they were read).", []string{"depot"}, nil),
		rejected:  prometheus.NewDesc("routehound_central_depot_rejected_records_total", "The depot's records this central view's engine can never apply (a table or key it cannot hold, a value that is no JSON or larger than a batch): skipped and logged, the cursor moved past them.", []string{"depot"}, nil),
		connected: prometheus.NewDesc("routehound_central_stream_connected", "1 while the stream's reader holds a JetStream session.", []string{"stream"}, nil),
		pending:   prometheus.NewDesc("routehound_central_stream_pending", "Messages of the stream after the last one read.", []string{"stream"}, nil),
		skipped:   prometheus.NewDesc("routehound_central_stream_skipped_total", "Messages of the stream read past because they were no RouteHound record (logged as errors).", []string{"stream"}, nil),
	}
}

type centralCollector struct {
	c                                                            *Central
	lsn, records, missing, rejected, connected, pending, skipped *prometheus.Desc
}

func (cc *centralCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(cc, ch)
}

func (cc *centralCollector) Collect(ch chan<- prometheus.Metric) {
	s := cc.c.Status()
	for _, d := range s.Depots {
		ch <- prometheus.MustNewConstMetric(cc.lsn, prometheus.GaugeValue, float64(d.LSN), d.Depot)
		ch <- prometheus.MustNewConstMetric(cc.records, prometheus.CounterValue, float64(d.Records), d.Depot)
		ch <- prometheus.MustNewConstMetric(cc.missing, prometheus.CounterValue, float64(d.Missing), d.Depot)
		ch <- prometheus.MustNewConstMetric(cc.rejected, prometheus.CounterValue, float64(d.Rejected), d.Depot)
	}
	for _, st := range s.Streams {
		conn := 0.0
		if st.Connected {
			conn = 1
		}
		ch <- prometheus.MustNewConstMetric(cc.connected, prometheus.GaugeValue, conn, st.Stream)
		ch <- prometheus.MustNewConstMetric(cc.pending, prometheus.GaugeValue, float64(st.Pending), st.Stream)
		ch <- prometheus.MustNewConstMetric(cc.skipped, prometheus.CounterValue, float64(st.Skipped), st.Stream)
	}
}
