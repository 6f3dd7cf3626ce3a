package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit"
)

// BenchmarkPhonePointsInProcess: the engine's part of the phone apps'
// path, without HTTP — 1,000 goroutines ("phones"), one point in flight
// each, SubmitPhonePoint returning once durable. One op is one durable
// point. Compare with BenchmarkPhones (./osmand, the same over HTTP) and
// with BenchmarkDriverInProcess (the driver API's batches of 100).
//
//	go test -run '^$' -bench PhonePointsInProcess -benchtime 50000x ./engine
func BenchmarkPhonePointsInProcess(b *testing.B) {
	const phones = 1000
	e, _ := testkit.EngineIn(b, testkit.Store{MemoryBytes: 96 << 20}, nil)
	value := []byte(`{"lat":52.520008,"lng":13.404954,"ts":"2026-11-23T12:00:00.000Z","speed_kmh":18.52,"heading":90,"battery":76,"accuracy":12,"altitude":34,"device":"bench-phone-0000"}`)
	epoch := time.Now().Add(-time.Hour).UnixMilli()
	var left atomic.Int64
	left.Store(int64(b.N))
	tot := e.Totals()
	ba0 := tot.Batches.Load()
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range phones {
		wg.Go(func() {
			driver, device := fmt.Sprintf("van-%04d", i), fmt.Sprintf("bench-phone-%04d", i)
			for k := int64(1); left.Add(-1) >= 0; k++ {
				_, err := e.SubmitPhonePoint(context.Background(), engine.PhonePoint{Driver: driver, Device: device,
					FixMs: epoch + k*1000, Lat: 52.5, Lng: float64(k), Value: value})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "durable-pts/s")
	if ba := tot.Batches.Load() - ba0; ba > 0 {
		b.ReportMetric(float64(b.N)/float64(ba), "points/batch")
	}
}
