package api_test

// Tests of issue 18's hardening (part B): seq bounds and the admin's
// driver reset, request body deadlines and connection caps, byte-bounded
// pages and the per-value limit, and the driver stream's admission.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/api"
	"routehound/config"
	"routehound/internal/apptest"
	"routehound/internal/testkit"
)

const maxSeq = uint64(1) << 53

func seqPoint(seq uint64) string {
	return fmt.Sprintf(`{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-11-23T08:00:00Z"}`, seq)
}

// TestSeqAboveMaxRefused: a seq above 2^53 is refused with invalid_field
// on the HTTP path (alone, in a batch, on the fast and the JSON path) and
// nothing of it is stored, so it cannot poison the driver's later points.
func TestSeqAboveMaxRefused(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		seqPoint(maxSeq + 1),
		seqPoint(18446744073709551615),
		"[" + seqPoint(1) + "," + seqPoint(maxSeq+1) + "]",
		"[ " + seqPoint(1) + " , " + strings.Replace(seqPoint(maxSeq+1), ":", ": ", 1) + " ]", // the JSON path
	} {
		r := f.do(t, "POST", "/v1/drivers/van-9/locations", tok(api.RoleDriver), body)
		wantError(t, r, http.StatusBadRequest, "invalid_field")
		if !strings.Contains(string(r.body), "seq") {
			t.Fatalf("%s: refusal %s does not name seq", body, r.body)
		}
	}
	r := f.do(t, "POST", "/v1/drivers/van-9/locations", tok(api.RoleDriver), seqPoint(5))
	wantStatus(t, r, http.StatusAccepted)
	if a := num[int](t, object(t, r)["accepted"]); a != 1 {
		t.Fatalf("seq 5 after the refusals: accepted %d, want 1", a)
	}
}

// TestAdminResetsDriver: a driver whose seq jumped to 2^53 gets every
// later point answered as a duplicate; POST /v1/admin/drivers/{d}/reset
// (admin only) makes its next point count again.
func TestAdminResetsDriver(t *testing.T) {
	f := newFixture(t)
	post := func(seq uint64) (accepted, dups int) {
		t.Helper()
		r := f.do(t, "POST", "/v1/drivers/van-7/locations", tok(api.RoleDriver), seqPoint(seq))
		wantStatus(t, r, http.StatusAccepted)
		m := object(t, r)
		return num[int](t, m["accepted"]), num[int](t, m["duplicates"])
	}
	if a, _ := post(maxSeq); a != 1 {
		t.Fatalf("seq 2^53: accepted %d, want 1", a)
	}
	f.waitDurableSeq(t, "van-7", maxSeq)
	if _, d := post(3); d != 1 {
		t.Fatalf("seq 3 after 2^53: duplicates %d, want 1", d)
	}
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/van-7/reset", tok(api.RoleDispatch), nil), http.StatusForbidden, "forbidden")
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/no-such-driver/reset", tok(api.RoleAdmin), nil), http.StatusNotFound, "not_found")
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/bad%20name/reset", tok(api.RoleAdmin), nil), http.StatusBadRequest, "bad_name")
	r := f.do(t, "POST", "/v1/admin/drivers/van-7/reset", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r, "driver", "lsn"); string(m["driver"]) != `"van-7"` {
		t.Fatalf("reset answer %s", r.body)
	}
	if a, _ := post(3); a != 1 {
		t.Fatalf("seq 3 after the reset: accepted %d, want 1", a)
	}
}

// waitDurableSeq waits until the driver's durable seq reaches seq.
func (f *fixture) waitDurableSeq(t testing.TB, driver string, seq uint64) {
	t.Helper()
	testkit.Eventually(t, streamWait, "driver "+driver+"'s durable seq", func() bool {
		cur, err := f.eng.DriverDurableSeq(driver)
		return err == nil && cur >= seq
	})
}

// TestDriverStreamSeqAboveMaxRefused: the driver stream refuses a frame
// with a seq above 2^53 (invalid_field) and takes the next frame.
func TestDriverStreamSeqAboveMaxRefused(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	for _, pts := range []string{seqPoint(maxSeq + 1), seqPoint(2)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-3","points":`+pts+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	var m struct {
		Code     string `json:"code"`
		Accepted *int   `json:"accepted"`
	}
	_, b, err := c.Read(ctx)
	if err != nil || json.Unmarshal(b, &m) != nil || m.Code != "invalid_field" {
		t.Fatalf("first frame answered %s (%v), want invalid_field", b, err)
	}
	_, b, err = c.Read(ctx)
	m.Code = ""
	if err != nil || json.Unmarshal(b, &m) != nil || m.Accepted == nil || *m.Accepted != 1 {
		t.Fatalf("second frame answered %s (%v), want accepted 1", b, err)
	}
}

