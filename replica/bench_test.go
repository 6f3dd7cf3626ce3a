package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// genSource is a log of driver points generated on demand: record i is
// point i/drivers+1 of driver i%drivers. It isolates the applier's cost
// from the engine's. After prepare(n) the first n records are made
// beforehand, so that a benchmark's CPU and allocations are the
// applier's, not fmt's.
type genSource struct {
	drivers int
	durable atomic.Uint64
	mu      sync.Mutex
	subs    []func([]engine.Record)
	at      time.Time
	keys    []string // by driver; made by prepare
	vals    [][]byte // by LSN-1; made by prepare
}

func (g *genSource) Subscribe(fn func([]engine.Record)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs = append(g.subs, fn)
}

func (g *genSource) DurableLSN() uint64 { return g.durable.Load() }

// prepare makes the records up to LSN n beforehand.
func (g *genSource) prepare(n uint64) {
	g.keys = make([]string, g.drivers)
	for d := range g.keys {
		g.keys[d] = genKey(d)
	}
	g.vals = make([][]byte, n)
	for lsn := uint64(1); lsn <= n; lsn++ {
		g.vals[lsn-1] = g.value(lsn)
	}
}

func genKey(d int) string { return fmt.Sprintf("driver-%05d", d) }

func (g *genSource) value(lsn uint64) []byte {
	d := int(lsn) % g.drivers
	seq := lsn/uint64(g.drivers) + 1
	return fmt.Appendf(nil, `{"seq":%d,"lat":%.5f,"lng":%.5f,"ts":"2026-11-23T10:00:00Z","speed_kmh":42.5,"heading":180}`,
		seq, 48+float64(d)/1e4, 11+float64(seq)/1e4)
}

func (g *genSource) ReadLog(after uint64, limit int, fn func(engine.Record) error) error {
	end := g.durable.Load()
	for lsn := after + 1; lsn <= end && (limit <= 0 || lsn <= after+uint64(limit)); lsn++ {
		d := int(lsn) % g.drivers
		seq := lsn/uint64(g.drivers) + 1
		var key string
		var v []byte
		if lsn <= uint64(len(g.vals)) {
			key, v = g.keys[d], g.vals[lsn-1]
		} else {
			key, v = genKey(d), g.value(lsn)
		}
		if err := fn(engine.Record{LSN: lsn, Table: fleet.TablePositions, Key: key, Op: engine.OpPut,
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
		fn([]engine.Record{{LSN: n, CommittedAt: g.at}})
	}
}

// BenchmarkApplyPoints: records/s the applier writes, one op = one driver
// point, in pages of up to pageRecords. Run with -benchtime=Nx. The
// records are made before the timer starts, so allocs/op are the
// applier's per point, and cpu-µs/record (the process's user+system CPU)
// is the applier's and SQLite's. drivers=16 is the shape of `routehound
// bench ingest` (16 connections of 100-point batches); drivers=10000 a
// page with one point of each driver.
func BenchmarkApplyPoints(b *testing.B) {
	for _, c := range []struct {
		sync          string
		rows          int
		drivers, step int
	}{{"OFF", 64, 16, 0}, {"OFF", 64, 16, 400}, {"OFF", 64, 16, 1600}, {"OFF", 64, 100, 0}, {"OFF", 64, 10000, 0}, {"OFF", 1, 100, 0}, {"OFF", 1, 10000, 0},
		{"NORMAL", 64, 100, 0}, {"NORMAL", 64, 10000, 0}} {
		name := fmt.Sprintf("sync=%s/rows=%d/drivers=%d", c.sync, c.rows, c.drivers)
		if c.step > 0 {
			// The log grows by step records at a time, each applied before
			// the next: pages of about step records, as at a steady rate
			// (BenchmarkDriverFlood at 20,000 points/s: 250–340 records/tx).
			name += fmt.Sprintf("/step=%d", c.step)
		}
		b.Run(name, func(b *testing.B) {
			oldSync, oldRows := synchronous, multiRows
			synchronous, multiRows = c.sync, c.rows
			defer func() { synchronous, multiRows = oldSync, oldRows }()
			g := &genSource{drivers: c.drivers, at: time.Now()}
			g.prepare(uint64(b.N))
			r, err := Open(filepath.Join(b.TempDir(), "r.db"), g, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			b.ReportAllocs()
			b.ResetTimer()
			t0, c0 := time.Now(), cpuTime()
			step := uint64(b.N)
			if c.step > 0 {
				step = uint64(c.step)
			}
			for n := min(step, uint64(b.N)); ; n = min(n+step, uint64(b.N)) {
				g.publish(n)
				if err := r.WaitLSN(context.Background(), n); err != nil {
					b.Fatal(err)
				}
				if n == uint64(b.N) {
					break
				}
			}
			d, cpu := time.Since(t0), cpuTime()-c0
			b.StopTimer()
			st := r.Stats()
			b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(b.N), "cpu-µs/record")
			b.ReportMetric(float64(b.N)/float64(st.Batches), "records/tx")
			b.ReportMetric(float64(st.Bytes)/(1<<20), "db-MiB")
		})
	}
}

// BenchmarkDriverFlood: drivers send points to the real engine, paced at
// a rate (points/s) or as fast as the driver lane admits (rate=max); with
// the replica it reports its lag behind the durable log, sampled every
// millisecond; without it, the points/s the engine takes alone, to compare
// within one run. One op = one point.
func BenchmarkDriverFlood(b *testing.B) {
	for _, c := range []struct {
		rate    int
		replica bool
		share   float64
	}{{20000, true, applyShare}, {0, true, 1}, {0, true, 0.5}, {0, true, 0.25}, {0, false, 0}} {
		name := fmt.Sprintf("rate=%d/replica=%v", c.rate, c.replica)
		if c.rate == 0 {
			name = fmt.Sprintf("rate=max/replica=%v", c.replica)
		}
		if c.replica {
			name += fmt.Sprintf("/share=%g", c.share)
		}
		b.Run(name, func(b *testing.B) {
			old := applyShare
			applyShare = c.share
			defer func() { applyShare = old }()
			driverFlood(b, c.rate, c.replica)
		})
	}
}

func driverFlood(b *testing.B, rate int, withReplica bool) {
	const drivers, perReq, senders = 1000, 50, 2
	s := newStore(b, "")
	var r *Replica
	if withReplica {
		r = openReplica(b, filepath.Join(b.TempDir(), "r.db"), s.e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recs []uint64
	var ages []time.Duration
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		if r == nil {
			return
		}
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
	t0, c0 := time.Now(), cpuTime()
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
				if rate > 0 {
					time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second / time.Duration(rate))))
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
	if r != nil {
		waitLSN(b, r, last)
	}
	cpu := cpuTime() - c0
	b.StopTimer()
	cancel()
	<-sampled
	b.ReportMetric(float64(b.N)/ingest.Seconds(), "points/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(b.N), "cpu-µs/point")
	if r == nil {
		return
	}
	if st := r.Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.Applied)/float64(st.Batches), "records/tx")
	}
	if len(recs) == 0 {
		b.Fatal("no lag sample")
	}
	slices.Sort(recs)
	slices.Sort(ages)
	q := func(p float64) int { return min(len(recs)-1, int(p*float64(len(recs)))) }
	b.ReportMetric(float64(recs[q(0.5)]), "p50-lag-records")
	b.ReportMetric(float64(recs[q(0.99)]), "p99-lag-records")
	b.ReportMetric(float64(ages[q(0.99)].Microseconds())/1000, "p99-lag-ms")
	b.ReportMetric(float64(ages[len(ages)-1].Microseconds())/1000, "max-lag-ms")
}

