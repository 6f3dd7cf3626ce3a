//go:build linux

package tests

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestRoutesPageLiveInBrowser: the Routes page, open in a real headless
// Chromium, shows a stop turn from pending to arrived (with its delay)
// when a driver's point reaches it, without a reload; the Channels page
// shows the fleet-events consumer on the events lane's card.
func TestRoutesPageLiveInBrowser(t *testing.T) {
	chrome := browserPath(t)
	h := newHarness(t, "[ui]\nframe_interval = \"200ms\"\n")
	h.start()
	defer h.stop()
	ctx0 := context.Background()
	asg := map[string]any{"driver": "van-ui", "stops": []any{
		map[string]any{"id": "s1", "lat": 52.0, "lng": 13.0, "eta": "2026-12-07T10:00:00Z"},
		map[string]any{"id": "s2", "lat": 52.01, "lng": 13.0},
	}}
	if r, err := h.do(ctx0, http.MethodPut, "/v1/assignments/r-ui", "dispatch", "ui-1", asg); err != nil || r.status != http.StatusCreated {
		t.Fatalf("assign: %v %v", r, err)
	}

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1366, 900), chromedp.Flag("disable-gpu", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx0, opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	step := func(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(tab, within)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) string {
		sctx, cancel := context.WithTimeout(tab, time.Second)
		defer cancel()
		s, _ := chromedp.Run(sctx, chromedp.Evaluate[string](js))
		return s
	}
	step("log in", 15*time.Second,
		chromedp.Navigate(h.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), h.tokens["dashboard"]),
		chromedp.Submit(chromedp.CSS(`form`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-lane="events"] [data-field="consumer-lag"]`)),
	)
	step("open Routes", 10*time.Second,
		chromedp.Navigate(h.base+"/ui/routes"),
		chromedp.WaitVisible(chromedp.CSS(`#live-state.live`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-route="r-ui"]`)),
	)
	status := `(function(){var e=document.querySelector('[data-route="r-ui"] [data-stop="s1"]');return e?e.getAttribute("data-status")+" "+e.className+" "+e.textContent.trim().replace(/\s+/g," "):"";})()`
	// The consumer writes the route's progress shortly after the
	// assignment: both stops pending.
	deadline := time.Now().Add(5 * time.Second)
	for s := eval(status); s == "" || s[:7] != "pending"; s = eval(status) {
		if time.Now().After(deadline) {
			t.Fatalf("stop s1 before any point: %q", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 12 minutes late at stop 1.
	pt := []any{map[string]any{"seq": 1, "lat": 52.0002, "lng": 13.0, "ts": "2026-12-07T10:12:00Z"}}
	if r, err := h.do(ctx0, http.MethodPost, "/v1/drivers/van-ui/locations", "driver", "", pt); err != nil || r.status != http.StatusAccepted {
		t.Fatalf("post point: %v %v", r, err)
	}
	t0 := time.Now()
	var s string
	for s = eval(status); s != "arrived stop warn s1 +12m"; s = eval(status) {
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("stop s1 after the point: %q, want arrived, amber, +12m", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the Routes page showed the arrival %v after the point was accepted", time.Since(t0).Round(time.Millisecond))
	if s2 := eval(`document.querySelector('[data-route="r-ui"] [data-stop="s2"]').getAttribute("data-status")`); s2 != "pending" {
		t.Errorf("stop s2: %q", s2)
	}
	if st := eval(`document.getElementById("live-state").textContent.trim()`); st != "live" {
		t.Errorf("live state %q", st)
	}
	step("Channels", 10*time.Second, chromedp.Navigate(h.base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(`[data-lane="events"] [data-field="events-rate"]`)))
	if got := eval(`document.querySelector('[data-lane="events"] [data-field="events-rate"]').textContent`); got == "" {
		t.Errorf("no events/s on the events card")
	}
}
