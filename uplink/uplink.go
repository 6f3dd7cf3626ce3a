// Package uplink ships the committed log to a NATS JetStream stream.
//
// One goroutine follows the engine's durability feed (a Cursor) and
// publishes every durable record, in LSN order, to the subject
// routehound.<depot>.<table> with the header Nats-Msg-Id <depot>/<lsn>, so
// that JetStream drops a re-sent record as a duplicate, and the idempotency
// entry its write stored, if any (HeaderIdem), so that a standby answers a
// retry as this box would. Publishing is
// asynchronous with a bounded window of acknowledgements in flight; the
// acknowledgements are taken in order, so the last LSN JetStream
// acknowledged (Acked) is the end of a gapless prefix of the log. That LSN
// is stored in a small file (uplink.json: the LSN, the depot and the
// stream; written atomically, fsynced), and each connect compares it with
// the stream's last message of the depot (resume): a first session after
// a file written mid-session moves forward to it (a crash between the
// stream's ack and the file's write); later sessions, and one after a file
// written with nothing in flight (exact), re-send from Acked (a refused
// publish or a lost ack: the Nats-Msg-Id drops what the stream has), and
// a stream behind Acked (its tail lost, deleted, recreated) is shipped
// again from its last record. That last record is also compared with this store's record at
// its LSN: another history of the depot (another box shipping as it, a
// store restored from an older backup) stops the uplink for good (Refused).
// A record JetStream refuses maxRefusals sessions in a row (too large) is
// skipped, counted as dropped and logged as an error.
//
// The uplink never slows a writer: it only reads the feed. When NATS is
// down or slow it falls behind and reconnects with backoff; the engine's
// retention keeps the records it has not shipped (RetainAfter, hooked into
// engine.Retention) until the log reaches the disk budget, past which the
// oldest unshipped records go: the uplink then skips them with an error
// log line and routehound_uplink_dropped_records_total.
package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
)

// Config configures the uplink.
type Config struct {
	URL    string // NATS server URL(s), comma-separated
	Depot  string // this box's name in the subjects and message ids
	Stream string // the JetStream stream (created over routehound.<depot>.> when absent; an existing one must cover it)
	// MaxInFlight bounds the published records whose acknowledgement is
	// awaited. (The disk budget is the engine's: Retention.RetainMaxBytes.)
	MaxInFlight int
	// StateFile keeps the last acknowledged LSN (with the depot and the
	// stream: a file of another one is ignored).
	StateFile string
	// AckTimeout is how long an acknowledgement may take before the
	// session is ended and the records after Acked re-sent.
	AckTimeout time.Duration
	// MaxBackoff bounds the wait between two connection attempts.
	MaxBackoff time.Duration
	// OnFenced is called once, from the uplink's goroutine, when the
	// stream's epoch of the depot is newer than this box's: a standby was
	// promoted in its place (fence.go). The appliance makes the engine
	// refuse writes (not_primary).
	OnFenced func(why string)
}

// CheckDepot reports whether name can be a depot: 1 to 64 letters, digits,
// - and _ (one token of a NATS subject).
func CheckDepot(name string) error {
	if name == "" || len(name) > 64 {
		return errors.New("depot must be 1 to 64 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("depot %q: only letters, digits, - and _ are allowed (it is a token of the NATS subject)", name)
		}
	}
	return nil
}

// Uplink is the log shipper. Open it before the engine (its RetainAfter
// goes into the engine's retention), Start it once the engine runs, and
// Close it before the store closes.
type Uplink struct {
	cfg Config
	log *slog.Logger
	e   *engine.Engine

	acked     atomic.Uint64 // end of the gapless prefix JetStream acknowledged (or retention dropped)
	haveState bool          // the state file existed at Open
	saved     uint64        // what the state file holds; run's goroutine only
	// exact: acked is the end of what the stream holds of the log, give
	// or take re-sends the Nats-Msg-Id drops (set by a session's resume,
	// or by a state file written between sessions); when false, the stream
	// may hold more (a crash mid-session) and resume moves acked to its
	// last record. run's goroutine only.
	exact      bool
	savedExact bool   // the state file says exact
	failLSN    uint64 // the LSN JetStream refused last, failCount times in a row; run's goroutine only
	failCount  int
	// skipFrom..skipTo: the last run of records skipped because JetStream
	// refused them (not in the stream, and not a lost tail); run's
	// goroutine only.
	skipFrom, skipTo uint64

	// epoch is this box's epoch as the depot's writer (fence.go; 0: none
	// claimed yet), kept in the state file; markerSeq is the stream
	// sequence of its marker, which every record expects (run's goroutine
	// only).
	epoch     atomic.Uint64
	markerSeq uint64
	// Atomic batches (batch.go), run's goroutine only: the records up to
	// aloneUntil go alone (the stream may hold them, or a batch holding
	// them was refused); batchMax bounds a batch's records.
	aloneUntil uint64
	batchMax   int
	batchIDs   batchIDs
	// fence: records expect the epoch's marker (a Limits stream); a
	// WorkQueue or Interest stream removes what its consumers took, the
	// marker too, so there records are not fenced. run's goroutine only.
	fence      bool
	fenced     atomic.Bool   // a newer epoch is in the stream: shipping stopped for good, writes refused
	fencedBy   atomic.Uint64 // that epoch; kept in the state file, so a restart stays fenced
	connected  atomic.Bool
	refused    atomic.Bool            // the stream holds another history of this depot: shipping stopped for good
	shipped    atomic.Uint64          // records acknowledged since start
	batches    atomic.Uint64          // atomic batches acknowledged since start (batch.go)
	warning    atomic.Pointer[string] // Status.Warning (nil: none)
	dropped    atomic.Uint64          // unshipped records retention removed
	sessions   atomic.Uint64          // connections made
	failures   atomic.Uint64          // sessions that ended in an error
	headAt     atomic.Int64           // unix nanos: commit time of the oldest record in flight (0: none)
	lastErrMu  sync.Mutex
	lastErr    string
	lastErrAt  time.Time
	ackMu      sync.Mutex    // guards ackCh
	ackCh      chan struct{} // closed when acked moves, while someone waits (WaitAcked)
	cancel     context.CancelFunc
	done       chan struct{}
	closeOnce  sync.Once
	saveFailed atomic.Bool
}

