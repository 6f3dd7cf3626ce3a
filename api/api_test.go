package api_test

// HTTP integration tests of the v1 interface contract (DESIGN.md,
// "Interface contract (v1)"): the real appliance, started as serve.go starts
// it (internal/apptest), on a loopback listener, driven by real HTTP clients.
//
// Every refusal is checked for its status AND its JSON body
// {"code","message"} with the exact stable code. Waits are bounded by
// deadlines; nothing sleeps a fixed time to wait for an event.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/internal/apptest"
	"routehound/internal/testkit"
)

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

// One token per role, as config [[tokens]] would give them.
var fxTokens = map[api.Role]string{
	api.RoleDriver:    "fx-token-driver-5d1c",
	api.RoleDispatch:  "fx-token-dispatch-9a2e",
	api.RoleWarehouse: "fx-token-warehouse-77b0",
	api.RoleDashboard: "fx-token-dashboard-c3f4",
	api.RoleAdmin:     "fx-token-admin-0e81",
}

var fxRoles = []api.Role{api.RoleDriver, api.RoleDispatch, api.RoleWarehouse, api.RoleDashboard, api.RoleAdmin}

func tok(r api.Role) string { return fxTokens[r] }

// fixture is one running server — the real appliance (apptest.Start):
// store, engine, api, hub, replica and dashboard on a loopback listener.
type fixture struct {
	url    string
	client *http.Client
	eng    *engine.Engine
	hub    *hub.Hub
	errs   *errorLog
}

// fixtureOpts changes the configuration before the server starts (lane
// bounds, hub limits).
type fixtureOpts struct {
	config func(*config.Config)
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, fixtureOpts{}) }

// newFixtureWith starts the appliance as serve.go does (apptest.Start:
// config.Default() on 127.0.0.1, storage.min_free_mb 0, one token per role
// from fxTokens, then opts.config), logging to errs.
func newFixtureWith(t *testing.T, opts fixtureOpts) *fixture {
	t.Helper()
	errs := &errorLog{}
	// Registered first, this check runs last: after the appliance is shut
	// down (cleanups run last in, first out).
	t.Cleanup(func() {
		for _, m := range errs.take() {
			t.Errorf("server logged an error: %s", m)
		}
	})
	s := apptest.Start(t, apptest.Options{Log: slog.New(errs), Config: func(c *config.Config) {
		c.Tokens = nil
		for _, r := range fxRoles {
			c.Tokens = append(c.Tokens, config.Token{Role: string(r), Token: fxTokens[r]})
		}
		// The auth matrix alone answers hundreds of 401s to loopback: the
		// limit stays on (its lookups run) but out of reach, except where
		// a test sets it (TestAuthFailureLimit).
		c.HTTP.MaxAuthFailures = 1 << 20
		if opts.config != nil {
			opts.config(c)
		}
	}})
	return &fixture{url: s.URL, client: s.Client, eng: s.Engine, hub: s.Hub, errs: errs}
}

// errorLog is a slog.Handler that keeps error records: a 500 or a failed
// stream is logged at error level, and no test expects one.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorLog) WithGroup(string) slog.Handler      { return h }
func (h *errorLog) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.msgs
	h.msgs = nil
	return m
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// chunked is a body sent without Content-Length.
type chunked []byte

// send makes one request. body: nil (none), string, []byte, chunked (no
// Content-Length) or any other value (JSON-encoded). A body gets
// Content-Type: application/json unless hdr sets Content-Type (to "" to
// omit it). hdr are name, value pairs. token "" sends no Authorization.
func (f *fixture) send(method, path, token string, body any, hdr ...string) (resp, error) {
	var rd io.Reader
	length := int64(-1)
	switch b := body.(type) {
	case nil:
	case string:
		rd, length = strings.NewReader(b), int64(len(b))
	case []byte:
		rd, length = bytes.NewReader(b), int64(len(b))
	case chunked:
		rd = io.MultiReader(bytes.NewReader(b)) // hides the length
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		rd, length = bytes.NewReader(raw), int64(len(raw))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.url+path, rd)
	if err != nil {
		return resp{}, err
	}
	if length >= 0 {
		req.ContentLength = length
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := f.client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	// Every answer must match docs/openapi.yaml (api/openapi_test.go).
	if err := checkAnswer(req, res.StatusCode, res.Header, raw); err != nil {
		return resp{}, fmt.Errorf("the answer does not match docs/openapi.yaml: %w", err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: raw}, nil
}

func (f *fixture) do(t testing.TB, method, path, token string, body any, hdr ...string) resp {
	t.Helper()
	r, err := f.send(method, path, token, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// object decodes a JSON object answer and checks that it has exactly keys.
func object(t testing.TB, r resp, keys ...string) map[string]json.RawMessage {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("answer %v: Content-Type %q, want application/json", r, ct)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %v is not a JSON object: %v", r, err)
	}
	if keys != nil {
		got := slices.Sorted(func(yield func(string) bool) {
			for k := range m {
				if !yield(k) {
					return
				}
			}
		})
		want := slices.Clone(keys)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("answer %v: fields %v, want exactly %v", r, got, want)
		}
	}
	return m
}

func wantStatus(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, bytes.TrimSpace(r.body))
	}
}

// wantError checks a refusal: status, and a JSON body of exactly
// {"code","message"} with the stable code and a non-empty message.
func wantError(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.status, status, code, bytes.TrimSpace(r.body))
	}
	var m map[string]json.RawMessage
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		m = object(t, r, "code", "message", "retry_after_ms")
		ms, err := strconv.ParseInt(string(m["retry_after_ms"]), 10, 64)
		n, _ := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ms < 1 || time.Duration(ms)*time.Millisecond > time.Duration(n)*time.Second {
			t.Fatalf("%d %s: retry_after_ms %s, Retry-After %q: want a positive wait the header rounds up", status, code, m["retry_after_ms"], r.header.Get("Retry-After"))
		}
	} else {
		m = object(t, r, "code", "message")
	}
	var got, msg string
	if err := json.Unmarshal(m["code"], &got); err != nil {
		t.Fatalf("code is not a string: %s", m["code"])
	}
	if err := json.Unmarshal(m["message"], &msg); err != nil || msg == "" {
		t.Fatalf("message is not a non-empty string: %s", m["message"])
	}
	if got != code {
		t.Fatalf("code %q, want %q (status %d, message %q)", got, code, r.status, msg)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
			t.Fatalf("%d %s without a valid Retry-After (got %q)", status, code, r.header.Get("Retry-After"))
		}
	}
}

func num[T int | int64 | uint64](t testing.TB, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s is not a number: %v", raw, err)
	}
	return v
}

func str(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s is not a string: %v", raw, err)
	}
	return v
}

// sameJSON reports whether two JSON texts are equal once compacted.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// eventually is testkit.Eventually under the name stream_test.go calls.
var eventually = testkit.Eventually

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

func pointJSON(seq uint64) string {
	return fmt.Sprintf(`{"seq":%d,"lat":52.5%d,"lng":13.4,"ts":"2026-11-23T08:00:%02dZ","speed_kmh":31.5,"heading":90}`, seq, seq%10, seq%60)
}

func pointsJSON(from, to uint64) string {
	parts := []string{}
	for s := from; s <= to; s++ {
		parts = append(parts, pointJSON(s))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func assignJSON(driver, note string) string {
	return fmt.Sprintf(`{"driver":%q,"stops":[{"id":"s1","lat":52.5,"lng":13.4,"eta":"2026-11-23T09:00:00Z"},{"id":"s2","lat":-33.9,"lng":151.2}],"note":%q}`, driver, note)
}

func loadingJSON(shipment, kind string, pallets int) string {
	return fmt.Sprintf(`{"terminal":"t1","dock":"D4","shipment":%q,"kind":%q,"pallets":%d,"ts":"2026-11-23T08:01:00Z"}`, shipment, kind, pallets)
}

// ---------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------

type logRec struct {
	LSN         uint64          `json:"lsn"`
	Table       string          `json:"table"`
	Key         string          `json:"key"`
	Op          string          `json:"op"`
	Value       json.RawMessage `json:"value"`
	Version     uint64          `json:"version"`
	Actor       string          `json:"actor"`
	CommittedAt string          `json:"committed_at"`
}

// logPage reads one page of /v1/log as admin; next is nil at the end.
func (f *fixture) logPage(t testing.TB, query string) (recs []logRec, next *uint64) {
	t.Helper()
	r := f.do(t, "GET", "/v1/log?"+query, tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	m := object(t, r, "records", "next")
	var raws []json.RawMessage
	if err := json.Unmarshal(m["records"], &raws); err != nil {
		t.Fatalf("records: %v", err)
	}
	for _, raw := range raws {
		var fields map[string]json.RawMessage
		json.Unmarshal(raw, &fields)
		if len(fields) != 8 {
			t.Fatalf("log record %s: want exactly lsn, table, key, op, value, version, actor, committed_at", raw)
		}
		var rec logRec
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&rec); err != nil {
			t.Fatalf("log record %s: %v", raw, err)
		}
		recs = append(recs, rec)
	}
	if string(m["next"]) != "null" {
		n := num[uint64](t, m["next"])
		next = &n
	}
	return recs, next
}

// readLog reads the whole log after `after` (of one table if table != ""),
// following next until it is null.
func (f *fixture) readLog(t testing.TB, after uint64, table string) []logRec {
	t.Helper()
	var out []logRec
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("readLog: next never became null")
		}
		q := fmt.Sprintf("after=%d&limit=1000", after)
		if table != "" {
			q += "&table=" + table
		}
		recs, next := f.logPage(t, q)
		out = append(out, recs...)
		if next == nil {
			return out
		}
		if *next <= after {
			t.Fatalf("readLog: next %d does not move past after %d", *next, after)
		}
		after = *next
	}
}

