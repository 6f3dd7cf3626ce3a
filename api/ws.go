package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"routehound/engine"
	"routehound/fleet"
	"routehound/hub"
)

// wsIn is a client message on /v1/ws.
type wsIn struct {
	Op        string          `json:"op"` // subscribe | unsubscribe | put | delete
	Table     string          `json:"table"`
	From      *uint64         `json:"from"`
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	IfVersion *uint64         `json:"if_version"`
	ID        string          `json:"id"` // echoed in the ack or error of a put/delete
	// Batch (subscribe) asks for "changes" frames: every change waiting
	// for this subscriber goes out in one message. Without it, one
	// "change" frame per change, as before.
	Batch bool `json:"batch"`
}

// wsHandler serves GET /v1/ws: one WebSocket carries one table
// subscription at a time (subscribing again switches) and puts and deletes.
//
//	→ {"op":"subscribe","table":"t"[,"from":LSN][,"batch":true]}   {"op":"unsubscribe"}
//	→ {"op":"put","table","key","value"[,"if_version"][,"id"]}   {"op":"delete","table","key"[,"if_version"][,"id"]}
//	← {"type":"snapshot","table","lsn","rows":[…],"last":bool,"resync":bool}
//	← {"type":"resync","table","lsn"}   (drop what you hold; snapshot pages follow)
//	← {"type":"change","table","op":"put|delete","key","value","version","lsn"}   (without batch)
//	← {"type":"changes","table","changes":[{"op","key","value","version","lsn"},…]}   (with batch)
//	← {"type":"ack","id","op","table","key","version","lsn"}
//	← {"type":"error","code","message"[,"id"]}
//
// Mounted by MountHub behind allow(dashboard, admin): callers authenticate
// with the Authorization header, which a cross-site page cannot send, or
// (a browser: /v1/client.js) with the token subprotocol (wsTokenProtocol),
// which a page can only send if it holds the token; neither is ambient, so
// no Origin is checked here. The dashboard's cookie sessions reach it
// under SessionPrefix, where allowSession has checked the Origin before
// this handler runs, and the connection closes when the session ends. The
// handshake itself is checked first, so that a malformed one is answered
// like every other error.
//
// A connection runs two goroutines: a reader (wsConn.serve; this handler
// returns after the upgrade) and a writer (wsConn.writer) that runs the
// current subscription's stream and pings the peer. A burst of changes
// leaves in one write; with "batch" it is one "changes" message. The
// change frames are encoded whole by wsSink (header included: a server's
// frames are unmasked) and written to the socket as they are, not through
// the library's per-message path; everything else (snapshots, acks,
// errors, control frames) goes through the library, over wsOut.
func (s *Server) wsHandler(h *hub.Hub) func(http.ResponseWriter, *http.Request, Role) {
	return func(w http.ResponseWriter, r *http.Request, role Role) {
		if err := checkHandshake(r); err != nil {
			s.fail(w, r, err)
			return
		}
		cfg := h.Config()
		hj := &wsHijacker{ResponseWriter: w, timeout: cfg.WriteTimeout}
		// Bearer-authenticated (the header, or the token subprotocol): no
		// ambient credential to guard, so no Origin check. "routehound" is
		// selected when offered: a browser offering subprotocols closes a
		// connection that selects none.
		c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{InsecureSkipVerify: true, Subprotocols: []string{"routehound"}})
		if err != nil {
			return // Accept has answered
		}
		if hj.out == nil { // not hijacked through hj: cannot happen with net/http's server
			c.CloseNow()
			return
		}
		c.SetReadLimit(cfg.MaxMessageBytes)
		conn := &wsConn{s: s, h: h, c: c, out: hj.out, role: role, remote: r.RemoteAddr,
			writeTimeout: cfg.WriteTimeout, start: make(chan wsStream)}
		if sctx := sessionContext(r); sctx != nil {
			// A dashboard session's connection ends with the session
			// (logout, expiry): what it could read, it may no longer.
			conn.stopSession = context.AfterFunc(sctx, func() { conn.close(websocket.StatusPolicyViolation, "session ended") })
		}
		// The connection's reader is a goroutine of its own, so that this
		// handler returns: net/http's goroutine for the connection, its
		// grown stack, its request and its buffers are given back. The
		// request's context ends with it; the connection's own begins.
		go conn.serve(context.Background())
	}
}

