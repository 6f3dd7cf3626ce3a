package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
)

// The warm standby's follower (issue 20): it reads the depot's records
// from the JetStream stream, in stream order, and hands them to its
// engine (ApplyFollowed), which writes them at their own LSNs into the
// standby's store; the standby's engine refuses every other write
// (not_primary). Promote applies what the stream still holds, publishes
// the next epoch's marker (the fence: fence.go) and writes the uplink's
// state file, so that the uplink started next ships this box's records
// after the last one the stream holds.

// FollowConfig configures a follower.
type FollowConfig struct {
	URL    string // NATS server URL(s), comma-separated
	Depot  string // the depot whose records are followed
	Stream string // the JetStream stream
	// UplinkStateFile is the uplink's state file, written by Promote (the
	// promoted box's uplink starts from it).
	UplinkStateFile string
	// StateFile keeps where the follower is in the stream (the sequence
	// of the last message applied, with its LSN), so that a restart reads
	// on from there instead of the stream's first message. Optional.
	StateFile string
	// Timeout bounds one JetStream request.
	Timeout time.Duration
	// MaxBackoff bounds the wait between two connection attempts.
	MaxBackoff time.Duration
}

// Follower follows a depot's stream into the engine.
type Follower struct {
	cfg FollowConfig
	log *slog.Logger
	e   *engine.Engine

	// seq is the stream sequence of the last message of the depot
	// applied (or, for a marker, read); 0 at start: the stream is read
	// from its first message of the depot, and the engine skips what the
	// store holds. Guarded by mu with epoch, markerSeq.
	mu        sync.Mutex
	seq       uint64
	epoch     uint64 // the stream's epoch of the depot, from its last marker read (0: none)
	markerSeq uint64
	wake      chan struct{} // closed and replaced when seq moves

	connected atomic.Bool
	pending   atomic.Uint64 // messages of the depot in the stream after the last one read (the consumer's count)
	savedSeq  uint64        // what StateFile holds; the run goroutine only
	savedAt   time.Time
	applied   atomic.Uint64 // records applied since start
	sessions  atomic.Uint64
	promoted  atomic.Bool
	promoting atomic.Bool
	lastErrMu sync.Mutex
	lastErr   string
	lastErrAt time.Time

	runMu  sync.Mutex // held while a run goroutine exists
	cancel context.CancelFunc
	done   chan struct{}
}

// OpenFollower makes a follower; Start it with the standby's engine.
func OpenFollower(cfg FollowConfig, log *slog.Logger) (*Follower, error) {
	if err := CheckDepot(cfg.Depot); err != nil {
		return nil, fmt.Errorf("standby: %w", err)
	}
	if cfg.URL == "" || cfg.Stream == "" || cfg.UplinkStateFile == "" {
		return nil, errors.New("standby: the NATS URL, the stream and the uplink's state file must be set")
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
	return &Follower{cfg: cfg, log: log.With("part", "standby"), wake: make(chan struct{})}, nil
}

// followState is the follower's state file.
type followState struct {
	Depot  string `json:"depot"`
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"` // the stream sequence of the last message applied
	LSN    uint64 `json:"lsn"` // the store's last LSN then
}

// resumeSeq is where the follower reads on after a restart: the state
// file's sequence when it is of this depot and stream and the store holds
// its LSN (the file is written after the records it names are durable);
// else 0, the stream's first message (the engine skips what the store
// holds).
func (f *Follower) resumeSeq() uint64 {
	if f.cfg.StateFile == "" {
		return 0
	}
	b, err := os.ReadFile(f.cfg.StateFile)
	if err != nil {
		return 0
	}
	var st followState
	if json.Unmarshal(b, &st) != nil || st.Depot != f.cfg.Depot || st.Stream != f.cfg.Stream || st.LSN > f.e.StoreStats().LastLSN {
		return 0
	}
	return st.Seq
}

// saveSeq writes the state file at most once a second (force: now).
func (f *Follower) saveSeq(seq uint64, force bool) {
	if f.cfg.StateFile == "" || seq == f.savedSeq || !force && time.Since(f.savedAt) < time.Second {
		return
	}
	body, _ := json.Marshal(followState{Depot: f.cfg.Depot, Stream: f.cfg.Stream, Seq: seq, LSN: f.e.StoreStats().LastLSN})
	if err := writeFile(f.cfg.StateFile, body); err != nil {
		f.log.Warn("standby: cannot store the position in the stream; a restart reads the stream from its start", "err", err)
		return
	}
	f.savedSeq, f.savedAt = seq, time.Now()
}

// Start makes the engine refuse writes (not_primary) and follows the
// stream into it.
func (f *Follower) Start(e *engine.Engine) {
	f.e = e
	e.SetNotPrimary(fmt.Sprintf("this box is a standby following depot %s in the stream %s", f.cfg.Depot, f.cfg.Stream))
	f.seq = f.resumeSeq()
	f.savedSeq = f.seq
	f.startRun()
}

func (f *Follower) startRun() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go f.run(ctx, f.done)
}