// Open reads the uplink's state file (its last acknowledged LSN).
func Open(cfg Config, log *slog.Logger) (*Uplink, error) {
	if err := CheckDepot(cfg.Depot); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	if cfg.URL == "" || cfg.Stream == "" || cfg.StateFile == "" {
		return nil, errors.New("uplink: the NATS URL, the stream and the state file must be set")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{cfg: cfg, log: log.With("part", "uplink"), done: make(chan struct{}), batchMax: maxBatchRecords, batchIDs: newBatchIDs()}
	st, ok, err := readState(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	if ok && (st.Depot != "" && st.Depot != cfg.Depot || st.Stream != "" && st.Stream != cfg.Stream) {
		// Another depot's or stream's position: shipping starts anew
		// (Start), the stream tells what it holds.
		u.log.Warn("the uplink's state file is of another depot or stream; ignored, shipping starts from the log's first retained record",
			"file", cfg.StateFile, "file_depot", st.Depot, "file_stream", st.Stream, "depot", cfg.Depot, "stream", cfg.Stream, "file_acked_lsn", st.AckedLSN)
		st, ok = state{}, false
	}
	u.setAcked(st.AckedLSN)
	u.epoch.Store(st.Epoch)
	if st.FencedBy > 0 {
		u.fenced.Store(true)
		u.fencedBy.Store(st.FencedBy)
	}
	u.saved, u.haveState = st.AckedLSN, ok
	u.exact, u.savedExact = ok && st.Exact, ok && st.Exact
	return u, nil
}

// RetainAfter is the engine's retention hook: the records after the LSN it
// answers are not shipped yet.
func (u *Uplink) RetainAfter() uint64 { return u.acked.Load() }

// Acked is the last LSN JetStream acknowledged: it and every record before
// it are in the stream (or were dropped by retention, counted in Dropped).
func (u *Uplink) Acked() uint64 { return u.acked.Load() }

// Start starts shipping from the engine's feed.
func (u *Uplink) Start(e *engine.Engine) {
	u.e = e
	if !u.haveState {
		// First start: ship the log from its oldest retained record.
		if first := e.StoreStats().FirstLSN; first > 0 {
			u.setAcked(first - 1)
		}
		// Stored at once: a later start must count what retention drops
		// from here on, not start again at the log's new first record.
		if err := u.store(u.acked.Load(), false); err != nil {
			u.log.Error("cannot store the uplink's starting point", "err", err)
		} else {
			u.saved, u.haveState = u.acked.Load(), true
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	go u.run(ctx)
}

// Close stops the uplink and stores its last acknowledged LSN. Records not
// yet acknowledged are shipped by the next start.
func (u *Uplink) Close() error {
	var err error
	u.closeOnce.Do(func() {
		if u.cancel == nil {
			return
		}
		u.cancel()
		<-u.done
		if a := u.acked.Load(); a != u.saved || !u.savedExact {
			err = u.store(a, true)
		}
	})
	return err
}

func (u *Uplink) setErr(err error) {
	u.lastErrMu.Lock()
	u.lastErr, u.lastErrAt = err.Error(), time.Now()
	u.lastErrMu.Unlock()
}

func (u *Uplink) run(ctx context.Context) {
	defer close(u.done)
	if u.fenced.Load() {
		// Fenced before this start (the state file says so): no session,
		// and writes refused from the start.
		fe := &fencedError{own: u.epoch.Load(), stream: u.fencedBy.Load()}
		u.setErr(fe)
		u.log.Error("UPLINK FENCED: this box was fenced by a promoted standby before this start (uplink.json); nothing is shipped and writes are refused (not_primary) until this box is rebuilt as a standby",
			"depot", u.cfg.Depot, "stream", u.cfg.Stream, "own_epoch", fe.own, "stream_epoch", fe.stream)
		if u.cfg.OnFenced != nil {
			u.cfg.OnFenced(fe.Error())
		}
		<-ctx.Done()
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		before := u.shipped.Load()
		err := u.session(ctx)
		u.connected.Store(false)
		u.headAt.Store(0)
		u.persist(true)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, engine.ErrStopped) {
			// Every durable record was read and the engine stopped:
			// nothing more will come; Close ends the goroutine.
			<-ctx.Done()
			return
		}
		u.failures.Add(1)
		u.setErr(err)
		var fe *fencedError
		if errors.As(err, &fe) {
			// Sticky: a standby was promoted in this box's place; its
			// records follow in the stream, this box's must not. Writes
			// are refused first (OnFenced), so that once Fenced reads
			// true no write is taken (TestStandbyFollowsPromotesAndFences
			// took one in that gap).
			if u.cfg.OnFenced != nil {
				u.cfg.OnFenced(fe.Error())
			}
			u.fencedBy.Store(fe.stream)
			u.fenced.Store(true)
			if err := u.store(u.acked.Load(), true); err != nil {
				u.log.Error("cannot store that this box is fenced; a restart learns it again from the stream", "err", err)
			} else {
				u.saved, u.savedExact = u.acked.Load(), true
			}
			u.log.Error("UPLINK FENCED: a standby was promoted in this box's place (the stream's epoch of the depot is newer); nothing more is shipped and writes are refused (not_primary) until this box is rebuilt as a standby",
				"depot", u.cfg.Depot, "stream", u.cfg.Stream, "own_epoch", fe.own, "stream_epoch", fe.stream, "acked_lsn", u.acked.Load())
			<-ctx.Done()
			return
		}
		var ref *refusal
		if errors.As(err, &ref) {
			// Sticky: shipping would mix two histories under one
			// depot; only an operator can tell which one is right.
			u.refused.Store(true)
			u.log.Error("UPLINK REFUSED: the stream holds another history of this depot; nothing more is shipped until a restart with another depot, or the stream fixed",
				"depot", u.cfg.Depot, "stream", u.cfg.Stream, "reason", ref.reason)
			<-ctx.Done()
			return
		}
		u.refusedRecord(err)
		if u.shipped.Load() > before {
			backoff = 100 * time.Millisecond // it worked for a while: start the backoff again
		}
		u.log.Warn("NATS session ended; shipping resumes after a reconnect (writes go on)", "err", err,
			"acked_lsn", u.acked.Load(), "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, u.cfg.MaxBackoff)
	}
}

// maxRefusals is how many sessions in a row JetStream may refuse the same
// record for its size (larger than the stream's max_msg_size, or than the
// server's max_payload) before
// the uplink skips it. Skipping loses the record for the stream, so it is
// counted in dropped and logged as an error; not skipping would stop the
// depot's shipping for good behind one record.
const maxRefusals = 5

// refusedRecord counts the sessions that ended with JetStream refusing the
// record after the acknowledged LSN, and skips it after maxRefusals in a
// row.
func (u *Uplink) refusedRecord(err error) {
	var pe *publishError
	if !errors.As(err, &pe) || !pe.permanent() || pe.lsn != u.acked.Load()+1 {
		return
	}
	if pe.lsn != u.failLSN {
		u.failLSN, u.failCount = pe.lsn, 0
	}
	u.failCount++
	if u.failCount < maxRefusals {
		u.log.Error("JetStream refused a record; it is sent again at the next session, and skipped after repeated refusals",
			"lsn", pe.lsn, "refusals", u.failCount, "skip_after", maxRefusals, "err", pe.err)
		return
	}
	u.dropped.Add(1)
	u.setAcked(pe.lsn)
	u.failLSN, u.failCount = 0, 0
	if u.skipTo == 0 || pe.lsn != u.skipTo+1 {
		u.skipFrom = pe.lsn
	}
	u.skipTo = pe.lsn
	u.log.Error("UPLINK DROPPED RECORDS: JetStream refused a record at every attempt; skipped, it is not in the stream",
		"lsn", pe.lsn, "refusals", maxRefusals, "err", pe.err, "records", 1)
	u.persist(true)
}

// publishError is JetStream's refusal (or the client's) of one record.
type publishError struct {
	lsn uint64
	err error
}

func (e *publishError) Error() string { return fmt.Sprintf("publish lsn %d: %v", e.lsn, e.err) }
func (e *publishError) Unwrap() error { return e.err }

// permanent reports whether the refusal is the record's own: too large for
// the stream or the server, refused again however often it is sent. Other
// refusals (a full stream that discards new messages, a timeout, no
// responders) are not the record's: skipping records would not help, the
// uplink retries them for ever.
func (e *publishError) permanent() bool {
	var api *jetstream.APIError
	return errors.As(e.err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum ||
		errors.Is(e.err, nats.ErrMaxPayload)
}

// persist stores the acknowledged LSN when it moved, and whether it is
// exact: written between sessions (nothing in flight), the next start
// sends again what follows it; written during one, the next start trusts
// the stream's last record past it. A failure is logged once per run of
// failures: the stream's own last record still tells the next start where
// to resume.
func (u *Uplink) persist(exact bool) {
	a := u.acked.Load()
	if a == u.saved && exact == u.savedExact {
		return
	}
	if err := u.store(a, exact); err != nil {
		if !u.saveFailed.Swap(true) {
			u.log.Error("cannot store the last shipped LSN; the next start asks the stream instead", "err", err)
		}
		return
	}
	u.saveFailed.Store(false)
	u.saved, u.savedExact = a, exact
}

// inflight is one published record awaiting its acknowledgement.
type inflight struct {
	lsn   uint64    // the last record of the unit (an atomic batch's commit)
	first uint64    // its first record
	n     int       // records in the unit
	batch bool      // an atomic batch (batch.go)
	at    time.Time // committed
	fut   jetstream.PubAckFuture
	ddl   time.Time // acknowledgement deadline
	ok    bool      // acknowledged (the future's channel holds its one value only once)
}

// Subject is the subject of a table's records.
func Subject(depot, table string) string { return "routehound." + depot + "." + table }

// MsgID is a record's Nats-Msg-Id.
func MsgID(depot string, lsn uint64) string { return depot + "/" + strconv.FormatUint(lsn, 10) }

// ParseMsgID is the LSN of a Nats-Msg-Id of depot.
func ParseMsgID(depot, id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, depot+"/")
	if !ok {
		return 0, false
	}
	lsn, err := strconv.ParseUint(rest, 10, 64)
	return lsn, err == nil
}

// Message is the JSON body of a shipped record: the fields of GET /v1/log.
type Message struct {
	LSN         uint64          `json:"lsn"`
	Depot       string          `json:"depot"`
	Table       string          `json:"table"`
	Key         string          `json:"key"`
	Op          string          `json:"op"`
	Value       json.RawMessage `json:"value"`
	Version     uint64          `json:"version"`
	Actor       string          `json:"actor"`
	CommittedAt time.Time       `json:"committed_at"`
}

// HeaderIdem carries, on a record whose write stored an idempotency entry
// (an Idempotency-Key's answer, a phone point's seq), that entry: JSON of
// IdemHeader. A standby stores it with the record, so that once promoted
// it answers a retry as the primary would have. A record without it (none
// stored, expired before it was shipped, or shipped by a version before
// it) is applied alone.
const HeaderIdem = "Routehound-Idem"

// IdemHeader is the value of HeaderIdem.
type IdemHeader struct {
	Scope     string `json:"scope"`                // the lane's name, or "phone"
	Key       []byte `json:"key"`                  // the Idempotency-Key (base64: any bytes)
	Answer    []byte `json:"answer"`               // what the write stored as its answer (base64)
	ExpiresAt int64  `json:"expires_at,omitempty"` // Unix seconds; absent: never expires
}

// idemHeader encodes an idempotency entry for HeaderIdem.
func idemHeader(ie *engine.IdemEntry) (string, error) {
	h := IdemHeader{Scope: ie.Scope, Key: []byte(ie.Key), Answer: ie.Answer}
	if !ie.ExpiresAt.IsZero() {
		h.ExpiresAt = ie.ExpiresAt.Unix()
	}
	b, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("encode the idempotency entry of lsn %d: %w", ie.LSN, err)
	}
	return string(b), nil
}

// decodeIdem reads the HeaderIdem of the record at lsn: ok is false when
// there is none.
func decodeIdem(h nats.Header, lsn uint64) (ie engine.IdemEntry, ok bool, err error) {
	v := h.Get(HeaderIdem)
	if v == "" {
		return ie, false, nil
	}
	var b IdemHeader
	if err := json.Unmarshal([]byte(v), &b); err != nil {
		return ie, false, fmt.Errorf("header %s: %w", HeaderIdem, err)
	}
	if b.Scope == "" || len(b.Key) == 0 || b.ExpiresAt < 0 {
		return ie, false, fmt.Errorf("header %s: no scope, no key or a negative expiry", HeaderIdem)
	}
	ie = engine.IdemEntry{LSN: lsn, Scope: b.Scope, Key: string(b.Key), Answer: b.Answer}
	if b.ExpiresAt > 0 {
		ie.ExpiresAt = time.Unix(b.ExpiresAt, 0).UTC()
	}
	return ie, true, nil
}

// idemEntries reads the unexpired idempotency entries of recs (LSNs in a
// row, as a cursor returns them), in LSN order.
func (u *Uplink) idemEntries(recs []engine.Record, out []engine.IdemEntry) ([]engine.IdemEntry, error) {
	if len(recs) == 0 {
		return out, nil
	}
	first, last := recs[0].LSN, recs[len(recs)-1].LSN
	err := u.e.IdemEntries(first-1, last, func(ie engine.IdemEntry) error {
		out = append(out, ie)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("read the idempotency entries of lsn %d..%d: %w", first, last, err)
	}
	return out, nil
}

// message is the message of record r, with its idempotency entry ie (nil:
// none).
func (u *Uplink) message(r *engine.Record, ie *engine.IdemEntry) (*nats.Msg, error) {
	v := json.RawMessage(r.Value)
	if len(v) == 0 {
		v = json.RawMessage("null")
	}
	body, err := json.Marshal(Message{LSN: r.LSN, Depot: u.cfg.Depot, Table: r.Table, Key: r.Key, Op: r.Op.String(), Value: v,
		Version: r.Version, Actor: r.Actor, CommittedAt: r.CommittedAt.UTC()})
	if err != nil {
		return nil, fmt.Errorf("encode lsn %d: %w", r.LSN, err)
	}
	m := nats.NewMsg(Subject(u.cfg.Depot, r.Table))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, MsgID(u.cfg.Depot, r.LSN))
	m.Header.Set(HeaderLSN, strconv.FormatUint(r.LSN, 10))
	// The fence (fence.go): stored only while this epoch's marker is the
	// depot's last.
	m.Header.Set(HeaderEpoch, strconv.FormatUint(u.epoch.Load(), 10))
	if u.fence {
		m.Header.Set(hdrExpectSeq, strconv.FormatUint(u.markerSeq, 10))
		m.Header.Set(hdrExpectSubj, EpochSubject(u.cfg.Depot))
	}
	if ie != nil && ie.LSN == r.LSN && !ie.Expired(time.Now()) {
		v, err := idemHeader(ie)
		if err != nil {
			return nil, err
		}
		m.Header.Set(HeaderIdem, v)
	}
	return m, nil
}

// connect opens a NATS connection that does not reconnect by itself: a
// lost connection ends the session, and the next one resumes from what the
// stream holds, so nothing buffered across a reconnect can land out of
// order.
func (u *Uplink) connect(ctx context.Context) (*conn, error) {
	closed := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(u.cfg.URL, nats.NoReconnect(), nats.Name("routehound uplink "+u.cfg.Depot),
		nats.Timeout(2*time.Second), nats.ReconnectBufSize(-1),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { close(closed) }) }))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.cfg.URL, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(u.cfg.MaxInFlight+1),
		jetstream.WithPublishAsyncTimeout(u.cfg.AckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	st, err := js.Stream(cctx, u.cfg.Stream)
	created := false
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: u.cfg.Stream, Subjects: []string{"routehound." + u.cfg.Depot + ".>"},
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
		if err == nil {
			created = true
			u.log.Info("created the JetStream stream", "stream", u.cfg.Stream, "subjects", "routehound."+u.cfg.Depot+".>")
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("stream %s: %w", u.cfg.Stream, err)
	}
	if subj := "routehound." + u.cfg.Depot + ".>"; !created && !coversAny(st.CachedInfo().Config.Subjects, subj) {
		// Publishing would get "no responders" for ever.
		nc.Close()
		err := fmt.Errorf("the stream %s's subjects %q do not cover %s: add it to the stream's subjects, or set [uplink] stream to another stream",
			u.cfg.Stream, st.CachedInfo().Config.Subjects, subj)
		return nil, err
	}
	return &conn{nc: nc, js: js, st: st, closed: closed, created: created}, nil
}

// coversAny reports whether one of the filters matches every subject subj
// matches (subj's only wildcard is a final >).
func coversAny(filters []string, subj string) bool {
	for _, f := range filters {
		if covers(f, subj) {
			return true
		}
	}
	return false
}

func covers(filter, subj string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, f := range ft {
		if f == ">" {
			return true
		}
		if i >= len(st) || st[i] == ">" || f != "*" && f != st[i] {
			return false
		}
	}
	return false // filter has fewer tokens: subj's > reaches further
}

// conn is one session's connection and stream.
type conn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	st      jetstream.Stream
	closed  <-chan struct{}
	created bool // connect created the stream
}

