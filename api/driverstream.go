package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"routehound/engine"
)

// driverFrame is one client frame on /v1/drivers/stream.
type driverFrame struct {
	Driver *string         `json:"driver"`
	Points json.RawMessage `json:"points"`
}

// maxStreamDrivers bounds the drivers one stream may report for (a
// telematics gateway multiplexes a fleet; a phone sends one).
const maxStreamDrivers = 10000

// driverStream serves GET /v1/drivers/stream: drivers send frames
// {"driver","points":[…]} and the server answers each with
// {"driver","accepted","duplicates","durable_seq"} at once, then sends
// {"driver","durable_seq"} as that driver's points become durable. After a
// reconnect a client resends every point above the last durable_seq it
// received: duplicates are dropped by seq, so nothing is lost or doubled.
// Refusals are {"type":"error","code","message","driver"}; nothing of that
// frame was accepted, and a lane_full refusal says when to resend
// (retry_after_ms: the lane's queue over its measured drain rate).
func (s *Server) driverStream(w http.ResponseWriter, r *http.Request) {
	if err := checkHandshake(r); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true}) // bearer-authenticated: no ambient credential to guard
	if err != nil {
		return
	}
	c.SetReadLimit(s.cfg.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ds := newDurableNotifier(s, c)
	defer ds.close()
	var lastFrame atomic.Int64 // unix nanoseconds of the last frame read
	lastFrame.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ds.run(ctx) }()
	go func() { defer wg.Done(); s.streamKeepalive(ctx, cancel, c, &lastFrame) }()
	defer wg.Wait()
	defer cancel()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			c.CloseNow()
			return
		}
		lastFrame.Store(time.Now().UnixNano())
		driver, points, ok := scanFrame(data)
		if !ok {
			var f driverFrame
			if err := strict(data, &f); err != nil {
				ds.sendError("", err)
				continue
			}
			if f.Driver == nil {
				ds.sendError("", invalid("driver", "required"))
				continue
			}
			driver, points = *f.Driver, f.Points
		}
		if err := checkName("driver", driver); err != nil {
			ds.sendError(driver, err)
			continue
		}
		if len(points) == 0 {
			ds.sendError(driver, invalid("points", "required (one point or an array)"))
			continue
		}
		// The HTTP path's admission (postLocations): a full lane refuses
		// the frame before its points cost any CPU, and a decode slot
		// bounds the bodies decoding at once.
		if err := s.admitDriverBody(ctx, driver); err != nil {
			ds.sendError(driver, err)
			continue
		}
		pts, err := DecodePoints(points, s.e.Config().Lanes[engine.LaneDriver].QueueBound)
		<-s.driverSlots
		if err != nil {
			s.e.Reject(engine.LaneDriver, codeOf(err))
			ds.sendError(driver, err)
			continue
		}
		if err := ds.track(driver); err != nil {
			ds.sendError(driver, err)
			continue
		}
		ack, err := s.e.SubmitPoints(ctx, driver, pts) // waits for room itself (engine.Config.RoomWait)
		if err != nil {
			ds.sendError(driver, err)
			continue
		}
		var top uint64
		for _, p := range pts {
			top = max(top, p.Seq)
		}
		ds.expect(driver, top, ack.DurableSeq)
		ds.write(appendAck(nil, driver, ack))
	}
}