// controlWrite puts one key of a user table and waits until it is in the
// log; it returns its LSN. Refusals made before it are then checked
// against the log: everything up to it is committed.
func (f *fixture) controlWrite(t testing.TB, key string) uint64 {
	t.Helper()
	r := f.do(t, "PUT", "/v1/tables/control/keys/"+key, tok(api.RoleDashboard), `{"control":true}`)
	wantStatus(t, r, http.StatusCreated)
	lsn := num[uint64](t, object(t, r)["lsn"])
	testkit.Eventually(t, 5*time.Second, "the control write in /v1/log", func() bool {
		recs, _ := f.logPage(t, fmt.Sprintf("after=%d&limit=1", lsn-1))
		return len(recs) == 1 && recs[0].LSN == lsn
	})
	return lsn
}

// wantOnlyControl checks that the log after `before` holds exactly the
// control write: nothing of the requests in between was stored.
func (f *fixture) wantOnlyControl(t testing.TB, before, control uint64) {
	t.Helper()
	recs := f.readLog(t, before, "")
	if len(recs) != 1 || recs[0].LSN != control || recs[0].Table != "control" {
		t.Fatalf("log after LSN %d holds %d records %+v; want only the control write at LSN %d", before, len(recs), recs, control)
	}
}

// ---------------------------------------------------------------------------
// 1. Happy paths
// ---------------------------------------------------------------------------

