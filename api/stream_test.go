package api_test

// Stream tests over the real HTTP server: Server-Sent Events on
// GET /v1/tables/{t}/events and the WebSocket on GET /v1/ws (DESIGN.md,
// "Interface contract (v1)"). Every read has a deadline; nothing sleeps to
// wait for an event. "Nothing else arrived" is checked with a marker write:
// the next event after the expected ones must be the marker.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
)

const streamWait = 5 * time.Second // the longest wait for one event

// ---------------------------------------------------------------------------
// SSE client
// ---------------------------------------------------------------------------

type sseEvent struct {
	id    string
	hasID bool
	event string
	data  string
}

func (e sseEvent) String() string {
	id := "(no id)"
	if e.hasID {
		id = "id " + e.id
	}
	return fmt.Sprintf("{%s event %q data %s}", id, e.event, e.data)
}

type sseStream struct {
	header http.Header
	events chan sseEvent
	done   chan error // the read error once the stream ended
	cancel context.CancelFunc
}

// openSSE opens an event stream. On a 200 it returns the stream (closed in
// t.Cleanup); otherwise it returns nil and the answer.
func (f *fixture) openSSE(t testing.TB, path, token string, hdr ...string) (*sseStream, resp) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", f.url+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// The headers come once the subscription is registered: bound the wait.
	timer := time.AfterFunc(streamWait, cancel)
	res, err := f.client.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	if res.StatusCode != http.StatusOK {
		defer cancel()
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return nil, resp{status: res.StatusCode, header: res.Header, body: raw}
	}
	s := &sseStream{header: res.Header, events: make(chan sseEvent, 4096), done: make(chan error, 1), cancel: cancel}
	go func() {
		defer res.Body.Close()
		s.done <- readSSE(ctx, res.Body, s.events)
	}()
	t.Cleanup(s.close)
	return s, resp{status: res.StatusCode, header: res.Header}
}

func (f *fixture) mustSSE(t testing.TB, path, token string, hdr ...string) *sseStream {
	t.Helper()
	s, r := f.openSSE(t, path, token, hdr...)
	if s == nil {
		t.Fatalf("GET %s: %v, want 200 and a stream", path, r)
	}
	if ct := s.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	return s
}

func (s *sseStream) close() { s.cancel() }

// readSSE parses the stream line by line into events (text/event-stream:
// fields up to a blank line; lines starting with ':' are comments).
func readSSE(ctx context.Context, body io.Reader, out chan<- sseEvent) error {
	br := bufio.NewReader(body)
	var ev sseEvent
	var data []string
	seen := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if seen {
				ev.data = strings.Join(data, "\n")
				select {
				case out <- ev:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			ev, data, seen = sseEvent{}, nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id, ev.hasID = value, true
		case "event":
			ev.event = value
		case "data":
			data = append(data, value)
		}
		seen = true
	}
}

// next returns the next event, failing after streamWait or if the stream ends.
func (s *sseStream) next(t testing.TB) sseEvent {
	t.Helper()
	timer := time.NewTimer(streamWait)
	defer timer.Stop()
	select {
	case ev := <-s.events:
		return ev
	case err := <-s.done:
		t.Fatalf("event stream ended: %v", err)
	case <-timer.C:
		t.Fatalf("no event within %v", streamWait)
	}
	return sseEvent{}
}

// sseRow decodes an event's data {"key","value","version","lsn"}.
func sseRow(t testing.TB, ev sseEvent) (key string, value json.RawMessage, version, lsn uint64) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil || len(m) != 4 || m["key"] == nil || m["value"] == nil || m["version"] == nil || m["lsn"] == nil {
		t.Fatalf("event %v: data is not exactly {key, value, version, lsn}", ev)
	}
	return str(t, m["key"]), m["value"], num[uint64](t, m["version"]), num[uint64](t, m["lsn"])
}

// wantChange checks a live change: `id: <lsn>`, `event: op`, and its data.
func wantChange(t testing.TB, ev sseEvent, op, key, value string, lsn uint64) {
	t.Helper()
	k, v, _, l := sseRow(t, ev)
	if !ev.hasID || ev.id != strconv.FormatUint(lsn, 10) || ev.event != op || k != key || l != lsn || !sameJSON(v, []byte(value)) {
		t.Fatalf("event %v; want id %d, event %s, key %s, value %s, lsn %d", ev, lsn, op, key, value, lsn)
	}
}

// wantSnapshotEnd checks the end of a snapshot: `event: snapshot`,
// `id: <lsn>`, data {"lsn","resync"}; it returns the LSN.
func wantSnapshotEnd(t testing.TB, ev sseEvent, atLeast uint64) uint64 {
	t.Helper()
	var d struct {
		LSN    *uint64 `json:"lsn"`
		Resync *bool   `json:"resync"`
	}
	if ev.event != "snapshot" || !ev.hasID || json.Unmarshal([]byte(ev.data), &d) != nil || d.LSN == nil || d.Resync == nil {
		t.Fatalf("event %v; want the end of the snapshot", ev)
	}
	if ev.id != strconv.FormatUint(*d.LSN, 10) || *d.LSN < atLeast || *d.Resync {
		t.Fatalf("snapshot end %v; want id = lsn >= %d, resync false", ev, atLeast)
	}
	return *d.LSN
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

type wsRow struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Version uint64          `json:"version"`
	LSN     uint64          `json:"lsn"`
}

