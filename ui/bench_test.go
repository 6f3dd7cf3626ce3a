package ui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/hub"
	"routehound/internal/testkit"
	"routehound/wal"
)

// benchFixture is an engine with the dashboard's load of the issue: 1,000
// drivers, 500 routes, 10,000 loading events (and one small user table).
type benchFixture struct {
	e   *engine.Engine
	h   *hub.Hub
	u   *UI
	db  *wal.DB
	sid *http.Cookie
}

func newBenchFixture(b *testing.B, opt Options) *benchFixture {
	b.Helper()
	e, db := testkit.EngineIn(b, testkit.Store{MemoryBytes: 64 << 20}, nil)
	h := hub.New(e, hub.Config{}, nil)
	opt.Engine, opt.Hub = e, h
	u := New(opt)
	f := &benchFixture{e: e, h: h, u: u, db: db}
	b.Cleanup(func() { // before testkit's cleanup closes the engine and the wal
		h.Close()
		u.Close()
	})
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		v := fmt.Sprintf(`{"seq":1,"lat":%f,"lng":%f,"ts":%q,"speed_kmh":40,"heading":90}`, 52.3+float64(i%40)*0.01, 13.1+float64(i/40)*0.01,
			time.Now().UTC().Format(time.RFC3339))
		if _, err := e.SubmitPoints(ctx, fmt.Sprintf("drv-%04d", i), []engine.Point{{Seq: 1, Value: []byte(v)}}); err != nil {
			b.Fatal(err)
		}
	}
	parallel(b, 500, 50, func(i int) error {
		_, err := e.PutAssignment(ctx, fmt.Sprintf("route-%03d", i), []byte(fmt.Sprintf(`{"driver":"drv-%04d","stops":[{"id":"a"},{"id":"b"},{"id":"c"}],"note":"bench"}`, i)), engine.WriteOptions{IfVersion: engine.AnyVersion})
		return err
	})
	kinds := []string{"arrived", "loaded", "unloaded", "departed", "exception"}
	parallel(b, 10000, 200, func(i int) error {
		_, err := e.AddLoadingEvent(ctx, fmt.Sprintf("01BENCH%06d", i), []byte(fmt.Sprintf(`{"terminal":"T1","dock":"D%d","shipment":"S%d","kind":%q,"pallets":%d,"ts":"2026-11-23T10:00:00Z"}`,
			i%12, i%300, kinds[i%5], i%30)), engine.WriteOptions{})
		return err
	})
	for i := 0; i < 100; i++ {
		if _, err := e.PutKey(ctx, engine.Write{Table: "crew", Key: fmt.Sprintf("k%03d", i), Value: []byte(`{"shift":"late","n":1}`), IfVersion: engine.AnyVersion}); err != nil {
			b.Fatal(err)
		}
	}
	testkit.Eventually(b, 10*time.Second, "the fixture's writes to be durable", func() bool { return e.DurableLSN() >= db.LastLSN() })
	s := u.sessions.create("dashboard", time.Now())
	f.sid = &http.Cookie{Name: sessionCookie, Value: s.id}
	return f
}

