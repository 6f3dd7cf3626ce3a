package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/config"
	"routehound/engine"
	"routehound/internal/apptest"
	"routehound/internal/testkit"
)

// Issue 3, over real HTTP: the real appliance on a loopback listener,
// started as serve.go starts it (internal/apptest), driven by real HTTP clients in the same process.
// Clients and server share the machine's cores, so every figure here is
// for server and load generator together.
//
//	go test -run '^$' -bench . -benchtime 3s ./api
//
// Run BenchmarkHTTPDispatchIdle and BenchmarkHTTPDispatchUnderFlood in one
// invocation: the flood benchmark then also reports its p99 over the idle
// p99 of the same run (p99-flood/idle).

const (
	benchPointsPerBatch = 100 // points in one driver POST
	benchDriverWorkers  = 16  // driver goroutines, one driver each
	benchRoutes         = 64  // dispatch rotates over this many routes

	tokDriver    = "bench-driver-token-0123456789"
	tokDispatch  = "bench-dispatch-token-0123456789"
	tokWarehouse = "bench-warehouse-token-0123456789"
	tokAdmin     = "bench-admin-token-0123456789"
)

// benchServer is one running server: the real appliance (apptest.Start).
type benchServer struct {
	url string
	eng *engine.Engine
	cfg config.Config
}

// startBenchServer starts the appliance as serve.go does (apptest.Start) on
// 127.0.0.1:0, with config.Default() — serve's store cache and free-space
// watermark, not the tests' — explicit [[tokens]], then mutate (when not
// nil), and serve's memory limit. No subscriber connects, so the hub has
// nobody to feed. apptest shuts it down in b.Cleanup.
func startBenchServer(b *testing.B, mutate func(*config.Config)) *benchServer {
	b.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s := apptest.Start(b, apptest.Options{Log: log, Config: func(cfg *config.Config) {
		def := config.Default()
		cfg.Storage.MemoryMB, cfg.Storage.MinFreeMB = def.Storage.MemoryMB, def.Storage.MinFreeMB
		cfg.Tokens = []config.Token{
			{Role: "driver", Token: tokDriver},
			{Role: "dispatch", Token: tokDispatch},
			{Role: "warehouse", Token: tokWarehouse},
			{Role: "admin", Token: tokAdmin},
		}
		if mutate != nil {
			mutate(cfg)
		}
		if cfg.MemoryLimitMB > 0 && os.Getenv("GOMEMLIMIT") == "" {
			prev := debug.SetMemoryLimit(cfg.MemoryLimitMB << 20) // as serve.go does
			b.Cleanup(func() { debug.SetMemoryLimit(prev) })
		}
	}})
	return &benchServer{url: s.URL, eng: s.Engine, cfg: s.App.Config}
}

// newBenchClient is one actor's HTTP client with enough idle connections
// for conns concurrent requests.
func newBenchClient(b *testing.B, conns int) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// do sends one request and returns the status and the answer body.
func (s *benchServer) do(ctx context.Context, c *http.Client, method, path, token, idemKey string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(resp.Body)
	return resp.StatusCode, ans, err
}

// pointTemplates hold the parts of a ~120-byte point around its seq, so
// that a batch body is built by copying (a few µs per batch) rather than
// by encoding JSON on the load generator's share of the CPU.
var pointTemplates = func() [][2][]byte {
	t := make([][2][]byte, benchPointsPerBatch)
	for j := range t {
		t[j] = [2][]byte{
			[]byte(`{"seq":`),
			fmt.Appendf(nil, `,"lat":%.6f,"lng":%.6f,"ts":"2026-03-14T09:26:%02d.589Z","speed_kmh":%.1f,"heading":%.1f}`,
				52.0+float64(j)*1e-4, 13.0+float64(j)*1e-4, j%60, float64(j%130), float64(j*7%360)),
		}
	}
	return t
}()