type wsFrame struct {
	fields map[string]json.RawMessage
	raw    string

	Type    string            `json:"type"`
	Table   string            `json:"table"`
	Op      string            `json:"op"`
	Key     string            `json:"key"`
	Value   json.RawMessage   `json:"value"`
	Version uint64            `json:"version"`
	LSN     uint64            `json:"lsn"`
	ID      string            `json:"id"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Rows    []wsRow           `json:"rows"`
	Last    bool              `json:"last"`
	Resync  bool              `json:"resync"`
	Changes []json.RawMessage `json:"changes"` // a "changes" frame's (subscribe with batch)
}

func (fr wsFrame) String() string { return fr.raw }

// has reports whether the frame has exactly these fields.
func (fr wsFrame) has(keys ...string) bool {
	if len(fr.fields) != len(keys) {
		return false
	}
	for _, k := range keys {
		if _, ok := fr.fields[k]; !ok {
			return false
		}
	}
	return true
}

type wsClient struct {
	c      *websocket.Conn
	frames chan wsFrame
	done   chan error
	cancel context.CancelFunc
}

func (f *fixture) wsURL() string { return "ws" + strings.TrimPrefix(f.url, "http") + "/v1/ws" }

// dialWS opens /v1/ws with hdr (name, value pairs), returning the error
// and the handshake answer on failure.
func (f *fixture) dialWS(token string, hdr ...string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	return websocket.Dial(ctx, f.wsURL(), &websocket.DialOptions{HTTPHeader: h})
}

// dialDriverStream opens /v1/drivers/stream with the driver token.
func (f *fixture) dialDriverStream(t testing.TB, ctx context.Context) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url, "http")+"/v1/drivers/stream",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok(api.RoleDriver)}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func (f *fixture) mustWS(t testing.TB, token string, hdr ...string) *wsClient {
	t.Helper()
	c, res, err := f.dialWS(token, hdr...)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("dial /v1/ws: %v (status %d)", err, status)
	}
	return wrapWS(t, c)
}

// wrapWS reads c's frames into a wsClient (closed in t.Cleanup).
func wrapWS(t testing.TB, c *websocket.Conn) *wsClient {
	c.SetReadLimit(4 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	w := &wsClient{c: c, frames: make(chan wsFrame, 4096), done: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				w.done <- err
				return
			}
			fr := wsFrame{raw: string(data)}
			if err := json.Unmarshal(data, &fr.fields); err != nil {
				w.done <- fmt.Errorf("frame %q is not a JSON object: %w", data, err)
				return
			}
			if err := json.Unmarshal(data, &fr); err != nil {
				w.done <- fmt.Errorf("frame %q: %w", data, err)
				return
			}
			select {
			case w.frames <- fr:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		c.CloseNow()
	})
	return w
}

func (w *wsClient) send(t testing.TB, v any) {
	t.Helper()
	if err := w.trySend(v); err != nil {
		t.Fatalf("ws send: %v", err)
	}
}

func (w *wsClient) trySend(v any) error {
	var b []byte
	switch m := v.(type) {
	case string:
		b = []byte(m)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	return w.c.Write(ctx, websocket.MessageText, b)
}

func (w *wsClient) next(t testing.TB) wsFrame {
	t.Helper()
	timer := time.NewTimer(streamWait)
	defer timer.Stop()
	select {
	case fr := <-w.frames:
		return fr
	case err := <-w.done:
		t.Fatalf("websocket ended: %v", err)
	case <-timer.C:
		t.Fatalf("no frame within %v", streamWait)
	}
	return wsFrame{}
}

// subscribe subscribes and reads the snapshot; it returns the snapshot's
// rows and LSN.
func (w *wsClient) subscribe(t testing.TB, table string) ([]wsRow, uint64) {
	t.Helper()
	w.send(t, map[string]any{"op": "subscribe", "table": table})
	var rows []wsRow
	for {
		fr := w.next(t)
		if fr.Type != "snapshot" || fr.Table != table || fr.Resync || !fr.has("type", "table", "lsn", "rows", "last", "resync") {
			t.Fatalf("subscribe %s: frame %v; want a snapshot of it", table, fr)
		}
		rows = append(rows, fr.Rows...)
		if fr.Last {
			return rows, fr.LSN
		}
	}
}

// wantWSChange checks a change frame.
func wantWSChange(t testing.TB, fr wsFrame, table, op, key, value string, lsn uint64) {
	t.Helper()
	if fr.Type != "change" || fr.Table != table || fr.Op != op || fr.Key != key || !sameJSON(fr.Value, []byte(value)) ||
		(lsn != 0 && fr.LSN != lsn) || !fr.has("type", "table", "op", "key", "value", "version", "lsn") {
		t.Fatalf("frame %v; want change %s %s/%s = %s at lsn %d", fr, op, table, key, value, lsn)
	}
}

// wantWSError checks an error frame.
func wantWSError(t testing.TB, fr wsFrame, code, id string) {
	t.Helper()
	if fr.Type != "error" || fr.Code != code || fr.ID != id || fr.Message == "" {
		t.Fatalf("frame %v; want error %s (id %q)", fr, code, id)
	}
}

// putKey puts a key of a user table over HTTP and returns its LSN.
func (f *fixture) putKey(t testing.TB, table, key, value string) uint64 {
	t.Helper()
	r := f.do(t, "PUT", "/v1/tables/"+table+"/keys/"+key, tok(api.RoleDashboard), value)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("PUT %s/%s: %v", table, key, r)
	}
	return num[uint64](t, object(t, r)["lsn"])
}

func (f *fixture) deleteKey(t testing.TB, table, key string) uint64 {
	t.Helper()
	r := f.do(t, "DELETE", "/v1/tables/"+table+"/keys/"+key, tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	return num[uint64](t, object(t, r, "key", "lsn")["lsn"])
}

// ---------------------------------------------------------------------------
// 5. SSE
// ---------------------------------------------------------------------------

func TestSSESnapshotThenChanges(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	la := f.putKey(t, "sse", "a", `{"n":1}`)
	lb := f.putKey(t, "sse", "b", `"two"`)

	s := f.mustSSE(t, "/v1/tables/sse/events", dash)
	// Snapshot rows: event put, no id, in key order.
	for _, want := range []struct {
		key, value string
		lsn        uint64
	}{{"a", `{"n":1}`, la}, {"b", `"two"`, lb}} {
		ev := s.next(t)
		k, v, ver, l := sseRow(t, ev)
		if ev.hasID || ev.event != "put" || k != want.key || !sameJSON(v, []byte(want.value)) || ver != 1 || l != want.lsn {
			t.Fatalf("snapshot row %v; want event put without id, key %s, value %s, version 1, lsn %d", ev, want.key, want.value, want.lsn)
		}
	}
	wantSnapshotEnd(t, s.next(t), lb)

	// Live changes, each with id: <lsn>.
	lc := f.putKey(t, "sse", "c", `[1, 2]`)
	wantChange(t, s.next(t), "put", "c", `[1,2]`, lc)
	la2 := f.putKey(t, "sse", "a", `{"n":2}`)
	ev := s.next(t)
	wantChange(t, ev, "put", "a", `{"n":2}`, la2)
	if _, _, ver, _ := sseRow(t, ev); ver != 2 {
		t.Fatalf("update %v: version %d, want 2", ev, ver)
	}
	ld := f.deleteKey(t, "sse", "b")
	wantChange(t, s.next(t), "delete", "b", `null`, ld)
	// Another table's writes do not show; the next event is this table's.
	f.putKey(t, "sse-other", "x", `1`)
	lz := f.putKey(t, "sse", "z", `true`)
	wantChange(t, s.next(t), "put", "z", `true`, lz)

	// A table with no key yet: an empty snapshot, then the first key as a change.
	e := f.mustSSE(t, "/v1/tables/sse-empty/events", dash)
	wantSnapshotEnd(t, e.next(t), 0)
	l1 := f.putKey(t, "sse-empty", "first", `{"x":1}`)
	wantChange(t, e.next(t), "put", "first", `{"x":1}`, l1)

	// Admin may subscribe too.
	a := f.mustSSE(t, "/v1/tables/sse/events", tok(api.RoleAdmin))
	for ev := a.next(t); ev.event != "snapshot"; ev = a.next(t) {
		if ev.hasID {
			t.Fatalf("snapshot row with an id: %v", ev)
		}
	}
}

func TestSSEResume(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	path := "/v1/tables/res/events"
	f.putKey(t, "res", "k0", `0`)

	s := f.mustSSE(t, path, dash)
	if ev := s.next(t); ev.event != "put" || ev.hasID {
		t.Fatalf("snapshot row %v", ev)
	}
	snapLSN := wantSnapshotEnd(t, s.next(t), 1)
	l1 := f.putKey(t, "res", "k1", `1`)
	last := s.next(t)
	wantChange(t, last, "put", "k1", `1`, l1)
	s.close()

	// Five writes while disconnected (and one of another table).
	type w struct {
		op, key, value string
		lsn            uint64
	}
	var missed []w
	for i := 2; i <= 5; i++ {
		k := fmt.Sprintf("k%d", i)
		missed = append(missed, w{"put", k, strconv.Itoa(i), f.putKey(t, "res", k, strconv.Itoa(i))})
		if i == 3 {
			f.putKey(t, "res-other", "x", `1`)
		}
	}
	missed = append(missed, w{"delete", "k1", "null", f.deleteKey(t, "res", "k1")})
	missed = missed[len(missed)-5:]

	check := func(t *testing.T, s *sseStream, want []w) {
		t.Helper()
		for _, m := range want {
			ev := s.next(t)
			if ev.event == "snapshot" || !ev.hasID {
				t.Fatalf("resumed stream sent %v; want only changes, no snapshot", ev)
			}
			wantChange(t, ev, m.op, m.key, m.value, m.lsn)
		}
	}
	t.Run("Last-Event-ID", func(t *testing.T) {
		r := f.mustSSE(t, path, dash, "Last-Event-ID", last.id)
		check(t, r, missed)
		// Exactly those: the next event is a write made now.
		mk := f.putKey(t, "res", "marker-1", `"m"`)
		wantChange(t, r.next(t), "put", "marker-1", `"m"`, mk)
		r.close()
		missed = append(missed, w{"put", "marker-1", `"m"`, mk})
	})
	t.Run("from", func(t *testing.T) {
		r := f.mustSSE(t, path+"?from="+last.id, dash)
		check(t, r, missed)
		mk := f.putKey(t, "res", "marker-2", `"m"`)
		wantChange(t, r.next(t), "put", "marker-2", `"m"`, mk)
	})
	t.Run("from the snapshot id", func(t *testing.T) {
		r := f.mustSSE(t, path+"?from="+strconv.FormatUint(snapLSN, 10), dash)
		wantChange(t, r.next(t), "put", "k1", `1`, l1)
	})
}

func TestSSEBadFrom(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	for _, c := range []struct {
		name, path string
		hdr        []string
		status     int
		code       string
	}{
		{"from=x", "/v1/tables/t/events?from=x", nil, http.StatusBadRequest, "bad_parameter"},
		{"from=-1", "/v1/tables/t/events?from=-1", nil, http.StatusBadRequest, "bad_parameter"},
		{"from=1.5", "/v1/tables/t/events?from=1.5", nil, http.StatusBadRequest, "bad_parameter"},
		{"Last-Event-ID x", "/v1/tables/t/events", []string{"Last-Event-ID", "x"}, http.StatusBadRequest, "bad_parameter"},
		{"bad table name", "/v1/tables/a%20b/events", nil, http.StatusBadRequest, "bad_name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, r := f.openSSE(t, c.path, dash, c.hdr...)
			if s != nil {
				t.Fatalf("GET %s opened a stream; want %d %s", c.path, c.status, c.code)
			}
			wantError(t, r, c.status, c.code)
		})
	}
	if n := f.hub.Stats().Subscribers.Load(); n != 0 {
		t.Fatalf("%d subscribers left by refused streams", n)
	}
}

// TestSubscriberLimit_MaxSubscribersPerTable3 runs with [hub]
// max_subscribers_per_table = 3 (the default is 100; the rule is the same):
// the 4th subscriber of one table gets 429 too_many_subscribers.
func TestSubscriberLimit_MaxSubscribersPerTable3(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.Hub.MaxSubscribersPerTable = 3 }})
	dash := tok(api.RoleDashboard)
	path := "/v1/tables/crowd/events"
	var open []*sseStream
	for range 3 {
		s := f.mustSSE(t, path, dash)
		wantSnapshotEnd(t, s.next(t), 0)
		open = append(open, s)
	}
	s, r := f.openSSE(t, path, dash)
	if s != nil {
		t.Fatal("a 4th subscriber of crowd was accepted with MaxSubscribersPerTable 3")
	}
	wantError(t, r, http.StatusTooManyRequests, "too_many_subscribers")

	// Over the WebSocket: an error frame, and the connection stays usable.
	w := f.mustWS(t, dash)
	w.send(t, map[string]any{"op": "subscribe", "table": "crowd"})
	wantWSError(t, w.next(t), "too_many_subscribers", "")
	// The limit is per table.
	w.subscribe(t, "quiet")
	f.mustSSE(t, "/v1/tables/quiet/events", dash)

	// The three still get changes.
	l := f.putKey(t, "crowd", "k", `1`)
	for _, s := range open {
		wantChange(t, s.next(t), "put", "k", `1`, l)
	}
	// A subscriber that leaves frees its place.
	open[0].close()
	var again *sseStream
	eventually(t, streamWait, "a place on crowd after one subscriber left", func() bool {
		s, r := f.openSSE(t, path, dash)
		if s == nil && r.status != http.StatusTooManyRequests {
			t.Fatalf("retry: %v", r)
		}
		again = s
		return s != nil
	})
	if ev := again.next(t); ev.event != "put" {
		t.Fatalf("new subscriber's first event %v; want the snapshot row", ev)
	}
	if got := f.hub.Stats().Refused.Load(); got < 2 {
		t.Fatalf("hub refused %d subscriptions, want >= 2", got)
	}
}

// ---------------------------------------------------------------------------
// 6. WebSocket
// ---------------------------------------------------------------------------

func TestWSSubscribePutDelete(t *testing.T) {
	f := newFixture(t)
	w := f.mustWS(t, tok(api.RoleDashboard))
	rows, _ := w.subscribe(t, "ws1")
	if len(rows) != 0 {
		t.Fatalf("snapshot of an empty table: %v", rows)
	}

	// put → an ack and a change, with the same LSN.
	ackAndChange := func(id, op, key, value string, version uint64) uint64 {
		t.Helper()
		var ack, change *wsFrame
		for range 2 {
			fr := w.next(t)
			switch fr.Type {
			case "ack":
				ack = &fr
			case "change":
				change = &fr
			default:
				t.Fatalf("frame %v; want an ack and a change", fr)
			}
		}
		if ack == nil || change == nil {
			t.Fatalf("want one ack and one change, got ack %v change %v", ack, change)
		}
		if ack.ID != id || ack.Op != op || ack.Table != "ws1" || ack.Key != key || ack.Version != version || ack.LSN == 0 ||
			!ack.has("type", "id", "op", "table", "key", "version", "lsn") {
			t.Fatalf("ack %v; want id %s op %s key %s version %d", ack, id, op, key, version)
		}
		wantWSChange(t, *change, "ws1", op, key, value, ack.LSN)
		if op == "put" && change.Version != version {
			t.Fatalf("change %v: version %d, want %d", change, change.Version, version)
		}
		return ack.LSN
	}
	w.send(t, `{"op":"put","table":"ws1","key":"k1","value":{"a": 1},"id":"r1"}`)
	l1 := ackAndChange("r1", "put", "k1", `{"a":1}`, 1)
	// The ack comes after the commit: the key is readable over HTTP.
	r := f.do(t, "GET", "/v1/tables/ws1/keys/k1", tok(api.RoleDashboard), nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r); num[uint64](t, m["lsn"]) != l1 || !sameJSON(m["value"], []byte(`{"a":1}`)) {
		t.Fatalf("GET after the ack: %s", r.body)
	}
	w.send(t, `{"op":"put","table":"ws1","key":"k1","value":[2],"if_version":1,"id":"r2"}`)
	ackAndChange("r2", "put", "k1", `[2]`, 2)
	w.send(t, `{"op":"put","table":"ws1","key":"k1","value":3,"if_version":1,"id":"r3"}`)
	wantWSError(t, w.next(t), "version_conflict", "r3")
	w.send(t, `{"op":"delete","table":"ws1","key":"k1","id":"r4"}`)
	ackAndChange("r4", "delete", "k1", `null`, 0)
	w.send(t, `{"op":"delete","table":"ws1","key":"k1","id":"r5"}`)
	wantWSError(t, w.next(t), "not_found", "r5")

	// Refusals.
	for _, c := range []struct{ msg, code, id string }{
		{`{"op":"put","table":"positions","key":"van-1","value":{},"id":"e1"}`, "read_only_table", "e1"},
		{`{"op":"delete","table":"assignments","key":"r","id":"e2"}`, "read_only_table", "e2"},
		{`{"op":"put","table":"loading","key":"x","value":1,"id":"e3"}`, "read_only_table", "e3"},
		{`{"op":"put","table":"ws1","key":"k","id":"e4"}`, "bad_parameter", "e4"},
		{`{"op":"frobnicate","id":"e5"}`, "bad_parameter", "e5"},
		{`{"op":"put","table":"bad table","key":"k","value":1,"id":"e6"}`, "bad_name", "e6"},
		{`{"op":"put","table":"ws1","key":"","value":1,"id":"e7"}`, "bad_name", "e7"},
		{`not json`, "bad_parameter", ""},
	} {
		w.send(t, c.msg)
		wantWSError(t, w.next(t), c.code, c.id)
	}
	// Still subscribed to ws1, and nothing refused was written: the next
	// frames are this put's.
	w.send(t, `{"op":"put","table":"ws1","key":"k2","value":"v","id":"r6"}`)
	ackAndChange("r6", "put", "k2", `"v"`, 1)

	// A refused subscribe answers an error frame and the connection stays
	// usable: subscribing again works. (A subscribe first ends the current
	// subscription, so the refused one leaves the connection unsubscribed.)
	w.send(t, `{"op":"subscribe","table":"bad table"}`)
	wantWSError(t, w.next(t), "bad_name", "")
	if rows, _ := w.subscribe(t, "ws1"); len(rows) != 1 || rows[0].Key != "k2" {
		t.Fatalf("snapshot of ws1: %+v; want k2 only", rows)
	}

	recs := f.readLog(t, 0, "")
	if len(recs) != 4 {
		t.Fatalf("log %+v; want exactly the 4 accepted writes", recs)
	}
	for _, rec := range recs {
		if rec.Table != "ws1" || rec.Actor != "tables" {
			t.Fatalf("log record %+v; want ws1 by the tables lane", rec)
		}
	}
}

func TestWSSubscribeFrom(t *testing.T) {
	f := newFixture(t)
	l1 := f.putKey(t, "ws2", "k1", `1`)
	l2 := f.putKey(t, "ws2", "k2", `2`)
	f.putKey(t, "ws2-other", "x", `0`)
	l3 := f.putKey(t, "ws2", "k1", `3`)

	w := f.mustWS(t, tok(api.RoleDashboard))
	w.send(t, map[string]any{"op": "subscribe", "table": "ws2", "from": l1})
	// No snapshot: only the changes after l1, from the log.
	fr := w.next(t)
	if fr.Type == "snapshot" {
		t.Fatalf("subscribe with from sent a snapshot: %v", fr)
	}
	wantWSChange(t, fr, "ws2", "put", "k2", `2`, l2)
	wantWSChange(t, w.next(t), "ws2", "put", "k1", `3`, l3)
	// Then live, and nothing else in between.
	l4 := f.putKey(t, "ws2", "k3", `4`)
	wantWSChange(t, w.next(t), "ws2", "put", "k3", `4`, l4)

	// From the newest LSN: nothing to catch up, only what comes next.
	w2 := f.mustWS(t, tok(api.RoleDashboard))
	w2.send(t, map[string]any{"op": "subscribe", "table": "ws2", "from": l4})
	l5 := f.putKey(t, "ws2", "k4", `5`)
	wantWSChange(t, w2.next(t), "ws2", "put", "k4", `5`, l5)
}

func TestWSSubscribeSwitchesTable(t *testing.T) {
	f := newFixture(t)
	f.putKey(t, "wa", "x1", `1`)
	f.putKey(t, "wb", "y1", `1`)
	w := f.mustWS(t, tok(api.RoleDashboard))
	if rows, _ := w.subscribe(t, "wa"); len(rows) != 1 || rows[0].Key != "x1" {
		t.Fatalf("snapshot of wa: %+v", rows)
	}
	if rows, _ := w.subscribe(t, "wb"); len(rows) != 1 || rows[0].Key != "y1" {
		t.Fatalf("snapshot of wb: %+v", rows)
	}
	// A change of wa, then one of wb: only wb's arrives.
	f.putKey(t, "wa", "x2", `2`)
	ly := f.putKey(t, "wb", "y2", `2`)
	wantWSChange(t, w.next(t), "wb", "put", "y2", `2`, ly)
	// Unsubscribe, then subscribe to wc: no more wb.
	w.send(t, `{"op":"unsubscribe"}`)
	w.subscribe(t, "wc")
	f.putKey(t, "wb", "y3", `3`)
	lz := f.putKey(t, "wc", "z1", `1`)
	wantWSChange(t, w.next(t), "wc", "put", "z1", `1`, lz)
	if n := f.hub.Stats().Subscribers.Load(); n != 1 {
		t.Fatalf("%d subscriptions for one connection that switched twice, want 1", n)
	}
}

// TestBuiltinTablesLive: subscribers of positions, assignments and loading
// see the actors' writes as they commit.
func TestBuiltinTablesLive(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	wp := f.mustWS(t, dash)
	wp.subscribe(t, "positions")
	wa := f.mustWS(t, dash)
	wa.subscribe(t, "assignments")
	sl := f.mustSSE(t, "/v1/tables/loading/events", dash)
	wantSnapshotEnd(t, sl.next(t), 0)
	sp := f.mustSSE(t, "/v1/tables/positions/events", dash)
	wantSnapshotEnd(t, sp.next(t), 0)

	// A driver point.
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-5/locations", tok(api.RoleDriver), pointJSON(1)), http.StatusAccepted)
	fr := wp.next(t)
	wantWSChange(t, fr, "positions", "put", "van-5", pointJSON(1), 0)
	if fr.Version != 1 {
		t.Fatalf("position change %v: version %d, want 1", fr, fr.Version)
	}
	ev := sp.next(t)
	wantChange(t, ev, "put", "van-5", pointJSON(1), fr.LSN)
	// A batch: one change per point, in seq order.
	wantStatus(t, f.do(t, "POST", "/v1/drivers/van-5/locations", tok(api.RoleDriver), pointsJSON(2, 3)), http.StatusAccepted)
	for seq := uint64(2); seq <= 3; seq++ {
		fr := wp.next(t)
		wantWSChange(t, fr, "positions", "put", "van-5", pointJSON(seq), 0)
	}

	// An assignment.
	body := assignJSON("van-5", "live")
	r := f.do(t, "PUT", "/v1/assignments/r-5", tok(api.RoleDispatch), body, "Idempotency-Key", "live")
	wantStatus(t, r, http.StatusCreated)
	wantWSChange(t, wa.next(t), "assignments", "put", "r-5", body, num[uint64](t, object(t, r)["lsn"]))

	// A loading event.
	evBody := loadingJSON("SH-5", "arrived", 4)
	r = f.do(t, "POST", "/v1/loading-events", tok(api.RoleWarehouse), evBody, "Idempotency-Key", "live")
	wantStatus(t, r, http.StatusCreated)
	m := object(t, r, "id", "lsn")
	wantChange(t, sl.next(t), "put", str(t, m["id"]), evBody, num[uint64](t, m["lsn"]))
}

// TestWSBatchedChanges: a subscription with "batch" gets its changes as
// "changes" frames — every change exactly once, in LSN order, each item
// {op,key,value,version,lsn} — while a subscription without it, on the
// same table at the same time, gets the same changes as "change" frames.
func TestWSBatchedChanges(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	batched, single := f.mustWS(t, dash), f.mustWS(t, dash)
	batched.send(t, map[string]any{"op": "subscribe", "table": "wb", "batch": true})
	if fr := batched.next(t); fr.Type != "snapshot" || !fr.Last {
		t.Fatalf("frame %v; want the (empty, one-page) snapshot", fr)
	}
	single.subscribe(t, "wb")

	// Writers in parallel, so that changes queue behind each other.
	const writers, each = 8, 25
	lsns := make(chan uint64, writers*each)
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				res, err := f.eng.PutKey(context.Background(), engine.Write{Table: "wb", Key: fmt.Sprintf("k%d-%d", w, i),
					Value: []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)), IfVersion: engine.AnyVersion})
				if err != nil {
					errs <- err
					return
				}
				lsns <- res.LSN
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(lsns)
	var want []uint64
	for l := range lsns {
		want = append(want, l)
	}
	slices.Sort(want)

	type item struct {
		Op      string          `json:"op"`
		Key     string          `json:"key"`
		Value   json.RawMessage `json:"value"`
		Version uint64          `json:"version"`
		LSN     uint64          `json:"lsn"`
	}
	var got []uint64
	frames := 0
	for len(got) < len(want) {
		fr := batched.next(t)
		if fr.Type != "changes" || fr.Table != "wb" || !fr.has("type", "table", "changes") || len(fr.Changes) == 0 {
			t.Fatalf("frame %v; want a changes frame of wb", fr)
		}
		frames++
		for _, raw := range fr.Changes {
			var fields map[string]json.RawMessage
			var it item
			if json.Unmarshal(raw, &fields) != nil || json.Unmarshal(raw, &it) != nil || len(fields) != 5 ||
				it.Op != "put" || it.Version != 1 || it.LSN == 0 || !strings.HasPrefix(it.Key, "k") {
				t.Fatalf("change %s in frame %v; want {op,key,value,version,lsn} of a put", raw, fr)
			}
			var w, i int
			fmt.Sscanf(it.Key, "k%d-%d", &w, &i)
			if !sameJSON(it.Value, []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))) {
				t.Fatalf("change %s: value does not match its key", raw)
			}
			got = append(got, it.LSN)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("batched LSNs %v\nwant (every put, in LSN order) %v", got, want)
	}
	var singles []uint64
	for len(singles) < len(want) {
		fr := single.next(t)
		if fr.Type != "change" {
			t.Fatalf("frame %v on the subscription without batch; want a change", fr)
		}
		singles = append(singles, fr.LSN)
	}
	if !slices.Equal(singles, want) {
		t.Fatalf("single-frame LSNs %v\nwant %v", singles, want)
	}
	t.Logf("%d changes in %d changes frames", len(got), frames)
}

// TestWSKeepalive: the connection's writer pings the peer every
// heartbeat, with or without a subscription: a client that reads (and so
// answers) stays open and keeps receiving; one that stops reading is
// closed with a policy violation, subscribed or not.
func TestWSKeepalive(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Hub.Heartbeat = 50 * time.Millisecond
		c.Hub.WriteTimeout = 300 * time.Millisecond
	}})
	dash := tok(api.RoleDashboard)
	alive := f.mustWS(t, dash)
	alive.send(t, map[string]any{"op": "subscribe", "table": "ka", "batch": true})
	if fr := alive.next(t); fr.Type != "snapshot" {
		t.Fatalf("frame %v; want the snapshot", fr)
	}
	for _, sub := range []bool{true, false} {
		c, _, err := f.dialWS(dash)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if sub {
			ctx, cancel := context.WithTimeout(context.Background(), streamWait)
			err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","table":"ka2"}`))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second) // 20 heartbeats unanswered: nothing is read
		ctx, cancel := context.WithTimeout(context.Background(), 3*streamWait)
		for err == nil {
			_, _, err = c.Read(ctx) // the snapshot, if any, then the close
		}
		cancel()
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("subscribed %v: a client that answers no ping ended with %v, want a policy-violation close", sub, err)
		}
	}
	// Meanwhile the reading client was pinged too, and is still served.
	l := f.putKey(t, "ka", "k", `1`)
	fr := alive.next(t)
	if fr.Type != "changes" || len(fr.Changes) != 1 || !strings.Contains(string(fr.Changes[0]), fmt.Sprintf(`"lsn":%d`, l)) {
		t.Fatalf("frame %v; want the change at %d", fr, l)
	}
}

