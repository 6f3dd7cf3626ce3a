package sim

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"routehound/fleet"
)

const (
	// maxPerRequest bounds the points of one request (a phone sends what it
	// buffered, in chunks well below the server's lane bound).
	maxPerRequest = 256
	// maxBuffered bounds a driver's unsent points: past it the phone stops
	// recording (counted as client_stalled) rather than drop a point, so
	// the seqs a driver sends stay contiguous and verifiable.
	maxBuffered = 4096
)

// driverSim is one simulated driver: it records a point every interval
// (jittered), keeps unsent points in a bounded buffer and sends them with
// at most one request in flight. Its fields are owned by its goroutine
// until the run's actors have stopped.
type driverSim struct {
	name string
	url  string
	rng  *rand.Rand

	seq      uint64             // last recorded
	pending  []fleet.PointValue // recorded, not yet accepted by the server
	accepted uint64             // highest seq the server accepted
	durable  atomic.Uint64      // highest durable_seq received (also from the stream's reader)
	last     []byte             // body of the last accepted request (resent to poll durable_seq)
	points   int64              // points recorded (offered)
	lat, lng float64
	heading  float64
	buf      []byte

	// sends records when each range of seqs was last put on the wire, so
	// that latencies are measured from the send, not from the recording (a
	// phone out of coverage holds its points for seconds). Read by viewers
	// and the verifier; bounded by the run's requests.
	mu    sync.Mutex
	sends []sendRec

	// useStream drivers report over /v1/drivers/stream (one WebSocket),
	// the others POST; stream is the open socket, owned by the driver's
	// goroutine.
	useStream bool
	reconnect bool
	target    Target
	stream    *driverStream
}

type sendRec struct {
	first, last uint64
	at          time.Time
}

// seeDurable raises the durable_seq the driver has been told.
func (d *driverSim) seeDurable(v uint64) {
	for cur := d.durable.Load(); v > cur && !d.durable.CompareAndSwap(cur, v); cur = d.durable.Load() {
	}
}

