//go:build linux

package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"routehound/internal/testkit"
)

// TestDispatchWithHistoryLoad measures (issue 22) whether long history
// queries move the dispatch p99, against the real binary in another
// process: a dispatcher writes one sync (fsync'd) assignment every ~2 ms
// and a driver load of ~4,000 points/s runs throughout, while the phases
// alternate — without history pulls, then with 4 clients (in a third
// process) pulling long trails (every kept point of a driver, as JSON and as GPX), loading-event
// pages of 1,000 and route histories in a loop. It reports the dispatch
// p50/p99 of each phase and their ratio (BENCHMARKS.md, "History API"). A
// measurement, not a speed test: it runs only with
// ROUTEHOUND_HISTORY_LOAD=1 (ROUTEHOUND_HISTORY_PULLERS sets the clients),
// and checks only that every write and every
// pull succeeded, with whole answers.
func TestDispatchWithHistoryLoad(t *testing.T) {
	if os.Getenv("ROUTEHOUND_HISTORY_LOAD") != "1" {
		t.Skip("a measurement (BENCHMARKS.md): set ROUTEHOUND_HISTORY_LOAD=1")
	}
	const (
		drivers   = 300
		trail     = 200 // the points the replica keeps per driver
		events    = 1000
		routes    = 50
		rounds    = 5
		phase     = 3 * time.Second
		dispatchP = 2 * time.Millisecond
	)
	// ROUTEHOUND_HISTORY_PULLERS=0 runs the same phases without pulls: the
	// ratio of two identical phases, the run's noise floor.
	pullers := 4
	if v := os.Getenv("ROUTEHOUND_HISTORY_PULLERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 64 {
			t.Fatalf("ROUTEHOUND_HISTORY_PULLERS=%q: want 0 to 64", v)
		}
		pullers = n
	}
	h := newHarness(t, "")
	h.start()
	defer h.stop()
	bad := &issues{t: t}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(22, 1))

	// Seed: full trails, loading events, route versions.
	for d := range drivers {
		pts := make([]point, trail)
		for i := range pts {
			pts[i] = makePoint(int64(i+1), rng)
		}
		if r, err := h.do(ctx, "POST", fmt.Sprintf("/v1/drivers/hist-%03d/locations", d), "driver", "", pts); err != nil || r.status != http.StatusAccepted {
			t.Fatalf("seed points: %v %v", r, err)
		}
	}
	for i := range events {
		ev := map[string]any{"terminal": "t1", "dock": fmt.Sprintf("D%d", i%8), "shipment": fmt.Sprintf("S%d", i%100), "kind": "loaded", "pallets": 3, "ts": time.Now().UTC().Format(time.RFC3339)}
		if r, err := h.do(ctx, "POST", "/v1/loading-events", "warehouse", fmt.Sprintf("hist-ev-%d", i), ev); err != nil || r.status != http.StatusCreated {
			t.Fatalf("seed events: %v %v", r, err)
		}
	}
	// Wait for the replica to hold the last driver's trail.
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := h.do(ctx, "GET", fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000", drivers-1), "dashboard", "", nil)
		var p struct{ Points []json.RawMessage }
		if err == nil && r.status == 200 && r.decode(&p) == nil && len(p.Points) == trail {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not catch up: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var (
		mu       sync.Mutex
		lat      = [2][]time.Duration{} // [0] without, [1] with history pulls
		phaseNow atomic.Int32
		points   atomic.Int64
	)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The dispatcher.
	wg.Go(func() {
		tick := time.NewTicker(dispatchP)
		defer tick.Stop()
		for n := 0; runCtx.Err() == nil; n++ {
			body := map[string]any{"driver": fmt.Sprintf("hist-%03d", n%drivers), "note": strconv.Itoa(n),
				"stops": []map[string]any{{"id": fmt.Sprintf("S%d", n%100), "lat": 52.5, "lng": 13.4}}}
			p := phaseNow.Load()
			t0 := time.Now()
			r, err := h.do(runCtx, "PUT", fmt.Sprintf("/v1/assignments/hist-r%02d", n%routes), "dispatch", fmt.Sprintf("hd-%d", n), body)
			d := time.Since(t0)
			if runCtx.Err() != nil {
				return
			}
			if err != nil || r.status/100 != 2 {
				bad.add("dispatch: %v %v", r, err)
				return
			}
			if phaseNow.Load() == p { // a write that spans a phase change is dropped
				mu.Lock()
				lat[p] = append(lat[p], d)
				mu.Unlock()
			}
			select {
			case <-tick.C:
			case <-runCtx.Done():
			}
		}
	})
	// The driver load: 2 senders × 100 points every 50 ms.
	for s := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(s), 2))
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			seq := int64(trail)
			for n := 0; runCtx.Err() == nil; n++ {
				pts := make([]point, 100)
				for i := range pts {
					pts[i] = makePoint(seq+int64(i)+1, rng)
				}
				seq += 100
				r, err := h.do(runCtx, "POST", fmt.Sprintf("/v1/drivers/load-%d/locations", s), "driver", "", pts)
				if runCtx.Err() != nil {
					return
				}
				if err != nil || r.status != http.StatusAccepted {
					bad.add("driver load: %v %v", r, err)
					return
				}
				points.Add(100)
				select {
				case <-tick.C:
				case <-runCtx.Done():
				}
			}
		})
	}
	// The history clients, in a process of their own (so that reading the
	// answers costs the dispatcher's process nothing), pulling while told.
	pull := startPuller(t, h, pullers, drivers, routes)
	var onFor time.Duration
	for range rounds {
		for _, on := range []bool{false, true} {
			p := int32(0)
			if on {
				p = 1
			}
			phaseNow.Store(p)
			pull.set(on)
			time.Sleep(phase)
			if on {
				onFor += phase
			}
		}
	}
	pulls, pulled, pullErrs := pull.stop()
	stop()
	wg.Wait()
	if pullErrs != "" {
		t.Errorf("history pulls failed: %s", pullErrs)
	}
	if bad.count() > 0 {
		t.FailNow()
	}
	for i, l := range lat {
		if len(l) < 100 {
			t.Fatalf("phase %d: %d dispatch writes measured", i, len(l))
		}
	}
	p50 := [2]time.Duration{testkit.PercentileLower(lat[0], 50), testkit.PercentileLower(lat[1], 50)}
	p99 := [2]time.Duration{testkit.PercentileLower(lat[0], 99), testkit.PercentileLower(lat[1], 99)}
	t.Logf("dispatch writes: %d without / %d with history pulls", len(lat[0]), len(lat[1]))
	t.Logf("dispatch p50 %v / %v, p99 %v / %v, ratio p99 with/without %.2f", p50[0], p50[1], p99[0], p99[1], float64(p99[1])/float64(p99[0]))
	t.Logf("history: %d pulls, %.1f pulls/s, %.1f MiB/s while pulling; driver load %d points", pulls,
		float64(pulls)/onFor.Seconds(), float64(pulled)/onFor.Seconds()/(1<<20), points.Load())
}

