package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The history gate: a request that finds every slot taken past
// historyWait gets 429 history_busy with Retry-After; a slot is held after
// its request for (1-share)/share times as long as it ran; a request whose
// client left while waiting gets nothing run.
func TestHistoryGate(t *testing.T) {
	defer func(w time.Duration) { historyWait = w }(historyWait)
	historyWait = 50 * time.Millisecond
	s := &Server{historyGate: &historyGate{slots: make(chan struct{}, 1)}, log: slog.New(slog.DiscardHandler)}
	req := httptest.NewRequest("GET", "/v1/loading-events", nil)

	done, ok := s.admitHistory(httptest.NewRecorder(), req)
	if !ok {
		t.Fatal("a free slot was refused")
	}
	w := httptest.NewRecorder()
	if _, ok := s.admitHistory(w, req); ok {
		t.Fatal("admitted past the slots")
	}
	var body struct{ Code string }
	if w.Code != http.StatusTooManyRequests || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Code != "history_busy" || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("busy: %d %s Retry-After %q", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
	// Released after a rest of 3× the request's time (here ~60 ms of
	// work: a rest of ~180 ms), not at once.
	time.Sleep(60 * time.Millisecond)
	done()
	if len(s.historyGate.slots) != 1 {
		t.Fatal("the slot was released without its rest")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(s.historyGate.slots) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slot was never released")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A client gone while waiting: no slot taken, 503 canceled.
	s.historyGate.slots <- struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w = httptest.NewRecorder()
	if _, ok := s.admitHistory(w, req.WithContext(ctx)); ok || w.Code != http.StatusServiceUnavailable {
		t.Fatalf("a canceled request: %v %d %s", ok, w.Code, w.Body)
	}
}
