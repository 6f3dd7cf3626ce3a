package osmand_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/appliance"
	"routehound/config"
)

// BenchmarkPhones: 1,000 simulated phones on keep-alive connections, one
// point in flight each (as the apps send), against the whole appliance in
// process (store, engine, API, phone listener on loopback). b.N is the
// number of durable points. It reports points/s durable, the time to 200
// (p50, p99), and the p99 of a dispatcher's PUT /v1/assignments measured
// idle and then while the phones report, in the same run (the ratio is
// what to compare on a shared machine). Clients and server share the cores.
//
// every=0: each phone sends its next point as soon as the last is
// answered (saturation); every=1s: each phone reports once a second, a
// busy depot's real rate (the apps' default is every few seconds or more).
//
//	go test -run '^$' -bench Phones -benchtime 20000x ./osmand
func BenchmarkPhones(b *testing.B) {
	for _, every := range []time.Duration{0, time.Second} {
		b.Run(fmt.Sprintf("every=%v", every), func(b *testing.B) { benchPhones(b, every) })
	}
}

func benchPhones(b *testing.B, every time.Duration) {
	const phones = 1000
	const dispatchTok = "bench-dispatch-token-0123456789"
	cfg := config.Default()
	cfg.DataDir = filepath.Join(b.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	cfg.Storage.MinFreeMB = 0
	cfg.Tokens = []config.Token{{Role: "dispatch", Token: dispatchTok}, {Role: "admin", Token: "bench-admin-token-0123456789"}}
	cfg.Osmand.Enabled = true
	cfg.Osmand.Listen = "127.0.0.1:0"
	for i := range phones {
		cfg.Osmand.Devices = append(cfg.Osmand.Devices, config.Device{ID: fmt.Sprintf("bench-phone-%04d", i), Driver: fmt.Sprintf("bench-van-%04d", i)})
	}
	a, err := appliance.Start(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	}()
	phoneURL := "http://" + a.Osmand.Addr().String() + "/"

	dispatch := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	route := 0
	put := func() (time.Duration, error) {
		route++
		body := fmt.Sprintf(`{"driver":"bench-van-0001","stops":[{"id":"s1","lat":52.5,"lng":13.4,"eta":"2026-11-23T12:00:00Z"}],"note":"bench %d"}`, route)
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/assignments/route-%d", a.URL(), route%64), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+dispatchTok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d", route))
		t0 := time.Now()
		res, err := dispatch.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
			return 0, fmt.Errorf("dispatch: %d", res.StatusCode)
		}
		return time.Since(t0), nil
	}
	var idle []time.Duration
	for range 300 {
		d, err := put()
		if err != nil {
			b.Fatal(err)
		}
		idle = append(idle, d)
	}

	tr := &http.Transport{MaxIdleConnsPerHost: phones, MaxConnsPerHost: phones}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	var left atomic.Int64
	left.Store(int64(b.N))
	lat := make([][]time.Duration, phones)
	var failed atomic.Int64
	epoch := time.Now().Add(-time.Hour).UnixMilli()
	stop := make(chan struct{})
	var loaded []time.Duration
	var dwg sync.WaitGroup
	dwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if d, err := put(); err == nil {
				loaded = append(loaded, d)
			}
		}
	})
	tot := a.Engine.Totals()
	fs0, sn0, bn0, ba0 := tot.Fsyncs.Load(), tot.SyncNanos.Load(), tot.BusyNanos.Load(), tot.Batches.Load()
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range phones {
		wg.Go(func() {
			next := time.Now().Add(time.Duration(i) * every / phones) // spread over one interval
			for k := int64(1); left.Add(-1) >= 0; k++ {
				if every > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(every)
				}
				url := fmt.Sprintf("%s?id=bench-phone-%04d&lat=52.%06d&lon=13.%06d&timestamp=%d&speed=12&bearing=90&batt=80",
					phoneURL, i, k%1000000, i, epoch+k*1000)
				for {
					s := time.Now()
					res, err := client.Get(url)
					if err != nil { // closed on a full lane: retry, as the apps do
						failed.Add(1)
						continue
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("phone %d: %d", i, res.StatusCode)
						return
					}
					lat[i] = append(lat[i], time.Since(s))
					break
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	close(stop)
	dwg.Wait()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	pct := func(ds []time.Duration, p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return float64(ds[int(p*float64(len(ds)-1))]) / 1e6
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "points/s")
	b.ReportMetric(pct(all, 0.50), "p50-ms")
	b.ReportMetric(pct(all, 0.99), "p99-ms")
	b.ReportMetric(float64(failed.Load()), "closed")
	idleP99, loadP99 := pct(idle, 0.99), pct(loaded, 0.99)
	b.ReportMetric(idleP99, "dispatch-idle-p99-ms")
	b.ReportMetric(loadP99, "dispatch-load-p99-ms")
	if idleP99 > 0 {
		b.ReportMetric(loadP99/idleP99, "dispatch-p99-load/idle")
	}
	b.ReportMetric(float64(len(loaded)), "dispatch-writes")
	fs := float64(tot.Fsyncs.Load() - fs0)
	b.ReportMetric(fs/elapsed.Seconds(), "fsyncs/s")
	if fs > 0 {
		b.ReportMetric(float64(tot.SyncNanos.Load()-sn0)/fs/1e6, "fsync-avg-ms")
	}
	b.ReportMetric(float64(tot.BusyNanos.Load()-bn0)/float64(elapsed)*100, "committer-busy-%")
	if ba := float64(tot.Batches.Load() - ba0); ba > 0 {
		b.ReportMetric(float64(len(all))/ba, "points/batch")
	}
}
