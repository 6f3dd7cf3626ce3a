//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/internal/natstest"
)

// TestFailoverSIGKILL (issue 20): a primary under load (drivers, and
// dispatchers on a replicated lane) is SIGKILLed; the warm standby
// following its stream is promoted with `routehound promote`. Every record
// the stream holds (everything JetStream acknowledged) is on the promoted
// box exactly once, at its LSN, as the primary wrote it, and so is every
// dispatch write that was answered; new writes continue from the next LSN;
// a subscriber resuming on the promoted box by LSN sees no gap; the old
// primary restarted is fenced and refuses writes.
func TestFailoverSIGKILL(t *testing.T) {
	ns := natstest.Start(t)
	uplinkTOML := fmt.Sprintf("[uplink]\nnats_url = %q\ndepot = \"e2e\"\n", ns.URL())
	prim := newHarness(t, "[fleet]\nevents = false\n\n"+uplinkTOML+"replicate = [\"dispatch\"]\n")
	prim.start()
	stby := newHarness(t, "[fleet]\nevents = false\n\n"+uplinkTOML+"follow = true\n")
	stby.notPrimaryReady = true
	stby.start()

	// Load: 20 drivers and 2 dispatchers, until the SIGKILL.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	type answered struct {
		route   string
		version uint64
		lsn     int64
	}
	var mu sync.Mutex
	var dispatched []answered
	for d := range 20 {
		wg.Go(func() {
			for seq := 1; ctx.Err() == nil; seq++ {
				pt := []map[string]any{{"seq": seq, "lat": 52.5, "lng": 13.4, "ts": time.Now().UTC().Format(time.RFC3339Nano)}}
				prim.do(ctx, http.MethodPost, fmt.Sprintf("/v1/drivers/d-%d/locations", d), "driver", "", pt)
				pause(ctx, 5*time.Millisecond)
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				route := fmt.Sprintf("r-%d-%d", w, i%20)
				body := map[string]any{"driver": "d-1", "stops": []map[string]any{{"id": "s1", "lat": 52.5, "lng": 13.4}}, "note": fmt.Sprint(i)}
				r, err := prim.do(ctx, http.MethodPut, "/v1/assignments/"+route, "dispatch", fmt.Sprintf("k-%d-%d", w, i), body)
				if err != nil || r.status >= 300 {
					continue
				}
				var a struct {
					Version uint64 `json:"version"`
					LSN     int64  `json:"lsn"`
				}
				if r.decode(&a) == nil {
					mu.Lock()
					dispatched = append(dispatched, answered{route, a.Version, a.LSN})
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	prim.kill()
	cancel()
	wg.Wait()
	if len(dispatched) < 10 {
		t.Fatalf("only %d dispatch writes answered before the kill", len(dispatched))
	}

	// Promote with the CLI against the running standby.
	t0 := time.Now()
	out, err := exec.Command(binPath, "promote", "--url", stby.base, "--token", stby.tokens["admin"], "--config", stby.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("routehound promote: %v\n%s", err, out)
	}
	promoted := time.Since(t0)
	first, err := stby.do(context.Background(), http.MethodPut, "/v1/tables/notes/keys/first", "dashboard", "", map[string]any{"first": true})
	if err != nil || first.status != http.StatusCreated {
		t.Fatalf("first write on the promoted box: %v %v", first, err)
	}
	t.Logf("routehound promote (a process) took %v; its first accepted write %v after the command started", promoted, time.Since(t0))
	var res struct {
		Epoch   uint64 `json:"epoch"`
		LastLSN int64  `json:"last_lsn"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(string(out)), "promoted: ")), &res); err != nil || res.Epoch != 2 {
		t.Fatalf("routehound promote printed %q (%v)", out, err)
	}

	// The stream's records, each once, all on the promoted box as shipped.
	log := readLog(t, stby)
	byLSN := map[int64]logRecord{}
	for _, r := range log {
		byLSN[r.LSN] = r
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "ROUTEHOUND")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inStream := map[int64]bool{}
	var streamLast int64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatalf("stream seq %d: %v", seq, err)
		}
		if strings.HasSuffix(m.Subject, ".$epoch") {
			continue
		}
		var rec logRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatalf("stream seq %d: %v", seq, err)
		}
		if rec.LSN > res.LastLSN {
			continue // the promoted box's own, shipped since
		}
		if inStream[rec.LSN] {
			t.Fatalf("lsn %d is in the stream twice", rec.LSN)
		}
		inStream[rec.LSN] = true
		streamLast = max(streamLast, rec.LSN)
		got, ok := byLSN[rec.LSN]
		if !ok || got.Table != rec.Table || got.Key != rec.Key || got.Version != rec.Version || got.Op != rec.Op || !sameJSON(got.Value, rec.Value) {
			t.Fatalf("lsn %d: stream %+v, promoted box %+v", rec.LSN, rec, got)
		}
	}
	if streamLast != res.LastLSN {
		t.Fatalf("the stream's last record before the promotion is lsn %d, the promotion says %d", streamLast, res.LastLSN)
	}
	for _, d := range dispatched {
		got, ok := byLSN[d.lsn]
		if !ok || got.Table != "assignments" || got.Key != d.route || got.Version != d.version {
			t.Fatalf("answered dispatch write %+v: on the promoted box %+v (%v)", d, got, ok)
		}
	}
	t.Logf("killed primary: %d dispatch writes answered (replicated), %d records in the stream, promoted at lsn %d",
		len(dispatched), len(inStream), res.LastLSN)

	// A subscriber resuming by LSN on the promoted box, and a new write.
	from := res.LastLSN - 50
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, fmt.Sprintf("%s/v1/tables/assignments/events?from=%d", stby.base, from), nil)
	req.Header.Set("Authorization", "Bearer "+stby.tokens["dashboard"])
	resp, err := stby.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r, err := stby.do(context.Background(), http.MethodPut, "/v1/assignments/after-failover", "dispatch", "after",
		map[string]any{"driver": "d-1", "stops": []map[string]any{{"id": "s1", "lat": 52.5, "lng": 13.4}}})
	if err != nil || r.status != http.StatusCreated {
		t.Fatalf("second write on the promoted box: %v %v", r, err)
	}
	var w struct {
		LSN int64 `json:"lsn"`
	}
	var fw struct {
		LSN int64 `json:"lsn"`
	}
	if first.decode(&fw) != nil || fw.LSN != res.LastLSN+1 || r.decode(&w) != nil || w.LSN != res.LastLSN+2 {
		t.Fatalf("the promoted box's first writes: %s, %s; want lsns %d, %d", first, r, res.LastLSN+1, res.LastLSN+2)
	}
	var want []int64
	for _, rec := range log {
		if rec.LSN > from && rec.Table == "assignments" {
			want = append(want, rec.LSN)
		}
	}
	want = append(want, w.LSN)
	got := sseIDs(t, resp, w.LSN)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("SSE resumed from %d saw %v, the log holds %v", from, got, want)
	}

	// The old primary restarted: fenced, no write taken.
	prim.notPrimaryReady = true
	prim.start()
	r, err = prim.do(context.Background(), http.MethodPut, "/v1/tables/notes/keys/k", "dashboard", "", map[string]any{"a": 1})
	if err != nil || r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "not_primary") {
		t.Fatalf("the restarted old primary's write: %v %v", r, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err = prim.do(context.Background(), http.MethodGet, "/v1/uplink", "admin", "", nil)
		if err == nil && strings.Contains(string(r.body), `"role":"fenced"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted old primary's GET /v1/uplink: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	prim.stop()
	stby.stop()
}

// sseIDs reads a table's SSE stream and returns the ids (LSNs) of its
// changes, up to and including lsn last.
func sseIDs(t *testing.T, resp *http.Response, last int64) []int64 {
	t.Helper()
	var ids []int64
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := strings.Index(string(buf), "\n")
			if i < 0 {
				break
			}
			line := string(buf[:i])
			buf = buf[i+1:]
			var id int64
			if _, e := fmt.Sscanf(line, "id: %d", &id); e == nil {
				ids = append(ids, id)
				if id >= last {
					return ids
				}
			}
		}
		if err != nil {
			t.Fatalf("SSE after %v: %v", ids, err)
		}
	}
}

var standbyCuts = flag.Int("standby.cuts", 8, "TestStandbyPowerCut: power cuts of the standby")

// TestStandbyPowerCut: what a standby reports applied (GET /v1/uplink,
// standby.applied_lsn) survives its power cut. The standby follows a
// primary under writes on the lossy filesystem; after each report, NATS
// is stopped (so the restarted standby cannot fetch again what it lost),
// the standby is SIGKILLed and everything it did not fsync is dropped; the
// restarted standby holds at least the reported LSN, with the primary's
// record there.
func TestStandbyPowerCut(t *testing.T) {
	l := mountLossy(t)
	ns := natstest.Start(t)
	uplinkTOML := fmt.Sprintf("[uplink]\nnats_url = %q\ndepot = \"cut\"\n", ns.URL())
	prim := newHarness(t, "[fleet]\nevents = false\n\n"+uplinkTOML)
	prim.start()
	stby := newHarness(t, "[fleet]\nevents = false\n\n"+uplinkTOML+"follow = true\n")
	stby.notPrimaryReady = true
	onLossy(t, stby, l)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			prim.do(ctx, http.MethodPut, fmt.Sprintf("/v1/tables/notes/keys/k-%d", i%500), "dashboard", "", map[string]any{"i": i})
			if i%2 == 0 {
				pt := []map[string]any{{"seq": i + 1, "lat": 52.5, "lng": 13.4, "ts": time.Now().UTC().Format(time.RFC3339Nano)}}
				prim.do(ctx, http.MethodPost, "/v1/drivers/d-1/locations", "driver", "", pt)
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()

	applied := func(h *harness) int64 {
		r, err := h.do(context.Background(), http.MethodGet, "/v1/uplink", "admin", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /v1/uplink: %v %v", r, err)
		}
		var s struct {
			Standby struct {
				AppliedLSN int64 `json:"applied_lsn"`
			} `json:"standby"`
		}
		if err := r.decode(&s); err != nil {
			t.Fatal(err)
		}
		return s.Standby.AppliedLSN
	}
	recordAt := func(h *harness, lsn int64) logRecord {
		r, err := h.do(context.Background(), http.MethodGet, fmt.Sprintf("/v1/log?after=%d&limit=1", lsn-1), "admin", "", nil)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /v1/log at %d: %v %v", lsn, r, err)
		}
		var p struct {
			Records []logRecord `json:"records"`
		}
		if err := r.decode(&p); err != nil || len(p.Records) != 1 || p.Records[0].LSN != lsn {
			t.Fatalf("GET /v1/log at %d: %s", lsn, r)
		}
		return p.Records[0]
	}
	var unsynced int64
	var prev int64
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for cut := 1; cut <= *standbyCuts && !t.Failed(); cut++ {
		stby.start()
		deadline := time.Now().Add(20 * time.Second)
		for applied(stby) <= prev {
			if time.Now().After(deadline) {
				t.Fatalf("cut %d: the standby does not follow (applied %d)", cut, prev)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		reported := applied(stby)
		ns.Stop()
		stby.kill()
		unsynced += l.UnsyncedBytes()
		l.Crash()
		stby.start()
		if got := applied(stby); got < reported {
			t.Fatalf("cut %d: the standby reported lsn %d applied, holds %d after the power cut", cut, reported, got)
		}
		want, got := recordAt(prim, reported), recordAt(stby, reported)
		if want.Table != got.Table || want.Key != got.Key || want.Version != got.Version || !sameJSON(want.Value, got.Value) || want.CommittedAt != got.CommittedAt {
			t.Fatalf("cut %d: lsn %d on the primary %+v, on the standby %+v", cut, reported, want, got)
		}
		prev = reported
		ns.Restart()
		stby.kill()
	}
	if unsynced == 0 {
		t.Error("no power cut dropped any unsynced data: the test did not test anything")
	}
	t.Logf("%d power cuts of the standby; last reported lsn %d; the cuts dropped %d KiB unsynced", *standbyCuts, prev, unsynced>>10)
}
