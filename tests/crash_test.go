//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"
)

var crashCycles = flag.Int("crash.cycles", 20, "TestCrashRecovery: number of SIGKILL/restart cycles")

// TestCrashRecovery drives drivers, a dispatcher and warehouse terminals
// against one data dir, SIGKILLs the server at a random moment of every
// cycle and restarts it. At the end the change feed must hold every write
// the server confirmed exactly once, and no driver point twice.
func TestCrashRecovery(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 0xc0ffee))
	bad := &issues{t: t}
	h := newHarness(t, "")

	var drivers []*driverSim
	for i := 1; i <= 4; i++ {
		drivers = append(drivers, &driverSim{name: fmt.Sprintf("truck-%02d", i)})
	}
	writers := []*syncWriter{newDispatcher(drivers[0].name)}
	for i := 1; i <= 2; i++ {
		writers = append(writers, newTerminal(fmt.Sprintf("T%d", i)))
	}

	cycles := 0
	for cycles < *crashCycles && !t.Failed() {
		cycles++
		h.start()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, d := range drivers {
			rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
			wg.Go(func() { d.run(ctx, h, rng, bad) })
		}
		for _, w := range writers {
			rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
			wg.Go(func() { w.run(ctx, h, rng, bad) })
		}
		time.Sleep(200*time.Millisecond + time.Duration(master.IntN(500))*time.Millisecond)
		h.kill() // before cancel: whatever was answered before the kill counts as answered
		cancel()
		wg.Wait()
	}
	if t.Failed() {
		t.Fatalf("stopped after %d cycles (seed %d)", cycles, seed)
	}

	h.start()
	recs := readLog(t, h)
	h.stop()

	// Index the feed.
	byNote := map[string][]logRecord{} // assignments, by the note of the value
	byKey := map[string][]logRecord{}  // loading, by key
	bySeq := map[string]map[int64][]logRecord{}
	for _, r := range recs {
		switch r.Table {
		case "assignments":
			var v struct{ Note string }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("assignments record lsn %d: value %s: %v", r.LSN, r.Value, err)
			}
			byNote[v.Note] = append(byNote[v.Note], r)
		case "loading":
			byKey[r.Key] = append(byKey[r.Key], r)
		case "positions":
			var v struct{ Seq *int64 }
			if err := json.Unmarshal(r.Value, &v); err != nil || v.Seq == nil {
				t.Errorf("positions record lsn %d: value %s has no seq (%v)", r.LSN, r.Value, err)
				continue
			}
			if bySeq[r.Key] == nil {
				bySeq[r.Key] = map[int64][]logRecord{}
			}
			bySeq[r.Key][*v.Seq] = append(bySeq[r.Key][*v.Seq], r)
		}
	}

	// Confirmed dispatch writes and acknowledged loading events: exactly once,
	// at the LSN the server answered.
	confirmed := map[string]int{}
	retried := map[string]int{}
	for _, w := range writers {
		retried[w.role] += w.retriedOK
		for _, c := range w.confirmed {
			confirmed[w.role]++
			found := byKey[c.key]
			if c.note != "" {
				found = byNote[c.note]
			}
			switch {
			case len(found) != 1:
				bad.add("%s write %q (key %q, answered lsn %d) is %d times in the log, want once",
					w.role, c.note, c.key, c.lsn, len(found))
			case found[0].Table != c.table || found[0].Key != c.key || found[0].LSN != c.lsn || found[0].Op != "put":
				bad.add("%s write %q: log has %s/%s op %s at lsn %d, the server answered %s/%s at lsn %d",
					w.role, c.note, found[0].Table, found[0].Key, found[0].Op, found[0].LSN, c.table, c.key, c.lsn)
			}
		}
	}

	// Driver points: at most once each, as sent, and every one up to the
	// highest durable_seq the driver was told about.
	checked := 0
	for _, d := range drivers {
		checked += d.checkLog(bySeq[d.name], bad)
	}
	for name := range bySeq {
		if !isDriver(drivers, name) {
			bad.add("positions has points of unknown driver %q", name)
		}
	}

	for _, role := range []string{"dispatch", "warehouse"} {
		if confirmed[role] == 0 {
			t.Errorf("no %s write was confirmed in %d cycles", role, cycles)
		}
	}
	if checked == 0 {
		t.Errorf("no driver point was answered as durable in %d cycles", cycles)
	}
	if n := bad.count(); n > 0 {
		t.Errorf("%d issues in total (seed %d)", n, seed)
	}
	t.Logf("%d cycles (seed %d): dispatch %d confirmed (%d after a retry), warehouse %d acknowledged (%d after a retry), "+
		"driver points %d checked durable of %d sent, log %d records",
		cycles, seed, confirmed["dispatch"], retried["dispatch"], confirmed["warehouse"], retried["warehouse"],
		checked, sentPoints(drivers), len(recs))
}