// TestWSFirstFrameWithHandshake: a client that sends its first frame in
// the same packet as its handshake (before the 101) is served: the bytes
// net/http read ahead are carried over to the connection's own reader.
func TestWSFirstFrameWithHandshake(t *testing.T) {
	f := newFixture(t)
	addr := strings.TrimPrefix(f.url, "http://")
	c, err := net.DialTimeout("tcp", addr, streamWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(streamWait))
	payload := []byte(`{"op":"subscribe","table":"early"}`)
	mask := [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...) // FIN text, masked
	for i, p := range payload {
		frame = append(frame, p^mask[i%4])
	}
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + tok(api.RoleDashboard) + "\r\n\r\n"
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", res, err)
	}
	// The server's first frame: unmasked text, a 7-bit or 16-bit length.
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		ext := make([]byte, 2)
		if _, err := io.ReadFull(br, ext); err != nil {
			t.Fatal(err)
		}
		n = int(ext[0])<<8 | int(ext[1])
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	var fr wsFrame
	if hdr[0] != 0x81 || json.Unmarshal(body, &fr) != nil || fr.Type != "snapshot" || fr.Table != "early" || !fr.Last {
		t.Fatalf("first frame %x %s; want the snapshot of early", hdr, body)
	}
}

// TestWSTokenSubprotocol: a browser cannot set Authorization on a
// WebSocket; the token as the subprotocol routehound.bearer.<base64url>
// authenticates the handshake (with the role's rights), and the server
// selects "routehound". A wrong token there is a 401, as in the header.
func TestWSTokenSubprotocol(t *testing.T) {
	f := newFixture(t)
	dial := func(token string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), streamWait)
		defer cancel()
		return websocket.Dial(ctx, f.wsURL(), &websocket.DialOptions{
			Subprotocols: []string{"routehound", "routehound.bearer." + base64.RawURLEncoding.EncodeToString([]byte(token))}})
	}
	c, _, err := dial(tok(api.RoleDashboard))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "routehound" {
		t.Fatalf("selected subprotocol %q, want routehound", c.Subprotocol())
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","table":"devices"}`)); err != nil {
		t.Fatal(err)
	}
	_, data, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(data), `"code":"forbidden"`) {
		t.Fatalf("dashboard (by subprotocol) subscribing to devices: %s %v; want forbidden", data, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","table":"sp"}`)); err != nil {
		t.Fatal(err)
	}
	if _, data, err = c.Read(ctx); err != nil || !strings.Contains(string(data), `"type":"snapshot"`) {
		t.Fatalf("subscribe: %s %v; want the snapshot", data, err)
	}
	for _, bad := range []string{"nope", tok(api.RoleDashboard) + "x"} {
		_, res, err := dial(bad)
		if err == nil || res == nil || res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q as subprotocol: %v %v; want 401", bad, res, err)
		}
	}
}

