package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"routehound/fleet"
)

// bigHistory answers pages of 1000 assignment versions of about 20 KB
// each: ~20 MB, far more than the sockets' buffers hold.
type bigHistory struct{ stops json.RawMessage }

func (h bigHistory) LSN() uint64 { return 1 }
func (h bigHistory) TrailHistory(context.Context, fleet.TrailQuery) ([]fleet.Position, bool, error) {
	return nil, false, nil
}
func (h bigHistory) LoadingHistory(context.Context, fleet.LoadingQuery) ([]fleet.LoadingRow, bool, error) {
	return nil, false, nil
}
func (h bigHistory) AssignmentHistory(_ context.Context, route string, _ uint64, limit int) ([]fleet.AssignmentVersion, bool, error) {
	out := make([]fleet.AssignmentVersion, limit)
	for i := range out {
		out[i] = fleet.AssignmentVersion{Route: route, Driver: "van-1", Stops: h.stops, Version: uint64(i + 1), LSN: uint64(i + 1)}
	}
	return out, true, nil
}

// TestHistorySlowClientFreesTheSlot: the history slot (one here) is
// released once the page is encoded, not when a client reading slowly has
// taken it all: a second request is served, not refused 429 history_busy;
// and the stalled client is cut after the write timeout.
func TestHistorySlowClientFreesTheSlot(t *testing.T) {
	defer func(w, d time.Duration) { historyWait, responseWriteTimeout = w, d }(historyWait, responseWriteTimeout)
	historyWait = 500 * time.Millisecond
	responseWriteTimeout = 2 * time.Second // longer than historyWait: the slot must not wait for the cut
	s := &Server{historyGate: &historyGate{slots: make(chan struct{}, 1)}, log: slog.New(slog.DiscardHandler),
		history: bigHistory{stops: json.RawMessage(`["` + strings.Repeat("s", 20<<10) + `"]`)}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/assignments/{route}/history", s.getAssignmentHistory)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	path := "/v1/assignments/r-1/history?limit=1000"

	// A client that reads the status line and stops.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: routehound\r\n\r\n", path)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReaderSize(conn, 16).ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("stalled GET: %q %v", line, err)
	}
	stalled := time.Now()

	res, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("a history request while a client reads slowly: %d %.200s %v", res.StatusCode, body, err)
	}
	var page struct{ Versions []json.RawMessage }
	if err := json.Unmarshal(body, &page); err != nil || len(page.Versions) != 1000 {
		t.Fatalf("the page: %d versions, %v", len(page.Versions), err)
	}

	// The client stays stalled past the write timeout (reading earlier
	// would let the page go on), then finds its connection cut: it ends
	// (EOF or reset) before the whole page, not at our read deadline.
	time.Sleep(time.Until(stalled.Add(responseWriteTimeout + time.Second)))
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || n >= int64(len(body)) {
		t.Fatalf("the server did not cut the stalled client (%d of %d bytes): %v", n, len(body), err)
	}
}