// driverSim is one driver across all cycles. points[i] has seq i+1.
type driverSim struct {
	name    string
	points  []point
	durable int64         // highest durable_seq ever answered
	pace    time.Duration // pause after each accepted batch (0: flat out)
	batch   int           // points per POST (0: 20)
}

// run posts batches until ctx is done, starting with every point above the
// last durable_seq answered: those may have been lost by the crash.
func (d *driverSim) run(ctx context.Context, h *harness, rng *rand.Rand, bad *issues) {
	next := int(d.durable) // index of the next point to send
	for ctx.Err() == nil {
		size := d.batch
		if next == len(d.points) {
			n := size
			if n == 0 {
				n = 1 + rng.IntN(20)
			}
			for range n {
				d.points = append(d.points, makePoint(int64(len(d.points)+1), rng))
			}
		}
		if size == 0 {
			size = 20
		}
		batch := d.points[next:min(next+size, len(d.points))]
		r, err := h.do(ctx, http.MethodPost, "/v1/drivers/"+d.name+"/locations", "driver", "", batch)
		if err != nil {
			pause(ctx, 100*time.Millisecond) // the server is being killed
			continue
		}
		switch r.status {
		case http.StatusAccepted:
			var a struct {
				Accepted   *int   `json:"accepted"`
				Duplicates *int   `json:"duplicates"`
				DurableSeq *int64 `json:"durable_seq"`
			}
			if err := r.decode(&a); err != nil || a.Accepted == nil || a.Duplicates == nil || a.DurableSeq == nil {
				bad.add("driver %s: 202 answer without accepted/duplicates/durable_seq: %s", d.name, r)
				return
			}
			if *a.Accepted+*a.Duplicates != len(batch) {
				bad.add("driver %s: batch of %d answered accepted %d + duplicates %d", d.name, len(batch), *a.Accepted, *a.Duplicates)
			}
			if *a.DurableSeq < d.durable || *a.DurableSeq > int64(len(d.points)) {
				bad.add("driver %s: durable_seq %d, earlier answered %d, highest seq sent %d",
					d.name, *a.DurableSeq, d.durable, len(d.points))
			}
			d.durable = max(d.durable, *a.DurableSeq)
			next += len(batch)
			if d.pace > 0 {
				pause(ctx, d.pace)
			}
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if err := r.retryAfter(); err != nil {
				bad.add("driver %s: %v", d.name, err)
			}
			pause(ctx, 20*time.Millisecond)
		default:
			bad.add("driver %s: POST batch of %d: %s", d.name, len(batch), r)
			return
		}
	}
}

// idemRequest is one write sent with an Idempotency-Key; a retry sends the
// same request again.
type idemRequest struct {
	method, path, key string
	body              []byte
	route, note       string // dispatch only
}

// confirmedWrite is a write the server answered 200/201: it must be in
// table at lsn, under key; dispatch writes are found by their unique note.
type confirmedWrite struct {
	table, key, note string
	lsn              int64
}

// syncWriter is a dispatcher or a warehouse terminal across all cycles.
type syncWriter struct {
	role      string
	newReq    func(rng *rand.Rand) idemRequest
	parse     func(req idemRequest, r *reply) (confirmedWrite, error)
	pending   []idemRequest // failed with a transport error: outcome unknown
	confirmed []confirmedWrite
	retriedOK int
}

