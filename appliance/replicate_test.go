package appliance

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"routehound/internal/natstest"
	"routehound/internal/testkit"
)

// TestReplicatedLanesWaitForJetStream: with [uplink] replicate, a dispatch
// or warehouse write is answered only once JetStream acknowledged it; with
// NATS down it answers 503 not_replicated after replicate_timeout (durable
// here), while a lane not replicated answers at once; NATS back, the retry
// with the same Idempotency-Key answers the same write, now in the stream.
func TestReplicatedLanesWaitForJetStream(t *testing.T) {
	ns := natstest.Start(t)
	cfg := loopbackConfig(t)
	cfg.Uplink.NATSURL, cfg.Uplink.Depot = ns.URL(), "depot-r"
	cfg.Uplink.Replicate, cfg.Uplink.ReplicateTimeout = []string{"dispatch", "warehouse"}, 500*time.Millisecond
	cfg.Fleet.Events = false
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	var ans struct {
		LSN uint64 `json:"lsn"`
	}
	for i, w := range []func() (int, []byte){
		func() (int, []byte) {
			return httpDo(t, "PUT", a.URL()+"/v1/assignments/r-1", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k1")
		},
		func() (int, []byte) {
			return httpDo(t, "POST", a.URL()+"/v1/loading-events", a.Token("warehouse"),
				`{"terminal":"t1","dock":"D4","shipment":"SH-1","kind":"loaded","pallets":3,"ts":"2026-12-07T08:00:00Z"}`, "Idempotency-Key", "w1")
		},
	} {
		st, b := w()
		if st != http.StatusCreated || json.Unmarshal(b, &ans) != nil {
			t.Fatalf("write %d: %d %s", i, st, b)
		}
		if acked := a.Uplink.Acked(); acked < ans.LSN {
			t.Fatalf("write %d answered at lsn %d with JetStream's acknowledgement at %d", i, ans.LSN, acked)
		}
	}

	ns.Stop()
	t0 := time.Now()
	st, b := httpDo(t, "PUT", a.URL()+"/v1/assignments/r-2", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k2")
	if st != http.StatusServiceUnavailable || errCode(b) != "not_replicated" {
		t.Fatalf("dispatch with NATS down: %d %s", st, b)
	}
	if d := time.Since(t0); d < 400*time.Millisecond {
		t.Fatalf("not_replicated after %v, before replicate_timeout", d)
	}
	if st, b := httpDo(t, "PUT", a.URL()+"/v1/tables/notes/keys/k", a.Token("dashboard"), `{"a":1}`); st != http.StatusCreated {
		t.Fatalf("a lane not replicated with NATS down: %d %s", st, b)
	}
	// The journal answered it; the log's fsync publishes it a moment later.
	if err := a.Engine.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	lsn := a.Engine.DurableLSN()

	ns.Restart()
	var retry struct {
		LSN     uint64 `json:"lsn"`
		Version uint64 `json:"version"`
	}
	waitUntil(t, 30*time.Second, "the retry to be answered", func() bool {
		st, b := httpDo(t, "PUT", a.URL()+"/v1/assignments/r-2", a.Token("dispatch"), assignment("van-1"), "Idempotency-Key", "k2")
		return st == http.StatusCreated && json.Unmarshal(b, &retry) == nil
	})
	if retry.Version != 1 || retry.LSN >= lsn || a.Uplink.Acked() < retry.LSN {
		t.Fatalf("retry after NATS came back: %+v (durable lsn then %d, acked %d)", retry, lsn, a.Uplink.Acked())
	}
}

var (
	replicateDriverRate = flag.Int("replicate.driver_rate", 0, "BenchmarkDispatchReplicate: driver points/s posted to each box meanwhile (100-point batches); 0: idle")
	replicateR3         = flag.Bool("replicate.r3", false, "BenchmarkDispatchReplicate: ship to R3 streams on a three-node in-process cluster instead of one server")
	replicateAtomic     = flag.Bool("replicate.atomic", true, "BenchmarkDispatchReplicate with -replicate.r3: the streams allow atomic batches")
)

// BenchmarkDispatchReplicate measures what [uplink] replicate costs a
// dispatcher, in one run: three boxes on loopback — without the uplink,
// with it, and with replicate = ["dispatch"] — against one in-process
// NATS with JetStream (file storage). Each iteration puts one assignment
// on each box in turn, one writer, so that the machine's noise falls on
// all three alike. Reported: p50 and p99 (ms) per box, and the p99 ratios
// against the box without the uplink.
//
// With -replicate.driver_rate R each box takes R driver points/s
// meanwhile, which the uplink ships ahead of the dispatch writes. With
// -replicate.r3 the streams are R3 on three in-process servers (atomic
// batches unless -replicate.atomic=false); a dispatch write answered 503
// not_replicated is counted (replicate-503), not fatal.
//
//	go test -run '^$' -bench DispatchReplicate -benchtime 2000x ./appliance [-args -replicate.driver_rate 5000 -replicate.r3]
func BenchmarkDispatchReplicate(b *testing.B) {
	var url string
	if *replicateR3 {
		cl := natstest.StartCluster(b, 3)
		url = cl.URL()
	} else {
		url = natstest.Start(b).URL()
	}
	modes := []string{"local", "uplink", "replicate"}
	boxes := make([]*Appliance, len(modes))
	for i, mode := range modes {
		cfg := loopbackConfig(b)
		cfg.Fleet.Events = false
		if mode != "local" {
			cfg.Uplink.NATSURL, cfg.Uplink.Depot = url, "bench-"+mode
			cfg.Uplink.Stream = "BENCH_" + strings.ToUpper(mode)
			if *replicateR3 {
				natstest.CreateStream(b, url, jetstream.StreamConfig{Name: cfg.Uplink.Stream, Subjects: []string{"routehound." + cfg.Uplink.Depot + ".>"}, Replicas: 3,
					Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowAtomicPublish: *replicateAtomic})
			}
		}
		if mode == "replicate" {
			cfg.Uplink.Replicate = []string{"dispatch"}
		}
		a, err := Start(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer a.Shutdown(context.Background())
		boxes[i] = a
	}
	client := &http.Client{}
	notReplicated := 0
	put := func(a *Appliance, i int) time.Duration {
		req, err := http.NewRequest("PUT", a.URL()+fmt.Sprintf("/v1/assignments/r-%d", i%500), strings.NewReader(assignment("van-1")))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+a.Token("dispatch"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprint("b", i))
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode == http.StatusServiceUnavailable && a == boxes[2] {
			notReplicated++
		} else if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			b.Fatalf("put: %d", resp.StatusCode)
		}
		return d
	}
	ctx, cancel := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer func() { cancel(); load.Wait() }()
	if rate := *replicateDriverRate; rate > 0 {
		for _, a := range boxes {
			load.Go(func() { driverLoad(ctx, a, rate) })
		}
	}
	for i := range 50 { // warm-up: connections, the stream, the first table
		for _, a := range boxes {
			put(a, -1-i)
		}
	}
	lat := make([][]time.Duration, len(boxes))
	lsn0, t0 := boxes[2].Engine.DurableLSN(), time.Now()
	b.ResetTimer()
	for i := range b.N {
		for k, a := range boxes {
			lat[k] = append(lat[k], put(a, i))
		}
	}
	b.StopTimer()
	// What the replicate box made durable (driver points and the
	// dispatch writes): the rate the uplink had to ship.
	b.ReportMetric(float64(boxes[2].Engine.DurableLSN()-lsn0)/time.Since(t0).Seconds(), "replicate-box-records/s")
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	p99local := testkit.Percentile(lat[0], 99)
	for k, mode := range modes {
		p50, p99 := testkit.Percentile(lat[k], 50), testkit.Percentile(lat[k], 99)
		b.ReportMetric(ms(p50), mode+"-p50-ms")
		b.ReportMetric(ms(p99), mode+"-p99-ms")
		if k > 0 && p99local > 0 {
			b.ReportMetric(float64(p99)/float64(p99local), mode+"/local-p99")
		}
	}
	b.ReportMetric(float64(notReplicated), "replicate-503")
	for k, a := range boxes[1:] {
		s := a.Uplink.Status()
		b.ReportMetric(float64(s.LagRecords), modes[k+1]+"-lag-records")
	}
	if up := boxes[2].Uplink; *replicateDriverRate == 0 && notReplicated == 0 && up.Acked() < boxes[2].Engine.DurableLSN() {
		b.Fatalf("replicate box: acked %d < durable %d", up.Acked(), boxes[2].Engine.DurableLSN())
	}
}

// driverLoad posts 100-point batches of 20 drivers to a box at about rate
// points/s until ctx ends.
func driverLoad(ctx context.Context, a *Appliance, rate int) {
	client := &http.Client{}
	every := time.Duration(float64(time.Second) * 100 / float64(rate))
	tick := time.NewTicker(every)
	defer tick.Stop()
	seq := map[int]int{}
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d := n % 20
		var sb strings.Builder
		sb.WriteByte('[')
		for i := range 100 {
			seq[d]++
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-12-07T08:00:00Z"}`, seq[d])
		}
		sb.WriteByte(']')
		req, err := http.NewRequestWithContext(ctx, "POST", a.URL()+fmt.Sprintf("/v1/drivers/load-%d/locations", d), strings.NewReader(sb.String()))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+a.Token("driver"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