type wsConn struct {
	s    *Server
	h    *hub.Hub
	c    *websocket.Conn
	out  *wsOut // the socket under c: holds a burst's frames for one write
	role Role   // a secret table (fleet.IsSecret) is admin's only
	// remote is the client connection, the owner of its subscriptions
	// (hub.max_subscribers_per_conn).
	remote string

	writeTimeout time.Duration // the heartbeat is h.Config()'s (read once per subscription change)

	ctx     context.Context // the connection's: set by serve before the writer starts
	start   chan wsStream   // the reader hands a new subscription to the writer
	pinging atomic.Bool     // a ping is in flight (at most one)

	// msgMu serializes whole messages on the socket: a message through
	// the library (sendRaw: snapshots, acks, errors, which the library may
	// hand to out in pieces) and the stream's change frames, which wsSink
	// encodes itself and writes to out in one piece (writeFrames). The
	// library's control frames (ping, pong, close) are one write to out
	// each and need no lock.
	msgMu sync.Mutex

	mu     sync.Mutex // guards the current stream
	cancel context.CancelFunc
	done   chan struct{}

	stopSession func() bool // a session's connection: stops the close at the session's end; nil otherwise
}

// wsStream is one subscription for the writer to run.
type wsStream struct {
	ctx  context.Context
	sub  *hub.Sub
	from *uint64
	sink *wsSink
	done chan struct{} // closed when the stream has ended
}

func (wc *wsConn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer wc.stopStream()
	if wc.stopSession != nil {
		defer wc.stopSession()
	}
	wc.ctx = ctx
	go wc.writer(ctx)
	for {
		var m wsIn
		// Read without a context deadline: the library would register a
		// context.AfterFunc per read, held by every idle connection. What
		// ends the connection closes c, and so this read.
		_, data, err := wc.c.Read(context.Background())
		if err != nil {
			wc.c.CloseNow()
			return
		}
		if err := json.Unmarshal(data, &m); err != nil {
			wc.sendError("", errorf(http.StatusBadRequest, "bad_parameter", "message is not JSON: %v", err))
			continue
		}
		switch m.Op {
		case "subscribe":
			wc.subscribe(ctx, m.Table, m.From, m.Batch)
		case "unsubscribe":
			wc.stopStream()
		case "put", "delete":
			wc.write(ctx, m)
		default:
			wc.sendError(m.ID, errorf(http.StatusBadRequest, "bad_parameter", "op must be subscribe, unsubscribe, put or delete"))
		}
	}
}

// writer is the connection's second goroutine: it runs the subscription
// the reader hands it (one at a time; the hub's heartbeat then pings
// through wsSink.Heartbeat) and, between subscriptions, pings the peer
// itself every heartbeat.
func (wc *wsConn) writer(ctx context.Context) {
	heartbeat := wc.heartbeat()
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-wc.start:
			t.Stop() // the stream's heartbeat pings meanwhile
			wc.run(st)
			t.Reset(heartbeat)
		case <-t.C:
			// Not a blocking ping: while it waited for the pong, a
			// subscribe read by the reader would wait for this goroutine
			// to take it, so the reader would never read the pong and
			// the ping would time out. A failed ping closes the
			// connection, which ends the reader and then serve.
			wc.pingAsync()
		}
	}
}