func TestDriverLocations(t *testing.T) {
	f := newFixture(t)
	drv := tok(api.RoleDriver)
	path := "/v1/drivers/van-7/locations"

	ack := func(r resp) (accepted, duplicates int, durable uint64) {
		t.Helper()
		wantStatus(t, r, http.StatusAccepted)
		m := object(t, r, "accepted", "duplicates", "durable_seq")
		return num[int](t, m["accepted"]), num[int](t, m["duplicates"]), num[uint64](t, m["durable_seq"])
	}

	// One point.
	a, d, ds := ack(f.do(t, "POST", path, drv, pointJSON(1)))
	if a != 1 || d != 0 || ds > 1 {
		t.Fatalf("single point: accepted %d duplicates %d durable_seq %d; want 1, 0, <= 1", a, d, ds)
	}
	// An array.
	a, d, ds = ack(f.do(t, "POST", path, drv, pointsJSON(2, 4)))
	if a != 3 || d != 0 || ds > 4 {
		t.Fatalf("array: accepted %d duplicates %d durable_seq %d; want 3, 0, <= 4", a, d, ds)
	}
	// A retry of the array: nothing new.
	a, d, _ = ack(f.do(t, "POST", path, drv, pointsJSON(2, 4)))
	if a != 0 || d != 3 {
		t.Fatalf("retry: accepted %d duplicates %d; want 0, 3", a, d)
	}
	// Overlap: 3 and 4 seen, 5 new.
	a, d, _ = ack(f.do(t, "POST", path, drv, pointsJSON(3, 5)))
	if a != 1 || d != 2 {
		t.Fatalf("overlap: accepted %d duplicates %d; want 1, 2", a, d)
	}
	// durable_seq catches up (flush_within 10 ms): poll with retries.
	testkit.Eventually(t, 5*time.Second, "durable_seq 5", func() bool {
		a, d, ds := ack(f.do(t, "POST", path, drv, pointJSON(5)))
		if a != 0 || d != 1 {
			t.Fatalf("retry of seq 5: accepted %d duplicates %d", a, d)
		}
		return ds == 5
	})

	// Each accepted point is one log record: table positions, key = driver,
	// value = the point as sent.
	recs := f.readLog(t, 0, "positions")
	if len(recs) != 5 {
		t.Fatalf("positions log: %d records, want 5: %+v", len(recs), recs)
	}
	for i, rec := range recs {
		seq := uint64(i + 1)
		if rec.Key != "van-7" || rec.Op != "put" || rec.Actor != "driver" || rec.Version != seq ||
			!sameJSON(rec.Value, []byte(pointJSON(seq))) {
			t.Fatalf("positions record %d: %+v; want key van-7, op put, actor driver, version %d, value %s", i, rec, seq, pointJSON(seq))
		}
		if i > 0 && rec.LSN <= recs[i-1].LSN {
			t.Fatalf("log not in LSN order: %d after %d", rec.LSN, recs[i-1].LSN)
		}
	}
	// The latest point is the state of positions/van-7.
	r := f.do(t, "GET", "/v1/tables/positions/keys/van-7", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	m := object(t, r, "key", "value", "version", "lsn")
	if !sameJSON(m["value"], []byte(pointJSON(5))) || num[uint64](t, m["version"]) != 5 || num[uint64](t, m["lsn"]) != recs[4].LSN {
		t.Fatalf("positions/van-7 = %s; want the point of seq 5 at version 5, lsn %d", r.body, recs[4].LSN)
	}

	// Another driver has its own sequence.
	a, d, _ = ack(f.do(t, "POST", "/v1/drivers/van-8/locations", drv, pointJSON(1)))
	if a != 1 || d != 0 {
		t.Fatalf("van-8 seq 1: accepted %d duplicates %d; want 1, 0", a, d)
	}
}

func TestAssignments(t *testing.T) {
	f := newFixture(t)
	dsp := tok(api.RoleDispatch)
	path := "/v1/assignments/route-12"
	answer := func(r resp, status int) map[string]json.RawMessage {
		t.Helper()
		wantStatus(t, r, status)
		return object(t, r, "route", "version", "lsn", "committed_at")
	}

	// Create: 201, only once durable (the journal's fdatasync or the
	// log's fsync); the log shows it once the log's fsync covers it.
	r1 := f.do(t, "PUT", path, dsp, assignJSON("van-7", "v1"), "Idempotency-Key", "k1")
	m := answer(r1, http.StatusCreated)
	if str(t, m["route"]) != "route-12" || num[uint64](t, m["version"]) != 1 {
		t.Fatalf("create: %s", r1.body)
	}
	lsn1 := num[uint64](t, m["lsn"])
	published(t, f, lsn1)
	if _, err := time.Parse(time.RFC3339Nano, str(t, m["committed_at"])); err != nil {
		t.Fatalf("committed_at %s is not RFC 3339: %v", m["committed_at"], err)
	}
	if et := r1.header.Get("ETag"); et != `"1"` {
		t.Fatalf("ETag %q, want \"1\"", et)
	}

	// The same Idempotency-Key again: the first answer, field for field.
	again := f.do(t, "PUT", path, dsp, assignJSON("van-7", "v1"), "Idempotency-Key", "k1")
	answer(again, http.StatusCreated)
	if !bytes.Equal(again.body, r1.body) {
		t.Fatalf("retry answered %s, want the first answer %s", again.body, r1.body)
	}

	// If-Match: the current version → 200 and a new version.
	r2 := f.do(t, "PUT", path, dsp, assignJSON("van-7", "v2"), "Idempotency-Key", "k2", "If-Match", "1")
	m = answer(r2, http.StatusOK)
	if num[uint64](t, m["version"]) != 2 || num[uint64](t, m["lsn"]) <= lsn1 {
		t.Fatalf("If-Match 1: %s; want version 2 with a higher lsn", r2.body)
	}
	// A stale If-Match → 409.
	wantError(t, f.do(t, "PUT", path, dsp, assignJSON("van-7", "stale"), "Idempotency-Key", "k3", "If-Match", "1"),
		http.StatusConflict, "version_conflict")
	// If-Match in quoted ETag form.
	r4 := f.do(t, "PUT", path, dsp, assignJSON("van-9", "v3"), "Idempotency-Key", "k4", "If-Match", `"2"`)
	m = answer(r4, http.StatusOK)
	if num[uint64](t, m["version"]) != 3 {
		t.Fatalf(`If-Match "2": %s; want version 3`, r4.body)
	}
	// Weak ETag form.
	r5 := f.do(t, "PUT", path, dsp, assignJSON("van-9", "v4"), "Idempotency-Key", "k5", "If-Match", `W/"3"`)
	m5 := answer(r5, http.StatusOK)
	if num[uint64](t, m5["version"]) != 4 {
		t.Fatalf(`If-Match W/"3": %s; want version 4`, r5.body)
	}
	// A retry of the If-Match write answers its first answer (200, version
	// 2), although If-Match 1 is stale by now.
	again2 := f.do(t, "PUT", path, dsp, assignJSON("van-7", "v2"), "Idempotency-Key", "k2", "If-Match", "1")
	answer(again2, http.StatusOK)
	if !bytes.Equal(again2.body, r2.body) {
		t.Fatalf("retry of the If-Match write answered %s, want %s", again2.body, r2.body)
	}
	// The same key with a different body → 422.
	wantError(t, f.do(t, "PUT", path, dsp, assignJSON("van-7", "other"), "Idempotency-Key", "k1"),
		http.StatusUnprocessableEntity, "idempotency_key_reused")

	// GET answers the current state, for dispatch, dashboard and admin.
	for _, role := range []api.Role{api.RoleDispatch, api.RoleDashboard, api.RoleAdmin} {
		r := f.do(t, "GET", path, tok(role), nil)
		wantStatus(t, r, http.StatusOK)
		g := object(t, r, "key", "value", "version", "lsn")
		if str(t, g["key"]) != "route-12" || num[uint64](t, g["version"]) != 4 ||
			!sameJSON(g["value"], []byte(assignJSON("van-9", "v4"))) || r.header.Get("ETag") != `"4"` {
			t.Fatalf("GET as %s: %s (ETag %q); want version 4 with the v4 body", role, r.body, r.header.Get("ETag"))
		}
	}
	wantError(t, f.do(t, "GET", "/v1/assignments/no-such-route", dsp, nil), http.StatusNotFound, "not_found")

	// Exactly four records: the retries, the conflict and the reuse wrote nothing.
	published(t, f, num[uint64](t, m5["lsn"]))
	recs := f.readLog(t, 0, "assignments")
	if len(recs) != 4 {
		t.Fatalf("assignments log: %d records, want 4: %+v", len(recs), recs)
	}
	for i, rec := range recs {
		if rec.Key != "route-12" || rec.Actor != "dispatch" || rec.Op != "put" || rec.Version != uint64(i+1) {
			t.Fatalf("record %d: %+v", i, rec)
		}
	}
	if recs[0].LSN != lsn1 || !sameJSON(recs[0].Value, []byte(assignJSON("van-7", "v1"))) {
		t.Fatalf("first record %+v; want lsn %d and the v1 body", recs[0], lsn1)
	}
}

// published waits (bounded) until lsn is published to readers: an answer
// the journal gave comes before the log's fsync publishes its record.
func published(t *testing.T, f *fixture, lsn uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.eng.WaitDurable(ctx, lsn); err != nil {
		t.Fatalf("answered lsn %d never published (durable %d): %v", lsn, f.eng.DurableLSN(), err)
	}
}

func TestLoadingEvents(t *testing.T) {
	f := newFixture(t)
	wh := tok(api.RoleWarehouse)
	post := func(key, body string) (id string, lsn uint64, r resp) {
		t.Helper()
		r = f.do(t, "POST", "/v1/loading-events", wh, body, "Idempotency-Key", key)
		wantStatus(t, r, http.StatusCreated)
		m := object(t, r, "id", "lsn")
		return str(t, m["id"]), num[uint64](t, m["lsn"]), r
	}
	ev1 := loadingJSON("SH-1", "loaded", 12)
	id1, lsn1, r1 := post("w1", ev1)
	// Durable at the answer (the journal's fdatasync, or the log's);
	// published to readers once the log's fsync covers it.
	published(t, f, lsn1)
	// A retry returns the same id and lsn.
	idR, lsnR, rR := post("w1", ev1)
	if idR != id1 || lsnR != lsn1 || !bytes.Equal(rR.body, r1.body) {
		t.Fatalf("retry answered %s, want %s", rR.body, r1.body)
	}
	// A second event: another id, later in time and in LSN.
	id2, lsn2, _ := post("w2", loadingJSON("SH-2", "departed", 0))
	if id2 == id1 || lsn2 <= lsn1 {
		t.Fatalf("second event id %s lsn %d; first id %s lsn %d", id2, lsn2, id1, lsn1)
	}
	u1, err1 := ulid.ParseStrict(id1)
	u2, err2 := ulid.ParseStrict(id2)
	if err1 != nil || err2 != nil {
		t.Fatalf("ids %q, %q are not ULIDs: %v %v", id1, id2, err1, err2)
	}
	if !(id1 < id2) || u1.Time() > u2.Time() {
		t.Fatalf("ids do not sort by time: %s (%d ms) then %s (%d ms)", id1, u1.Time(), id2, u2.Time())
	}
	// The same key with another body → 422.
	wantError(t, f.do(t, "POST", "/v1/loading-events", wh, loadingJSON("SH-1", "exception", 12), "Idempotency-Key", "w1"),
		http.StatusUnprocessableEntity, "idempotency_key_reused")

	// The event is the state of loading/{id}, as sent.
	r := f.do(t, "GET", "/v1/tables/loading/keys/"+id1, tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r, "key", "value", "version", "lsn"); !sameJSON(m["value"], []byte(ev1)) || num[uint64](t, m["lsn"]) != lsn1 {
		t.Fatalf("loading/%s = %s; want %s at lsn %d", id1, r.body, ev1, lsn1)
	}
	published(t, f, lsn2)
	recs := f.readLog(t, 0, "loading")
	if len(recs) != 2 || recs[0].Key != id1 || recs[1].Key != id2 || recs[0].Actor != "warehouse" {
		t.Fatalf("loading log: %+v; want exactly the two events", recs)
	}
}

func TestTables(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	rowOf := func(r resp, status int) map[string]json.RawMessage {
		t.Helper()
		wantStatus(t, r, status)
		return object(t, r, "key", "value", "version", "lsn")
	}

	// A missing key, in a table that does not exist yet.
	wantError(t, f.do(t, "GET", "/v1/tables/notes/keys/gate-2", dash, nil), http.StatusNotFound, "not_found")
	// A user table exists from its first key.
	r := f.do(t, "PUT", "/v1/tables/notes/keys/gate-2", dash, `{"open": true}`)
	m := rowOf(r, http.StatusCreated)
	if str(t, m["key"]) != "gate-2" || !sameJSON(m["value"], []byte(`{"open":true}`)) || num[uint64](t, m["version"]) != 1 {
		t.Fatalf("create: %s", r.body)
	}
	if r.header.Get("ETag") != `"1"` {
		t.Fatalf("ETag %q", r.header.Get("ETag"))
	}
	// If-Match current → 200; stale → 409; quoted → 200.
	m = rowOf(f.do(t, "PUT", "/v1/tables/notes/keys/gate-2", dash, `{"open":false}`, "If-Match", "1"), http.StatusOK)
	if num[uint64](t, m["version"]) != 2 {
		t.Fatalf("If-Match 1: version %s", m["version"])
	}
	wantError(t, f.do(t, "PUT", "/v1/tables/notes/keys/gate-2", dash, `{"open":"stale"}`, "If-Match", "1"), http.StatusConflict, "version_conflict")
	m = rowOf(f.do(t, "PUT", "/v1/tables/notes/keys/gate-2", dash, `{"open":3}`, "If-Match", `"2"`), http.StatusOK)
	if num[uint64](t, m["version"]) != 3 {
		t.Fatalf(`If-Match "2": version %s`, m["version"])
	}
	lsn3 := num[uint64](t, m["lsn"])
	// If-Match on a key that does not exist cannot match.
	wantError(t, f.do(t, "PUT", "/v1/tables/notes/keys/nope", dash, `1`, "If-Match", "1"), http.StatusConflict, "version_conflict")
	// GET.
	g := f.do(t, "GET", "/v1/tables/notes/keys/gate-2", dash, nil)
	m = rowOf(g, http.StatusOK)
	if !sameJSON(m["value"], []byte(`{"open":3}`)) || num[uint64](t, m["version"]) != 3 || num[uint64](t, m["lsn"]) != lsn3 || g.header.Get("ETag") != `"3"` {
		t.Fatalf("GET: %s", g.body)
	}
	// Any JSON value; a key may hold '/'.
	for key, v := range map[string]string{"s": `"text"`, "n": `42.5`, "a": `[1,{"b":null}]`, "b": `true`, "dir/sub/leaf": `{}`} {
		r := f.do(t, "PUT", "/v1/tables/notes/keys/"+key, dash, v)
		if m := rowOf(r, http.StatusCreated); str(t, m["key"]) != key || !sameJSON(m["value"], []byte(v)) {
			t.Fatalf("PUT %s = %s: %s", key, v, r.body)
		}
		if m := rowOf(f.do(t, "GET", "/v1/tables/notes/keys/"+key, dash, nil), http.StatusOK); !sameJSON(m["value"], []byte(v)) {
			t.Fatalf("GET %s: %s", key, m["value"])
		}
	}
	// DELETE: stale If-Match → 409; current → {"key","lsn"}; then 404.
	wantError(t, f.do(t, "DELETE", "/v1/tables/notes/keys/gate-2", dash, nil, "If-Match", "2"), http.StatusConflict, "version_conflict")
	d := f.do(t, "DELETE", "/v1/tables/notes/keys/gate-2", dash, nil, "If-Match", "3")
	wantStatus(t, d, http.StatusOK)
	dm := object(t, d, "key", "lsn")
	if str(t, dm["key"]) != "gate-2" || num[uint64](t, dm["lsn"]) <= lsn3 {
		t.Fatalf("DELETE: %s", d.body)
	}
	wantError(t, f.do(t, "GET", "/v1/tables/notes/keys/gate-2", dash, nil), http.StatusNotFound, "not_found")
	wantError(t, f.do(t, "DELETE", "/v1/tables/notes/keys/gate-2", dash, nil), http.StatusNotFound, "not_found")
	// Unconditional DELETE.
	d = f.do(t, "DELETE", "/v1/tables/notes/keys/b", dash, nil)
	wantStatus(t, d, http.StatusOK)
	object(t, d, "key", "lsn")
	// Admin may do CRUD too.
	rowOf(f.do(t, "PUT", "/v1/tables/notes/keys/admin", tok(api.RoleAdmin), `1`), http.StatusCreated)

	// Paging: ten keys, pages of three, one consistent LSN while nothing is written.
	var lastLSN uint64
	for i := range 10 {
		m := rowOf(f.do(t, "PUT", fmt.Sprintf("/v1/tables/pages/keys/k%02d", i), dash, fmt.Sprintf(`{"i":%d}`, i)), http.StatusCreated)
		lastLSN = num[uint64](t, m["lsn"])
	}
	var keys []string
	var pageLSN uint64
	after := ""
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("paging does not end")
		}
		r := f.do(t, "GET", "/v1/tables/pages?limit=3&after="+after, dash, nil)
		wantStatus(t, r, http.StatusOK)
		pm := object(t, r, "lsn", "rows", "next")
		var rows []struct {
			Key     string          `json:"key"`
			Value   json.RawMessage `json:"value"`
			Version uint64          `json:"version"`
			LSN     uint64          `json:"lsn"`
		}
		if err := json.Unmarshal(pm["rows"], &rows); err != nil {
			t.Fatal(err)
		}
		lsn := num[uint64](t, pm["lsn"])
		if page == 0 {
			pageLSN = lsn
			if lsn < lastLSN {
				t.Fatalf("page lsn %d is below the last write %d", lsn, lastLSN)
			}
		} else if lsn != pageLSN {
			t.Fatalf("page %d lsn %d, page 0 lsn %d: not consistent while nothing was written", page, lsn, pageLSN)
		}
		for _, row := range rows {
			if row.LSN > lsn || row.Version != 1 {
				t.Fatalf("row %+v: lsn above the page lsn %d or version not 1", row, lsn)
			}
			keys = append(keys, row.Key)
		}
		if string(pm["next"]) == "null" {
			if len(rows) > 3 {
				t.Fatalf("page of %d rows with limit 3", len(rows))
			}
			break
		}
		if len(rows) != 3 {
			t.Fatalf("page %d: %d rows with a next; want 3", page, len(rows))
		}
		after = str(t, pm["next"])
		if after != rows[len(rows)-1].Key {
			t.Fatalf("next %q is not the last key of the page %q", after, rows[len(rows)-1].Key)
		}
	}
	want := []string{"k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09"}
	if !slices.Equal(keys, want) {
		t.Fatalf("pages gave keys %v, want %v", keys, want)
	}

	// Built-in tables: read-only through the tables endpoints, but readable.
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-9", tok(api.RoleDispatch), assignJSON("van-1", ""), "Idempotency-Key", "x"), http.StatusCreated)
	for _, table := range []string{"positions", "assignments", "loading"} {
		wantError(t, f.do(t, "PUT", "/v1/tables/"+table+"/keys/r-9", dash, `{}`), http.StatusForbidden, "read_only_table")
		wantError(t, f.do(t, "DELETE", "/v1/tables/"+table+"/keys/r-9", dash, nil), http.StatusForbidden, "read_only_table")
		wantError(t, f.do(t, "PUT", "/v1/tables/"+table+"/keys/r-9", tok(api.RoleAdmin), `{}`), http.StatusForbidden, "read_only_table")
		wantStatus(t, f.do(t, "GET", "/v1/tables/"+table, dash, nil), http.StatusOK)
	}
	rowOf(f.do(t, "GET", "/v1/tables/assignments/keys/r-9", dash, nil), http.StatusOK)
	r = f.do(t, "GET", "/v1/tables/assignments", dash, nil)
	if m := object(t, r, "lsn", "rows", "next"); !strings.Contains(string(m["rows"]), `"key":"r-9"`) {
		t.Fatalf("assignments rows: %s", m["rows"])
	}

	// GET /v1/tables lists every table with its key count and last LSN.
	r = f.do(t, "GET", "/v1/tables", dash, nil)
	wantStatus(t, r, http.StatusOK)
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("GET /v1/tables: %s: %v", r.body, err)
	}
	byName := map[string]map[string]json.RawMessage{}
	for _, ti := range list {
		if len(ti) != 3 {
			t.Fatalf("table entry %v: want exactly name, keys, last_lsn", ti)
		}
		byName[str(t, ti["name"])] = ti
	}
	if p := byName["pages"]; p == nil || num[int](t, p["keys"]) != 10 || num[uint64](t, p["last_lsn"]) != lastLSN {
		t.Fatalf("tables list %s: want pages with 10 keys and last_lsn %d", r.body, lastLSN)
	}
	if n := byName["notes"]; n == nil || num[int](t, n["keys"]) != 5 {
		t.Fatalf("tables list %s: want notes with 5 keys (s, n, a, dir/sub/leaf, admin)", r.body)
	}
	if byName["assignments"] == nil {
		t.Fatalf("tables list %s: want assignments", r.body)
	}
}

