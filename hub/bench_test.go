package hub_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/internal/apptest"
	"routehound/internal/testkit"
)

// fixture is the real appliance (apptest.Start) on a loopback listener.
// The clock of when each LSN became durable is the engine's (DurableAt).
type fixture struct {
	e      *engine.Engine
	h      *hub.Hub
	url    string
	client *http.Client
	token  string // the dashboard's
}

// newFixture starts the appliance with the defaults apptest gives, a 64 MiB
// store cache, then hubCfg's changes to [hub] (subscriber bounds, buffer).
func newFixture(b *testing.B, hubCfg func(*config.Hub)) *fixture {
	b.Helper()
	raiseFDLimit()
	s := apptest.Start(b, apptest.Options{Config: func(c *config.Config) {
		c.Storage.MemoryMB = 64
		// The 5,000-subscriber runs over 500 tables: past the default 4,096
		// open connections and 64 user tables.
		c.HTTP.MaxConns, c.Tables.MaxTables = 16384, 1000
		if hubCfg != nil {
			hubCfg(&c.Hub)
		}
	}})
	return &fixture{e: s.Engine, h: s.Hub, url: s.URL, client: s.Client, token: s.Token(b, "dashboard")}
}

func raiseFDLimit() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 65536 {
		rl.Cur, rl.Max = 65536, max(rl.Max, 65536)
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
			rl.Cur = rl.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		}
	}
}

// committedAt is when lsn became durable: the committer stamps it right
// after the Sync, before any reader is told (before the feed, a Subscribe
// callback registered ahead of the hub stamped it on the committer).
func (f *fixture) committedAt(lsn uint64) (time.Time, bool) { return f.e.DurableAt(lsn) }

// latencies collects commit→receipt samples from many subscribers.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	n  atomic.Int64
}

func (l *latencies) add(d time.Duration) {
	l.n.Add(1)
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, prefix string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		b.Fatalf("%s: no event received", prefix)
	}
	// The index rule ⌊p/100·(n−1)⌋ (testkit.PercentileLower), as this
	// benchmark always reported.
	q := func(p float64) float64 { return float64(testkit.PercentileLower(l.d, p)) / 1e6 }
	b.ReportMetric(q(50), prefix+"p50-ms")
	b.ReportMetric(q(99), prefix+"p99-ms")
	b.ReportMetric(q(100), prefix+"max-ms")
	b.ReportMetric(float64(len(l.d)), prefix+"events")
}

// wsSubscribe opens a WebSocket subscriber of table and records the
// commit→receipt latency of every change; batch asks for "changes" frames.
func (f *fixture) wsSubscribe(ctx context.Context, b *testing.B, table string, batch bool, lat *latencies, ready *sync.WaitGroup) {
	url := strings.Replace(f.url, "http", "ws", 1) + "/v1/ws"
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + f.token}}})
	if err != nil {
		b.Error(err)
		ready.Done()
		return
	}
	c.SetReadLimit(16 << 20)
	go func() {
		defer c.CloseNow()
		c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","table":"`+table+`","batch":`+fmt.Sprint(batch)+`}`))
		snapshotDone := false
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				if !snapshotDone {
					ready.Done()
				}
				return
			}
			// Parse only what the measurement needs: the clients share
			// the machine with the server, and a full decode per message
			// would be the client's cost, not the hub's.
			switch {
			case bytes.HasPrefix(data, []byte(`{"type":"change`)): // "change" or "changes"
				// One change, or ("changes") several: each ends with its
				// row's "lsn".
				now := time.Now()
				for rest := data; ; {
					lsn, n, ok := nextLSN(rest)
					if !ok {
						break
					}
					if t, ok := f.committedAt(lsn); ok {
						lat.add(now.Sub(t))
					}
					rest = rest[n:]
				}
			case !snapshotDone && bytes.Contains(data, []byte(`"type":"snapshot"`)):
				var m struct {
					Last bool `json:"last"`
				}
				json.Unmarshal(data, &m)
				if m.Last {
					snapshotDone = true
					ready.Done()
				}
			}
		}
	}()
}

