package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"routehound/engine"
)

// Every delay falls in the bucket whose bounds hold it.
func TestDelayBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, 1, time.Microsecond, time.Microsecond + 1, 1414 * time.Nanosecond, 1415 * time.Nanosecond,
		2 * time.Microsecond, 999 * time.Microsecond, time.Millisecond, 3*time.Millisecond + 7, 161 * time.Millisecond, 16 * time.Second, time.Hour} {
		b := delayBucket(d)
		if b < 0 || b >= delayBuckets {
			t.Fatalf("%v: bucket %d", d, b)
		}
		if b < delayBuckets-1 && d > DelayBound(b) {
			t.Errorf("%v in bucket %d, whose bound is %v", d, b, DelayBound(b))
		}
		if b > 0 && d <= DelayBound(b-1) {
			t.Errorf("%v in bucket %d, but the bucket below holds up to %v", d, b, DelayBound(b-1))
		}
	}
	var s Stats
	h := &s.delay[StageQueue]
	h.observe(3*time.Millisecond, 5)
	h.observe(-time.Second, 1) // a clock step: counted as 0
	h.observe(time.Millisecond, 0)
	got := s.Delay(StageQueue)
	if got.Count != 6 || got.Sum != 15*time.Millisecond || got.Counts[delayBucket(3*time.Millisecond)] != 5 || got.Counts[0] != 1 {
		t.Fatalf("histogram %+v", got)
	}
}

// The stages of every live change delivered add up to its total (they are
// read on one clock), and each is counted once per change delivered to a
// subscriber.
func TestDelayStagesAddUp(t *testing.T) {
	h, e := newHub(t, Config{})
	recs := []*recorder{{}, {}}
	for _, r := range recs {
		stream(t, h, "t", nil, r)
	}
	waitUntil(t, "the snapshots", func() bool {
		for _, r := range recs {
			r.mu.Lock()
			ok := r.snapshot != nil
			r.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	var last uint64
	for i := range 30 {
		r, err := put(e, "t", fmt.Sprint("k", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = r.LSN
	}
	waitUntil(t, "delivered", func() bool { return recs[0].lastLSN() >= last && recs[1].lastLSN() >= last })
	st := h.Stats()
	waitUntil(t, "every delivery timed", func() bool { return st.Delay(StageTotal).Count == 60 })
	feed, queue, write, total := st.Delay(StageFeed), st.Delay(StageQueue), st.Delay(StageWrite), st.Delay(StageTotal)
	if feed.Count != 60 || queue.Count != 60 || write.Count != 60 {
		t.Fatalf("counts feed %d queue %d write %d total %d; want 60 each (30 changes × 2 subscribers)", feed.Count, queue.Count, write.Count, total.Count)
	}
	if sum := feed.Sum + queue.Sum + write.Sum; sum != total.Sum || total.Sum <= 0 {
		t.Fatalf("feed %v + queue %v + write %v = %v, total %v", feed.Sum, queue.Sum, write.Sum, sum, total.Sum)
	}
	if d := st.Delivered.Load(); d != 60 {
		t.Fatalf("delivered %d", d)
	}
}

// A commit's records of one table reach a subscriber together: one offer,
// so that its stream never takes a part of them (one wake-up and one
// write per commit, not one per record). A spinning taker sees whole runs
// only; records of other tables in between do not reach it.
func TestOneOfferPerTableRun(t *testing.T) {
	h, _ := newHub(t, Config{Buffer: 1 << 20})
	sub, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const run, rounds = 8, 300
	var taken atomic.Int64
	var bad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		next := uint64(1)
		for {
			select {
			case <-stop:
				if b := sub.take(); len(b) > 0 {
					taken.Add(int64(len(b)))
				}
				return
			default:
			}
			b := sub.take()
			if len(b)%run != 0 && bad.Load() == nil {
				bad.Store(fmt.Sprintf("took %d changes, not whole runs of %d", len(b), run))
			}
			for _, ev := range b {
				if ev.Table != "t" || ev.LSN != next {
					bad.Store(fmt.Sprintf("took %s@%d, want t@%d", ev.Table, ev.LSN, next))
				}
				next++
				if next%(run+1) == 0 { // the other table's record in each round
					next++
				}
			}
			taken.Add(int64(len(b)))
		}
	}()
	lsn := uint64(0)
	for range rounds {
		recs := make([]engine.Record, 0, run+1)
		for range run {
			lsn++
			recs = append(recs, engine.Record{LSN: lsn, Table: "t", Key: "k", Value: []byte("1"), Version: lsn})
		}
		lsn++
		recs = append(recs, engine.Record{LSN: lsn, Table: "u", Key: "k", Value: []byte("1")})
		h.publish(recs)
	}
	close(stop)
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatal(b)
	}
	if n := taken.Load(); n != run*rounds {
		t.Fatalf("took %d changes, want %d", n, run*rounds)
	}
}

// A run that does not fit in the buffer is not queued in part: the
// subscriber is behind (it resyncs), its buffer holds at most Buffer.
func TestOfferThatDoesNotFitMarksBehind(t *testing.T) {
	h, _ := newHub(t, Config{Buffer: 4})
	sub, err := h.Subscribe("t")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	evs := func(n int) []*Event {
		out := make([]*Event, n)
		for i := range out {
			out[i] = &Event{LSN: uint64(i + 1), Table: "t"}
		}
		return out
	}
	sub.offer(evs(3))
	if sub.behind.Load() || len(sub.q) != 3 {
		t.Fatalf("3 of 4: behind %v, queued %d", sub.behind.Load(), len(sub.q))
	}
	sub.offer(evs(2))
	if !sub.behind.Load() || len(sub.q) != 3 {
		t.Fatalf("2 more past the buffer: behind %v, queued %d (want behind, 3)", sub.behind.Load(), len(sub.q))
	}
	if d := h.Stats().Dropped.Load(); d != 2 {
		t.Fatalf("dropped %d, want 2", d)
	}
	select {
	case <-sub.wake:
	default:
		t.Fatal("the stream was not woken to resync")
	}
}