// TestDriverStreamRefusesBeforeDecodingWhenLaneFull: with the driver lane
// full, a stream frame is refused lane_full before its points are decoded
// (a malformed frame too), as POST /v1/drivers/{d}/locations refuses it:
// a flood over the stream costs no decoding CPU.
func TestDriverStreamRefusesBeforeDecodingWhenLaneFull(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Driver.QueueBound = 50
		c.Lanes.Driver.FlushWithin = time.Minute // nothing drains: the lane stays full
	}})
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	bad := `[{"seq":1,"lat":999,"lng":13.4,"ts":"2026-11-23T08:00:00Z"}]` // invalid_field when decoded
	for _, frame := range []string{pointsJSON(1, 50), bad} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-1","points":`+frame+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"accepted":50`) {
		t.Fatalf("first frame: %s (%v), want accepted 50", b, err)
	}
	_, b, err := c.Read(ctx)
	var m struct {
		Code string `json:"code"`
	}
	if err != nil || json.Unmarshal(b, &m) != nil || m.Code != "lane_full" {
		t.Fatalf("malformed frame on a full lane answered %s (%v), want lane_full before decoding", b, err)
	}
	// The same body over HTTP: the same answer.
	wantError(t, f.do(t, "POST", "/v1/drivers/van-2/locations", tok(api.RoleDriver), bad), http.StatusTooManyRequests, "lane_full")
}

// TestDriverStreamIdleTimeout: a driver stream that keeps sending frames
// stays open past the idle timeout; one that goes silent is closed.
func TestDriverStreamIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.HTTP.IdleTimeout = idle
		c.Hub.Heartbeat = 100 * time.Millisecond // pings, answered by the reading client
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	frames := make(chan error, 64)
	go func() {
		for {
			_, _, err := c.Read(ctx)
			frames <- err
			if err != nil {
				return
			}
		}
	}()
	// Busy for 3 idle timeouts: a frame every idle/4.
	start := time.Now()
	for seq := uint64(1); time.Since(start) < 3*idle; seq++ {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-4","points":`+seqPoint(seq)+`}`)); err != nil {
			t.Fatalf("write after %v: %v (closed while busy)", time.Since(start), err)
		}
		time.Sleep(idle / 4)
	}
	// Silent: closed within a few idle timeouts.
	deadline := time.After(streamWait)
	for {
		select {
		case err := <-frames:
			if err == nil {
				continue
			}
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("stream ended with %v, want a policy-violation close (idle)", err)
			}
			return
		case <-deadline:
			t.Fatal("a silent driver stream is still open after the idle timeout")
		}
	}
}

// trickle opens a raw connection to addr, sends head (a request's line and
// headers announcing a 1000-byte body) and then one body byte every 20 ms,
// and reports how long the server took to close the connection (false
// when it was still open after limit).
func trickle(t *testing.T, addr, head string, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, streamWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		buf := make([]byte, 4096)
		for {
			c.SetReadDeadline(time.Now().Add(limit + time.Second))
			if _, err := c.Read(buf); err != nil {
				return // EOF or reset: the server closed it (or our own deadline)
			}
		}
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for sent := 0; sent < 999; {
		select {
		case <-closed:
			return time.Since(start), true
		case <-deadline.C:
			return time.Since(start), false
		case <-tick.C:
			if _, err := c.Write([]byte("x")); err != nil {
				<-closed
				return time.Since(start), true
			}
			sent++
		}
	}
	t.Fatal("the whole body was sent before the limit")
	return 0, false
}

func postHead(path, token string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: routehound\r\nAuthorization: Bearer " + token +
		"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
}

// TestTricklingBodyIsCut: a body that trickles in is cut at
// http.body_read_timeout on the API listener, authorized or not (after a
// 401 net/http reads the unread body away), and on the phone listener.
func TestTricklingBodyIsCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := apptest.Start(t, apptest.Options{Config: func(c *config.Config) {
		c.Tokens = []config.Token{{Role: "driver", Token: tok(api.RoleDriver)}, {Role: "admin", Token: tok(api.RoleAdmin)}}
		c.HTTP.BodyReadTimeout = timeout
		c.Osmand.Enabled = true
		c.Osmand.Listen = "127.0.0.1:0"
	}})
	host := strings.TrimPrefix(s.URL, "http://")
	for name, c := range map[string]struct{ addr, head string }{
		"driver POST":      {host, postHead("/v1/drivers/van-1/locations", tok(api.RoleDriver))},
		"unknown token":    {host, postHead("/v1/drivers/van-1/locations", "not-a-token")},
		"dashboard login":  {host, strings.Replace(postHead("/ui/login", ""), "Authorization: Bearer \r\n", "", 1)},
		"phone listener":   {s.App.Osmand.Addr().String(), postHead("/", "")},
		"table PUT, admin": {host, strings.Replace(postHead("/v1/tables/t/keys/k", tok(api.RoleAdmin)), "POST", "PUT", 1)},
	} {
		t.Run(name, func(t *testing.T) {
			took, closed := trickle(t, c.addr, c.head, 10*timeout)
			if !closed {
				t.Fatalf("a body trickling for %v still holds the connection (body_read_timeout %v)", took, timeout)
			}
			if took < timeout {
				t.Fatalf("closed after %v, before body_read_timeout %v", took, timeout)
			}
		})
	}
}

