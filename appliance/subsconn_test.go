package appliance

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"routehound/config"
	"routehound/internal/testcert"
)

// Issue 18, point 6d: HTTP/2 carries many event streams on one connection;
// one connection holds at most hub.max_subscribers_per_conn of them, the
// next is answered 429 too_many_subscribers, and a closed one gives its
// place back.
func TestSubscribersPerConnectionOverHTTP2(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, _ := testcert.Write(t, dir)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Storage.MinFreeMB = 0
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = certPath, keyPath
	cfg.Hub.MaxSubscribersPerConn = 3
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := func(table string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", a.URL()+"/v1/tables/"+table+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+a.Token("dashboard"))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.ProtoMajor != 2 {
			t.Fatalf("%s over %s, want HTTP/2", table, res.Proto)
		}
		return res
	}
	var streams []*http.Response
	for i := range 3 {
		res := open(fmt.Sprint("t", i))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %s", i+1, res.Status)
		}
		streams = append(streams, res)
	}
	res := open("t9")
	var e struct{ Code string }
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || json.Unmarshal(b, &e) != nil || e.Code != "too_many_subscribers" {
		t.Fatalf("4th stream on one connection: %s %s", res.Status, b)
	}
	streams[0].Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := open("t9")
		if res.StatusCode == http.StatusOK {
			streams = append(streams, res)
			break
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place was not given back: %s", res.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range streams[1:] {
		s.Body.Close()
	}
}
