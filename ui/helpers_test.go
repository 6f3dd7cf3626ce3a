package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/hub"
	"routehound/internal/testkit"
)

const (
	dashToken   = "dashboard-token-0123456789"
	adminToken  = "admin-token-0123456789abcd"
	driverToken = "driver-token-0123456789abc"
)

// fixture is the dashboard alone — a ui.UI over a real engine and hub,
// behind its own mux — not the appliance (internal/apptest), on purpose:
// these tests are of package ui, and need what the appliance does not give
// them. They read the engine through ui's own SnapshotReader (what a write
// made durable shows at once; the appliance reads the replica, which
// follows), tune the hub past what the configuration file sets
// (MaxResyncs), mark cookies Secure without a TLS listener, and look at the
// package's internals (frames, sessions, counters); and a test of package
// ui cannot import appliance (which imports ui). The dashboard as the
// appliance wires it is tested in appliance (dashread_test.go) and
// benchmarked there (dashread_bench_test.go).
type fixture struct {
	t   *testing.T
	e   *engine.Engine
	h   *hub.Hub
	u   *UI
	srv *httptest.Server
}

func newFixture(t *testing.T, opt Options) *fixture {
	t.Helper()
	return newFixtureHub(t, opt, hub.Config{})
}

func newFixtureHub(t *testing.T, opt Options, hcfg hub.Config) *fixture {
	t.Helper()
	e, _ := testkit.Engine(t, nil)
	h := hub.New(e, hcfg, nil)
	opt.Engine, opt.Hub = e, h
	opt.Role = func(tok string) (string, bool) {
		r, ok := map[string]string{dashToken: "dashboard", adminToken: "admin", driverToken: "driver"}[tok]
		return r, ok
	}
	if opt.FrameInterval == 0 {
		opt.FrameInterval = 50 * time.Millisecond
	}
	u := New(opt)
	mux := http.NewServeMux()
	mux.Handle("/ui/", u)
	mux.HandleFunc("GET /{$}", RedirectHome)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { // before testkit's cleanup closes the engine and the wal
		srv.CloseClientConnections()
		h.Close()
		u.Close()
		srv.Close()
	})
	return &fixture{t: t, e: e, h: h, u: u, srv: srv}
}

// client is a browser: a cookie jar, no redirects followed.
func (f *fixture) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in:\n%.2000s", body)
	}
	return m[1]
}

// get fetches a path and returns status and body.
func (f *fixture) get(c *http.Client, path string) (int, string, http.Header) {
	f.t.Helper()
	resp, err := c.Get(f.srv.URL + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (f *fixture) post(c *http.Client, path string, form url.Values) (int, string, http.Header) {
	f.t.Helper()
	resp, err := c.PostForm(f.srv.URL+path, form)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// login logs c in with token and returns the session's CSRF token.
func (f *fixture) login(c *http.Client, token string) string {
	f.t.Helper()
	_, body, _ := f.get(c, "/ui/login")
	st, body, h := f.post(c, "/ui/login", url.Values{"csrf": {csrfOf(f.t, body)}, "token": {token}})
	if st != http.StatusSeeOther || h.Get("Location") != "/ui/" {
		f.f("login: %d %s\n%s", st, h.Get("Location"), body)
	}
	_, body, _ = f.get(c, "/ui/")
	return csrfOf(f.t, body)
}

func (f *fixture) f(format string, args ...any) { f.t.Helper(); f.t.Fatalf(format, args...) }

// put writes a user-table key through the engine.
func (f *fixture) put(table, key, value string) engine.WriteResult {
	f.t.Helper()
	r, err := f.e.PutKey(context.Background(), engine.Write{Table: table, Key: key, Value: []byte(value), IfVersion: engine.AnyVersion})
	if err != nil {
		f.t.Fatal(err)
	}
	// Answered by the journal, the record is published (and the fsync's
	// cost observed) once the log's fsync covers it: pages read both.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.e.WaitDurable(ctx, r.LSN); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// points sends one point per driver and waits until it is durable.
func (f *fixture) points(seq uint64, drivers ...string) {
	f.t.Helper()
	for i, d := range drivers {
		v := fmt.Sprintf(`{"seq":%d,"lat":%f,"lng":%f,"ts":%q,"speed_kmh":42.5,"heading":90}`,
			seq, 48.1+float64(i)*0.01, 11.5+float64(i)*0.01, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := f.e.SubmitPoints(context.Background(), d, []engine.Point{{Seq: seq, Value: []byte(v)}}); err != nil {
			f.t.Fatal(err)
		}
	}
	for _, d := range drivers {
		f.waitFor(func() bool { s, _ := f.e.DriverDurableSeq(d); return s >= seq }, "driver "+d+" durable")
	}
}

func (f *fixture) waitFor(cond func() bool, what string) {
	f.t.Helper()
	testkit.Eventually(f.t, 5*time.Second, what, cond)
}

// liveStream is an open /ui/live/… connection.
type liveStream struct {
	resp   *http.Response
	frames chan sseMsg
}

type sseMsg struct {
	event, id string
	data      string
}

func (f *fixture) live(c *http.Client, path string) *liveStream {
	f.t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		f.t.Fatalf("live %s: %d %s", path, resp.StatusCode, b)
	}
	ls := &liveStream{resp: resp, frames: make(chan sseMsg, 1024)}
	go func() {
		defer close(ls.frames)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		var m sseMsg
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if m.data != "" || m.event != "" {
					ls.frames <- m
				}
				m = sseMsg{}
			case strings.HasPrefix(line, "data: "):
				m.data = line[6:]
			case strings.HasPrefix(line, "event: "):
				m.event = line[7:]
			case strings.HasPrefix(line, "id: "):
				m.id = line[4:]
			}
		}
	}()
	f.t.Cleanup(func() { resp.Body.Close() })
	return ls
}

// next waits for the next data frame.
func (ls *liveStream) next(t *testing.T, within time.Duration) (frame, sseMsg) {
	t.Helper()
	select {
	case m, ok := <-ls.frames:
		if !ok {
			t.Fatal("live stream ended")
		}
		var fr frame
		if m.event == "" {
			if err := json.Unmarshal([]byte(m.data), &fr); err != nil {
				t.Fatalf("frame %q: %v", m.data, err)
			}
		}
		return fr, m
	case <-time.After(within):
		t.Fatalf("no live frame within %v", within)
	}
	return frame{}, sseMsg{}
}

// keys counts a table's keys.
func (f *fixture) keys(table string) int64 {
	f.t.Helper()
	snap, err := f.e.Snapshot()
	if err != nil {
		f.t.Fatal(err)
	}
	defer snap.Close()
	ti, _, err := snap.Table(table)
	if err != nil {
		f.t.Fatal(err)
	}
	return ti.Keys
}

// pointsAsync sends one point per driver without waiting.
func (f *fixture) pointsAsync(seq uint64, drivers ...string) {
	f.t.Helper()
	for i, d := range drivers {
		v := fmt.Sprintf(`{"seq":%d,"lat":%f,"lng":%f,"ts":%q,"speed_kmh":10,"heading":0}`,
			seq, 48.1+float64(i)*0.01, 11.5+float64(seq)*0.0001, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := f.e.SubmitPoints(context.Background(), d, []engine.Point{{Seq: seq, Value: []byte(v)}}); err != nil {
			f.t.Fatal(err)
		}
	}
}

func writeDelete(table, key string) engine.Write {
	return engine.Write{Table: table, Key: key, Delete: true, IfVersion: engine.AnyVersion}
}
