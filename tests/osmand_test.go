//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var phoneCycles = flag.Int("osmand.cycles", 5, "TestPhonesAcrossCrashes: number of SIGKILL/restart cycles")

// phoneSim behaves like the tracking apps: it buffers its fixes, sends the
// oldest one at a time over a keep-alive connection, deletes it on 200 and
// retries it on a broken connection.
type phoneSim struct {
	device, driver string
	shape          string // legacy (query POST), form (10.x), json (9.x), osmand (GET)
	pending        []phoneFix
	acked          []phoneFix
	next           int // fixes made so far
	client         *http.Client
}

type phoneFix struct {
	fixMs    int64
	lat, lon float64
}

func (f phoneFix) ts() string {
	return time.UnixMilli(f.fixMs).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// key names a fix the way the stored record does.
func (f phoneFix) key(device string) string {
	return fmt.Sprintf("%s|%s|%.6f|%.6f", device, f.ts(), f.lat, f.lon)
}

var phoneEpoch = time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli() // whole seconds: the legacy shape sends seconds

func (p *phoneSim) makeFix(rng *rand.Rand) {
	p.next++
	p.pending = append(p.pending, phoneFix{
		fixMs: phoneEpoch + int64(p.next)*1000,
		lat:   float64(int((52.3+rng.Float64()*0.4)*1e6)) / 1e6,
		lon:   float64(int((13.1+rng.Float64()*0.6)*1e6)) / 1e6,
	})
}

func (p *phoneSim) request(ctx context.Context, base string, f phoneFix) (*http.Request, error) {
	q := url.Values{}
	q.Set("id", p.device)
	q.Set("lat", strconv.FormatFloat(f.lat, 'f', 6, 64))
	q.Set("lon", strconv.FormatFloat(f.lon, 'f', 6, 64))
	q.Set("speed", "12.5")
	q.Set("bearing", "90")
	q.Set("batt", "77")
	switch p.shape {
	case "legacy":
		q.Set("timestamp", strconv.FormatInt(f.fixMs/1000, 10)) // Unix seconds
		return http.NewRequestWithContext(ctx, http.MethodPost, base+"?"+q.Encode(), nil)
	case "form":
		q.Set("timestamp", strconv.FormatInt(f.fixMs, 10))
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, base, strings.NewReader(q.Encode()))
		if err == nil {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		return r, err
	case "json":
		body := fmt.Sprintf(`{"location":{"timestamp":%q,"coords":{"latitude":%.6f,"longitude":%.6f,"accuracy":5,"speed":3.5,"heading":-1,"altitude":40},"battery":{"level":0.5,"is_charging":false},"is_moving":true},"device_id":%q}`,
			f.ts(), f.lat, f.lon, p.device)
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, base, strings.NewReader(body))
		if err == nil {
			r.Header.Set("Content-Type", "application/json")
		}
		return r, err
	}
	q.Set("timestamp", strconv.FormatInt(f.fixMs, 10))
	return http.NewRequestWithContext(ctx, http.MethodGet, base+"?"+q.Encode(), nil)
}