// run first retries, with the same Idempotency-Key, about half of the
// requests whose outcome the last crash left unknown (the others are given
// up), then sends new requests one at a time until ctx is done.
func (w *syncWriter) run(ctx context.Context, h *harness, rng *rand.Rand, bad *issues) {
	old := w.pending
	w.pending = nil
	for _, req := range old {
		switch {
		case ctx.Err() != nil:
			w.pending = append(w.pending, req)
		case rng.IntN(2) == 0:
			w.send(ctx, h, req, true, bad)
		}
	}
	for ctx.Err() == nil {
		w.send(ctx, h, w.newReq(rng), false, bad)
	}
}

func (w *syncWriter) send(ctx context.Context, h *harness, req idemRequest, retry bool, bad *issues) {
	r, err := h.do(ctx, req.method, req.path, w.role, req.key, req.body)
	if err != nil {
		w.pending = append(w.pending, req)
		pause(ctx, 100*time.Millisecond) // the server is being killed
		return
	}
	switch r.status {
	case http.StatusOK, http.StatusCreated:
		c, err := w.parse(req, r)
		if err != nil {
			bad.add("%s %s %s: %v", w.role, req.method, req.path, err)
			return
		}
		w.confirmed = append(w.confirmed, c)
		if retry {
			w.retriedOK++
		}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if err := r.retryAfter(); err != nil {
			bad.add("%s: %v", w.role, err)
		}
		pause(ctx, 20*time.Millisecond)
	default:
		bad.add("%s %s %s: %s", w.role, req.method, req.path, r)
	}
}

// newDispatcher PUTs assignments of a few routes, each with a unique note.
func newDispatcher(driver string) *syncWriter {
	n := 0
	return &syncWriter{
		role: "dispatch",
		newReq: func(rng *rand.Rand) idemRequest {
			n++
			route := fmt.Sprintf("R-%02d", 1+rng.IntN(8))
			note := fmt.Sprintf("crash-note-%d-%s", n, randHex(4))
			body, _ := json.Marshal(assignmentBody(driver, note, rng))
			return idemRequest{method: http.MethodPut, path: "/v1/assignments/" + route,
				key: "disp-" + randHex(12), body: body, route: route, note: note}
		},
		parse: func(req idemRequest, r *reply) (confirmedWrite, error) {
			var a struct {
				Route       string `json:"route"`
				LSN         int64  `json:"lsn"`
				CommittedAt string `json:"committed_at"`
			}
			if err := r.decode(&a); err != nil {
				return confirmedWrite{}, err
			}
			if _, err := time.Parse(time.RFC3339Nano, a.CommittedAt); a.Route != req.route || a.LSN <= 0 || err != nil {
				return confirmedWrite{}, fmt.Errorf("answer %s, want route %q, lsn > 0, RFC 3339 committed_at", r, req.route)
			}
			return confirmedWrite{table: "assignments", key: req.route, note: req.note, lsn: a.LSN}, nil
		},
	}
}

func assignmentBody(driver, note string, rng *rand.Rand) map[string]any {
	var stops []map[string]any
	for i := range 1 + rng.IntN(3) {
		stops = append(stops, map[string]any{
			"id":  fmt.Sprintf("stop-%d", i+1),
			"lat": 52.3 + rng.Float64()*0.4, "lng": 13.1 + rng.Float64()*0.6,
			"eta": time.Now().UTC().Add(time.Duration(i+1) * time.Hour).Format(time.RFC3339),
		})
	}
	return map[string]any{"driver": driver, "stops": stops, "note": note}
}

var loadingKinds = []string{"arrived", "loaded", "unloaded", "departed", "exception"}

// newTerminal POSTs loading events of one warehouse terminal.
func newTerminal(terminal string) *syncWriter {
	return &syncWriter{
		role: "warehouse",
		newReq: func(rng *rand.Rand) idemRequest {
			body, _ := json.Marshal(map[string]any{
				"terminal": terminal,
				"dock":     fmt.Sprintf("D%d", 1+rng.IntN(6)),
				"shipment": "SHP-" + randHex(4),
				"kind":     loadingKinds[rng.IntN(len(loadingKinds))],
				"pallets":  rng.IntN(34),
				"ts":       time.Now().UTC().Format(time.RFC3339),
			})
			return idemRequest{method: http.MethodPost, path: "/v1/loading-events",
				key: "wh-" + randHex(12), body: body}
		},
		parse: func(req idemRequest, r *reply) (confirmedWrite, error) {
			var a struct {
				ID  string `json:"id"`
				LSN int64  `json:"lsn"`
			}
			if err := r.decode(&a); err != nil {
				return confirmedWrite{}, err
			}
			if a.ID == "" || a.LSN <= 0 {
				return confirmedWrite{}, fmt.Errorf("answer %s, want a string id and lsn > 0", r)
			}
			return confirmedWrite{table: "loading", key: a.ID, lsn: a.LSN}, nil
		},
	}
}