func TestLogFeed(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	type write struct {
		table, key, op, value string
		lsn, version          uint64
	}
	var writes []write
	put := func(table, key, value string) {
		t.Helper()
		r := f.do(t, "PUT", "/v1/tables/"+table+"/keys/"+key, dash, value)
		if r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("PUT: %v", r)
		}
		m := object(t, r)
		writes = append(writes, write{table, key, "put", value, num[uint64](t, m["lsn"]), num[uint64](t, m["version"])})
	}
	for i := range 4 {
		put("lg-a", fmt.Sprintf("a%d", i), fmt.Sprintf(`{"a":%d}`, i))
		if i%2 == 0 {
			put("lg-b", fmt.Sprintf("b%d", i), fmt.Sprintf(`[%d]`, i))
		}
	}
	put("lg-a", "a0", `{"a":"again"}`)
	r := f.do(t, "DELETE", "/v1/tables/lg-b/keys/b0", dash, nil)
	wantStatus(t, r, http.StatusOK)
	writes = append(writes, write{"lg-b", "b0", "delete", "null", num[uint64](t, object(t, r)["lsn"]), 0})
	published(t, f, writes[len(writes)-1].lsn) // answered by the journal; published just after

	check := func(rec logRec, w write) {
		t.Helper()
		if rec.LSN != w.lsn || rec.Table != w.table || rec.Key != w.key || rec.Op != w.op || rec.Actor != "tables" ||
			!sameJSON(rec.Value, []byte(w.value)) || (w.op == "put" && rec.Version != w.version) {
			t.Fatalf("log record %+v; want %+v", rec, w)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec.CommittedAt); err != nil {
			t.Fatalf("committed_at %q: %v", rec.CommittedAt, err)
		}
	}

	// Pages of two, following next; the last page says null.
	var got []logRec
	after := uint64(0)
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatal("log paging does not end")
		}
		recs, next := f.logPage(t, fmt.Sprintf("after=%d&limit=2", after))
		if len(recs) > 2 {
			t.Fatalf("page of %d records with limit 2", len(recs))
		}
		got = append(got, recs...)
		if next == nil {
			break
		}
		if len(recs) == 0 || *next != recs[len(recs)-1].LSN {
			t.Fatalf("next %d is not the LSN of the page's last record (%+v)", *next, recs)
		}
		after = *next
	}
	if len(got) != len(writes) {
		t.Fatalf("log holds %d records, want %d: %+v", len(got), len(writes), got)
	}
	for i := range got {
		if i > 0 && got[i].LSN <= got[i-1].LSN {
			t.Fatalf("log not in LSN order at %d: %d after %d", i, got[i].LSN, got[i-1].LSN)
		}
		check(got[i], writes[i])
	}
	// The last page ends exactly at the end of the log: next is null.
	last := writes[len(writes)-1].lsn
	if recs, next := f.logPage(t, fmt.Sprintf("after=%d&limit=1", last-1)); len(recs) != 1 || next != nil {
		t.Fatalf("page with the last record: %+v next %v; want it and next null", recs, next)
	}
	// After the end: empty, null.
	if recs, next := f.logPage(t, fmt.Sprintf("after=%d", last)); len(recs) != 0 || next != nil {
		t.Fatalf("after the end: %+v next %v", recs, next)
	}
	// A table filter.
	var wantB []write
	for _, w := range writes {
		if w.table == "lg-b" {
			wantB = append(wantB, w)
		}
	}
	recs, next := f.logPage(t, "table=lg-b")
	if next != nil || len(recs) != len(wantB) {
		t.Fatalf("table=lg-b: %+v next %v; want %d records", recs, next, len(wantB))
	}
	for i := range recs {
		check(recs[i], wantB[i])
	}
	// A filtered page that fills up has a next, and following it finishes.
	recs, next = f.logPage(t, "table=lg-b&limit=1")
	if len(recs) != 1 || next == nil || *next != recs[0].LSN {
		t.Fatalf("table=lg-b&limit=1: %+v next %v", recs, next)
	}
	if all := f.readLog(t, 0, "lg-b"); len(all) != len(wantB) {
		t.Fatalf("readLog(lg-b): %d records, want %d", len(all), len(wantB))
	}
	// The dashboard may read the feed too.
	wantStatus(t, f.do(t, "GET", "/v1/log", dash, nil), http.StatusOK)
}

