package uplink

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
)

// processCPU is the CPU time (user + system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkShipReplicatedFromStore ships b.N records read from the store
// (the engine reopened: an empty tail) to a fenced stream of a 3-node
// cluster, R1 (MaxInFlight records in flight), R3 (one record in flight,
// uplink.go's window) and R3 with allow_atomic (one atomic batch in
// flight, batch.go): records/s and the process's CPU per record (the
// three NATS servers run in this process too). Run with a fixed count:
//
//	nice -n 19 go test -run '^$' -bench ShipReplicated -benchtime 3000x ./uplink/
func BenchmarkShipReplicatedFromStore(b *testing.B) {
	cl := natstest.StartCluster(b, 3)
	ctx := context.Background()
	run := 0
	for _, v := range []struct {
		reps   int
		atomic bool
	}{{1, false}, {3, false}, {3, true}} {
		reps := v.reps
		sub := fmt.Sprintf("R%d", reps)
		if v.atomic {
			sub += "-atomic"
		}
		b.Run(sub, func(b *testing.B) {
			b.StopTimer()
			run++
			name, depot := fmt.Sprintf("RH%d_%d", reps, run), fmt.Sprintf("d%d_%d", reps, run)
			natstest.CreateStream(b, cl.URL(), jetstream.StreamConfig{Name: name, Subjects: []string{"routehound." + depot + ".>"}, Replicas: reps,
				Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowAtomicPublish: v.atomic})
			dir := b.TempDir()
			e := openEngine(b, dir, engine.DefaultConfig().Retention)
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < b.N; i += 8 {
						if _, err := e.PutKey(ctx, engine.Write{Table: "t", Key: fmt.Sprint("k", i%50), Value: []byte(`{"i":1}`), IfVersion: engine.AnyVersion}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			e.Close(ctx)
			e.CloseStore()
			e = openEngine(b, dir, engine.DefaultConfig().Retention) // an empty tail: the uplink reads the store
			last := e.DurableLSN()
			u := newUplink(b, dir, cl.URL(), func(c *Config) { c.Stream = name; c.Depot = depot; c.MaxInFlight = 1024 })
			start, cpu0 := time.Now(), processCPU()
			b.StartTimer()
			u.Start(e)
			for u.Acked() < last && time.Since(start) < 5*time.Minute {
				time.Sleep(5 * time.Millisecond)
			}
			b.StopTimer()
			el, cpu := time.Since(start), processCPU()-cpu0
			if u.Acked() < last {
				s := u.Status()
				b.Fatalf("shipped %d of %d records in %v; failures %d, last error %q", u.Acked(), last, el, s.Failures, s.LastError)
			}
			if got := u.batches.Load(); v.atomic != (got > 0) {
				b.Fatalf("atomic batches acknowledged: %d, on a stream with allow_atomic %v", got, v.atomic)
			}
			b.ReportMetric(float64(last)/el.Seconds(), "records/s")
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(last), "cpu-ms/record")
			u.Close()
		})
	}
}