// driverBody is the JSON array of the batch with seqs from+1 … from+100.
func driverBody(from uint64) []byte {
	body := make([]byte, 0, benchPointsPerBatch*128)
	body = append(body, '[')
	for j, t := range pointTemplates {
		if j > 0 {
			body = append(body, ',')
		}
		body = append(body, t[0]...)
		body = strconv.AppendUint(body, from+uint64(j)+1, 10)
		body = append(body, t[1]...)
	}
	return append(body, ']')
}

// driverStats are the counts of a group of driver goroutines.
type driverStats struct {
	points    atomic.Int64 // points answered 202
	throttled atomic.Int64 // 429 answers (each followed by a resend)
}

// runDriver posts batches of 100 points for one driver while more()
// holds, with strictly increasing seqs; a 429 is answered by a backoff of
// 1–5 ms and a resend of the same body. It returns the last seq answered
// 202. A request cut by ctx ends it without error.
func (s *benchServer) runDriver(ctx context.Context, c *http.Client, driver string, more func() bool, st *driverStats) (uint64, error) {
	path := "/v1/drivers/" + driver + "/locations"
	seq := uint64(0)
	for more() {
		body := driverBody(seq) // a fresh buffer: the transport may read a body after Do returns
		for {
			code, ans, err := s.do(ctx, c, http.MethodPost, path, tokDriver, "", body)
			if ctx.Err() != nil {
				return seq, nil
			}
			if err != nil {
				return seq, fmt.Errorf("driver %s: %w", driver, err)
			}
			if code == http.StatusAccepted {
				break
			}
			if code != http.StatusTooManyRequests {
				return seq, fmt.Errorf("driver %s: POST answered %d: %s", driver, code, ans)
			}
			st.throttled.Add(1)
			time.Sleep(time.Millisecond + rand.N(4*time.Millisecond))
		}
		seq += benchPointsPerBatch
		st.points.Add(benchPointsPerBatch)
	}
	return seq, nil
}

