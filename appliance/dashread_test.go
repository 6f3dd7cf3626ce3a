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

	"routehound/internal/testkit"
)

// The dashboard reads the actor tables from the replica: what the actors
// wrote shows on Routes, Warehouse and Fleet, and GET / leads to /ui/.
func TestDashboardReadsTheReplica(t *testing.T) {
	cfg := loopbackConfig(t)
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	send := func(method, path, role, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, a.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.Token(role))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprint(time.Now().UnixNano()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
	}
	send("PUT", "/v1/assignments/route-9", "dispatch", `{"driver":"d9","stops":[{"id":"s","lat":1,"lng":2,"eta":"2026-11-23T10:00:00Z"}],"note":"n"}`)
	send("POST", "/v1/loading-events", "warehouse", `{"terminal":"T","dock":"D7","shipment":"S7","kind":"loaded","pallets":3,"ts":"2026-11-23T10:00:00Z"}`)
	send("POST", "/v1/drivers/d9/locations", "driver", `[{"seq":1,"lat":52.1,"lng":13.1,"ts":"2026-11-23T10:00:00Z"},{"seq":2,"lat":52.2,"lng":13.2,"ts":"2026-11-23T10:00:01Z"}]`)
	// By the driver's durable seq, not a count of records: the
	// fleet-events consumer writes records of its own (route-9's progress).
	testkit.Eventually(t, 5*time.Second, "the writes to be durable", func() bool {
		seq, err := a.Engine.DriverDurableSeq("d9")
		return err == nil && seq >= 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Engine.WaitCommitted(ctx); err != nil { // journaled answers are published by the log's fsync
		t.Fatal(err)
	}
	if err := a.Replica.WaitLSN(ctx, a.Engine.DurableLSN()); err != nil {
		t.Fatal(err)
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	get := func(path string) string {
		t.Helper()
		resp, err := c.Get(a.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	login := get("/") // redirected to /ui/, then to the login form
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(login)
	if m == nil || !strings.Contains(login, `name="token"`) {
		t.Fatalf("GET / did not lead to the login form:\n%.500s", login)
	}
	resp, err := c.PostForm(a.URL()+"/ui/login", url.Values{"csrf": {m[1]}, "token": {a.Token("dashboard")}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for path, want := range map[string]string{
		"/ui/routes":          `data-route="route-9"`,
		"/ui/warehouse":       `data-dock="D7" data-kind="loaded"`,
		"/ui/fleet?driver=d9": "2 points from the log",
	} {
		if body := get(path); !strings.Contains(body, want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
}
