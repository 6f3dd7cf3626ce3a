package appliance

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"routehound/config"
	"routehound/internal/testcert"
)

// With [http] tls_cert and tls_key the server speaks HTTPS and the
// dashboard's session cookie is Secure.
func TestTLSAndSecureSessionCookie(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, _ := testcert.Write(t, dir)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Storage.MinFreeMB = 0
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = certPath, keyPath
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	if !strings.HasPrefix(a.URL(), "https://") {
		t.Fatalf("URL %s is not https", a.URL())
	}
	c := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	resp, err := c.Get(a.URL() + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(body))[1]
	req, _ := http.NewRequest("POST", a.URL()+"/ui/login", strings.NewReader(url.Values{"csrf": {csrf}, "token": {a.Token("admin")}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, ck := range resp.Cookies() {
		req.AddCookie(ck)
	}
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login over TLS: %s", resp.Status)
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "rh_session" {
			session = ck
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie over TLS: %+v", session)
	}
	// Plain HTTP on the TLS port is refused.
	if r, err := http.Get("http://" + a.Addr.String() + "/healthz"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200 on the TLS listener")
		}
	}
	// A bad key pair fails the start.
	cfg.DataDir = filepath.Join(dir, "data2")
	cfg.HTTP.TLSKey = certPath
	if b, err := Start(cfg, nil); err == nil {
		b.Shutdown(context.Background())
		t.Error("a certificate given as its own key started")
	}
}
