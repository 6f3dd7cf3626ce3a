package appliance

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The dashboard's login goes through the API's token table and failure
// limiter (issue 18): refused logins and API 401s count together per
// address, and past http.max_auth_failures both the API and the login
// answer 429 too_many_failures, a valid token included.
func TestDashboardLoginSharesTheFailureLimit(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.HTTP.MaxAuthFailures = 4
	cfg.HTTP.AuthFailureWindow = time.Minute
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	csrfRe := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	login := func(token string) (int, string) {
		t.Helper()
		resp, err := c.Get(a.URL() + "/ui/login")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfRe.FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("no login form: %s", b)
		}
		resp, err = c.PostForm(a.URL()+"/ui/login", url.Values{"csrf": {m[1]}, "token": {token}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	api := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", a.URL()+"/v1/tables", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st, _ := login(a.Token("dashboard")); st != http.StatusSeeOther {
		t.Fatalf("login with the dashboard token: %d", st)
	}
	for range 2 {
		if st, _ := login("guess-0123456789abcdef"); st != http.StatusUnauthorized {
			t.Fatalf("login with a guess: %d", st)
		}
		if st := api("guess-0123456789abcdef"); st != http.StatusUnauthorized {
			t.Fatalf("API with a guess: %d", st)
		}
	}
	if st := api(a.Token("dashboard")); st != http.StatusTooManyRequests {
		t.Fatalf("API after 2 refused logins and 2 401s: %d, want 429", st)
	}
	if st, body := login(a.Token("admin")); st != http.StatusTooManyRequests || !strings.Contains(body, "too_many_failures") {
		t.Fatalf("login after 4 failures: %d %s", st, body)
	}
}