// scanFrame reads a frame as drivers send it, {"driver":"…","points":…}
// (either order, a plain ASCII driver name, the points an array or an
// object), without encoding/json: decoding the frame into a RawMessage
// scanned and copied every point once more before DecodePoints read them,
// 15 % of the server's CPU under a stream flood (BENCHMARKS.md). It
// answers ok = false for anything else (escapes, other keys, other
// spellings, duplicates), which goes to the strict decoder. The points are
// only delimited here; DecodePoints validates them whole, so a frame is
// accepted only when the strict decoder would also accept it
// (FuzzScanFrameAgrees).
func scanFrame(b []byte) (driver string, points []byte, ok bool) {
	i := jsonSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", nil, false
	}
	i = jsonSpace(b, i+1)
	have := 0
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return "", nil, false
		}
		i = jsonSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return "", nil, false
		}
		i = jsonSpace(b, i+1)
		switch {
		case string(key) == "driver" && have&1 == 0:
			s, j, ok := plainString(b, i)
			if !ok {
				return "", nil, false
			}
			driver, i, have = string(s), j, have|1
		case string(key) == "points" && have&2 == 0:
			j, ok := bracketEnd(b, i)
			if !ok {
				return "", nil, false
			}
			points, i, have = b[i:j], j, have|2
		default:
			return "", nil, false
		}
		i = jsonSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = jsonSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' && have == 3 && jsonSpace(b, i+1) == len(b) {
			return driver, points, true
		}
		return "", nil, false
	}
}

func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string of printable ASCII without escapes at
// b[i]: its bytes and the offset past its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	s := i + 1
	for i = s; i < len(b) && b[i] != '"'; i++ {
		if c := b[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, i, false
		}
	}
	if i >= len(b) {
		return nil, i, false
	}
	return b[s:i], i + 1, true
}

// bracketEnd answers the offset past the array or object that opens at
// b[i], matching brackets outside strings; the contents are not checked.
func bracketEnd(b []byte, i int) (int, bool) {
	if i >= len(b) || (b[i] != '[' && b[i] != '{') {
		return i, false
	}
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return i, false
			}
		}
	}
	return i, false
}

// streamKeepalive pings the driver stream's peer every StreamPing and
// closes the stream when a ping is not answered within streamWriteTimeout
// (a peer gone without a FIN), or when no frame came for StreamIdle.
func (s *Server) streamKeepalive(ctx context.Context, cancel context.CancelFunc, c *websocket.Conn, lastFrame *atomic.Int64) {
	ping, idle := s.cfg.StreamPing, s.cfg.StreamIdle
	if ping <= 0 {
		ping = 15 * time.Second
	}
	tick := ping
	if idle > 0 {
		tick = min(tick, max(idle/4, time.Millisecond))
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if idle > 0 && now.Sub(time.Unix(0, lastFrame.Load())) > idle {
				c.Close(websocket.StatusPolicyViolation, "idle")
				cancel()
				return
			}
			if now.Sub(lastPing) < ping {
				continue
			}
			lastPing = now
			pctx, pc := context.WithTimeout(ctx, streamWriteTimeout)
			err := c.Ping(pctx)
			pc()
			if err != nil {
				if ctx.Err() == nil {
					c.Close(websocket.StatusPolicyViolation, "no pong")
				}
				cancel()
				return
			}
		}
	}
}

// streamWriteTimeout bounds one write (or ping) on the driver stream.
const streamWriteTimeout = 5 * time.Second

func codeOf(err error) string {
	if ae, ok := err.(*apiError); ok {
		return ae.code
	}
	return "error"
}

// durableNotifier tells one stream's client when its drivers' points become
// durable. It watches the stream's own drivers (engine.WatchDriver: the
// committer wakes it when one of their durable seqs moves, nobody else's)
// and then reads the durable seq of those with points in flight; a frame's
// new points have only their own driver read.
type durableNotifier struct {
	s     *Server
	c     *websocket.Conn
	moved chan struct{} // cap 1: "a durable seq of this stream's drivers moved"

	mu    sync.Mutex
	sent  map[string]uint64   // durable_seq last sent per driver
	want  map[string]uint64   // highest seq in flight per driver; empty when all is durable
	fresh map[string]struct{} // drivers whose want grew since run last looked
	wake  chan struct{}       // cap 1: "fresh is not empty"
	stops []func()            // ends the watches, when the stream ends
}