// TestStreamsOutliveBodyDeadline: the body deadline is for request bodies:
// an SSE stream, a WebSocket subscription and a driver stream all carry
// changes well past it.
func TestStreamsOutliveBodyDeadline(t *testing.T) {
	const timeout = 200 * time.Millisecond
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.HTTP.BodyReadTimeout = timeout }})
	sse := f.mustSSE(t, "/v1/tables/t/events", tok(api.RoleDashboard))
	defer sse.close()
	for ev := sse.next(t); ev.event != "snapshot"; ev = sse.next(t) {
	}
	ws := f.mustWS(t, tok(api.RoleDashboard))
	ws.subscribe(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	ds := f.dialDriverStream(t, ctx)
	time.Sleep(3 * timeout) // past the deadline a body would have had
	wantStatus(t, f.do(t, "PUT", "/v1/tables/t/keys/k", tok(api.RoleDashboard), `{"v":1}`), http.StatusCreated)
	if ev := sse.next(t); ev.event != "put" {
		t.Fatalf("SSE: %+v, want the put", ev)
	}
	if fr := ws.next(t); fr.Type != "change" {
		t.Fatalf("WebSocket: %+v, want the change", fr)
	}
	if err := ds.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-5","points":`+seqPoint(1)+`}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ds.Read(ctx); err != nil || !strings.Contains(string(b), `"accepted":1`) {
		t.Fatalf("driver stream: %s (%v), want the ack", b, err)
	}
}

