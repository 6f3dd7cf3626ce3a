package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/engine"
	"routehound/wal"
)

// genSource is a log of driver points generated on demand: record i is
// point i/drivers+1 of driver i%drivers. It isolates the applier's cost
// from the engine's.
type genSource struct {
	drivers int
	durable atomic.Uint64
	mu      sync.Mutex
	subs    []func([]wal.Record)
	at      time.Time
}

func (g *genSource) Subscribe(fn func([]wal.Record)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs = append(g.subs, fn)
}

func (g *genSource) DurableLSN() uint64 { return g.durable.Load() }

func (g *genSource) ReadLog(after uint64, limit int, fn func(wal.Record) error) error {
	end := g.durable.Load()
	for lsn := after + 1; lsn <= end && (limit <= 0 || lsn <= after+uint64(limit)); lsn++ {
		d := int(lsn) % g.drivers
		seq := lsn/uint64(g.drivers) + 1
		v := fmt.Appendf(nil, `{"seq":%d,"lat":%.5f,"lng":%.5f,"ts":"2026-11-23T10:00:00Z","speed_kmh":42.5,"heading":180}`,
			seq, 48+float64(d)/1e4, 11+float64(seq)/1e4)
		if err := fn(wal.Record{LSN: lsn, Table: engine.TablePositions, Key: fmt.Sprintf("driver-%05d", d), Op: wal.OpPut,
			Value: v, Version: seq, Actor: "driver", CommittedAt: g.at}); err != nil {
			return err
		}
	}
	return nil
}

// publish makes the log durable up to n and tells the subscribers.
func (g *genSource) publish(n uint64) {
	g.durable.Store(n)
	g.mu.Lock()
	subs := g.subs
	g.mu.Unlock()
	for _, fn := range subs {
		fn([]wal.Record{{LSN: n, CommittedAt: g.at}})
	}
}

// BenchmarkApplyPoints: records/s the applier writes, one op = one driver
// point, in pages of up to pageRecords. Run with -benchtime=Nx.
func BenchmarkApplyPoints(b *testing.B) {
	for _, sync := range []string{"OFF", "NORMAL"} {
		for _, drivers := range []int{100, 10000} {
			b.Run(fmt.Sprintf("sync=%s/drivers=%d", sync, drivers), func(b *testing.B) {
				old := synchronous
				synchronous = sync
				defer func() { synchronous = old }()
				g := &genSource{drivers: drivers, at: time.Now()}
				r, err := Open(filepath.Join(b.TempDir(), "r.db"), g, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				b.ResetTimer()
				t0 := time.Now()
				g.publish(uint64(b.N))
				if err := r.WaitLSN(context.Background(), uint64(b.N)); err != nil {
					b.Fatal(err)
				}
				d := time.Since(t0)
				b.StopTimer()
				st := r.Stats()
				b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
				b.ReportMetric(float64(b.N)/float64(st.Batches), "records/tx")
				b.ReportMetric(float64(st.Bytes)/(1<<20), "db-MiB")
			})
		}
	}
}

// BenchmarkLagUnderDriverFlood: lag of the replica behind the durable log
// while drivers flood the real engine as fast as the driver lane admits.
// One op = one point; the lag is sampled every millisecond.
func BenchmarkLagUnderDriverFlood(b *testing.B) {
	const drivers, perReq, senders = 1000, 50, 2
	s := newStore(b, "")
	r := openReplica(b, filepath.Join(b.TempDir(), "r.db"), s.e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recs []uint64
	var ages []time.Duration
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				n, age := r.Lag()
				recs, ages = append(recs, n), append(ages, age)
			}
		}
	}()
	b.ResetTimer()
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seqs := make([]uint64, drivers)
			for {
				i := next.Add(perReq) - perReq
				if i >= int64(b.N) {
					return
				}
				// drivers is a multiple of senders: sender w sends for the
				// drivers d with d%senders == w, so it owns their seqs.
				d := (int(i/perReq)*senders + w) % drivers
				n := min(int64(perReq), int64(b.N)-i)
				pts := make([]engine.Point, n)
				for k := range pts {
					seqs[d]++
					pts[k] = point(seqs[d], float64(seqs[d]%90))
				}
				for {
					_, err := s.e.SubmitPoints(ctx, fmt.Sprintf("d%04d", d), pts)
					if errors.Is(err, engine.ErrLaneFull) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						b.Error(err)
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	last := s.durable(b)
	ingest := time.Since(t0)
	waitLSN(b, r, last)
	b.StopTimer()
	cancel()
	<-sampled
	if len(recs) == 0 {
		b.Fatal("no lag sample")
	}
	slices.Sort(recs)
	slices.Sort(ages)
	q := func(p float64) int { return min(len(recs)-1, int(p*float64(len(recs)))) }
	b.ReportMetric(float64(b.N)/ingest.Seconds(), "points/s")
	b.ReportMetric(float64(recs[q(0.5)]), "p50-lag-records")
	b.ReportMetric(float64(recs[q(0.99)]), "p99-lag-records")
	b.ReportMetric(float64(ages[q(0.99)].Microseconds())/1000, "p99-lag-ms")
	b.ReportMetric(float64(ages[len(ages)-1].Microseconds())/1000, "max-lag-ms")
}