// sentAt is when the request carrying seq was last sent.
func (d *driverSim) sentAt(seq uint64) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.sends) - 1; i >= 0; i-- {
		if s := d.sends[i]; s.first <= seq && seq <= s.last {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func newDriver(name, base string, seed uint64) *driverSim {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	return &driverSim{name: name, url: base + "/v1/drivers/" + name + "/locations", rng: rng,
		lat: 52.40 + rng.Float64()*0.2, lng: 13.30 + rng.Float64()*0.2, heading: rng.Float64() * 360}
}

func (d *driverSim) record(now time.Time) {
	d.heading += d.rng.Float64()*40 - 20
	if d.heading < 0 {
		d.heading += 360
	} else if d.heading >= 360 {
		d.heading -= 360
	}
	d.lat = min(max(d.lat+(d.rng.Float64()-0.5)*0.001, -89), 89)
	d.lng = min(max(d.lng+(d.rng.Float64()-0.5)*0.001, -179), 179)
	d.seq++
	d.points++
	d.pending = append(d.pending, fleet.PointValue{Seq: d.seq, Lat: d.lat, Lng: d.lng, SpeedKmh: 20 + d.rng.Float64()*60, Heading: d.heading, TS: now})
}

// encode writes pts as one point or an array into the driver's buffer.
func (d *driverSim) encode(pts []fleet.PointValue) []byte {
	b := d.buf[:0]
	if len(pts) > 1 {
		b = append(b, '[')
	}
	for i := range pts {
		if i > 0 {
			b = append(b, ',')
		}
		b = pts[i].AppendJSON(b)
	}
	if len(pts) > 1 {
		b = append(b, ']')
	}
	d.buf = b
	return b
}

type driverAnswer struct {
	Accepted   uint64 `json:"accepted"`
	Duplicates uint64 `json:"duplicates"`
	DurableSeq uint64 `json:"durable_seq"`
}

// run records and sends until ctx ends. interval(now) is the current mean
// interval (the spike shortens it).
func (d *driverSim) run(ctx context.Context, c *http.Client, token string, rec *recorder, stalled *atomic.Int64,
	interval func(time.Time) time.Duration, offlineShare float64, sendEvery time.Duration) {
	jitter := func(now time.Time) time.Duration {
		m := interval(now)
		return m/2 + time.Duration(d.rng.Int64N(int64(m)))
	}
	next := time.Now().Add(time.Duration(d.rng.Int64N(int64(interval(time.Now())) + 1)))
	var offlineUntil, nextSend time.Time
	reconnect := false
	defer func() {
		if d.stream != nil {
			d.stream.close()
			d.stream = nil
		}
	}()
	for {
		// A phone that records faster than it may send wakes once per send,
		// not per point: the points of the ticks in between are recorded at
		// their tick times on waking (2,000 goroutines waking 25 times a
		// second would spend the shared CPU on timers, not on load).
		wake := next
		if sendEvery > 0 && nextSend.After(wake) && !time.Now().Before(offlineUntil) {
			wake = nextSend
		}
		if wait := time.Until(wake); wait > 0 && !sleep(ctx, wait) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		for !next.After(now) { // one point per elapsed tick, even when a slow answer delayed us
			if len(d.pending) < maxBuffered {
				d.record(next)
			} else {
				stalled.Add(1)
			}
			next = next.Add(jitter(now))
		}
		if now.Before(offlineUntil) {
			continue
		}
		if d.rng.Float64() < offlineShare {
			offlineUntil = now.Add(3*time.Second + time.Duration(d.rng.Int64N(int64(5*time.Second))))
			reconnect = true
			continue
		}
		if now.Before(nextSend) {
			continue
		}
		nextSend = now.Add(sendEvery)
		if !d.send(ctx, c, token, rec, &reconnect) {
			return
		}
	}
}

// send posts up to maxPerRequest pending points. It returns false after a
// refusal that a retry cannot fix (never expected: the bodies are valid);
// the driver then stops, so that its accepted seqs stay contiguous.
func (d *driverSim) send(ctx context.Context, c *http.Client, token string, rec *recorder, reconnect *bool) bool {
	n := min(len(d.pending), maxPerRequest)
	if n == 0 {
		return true
	}
	body := d.encode(d.pending[:n])
	var hdr []string
	if *reconnect { // back in coverage: this request's connection is closed after it, the next one is new
		hdr = []string{"Connection", "close"}
		*reconnect = false
		d.reconnect = true // a stream reconnects before sending
	}
	rec.offered.Add(1)
	t0 := time.Now()
	d.mu.Lock()
	d.sends = append(d.sends, sendRec{first: d.pending[0].Seq, last: d.pending[n-1].Seq, at: t0})
	d.mu.Unlock()
	if d.useStream {
		return d.sendStream(ctx, body, n, t0, rec)
	}
	a, err := do(ctx, c, http.MethodPost, d.url, token, body, hdr...)
	if err != nil || a.status != http.StatusAccepted {
		if ctx.Err() != nil && err != nil {
			return true // the run ended mid-request: the points stay unaccepted
		}
		rec.reject(reason(a, err))
		if err == nil && a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable {
			return false
		}
		sleep(ctx, backoff(a))
		return true
	}
	rec.ok(t0, time.Now())
	var ans driverAnswer
	if json.Unmarshal(a.body, &ans) == nil {
		d.seeDurable(ans.DurableSeq)
	}
	d.accept(n)
	return true
}

// accept drops the first n pending points: the server has them.
func (d *driverSim) accept(n int) {
	d.accepted = d.pending[n-1].Seq
	d.last = append(d.last[:0], encodeOne(d.pending[n-1])...)
	d.pending = append(d.pending[:0], d.pending[n:]...)
}

// retryable are the stream's error codes that mean "resend later" (the
// HTTP answers 429 and 503).
var retryable = map[string]bool{"lane_full": true, "too_many_drivers": true, "queue_timeout": true,
	"unavailable": true, "disk_low": true, "canceled": true}

// sendStream sends the points as one frame on the driver's stream,
// (re)connecting first when needed. A broken or silent socket is closed
// and the points are resent on a new one (duplicates are dropped by seq).
func (d *driverSim) sendStream(ctx context.Context, body []byte, n int, t0 time.Time, rec *recorder) bool {
	if d.reconnect && d.stream != nil {
		d.stream.close()
		d.stream = nil
	}
	d.reconnect = false
	if d.stream == nil {
		st, err := dialStream(ctx, d.target, d)
		if err != nil {
			if ctx.Err() == nil {
				rec.reject("transport")
				sleep(ctx, 200*time.Millisecond)
			}
			return true
		}
		d.stream = st
	}
	f, err := d.stream.exchange(ctx, d.name, body)
	if err != nil {
		d.stream.close()
		d.stream = nil
		if ctx.Err() == nil {
			rec.reject(reason(answer{}, err))
			sleep(ctx, 200*time.Millisecond)
		}
		return true
	}
	if f.Type == "error" {
		rec.reject(f.Code)
		if !retryable[f.Code] {
			return false
		}
		sleep(ctx, time.Second)
		return true
	}
	rec.ok(t0, time.Now())
	d.seeDurable(f.DurableSeq)
	d.accept(n)
	return true
}

func encodeOne(p fleet.PointValue) []byte {
	var d driverSim
	return append([]byte(nil), d.encode([]fleet.PointValue{p})...)
}

// pollDurable resends the driver's last accepted point (a duplicate,
// stored nothing) until the answer's durable_seq covers every accepted
// point or ctx ends: how a phone learns its points are safe.
func (d *driverSim) pollDurable(ctx context.Context, c *http.Client, token string) {
	for d.durable.Load() < d.accepted && ctx.Err() == nil {
		a, err := do(ctx, c, http.MethodPost, d.url, token, d.last)
		if err == nil && a.status == http.StatusAccepted {
			var ans driverAnswer
			if json.Unmarshal(a.body, &ans) == nil {
				d.seeDurable(ans.DurableSeq)
			}
			if d.durable.Load() >= d.accepted {
				return
			}
			sleep(ctx, 20*time.Millisecond)
			continue
		}
		sleep(ctx, backoff(a))
	}
}