// TestConnectionCap: past http.max_conns a new connection is closed at
// once and counted in routehound_connections_refused_total; once
// connections close, new ones are served again.
func TestConnectionCap(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.HTTP.MaxConns = 3 }})
	f.client.Transport.(*http.Transport).CloseIdleConnections()
	host := strings.TrimPrefix(f.url, "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 3 { // idle connections, within the cap
		c, err := net.DialTimeout("tcp", host, streamWait)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The server accepts in order: once the 3 are in, the 4th is closed
	// without a byte.
	c, err := net.DialTimeout("tcp", host, streamWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(streamWait))
	if n, err := c.Read(make([]byte, 64)); err == nil || n > 0 {
		t.Fatalf("the connection past the cap was answered (%d bytes, %v)", n, err)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	var body string
	testkit.Eventually(t, streamWait, "a /metrics answer once connections closed", func() bool {
		r, err := f.send("GET", "/metrics", tok(api.RoleAdmin), nil)
		body = string(r.body)
		return err == nil && r.status == http.StatusOK
	})
	// At least the one above (an attempt of Eventually may have been
	// refused too, before the server saw the held connections close).
	if m := regexp.MustCompile(`routehound_connections_refused_total\{cap="max_conns",listener="http"\} ([0-9]+)`).FindStringSubmatch(body); m == nil || m[1] == "0" {
		t.Fatalf("/metrics does not count the refused connection:\n%s", grepLines(body, "connections_refused"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHeaderBytesCapped: request headers are capped at 64 KiB: a larger
// header gets 431 (or, when the server closes before the client has sent
// it all, a reset), never an answer; a 32 KiB one is served.
func TestHeaderBytesCapped(t *testing.T) {
	f := newFixture(t)
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(f.url, "http://"), streamWait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(streamWait))
	go c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"))
	b, _ := io.ReadAll(c)
	if strings.Contains(string(b), " 200 ") || (len(b) > 0 && !strings.Contains(string(b), " 431 ")) {
		t.Fatalf("a 100 KiB header answered %.80q, want 431 or a closed connection", b)
	}
	wantStatus(t, f.do(t, "GET", "/healthz", "", nil, "X-Big", strings.Repeat("a", 32<<10)), http.StatusOK)
}

// bigTable fills table with n keys of about size bytes each (a JSON
// string) and returns the value.
func (f *fixture) bigTable(t *testing.T, table string, n, size int) string {
	t.Helper()
	v := `"` + strings.Repeat("v", size-2) + `"`
	for i := range n {
		f.putKey(t, table, fmt.Sprintf("k%03d", i), v)
	}
	return v
}

// TestPagesCutAtByteBudget: GET /v1/tables/T, /v1/log and the WebSocket
// snapshot cut their pages at http.max_page_bytes (here 1 MiB), not only
// at their row limit, and the usual next cursor reads the rest.
func TestPagesCutAtByteBudget(t *testing.T) {
	const budget = 1 << 20
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) { c.HTTP.MaxPageBytes = budget }})
	before := f.eng.DurableLSN()
	f.bigTable(t, "big", 24, 200<<10) // 4.8 MB in all

	// The table listing.
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 24 {
			t.Fatal("next never became null")
		}
		r := f.do(t, "GET", "/v1/tables/big?limit=1000&after="+after, tok(api.RoleDashboard), nil)
		wantStatus(t, r, http.StatusOK)
		if len(r.body) > budget+64<<10 {
			t.Fatalf("page of %d bytes, over the budget of %d", len(r.body), budget)
		}
		var p struct {
			Rows []struct{ Key string } `json:"rows"`
			Next *string                `json:"next"`
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		for _, row := range p.Rows {
			keys = append(keys, row.Key)
		}
		if p.Next == nil {
			break
		}
		after = *p.Next
	}
	if len(keys) != 24 || keys[0] != "k000" || keys[23] != "k023" {
		t.Fatalf("pages held %d keys %v, want k000..k023", len(keys), keys)
	}

	// The log, with and without a table filter (the puts were answered by
	// the journal; published just after).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.eng.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"", "&table=big"} {
		var got int
		from := before
		for pages := 0; ; pages++ {
			if pages > 48 {
				t.Fatal("log: next never became null")
			}
			r := f.do(t, "GET", fmt.Sprintf("/v1/log?limit=1000&after=%d%s", from, q), tok(api.RoleAdmin), nil)
			wantStatus(t, r, http.StatusOK)
			if len(r.body) > budget+64<<10 {
				t.Fatalf("log page of %d bytes, over the budget of %d", len(r.body), budget)
			}
			var p struct {
				Records []struct{ Table string } `json:"records"`
				Next    *uint64                  `json:"next"`
			}
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatal(err)
			}
			for _, rec := range p.Records {
				if rec.Table == "big" {
					got++
				}
			}
			if p.Next == nil {
				break
			}
			from = *p.Next
		}
		if got != 24 {
			t.Fatalf("log%s: %d records of big, want 24", q, got)
		}
	}

	// The WebSocket snapshot.
	ws := f.mustWS(t, tok(api.RoleDashboard))
	ws.send(t, map[string]any{"op": "subscribe", "table": "big"})
	var rows, frames int
	for {
		fr := ws.next(t)
		if fr.Type != "snapshot" {
			t.Fatalf("frame %v, want a snapshot page", fr)
		}
		if len(fr.raw) > budget+64<<10 {
			t.Fatalf("snapshot frame of %d bytes, over the budget of %d", len(fr.raw), budget)
		}
		rows += len(fr.Rows)
		frames++
		if fr.Last {
			break
		}
	}
	if rows != 24 || frames < 5 {
		t.Fatalf("snapshot: %d rows in %d frames, want 24 rows in 5 or more", rows, frames)
	}
}

// TestValueSizeLimit: a user table's value is at most http.max_value_bytes
// (256 KiB): over it, 413 value_too_large over HTTP and a value_too_large
// error frame over the WebSocket, and nothing is written.
func TestValueSizeLimit(t *testing.T) {
	f := newFixture(t)
	before := f.eng.DurableLSN()
	over := `"` + strings.Repeat("v", 256<<10) + `"`
	r := f.do(t, "PUT", "/v1/tables/u/keys/big", tok(api.RoleDashboard), over)
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a value of 256 KiB + 2 bytes: %d %.120s, want 413", r.status, r.body)
	}
	wantError(t, r, http.StatusRequestEntityTooLarge, "value_too_large")
	ws := f.mustWS(t, tok(api.RoleDashboard))
	ws.send(t, map[string]any{"op": "put", "table": "u", "key": "big", "value": json.RawMessage(over), "id": "w1"})
	wantWSError(t, ws.next(t), "value_too_large", "w1")
	control := f.controlWrite(t, "after-big")
	f.wantOnlyControl(t, before, control)
	at := `"` + strings.Repeat("v", 256<<10-2) + `"` // exactly 256 KiB
	wantStatus(t, f.do(t, "PUT", "/v1/tables/u/keys/big", tok(api.RoleDashboard), at), http.StatusCreated)
}
