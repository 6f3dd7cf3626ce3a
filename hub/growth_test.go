package hub

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// Issue 18, point 6d: one client connection holds at most
// MaxSubscribersPerConn subscriptions (HTTP/2 carries many event streams
// on one connection); other connections and ownerless feeds are not
// limited by it; a closed subscription gives its place back once.
func TestSubscriberLimitPerConnection(t *testing.T) {
	h, _ := newHub(t, Config{MaxSubscribersPerConn: 3})
	var subs []*Sub
	for i := range 3 {
		s, err := h.SubscribeFrom("10.0.0.1:4000", fmt.Sprint("t", i))
		if err != nil {
			t.Fatalf("subscription %d: %v", i+1, err)
		}
		subs = append(subs, s)
	}
	if _, err := h.SubscribeFrom("10.0.0.1:4000", "t9"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("4th subscription of one connection: %v", err)
	}
	if _, err := h.SubscribeFrom("10.0.0.1:4001", "t9"); err != nil {
		t.Fatalf("another connection: %v", err)
	}
	for range 5 {
		if _, err := h.Subscribe("t9"); err != nil {
			t.Fatalf("an ownerless subscription: %v", err)
		}
	}
	subs[0].Close()
	subs[0].Close()
	s, err := h.SubscribeFrom("10.0.0.1:4000", "t9")
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	if _, err := h.SubscribeFrom("10.0.0.1:4000", "t9"); !errors.Is(err, ErrTooManySubscribers) {
		t.Fatalf("a closed place counted twice: %v", err)
	}
	s.Close()
	// A refusal at the per-table cap gives the connection's place back.
	h2, _ := newHub(t, Config{MaxSubscribersPerConn: 2, MaxSubscribersPerTable: 1})
	if _, err := h2.SubscribeFrom("a:1", "full"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := h2.SubscribeFrom("b:1", "full"); !errors.Is(err, ErrTooManySubscribers) {
			t.Fatalf("past the table cap: %v", err)
		}
	}
	for i := range 2 {
		if _, err := h2.SubscribeFrom("b:1", fmt.Sprint("u", i)); err != nil {
			t.Fatalf("refusals took the connection's places: %v", err)
		}
	}
}

// Issue 18, point 6e: a resume from an LSN more than MaxCatchUp records
// behind gets a resync snapshot, not a replay of the log; within it, the
// replay as before.
func TestResumeFarBehindResyncs(t *testing.T) {
	h, e := newHub(t, Config{MaxCatchUp: 20})
	for i := range 50 {
		if _, err := put(e, "t", fmt.Sprint("k", i%5), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Answered by the journal; published by the log's fsync just after.
	if err := e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	from := uint64(0)
	rec := &recorder{}
	stream(t, h, "t", &from, rec)
	waitUntil(t, "resync", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.resyncs == 1 && len(rec.snapshot) == 5 })
	rec.mu.Lock()
	n := len(rec.changes)
	rec.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d changes replayed, want none", n)
	}
	if h.Stats().CatchUpResyncs.Load() != 1 {
		t.Fatalf("catch-up resyncs %d", h.Stats().CatchUpResyncs.Load())
	}
	near := e.DurableLSN() - 10
	rec2 := &recorder{}
	stream(t, h, "t", &near, rec2)
	waitUntil(t, "replay", func() bool { rec2.mu.Lock(); defer rec2.mu.Unlock(); return len(rec2.changes) == 10 })
	rec2.mu.Lock()
	defer rec2.mu.Unlock()
	if rec2.snapshot != nil || rec2.resyncs != 0 {
		t.Fatalf("a resume within max_catch_up got a snapshot")
	}
}
