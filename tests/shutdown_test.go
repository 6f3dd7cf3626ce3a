//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestShutdownTricklingClient: one client that trickles a request body (one
// byte every 200 ms of a declared 1000) is open when SIGTERM arrives. The
// server must not wait for it past shutdown_timeout, must force-close it,
// still drain every lane into the store and exit 0; after a restart every
// acknowledged write and every accepted driver point is in the change feed.
func TestShutdownTricklingClient(t *testing.T) {
	const shutdownTimeout = 2 * time.Second
	const margin = 10 * time.Second
	h := newHarness(t, fmt.Sprintf("[http]\nshutdown_timeout = %q\n", shutdownTimeout.String()))
	h.start()

	// The trickling client: a complete request head, then the body one
	// byte at a time. The loop is bounded and ends on the first write error
	// (the server closed the connection).
	u, err := url.Parse(h.base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := "POST /v1/loading-events HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"Authorization: Bearer " + h.tokens["warehouse"] + "\r\n" +
		"Idempotency-Key: trickle-" + randHex(8) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: 1000\r\n\r\n{"
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	var trickle sync.WaitGroup
	trickled := 0
	trickle.Go(func() {
		for range 150 { // 30 s at most
			time.Sleep(200 * time.Millisecond)
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
			trickled++
		}
	})

	// Acknowledged writes while the trickle goes on.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acked := map[string]int64{} // loading id → answered lsn
	for i := range 5 {
		body := fmt.Sprintf(`{"terminal":"T1","dock":"D%d","shipment":"SHP-%s","kind":%q,"pallets":%d,"ts":%q}`,
			1+i, randHex(4), loadingKinds[i%len(loadingKinds)], i, time.Now().UTC().Format(time.RFC3339))
		r, err := h.do(ctx, http.MethodPost, "/v1/loading-events", "warehouse", "wh-"+randHex(12), []byte(body))
		if err != nil {
			t.Fatalf("loading event %d: %v", i, err)
		}
		if r.status != http.StatusCreated {
			t.Fatalf("loading event %d: %s, want 201", i, r)
		}
		var a struct {
			ID  string `json:"id"`
			LSN int64  `json:"lsn"`
		}
		if err := r.decode(&a); err != nil || a.ID == "" || a.LSN <= 0 {
			t.Fatalf("loading event %d: answer %s (%v), want an id and lsn > 0", i, r, err)
		}
		acked[a.ID] = a.LSN
	}
	const driver = "truck-shutdown"
	rng := rand.New(rand.NewPCG(1, 2))
	var points []point
	for b := range 4 {
		batch := make([]point, 0, 10)
		for range 10 {
			batch = append(batch, makePoint(int64(len(points)+len(batch)+1), rng))
		}
		r, err := h.do(ctx, http.MethodPost, "/v1/drivers/"+driver+"/locations", "driver", "", batch)
		if err != nil {
			t.Fatalf("driver batch %d: %v", b, err)
		}
		if r.status != http.StatusAccepted {
			t.Fatalf("driver batch %d: %s, want 202", b, r)
		}
		var a struct {
			Accepted *int `json:"accepted"`
		}
		if err := r.decode(&a); err != nil || a.Accepted == nil || *a.Accepted != len(batch) {
			t.Fatalf("driver batch %d: answer %s (%v), want accepted %d", b, r, err, len(batch))
		}
		points = append(points, batch...)
	}

	// The trickling request is in its handler, reading the body.
	time.Sleep(500 * time.Millisecond)
	p := h.proc
	if p.exited() {
		t.Fatalf("server exited before SIGTERM (%v)", p.cmd.ProcessState)
	}
	t0 := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if !h.wait(shutdownTimeout + margin) {
		h.signalGroup(syscall.SIGKILL)
		h.wait(killTimeout)
		t.Fatalf("server did not exit within %v of SIGTERM (shutdown_timeout %v)", shutdownTimeout+margin, shutdownTimeout)
	}
	took := time.Since(t0)
	conn.Close()
	trickle.Wait()
	t.Logf("exit %v after %v of SIGTERM; %d bytes trickled", p.cmd.ProcessState, took.Round(time.Millisecond), trickled)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("server exit after SIGTERM with a trickling client open: %v, want exit status 0", p.cmd.ProcessState)
	}
	logText, err := os.ReadFile(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "stopped cleanly") {
		t.Errorf("server log has no \"stopped cleanly\" line")
	}
	if !regexp.MustCompile(`force-closed[^\n]*connections=[1-9]`).Match(logText) {
		t.Errorf("server log does not say how many connections were force-closed (want a line with force-closed ... connections=N, N > 0)")
	}

	// Every acknowledged write and every accepted point survived.
	h.start()
	recs := readLog(t, h)
	h.stop()
	loading := map[string][]logRecord{}
	seqs := map[int64]int{}
	for _, r := range recs {
		switch {
		case r.Table == "loading":
			loading[r.Key] = append(loading[r.Key], r)
		case r.Table == "positions" && r.Key == driver:
			var v struct{ Seq *int64 }
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Seq == nil {
				t.Errorf("positions record lsn %d: value %s has no seq (%v)", r.LSN, r.Value, err)
				continue
			}
			seqs[*v.Seq]++
		}
	}
	for id, lsn := range acked {
		switch found := loading[id]; {
		case len(found) != 1:
			t.Errorf("acknowledged loading event %s (lsn %d) is %d times in the log, want once", id, lsn, len(found))
		case found[0].LSN != lsn:
			t.Errorf("acknowledged loading event %s: log has it at lsn %d, the server answered lsn %d", id, found[0].LSN, lsn)
		}
	}
	for _, pt := range points {
		if n := seqs[pt.Seq]; n != 1 {
			t.Errorf("accepted point %s seq %d is %d times in the log, want once (the lanes drain on SIGTERM)", driver, pt.Seq, n)
		}
	}
}