// stopRun stops the following goroutine and waits for it.
func (f *Follower) stopRun() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.cancel = nil
	}
}

// Close stops following.
func (f *Follower) Close() {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	f.stopRun()
}

func (f *Follower) setErr(err error) {
	f.lastErrMu.Lock()
	f.lastErr, f.lastErrAt = err.Error(), time.Now()
	f.lastErrMu.Unlock()
}

func (f *Follower) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	defer func() {
		f.mu.Lock()
		seq := f.seq
		f.mu.Unlock()
		f.saveSeq(seq, true)
	}()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		before := f.applied.Load()
		err := f.session(ctx)
		f.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		f.setErr(err)
		if f.applied.Load() > before {
			backoff = 100 * time.Millisecond
		}
		f.log.Warn("standby: following the stream stopped; reconnecting (reads go on, from what was applied)", "err", err,
			"last_lsn", f.e.DurableLSN(), "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
}

// dial connects without the client's own reconnects (a lost connection
// ends the session; the next one resumes after the last message applied).
func (f *Follower) dial(ctx context.Context) (*nats.Conn, jetstream.JetStream, jetstream.Stream, error) {
	nc, _, js, st, err := f.dialWatch(ctx)
	return nc, js, st, err
}

// dialWatch is dial with a channel closed when the connection is lost.
func (f *Follower) dialWatch(ctx context.Context) (*nats.Conn, <-chan struct{}, jetstream.JetStream, jetstream.Stream, error) {
	closed := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(f.cfg.URL, nats.NoReconnect(), nats.Name("routehound standby "+f.cfg.Depot), nats.Timeout(2*time.Second),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { close(closed) }) }))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("connect to %s: %w", f.cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	st, err := js.Stream(cctx, f.cfg.Stream)
	if err != nil {
		nc.Close()
		return nil, nil, nil, nil, fmt.Errorf("stream %s: %w", f.cfg.Stream, err)
	}
	return nc, closed, js, st, nil
}