func TestHealthReadyMetrics(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "GET", "/healthz", "", nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r); str(t, m["status"]) != "ok" {
		t.Fatalf("/healthz: %s", r.body)
	}
	r = f.do(t, "GET", "/readyz", "", nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r); str(t, m["status"]) != "ready" {
		t.Fatalf("/readyz: %s", r.body)
	}

	// Feed every lane, and refuse one dispatch write, then read the ledger.
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-1/locations", tok(api.RoleDriver), pointsJSON(1, 3)), http.StatusAccepted)
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r1", tok(api.RoleDispatch), assignJSON("van-1", ""), "Idempotency-Key", "m1"), http.StatusCreated)
	wantError(t, f.do(t, "PUT", "/v1/assignments/r1", tok(api.RoleDispatch), assignJSON("van-1", "")), http.StatusPreconditionRequired, "idempotency_key_required")
	wantStatus(t, f.do(t, "POST", "/v1/loading-events", tok(api.RoleWarehouse), loadingJSON("s", "arrived", 1), "Idempotency-Key", "m2"), http.StatusCreated)
	wantStatus(t, f.do(t, "PUT", "/v1/tables/t/keys/k", tok(api.RoleDashboard), `1`), http.StatusCreated)

	r = f.do(t, "GET", "/metrics", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q", ct)
	}
	metric := func(series string) float64 {
		t.Helper()
		for _, line := range strings.Split(string(r.body), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %q", series, line)
				}
				return x
			}
		}
		t.Fatalf("/metrics has no series %s", series)
		return 0
	}
	for series, want := range map[string]float64{
		`routehound_lane_accepted_total{lane="driver"}`:                                     3,
		`routehound_lane_accepted_total{lane="dispatch"}`:                                   1,
		`routehound_lane_accepted_total{lane="warehouse"}`:                                  1,
		`routehound_lane_accepted_total{lane="tables"}`:                                     1,
		`routehound_lane_rejected_total{lane="dispatch",reason="idempotency_key_required"}`: 1,
		`routehound_lane_queue_bound{lane="driver"}`:                                        float64(engine.DefaultConfig().Lanes[engine.LaneDriver].QueueBound),
		`routehound_hub_subscribers`:                                                        0,
	} {
		if got := metric(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := metric(`routehound_sched_target_seconds`); got != engine.DefaultConfig().Lanes[engine.LaneDispatch].SLA.Seconds() {
		t.Errorf("routehound_sched_target_seconds = %v, want dispatch's SLA", got)
	}
	for _, series := range []string{`routehound_durable_lsn`, `routehound_fsyncs_total`, `routehound_uptime_seconds`,
		`routehound_sched_batch_cap`, `routehound_sched_cost_seconds{cost="fsync"}`, `routehound_sched_cost_seconds{cost="commit_per_record"}`} {
		if metric(series) <= 0 {
			t.Errorf("%s is not positive", series)
		}
	}
	if !strings.Contains(string(r.body), "go_goroutines") {
		t.Error("/metrics lacks the Go runtime metrics")
	}
	// Open endpoints need no token; /metrics is admin's.
	wantError(t, f.do(t, "GET", "/metrics", tok(api.RoleDashboard), nil), http.StatusForbidden, "forbidden")
	wantError(t, f.do(t, "GET", "/metrics", "", nil), http.StatusUnauthorized, "unauthorized")
}

// ---------------------------------------------------------------------------
// 2. Bad input
// ---------------------------------------------------------------------------

type badCase struct {
	name   string
	method string
	path   string
	role   api.Role
	body   any
	hdr    []string
	status int
	code   string
}

func TestBadInputIsRefusedAndNotStored(t *testing.T) {
	f := newFixture(t)
	big := `{"note":"` + strings.Repeat("x", 1<<20) + `"}`
	good := pointJSON(1)
	drvPath := "/v1/drivers/van-1/locations"
	withPoint := func(field, value string) string {
		// pointJSON(1) with one field replaced (or removed when value is "").
		var m map[string]json.RawMessage
		json.Unmarshal([]byte(good), &m)
		if value == "" {
			delete(m, field)
		} else {
			m[field] = json.RawMessage(value)
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	asg := assignJSON("van-1", "n")
	withStop := func(field, value string) string {
		return strings.Replace(asg, `"id":"s1","lat":52.5,"lng":13.4,"eta":"2026-11-23T09:00:00Z"`, map[string]string{
			"lat":     `"id":"s1","lat":` + value + `,"lng":13.4`,
			"lng":     `"id":"s1","lat":52.5,"lng":` + value,
			"eta":     `"id":"s1","lat":52.5,"lng":13.4,"eta":` + value,
			"id":      `"lat":52.5,"lng":13.4`,
			"unknown": `"id":"s1","lat":52.5,"lng":13.4,"zone":1`,
		}[field], 1)
	}
	ev := loadingJSON("SH-1", "loaded", 3)
	withEv := func(field, value string) string {
		var m map[string]json.RawMessage
		json.Unmarshal([]byte(ev), &m)
		if value == "" {
			delete(m, field)
		} else {
			m[field] = json.RawMessage(value)
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	asgPath := "/v1/assignments/r-1"
	const (
		s400 = http.StatusBadRequest
		s413 = http.StatusRequestEntityTooLarge
		s415 = http.StatusUnsupportedMediaType
		s428 = http.StatusPreconditionRequired
	)
	cases := []badCase{
		// Driver.
		{"driver/malformed", "POST", drvPath, api.RoleDriver, `{"seq":1,`, nil, s400, "bad_json"},
		{"driver/two values", "POST", drvPath, api.RoleDriver, good + " " + pointJSON(2), nil, s400, "bad_json"},
		{"driver/two arrays", "POST", drvPath, api.RoleDriver, "[" + good + "][" + pointJSON(2) + "]", nil, s400, "bad_json"},
		{"driver/empty body", "POST", drvPath, api.RoleDriver, "", nil, s400, "bad_json"},
		{"driver/blank body", "POST", drvPath, api.RoleDriver, " \n ", nil, s400, "bad_json"},
		{"driver/top-level string", "POST", drvPath, api.RoleDriver, `"point"`, nil, s400, "bad_json"},
		{"driver/top-level number", "POST", drvPath, api.RoleDriver, `42`, nil, s400, "bad_json"},
		{"driver/empty array", "POST", drvPath, api.RoleDriver, `[]`, nil, s400, "bad_json"},
		{"driver/array of numbers", "POST", drvPath, api.RoleDriver, `[1]`, nil, s400, "bad_json"},
		{"driver/unknown field", "POST", drvPath, api.RoleDriver, withPoint("altitude", "12"), nil, s400, "unknown_field"},
		{"driver/unknown field in array", "POST", drvPath, api.RoleDriver, "[" + withPoint("altitude", "12") + "]", nil, s400, "unknown_field"},
		{"driver/lat 91", "POST", drvPath, api.RoleDriver, withPoint("lat", "91"), nil, s400, "invalid_field"},
		{"driver/lng -181", "POST", drvPath, api.RoleDriver, withPoint("lng", "-181"), nil, s400, "invalid_field"},
		{"driver/lat missing", "POST", drvPath, api.RoleDriver, withPoint("lat", ""), nil, s400, "invalid_field"},
		{"driver/seq missing", "POST", drvPath, api.RoleDriver, withPoint("seq", ""), nil, s400, "invalid_field"},
		{"driver/seq 0", "POST", drvPath, api.RoleDriver, withPoint("seq", "0"), nil, s400, "invalid_field"},
		{"driver/seq -1", "POST", drvPath, api.RoleDriver, withPoint("seq", "-1"), nil, s400, "invalid_field"},
		{"driver/seq 1.5", "POST", drvPath, api.RoleDriver, withPoint("seq", "1.5"), nil, s400, "invalid_field"},
		{"driver/seq as string", "POST", drvPath, api.RoleDriver, withPoint("seq", `"1"`), nil, s400, "invalid_field"},
		{"driver/bad ts", "POST", drvPath, api.RoleDriver, withPoint("ts", `"yesterday"`), nil, s400, "invalid_field"},
		{"driver/ts missing", "POST", drvPath, api.RoleDriver, withPoint("ts", ""), nil, s400, "invalid_field"},
		{"driver/speed -1", "POST", drvPath, api.RoleDriver, withPoint("speed_kmh", "-1"), nil, s400, "invalid_field"},
		{"driver/heading 361", "POST", drvPath, api.RoleDriver, withPoint("heading", "361"), nil, s400, "invalid_field"},
		{"driver/one bad point refuses the batch", "POST", drvPath, api.RoleDriver, "[" + good + "," + strings.Replace(pointJSON(2), `"lat":52.52`, `"lat":91`, 1) + "]", nil, s400, "invalid_field"},
		{"driver/name with a space", "POST", "/v1/drivers/van%201/locations", api.RoleDriver, good, nil, s400, "bad_name"},
		{"driver/name with a slash", "POST", "/v1/drivers/van%2F1/locations", api.RoleDriver, good, nil, s400, "bad_name"},
		{"driver/body too large", "POST", drvPath, api.RoleDriver, big, nil, s413, "body_too_large"},
		{"driver/body too large, chunked", "POST", drvPath, api.RoleDriver, chunked(big), nil, s413, "body_too_large"},
		{"driver/text/plain", "POST", drvPath, api.RoleDriver, good, []string{"Content-Type", "text/plain"}, s415, "unsupported_media_type"},
		{"driver/form", "POST", drvPath, api.RoleDriver, good, []string{"Content-Type", "application/x-www-form-urlencoded"}, s415, "unsupported_media_type"},

		// Dispatch.
		{"dispatch/no Idempotency-Key", "PUT", asgPath, api.RoleDispatch, asg, nil, s428, "idempotency_key_required"},
		{"dispatch/Idempotency-Key too long", "PUT", asgPath, api.RoleDispatch, asg, []string{"Idempotency-Key", strings.Repeat("k", 256)}, s400, "bad_idempotency_key"},
		{"dispatch/bad If-Match", "PUT", asgPath, api.RoleDispatch, asg, []string{"Idempotency-Key", "i1", "If-Match", "abc"}, s400, "bad_if_match"},
		{"dispatch/negative If-Match", "PUT", asgPath, api.RoleDispatch, asg, []string{"Idempotency-Key", "i1", "If-Match", "-1"}, s400, "bad_if_match"},
		{"dispatch/malformed", "PUT", asgPath, api.RoleDispatch, `{"driver":`, []string{"Idempotency-Key", "i2"}, s400, "bad_json"},
		{"dispatch/two values", "PUT", asgPath, api.RoleDispatch, asg + asg, []string{"Idempotency-Key", "i3"}, s400, "bad_json"},
		{"dispatch/empty body", "PUT", asgPath, api.RoleDispatch, "", []string{"Idempotency-Key", "i4"}, s400, "bad_json"},
		{"dispatch/top-level array", "PUT", asgPath, api.RoleDispatch, "[" + asg + "]", []string{"Idempotency-Key", "i5"}, s400, "bad_json"},
		{"dispatch/top-level string", "PUT", asgPath, api.RoleDispatch, `"x"`, []string{"Idempotency-Key", "i6"}, s400, "bad_json"},
		{"dispatch/unknown field", "PUT", asgPath, api.RoleDispatch, strings.Replace(asg, `"note"`, `"priority":1,"note"`, 1), []string{"Idempotency-Key", "i7"}, s400, "unknown_field"},
		{"dispatch/unknown stop field", "PUT", asgPath, api.RoleDispatch, withStop("unknown", ""), []string{"Idempotency-Key", "i8"}, s400, "unknown_field"},
		{"dispatch/driver missing", "PUT", asgPath, api.RoleDispatch, `{"stops":[]}`, []string{"Idempotency-Key", "i9"}, s400, "invalid_field"},
		{"dispatch/driver a number", "PUT", asgPath, api.RoleDispatch, `{"driver":5,"stops":[]}`, []string{"Idempotency-Key", "i10"}, s400, "invalid_field"},
		{"dispatch/driver name with a space", "PUT", asgPath, api.RoleDispatch, assignJSON("van 1", "n"), []string{"Idempotency-Key", "i11"}, s400, "bad_name"},
		{"dispatch/stops missing", "PUT", asgPath, api.RoleDispatch, `{"driver":"van-1"}`, []string{"Idempotency-Key", "i12"}, s400, "invalid_field"},
		{"dispatch/stops not an array", "PUT", asgPath, api.RoleDispatch, `{"driver":"van-1","stops":{}}`, []string{"Idempotency-Key", "i13"}, s400, "invalid_field"},
		{"dispatch/stop lat 91", "PUT", asgPath, api.RoleDispatch, withStop("lat", "91"), []string{"Idempotency-Key", "i14"}, s400, "invalid_field"},
		{"dispatch/stop lng -181", "PUT", asgPath, api.RoleDispatch, withStop("lng", "-181"), []string{"Idempotency-Key", "i15"}, s400, "invalid_field"},
		{"dispatch/stop bad eta", "PUT", asgPath, api.RoleDispatch, withStop("eta", `"soon"`), []string{"Idempotency-Key", "i16"}, s400, "invalid_field"},
		{"dispatch/stop eta not RFC 3339", "PUT", asgPath, api.RoleDispatch, withStop("eta", `"2026-11-23 09:00"`), []string{"Idempotency-Key", "i17"}, s400, "invalid_field"},
		{"dispatch/stop id missing", "PUT", asgPath, api.RoleDispatch, withStop("id", ""), []string{"Idempotency-Key", "i18"}, s400, "invalid_field"},
		{"dispatch/route name with a space", "PUT", "/v1/assignments/route%201", api.RoleDispatch, asg, []string{"Idempotency-Key", "i19"}, s400, "bad_name"},
		{"dispatch/body too large", "PUT", asgPath, api.RoleDispatch, big, []string{"Idempotency-Key", "i20"}, s413, "body_too_large"},
		{"dispatch/body too large, chunked", "PUT", asgPath, api.RoleDispatch, chunked(big), []string{"Idempotency-Key", "i21"}, s413, "body_too_large"},
		{"dispatch/text/plain", "PUT", asgPath, api.RoleDispatch, asg, []string{"Idempotency-Key", "i22", "Content-Type", "text/plain"}, s415, "unsupported_media_type"},
		{"dispatch/stop id over 128 bytes", "PUT", asgPath, api.RoleDispatch, withStop("id", `"`+strings.Repeat("s", 129)+`"`), []string{"Idempotency-Key", "i23"}, s400, "invalid_field"},
		{"dispatch/stop eta over 64 bytes", "PUT", asgPath, api.RoleDispatch, withStop("eta", `"2026-11-23T09:00:00.`+strings.Repeat("1", 60)+`Z"`), []string{"Idempotency-Key", "i24"}, s400, "invalid_field"},
		{"dispatch/route too large", "PUT", asgPath, api.RoleDispatch, manyStops(1000, 100), []string{"Idempotency-Key", "i25"}, s413, "route_too_large"},

		// Warehouse.
		{"warehouse/no Idempotency-Key", "POST", "/v1/loading-events", api.RoleWarehouse, ev, nil, s428, "idempotency_key_required"},
		{"warehouse/malformed", "POST", "/v1/loading-events", api.RoleWarehouse, `{"terminal"`, []string{"Idempotency-Key", "w1"}, s400, "bad_json"},
		{"warehouse/two values", "POST", "/v1/loading-events", api.RoleWarehouse, ev + "\n" + ev, []string{"Idempotency-Key", "w2"}, s400, "bad_json"},
		{"warehouse/empty body", "POST", "/v1/loading-events", api.RoleWarehouse, "", []string{"Idempotency-Key", "w3"}, s400, "bad_json"},
		{"warehouse/top-level array", "POST", "/v1/loading-events", api.RoleWarehouse, "[" + ev + "]", []string{"Idempotency-Key", "w4"}, s400, "bad_json"},
		{"warehouse/unknown field", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("weight", "3"), []string{"Idempotency-Key", "w5"}, s400, "unknown_field"},
		{"warehouse/pallets -1", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("pallets", "-1"), []string{"Idempotency-Key", "w6"}, s400, "invalid_field"},
		{"warehouse/pallets 1.5", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("pallets", "1.5"), []string{"Idempotency-Key", "w7"}, s400, "invalid_field"},
		{"warehouse/pallets as string", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("pallets", `"3"`), []string{"Idempotency-Key", "w8"}, s400, "invalid_field"},
		{"warehouse/pallets missing", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("pallets", ""), []string{"Idempotency-Key", "w9"}, s400, "invalid_field"},
		{"warehouse/kind bogus", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("kind", `"bogus"`), []string{"Idempotency-Key", "w10"}, s400, "invalid_field"},
		{"warehouse/kind missing", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("kind", ""), []string{"Idempotency-Key", "w11"}, s400, "invalid_field"},
		{"warehouse/bad ts", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("ts", `"08:01"`), []string{"Idempotency-Key", "w12"}, s400, "invalid_field"},
		{"warehouse/terminal missing", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("terminal", ""), []string{"Idempotency-Key", "w13"}, s400, "invalid_field"},
		{"warehouse/terminal empty", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("terminal", `""`), []string{"Idempotency-Key", "w14"}, s400, "invalid_field"},
		{"warehouse/dock a number", "POST", "/v1/loading-events", api.RoleWarehouse, withEv("dock", `4`), []string{"Idempotency-Key", "w15"}, s400, "invalid_field"},
		{"warehouse/body too large", "POST", "/v1/loading-events", api.RoleWarehouse, big, []string{"Idempotency-Key", "w16"}, s413, "body_too_large"},
		{"warehouse/text/plain", "POST", "/v1/loading-events", api.RoleWarehouse, ev, []string{"Idempotency-Key", "w17", "Content-Type", "text/plain"}, s415, "unsupported_media_type"},

		// Tables.
		{"tables/put malformed", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, `{"a":`, nil, s400, "bad_json"},
		{"tables/put two values", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, `1 2`, nil, s400, "bad_json"},
		{"tables/put empty body", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, "", nil, s400, "bad_json"},
		{"tables/put no body", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, nil, nil, s400, "bad_json"},
		{"tables/put bad If-Match", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, `1`, []string{"If-Match", "v1"}, s400, "bad_if_match"},
		{"tables/delete bad If-Match", "DELETE", "/v1/tables/u/keys/k", api.RoleDashboard, nil, []string{"If-Match", "x"}, s400, "bad_if_match"},
		{"tables/put bad table name", "PUT", "/v1/tables/my%20table/keys/k", api.RoleDashboard, `1`, nil, s400, "bad_name"},
		{"tables/put key with a control character", "PUT", "/v1/tables/u/keys/a%01b", api.RoleDashboard, `1`, nil, s400, "bad_key"},
		{"tables/put Idempotency-Key too long", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, `1`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, s400, "bad_idempotency_key"},
		{"tables/put body too large", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, big, nil, s413, "body_too_large"},
		{"tables/put body too large, chunked", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, chunked(big), nil, s413, "body_too_large"},
		{"tables/put text/plain", "PUT", "/v1/tables/u/keys/k", api.RoleDashboard, `1`, []string{"Content-Type", "text/plain"}, s415, "unsupported_media_type"},

		// Parameters of the readers.
		{"log/limit=0", "GET", "/v1/log?limit=0", api.RoleAdmin, nil, nil, s400, "bad_parameter"},
		{"log/limit=1001", "GET", "/v1/log?limit=1001", api.RoleAdmin, nil, nil, s400, "bad_parameter"},
		{"log/limit=x", "GET", "/v1/log?limit=x", api.RoleAdmin, nil, nil, s400, "bad_parameter"},
		{"log/after=x", "GET", "/v1/log?after=x", api.RoleAdmin, nil, nil, s400, "bad_parameter"},
		{"log/after=-1", "GET", "/v1/log?after=-1", api.RoleAdmin, nil, nil, s400, "bad_parameter"},
		{"log/bad table", "GET", "/v1/log?table=a%20b", api.RoleAdmin, nil, nil, s400, "bad_name"},
		{"tables/page limit=0", "GET", "/v1/tables/u?limit=0", api.RoleDashboard, nil, nil, s400, "bad_parameter"},
		{"tables/page limit=1001", "GET", "/v1/tables/u?limit=1001", api.RoleDashboard, nil, nil, s400, "bad_parameter"},
		{"tables/list limit=0", "GET", "/v1/tables?limit=0", api.RoleDashboard, nil, nil, s400, "bad_parameter"},
	}

	before := f.eng.DurableLSN()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, f.do(t, c.method, c.path, tok(c.role), c.body, c.hdr...), c.status, c.code)
		})
	}
	control := f.controlWrite(t, "after-bad-input")
	f.wantOnlyControl(t, before, control)

	// The refused batch with one bad point stored nothing, so seq 1 is new.
	r := f.do(t, "POST", drvPath, tok(api.RoleDriver), pointJSON(1))
	wantStatus(t, r, http.StatusAccepted)
	if m := object(t, r); num[int](t, m["accepted"]) != 1 || num[int](t, m["duplicates"]) != 0 {
		t.Fatalf("seq 1 after the refused batches: %s; want accepted 1, duplicates 0", r.body)
	}
	// Nothing refused on the dispatch path reached the route either.
	wantError(t, f.do(t, "GET", asgPath, tok(api.RoleDispatch), nil), http.StatusNotFound, "not_found")
}

// ---------------------------------------------------------------------------
// 3. Auth, methods, paths
// ---------------------------------------------------------------------------

type endpoint struct {
	method, path string
	body         string
	hdr          []string
	roles        []api.Role // the roles allowed
}

// endpoints lists every authenticated endpoint with a VALID request, so
// that a refusal is due to the token alone, and with the roles it allows.
func endpoints() []endpoint {
	dash := []api.Role{api.RoleDashboard, api.RoleAdmin}
	return []endpoint{
		{"POST", "/v1/drivers/van-1/locations", pointJSON(1), nil, []api.Role{api.RoleDriver}},
		{"GET", "/v1/drivers/stream", "", nil, []api.Role{api.RoleDriver}},
		{"PUT", "/v1/assignments/r-1", assignJSON("van-1", ""), []string{"Idempotency-Key", "auth-1"}, []api.Role{api.RoleDispatch}},
		{"GET", "/v1/assignments/r-1", "", nil, []api.Role{api.RoleDispatch, api.RoleDashboard, api.RoleAdmin}},
		{"GET", "/v1/assignments/r-1/progress", "", nil, []api.Role{api.RoleDispatch, api.RoleDashboard, api.RoleAdmin}},
		{"PUT", "/v1/fences/f-1", `{"name":"Depot","lat":52.5,"lng":13.4,"radius_m":150}`, nil, []api.Role{api.RoleDispatch, api.RoleAdmin}},
		{"GET", "/v1/fences/f-1", "", nil, []api.Role{api.RoleDispatch, api.RoleAdmin}},
		{"DELETE", "/v1/fences/f-1", "", nil, []api.Role{api.RoleDispatch, api.RoleAdmin}},
		{"POST", "/v1/loading-events", loadingJSON("s", "loaded", 1), []string{"Idempotency-Key", "auth-2"}, []api.Role{api.RoleWarehouse}},
		{"GET", "/v1/tables", "", nil, dash},
		{"GET", "/v1/tables/u", "", nil, dash},
		{"GET", "/v1/tables/u/keys/k", "", nil, dash},
		{"PUT", "/v1/tables/u/keys/k", `{"v":1}`, nil, dash},
		{"DELETE", "/v1/tables/u/keys/k", "", nil, dash},
		{"GET", "/v1/tables/u/events", "", nil, dash},
		{"GET", "/v1/ws", "", nil, dash},
		{"GET", "/v1/log", "", nil, []api.Role{api.RoleAdmin, api.RoleDashboard}},
		// The history endpoints (issue 22), read from the replica.
		{"GET", "/v1/drivers/van-1/trail", "", nil, dash},
		{"GET", "/v1/drivers/van-1/trail?format=gpx", "", nil, dash},
		{"GET", "/v1/loading-events?dock=D4", "", nil, dash},
		{"GET", "/v1/assignments/r-1/history", "", nil, dash},
		// The tables of the phones' device ids (their credentials) are
		// admin's only, on every read path (issue 18).
		{"GET", "/v1/tables/devices", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/tables/devices/keys/k", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/tables/device_status", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/tables/quarantine/keys/k", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/tables/devices/events", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/log?table=quarantine", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/metrics", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/debug/pprof/heap", "", nil, []api.Role{api.RoleAdmin}},
		{"POST", "/v1/admin/drivers/van-1/reset", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/uplink", "", nil, []api.Role{api.RoleAdmin}},
		{"POST", "/v1/admin/promote", "", nil, []api.Role{api.RoleAdmin}},
		{"GET", "/v1/admin/backup", "", nil, []api.Role{api.RoleAdmin}},
	}
}

func TestAuthFailures(t *testing.T) {
	f := newFixture(t)
	before := f.eng.DurableLSN()
	for _, ep := range endpoints() {
		var body any
		if ep.body != "" {
			body = ep.body
		}
		name := ep.method + " " + ep.path
		t.Run(name+"/no Authorization", func(t *testing.T) {
			r := f.do(t, ep.method, ep.path, "", body, ep.hdr...)
			wantError(t, r, http.StatusUnauthorized, "unauthorized")
			if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
				t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", wa)
			}
		})
		for label, auth := range map[string]string{
			"unknown token":           "Bearer not-a-token",
			"Basic":                   "Basic x",
			"Basic with a real token": "Basic " + tok(ep.roles[0]),
			"empty bearer":            "Bearer ",
			"bare token":              tok(ep.roles[0]),
		} {
			t.Run(name+"/"+label, func(t *testing.T) {
				r := f.do(t, ep.method, ep.path, "", body, append([]string{"Authorization", auth}, ep.hdr...)...)
				wantError(t, r, http.StatusUnauthorized, "unauthorized")
				if r.header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
		for _, role := range fxRoles {
			if slices.Contains(ep.roles, role) {
				continue
			}
			t.Run(name+"/"+string(role)+" token", func(t *testing.T) {
				wantError(t, f.do(t, ep.method, ep.path, tok(role), body, ep.hdr...), http.StatusForbidden, "forbidden")
			})
		}
	}
	// None of the refused (valid) writes was stored.
	control := f.controlWrite(t, "after-auth")
	f.wantOnlyControl(t, before, control)
}

// TestAuthFailureLimit (issue 18): past http.max_auth_failures 401s from
// one address within the window, that address gets 429 too_many_failures
// with Retry-After on every authenticated endpoint, even with a valid
// token; open endpoints still answer.
func TestAuthFailureLimit(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.HTTP.MaxAuthFailures = 3
		c.HTTP.AuthFailureWindow = time.Minute
	}})
	wantStatus(t, f.do(t, "GET", "/v1/tables", tok(api.RoleDashboard), nil), http.StatusOK)
	for range 3 {
		wantError(t, f.do(t, "GET", "/v1/tables", "guess-0123456789abcdef", nil), http.StatusUnauthorized, "unauthorized")
	}
	for _, ep := range []struct{ method, path, token string }{
		{"GET", "/v1/tables", "guess-0123456789abcdef"},
		{"GET", "/v1/tables", tok(api.RoleDashboard)},
		{"GET", "/v1/log", tok(api.RoleAdmin)},
		{"POST", "/v1/drivers/van-1/locations", tok(api.RoleDriver)},
	} {
		var body any
		if ep.method == "POST" {
			body = pointJSON(1)
		}
		r := f.do(t, ep.method, ep.path, ep.token, body)
		wantError(t, r, http.StatusTooManyRequests, "too_many_failures")
		if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 || n > 60 {
			t.Fatalf("%s %s: Retry-After %q", ep.method, ep.path, r.header.Get("Retry-After"))
		}
	}
	wantStatus(t, f.do(t, "GET", "/healthz", "", nil), http.StatusOK)
}

func TestMethodNotAllowedAndUnknownPath(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		method, path string
		role         api.Role
		allow        string // a method the Allow header must list
	}{
		{"GET", "/v1/drivers/van-1/locations", api.RoleDriver, "POST"},
		{"PUT", "/v1/drivers/van-1/locations", api.RoleDriver, "POST"},
		{"DELETE", "/v1/assignments/r-1", api.RoleDispatch, "PUT"},
		{"POST", "/v1/assignments/r-1", api.RoleDispatch, "PUT"},
		{"PUT", "/v1/loading-events", api.RoleWarehouse, "POST"},
		{"POST", "/v1/drivers/van-1/trail", api.RoleDashboard, "GET"},
		{"PUT", "/v1/assignments/r-1/history", api.RoleDashboard, "GET"},
		{"DELETE", "/v1/loading-events", api.RoleWarehouse, "POST"},
		{"POST", "/v1/tables", api.RoleDashboard, "GET"},
		{"DELETE", "/v1/tables/u", api.RoleDashboard, "GET"},
		{"POST", "/v1/tables/u/keys/k", api.RoleDashboard, "PUT"},
		{"PATCH", "/v1/tables/u/keys/k", api.RoleDashboard, "DELETE"},
		{"POST", "/v1/log", api.RoleAdmin, "GET"},
		{"POST", "/healthz", "", "GET"},
		{"POST", "/readyz", "", "GET"},
		{"POST", "/metrics", api.RoleAdmin, "GET"},
		{"POST", "/v1/drivers/stream", api.RoleDriver, "GET"},
		// The hub's streams, mounted by MountHub.
		{"POST", "/v1/tables/u/events", api.RoleDashboard, "GET"},
		{"PUT", "/v1/tables/u/events", api.RoleDashboard, "GET"},
		{"POST", "/v1/ws", api.RoleDashboard, "GET"},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := f.do(t, c.method, c.path, tok(c.role), `{}`)
			wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
			if !strings.Contains(r.header.Get("Allow"), c.allow) {
				t.Fatalf("Allow %q does not list %s", r.header.Get("Allow"), c.allow)
			}
		})
	}
	for _, p := range []string{"/v1/nope", "/v1/drivers", "/v1/drivers/van-1", "/v1/assignments", "/v1/tables/u/other", "/v1/tables/u/events/extra", "/v1/ws/x", "/v1/"} {
		t.Run("GET "+p, func(t *testing.T) {
			wantError(t, f.do(t, "GET", p, tok(api.RoleAdmin), nil), http.StatusNotFound, "not_found")
		})
	}
}