// nextLSN reads the first "lsn": field of data (a change row's: the
// benchmark's values hold none) and returns it with the offset after it.
func nextLSN(data []byte) (uint64, int, bool) {
	i := bytes.Index(data, []byte(`"lsn":`))
	if i < 0 {
		return 0, 0, false
	}
	i += 6
	var n uint64
	for ; i < len(data) && data[i] >= '0' && data[i] <= '9'; i++ {
		n = n*10 + uint64(data[i]-'0')
	}
	return n, i, true
}

// sseSubscribe is wsSubscribe over Server-Sent Events.
func (f *fixture) sseSubscribe(ctx context.Context, b *testing.B, table string, lat *latencies, ready *sync.WaitGroup) {
	req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/v1/tables/"+table+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := f.client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		b.Errorf("SSE subscribe: %v %v", err, resp)
		ready.Done()
		return
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		snapshotDone := false
		var id uint64
		var ev string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				fmt.Sscan(line[4:], &id)
			case strings.HasPrefix(line, "event: "):
				ev = line[7:]
			case line == "":
				if ev == "snapshot" && !snapshotDone {
					snapshotDone = true
					ready.Done()
				} else if (ev == "put" || ev == "delete") && id != 0 {
					if t, ok := f.committedAt(id); ok {
						lat.add(time.Since(t))
					}
				}
				id, ev = 0, ""
			}
		}
		if !snapshotDone {
			ready.Done()
		}
	}()
}

// writeAt puts rate changes per second, round robin over tables, for d.
func (f *fixture) writeAt(b *testing.B, tables []string, rate int, d time.Duration) int {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	n := 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // concurrent writers: a sync write waits for its fsync
	for time.Now().Before(end) {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		tb := tables[n%len(tables)]
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := f.e.PutKey(context.Background(), engine.Write{Table: tb, Key: fmt.Sprint("k", i%100),
				Value: []byte(fmt.Sprintf(`{"i":%d,"payload":"0123456789abcdef0123456789abcdef"}`, i)), IfVersion: engine.AnyVersion})
			if err != nil {
				b.Error(err)
			}
		}(n)
		n++
	}
	wg.Wait()
	return n
}

