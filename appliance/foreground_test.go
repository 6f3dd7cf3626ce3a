package appliance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Who makes the elastic driver limit eligible (engine/elastic.go): an
// actor's request (a read too), not an anonymous page, a metrics scrape or
// a driver; watchers while they watch, not the server's own fleet feed,
// which outlives the page that started it.
func TestWhoMakesTheDriverLimitEligible(t *testing.T) {
	a, err := Start(loopbackConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	get := func(c *http.Client, path, token string) {
		t.Helper()
		req, _ := http.NewRequest("GET", a.URL()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	quiet := func(what string) {
		t.Helper()
		if at := a.Engine.LastForeground(); !at.IsZero() {
			t.Fatalf("%s noted another actor (at %v)", what, at)
		}
	}
	quiet("the start")
	get(http.DefaultClient, "/ui/login", "")
	quiet("an anonymous GET /ui/login")
	get(http.DefaultClient, "/metrics", a.Token("admin"))
	quiet("a metrics scrape")
	req, _ := http.NewRequest("POST", a.URL()+"/v1/drivers/van-1/locations", strings.NewReader(`[{"seq":1,"lat":52.5,"lng":13.4,"ts":"2026-12-07T10:00:00Z"}]`))
	req.Header.Set("Authorization", "Bearer "+a.Token("driver"))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a driver's post: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	quiet("a driver's post")
	get(http.DefaultClient, "/v1/assignments/none", a.Token("dispatch"))
	if a.Engine.LastForeground().IsZero() {
		t.Fatal("a dispatcher's read did not count")
	}

	// A dashboard session opens the Fleet page's live stream, then leaves.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(a.URL() + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no csrf field on the login page")
	}
	if resp, err = c.PostForm(a.URL()+"/ui/login", url.Values{"csrf": {string(m[1])}, "token": {a.Token("dashboard")}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	req, _ = http.NewRequestWithContext(ctx, "GET", a.URL()+"/ui/live/fleet?from="+fmt.Sprint(a.Engine.DurableLSN()), nil)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	resp.Body.Read(buf)
	if a.UI.LiveConnections() == 0 {
		t.Error("an open live page is not counted as a watcher")
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for a.UI.LiveConnections() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := a.UI.LiveConnections(); n != 0 {
		t.Fatalf("%d live pages still open after the page left", n)
	}
	if n := a.Hub.Clients(); n != 0 {
		t.Fatalf("the hub counts %d client subscriptions after the page left (the fleet feed is the server's own)", n)
	}
	if a.Hub.Stats().Subscribers.Load() == 0 {
		t.Log("the fleet feed ended with its page (the test above is then weaker)")
	}
}