// resume sets where this session ships from after what the stream holds
// of this depot (its last record):
//   - ahead of acked, on the first session since Open: the state file is
//     behind (a crash between JetStream's ack and the file's write), acked
//     moves there; on a later session acked is exact and the records
//     after it are sent again (a refused publish, a lost acknowledgement;
//     the Nats-Msg-Id drops what the stream has);
//   - behind acked, or none at all in a stream connect just created: the
//     stream lost what was acknowledged (its tail lost, deleted, purged,
//     recreated): acked goes back there, with a warning, and the records
//     are sent again (those retention removed meanwhile are counted as
//     dropped). Only for a Limits stream: a WorkQueue or Interest stream
//     removes what was consumed.
func (u *Uplink) resume(ctx context.Context, st jetstream.Stream, created bool) error {
	acked := u.acked.Load()
	limits := st.CachedInfo().Config.Retention == jetstream.LimitsPolicy
	cctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	m, err := st.GetLastMsgForSubject(cctx, DepotSubjects(u.cfg.Depot))
	if err == nil && m.Subject == EpochSubject(u.cfg.Depot) {
		// An epoch marker: the depot's last record is the one it names
		// (a standby promoted at it, or this box's claim).
		mk, merr := parseMarker(m.Header, m.Sequence)
		if merr != nil {
			return merr
		}
		if last := u.e.StoreStats().LastLSN; mk.lsn > last {
			return &refusal{fmt.Sprintf("the stream %s holds depot %s up to lsn %d (epoch %d marker), but this store ends at lsn %d: another box ships as %s, or this store was restored from an older backup",
				u.cfg.Stream, u.cfg.Depot, mk.lsn, mk.epoch, last, u.cfg.Depot)}
		}
		if mk.lsn > acked {
			return u.resumeAt(mk.lsn, acked, limits)
		}
		// A marker's lsn is a lower bound (a promoted standby publishes
		// it before it applied the records just before it): no rewind.
		return nil
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if acked > 0 && limits && (created || !trims(st.CachedInfo().Config)) && !u.allSkipped(0, acked) {
			u.log.Warn("UPLINK REWIND: the stream holds no record of this depot, yet acked_lsn says records were shipped (the stream was deleted, purged or recreated); shipping the log again from its first retained record",
				"stream", u.cfg.Stream, "created", created, "acked_lsn", acked)
			u.setAcked(0)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("the stream's last record of depot %s: %w", u.cfg.Depot, err)
	}
	lsn, ok := ParseMsgID(u.cfg.Depot, m.Header.Get(jetstream.MsgIDHeader))
	if !ok {
		return fmt.Errorf("the stream's last record of depot %s (seq %d) has no Nats-Msg-Id %s/<lsn>", u.cfg.Depot, m.Sequence, u.cfg.Depot)
	}
	if err := u.sameHistory(lsn, m); err != nil {
		return err
	}
	return u.resumeAt(lsn, acked, limits)
}

// resumeAt sets where the session ships from when the stream's last record
// of the depot is at lsn (resume).
func (u *Uplink) resumeAt(lsn, acked uint64, limits bool) error {
	switch {
	case lsn > acked:
		if u.exact {
			// acked is exact (this process took every acknowledgement,
			// or its state file was written between sessions), and what
			// the stream holds past it came after a record it did not
			// store (a refused publish, a lost acknowledgement): send
			// again from acked, the Nats-Msg-Id drops what the stream
			// already has; they go alone, not in an atomic batch, which
			// a duplicate makes refused whole (batch.go).
			u.aloneUntil = max(u.aloneUntil, lsn)
			return nil
		}
		// The state file may be behind the stream (a crash between
		// JetStream's ack and the file's write).
		u.setAcked(lsn)
	case lsn < acked && limits && !u.allSkipped(lsn, acked):
		// (Not when every record after the stream's last was skipped
		// because JetStream refused it.)
		u.log.Warn("UPLINK REWIND: the stream's last record of this depot is behind acked_lsn (the stream lost its tail, or was recreated); shipping again from it",
			"stream", u.cfg.Stream, "stream_last_lsn", lsn, "acked_lsn", acked)
		u.setAcked(lsn)
	}
	return nil
}

// refusal is the stream holding another history of the depot than this
// store's: the uplink stops shipping for good (until a restart).
type refusal struct{ reason string }

func (r *refusal) Error() string { return "refusing to ship: " + r.reason }

// sameHistory checks that the stream's last record of the depot, m at lsn,
// is this store's record at lsn (table, key, op, version, commit time). A
// store restored from an older backup, or another box shipping as this
// depot, has another record there, or none yet: shipping would mix two
// histories under one depot. A record retention already removed here
// cannot be compared, and is taken as this store's.
func (u *Uplink) sameHistory(lsn uint64, m *jetstream.RawStreamMsg) error {
	why := func(what string) error {
		return &refusal{fmt.Sprintf("the stream %s holds depot %s up to lsn %d, %s: another box ships as %s, or this store was restored from an older backup",
			u.cfg.Stream, u.cfg.Depot, lsn, what, u.cfg.Depot)}
	}
	if lsn == 0 {
		return why("its last record has lsn 0")
	}
	if last := u.e.StoreStats().LastLSN; lsn > last {
		return why(fmt.Sprintf("but this store ends at lsn %d", last))
	}
	var local *engine.Record
	err := u.e.ReadLog(lsn-1, 1, func(r engine.Record) error {
		if r.LSN == lsn {
			local = &r
		}
		return nil
	})
	if errors.Is(err, engine.ErrTrimmed) || err == nil && local == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lsn %d to compare it with the stream's: %w", lsn, err)
	}
	var body Message
	if err := json.Unmarshal(m.Data, &body); err != nil {
		return why(fmt.Sprintf("its last record (seq %d) is not a RouteHound record: %v", m.Sequence, err))
	}
	if body.LSN != lsn || body.Depot != u.cfg.Depot || body.Table != local.Table || body.Key != local.Key || body.Op != local.Op.String() ||
		body.Version != local.Version || !body.CommittedAt.Equal(local.CommittedAt) {
		return why(fmt.Sprintf("and its record at lsn %d (%s/%s version %d committed %s) is not this store's (%s/%s version %d committed %s)",
			lsn, body.Table, body.Key, body.Version, body.CommittedAt.Format(time.RFC3339Nano),
			local.Table, local.Key, local.Version, local.CommittedAt.UTC().Format(time.RFC3339Nano)))
	}
	return nil
}