// ---------------------------------------------------------------------------
// 4. Backpressure
// ---------------------------------------------------------------------------

// TestDriverWaitsForRoom: a driver request that finds its lane full waits
// (up to half a second) for the committer to drain it and is accepted,
// rather than refused with a Retry-After of a whole second.
func TestDriverWaitsForRoom(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Driver.QueueBound = 50
		c.Lanes.Driver.FlushWithin = 100 * time.Millisecond
	}})
	drv := tok(api.RoleDriver)
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-1/locations", drv, pointsJSON(1, 50)), http.StatusAccepted)
	// Full until the fsync due within 100 ms frees the 50 points.
	r := f.do(t, "POST", "/v1/drivers/van-2/locations", drv, pointsJSON(1, 10))
	wantStatus(t, r, http.StatusAccepted)
	if m := object(t, r); num[int](t, m["accepted"]) != 10 {
		t.Fatalf("after waiting for room: %s", r.body)
	}
	if rj := f.eng.Lane(engine.LaneDriver).Rejected(); len(rj) != 0 {
		t.Fatalf("driver lane refusals %+v, want none", rj)
	}
}

// TestDriverLaneBackpressure: driver lane queue_bound 50, flush_within 1
// minute, so that accepted points stay counted against the bound (they are
// in flight until an fsync) until a sync write forces one.
func TestDriverLaneBackpressure(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Driver.QueueBound = 50
		c.Lanes.Driver.FlushWithin = time.Minute
	}})
	drv := tok(api.RoleDriver)
	path := "/v1/drivers/van-1/locations"

	// 51 points in one request can never fit a bound of 50: the api refuses
	// them as too many for one request (413), not as "retry later", and
	// stores nothing.
	wantError(t, f.do(t, "POST", path, drv, pointsJSON(1, 51)), http.StatusRequestEntityTooLarge, "too_many_points")

	// 30 accepted, in flight until an fsync.
	r := f.do(t, "POST", path, drv, pointsJSON(1, 30))
	wantStatus(t, r, http.StatusAccepted)
	if m := object(t, r); num[int](t, m["accepted"]) != 30 {
		t.Fatalf("first 30: %s", r.body)
	}
	// 30 + 21 > 50: lane_full, with Retry-After, for this driver and any other.
	wantError(t, f.do(t, "POST", path, drv, pointsJSON(31, 51)), http.StatusTooManyRequests, "lane_full")
	wantError(t, f.do(t, "POST", "/v1/drivers/van-2/locations", drv, pointsJSON(1, 21)), http.StatusTooManyRequests, "lane_full")
	// Exactly up to the bound still fits; one more does not.
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-2/locations", drv, pointsJSON(1, 20)), http.StatusAccepted)
	wantError(t, f.do(t, "POST", "/v1/drivers/van-3/locations", drv, pointJSON(1)), http.StatusTooManyRequests, "lane_full")
	if d := f.eng.Lane(engine.LaneDriver).Depth.Load(); d != 50 {
		t.Fatalf("driver lane depth %d, want 50", d)
	}

	// Dispatch is not slowed: 201 at this moment, while the driver lane is full.
	t0 := time.Now()
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-1", tok(api.RoleDispatch), assignJSON("van-1", ""), "Idempotency-Key", "bp"), http.StatusCreated)
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("dispatch took %v with the driver lane full", el)
	}
	// So are the dashboard's tables.
	wantStatus(t, f.do(t, "PUT", "/v1/tables/u/keys/k", tok(api.RoleDashboard), `1`), http.StatusCreated)

	// The dispatch fsync made the driver points durable and freed the lane:
	// the refused points were not taken, so they are new now.
	testkit.Eventually(t, 5*time.Second, "the driver lane to drain", func() bool { return f.eng.Lane(engine.LaneDriver).Depth.Load() == 0 })
	r = f.do(t, "POST", path, drv, pointsJSON(31, 51))
	wantStatus(t, r, http.StatusAccepted)
	if m := object(t, r); num[int](t, m["accepted"]) != 21 || num[int](t, m["duplicates"]) != 0 {
		t.Fatalf("resend of the refused points: %s; want accepted 21, duplicates 0", r.body)
	}
	// The refusals are on the driver's ledger line, nobody else's.
	m := f.do(t, "GET", "/metrics", tok(api.RoleAdmin), nil)
	for _, want := range []string{
		`routehound_lane_rejected_total{lane="driver",reason="lane_full"} 3`,
		`routehound_lane_rejected_total{lane="driver",reason="too_many_points"} 1`,
	} {
		if !strings.Contains(string(m.body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(m.body), `lane="dispatch",reason="lane_full"`) {
		t.Error("dispatch has lane_full refusals")
	}
}

// TestWarehouseLaneBackpressure: warehouse lane queue_bound 1, flush_within
// 1 minute, so that one event holds the whole bound until a sync write
// forces the fsync.
func TestWarehouseLaneBackpressure(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Warehouse.QueueBound = 1
		c.Lanes.Warehouse.FlushWithin = time.Minute
		c.Lanes.Warehouse.MaxWait = 0
	}})
	wh := tok(api.RoleWarehouse)
	type result struct {
		r   resp
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := f.send("POST", "/v1/loading-events", wh, loadingJSON("SH-1", "loaded", 1), "Idempotency-Key", "a")
		first <- result{r, err}
	}()
	testkit.Eventually(t, 5*time.Second, "the first event in flight", func() bool { return f.eng.Lane(engine.LaneWarehouse).Depth.Load() == 1 })

	// The bound is hit: 503 lane_full with Retry-After (DESIGN.md: the
	// warehouse answers 503 at its queue bound; drivers get 429).
	r := f.do(t, "POST", "/v1/loading-events", wh, loadingJSON("SH-2", "loaded", 2), "Idempotency-Key", "b")
	wantError(t, r, http.StatusServiceUnavailable, "lane_full")

	// Dispatch still answers at once, and its fsync answers the first event.
	wantStatus(t, f.do(t, "PUT", "/v1/assignments/r-1", tok(api.RoleDispatch), assignJSON("van-1", ""), "Idempotency-Key", "d"), http.StatusCreated)
	select {
	case res := <-first:
		if res.err != nil {
			t.Fatal(res.err)
		}
		wantStatus(t, res.r, http.StatusCreated)
	case <-time.After(10 * time.Second):
		t.Fatal("the first event was not answered after the dispatch fsync")
	}
	recs := f.readLog(t, 0, "loading")
	if len(recs) != 1 || !strings.Contains(string(recs[0].Value), "SH-1") {
		t.Fatalf("loading log %+v; want only SH-1", recs)
	}
}