func runFanout(b *testing.B, transport string, subs, tables int) {
	f := newFixture(b, func(c *config.Hub) { c.MaxSubscribersPerTable, c.SubscriberBuffer = 100, 1024 })
	names := make([]string, tables)
	for i := range names {
		names[i] = fmt.Sprintf("t%04d", i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lat latencies
	var ready sync.WaitGroup
	for i := 0; i < subs; i++ {
		ready.Add(1)
		if transport != "sse" {
			f.wsSubscribe(ctx, b, names[i%tables], transport == "ws-batch", &lat, &ready)
		} else {
			f.sseSubscribe(ctx, b, names[i%tables], &lat, &ready)
		}
	}
	ready.Wait()
	b.ResetTimer()
	total := 0
	for i := 0; i < b.N; i++ {
		total += f.writeAt(b, names, 1000, 3*time.Second)
	}
	want := int64(total * subs / tables)
	deadline := time.Now().Add(10 * time.Second)
	for lat.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	lat.report(b, "")
	b.ReportMetric(float64(want-lat.n.Load()), "missing")
}

// 100 subscribers of one table, 1,000 changes/s: commit→receipt latency.
func BenchmarkFanoutWS100x1(b *testing.B)      { runFanout(b, "ws", 100, 1) }
func BenchmarkFanoutWSBatch100x1(b *testing.B) { runFanout(b, "ws-batch", 100, 1) }
func BenchmarkFanoutSSE100x1(b *testing.B)     { runFanout(b, "sse", 100, 1) }

// Many tables: 10 subscribers per table, 1,000 changes/s spread over the
// tables. The issue asks for 10,000 subscribers over 1,000 tables; clients
// and server share this process, which needs two descriptors per
// subscriber, and this machine's hard limit is 20,000 descriptors, so the
// run uses 5,000 over 500 (the same density per table).
func BenchmarkFanoutWS5kx500(b *testing.B)      { runFanout(b, "ws", 5000, 500) }
func BenchmarkFanoutWSBatch5kx500(b *testing.B) { runFanout(b, "ws-batch", 5000, 500) }
func BenchmarkFanoutSSE5kx500(b *testing.B)     { runFanout(b, "sse", 5000, 500) }

// BenchmarkDelivered saturates the hub: 100 SSE subscribers on each of 4
// tables, writers putting as fast as the tables lane takes them; the
// figure is events delivered to subscribers per second.
func BenchmarkDeliveredSSE(b *testing.B)     { runSaturation(b, "sse") }
func BenchmarkDeliveredWS(b *testing.B)      { runSaturation(b, "ws") }
func BenchmarkDeliveredWSBatch(b *testing.B) { runSaturation(b, "ws-batch") }

func runSaturation(b *testing.B, transport string) {
	f := newFixture(b, func(c *config.Hub) { c.MaxSubscribersPerTable, c.SubscriberBuffer = 100, 4096 })
	tables := []string{"a", "b", "c", "d"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lat latencies
	var ready sync.WaitGroup
	for i := 0; i < 400; i++ {
		ready.Add(1)
		if transport != "sse" {
			f.wsSubscribe(ctx, b, tables[i%4], transport == "ws-batch", &lat, &ready)
		} else {
			f.sseSubscribe(ctx, b, tables[i%4], &lat, &ready)
		}
	}
	ready.Wait()
	st := f.h.Stats()
	d0 := st.Delivered.Load()
	b.ResetTimer()
	t0 := time.Now()
	end := t0.Add(3 * time.Second * time.Duration(b.N))
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				f.e.PutKey(context.Background(), engine.Write{Table: tables[(w+i)%4], Key: fmt.Sprint("k", i%50),
					Value: []byte(`{"payload":"0123456789abcdef0123456789abcdef"}`), IfVersion: engine.AnyVersion})
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(st.Delivered.Load()-d0)/el.Seconds(), "delivered/s")
	b.ReportMetric(float64(st.Resyncs.Load()), "resyncs")
	lat.report(b, "")
}

// BenchmarkIdleSubscriberMemory opens idle WebSocket subscribers with a
// minimal raw client (a handshake and one subscribe frame, nothing read),
// so that the heap and stack growth per subscriber is the server's cost
// plus a few hundred bytes of client.
func BenchmarkIdleSubscriberMemory(b *testing.B) {
	f := newFixture(b, func(c *config.Hub) { c.MaxSubscribersPerTable = 100 })
	const n = 2000
	addr := strings.TrimPrefix(f.url, "http://")
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := rawSubscribe(addr, f.token, fmt.Sprintf("t%03d", i%100))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for f.h.Stats().Subscribers.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.h.Stats().Subscribers.Load(); got < n {
		b.Fatalf("%d of %d subscribers registered", got, n)
	}
	time.Sleep(200 * time.Millisecond) // let the snapshots go out
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	per := float64((m1.HeapInuse+m1.StackInuse)-(m0.HeapInuse+m0.StackInuse)) / n
	b.ReportMetric(per/1024, "KiB/subscriber")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	for _, c := range conns {
		c.Close()
	}
}

// rawSubscribe does a WebSocket handshake by hand and sends one masked
// subscribe frame; it never reads again.
func rawSubscribe(addr, token, table string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(c, "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
		addr, base64.StdEncoding.EncodeToString(key), token)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		return nil, fmt.Errorf("handshake: %d %s", resp.StatusCode, body)
	}
	payload := []byte(`{"op":"subscribe","table":"` + table + `"}`)
	frame := []byte{0x81, 0x80 | byte(len(payload))}
	mask := make([]byte, 4)
	rand.Read(mask)
	frame = append(frame, mask...)
	for i, p := range payload {
		frame = append(frame, p^mask[i%4])
	}
	if _, err := c.Write(frame); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
