package osmand

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/internal/testcert"
)

// With a certificate the listener speaks HTTPS (and HTTP/2, where a full
// lane resets the stream instead of closing the connection), and Shutdown
// stops it.
func TestListenerTLS(t *testing.T) {
	r := newRig(t, "", nil) // for its engine and registered devices
	cert, key, pool := testcert.Write(t, t.TempDir())
	l, err := Start(r.e, Config{Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, SpeedUnit: Knots,
		Devices: map[string]string{devA: "anna"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	res, err := c.Get("https://" + l.Addr().String() + "/?id=" + devA + "&lat=1&lon=2&timestamp=1763899200")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS == nil {
		t.Fatalf("https: %d tls %v", res.StatusCode, res.TLS != nil)
	}
	if n := len(r.records(t, fleet.TablePositions)); n != 1 {
		t.Fatalf("%d points over HTTPS", n)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if res, err := plain.Get("http://" + l.Addr().String() + "/?id=" + devA + "&lat=1&lon=3"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP stored a point on the TLS listener")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-l.Done():
		if err != nil {
			t.Fatalf("serve ended with %v after Shutdown", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not end")
	}
	if err := l.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// Over HTTP/2 the connection cannot be hijacked: a full lane resets the
// stream, and the client still gets no status.
func TestListenerTLSLaneFullResetsTheStream(t *testing.T) {
	r := newRig(t, "", func(c *engine.Config) {
		l := c.Lanes[engine.LaneDriver]
		l.QueueBound = 1
		l.FlushWithin = time.Hour // the async point below holds the lane until the engine closes
		c.Lanes[engine.LaneDriver] = l
	})
	if _, err := r.e.SubmitPoints(context.Background(), "filler", []engine.Point{{Seq: 1, Value: []byte(`{"seq":1}`)}}); err != nil {
		t.Fatal(err)
	}
	cert, key, pool := testcert.Write(t, t.TempDir())
	l, err := Start(r.e, Config{Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, Devices: map[string]string{devA: "anna"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Shutdown(context.Background())
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	res, err := c.Get("https://" + l.Addr().String() + "/?id=" + devA + "&lat=1&lon=2&timestamp=1763899200")
	if err == nil {
		res.Body.Close()
		t.Fatalf("a full lane answered %d (%s)", res.StatusCode, res.Proto)
	}
	if !strings.Contains(err.Error(), "stream error") {
		t.Fatalf("want an HTTP/2 stream reset, got %v", err)
	}
	if r.e.Phone().ClosedFull.Load() != 1 {
		t.Fatalf("closed_lane_full %d", r.e.Phone().ClosedFull.Load())
	}
}
