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
	next           int           // fixes made so far
	pace           time.Duration // pause after each 200 (long runs keep the fix times within a day)
	client         *http.Client
}

type phoneFix struct {
	fixMs    int64
	lat, lon float64
}

func (f phoneFix) ts() string {
	return time.UnixMilli(f.fixMs).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// key names a fix the way the stored record does: by its driver (the
// positions key), as the value carries no device id (issue 18).
func (f phoneFix) key(driver string) string {
	return fixKey(driver, f.ts(), f.lat, f.lon)
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

// send sends the oldest pending fix once. On 200 with an empty body the
// fix moves to acked; err is a broken connection (the fix stays pending),
// status and body any other answer.
func (p *phoneSim) send(ctx context.Context, base string) (status int, body []byte, err error) {
	f := p.pending[0]
	req, err := p.request(ctx, base, f)
	if err != nil {
		return 0, nil, fmt.Errorf("phone %s: %w", p.device, err)
	}
	res, err := p.client.Do(req)
	if err != nil {
		// Broken connection (the server died, or closed it on a full lane
		// or a storage fault): the app keeps the fix and retries.
		p.client.CloseIdleConnections()
		return 0, nil, err
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusOK && len(body) == 0 {
		p.acked = append(p.acked, f)
		p.pending = p.pending[1:]
	}
	return res.StatusCode, body, nil
}

// run sends until ctx ends: one request in flight, oldest fix first.
func (p *phoneSim) run(ctx context.Context, base string, rng *rand.Rand, bad *issues) {
	for ctx.Err() == nil {
		if len(p.pending) < 3 {
			p.makeFix(rng)
		}
		status, body, err := p.send(ctx, base)
		if err != nil {
			pause(ctx, 20*time.Millisecond)
			continue
		}
		if status != http.StatusOK || len(body) != 0 {
			bad.add("phone %s: %d %q for %+v; the apps would drop or block on it", p.device, status, body, p.pending[0])
			return
		}
		pause(ctx, p.pace+time.Duration(rng.IntN(5))*time.Millisecond)
	}
}

// phoneFleet is a set of phones reporting through one OsmAnd listener on a
// loopback port: the first phone's device is in the config, the others
// are registered through PUT /v1/devices.
type phoneFleet struct {
	base   string // the listener's URL, path secret included
	toml   string // the [osmand] config section
	phones []*phoneSim
}

// newPhoneFleet makes n phones (one per shape in turn) reporting for
// drivers named prefix-1 … prefix-3.
func newPhoneFleet(t *testing.T, n int, prefix string) *phoneFleet {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	secret := "e2e-" + randHex(8)
	pf := &phoneFleet{base: fmt.Sprintf("http://127.0.0.1:%d/osmand/%s/", port, secret)}
	first := &phoneSim{device: "config-phone-" + randHex(4), driver: prefix + "-1", shape: "osmand"}
	pf.toml = fmt.Sprintf(`
[osmand]
enabled = true
listen = "127.0.0.1:%d"
path_secret = %q
speed_unit = "kmh"

[[osmand.devices]]
id = %q
driver = %q
`, port, secret, first.device, first.driver)
	shapes := []string{"legacy", "form", "json", "osmand"}
	pf.phones = []*phoneSim{first}
	for i := range n - 1 {
		pf.phones = append(pf.phones, &phoneSim{device: fmt.Sprintf("api-phone-%04d-%s", i, randHex(4)),
			driver: fmt.Sprintf("%s-%d", prefix, 2+i%3), shape: shapes[i%len(shapes)]})
	}
	for _, p := range pf.phones {
		p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}
	return pf
}

// register registers every phone but the first (the config's) through the API.
func (pf *phoneFleet) register(t *testing.T, h *harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range pf.phones[1:] {
		r, err := h.do(ctx, http.MethodPut, "/v1/devices/"+p.device, "admin", "", map[string]string{"driver": p.driver})
		if err != nil || r.status != http.StatusCreated {
			t.Fatalf("register %s: %v %v", p.device, r, err)
		}
	}
}

// run runs every phone until ctx ends, then drops their idle connections
// (the server they went to may be dead).
func (pf *phoneFleet) run(ctx context.Context, master *rand.Rand, bad *issues) {
	var wg sync.WaitGroup
	for _, p := range pf.phones {
		rng := rand.New(rand.NewPCG(master.Uint64(), master.Uint64()))
		wg.Go(func() { p.run(ctx, pf.base, rng, bad) })
	}
	wg.Wait()
	for _, p := range pf.phones {
		p.client.CloseIdleConnections()
	}
}

func (pf *phoneFleet) isDriver(name string) bool {
	for _, p := range pf.phones {
		if p.driver == name {
			return true
		}
	}
	return false
}

// storedFix is the part of a positions value that names a phone point.
type storedFix struct {
	Seq int64   `json:"seq"`
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
	TS  string  `json:"ts"`
}

// fixKey names a stored point the way phoneFix.key names a sent one.
func fixKey(driver, ts string, lat, lng float64) string {
	return fmt.Sprintf("%s|%s|%.6f|%.6f", driver, ts, lat, lng)
}

// check reports every fix that got 200 and is not in stored exactly once,
// and every stored fix (of the phones' drivers) that no phone sent; stored counts
// the positions records by fixKey. It returns how many fixes got 200.
func (pf *phoneFleet) check(stored map[string]int, bad *issues) int {
	acked, sent, drivers := 0, map[string]bool{}, map[string]bool{}
	for _, p := range pf.phones {
		drivers[p.driver] = true
		for _, f := range append(append([]phoneFix{}, p.acked...), p.pending...) {
			sent[f.key(p.driver)] = true
		}
		for _, f := range p.acked {
			acked++
			if n := stored[f.key(p.driver)]; n != 1 {
				bad.add("phone %s: point %s got 200 and is %d times in the log", p.device, f.key(p.driver), n)
			}
		}
	}
	for k, n := range stored {
		if d, _, _ := strings.Cut(k, "|"); !drivers[d] {
			continue // another actor's driver (a driver name holds no '|')
		}
		if n > 1 {
			bad.add("point %s is stored %d times", k, n)
		}
		if !sent[k] {
			bad.add("point %s is stored but was never sent", k)
		}
	}
	return acked
}

// TestPhonesAcrossCrashes: phones that behave like the apps report through
// the OsmAnd listener while the server is SIGKILLed and restarted; every
// point that got a 200 is in the log exactly once, no point is stored
// twice, and each driver's seq strictly increases.
func TestPhonesAcrossCrashes(t *testing.T) {
	pf := newPhoneFleet(t, 8, "van")
	h := newHarness(t, pf.toml)

	seed := uint64(time.Now().UnixNano())
	master := rand.New(rand.NewPCG(seed, 5055))
	bad := &issues{t: t}
	for cycle := 1; cycle <= *phoneCycles && !t.Failed(); cycle++ {
		h.start()
		if cycle == 1 {
			pf.register(t, h)
			// An unknown device is answered as a registered one is (the
			// answer does not tell which ids exist) and stores nothing.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, pf.base+"?id=stranger-phone-01&lat=1&lon=2", nil)
			if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("unknown device: %v %v", res, err)
			} else {
				res.Body.Close()
			}
			cancel()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { pf.run(ctx, master, bad) })
		time.Sleep(300*time.Millisecond + time.Duration(master.IntN(500))*time.Millisecond)
		h.kill() // before cancel: whatever was answered before the kill counts as answered
		cancel()
		wg.Wait()
	}
	if t.Failed() {
		t.Fatalf("seed %d", seed)
	}

	// After the last restart the phones deliver what they still hold.
	h.start()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { pf.run(ctx, master, bad) })
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
		var v storedFix
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("positions record %s: %v", r.Value, err)
		}
		if v.Seq <= lastSeq[r.Key] {
			bad.add("driver %s: seq %d at lsn %d follows seq %d", r.Key, v.Seq, r.LSN, lastSeq[r.Key])
		}
		lastSeq[r.Key] = v.Seq
		stored[fixKey(r.Key, v.TS, v.Lat, v.Lng)]++
	}
	acked := pf.check(stored, bad)
	if acked < 10*len(pf.phones) {
		t.Errorf("only %d points acknowledged in %d cycles", acked, *phoneCycles)
	}
	t.Logf("%d phones, %d cycles: %d points acknowledged, %d stored (seed %d)", len(pf.phones), *phoneCycles, acked, len(stored), seed)
	if bad.count() > 0 {
		t.Fatalf("seed %d", seed)
	}
}