// A lane_full refusal's Retry-After is the lane's drain time at its
// measured rate, in whole seconds, at least 1 and at most 30; without a
// measured rate it is the configured retry_after.
func TestRetryAfterFromTheDrain(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&engine.LaneFullError{Lane: engine.LaneDriver, RetryAfter: 2500 * time.Millisecond}, "3"},
		{&engine.LaneFullError{Lane: engine.LaneDriver, RetryAfter: 80 * time.Millisecond}, "1"},
		{&engine.LaneFullError{Lane: engine.LaneWarehouse, RetryAfter: 100 * time.Second}, "30"},
		{&engine.LaneFullError{Lane: engine.LaneDriver}, "1"},
		{engine.ErrLaneFull, "1"},
		{fmt.Errorf("wrapped: %w", &engine.LaneFullError{Lane: engine.LaneWarehouse, RetryAfter: 4 * time.Second}), "4"},
	} {
		if got := api.RetryAfterForTest(c.err); got != c.want {
			t.Errorf("%v: Retry-After %q, want %q", c.err, got, c.want)
		}
	}
}

// TestUplinkOff: GET /v1/uplink (admin) answers {"enabled": false} when
// [uplink] nats_url is empty (the appliance tests cover a running uplink).
func TestUplinkOff(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "GET", "/v1/uplink", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r); len(m) != 1 || string(m["enabled"]) != "false" {
		t.Fatalf("uplink off: %s", r.body)
	}
}