// puller is the process of the history clients (TestHistoryPullerProcess,
// this test binary run again): "on" and "off" lines on its stdin start and
// stop the pulls; at the end of its stdin it prints its counts.
type puller struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Scanner
}

func startPuller(t *testing.T, h *harness, clients, drivers, routes int) *puller {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHistoryPullerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ROUTEHOUND_HISTORY_PULLER_BASE="+h.base, "ROUTEHOUND_HISTORY_PULLER_TOKEN="+h.tokens["dashboard"],
		fmt.Sprintf("ROUTEHOUND_HISTORY_PULLER_SHAPE=%d,%d,%d", clients, drivers, routes))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the puller process: %v", err)
	}
	p := &puller{t: t, cmd: cmd, in: in, lines: bufio.NewScanner(out)}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Its TestMain builds the binary again (from the build cache) first.
	ready := make(chan bool, 1)
	go func() {
		for p.lines.Scan() {
			if p.lines.Text() == "puller ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the puller process ended before it was ready")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the puller process was not ready within 2 minutes")
	}
	return p
}

func (p *puller) set(on bool) {
	line := "off\n"
	if on {
		line = "on\n"
	}
	if _, err := io.WriteString(p.in, line); err != nil {
		p.t.Fatalf("tell the puller process: %v", err)
	}
}