// allSkipped reports whether every record in (after, acked] was skipped
// because JetStream refused it.
func (u *Uplink) allSkipped(after, acked uint64) bool {
	return u.skipFrom > 0 && u.skipFrom <= after+1 && acked <= u.skipTo
}

// trims reports whether the stream's limits may remove records by
// themselves (age, count, size): then a depot without records in it may
// have had them removed, not lost.
func trims(c jetstream.StreamConfig) bool {
	return c.MaxAge > 0 || c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxMsgsPerSubject > 0
}

var errAckTimeout = errors.New("no acknowledgement within the ack timeout")

// session ships until the connection fails or ctx ends.
func (u *Uplink) session(ctx context.Context) error {
	c, err := u.connect(ctx)
	if err != nil {
		return err
	}
	nc, js, closed := c.nc, c.js, c.closed
	defer nc.Close()
	// A marker published on the depot's epoch subject while this session
	// runs (a standby promoting) is a hint: the stream's last marker says
	// whether it took (a refused claim reaches core subscribers too).
	// Watched before the epoch is first read and claimed: a standby that
	// claimed its epoch between this box's claim and a later subscription
	// went unseen, and this box, fenced, still took writes until its next
	// record was refused (TestTwoStandbysOnePromotion, both promotions
	// answered).
	epochHint := make(chan struct{}, 1)
	hintSub, err := nc.Subscribe(EpochSubject(u.cfg.Depot), func(*nats.Msg) {
		select {
		case epochHint <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("watch the depot's epoch: %w", err)
	}
	defer hintSub.Unsubscribe()
	if err := nc.Flush(); err != nil { // the server has the subscription before the epoch is read
		return fmt.Errorf("watch the depot's epoch: %w", err)
	}
	// The fence first: a box whose epoch is over must not even compare
	// histories (the promoted standby's records follow its own).
	mk, err := u.checkEpoch(ctx, c.st)
	if err != nil {
		return err
	}
	if err := u.resume(ctx, c.st, c.created); err != nil {
		return err
	}
	if mk.epoch > 0 && u.epoch.Load() == 0 {
		// A box that never held an epoch, with the same history as the
		// stream (resume compared them), finds a writer's epoch: a
		// standby was promoted past this box's records, or this box was
		// its primary before fencing existed.
		return &fencedError{own: 0, stream: mk.epoch}
	}
	if err := u.claimEpoch(ctx, c, mk); err != nil {
		return err
	}
	u.fence = c.st.CachedInfo().Config.Retention == jetstream.LimitsPolicy
	// window bounds the units in flight (a record, or an atomic batch).
	// On a replicated stream (R3) JetStream refuses ("wrong last
	// sequence") a message that expects a subject's last sequence while
	// another one expecting it is still in process (proposed, not yet
	// applied): the fenced records all expect the marker's, so there they
	// go one unit at a time (TestThreeNodeClusterNodeKilledWhileShipping),
	// each an atomic batch when the stream allows them (batch.go).
	window := u.cfg.MaxInFlight
	batch := false
	u.warning.Store(nil)
	if info := c.st.CachedInfo().Config; u.fence && info.Replicas > 1 {
		window = 1
		batch = info.AllowAtomicPublish
		if !batch {
			w := fmt.Sprintf("the stream %s is replicated (%d replicas) and does not allow atomic batches: the uplink ships one record per cluster commit (a few thousand records/s), below a peak's driver rate; set allow_atomic on the stream (atomic batch publish, nats-server 2.12 or later)",
				u.cfg.Stream, info.Replicas)
			u.warning.Store(&w)
			u.log.Warn(w, "stream", u.cfg.Stream, "replicas", info.Replicas)
		}
	}
	// limit is the largest message JetStream stores.
	limit := int(nc.MaxPayload())
	if ms := c.st.CachedInfo().Config.MaxMsgSize; ms > 0 && int(ms) < limit {
		limit = int(ms)
	}
	u.exact = true
	u.sessions.Add(1)
	u.connected.Store(true)
	u.log.Info("shipping the log to JetStream", "url", nc.ConnectedUrlRedacted(), "stream", u.cfg.Stream, "after_lsn", u.acked.Load())
	e := u.e
	cur := e.Follow(u.acked.Load())
	var pending []inflight // oldest first
	// held are records read but not yet published (the window was full):
	// published first next time round. Seeking the cursor back instead
	// made it read a whole chunk again for every record sent one at a
	// time (an R3 fenced stream: 4096 records read per record shipped).
	// The cursor has read past them; a session's cursor and held end
	// together.
	var held []engine.Record
	// heldIdem: the idempotency entries of held (and maybe of records
	// before them), in LSN order, read with them.
	var heldIdem []engine.IdemEntry
	// refusedNow is a record the client refused to publish: the session
	// takes the acknowledgements of the records before it, then ends.
	var refusedNow error
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ackTimer := time.NewTimer(time.Hour)
	defer ackTimer.Stop()
	for {
		ch := e.Notify()
		// Take the acknowledgements that arrived, in order.
		n := 0
		var refused error
	acks:
		for ; n < len(pending); n++ {
			if pending[n].ok {
				continue
			}
			select {
			case <-pending[n].fut.Ok():
				pending[n].ok = true
			case err := <-pending[n].fut.Err():
				refused = u.unitRefused(pending[n], err)
				break acks
			default:
				break acks
			}
		}
		if n > 0 {
			u.setAcked(pending[n-1].lsn)
			for _, p := range pending[:n] {
				u.shipped.Add(uint64(p.n))
				if p.batch {
					u.batches.Add(1)
				}
			}
			pending = pending[:copy(pending, pending[n:])]
			u.headAt.Store(0)
			if len(pending) > 0 {
				u.headAt.Store(pending[0].at.UnixNano())
			}
		}
		if refused != nil {
			return refused // the records before it are acknowledged
		}
		if refusedNow != nil && len(pending) == 0 {
			return refusedNow
		}
		if refusedNow == nil && len(pending) < window && (len(held) > 0 || cur.After() < e.DurableLSN()) {
			recs, idem := held, heldIdem
			held, heldIdem = nil, nil
			var err error
			fresh := len(recs) == 0
			if fresh {
				recs, err = cur.Next(ctx)
			}
			if errors.Is(err, engine.ErrTrimmed) {
				if err := u.skipTrimmed(ctx, cur, pending, closed); err != nil {
					return err
				}
				pending = pending[:0]
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, engine.ErrStopped) {
					return err
				}
				return fmt.Errorf("read the log after lsn %d: %w", cur.After(), err)
			}
			if fresh {
				// The records' idempotency entries travel with them (a
				// standby answers a retry as this box would).
				if idem, err = u.idemEntries(recs, nil); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err // the next session reads the records again
				}
			}
			if batch {
				if recs, idem, err = u.gather(ctx, cur, recs, idem); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err // the next session reads the records again
				}
			}
			for i := 0; i < len(recs); {
				r := &recs[i]
				if len(pending) >= window {
					held, heldIdem = recs[i:], idem // the rest next time round
					break
				}
				m, err := u.message(r, idemFor(&idem, r.LSN))
				if err != nil {
					return err
				}
				n, fut := 1, jetstream.PubAckFuture(nil)
				inBatch := batch && u.batchable(r.LSN, m, limit)
				if inBatch {
					n, fut, err = u.publishBatch(nc, js, recs[i:], m, &idem, limit)
					if err != nil && n == 0 {
						return err // a record's message could not be made
					}
				} else {
					fut, err = js.PublishMsgAsync(m)
				}
				if err != nil && inBatch {
					// The client refused a message of the batch: its
					// records go alone next, where a refusal names one
					// (not for a lost connection, nothing the records
					// did: a partial batch never commits).
					if !lostConn(err) {
						u.aloneUntil = max(u.aloneUntil, recs[i+n-1].LSN)
					}
					refusedNow = &batchError{first: r.LSN, last: recs[i+n-1].LSN, err: err}
					break
				}
				if err != nil {
					refusedNow = &publishError{r.LSN, err}
					break
				}
				if len(pending) == 0 {
					u.headAt.Store(r.CommittedAt.UnixNano())
				}
				pending = append(pending, inflight{lsn: recs[i+n-1].LSN, n: n, first: r.LSN, batch: inBatch, at: r.CommittedAt, fut: fut, ddl: time.Now().Add(u.cfg.AckTimeout)})
				i += n
			}
			continue
		}
		var okc <-chan *jetstream.PubAck
		var errc <-chan error
		if len(pending) > 0 {
			okc, errc = pending[0].fut.Ok(), pending[0].fut.Err()
			ackTimer.Reset(time.Until(pending[0].ddl))
		}
		wake := ch
		if len(pending) >= window {
			wake = nil // the window is full: only an acknowledgement moves us
		}
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return fmt.Errorf("connection lost: %w", nonNil(nc.LastError()))
		case <-okc:
			pending[0].ok = true // taken at the top of the loop
		case err := <-errc:
			return u.unitRefused(pending[0], err)
		case <-ackTimer.C:
			return u.unitRefused(pending[0], errAckTimeout)
		case <-wake:
		case <-tick.C:
			u.persist(false) // records in flight may be in the stream already
		case <-epochHint:
			if _, err := u.checkEpoch(ctx, c.st); err != nil {
				return err // fenced: the records in flight are refused anyway
			}
		}
		if okc != nil {
			ackTimer.Stop()
		}
	}
}