// logRecord is one record of the change feed GET /v1/log.
type logRecord struct {
	LSN         int64           `json:"lsn"`
	Table       string          `json:"table"`
	Key         string          `json:"key"`
	Op          string          `json:"op"`
	Value       json.RawMessage `json:"value"`
	Version     uint64          `json:"version"`
	Actor       string          `json:"actor"`
	CommittedAt string          `json:"committed_at"`
}

// readLog reads the whole change feed with the admin token and checks that
// LSNs strictly increase across pages.
func readLog(t *testing.T, h *harness) []logRecord {
	t.Helper()
	return readLogAfter(t, h, 0)
}

// readLogAfter reads the change feed after LSN after.
func readLogAfter(t *testing.T, h *harness, after int64) []logRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const limit = 1000
	var out []logRecord
	last := after
	for page := 0; ; page++ {
		if page > 100000 {
			t.Fatalf("GET /v1/log: more than %d pages", page)
		}
		r, err := h.do(ctx, http.MethodGet, fmt.Sprintf("/v1/log?after=%d&limit=%d", after, limit), "admin", "", nil)
		if err != nil {
			t.Fatalf("GET /v1/log?after=%d: %v", after, err)
		}
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/log?after=%d: %s", after, r)
		}
		var p struct {
			Records []logRecord `json:"records"`
			Next    *int64      `json:"next"`
		}
		if err := r.decode(&p); err != nil {
			t.Fatalf("GET /v1/log?after=%d: %v", after, err)
		}
		if len(p.Records) > limit {
			t.Errorf("GET /v1/log?limit=%d answered %d records", limit, len(p.Records))
		}
		for _, rec := range p.Records {
			if rec.LSN <= last {
				t.Fatalf("GET /v1/log?after=%d: lsn %d follows lsn %d", after, rec.LSN, last)
			}
			last = rec.LSN
		}
		out = append(out, p.Records...)
		if p.Next == nil {
			return out
		}
		if *p.Next <= after {
			t.Fatalf("GET /v1/log?after=%d: next %d does not advance", after, *p.Next)
		}
		after = *p.Next
	}
}

// sameJSON reports whether two JSON documents hold the same value.
func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func isDriver(ds []*driverSim, name string) bool {
	for _, d := range ds {
		if d.name == name {
			return true
		}
	}
	return false
}

func sentPoints(ds []*driverSim) int {
	n := 0
	for _, d := range ds {
		n += len(d.points)
	}
	return n
}

// checkLog checks one driver's points in the log (seq → records): each at
// most once and as sent, and every one up to the highest durable_seq the
// driver was told about present. It returns how many seqs it required.
func (d *driverSim) checkLog(bySeq map[int64][]logRecord, bad *issues) int {
	for seq, rs := range bySeq {
		if len(rs) > 1 {
			bad.add("driver %s seq %d is %d times in the log", d.name, seq, len(rs))
		}
		if seq < 1 || seq > int64(len(d.points)) {
			bad.add("driver %s seq %d is in the log but was never sent", d.name, seq)
			continue
		}
		if want, _ := json.Marshal(d.points[seq-1]); !sameJSON(rs[0].Value, want) {
			bad.add("driver %s seq %d: log value %s, sent %s", d.name, seq, rs[0].Value, want)
		}
	}
	for seq := int64(1); seq <= d.durable; seq++ {
		if len(bySeq[seq]) == 0 {
			bad.add("driver %s seq %d is missing from the log although durable_seq %d was answered", d.name, seq, d.durable)
		}
	}
	return int(d.durable)
}
