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

// TestTablePageResyncInBrowser: the dashboard's table page, live through
// /v1/client.js over its session, applies a resync by replacing its rows.
// Its subscription is made to resume from further back than the hub
// replays (hub.max_catch_up 2): the server answers a resync and a fresh
// snapshot, and the page shows exactly the table again (a row it lost comes
// back, a row it should not have goes), then stays live.
func TestTablePageResyncInBrowser(t *testing.T) {
	chrome := browserPath(t)
	h := newHarness(t, "[hub]\nmax_catch_up = 2\n")
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
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, expr string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return s
	}
	for i := 1; i <= 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := h.do(ctx, "PUT", fmt.Sprintf("/v1/tables/rs/keys/k%d", i), "dashboard", "", map[string]int{"n": i})
		cancel()
		if err != nil || r.status/100 != 2 {
			t.Fatalf("PUT k%d: %v %v", i, r, err)
		}
	}
	step("log in",
		chromedp.Navigate(h.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), h.tokens["dashboard"]),
		chromedp.Submit(chromedp.CSS(`form`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-lane="driver"]`)),
	)
	step("open the table page", chromedp.Navigate(h.base+"/ui/tables/rs"), chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)))
	rows := `[...document.querySelectorAll("#key-rows tr")].map(r => r.dataset.key).join(",")`
	if got := eval("rows", rows); got != "k1,k2,k3,k4,k5" {
		t.Fatalf("the page shows %s", got)
	}
	// The page's rows drift from the table (one lost, one that is not in
	// it), and its subscription resumes from LSN 0: five records behind.
	eval("drift", `(function(){
		document.querySelector('[data-key="k2"]').remove();
		document.getElementById("key-rows").insertAdjacentHTML("beforeend", '<tr data-key="ghost"><td>ghost</td></tr>');
		const sub = document.getElementById("key-table").subscription;
		sub.lsn = 0;
		sub.reconnect();
		return "ok";
	})()`)
	deadline := time.Now().Add(5 * time.Second)
	for eval("resync", `String(document.getElementById("key-table").subscription.snapshots)`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("no resync within 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := eval("rows", rows); got != "k1,k2,k3,k4,k5" {
		t.Fatalf("after the resync the page shows %s, want k1..k5", got)
	}
	if got := eval("value", `document.querySelector('[data-key="k2"] [data-field="value"]').textContent`); got != `{"n":2}` {
		t.Fatalf("k2's value after the resync: %s", got)
	}
	// Still live after it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := h.do(ctx, "DELETE", "/v1/tables/rs/keys/k3", "dashboard", "", nil); err != nil || r.status != 200 {
		t.Fatalf("DELETE k3: %v %v", r, err)
	}
	step("the delete after the resync", chromedp.WaitNotPresent(chromedp.CSS(`[data-key="k3"]`)))

	// The client's session mode over SSE, from this page: a same-origin
	// GET carries no Origin, so the page's CSRF token goes in
	// X-RouteHound-CSRF; without it the stream is refused (cross_origin).
	awaitEval := func(what, body string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string]("(async () => {"+body+"})()", chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return s
	}
	if got := awaitEval("a session GET without the CSRF header", `
		const r = await fetch("/ui/v1/tables/rs/events");
		return r.status + " " + (await r.json()).code;`); got != "403 cross_origin" {
		t.Fatalf("the event stream without the page's CSRF header answered %s, want 403 cross_origin", got)
	}
	awaitEval("subscribe over SSE with the session", `
		const m = await import("/v1/client.js");
		window.rh2 = m.connect({session: {csrf: document.getElementById("key-table").dataset.csrf}});
		window.s2 = rh2.subscribe("rs", {transport: "sse"});
		return "ok";`)
	deadline = time.Now().Add(5 * time.Second)
	for eval("session SSE", `String(s2.state === "live" && s2.rows.has("k1") && !s2.rows.has("k3"))`) != "true" {
		if time.Now().After(deadline) {
			t.Fatalf("the session's SSE subscription: %s", eval("state", `s2.state + " " + [...s2.rows.keys()].join(",")`))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := awaitEval("put with the session", `
		const r = await rh2.put("rs", "k9", {n: 9}, {ifVersion: 0});
		try { await rh2.put("rs", "k9", {n: 10}, {ifVersion: 0}); return "second create accepted"; }
		catch (e) { return r.version + " " + e.code; }`); got != "1 version_conflict" {
		t.Fatalf("session puts answered %q", got)
	}
	step("the session's put, live on the page", chromedp.WaitVisible(chromedp.CSS(`[data-key="k9"]`)))
	deadline = time.Now().Add(5 * time.Second)
	for eval("session SSE change", `String(s2.rows.get("k9")?.value.n === 9)`) != "true" {
		if time.Now().After(deadline) {
			t.Fatal("the session's SSE subscription did not get its own put")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
