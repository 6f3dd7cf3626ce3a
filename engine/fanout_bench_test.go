package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/engine"
	"routehound/hub"
	"routehound/internal/testkit"
)

// Issue 15: what table subscribers cost the writers. 32 goroutines put
// (tables lane, sync contract) into one table that `subs` hub subscribers
// follow, each streaming into a sink that only counts; one op is one put.
//
//	go test -run '^$' -bench CommitWithSubscribers -benchtime 20000x ./engine
//
// The hub's offers to the subscribers used to run on the committer, after
// each fsync and before the next batch; with the durability feed they run
// on the hub's fan-out goroutine. puts/s and the put latency show what the
// writers pay per subscriber. Only public API: the file builds against the
// engine before the feed too, for a before/after comparison.
func BenchmarkCommitWithSubscribers(b *testing.B) {
	for _, subs := range []int{0, 50, 200} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { runCommitWithSubscribers(b, subs) })
	}
}

// countSink is a hub.Sink that counts changes and sends nothing.
type countSink struct {
	changes atomic.Int64
	ready   chan struct{}
	once    sync.Once
}

func (s *countSink) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	if last {
		s.once.Do(func() { close(s.ready) })
	}
	return nil
}
func (s *countSink) Change(*hub.Event) error { s.changes.Add(1); return nil }
func (s *countSink) Flush() error            { return nil }
func (s *countSink) Heartbeat() error        { return nil }

func runCommitWithSubscribers(b *testing.B, subs int) {
	e, _ := testkit.EngineIn(b, testkit.Store{MemoryBytes: 64 << 20}, nil)
	h := hub.New(e, hub.Config{MaxSubscribersPerTable: max(subs, 1), Buffer: 1 << 16}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var streams sync.WaitGroup
	defer func() { // before testkit's cleanup closes the engine and the wal
		cancel()
		streams.Wait()
		h.Close()
	}()
	sinks := make([]*countSink, subs)
	for i := range sinks {
		s, err := h.Subscribe("t")
		if err != nil {
			b.Fatal(err)
		}
		sink := &countSink{ready: make(chan struct{})}
		sinks[i] = sink
		streams.Go(func() {
			defer s.Close()
			h.Stream(ctx, s, nil, sink)
		})
		<-sink.ready
	}
	st := h.Stats()
	resyncs0 := st.Resyncs.Load()
	busy0, fsyncs0 := e.Totals().BusyNanos.Load(), e.Totals().Fsyncs.Load()
	const writers = 32
	var next atomic.Int64
	lats := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				t0 := time.Now()
				_, err := e.PutKey(context.Background(), engine.Write{Table: "t", Key: fmt.Sprint("k", i%100),
					Value: []byte(`{"payload":"0123456789abcdef0123456789abcdef"}`), IfVersion: engine.AnyVersion})
				if err != nil {
					b.Error(err)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	want := int64(b.N)
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range sinks {
		for s.changes.Load() < want && st.Resyncs.Load() == resyncs0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	delivered := time.Since(start)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	q := func(p float64) float64 { return float64(testkit.PercentileLower(all, p)) / 1e6 }
	fsyncs := e.Totals().Fsyncs.Load() - fsyncs0
	b.ReportMetric(float64(b.N)/el.Seconds(), "puts/s")
	b.ReportMetric(q(50), "put-p50-ms")
	b.ReportMetric(q(99), "put-p99-ms")
	b.ReportMetric(float64(b.N)/float64(max(fsyncs, 1)), "puts/fsync")
	b.ReportMetric(float64(e.Totals().BusyNanos.Load()-busy0)/1e3/float64(max(fsyncs, 1)), "io-µs/fsync")
	if subs > 0 {
		b.ReportMetric(float64(b.N)*float64(subs)/delivered.Seconds(), "delivered/s")
	}
	b.ReportMetric(float64(st.Resyncs.Load()-resyncs0), "resyncs")
}
