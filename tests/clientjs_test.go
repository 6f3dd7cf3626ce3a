//go:build linux

package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestClientModuleInBrowser: the browser client GET /v1/client.js in a real
// headless Chromium, over the WebSocket and over SSE: the snapshot, a put
// from another session appearing live, writes with If-Match (a stale one
// refused with version_conflict), and a dropped connection that reconnects
// and resumes from its last LSN (no second snapshot) with what was put
// while it was away.
func TestClientModuleInBrowser(t *testing.T) {
	chrome := browserPath(t)
	h := newHarness(t, "")
	h.start()
	defer h.stop()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	// eval runs an async function body in the page and returns its result.
	eval := func(what, body string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string]("(async () => {"+body+"})()", chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return s
	}
	// until polls an expression of the page until it is true.
	until := func(what, cond string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for eval(what, "return String(Boolean("+cond+"))") != "true" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s still false after 5 s (state %s)", what, cond, eval("state", "return window.sub.state + ' ' + JSON.stringify(window.states)"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	put := func(table, key, body string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := h.do(ctx, "PUT", "/v1/tables/"+table+"/keys/"+key, "dashboard", "", []byte(body))
		if err != nil || r.status/100 != 2 {
			t.Fatalf("PUT %s/%s: %v %v", table, key, r, err)
		}
	}

	// A same-origin page to run the module in.
	nctx, cancel := context.WithTimeout(browser, 10*time.Second)
	if err := chromedp.Do(nctx, chromedp.Navigate(h.base+"/ui/login")); err != nil {
		t.Fatal(err)
	}
	cancel()
	for _, transport := range []string{"ws", "sse"} {
		table := "cj-" + transport
		put(table, "k0", `{"n":0}`)
		eval("subscribe over "+transport, fmt.Sprintf(`
			const m = await import("/v1/client.js");
			window.rh = m.connect({token: %q});
			window.states = [];
			window.sub = window.rh.subscribe(%q, {transport: %q, minBackoffMs: 300, maxBackoffMs: 1000,
				onState: (s, why) => window.states.push(s + (why ? ": " + why : ""))});
			return "ok";`, h.tokens["dashboard"], table, transport))
		until(transport+": the snapshot", `sub.state === "live" && sub.rows.get("k0")?.value.n === 0 && sub.snapshots === 1`)

		// A put from another session shows live.
		put(table, "k1", `{"n":1}`)
		until(transport+": another session's put", `sub.rows.get("k1")?.value.n === 1`)

		// Writes with If-Match: the current version passes, a stale one is refused.
		if got := eval(transport+": put with If-Match", fmt.Sprintf(`
			const r = await rh.put(%q, "k1", {n: 2}, {ifVersion: 1});
			try { await rh.put(%q, "k1", {n: 3}, {ifVersion: 1}); return "stale put accepted"; }
			catch (e) { return r.version + " " + e.code + " " + e.status; }`, table, table)); got != "2 version_conflict 409" {
			t.Fatalf("%s: If-Match puts answered %q, want the new version then version_conflict", transport, got)
		}
		until(transport+": own put", `sub.rows.get("k1")?.value.n === 2 && sub.rows.get("k1")?.version === 2`)
		eval(transport+": delete with If-Match", fmt.Sprintf(`await rh.delete(%q, "k0", {ifVersion: 1}); return "ok";`, table))
		until(transport+": own delete", `!sub.rows.has("k0")`)

		// The connection drops; a put lands meanwhile; the subscription
		// reconnects after its backoff and resumes from its LSN.
		eval(transport+": drop the connection", fmt.Sprintf(`
			const before = sub.lsn;
			sub.reconnect();
			await rh.put(%q, "k2", {n: 4});
			return String(before);`, table))
		until(transport+": resumed with the missed put", `sub.state === "live" && sub.rows.get("k2")?.value.n === 4`)
		if got := eval(transport+": counters", `return sub.snapshots + " " + sub.resumes + " " + [...sub.rows.keys()].sort().join(",")`); got != "1 1 k1,k2" {
			t.Fatalf("%s: snapshots, resumes, keys = %q; want one snapshot, one resume, k1,k2 (states %s)", transport, got,
				eval("states", "return JSON.stringify(window.states)"))
		}
		if got := eval(transport+": states", `return JSON.stringify(window.states)`); !slices.Contains([]string{
			`["live","reconnecting: closed by the client","live"]`,
		}, got) {
			t.Fatalf("%s: states %s; want live, reconnecting, live", transport, got)
		}
		eval(transport+": close", `sub.close(); return "ok"`)
	}
}