// TestPromoteNotStandby: POST /v1/admin/promote (admin) on a box that
// follows no primary answers 409 not_standby (the appliance tests promote
// a running standby); a standby's refusal of a write is 503 not_primary.
func TestPromoteNotStandby(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "POST", "/v1/admin/promote", tok(api.RoleAdmin), nil)
	wantError(t, r, http.StatusConflict, "not_standby")
	f.eng.SetNotPrimary("a standby, in this test")
	r = f.do(t, "PUT", "/v1/tables/notes/keys/k", tok(api.RoleDashboard), map[string]any{"a": 1})
	wantError(t, r, http.StatusServiceUnavailable, "not_primary")
	r = f.do(t, "GET", "/readyz", "", nil)
	wantError(t, r, http.StatusServiceUnavailable, "not_primary")
	f.eng.Promote()
	r = f.do(t, "PUT", "/v1/tables/notes/keys/k", tok(api.RoleDashboard), map[string]any{"a": 1})
	wantStatus(t, r, http.StatusCreated)
}

// TestBackupEndpoint: GET /v1/admin/backup (admin) answers a whole,
// verifiable backup file at the durable LSN, named in its header.
func TestBackupEndpoint(t *testing.T) {
	f := newFixture(t)
	control := f.controlWrite(t, "before-backup")
	r := f.do(t, "GET", "/v1/admin/backup", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	h, err := api.VerifyBackup(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if h.LSN < control || r.header.Get("Routehound-Backup-Lsn") != fmt.Sprint(h.LSN) || len(h.Tokens) == 0 {
		t.Fatalf("backup header %+v (lsn header %s), control write at lsn %d", h, r.header.Get("Routehound-Backup-Lsn"), control)
	}
	if !bytes.Contains(h.Tokens, []byte(fxTokens[api.RoleAdmin])) {
		t.Fatal("the backup's tokens lack the admin token")
	}
	for _, cut := range []int{len(r.body) - 1, len(r.body) / 2, 10} {
		if _, err := api.VerifyBackup(bytes.NewReader(r.body[:cut])); !errors.Is(err, api.ErrBadBackup) {
			t.Fatalf("a backup cut at %d of %d bytes: %v", cut, len(r.body), err)
		}
	}
	if _, err := api.VerifyBackup(bytes.NewReader(append(append([]byte(nil), r.body...), 0))); !errors.Is(err, api.ErrBadBackup) {
		t.Fatalf("a backup with a byte after its checksum: %v", err)
	}
	flipped := append([]byte(nil), r.body...)
	flipped[len(api.BackupMagic)+2] ^= 1 // inside the header line: still parses only if JSON, the checksum catches the rest
	if _, err := api.VerifyBackup(bytes.NewReader(flipped)); !errors.Is(err, api.ErrBadBackup) {
		t.Fatalf("a backup with a damaged header: %v", err)
	}
}

// manyStops is an assignment of n stops whose ids are idBytes long.
func manyStops(n, idBytes int) string {
	var b strings.Builder
	b.WriteString(`{"driver":"van-1","stops":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		id := fmt.Sprintf("%0*d", idBytes, i)
		fmt.Fprintf(&b, `{"id":%q,"lat":52.5,"lng":13.4,"eta":"2026-11-23T09:00:00Z"}`, id)
	}
	b.WriteString("]}")
	return b.String()
}