func nonNil(err error) error {
	if err == nil {
		return errors.New("closed")
	}
	return err
}

// skipTrimmed handles records retention removed before they were shipped
// (the log passed the uplink's disk budget): it waits for the records in
// flight, then counts and logs the gap, loudly, and goes on after it.
func (u *Uplink) skipTrimmed(ctx context.Context, cur *engine.Cursor, pending []inflight, closed <-chan struct{}) error {
	for _, p := range pending {
		if p.ok {
			u.setAcked(p.lsn)
			u.shipped.Add(uint64(p.n))
			continue
		}
		t := time.NewTimer(time.Until(p.ddl))
		select {
		case <-p.fut.Ok():
		case err := <-p.fut.Err():
			t.Stop()
			return u.unitRefused(p, err)
		case <-t.C:
			return u.unitRefused(p, errAckTimeout)
		case <-closed:
			t.Stop()
			return errors.New("connection lost")
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
		u.setAcked(p.lsn)
		u.shipped.Add(uint64(p.n))
	}
	from := cur.After()
	first := u.e.StoreStats().FirstLSN
	if first == 0 || first-1 <= from {
		return fmt.Errorf("the log after lsn %d is trimmed but its first lsn is %d", from, first)
	}
	to := first - 1
	u.dropped.Add(to - from)
	u.log.Error("UPLINK DROPPED RECORDS: retention removed records never shipped (the log passed [uplink] budget_mb while NATS was unreachable); they are not in the stream",
		"after_lsn", from, "through_lsn", to, "records", to-from)
	u.setAcked(to)
	cur.Seek(to)
	return nil
}

// Status is what GET /v1/uplink answers.
type Status struct {
	Enabled     bool    `json:"enabled"`
	URL         string  `json:"url,omitempty"`
	Depot       string  `json:"depot,omitempty"`
	Stream      string  `json:"stream,omitempty"`
	Connected   bool    `json:"connected"`
	Refused     bool    `json:"refused"` // the stream holds another history of this depot: shipping stopped (last_error tells why)
	Fenced      bool    `json:"fenced"`  // a standby was promoted in this box's place: shipping stopped, writes refused (not_primary)
	Epoch       uint64  `json:"epoch"`   // this box's epoch as the depot's writer (0: none claimed yet)
	AckedLSN    uint64  `json:"acked_lsn"`
	DurableLSN  uint64  `json:"durable_lsn"`
	LagRecords  uint64  `json:"lag_records"`
	LagSeconds  float64 `json:"lag_seconds"`
	Shipped     uint64  `json:"shipped_records"`
	Dropped     uint64  `json:"dropped_records"`
	Sessions    uint64  `json:"sessions"`
	Failures    uint64  `json:"failures"`
	LastError   string  `json:"last_error,omitempty"`
	LastErrorAt string  `json:"last_error_at,omitempty"`
	// AtomicBatches: atomic batches JetStream acknowledged since start
	// (a fenced replicated stream with allow_atomic, batch.go).
	AtomicBatches uint64 `json:"atomic_batches"`
	// Warning: the last session's stream is replicated without
	// allow_atomic, so it ships one record per cluster commit.
	Warning string `json:"warning,omitempty"`
}

// Status reports the uplink's position and lag.
func (u *Uplink) Status() Status {
	s := Status{Enabled: true, URL: redact(u.cfg.URL), Depot: u.cfg.Depot, Stream: u.cfg.Stream, Connected: u.connected.Load(), Refused: u.refused.Load(),
		Fenced: u.fenced.Load(), Epoch: u.epoch.Load(),
		AckedLSN: u.acked.Load(), Shipped: u.shipped.Load(), Dropped: u.dropped.Load(), Sessions: u.sessions.Load(), Failures: u.failures.Load(),
		AtomicBatches: u.batches.Load()}
	if w := u.warning.Load(); w != nil {
		s.Warning = *w
	}
	if u.e != nil {
		s.DurableLSN = u.e.DurableLSN()
	}
	if s.DurableLSN > s.AckedLSN {
		s.LagRecords = s.DurableLSN - s.AckedLSN
		s.LagSeconds = u.lagAge(s.AckedLSN).Seconds()
	}
	u.lastErrMu.Lock()
	s.LastError = u.lastErr
	if !u.lastErrAt.IsZero() {
		s.LastErrorAt = u.lastErrAt.UTC().Format(time.RFC3339)
	}
	u.lastErrMu.Unlock()
	return s
}

// lagAge is how long ago the oldest unacknowledged record was committed.
func (u *Uplink) lagAge(acked uint64) time.Duration {
	if ns := u.headAt.Load(); ns > 0 {
		return max(time.Since(time.Unix(0, ns)), 0)
	}
	if at, ok := u.e.DurableAt(acked + 1); ok {
		return max(time.Since(at), 0)
	}
	var at time.Time
	if err := u.e.ReadLog(acked, 1, func(r engine.Record) error { at = r.CommittedAt; return nil }); err != nil || at.IsZero() {
		return 0
	}
	return max(time.Since(at), 0)
}

// redact drops the user and password of each URL.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if sch := strings.Index(p, "://"); sch >= 0 && sch < at {
				parts[i] = p[:sch+3] + "***" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// state is the state file's content: the last acknowledged LSN and where
// it was shipped to (a file of another depot or stream says nothing of this
// one's). Files written before depot and stream were stored have them
// empty, and are taken as this configuration's.
//
// Exact says the file was written with nothing in flight (between two
// sessions, or at Close): the stream holds nothing of the depot past
// AckedLSN that it did not refuse or leave unacknowledged, so the next
// start sends again what follows AckedLSN. Without it (written during a
// session, or by an older version) the next start moves to the stream's
// last record when it is further.
type state struct {
	AckedLSN uint64 `json:"acked_lsn"`
	Depot    string `json:"depot,omitempty"`
	Stream   string `json:"stream,omitempty"`
	Exact    bool   `json:"exact,omitempty"`
	// Epoch is this box's epoch as the depot's writer (fence.go): stored
	// before its marker is published, so a crash in between never makes
	// the box take its own marker for a newer writer's.
	Epoch uint64 `json:"epoch,omitempty"`
	// FencedBy is the newer epoch that fenced this box: a restart refuses
	// writes at once, without a session.
	FencedBy uint64 `json:"fenced_by_epoch,omitempty"`
}

// readState reads the state file.
func readState(path string) (state, bool, error) {
	var st state
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("uplink: state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("uplink: state %s: %w", path, err)
	}
	return st, true, nil
}

// store writes the state file with acked.
func (u *Uplink) store(acked uint64, exact bool) error {
	return writeState(u.cfg.StateFile, state{AckedLSN: acked, Depot: u.cfg.Depot, Stream: u.cfg.Stream, Exact: exact, Epoch: u.epoch.Load(), FencedBy: u.fencedBy.Load()})
}

// writeState replaces the state file atomically: a temporary file,
// fsynced, renamed over it, and the directory fsynced.
func writeState(path string, st state) error {
	body, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("uplink: state: %w", err)
	}
	return writeFile(path, body)
}

// writeFile replaces a small file atomically: a temporary file, fsynced,
// renamed over it, and the directory fsynced.
func writeFile(path string, body []byte) error {
	var err error
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".uplink-*.tmp")
	if err != nil {
		return fmt.Errorf("uplink: state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(body, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("uplink: state %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("uplink: state dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("uplink: state dir %s: %w", dir, err)
	}
	return nil
}