// heartbeat is the hub's ping interval. Not inlined: the hub's Config
// copied into writer's frame would stay on every idle connection's stack.
//
//go:noinline
func (wc *wsConn) heartbeat() time.Duration { return wc.h.Config().Heartbeat }

// ping pings the peer and waits for the pong; a peer that does not answer
// within the write timeout is closed (false).
func (wc *wsConn) ping(ctx context.Context) bool {
	pctx, pc := context.WithTimeout(ctx, wc.writeTimeout)
	err := wc.c.Ping(pctx)
	pc()
	if err != nil {
		wc.close(websocket.StatusPolicyViolation, "no pong")
		return false
	}
	return true
}

// pingAsync pings without holding up the stream that asks for it: the
// pong comes through the reader, and a stream must not wait a round trip
// (or, for a dead peer, a write timeout) while changes queue. At most one
// ping is in flight.
func (wc *wsConn) pingAsync() {
	if !wc.pinging.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer wc.pinging.Store(false)
		wc.ping(wc.ctx) // a failed ping closes the connection: the stream's next write fails
	}()
}

func (wc *wsConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return wc.sendRaw(b)
}

// sendRaw sends one message in one write. Held, the library's write only
// appends to wsOut (no context deadline needed: release has the timeout).
func (wc *wsConn) sendRaw(b []byte) error {
	wc.msgMu.Lock()
	defer wc.msgMu.Unlock()
	wc.out.hold()
	err := wc.c.Write(context.Background(), websocket.MessageText, b)
	if rerr := wc.out.release(); err == nil {
		err = rerr
	}
	return err
}

// errWSClosing refuses a change frame once the connection is closing.
var errWSClosing = errors.New("api: WebSocket closing")

// writeFrames writes complete frames (wsSink's) in one write, between
// whole messages, unless the connection is closing (wsOut refuses them
// once a close frame is, or is about to be, written).
func (wc *wsConn) writeFrames(b []byte) error {
	wc.msgMu.Lock()
	defer wc.msgMu.Unlock()
	return wc.out.writeFrames(b)
}

// close closes the connection with a close frame (the library's Close:
// it waits for the peer's close, a bounded time), after which no change
// frame is written.
func (wc *wsConn) close(code websocket.StatusCode, reason string) {
	wc.msgMu.Lock()
	wc.out.closing()
	wc.msgMu.Unlock()
	wc.c.Close(code, reason)
}

func (wc *wsConn) sendError(id string, err error) {
	_, code, msg := wc.s.describe(err)
	m := map[string]string{"type": "error", "code": code, "message": msg}
	if id != "" {
		m["id"] = id
	}
	wc.send(m)
}