func newDurableNotifier(s *Server, c *websocket.Conn) *durableNotifier {
	return &durableNotifier{s: s, c: c, moved: make(chan struct{}, 1), sent: map[string]uint64{}, want: map[string]uint64{},
		fresh: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// track watches a driver the first time the stream reports for it.
func (d *durableNotifier) track(driver string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.sent[driver]; ok {
		return nil
	}
	if len(d.sent) >= maxStreamDrivers {
		return errorf(http.StatusTooManyRequests, "too_many_drivers", "one stream reports for at most %d drivers", maxStreamDrivers)
	}
	stop, err := d.s.e.WatchDriver(driver, d.moved)
	if err != nil {
		return err
	}
	d.stops = append(d.stops, stop)
	d.sent[driver] = 0
	return nil
}

// close ends the stream's watches.
func (d *durableNotifier) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, stop := range d.stops {
		stop()
	}
	d.stops = nil
}

func (d *durableNotifier) expect(driver string, top, durable uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sent[driver] = max(d.sent[driver], durable)
	if top > d.sent[driver] {
		d.want[driver] = max(d.want[driver], top)
		d.fresh[driver] = struct{}{}
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

func (d *durableNotifier) run(ctx context.Context) {
	type upd struct {
		driver string
		seq    uint64
	}
	var look []string
	var out []upd
	all := true
	for {
		// A move after the reads below leaves a wake-up pending on
		// d.moved: none is lost. The durable seqs are read without d.mu
		// (DriverDurableSeq takes the driver's own lock, which a
		// submission may hold while it waits for room): the read loop's
		// track and expect never wait behind them.
		look, out = look[:0], out[:0]
		d.mu.Lock()
		if all {
			for drv := range d.want {
				look = append(look, drv)
			}
		} else {
			for drv := range d.fresh {
				if _, ok := d.want[drv]; ok {
					look = append(look, drv)
				}
			}
		}
		clear(d.fresh)
		d.mu.Unlock()
		for _, drv := range look {
			cur, err := d.s.e.DriverDurableSeq(drv)
			if err != nil {
				continue
			}
			out = append(out, upd{drv, cur})
		}
		d.mu.Lock()
		n := 0
		for _, u := range out {
			if u.seq > d.sent[u.driver] {
				d.sent[u.driver] = u.seq
				out[n] = u
				n++
			}
			if want, ok := d.want[u.driver]; ok && u.seq >= want {
				delete(d.want, u.driver)
			}
		}
		out = out[:n]
		d.mu.Unlock()
		for _, u := range out {
			if d.write(appendDurable(nil, u.driver, u.seq)) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
			all = false
		case <-d.moved:
			all = true
		}
	}
}

func (d *durableNotifier) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return d.write(b)
}

func (d *durableNotifier) write(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), streamWriteTimeout)
	defer cancel()
	return d.c.Write(ctx, websocket.MessageText, b)
}

// appendAck and appendDurable write the stream's two frequent frames by
// hand (encoding/json of a map per frame was the stream's largest cost
// after the points). Driver names need no escaping: fleet.CheckName
// allows letters, digits and ._-:@~ only.
func appendAck(b []byte, driver string, ack engine.DriverAck) []byte {
	b = append(b, `{"driver":"`...)
	b = append(b, driver...)
	b = append(b, `","accepted":`...)
	b = strconv.AppendInt(b, int64(ack.Accepted), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(ack.Duplicates), 10)
	b = append(b, `,"durable_seq":`...)
	b = strconv.AppendUint(b, ack.DurableSeq, 10)
	return append(b, '}')
}

func appendDurable(b []byte, driver string, seq uint64) []byte {
	b = append(b, `{"driver":"`...)
	b = append(b, driver...)
	b = append(b, `","durable_seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

func (d *durableNotifier) sendError(driver string, err error) {
	_, code, msg := d.s.describe(err)
	m := map[string]any{"type": "error", "code": code, "message": msg}
	if driver != "" {
		m["driver"] = driver
	}
	if errors.Is(err, engine.ErrLaneFull) {
		// No header on a frame: the wait goes in the body.
		m["retry_after_ms"] = max(d.s.retryAfter(err).Milliseconds(), 1)
	}
	d.send(m)
}