// TestClientModuleServed: GET /v1/client.js is the browser client, open
// (no token), as JavaScript.
func TestClientModuleServed(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "GET", "/v1/client.js", "", nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, want := range []string{"export function connect(", "export class Subscription", "routehound.bearer.", `"If-Match"`} {
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("client.js lacks %q", want)
		}
	}
}

func TestWSOriginAndAuth(t *testing.T) {
	f := newFixture(t)
	// A bearer client needs no Origin check: a foreign Origin is fine.
	w := f.mustWS(t, tok(api.RoleDashboard), "Origin", "https://evil.example.com")
	w.subscribe(t, "o")
	w.send(t, `{"op":"put","table":"o","key":"k","value":1,"id":"x"}`)
	for range 2 {
		if fr := w.next(t); fr.Type != "ack" && fr.Type != "change" {
			t.Fatalf("frame %v", fr)
		}
	}
	// The same for SSE.
	f.mustSSE(t, "/v1/tables/o/events", tok(api.RoleDashboard), "Origin", "https://evil.example.com")

	for _, c := range []struct {
		name   string
		token  string
		hdr    []string
		status int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"no token, foreign Origin", "", []string{"Origin", "https://evil.example.com"}, http.StatusUnauthorized},
		{"unknown token", "nope", nil, http.StatusUnauthorized},
		{"driver token", tok(api.RoleDriver), nil, http.StatusForbidden},
		{"warehouse token", tok(api.RoleWarehouse), nil, http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, res, err := f.dialWS(c.token, c.hdr...)
			if err == nil {
				conn.CloseNow()
				t.Fatal("dial succeeded")
			}
			if res == nil || res.StatusCode != c.status {
				t.Fatalf("dial: %v (answer %v); want status %d", err, res, c.status)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 7. Two concurrent sessions
// ---------------------------------------------------------------------------

// TestSSEAndWSSessionsSeeEachOther: an SSE session (writing over HTTP) and
// a WebSocket session (writing over the socket) on one table, writing at the
// same time; each sees the other's puts, and both see the same LSN order.
func TestSSEAndWSSessionsSeeEachOther(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	s := f.mustSSE(t, "/v1/tables/shared/events", dash)
	wantSnapshotEnd(t, s.next(t), 0)
	w := f.mustWS(t, dash)
	w.subscribe(t, "shared")

	const n = 20
	errs := make(chan error, 2)
	go func() { // the WebSocket session's writes
		for i := range n {
			if err := w.trySend(map[string]any{"op": "put", "table": "shared", "key": fmt.Sprintf("ws-%02d", i), "value": i, "id": strconv.Itoa(i)}); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	go func() { // the SSE session's writes, over HTTP
		for i := range n {
			r, err := f.send("PUT", fmt.Sprintf("/v1/tables/shared/keys/sse-%02d", i), dash, strconv.Itoa(i))
			if err == nil && r.status != http.StatusCreated {
				err = fmt.Errorf("PUT: %v", r)
			}
			if err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// The SSE session sees all 2n puts, the WebSocket's included.
	var sseLSNs []uint64
	sseKeys := map[string]bool{}
	for range 2 * n {
		ev := s.next(t)
		k, _, _, l := sseRow(t, ev)
		if ev.event != "put" || !ev.hasID || ev.id != strconv.FormatUint(l, 10) {
			t.Fatalf("event %v", ev)
		}
		sseKeys[k] = true
		sseLSNs = append(sseLSNs, l)
	}
	// The WebSocket session sees all 2n changes (and its n acks).
	var wsLSNs []uint64
	wsKeys := map[string]bool{}
	acks := 0
	for len(wsLSNs) < 2*n || acks < n {
		fr := w.next(t)
		switch fr.Type {
		case "ack":
			acks++
		case "change":
			wsKeys[fr.Key] = true
			wsLSNs = append(wsLSNs, fr.LSN)
		default:
			t.Fatalf("frame %v", fr)
		}
	}
	for i := range n {
		for _, k := range []string{fmt.Sprintf("ws-%02d", i), fmt.Sprintf("sse-%02d", i)} {
			if !sseKeys[k] || !wsKeys[k] {
				t.Fatalf("key %s: seen by SSE %v, by WebSocket %v", k, sseKeys[k], wsKeys[k])
			}
		}
	}
	if !slices.IsSorted(sseLSNs) || !slices.Equal(sseLSNs, wsLSNs) {
		t.Fatalf("LSN order differs or is not ascending:\nSSE %v\nWS  %v", sseLSNs, wsLSNs)
	}
	if len(slices.Compact(slices.Clone(sseLSNs))) != 2*n {
		t.Fatalf("duplicate LSNs: %v", sseLSNs)
	}
}

// TestSubscribeDuringWrites: a subscription opened while a writer is busy
// gets a snapshot at some LSN n and then every change after n, without gap
// or duplicate, over SSE and over the WebSocket.
func TestSubscribeDuringWrites(t *testing.T) {
	f := newFixture(t)
	dash := tok(api.RoleDashboard)
	const n = 200
	var progress atomic.Int64
	werr := make(chan error, 1)
	go func() {
		for i := range n {
			r, err := f.send("PUT", fmt.Sprintf("/v1/tables/busy/keys/k%03d", i), dash, strconv.Itoa(i))
			if err == nil && r.status != http.StatusCreated {
				err = fmt.Errorf("PUT: %v", r)
			}
			if err != nil {
				werr <- err
				return
			}
			progress.Add(1)
		}
		werr <- nil
	}()
	eventually(t, streamWait, "the writer to be under way", func() bool { return progress.Load() >= n/4 })
	s := f.mustSSE(t, "/v1/tables/busy/events", dash)
	w := f.mustWS(t, dash)
	w.send(t, `{"op":"subscribe","table":"busy"}`)

	// check verifies one subscriber's view: snapshot keys and change keys
	// partition the n keys; changes are exactly the LSNs n+1, n+2, ….
	check := func(name string, snapLSN uint64, snapKeys map[string]uint64, changes []wsRow) {
		t.Helper()
		seen := map[string]bool{}
		for k, l := range snapKeys {
			if l > snapLSN {
				t.Fatalf("%s: snapshot row %s at lsn %d above the snapshot lsn %d", name, k, l, snapLSN)
			}
			seen[k] = true
		}
		for i, c := range changes {
			if c.LSN != snapLSN+uint64(i)+1 {
				t.Fatalf("%s: change %d has lsn %d, want %d (snapshot at %d): a gap or a duplicate", name, i, c.LSN, snapLSN+uint64(i)+1, snapLSN)
			}
			if seen[c.Key] {
				t.Fatalf("%s: key %s both in the snapshot and as a change (or twice)", name, c.Key)
			}
			seen[c.Key] = true
		}
		if len(seen) != n {
			t.Fatalf("%s: saw %d keys, want %d", name, len(seen), n)
		}
	}
	last := fmt.Sprintf("k%03d", n-1)

	// SSE.
	snapKeys := map[string]uint64{}
	var snapLSN uint64
	for {
		ev := s.next(t)
		if ev.event == "snapshot" {
			snapLSN = wantSnapshotEnd(t, ev, 0)
			break
		}
		k, _, _, l := sseRow(t, ev)
		snapKeys[k] = l
	}
	var changes []wsRow
	for snapKeys[last] == 0 && (len(changes) == 0 || changes[len(changes)-1].Key != last) {
		ev := s.next(t)
		k, v, ver, l := sseRow(t, ev)
		if ev.event != "put" || ev.id != strconv.FormatUint(l, 10) {
			t.Fatalf("change %v", ev)
		}
		changes = append(changes, wsRow{k, v, ver, l})
	}
	check("SSE", snapLSN, snapKeys, changes)

	// WebSocket.
	snapKeys = map[string]uint64{}
	for {
		fr := w.next(t)
		if fr.Type != "snapshot" {
			t.Fatalf("frame %v before the end of the snapshot", fr)
		}
		for _, r := range fr.Rows {
			snapKeys[r.Key] = r.LSN
		}
		if fr.Last {
			snapLSN = fr.LSN
			break
		}
	}
	changes = nil
	for snapKeys[last] == 0 && (len(changes) == 0 || changes[len(changes)-1].Key != last) {
		fr := w.next(t)
		if fr.Type != "change" {
			t.Fatalf("frame %v", fr)
		}
		changes = append(changes, wsRow{fr.Key, fr.Value, fr.Version, fr.LSN})
	}
	check("WebSocket", snapLSN, snapKeys, changes)
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// The stream's hand-written frames are the JSON encoding/json writes.
func TestStreamFramesEncode(t *testing.T) {
	ack := engine.DriverAck{Accepted: 3, Duplicates: 1, DurableSeq: 18446744073709551615}
	var got, want map[string]any
	if err := json.Unmarshal(api.AppendAckForTest(nil, "van-7.a_b:c@d~e", ack), &got); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"driver": "van-7.a_b:c@d~e", "accepted": 3, "duplicates": 1, "durable_seq": uint64(18446744073709551615)})
	json.Unmarshal(b, &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ack frame %v, want %v", got, want)
	}
	got, want = nil, nil
	if err := json.Unmarshal(api.AppendDurableForTest(nil, "d1", 42), &got); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]any{"driver": "d1", "durable_seq": 42})
	json.Unmarshal(b, &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("durable frame %v, want %v", got, want)
	}
}

// A subscribe that arrives while the idle connection's ping waits for its
// pong gets its snapshot: the writer pings without blocking, so the reader
// can hand it the subscription and then read the pong. (It used to block
// handing the subscription over, never read the pong, and the connection
// was closed "no pong" after the write timeout.)
func TestWSSubscribeDuringPing(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Hub.Heartbeat = 100 * time.Millisecond
		c.Hub.WriteTimeout = 2 * time.Second
	}})
	c, _, err := f.dialWS(tok(api.RoleDashboard))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	time.Sleep(150 * time.Millisecond) // a ping is in flight, unanswered: nothing reads yet
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","table":"rv"}`)); err != nil {
		t.Fatal(err)
	}
	_, data, err := c.Read(ctx) // answers the ping now, after the subscribe
	if err != nil {
		t.Fatalf("the connection ended instead of sending the snapshot: %v", err)
	}
	var fr struct{ Type string }
	if err := json.Unmarshal(data, &fr); err != nil || fr.Type != "snapshot" {
		t.Fatalf("first frame %s (%v), want the snapshot", data, err)
	}
}
