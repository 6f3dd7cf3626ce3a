package appliance

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit"
)

// BenchmarkDashboardRenderReplica renders each dashboard page as the
// appliance serves it (Fleet, Routes, Warehouse read from the SQLite
// replica) with 1,000 drivers, 500 routes and 10,000 loading events, and
// reports p50/p99 per page. Compare with ui's BenchmarkRender (engine
// snapshot scans).
//
//	go test -run '^$' -bench DashboardRenderReplica -benchtime 200x -p 1 ./appliance
func BenchmarkDashboardRenderReplica(b *testing.B) {
	cfg := loopbackConfig(b)
	a, err := Start(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	e, ctx := a.Engine, context.Background()
	for i := 0; i < 1000; i++ {
		v := fmt.Sprintf(`{"seq":1,"lat":%f,"lng":%f,"ts":"2026-11-23T10:00:00Z","speed_kmh":40,"heading":90}`, 52.3+float64(i%40)*0.01, 13.1+float64(i/40)*0.01)
		if _, err := e.SubmitPoints(ctx, fmt.Sprintf("drv-%04d", i), []engine.Point{{Seq: 1, Value: []byte(v)}}); err != nil {
			b.Fatal(err)
		}
	}
	run := func(n, workers int, fn func(i int) error) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Go(func() {
				for i := range next {
					if err := fn(i); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	run(500, 50, func(i int) error {
		_, err := e.PutAssignment(ctx, fmt.Sprintf("route-%03d", i), []byte(fmt.Sprintf(`{"driver":"drv-%04d","stops":[{"id":"a"},{"id":"b"}],"note":"bench"}`, i)), engine.WriteOptions{IfVersion: engine.AnyVersion})
		return err
	})
	kinds := []string{"arrived", "loaded", "unloaded", "departed", "exception"}
	run(10000, 200, func(i int) error {
		_, err := e.AddLoadingEvent(ctx, fmt.Sprintf("01BENCH%06d", i), []byte(fmt.Sprintf(`{"terminal":"T1","dock":"D%d","shipment":"S%d","kind":%q,"pallets":%d,"ts":"2026-11-23T10:00:00Z"}`, i%12, i%300, kinds[i%5], i%30)), engine.WriteOptions{})
		return err
	})
	testkit.Eventually(b, 20*time.Second, "the fixture to be durable", func() bool { return a.Engine.DurableLSN() >= 11500 })
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := a.Replica.WaitLSN(wctx, a.Engine.DurableLSN()); err != nil {
		b.Fatal(err)
	}
	// Log in through the handler.
	rec := httptest.NewRecorder()
	a.UI.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/login", nil))
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())[1]
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"csrf": {csrf}, "token": {a.Token("dashboard")}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	rec = httptest.NewRecorder()
	a.UI.ServeHTTP(rec, req)
	var sid *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "rh_session" && c.Value != "" {
			sid = c
		}
	}
	if sid == nil {
		b.Fatalf("login: %d", rec.Code)
	}
	for _, p := range []struct{ name, path string }{
		{"fleet", "/ui/fleet"}, {"fleet-trail", "/ui/fleet?driver=drv-0001"}, {"routes", "/ui/routes"},
		{"warehouse", "/ui/warehouse"}, {"warehouse-filtered", "/ui/warehouse?dock=D3"},
	} {
		b.Run(p.name, func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				req := httptest.NewRequest("GET", p.path, nil)
				req.AddCookie(sid)
				rec := httptest.NewRecorder()
				t0 := time.Now()
				a.UI.ServeHTTP(rec, req)
				ds = append(ds, time.Since(t0))
				if rec.Code != 200 {
					b.Fatalf("%s: %d", p.path, rec.Code)
				}
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(ds[min(len(ds)-1, len(ds)*99/100)].Microseconds()), "p99-µs")
		})
	}
}