func (wc *wsConn) stopStream() {
	wc.mu.Lock()
	cancel, done := wc.cancel, wc.done
	wc.cancel, wc.done = nil, nil
	wc.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// subscribe switches the connection to table (batch: "changes" frames).
// A refused subscription (bad name, table full) keeps the current one.
func (wc *wsConn) subscribe(ctx context.Context, table string, from *uint64, batch bool) {
	if fleet.CheckName("table", table) == nil {
		if err := checkRead(wc.role, table); err != nil {
			wc.sendError("", err)
			return
		}
	}
	sub, err := wc.h.SubscribeFrom(wc.remote, table)
	if err != nil {
		wc.sendError("", err)
		return
	}
	wc.stopStream()
	// Not a child of ctx (whose list of children would cost every
	// connection a map): serve's deferred stopStream cancels it.
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	wc.mu.Lock()
	wc.cancel, wc.done = cancel, done
	wc.mu.Unlock()
	st := wsStream{ctx: sctx, sub: sub, from: from, done: done, sink: &wsSink{wc: wc, table: table, batch: batch,
		redact: wc.role != RoleAdmin && table == fleet.TablePositions}}
	select {
	case wc.start <- st:
	case <-ctx.Done(): // the writer has stopped: the connection is ending
		sub.Close()
		close(done)
	}
}

// run runs one subscription's stream on the writer goroutine until it is
// stopped (stopStream), the hub closes it or a write fails.
func (wc *wsConn) run(st wsStream) {
	defer close(st.done)
	defer st.sub.Close()
	err := wc.h.Stream(st.ctx, st.sub, st.from, st.sink)
	var ce *hub.ClosedError
	switch {
	case errors.As(err, &ce):
		wc.send(map[string]string{"type": "close", "reason": ce.Reason})
		if ce.Reason == "slow_consumer" {
			wc.close(websocket.StatusPolicyViolation, "slow consumer")
		} else {
			wc.close(websocket.StatusGoingAway, ce.Reason)
		}
	case err != nil && st.ctx.Err() == nil:
		// The peer stopped reading (write timeout) or went away.
		wc.close(websocket.StatusPolicyViolation, "write failed")
	}
}

// write applies a put or delete through the tables lane; the answer comes
// after the fsync.
func (wc *wsConn) write(ctx context.Context, m wsIn) {
	if err := fleet.CheckName("table", m.Table); err != nil {
		wc.sendError(m.ID, err)
		return
	}
	if err := fleet.CheckKey(m.Key); err != nil {
		wc.sendError(m.ID, err)
		return
	}
	w := engine.Write{Table: m.Table, Key: m.Key, Delete: m.Op == "delete", IfVersion: engine.AnyVersion}
	if m.IfVersion != nil {
		w.IfVersion = *m.IfVersion
	}
	if !w.Delete {
		if len(m.Value) == 0 {
			wc.sendError(m.ID, errorf(http.StatusBadRequest, "bad_parameter", "put needs a value"))
			return
		}
		w.Value = compactJSON(m.Value)
	}
	res, err := wc.s.e.PutKey(ctx, w)
	if err != nil {
		wc.sendError(m.ID, err)
		return
	}
	wc.send(map[string]any{"type": "ack", "id": m.ID, "op": m.Op, "table": m.Table, "key": res.Key, "version": res.Version, "lsn": res.LSN})
}

// maxChangesFrame is the size, about, at which a "changes" frame is cut
// and the next one started (at least one change per frame).
const maxChangesFrame = 64 << 10

// keepFrameBuf is the largest frame buffer a sink keeps between bursts;
// a larger one (a burst of big values) is dropped once written.
const keepFrameBuf = 16 << 10

// maxChangeFrames is the most "change" frames (without batch) a sink
// holds before it writes them.
const maxChangeFrames = 64

// wsMaxHeader is the longest header of a frame from the server (no mask):
// 2 bytes, plus 8 for a 64-bit length.
const wsMaxHeader = 10

type wsSink struct {
	wc     *wsConn
	table  string
	batch  bool // "changes" frames; else one "change" frame per change
	redact bool // positions for a non-admin: no legacy device id (fleet.StripLegacyDevice)
	// buf holds the frames Change encoded and Flush has not written,
	// whole (headers included: they leave as they are, in one write,
	// without the library's per-message work): with batch, one "changes"
	// frame being built from start; without, "change" frames back to back
	// (frames of them). Reused from burst to burst (nil until the first
	// change), so that a change costs no allocation.
	buf    []byte
	start  int  // where the frame being built begins (its header's room)
	frames int  // complete frames in buf
	active bool // a change was sent since the last heartbeat
}

func (s *wsSink) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	if first && resync {
		if err := s.wc.send(map[string]any{"type": "resync", "table": s.table, "lsn": lsn}); err != nil {
			return err
		}
	}
	if s.redact {
		rows = slices.Clone(rows) // the hub reuses the array
		for i := range rows {
			rows[i].Value = fleet.StripLegacyDevice(rows[i].Value)
		}
	}
	return s.wc.send(map[string]any{"type": "snapshot", "table": s.table, "lsn": lsn, "rows": rows, "last": last, "resync": resync})
}