// run sends until ctx ends: one request in flight, oldest fix first.
func (p *phoneSim) run(ctx context.Context, base string, rng *rand.Rand, bad *issues) {
	for ctx.Err() == nil {
		if len(p.pending) < 3 {
			p.makeFix(rng)
		}
		f := p.pending[0]
		req, err := p.request(ctx, base, f)
		if err != nil {
			bad.add("phone %s: %v", p.device, err)
			return
		}
		res, err := p.client.Do(req)
		if err != nil {
			// Broken connection (the server died, or closed it on a full
			// lane): the app keeps the fix and retries.
			p.client.CloseIdleConnections()
			pause(ctx, 20*time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || len(body) != 0 {
			bad.add("phone %s: %d %q for %+v; the apps would drop or block on it", p.device, res.StatusCode, body, f)
			return
		}
		p.acked = append(p.acked, f)
		p.pending = p.pending[1:]
		pause(ctx, time.Duration(rng.IntN(5))*time.Millisecond)
	}
}

// TestPhonesAcrossCrashes: phones that behave like the apps report through
// the OsmAnd listener while the server is SIGKILLed and restarted; every
// point that got a 200 is in the log exactly once, no point is stored
// twice, and each driver's seq strictly increases.
func TestPhonesAcrossCrashes(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	secret := "e2e-" + randHex(8)
	h := newHarness(t, fmt.Sprintf(`
[osmand]
enabled = true
listen = "127.0.0.1:%d"
path_secret = %q
speed_unit = "kmh"

[[osmand.devices]]
id = "config-phone-0001"
driver = "van-1"
`, port, secret))
	base := fmt.Sprintf("http://127.0.0.1:%d/osmand/%s/", port, secret)

	shapes := []string{"legacy", "form", "json", "osmand"}
	phones := []*phoneSim{{device: "config-phone-0001", driver: "van-1", shape: "osmand"}}
	for i := range 7 {
		phones = append(phones, &phoneSim{device: fmt.Sprintf("api-phone-%04d-%s", i, randHex(4)),
			driver: fmt.Sprintf("van-%d", 2+i%3), shape: shapes[i%len(shapes)]})
	}
	for _, p := range phones {
		p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}

	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 5055))
	bad := &issues{t: t}
	for cycle := 1; cycle <= *phoneCycles && !t.Failed(); cycle++ {
		h.start()
		if cycle == 1 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for _, p := range phones[1:] {
				r, err := h.do(ctx, http.MethodPut, "/v1/devices/"+p.device, "admin", "", map[string]string{"driver": p.driver})
				if err != nil || r.status != http.StatusCreated {
					t.Fatalf("register %s: %v %v", p.device, r, err)
				}
			}
			// An unknown device is refused and stores nothing.
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"?id=stranger-phone-01&lat=1&lon=2", nil)
			if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusForbidden {
				t.Fatalf("unknown device: %v %v", res, err)
			} else {
				res.Body.Close()
			}
			cancel()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, p := range phones {
			rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
			wg.Go(func() { p.run(ctx, base, rng, bad) })
		}
		time.Sleep(300*time.Millisecond + time.Duration(master.IntN(500))*time.Millisecond)
		h.kill() // before cancel: whatever was answered before the kill counts as answered
		cancel()
		wg.Wait()
		for _, p := range phones {
			p.client.CloseIdleConnections()
		}
	}
	if t.Failed() {
		t.Fatalf("seed %d", seed)
	}

	// After the last restart the phones deliver what they still hold.
	h.start()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range phones {
		rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
		wg.Go(func() { p.run(ctx, base, rng, bad) })
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	recs := readLog(t, h)
	h.stop()

	stored := map[string]int{}
	lastSeq := map[string]int64{}
	for _, r := range recs {
		if r.Table != "positions" {
			continue
		}
		var v struct {
			Seq    int64   `json:"seq"`
			Lat    float64 `json:"lat"`
			Lng    float64 `json:"lng"`
			TS     string  `json:"ts"`
			Device string  `json:"device"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("positions record %s: %v", r.Value, err)
		}
		if v.Seq <= lastSeq[r.Key] {
			bad.add("driver %s: seq %d at lsn %d follows seq %d", r.Key, v.Seq, r.LSN, lastSeq[r.Key])
		}
		lastSeq[r.Key] = v.Seq
		stored[fmt.Sprintf("%s|%s|%.6f|%.6f", v.Device, v.TS, v.Lat, v.Lng)]++
	}
	acked, sent := 0, map[string]bool{}
	for _, p := range phones {
		for _, f := range append(append([]phoneFix{}, p.acked...), p.pending...) {
			sent[f.key(p.device)] = true
		}
		for _, f := range p.acked {
			acked++
			if n := stored[f.key(p.device)]; n != 1 {
				bad.add("phone %s: point %s got 200 and is %d times in the log", p.device, f.key(p.device), n)
			}
		}
	}
	for k, n := range stored {
		if n > 1 {
			bad.add("point %s is stored %d times", k, n)
		}
		if !sent[k] {
			bad.add("point %s is stored but was never sent", k)
		}
	}
	if acked < 10*len(phones) {
		t.Errorf("only %d points acknowledged in %d cycles", acked, *phoneCycles)
	}
	t.Logf("%d phones, %d cycles: %d points acknowledged, %d stored (seed %d)", len(phones), *phoneCycles, acked, len(stored), seed)
	if bad.count() > 0 {
		t.Fatalf("seed %d", seed)
	}
}