// stop ends the process and answers its pulls, bytes and errors.
func (p *puller) stop() (pulls, bytes int64, errs string) {
	p.in.Close()
	var rep struct {
		Pulls, Bytes int64
		Errors       string
	}
	got := false
	for p.lines.Scan() {
		if line := p.lines.Text(); strings.HasPrefix(line, "puller report ") {
			got = json.Unmarshal([]byte(strings.TrimPrefix(line, "puller report ")), &rep) == nil
		}
	}
	if err := p.cmd.Wait(); err != nil || !got {
		p.t.Fatalf("the puller process: %v (report read: %v)", err, got)
	}
	return rep.Pulls, rep.Bytes, rep.Errors
}

// TestHistoryPullerProcess is the puller process of
// TestDispatchWithHistoryLoad; it skips unless started by it.
func TestHistoryPullerProcess(t *testing.T) {
	base := os.Getenv("ROUTEHOUND_HISTORY_PULLER_BASE")
	if base == "" {
		t.Skip("the history clients' process of TestDispatchWithHistoryLoad")
	}
	var clients, drivers, routes int
	if _, err := fmt.Sscanf(os.Getenv("ROUTEHOUND_HISTORY_PULLER_SHAPE"), "%d,%d,%d", &clients, &drivers, &routes); err != nil || clients < 0 || clients > 64 || drivers < 1 || routes < 1 {
		t.Fatalf("ROUTEHOUND_HISTORY_PULLER_SHAPE %q", os.Getenv("ROUTEHOUND_HISTORY_PULLER_SHAPE"))
	}
	token := os.Getenv("ROUTEHOUND_HISTORY_PULLER_TOKEN")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var on atomic.Bool
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			on.Store(sc.Text() == "on")
		}
		cancel() // the end of stdin: the end of the run
	}()
	var pulls, pulled atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 3))
			for ctx.Err() == nil {
				if !on.Load() {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				d := rng.IntN(drivers)
				for _, q := range []string{
					fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000", d),
					fmt.Sprintf("/v1/drivers/hist-%03d/trail?limit=1000&format=gpx", d),
					"/v1/loading-events?limit=1000",
					fmt.Sprintf("/v1/loading-events?dock=D%d&limit=1000", d%8),
					fmt.Sprintf("/v1/assignments/hist-r%02d/history?limit=1000", d%routes),
				} {
					req, _ := http.NewRequestWithContext(ctx, "GET", base+q, nil)
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := hc.Do(req)
					if ctx.Err() != nil {
						if err == nil {
							resp.Body.Close()
						}
						return
					}
					var n int64
					if err == nil {
						n, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && (resp.StatusCode != 200 || n < 100) {
							err = fmt.Errorf("%d, %d bytes", resp.StatusCode, n)
						}
					}
					if err != nil {
						mu.Lock()
						if len(errs) < 5 {
							errs = append(errs, q+": "+err.Error())
						}
						mu.Unlock()
						continue
					}
					pulls.Add(1)
					pulled.Add(n)
				}
			}
		})
	}
	fmt.Println("puller ready")
	<-ctx.Done() // with no clients too: the run ends with its stdin
	wg.Wait()
	b, _ := json.Marshal(map[string]any{"pulls": pulls.Load(), "bytes": pulled.Load(), "errors": strings.Join(errs, "; ")})
	fmt.Println("puller report " + string(b))
}