// session follows the stream until the connection fails or ctx ends.
func (f *Follower) session(ctx context.Context) error {
	nc, closed, _, st, err := f.dialWatch(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	f.mu.Lock()
	from := f.seq
	if last := st.CachedInfo().State.LastSeq; from > last {
		// The stream is behind where this box was (recreated, purged):
		// read it from its start; the engine skips what the store holds.
		f.log.Warn("standby: the stream ends before the last message applied here; reading it from its start", "applied_seq", from, "stream_last_seq", last)
		from, f.seq = 0, 0
	}
	f.mu.Unlock()
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{DepotSubjects(f.cfg.Depot)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	cons, err := st.OrderedConsumer(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", DepotSubjects(f.cfg.Depot), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer it.Stop()
	f.sessions.Add(1)
	f.connected.Store(true)
	f.log.Info("standby: following the depot's stream", "url", nc.ConnectedUrlRedacted(), "stream", f.cfg.Stream, "depot", f.cfg.Depot,
		"after_seq", from, "store_last_lsn", f.e.StoreStats().LastLSN)

	msgs, errc, stop := pump(ctx, it)
	defer stop()
	var recs []engine.Record
	var idem []engine.IdemEntry // the idempotency entries shipped with recs
	for {
		var m jetstream.Msg
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return fmt.Errorf("connection lost: %w", nonNil(nc.LastError()))
		case m, ok = <-msgs:
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
		recs, idem = recs[:0], idem[:0]
		var lastSeq uint64
		var mk *marker
		for {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("message metadata: %w", err)
			}
			if m.Subject() == EpochSubject(f.cfg.Depot) {
				k, err := parseMarker(m.Headers(), md.Sequence.Stream)
				if err != nil {
					return err
				}
				mk = &k
			} else {
				r, err := decodeRecord(m)
				if err != nil {
					return fmt.Errorf("the record at stream seq %d: %w", md.Sequence.Stream, err)
				}
				recs = append(recs, r)
				// Its idempotency entry, when its write stored one (a
				// message shipped before entries travelled has none).
				// One that does not decode is left out, loudly: the
				// record itself is sound, and the standby must follow.
				if ie, ok, err := decodeIdem(m.Headers(), r.LSN); err != nil {
					f.log.Error("standby: the idempotency entry shipped with a record does not decode; the record is applied without it (a retry of its write would be applied again once promoted)",
						"stream_seq", md.Sequence.Stream, "lsn", r.LSN, "err", err)
				} else if ok {
					idem = append(idem, ie)
				}
			}
			lastSeq = md.Sequence.Stream
			f.pending.Store(md.NumPending)
			if len(recs) >= 4096 {
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
		if len(recs) > 0 {
			// Not cut by ctx: an apply the committer took completes, so
			// that a stopped follower's seq is exactly what the store
			// holds (Promote fences on it).
			if _, err := f.e.ApplyFollowedIdem(context.WithoutCancel(ctx), recs, idem); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("apply lsn %d..%d: %w", recs[0].LSN, recs[len(recs)-1].LSN, err)
			}
			f.applied.Add(uint64(len(recs)))
		}
		f.mu.Lock()
		f.seq = lastSeq
		if mk != nil && mk.epoch >= f.epoch {
			f.epoch, f.markerSeq = mk.epoch, mk.seq
		}
		close(f.wake)
		f.wake = make(chan struct{})
		f.mu.Unlock()
		f.saveSeq(lastSeq, false)
	}
}

// decodeRecord reads a shipped record (Message).
func decodeRecord(m jetstream.Msg) (engine.Record, error) {
	var b Message
	if err := json.Unmarshal(m.Data(), &b); err != nil {
		return engine.Record{}, err
	}
	r := engine.Record{LSN: b.LSN, Table: b.Table, Key: b.Key, Version: b.Version, Actor: b.Actor, CommittedAt: b.CommittedAt.UTC()}
	switch b.Op {
	case "put":
		r.Op, r.Value = engine.OpPut, []byte(b.Value)
	case "delete":
		r.Op = engine.OpDelete
	default:
		return r, fmt.Errorf("unknown op %q", b.Op)
	}
	if b.LSN == 0 {
		return r, errors.New("no lsn")
	}
	return r, nil
}

// PromoteResult is what a promotion answers.
type PromoteResult struct {
	Depot     string `json:"depot"`
	Epoch     uint64 `json:"epoch"`      // the epoch this box writes now
	LastLSN   uint64 `json:"last_lsn"`   // the last record applied from the stream; new writes follow it
	MarkerSeq uint64 `json:"marker_seq"` // the stream sequence of the new epoch's marker
	TookMs    int64  `json:"took_ms"`
}

// ErrNotFollowing answers Promote on a follower already promoted.
var ErrNotFollowing = errors.New("standby: already promoted")

// Promote makes this box the depot's writer: it publishes the next epoch's
// marker (expecting the depot's last marker to be the one it read, so two
// promotions cannot both win), from which on the stream refuses the old
// primary's records; applies everything the stream holds of the depot up
// to the marker; and writes the uplink's state file at the last LSN
// applied, with the new epoch. The caller then starts the uplink and
// lets the engine take writes (engine.Promote). It fails, changing
// nothing, when the stream cannot be reached within ctx.
func (f *Follower) Promote(ctx context.Context) (PromoteResult, error) {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	if f.promoted.Load() {
		return PromoteResult{}, ErrNotFollowing
	}
	f.promoting.Store(true)
	defer f.promoting.Store(false)
	t0 := time.Now()
	nc, js, st, err := f.dial(ctx)
	if err != nil {
		return PromoteResult{}, err
	}
	defer nc.Close()
	if !f.connected.Load() {
		// Not following now: the stream up to the marker could not be
		// applied; better not to fence the primary for nothing.
		return PromoteResult{}, errors.New("the follower is not connected to the stream now (see last_error in GET /v1/uplink); try again")
	}
	// The fence first: the marker of the next epoch, stored only if the
	// depot's last marker is still the one read (another standby did not
	// win meanwhile). From it on, JetStream refuses the old primary's
	// records; those it stored before the marker are the depot's history,
	// applied next.
	cctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	mk, err := lastMarker(cctx, st, f.cfg.Depot)
	cancel()
	if err != nil {
		return PromoteResult{}, err
	}
	epoch := mk.epoch + 1
	cctx, cancel = context.WithTimeout(ctx, f.cfg.Timeout)
	seq, err := publishMarker(cctx, js, f.cfg.Depot, epoch, f.e.DurableLSN(), EpochSubject(f.cfg.Depot), mk.seq)
	cancel()
	if IsFenceRefusal(err) {
		return PromoteResult{}, fmt.Errorf("another box claimed the depot's next epoch meanwhile (promoted too?): %w", err)
	}
	if err != nil {
		return PromoteResult{}, fmt.Errorf("publish the epoch %d marker: %w", epoch, err)
	}
	f.log.Warn("standby: fenced the old primary (epoch marker published); applying the rest of its records", "depot", f.cfg.Depot, "epoch", epoch, "marker_seq", seq)
	// Everything up to the marker: the old primary's last records.
	if err := f.waitSeq(ctx, seq); err != nil {
		return PromoteResult{}, fmt.Errorf("the epoch %d marker is published (the old primary is fenced), but applying the stream up to it failed; promote again: %w", epoch, err)
	}
	f.stopRun()
	lastLSN := f.e.DurableLSN()
	// The uplink ships from here: exact (nothing in flight), the new
	// epoch. Written before the engine takes a write.
	if err := writeState(f.cfg.UplinkStateFile, state{AckedLSN: lastLSN, Depot: f.cfg.Depot, Stream: f.cfg.Stream, Exact: true, Epoch: epoch}); err != nil {
		f.startRun() // still a standby: promote again (it claims the next epoch)
		return PromoteResult{}, fmt.Errorf("the epoch %d marker is published but the uplink's state could not be written; promote again: %w", epoch, err)
	}
	f.mu.Lock()
	f.epoch, f.markerSeq = epoch, seq
	f.mu.Unlock()
	f.promoted.Store(true)
	f.log.Warn("STANDBY PROMOTED: this box is the depot's writer now; the old primary's later records are refused by the stream",
		"depot", f.cfg.Depot, "epoch", epoch, "last_lsn", lastLSN, "marker_seq", seq, "took", time.Since(t0).Round(time.Millisecond))
	return PromoteResult{Depot: f.cfg.Depot, Epoch: epoch, LastLSN: lastLSN, MarkerSeq: seq, TookMs: time.Since(t0).Milliseconds()}, nil
}

// waitSeq waits until the follower has applied the stream up to seq.
func (f *Follower) waitSeq(ctx context.Context, seq uint64) error {
	for {
		f.mu.Lock()
		at, wake := f.seq, f.wake
		f.mu.Unlock()
		if at >= seq {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			f.lastErrMu.Lock()
			le := f.lastErr
			f.lastErrMu.Unlock()
			if le != "" {
				return fmt.Errorf("%w (at seq %d; last error: %s)", ctx.Err(), at, le)
			}
			return fmt.Errorf("%w (at seq %d)", ctx.Err(), at)
		}
	}
}

// FollowStatus is the follower's part of GET /v1/uplink.
type FollowStatus struct {
	Role        string `json:"role"` // "standby", "promoting", or "primary" once promoted
	Depot       string `json:"depot"`
	Stream      string `json:"stream"`
	URL         string `json:"url"`
	Connected   bool   `json:"connected"`
	StreamSeq   uint64 `json:"stream_seq"`  // the stream sequence of the last message applied
	Pending     uint64 `json:"pending"`     // messages of the depot in the stream not yet applied (at the last one read)
	Epoch       uint64 `json:"epoch"`       // the stream's epoch of the depot (the primary's), or this box's once promoted
	AppliedLSN  uint64 `json:"applied_lsn"` // the last LSN applied and durable here
	Applied     uint64 `json:"applied_records"`
	Sessions    uint64 `json:"sessions"`
	LastError   string `json:"last_error,omitempty"`
	LastErrorAt string `json:"last_error_at,omitempty"`
}

// Status reports the follower's position.
func (f *Follower) Status() FollowStatus {
	s := FollowStatus{Role: "standby", Depot: f.cfg.Depot, Stream: f.cfg.Stream, URL: redact(f.cfg.URL), Connected: f.connected.Load(),
		Applied: f.applied.Load(), Sessions: f.sessions.Load(), Pending: f.pending.Load()}
	switch {
	case f.promoted.Load():
		s.Role = "primary"
	case f.promoting.Load():
		s.Role = "promoting"
	}
	f.mu.Lock()
	s.StreamSeq, s.Epoch = f.seq, f.epoch
	f.mu.Unlock()
	if f.e != nil {
		s.AppliedLSN = f.e.DurableLSN()
	}
	f.lastErrMu.Lock()
	s.LastError = f.lastErr
	if !f.lastErrAt.IsZero() {
		s.LastErrorAt = f.lastErrAt.UTC().Format(time.RFC3339)
	}
	f.lastErrMu.Unlock()
	return s
}

// String names the epoch for logs.
func (s PromoteResult) String() string {
	return "epoch " + strconv.FormatUint(s.Epoch, 10) + " after lsn " + strconv.FormatUint(s.LastLSN, 10)
}

// pump reads it on a goroutine of its own into msgs (buffered, so that the
// reader runs ahead of the apply); the first error of it.Next goes to errc
// and ends msgs. stop stops the iterator and waits for the goroutine to
// end. Used by the standby's follower and the central view alike.
func pump(ctx context.Context, it jetstream.MessagesContext) (msgs <-chan jetstream.Msg, errc <-chan error, stop func()) {
	out := make(chan jetstream.Msg, 1024)
	ec := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			m, err := it.Next()
			if err != nil {
				ec <- err
				return
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, ec, func() {
		it.Stop()
		for range out { // let the reader end
		}
	}
}