// cpuTime is the CPU time (user + system) the process has used: on a
// shared machine it moves less with the neighbours' load than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkApplyWithReaders: the applier while dashboards read (each
// reader: all positions of 1,000 drivers, one trail, the loading counts,
// then 100 ms of rest), against no reader in the same run. One op = one
// record; reports the readers' query latency too.
func BenchmarkApplyWithReaders(b *testing.B) {
	for _, readers := range []int{0, 2, 8} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			g := &genSource{drivers: 1000, at: time.Now()}
			r, err := Open(filepath.Join(b.TempDir(), "r.db"), g, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			// A first page so that readers have rows to read.
			g.publish(10000)
			if err := r.WaitLSN(context.Background(), 10000); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			lat := make([][]time.Duration, readers)
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						t0 := time.Now()
						pos, err := r.Positions(ctx)
						if err == nil && len(pos) > 0 {
							_, err = r.Trail(ctx, pos[len(pos)/2].Driver, 0)
						}
						if err == nil {
							_, err = r.LoadingCounts(ctx)
						}
						if ctx.Err() != nil {
							return
						}
						if err != nil {
							b.Error(err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}
			b.ResetTimer()
			t0 := time.Now()
			g.publish(uint64(10000 + b.N))
			if err := r.WaitLSN(context.Background(), uint64(10000+b.N)); err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			b.StopTimer()
			cancel()
			wg.Wait()
			b.ReportMetric(float64(b.N)/d.Seconds(), "records/s")
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			if len(all) > 0 {
				slices.Sort(all)
				b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "read-p50-ms")
				b.ReportMetric(float64(all[min(len(all)-1, len(all)*99/100)].Microseconds())/1000, "read-p99-ms")
			}
		})
	}
}