// parallel runs fn(0..n-1) on `workers` goroutines.
func parallel(b *testing.B, n, workers int, fn func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkRender renders each page server-side (handler to bytes, no
// network) and reports p50/p99 per page.
//
//	go test -run '^$' -bench Render -benchtime 200x -p 1 ./ui
func BenchmarkRender(b *testing.B) {
	f := newBenchFixture(b, Options{})
	for _, p := range []struct{ name, path string }{
		{"channels", "/ui/"}, {"fleet", "/ui/fleet"}, {"fleet-trail", "/ui/fleet?driver=drv-0001"}, {"routes", "/ui/routes"},
		{"warehouse", "/ui/warehouse"}, {"warehouse-filtered", "/ui/warehouse?dock=D3"}, {"tables", "/ui/tables"},
		{"table", "/ui/tables/crew"}, {"system", "/ui/system"},
	} {
		b.Run(p.name, func(b *testing.B) {
			ds := make([]time.Duration, 0, b.N)
			var size int
			for b.Loop() {
				req := httptest.NewRequest("GET", p.path, nil)
				req.AddCookie(f.sid)
				rec := httptest.NewRecorder()
				t0 := time.Now()
				f.u.ServeHTTP(rec, req)
				ds = append(ds, time.Since(t0))
				if rec.Code != 200 {
					b.Fatalf("%s: %d %s", p.path, rec.Code, rec.Body)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(testkit.PercentileFloor(ds, 50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(testkit.PercentileFloor(ds, 99).Microseconds()), "p99-µs")
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

// BenchmarkDispatchWithDashboards measures dispatch write latency (sync,
// fsync'd) during a driver flood of ~20,000 points/s, first with no
// dashboard open, then with 20 dashboards receiving live frames (10 Fleet,
// 5 Channels, 5 Routes), in one run; it reports both p99 and their ratio.
//
//	go test -run '^$' -bench DispatchWithDashboards -benchtime 1x -p 1 ./ui
func BenchmarkDispatchWithDashboards(b *testing.B) {
	f := newBenchFixture(b, Options{MaxLive: 64})
	srv := httptest.NewServer(f.u)
	defer srv.Close()
	const phase = 6 * time.Second // per setting, over all rounds

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var flood sync.WaitGroup
	var points, refused int64
	var mu sync.Mutex
	for s := range 4 { // 4 senders × 250 points / 50 ms = 20,000/s
		flood.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			seq := uint64(10)
			for n := 0; ctx.Err() == nil; n++ {
				driver := fmt.Sprintf("drv-%04d", (s*250+n)%1000)
				pts := make([]engine.Point, 250)
				for j := range pts {
					q := seq + uint64(j)
					pts[j] = engine.Point{Seq: q, Value: []byte(fmt.Sprintf(`{"seq":%d,"lat":52.4,"lng":13.2,"ts":"2026-11-23T10:00:00Z","speed_kmh":30,"heading":1}`, q))}
				}
				if n%250 == 249 {
					seq += 250
				}
				ack, err := f.e.SubmitPoints(ctx, driver, pts)
				mu.Lock()
				if err != nil {
					refused += 250
				} else {
					points += int64(ack.Accepted)
				}
				mu.Unlock()
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
		})
	}
	dispatch := func(d time.Duration) []time.Duration {
		var ds []time.Duration
		for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
			t0 := time.Now()
			_, err := f.e.PutAssignment(context.Background(), fmt.Sprintf("bench-%d", i%50), []byte(`{"driver":"drv-0001","stops":[],"note":"x"}`), engine.WriteOptions{IfVersion: engine.AnyVersion})
			if err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
			time.Sleep(2 * time.Millisecond) // a dispatcher's pace, not a flood of its own
		}
		return ds
	}
	// Alternate the phases (0, 20, 0, 20, …) so that the shared machine's
	// drift hits both alike.
	var bytes int64
	openDashboards := func() (closeAll func()) {
		dctx, closeDash := context.WithCancel(ctx)
		var dash sync.WaitGroup
		for i := 0; i < 20; i++ {
			v := "/ui/live/channels"
			switch {
			case i < 10:
				v = fmt.Sprintf("/ui/live/fleet?from=%d", f.e.DurableLSN())
			case i >= 15:
				v = fmt.Sprintf("/ui/live/routes?from=%d", f.e.DurableLSN())
			}
			req, _ := http.NewRequestWithContext(dctx, "GET", srv.URL+v, nil)
			req.AddCookie(f.sid)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("dashboard %s: %v %v", v, err, resp)
			}
			// A browser that keeps up: read everything, count bytes.
			dash.Go(func() {
				defer resp.Body.Close()
				n, _ := io.Copy(io.Discard, resp.Body)
				mu.Lock()
				bytes += n
				mu.Unlock()
			})
		}
		return func() { closeDash(); dash.Wait() }
	}
	const rounds = 4
	for b.Loop() {
		time.Sleep(500 * time.Millisecond) // the flood settles
		var idle, busy []time.Duration
		f0 := f.u.liveSent.Load()
		for range rounds {
			idle = append(idle, dispatch(phase/rounds)...)
			closeAll := openDashboards()
			busy = append(busy, dispatch(phase/rounds)...)
			closeAll()
		}
		frames := f.u.liveSent.Load() - f0

		p0, p20 := testkit.PercentileFloor(idle, 99), testkit.PercentileFloor(busy, 99)
		b.ReportMetric(float64(p0.Microseconds()), "p99-0dash-µs")
		b.ReportMetric(float64(p20.Microseconds()), "p99-20dash-µs")
		b.ReportMetric(float64(p20)/float64(p0), "ratio")
		b.ReportMetric(float64(testkit.PercentileFloor(idle, 50).Microseconds()), "p50-0dash-µs")
		b.ReportMetric(float64(testkit.PercentileFloor(busy, 50).Microseconds()), "p50-20dash-µs")
		b.ReportMetric(float64(frames)/phase.Seconds(), "frames/s")
		mu.Lock()
		b.ReportMetric(float64(points)/(2*phase.Seconds()+0.5), "points/s")
		b.ReportMetric(float64(bytes)/phase.Seconds()/1024, "dash-KiB/s")
		mu.Unlock()
	}
	stop()
	flood.Wait()
}