// waitDurable polls the engine until every driver's durable seq reaches
// its last accepted seq.
func (s *benchServer) waitDurable(b *testing.B, last map[string]uint64) {
	deadline := time.Now().Add(60 * time.Second)
	for driver, want := range last {
		for {
			got, err := s.eng.DriverDurableSeq(driver)
			if err != nil {
				b.Fatal(err)
			}
			if got >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("driver %s: durable seq %d, want %d", driver, got, want)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// resetPeakRSS resets VmHWM (Linux: "5" > /proc/self/clear_refs), so that
// the peak read at the end of a round is the peak of that round only.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// procStatusMiB reads fields of /proc/self/status given in kB, in MiB
// (0 for a field that is missing, e.g. without /proc).
func procStatusMiB(fields ...string) []float64 {
	out := make([]float64, len(fields))
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return out
	}
	for line := range strings.Lines(string(raw)) {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if i := slices.Index(fields, name); i >= 0 {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			out[i] = kb / 1024
		}
	}
	return out
}

// memWatch samples the process every 5 ms while a round runs: resident
// memory split into anonymous (Go heap, Badger's memtable arenas and
// caches) and file-backed (Badger's mmapped WAL, value log and tables); the
// memory the Go runtime holds (mapped minus released: heap with its GC
// headroom, stacks, runtime metadata) and the live heap after the last GC;
// and the runnable goroutines (the queue in front of the two cores). VmHWM
// gives the true peak; the samples say what it was made of.
type memWatch struct {
	stop, done              chan struct{}
	anon, file, goRes, live float64 // peaks, MiB
	runnableSum, n          float64
	samples                 []metrics.Sample
}

func startMemWatch() *memWatch {
	resetPeakRSS()
	w := &memWatch{stop: make(chan struct{}), done: make(chan struct{}), samples: []metrics.Sample{
		{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"},
		{Name: "/gc/heap/live:bytes"}, {Name: "/sched/goroutines/runnable:goroutines"},
	}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			m := procStatusMiB("RssAnon", "RssFile")
			w.anon, w.file = max(w.anon, m[0]), max(w.file, m[1])
			metrics.Read(w.samples)
			v := func(i int) float64 { return float64(w.samples[i].Value.Uint64()) / (1 << 20) }
			w.goRes = max(w.goRes, v(0)-v(1))
			w.live = max(w.live, v(2))
			r := float64(w.samples[3].Value.Uint64())
			w.runnableSum += r
			w.n++
		}
	}()
	return w
}

// report stops the sampling and reports the peaks.
func (w *memWatch) report(b *testing.B) {
	close(w.stop)
	<-w.done
	b.ReportMetric(procStatusMiB("VmHWM")[0], "peak-RSS-MiB")
	b.ReportMetric(w.anon, "peak-anon-MiB")
	b.ReportMetric(w.file, "peak-file-MiB")
	b.ReportMetric(w.goRes, "peak-go-MiB")
	b.ReportMetric(w.live, "peak-live-heap-MiB")
	if w.n > 0 {
		b.ReportMetric(w.runnableSum/w.n, "runnable-avg")
	}
}

// writeHeapProfile writes the live heap, while the server still runs, to
// $BENCH_HEAPPROFILE_DIR/<benchmark>.heap when that variable is set (the
// -memprofile flag only sees the heap after the server is closed).
func writeHeapProfile(b *testing.B) {
	dir := os.Getenv("BENCH_HEAPPROFILE_DIR")
	if dir == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".heap"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// runtimeWindow measures, over a window, the Go scheduler's latency (time
// a goroutine waits runnable before it runs; p99) and the share of CPU the
// garbage collector took (marking and pauses, not idle-time marking).
type runtimeWindow struct{ s []metrics.Sample }

var runtimeNames = []string{
	"/sched/latencies:seconds",
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/gc/mark/idle:cpu-seconds",
	"/cpu/classes/total:cpu-seconds",
	"/cpu/classes/idle:cpu-seconds",
}

func readRuntime() []metrics.Sample {
	s := make([]metrics.Sample, len(runtimeNames))
	for i, n := range runtimeNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return s
}

func startRuntimeWindow() *runtimeWindow { return &runtimeWindow{s: readRuntime()} }

func (w *runtimeWindow) report(b *testing.B) {
	now := readRuntime()
	h0, h1 := w.s[0].Value.Float64Histogram(), now[0].Value.Float64Histogram()
	var total uint64
	counts := make([]uint64, len(h1.Counts))
	for i := range counts {
		counts[i] = h1.Counts[i] - h0.Counts[i]
		total += counts[i]
	}
	if total > 0 {
		rank, cum := uint64(float64(total)*0.99+0.999999), uint64(0)
		for i, c := range counts {
			cum += c
			if cum >= rank {
				edge := h1.Buckets[i+1] // upper edge; the lower one if the upper is +Inf
				if math.IsInf(edge, 1) {
					edge = h1.Buckets[i]
				}
				b.ReportMetric(edge*1000, "sched-p99-ms")
				break
			}
		}
	}
	f := func(i int) float64 { return now[i].Value.Float64() - w.s[i].Value.Float64() }
	if busy := f(3) - f(4); busy > 0 {
		b.ReportMetric((f(1)-f(2))*100/busy, "gc-cpu-%")
	}
}

// BenchmarkHTTPDriverPoints: benchDriverWorkers goroutines POST batches of
// 100 points to /v1/drivers/{d}/locations, one driver each. One op is one
// batch. accepted-pts/s counts to the last 202, durable-pts/s to the moment
// every driver's durable seq caught up (ns/op is timed the same way).
func BenchmarkHTTPDriverPoints(b *testing.B) {
	s := startBenchServer(b, nil)
	c := newBenchClient(b, 2*benchDriverWorkers)
	ctx := context.Background()
	fsyncs0 := s.eng.Totals().Fsyncs.Load()
	var st driverStats
	var next atomic.Int64
	more := func() bool { return next.Add(1) <= int64(b.N) }
	var mu sync.Mutex
	last := map[string]uint64{}
	var wg sync.WaitGroup
	mem := startMemWatch()
	rt := startRuntimeWindow()
	b.ResetTimer()
	start := time.Now()
	for w := range benchDriverWorkers {
		driver := fmt.Sprintf("bench-%02d", w)
		wg.Go(func() {
			seq, err := s.runDriver(ctx, c, driver, more, &st)
			if err != nil {
				b.Error(err)
			}
			mu.Lock()
			last[driver] = seq
			mu.Unlock()
		})
	}
	wg.Wait()
	accepted := time.Since(start)
	s.waitDurable(b, last)
	durable := time.Since(start)
	b.StopTimer()
	writeHeapProfile(b)

	points := float64(st.points.Load())
	b.ReportMetric(points/accepted.Seconds(), "accepted-pts/s")
	b.ReportMetric(points/durable.Seconds(), "durable-pts/s")
	b.ReportMetric(float64(s.eng.Totals().Fsyncs.Load()-fsyncs0)*1000/points, "fsyncs/1000pts")
	b.ReportMetric(float64(st.throttled.Load()), "429s")
	mem.report(b)
	rt.report(b)
}

// assignmentBody is a dispatch assignment with five stops.
func assignmentBody(i int) []byte {
	var stops []string
	for k := range 5 {
		stops = append(stops, fmt.Sprintf(`{"id":"stop-%d-%d","lat":%.5f,"lng":%.5f,"eta":"2026-03-14T1%d:30:00Z"}`,
			i, k, 52.5+float64(k)*0.01, 13.4+float64(i%10)*0.01, k))
	}
	return fmt.Appendf(nil, `{"driver":"bench-%02d","stops":[%s],"note":"benchmark assignment %d"}`,
		i%benchDriverWorkers, strings.Join(stops, ","), i)
}

// dispatchLoop sends n sequential PUT /v1/assignments/{route}, each with a
// fresh Idempotency-Key, and returns each write's latency (request sent →
// answer read, i.e. the dispatcher's confirm latency).
func (s *benchServer) dispatchLoop(b *testing.B, c *http.Client, n int, keyPrefix string) []time.Duration {
	bodies := make([][]byte, benchRoutes)
	for i := range bodies {
		bodies[i] = assignmentBody(i)
	}
	lat := make([]time.Duration, 0, n)
	ctx := context.Background()
	for i := range n {
		route := fmt.Sprintf("route-%03d", i%benchRoutes)
		key := keyPrefix + strconv.Itoa(i)
		t0 := time.Now()
		code, ans, err := s.do(ctx, c, http.MethodPut, "/v1/assignments/"+route, tokDispatch, key, bodies[i%benchRoutes])
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if code != http.StatusOK && code != http.StatusCreated {
			b.Fatalf("PUT assignment %s answered %d: %s", route, code, ans)
		}
		lat = append(lat, d)
	}
	return lat
}

// percentileMs is testkit.Percentile (nearest rank, p in 0..100) of d, in
// milliseconds.
func percentileMs(d []time.Duration, p float64) float64 {
	return float64(testkit.Percentile(d, p)) / float64(time.Millisecond)
}

// engineSide reports the server-side view of one lane over a window, from
// the engine's own histograms and counters: arrival → taken by the
// committer (eng-qwait-p99-ms) and arrival → durable (eng-p99-ms); and for
// the committer as a whole the p99 of one fsync, the mean time of one
// Badger commit, driver records per batch and the share of wall time the
// committer was busy (applying, committing, syncing). Beside the
// client-side figures they split a latency into engine time and HTTP /
// scheduling time.
type engineSide struct {
	e                   *engine.Engine
	lane                engine.Lane
	qwait, lat, syn     engine.HistogramSnapshot
	batches, recs       uint64
	busy, commit, start int64 // committer busy and commit nanoseconds, wall clock
}

func startEngineSide(e *engine.Engine, lane engine.Lane) *engineSide {
	l, t := e.Lane(lane), e.Totals()
	return &engineSide{e: e, lane: lane, qwait: l.QueueWait.Snapshot(), lat: l.Latency.Snapshot(),
		syn: t.SyncTime.Snapshot(), batches: t.Batches.Load(), recs: e.Lane(engine.LaneDriver).Records.Load(),
		busy: t.BusyNanos.Load(), commit: t.CommitNanos.Load(), start: time.Now().UnixNano()}
}

func (w *engineSide) report(b *testing.B, prefix string) {
	l := w.e.Lane(w.lane)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(l.QueueWait.Snapshot().Sub(w.qwait).Quantile(0.99)), prefix+"eng-qwait-p99-ms")
	b.ReportMetric(ms(l.Latency.Snapshot().Sub(w.lat).Quantile(0.99)), prefix+"eng-p99-ms")
	b.ReportMetric(ms(w.e.Totals().SyncTime.Snapshot().Sub(w.syn).Quantile(0.99)), "fsync-p99-ms")
	t := w.e.Totals()
	if n := t.Batches.Load() - w.batches; n > 0 {
		b.ReportMetric(float64(w.e.Lane(engine.LaneDriver).Records.Load()-w.recs)/float64(n), "driver-recs/batch")
		b.ReportMetric(ms(time.Duration(t.CommitNanos.Load()-w.commit))/float64(n), "commit-avg-ms")
	}
	if wall := time.Now().UnixNano() - w.start; wall > 0 {
		b.ReportMetric(float64(t.BusyNanos.Load()-w.busy)*100/float64(wall), "committer-busy-%")
	}
}

// idleDispatchP99 is the p99 of the last BenchmarkHTTPDispatchIdle round
// of this process, so that the flood benchmark can report the ratio from
// the same run.
var idleDispatchP99 float64

// BenchmarkHTTPDispatchIdle: one dispatcher, sequential PUTs, nothing else
// running. One op is one confirmed (fsynced) assignment.
func BenchmarkHTTPDispatchIdle(b *testing.B) {
	s := startBenchServer(b, nil)
	c := newBenchClient(b, 2)
	fsyncs0 := s.eng.Totals().Fsyncs.Load()
	side := startEngineSide(s.eng, engine.LaneDispatch)
	b.ResetTimer()
	lat := s.dispatchLoop(b, c, b.N, "idle-")
	b.StopTimer()
	side.report(b, "")
	idleDispatchP99 = percentileMs(lat, 99)
	b.ReportMetric(percentileMs(lat, 50), "p50-ms")
	b.ReportMetric(idleDispatchP99, "p99-ms")
	b.ReportMetric(percentileMs(lat, 100), "max-ms")
	b.ReportMetric(float64(s.eng.Totals().Fsyncs.Load()-fsyncs0)*1000/float64(b.N), "fsyncs/1000writes")
}

// BenchmarkHTTPDispatchUnderFlood: the same dispatcher while
// benchDriverWorkers drivers flood the driver lane (backing off 1–5 ms on
// each 429 and resending) and one warehouse terminal posts loading events
// back to back, each with its Idempotency-Key. The flood starts first; the
// clock starts once the driver lane is at 90% of its bound or answered a
// 429, or after 2 s without either (then lane-fill-% and at-bound-% show
// how full it was). One op is one confirmed assignment.
//
// Two driver lane bounds:
//   - default: config.Default(), queue_bound 200000 points;
//   - bound=2000: the bound the isolation test uses, which an HTTP flood on
//     this machine does hold the lane at (429s).
func BenchmarkHTTPDispatchUnderFlood(b *testing.B) {
	b.Run("lane=default", func(b *testing.B) { benchDispatchUnderFlood(b, 0) })
	b.Run("lane=2000", func(b *testing.B) { benchDispatchUnderFlood(b, 2000) })
}

func benchDispatchUnderFlood(b *testing.B, queueBound int) {
	s := startBenchServer(b, func(c *config.Config) {
		if queueBound > 0 {
			c.Lanes.Driver.QueueBound = queueBound
		}
	})
	bound := int64(s.cfg.Lanes.Driver.QueueBound)
	drivers := newBenchClient(b, 2*benchDriverWorkers)
	dispatch := newBenchClient(b, 2)
	warehouse := newBenchClient(b, 2)

	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { cancel(); bg.Wait() }()

	var flood driverStats
	for w := range benchDriverWorkers {
		driver := fmt.Sprintf("flood-%02d", w)
		bg.Go(func() {
			if _, err := s.runDriver(ctx, drivers, driver, func() bool { return ctx.Err() == nil }, &flood); err != nil {
				b.Error(err)
			}
		})
	}
	depth := &s.eng.Lane(engine.LaneDriver).Depth
	for t0 := time.Now(); depth.Load() < bound*9/10 && flood.throttled.Load() == 0 && time.Since(t0) < 2*time.Second; {
		time.Sleep(time.Millisecond)
	}

	// Lane fill, sampled every millisecond while the clock runs.
	var measuring atomic.Bool
	var fillSum, fillN, atBound atomic.Int64
	bg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !measuring.Load() {
				continue
			}
			d := depth.Load()
			fillSum.Add(d)
			fillN.Add(1)
			if d >= bound*95/100 {
				atBound.Add(1)
			}
		}
	})

	// The warehouse terminal: sequential loading events.
	var whMu sync.Mutex
	var whLat []time.Duration
	bg.Go(func() {
		body := []byte(`{"terminal":"T1","dock":"D3","shipment":"SHP-000123","kind":"loaded","pallets":12,"ts":"2026-03-14T09:26:53Z"}`)
		for i := 0; ctx.Err() == nil; i++ {
			// The request itself is not cut at the end: a terminal finishes
			// what it sent.
			t0 := time.Now()
			code, ans, err := s.do(context.Background(), warehouse, http.MethodPost, "/v1/loading-events", tokWarehouse, "wh-"+strconv.Itoa(i), body)
			d := time.Since(t0)
			if err != nil || code != http.StatusCreated {
				b.Errorf("warehouse POST answered %d: %s (%v)", code, ans, err)
				return
			}
			if measuring.Load() {
				whMu.Lock()
				whLat = append(whLat, d)
				whMu.Unlock()
			}
		}
	})

	fsyncs0 := s.eng.Totals().Fsyncs.Load()
	points0, throttled0 := flood.points.Load(), flood.throttled.Load()
	side := startEngineSide(s.eng, engine.LaneDispatch)
	whSide := startEngineSide(s.eng, engine.LaneWarehouse)
	mem := startMemWatch()
	rt := startRuntimeWindow()
	measuring.Store(true)
	b.ResetTimer()
	start := time.Now()
	lat := s.dispatchLoop(b, dispatch, b.N, "flood-")
	elapsed := time.Since(start)
	b.StopTimer()
	measuring.Store(false)
	writeHeapProfile(b)
	rt.report(b)
	mem.report(b)
	side.report(b, "")
	whSide.report(b, "wh-")
	points, throttled := flood.points.Load()-points0, flood.throttled.Load()-throttled0
	fsyncs := s.eng.Totals().Fsyncs.Load() - fsyncs0
	cancel()
	bg.Wait()

	p99 := percentileMs(lat, 99)
	b.ReportMetric(percentileMs(lat, 50), "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(percentileMs(lat, 100), "max-ms")
	if idleDispatchP99 > 0 {
		b.ReportMetric(p99/idleDispatchP99, "p99-flood/idle")
	}
	whMu.Lock()
	b.ReportMetric(percentileMs(whLat, 50), "wh-p50-ms")
	b.ReportMetric(percentileMs(whLat, 99), "wh-p99-ms")
	b.ReportMetric(float64(len(whLat)), "wh-writes")
	whMu.Unlock()
	b.ReportMetric(float64(points)/elapsed.Seconds(), "flood-pts/s")
	b.ReportMetric(float64(throttled), "flood-429s")
	if n := fillN.Load(); n > 0 {
		b.ReportMetric(float64(fillSum.Load())*100/float64(n)/float64(bound), "lane-fill-%")
		b.ReportMetric(float64(atBound.Load())*100/float64(n), "at-bound-%")
	}
	b.ReportMetric(float64(fsyncs)*1000/float64(b.N), "fsyncs/1000writes")
}