// openFrame starts a text frame at the end of buf, with room for its
// header (closeFrame fills it in once the payload's length is known).
func (s *wsSink) openFrame() {
	s.start = len(s.buf)
	s.buf = append(s.buf, make([]byte, wsMaxHeader)...)
}

// closeFrame writes the header of the frame openFrame started, final and
// unmasked as a server's are (RFC 6455 5.2), and moves the payload next
// to it.
func (s *wsSink) closeFrame() {
	payload := len(s.buf) - s.start - wsMaxHeader
	var h [wsMaxHeader]byte
	n := appendFrameHeader(h[:0], payload)
	copy(s.buf[s.start:], n)
	copy(s.buf[s.start+len(n):], s.buf[s.start+wsMaxHeader:])
	s.buf = s.buf[:len(s.buf)-(wsMaxHeader-len(n))]
	s.frames++
}

// appendFrameHeader appends the header of a final, unmasked text frame of
// n payload bytes.
func appendFrameHeader(b []byte, n int) []byte {
	const finText = 0x80 | 0x1
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xffff:
		return append(b, finText, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
	}
}

func (s *wsSink) Change(ev *hub.Event) error {
	s.active = true
	data := redactedData(ev, s.redact)
	if !s.batch {
		s.openFrame()
		s.buf = append(s.buf, `{"type":"change","table":`...)
		s.buf = strconv.AppendQuote(s.buf, ev.Table) // table names are [A-Za-z0-9._:@~-]: Go and JSON quoting agree
		s.buf = append(s.buf, `,"op":"`...)
		s.buf = append(s.buf, ev.OpName()...)
		s.buf = append(s.buf, `",`...)
		s.buf = append(s.buf, data[1:]...) // splice {"key",…} into the frame
		s.closeFrame()
		if s.frames >= maxChangeFrames {
			return s.Flush()
		}
		return nil
	}
	if len(s.buf) == 0 {
		s.openFrame()
		s.buf = append(s.buf, `{"type":"changes","table":`...)
		s.buf = strconv.AppendQuote(s.buf, s.table)
		s.buf = append(s.buf, `,"changes":[`...)
	} else {
		s.buf = append(s.buf, ',')
	}
	s.buf = append(s.buf, `{"op":"`...)
	s.buf = append(s.buf, ev.OpName()...)
	s.buf = append(s.buf, `",`...)
	s.buf = append(s.buf, data[1:]...)
	if len(s.buf) >= maxChangesFrame {
		return s.Flush()
	}
	return nil
}

// Flush writes what Change buffered in one write: with batch, one
// message; without, one message per change.
func (s *wsSink) Flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if s.batch {
		s.buf = append(s.buf, "]}"...)
		s.closeFrame()
	}
	err := s.wc.writeFrames(s.buf)
	if cap(s.buf) > keepFrameBuf {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	s.frames = 0
	return err
}

// Heartbeat pings the peer, without waiting for the pong here, and after a
// heartbeat interval without changes frees the buffers kept for the next
// burst: a subscriber that was busy once holds none while idle.
func (s *wsSink) Heartbeat() error {
	if !s.active {
		s.buf = nil
		s.wc.out.trim()
	}
	s.active = false
	s.wc.pingAsync()
	return nil
}

// redactedData is ev's {"key","value","version","lsn"} for a stream: the
// shared encoding, unless redact and the value holds a legacy device id
// (then a copy without it, for this subscriber only).
func redactedData(ev *hub.Event, redact bool) []byte {
	if redact {
		if v := fleet.StripLegacyDevice(ev.Value); len(v) != len(ev.Value) {
			row := hub.Row{Key: ev.Key, Value: v, Version: ev.Version, LSN: ev.LSN}
			return row.AppendJSON(nil)
		}
	}
	return ev.Data()
}

// compactJSON strips insignificant space from a put's value; a value that
// does not parse is kept as it came.
func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
