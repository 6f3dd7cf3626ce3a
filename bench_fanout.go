//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"routehound/config"
)

// fanoutOptions are the flags of `routehound bench fanout`.
type fanoutOptions struct {
	transports         []string // ws (change frames), ws-batch (changes frames), sse
	subs, tables, rate int
	writers            int // saturation: concurrent writers, each as fast as the server answers
	idle, idleTables   int
	rounds             int
	warmup, measure    time.Duration
	dir                string
	server             string // the routehound binary run as the server ("": this one)
	centrifugo         string // a Centrifugo binary, the server of the transport "centrifugo"
	round              int    // the round being run (file names)
	jsonOut            string
	trace              string // a file prefix: the server's execution trace during the latency phase
	quiet              bool
}

// fanoutResult is one transport's run against its own child server.
type fanoutResult struct {
	Round       int    `json:"round"`
	Transport   string `json:"transport"`
	Subscribers int    `json:"subscribers"`
	Tables      int    `json:"tables"`
	Rate        int    `json:"rate"`
	// At Rate changes/s: write sent → change received by a subscriber.
	Sent    int64   `json:"sent"`
	Events  int64   `json:"events"`
	Missing int64   `json:"missing"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// Commit → receipt: the write's answer back at its writer (RouteHound
	// answers after the fsync, Centrifugo after its in-memory publish) →
	// the change received by a subscriber. Negative when a subscriber had
	// it before the writer had its answer.
	CommitP50Ms float64 `json:"commit_p50_ms"`
	CommitP99Ms float64 `json:"commit_p99_ms"`
	CommitMaxMs float64 `json:"commit_max_ms"`
	// Write sent → its answer back: the commit as the writer sees it.
	AnswerP50Ms float64 `json:"answer_p50_ms"`
	AnswerP99Ms float64 `json:"answer_p99_ms"`
	// The server's own view over the same window (RouteHound's /metrics;
	// absent for a server without them): per change delivered to one
	// subscriber, durable → written to its socket and the stages of it
	// (hub/delay.go), and the tables lane's arrival → durable.
	Server map[string]serverDelay `json:"server,omitempty"`
	// The server's fsyncs over the window and the tables' records per
	// fsync (group commit: each fsync's records reach a subscriber in one
	// offer, one write).
	Fsyncs          float64 `json:"fsyncs,omitempty"`
	RecordsPerFsync float64 `json:"records_per_fsync,omitempty"`
	// Saturation: Writers writing as fast as they are answered.
	DeliveredPerSec   float64 `json:"delivered_per_sec"`
	WritesPerSec      float64 `json:"writes_per_sec"`
	ServerCPUPct      float64 `json:"server_cpu_pct"`        // of one core, during the saturation window
	CPUPctPer10kPerS  float64 `json:"cpu_pct_per_10k_per_s"` // server CPU (% of a core) per 10,000 deliveries/s
	IdleSubscribers   int     `json:"idle_subscribers"`
	IdleKiBPerSub     float64 `json:"idle_kib_per_sub"`     // server heap in use + stacks, after a GC, per idle subscriber
	IdleRSSKiBPerSub  float64 `json:"idle_rss_kib_per_sub"` // server RSS growth per idle subscriber
	IdleGoroutinesPer float64 `json:"idle_goroutines_per_sub"`
}

// benchFanout runs `routehound bench fanout`: subscribers in this process,
// the server (this binary's `serve`, one fresh child per transport and
// round) in another, as the comparison was measured.
func benchFanout(args []string) error {
	var o fanoutOptions
	var transports string
	fs := flag.NewFlagSet("bench fanout", flag.ContinueOnError)
	fs.StringVar(&transports, "transports", "ws,ws-batch,sse", "transports, run in turn in each round: ws (one change frame per change), ws-batch (changes frames), sse, centrifugo (needs --centrifugo)")
	fs.IntVar(&o.subs, "subscribers", 100, "subscribers of the latency and saturation phases")
	fs.IntVar(&o.tables, "tables", 1, "tables they are spread over (round robin)")
	fs.IntVar(&o.rate, "rate", 1000, "changes/s of the latency phase, round robin over the tables")
	fs.IntVar(&o.writers, "writers", 32, "saturation phase: concurrent writers")
	fs.IntVar(&o.idle, "idle", 10000, "idle subscribers of the memory phase (0: no memory phase)")
	fs.IntVar(&o.idleTables, "idle-tables", 1000, "tables the idle subscribers are spread over")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds; each runs every transport once (alternating builds or transports in one session)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before each measured window")
	fs.DurationVar(&o.measure, "measure", 10*time.Second, "each measured window (latency, saturation)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "where the child servers' temporary data dirs go")
	fs.StringVar(&o.server, "server", "", "the routehound binary to run as the server (default: this one), e.g. another build to compare")
	fs.StringVar(&o.centrifugo, "centrifugo", "", "a Centrifugo (v6) binary: the transport centrifugo runs it as the server (memory broker, nothing durable; its WebSocket with the JSON protocol, publishes through its HTTP API), measured by the same client")
	fs.StringVar(&o.jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.trace, "trace", "", "save the server's execution trace (go tool trace) of 2 s of each latency phase to PREFIX-TRANSPORT-rROUND.trace (RouteHound only)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench fanout: unexpected arguments %q", fs.Args())
	}
	o.transports = strings.Split(transports, ",")
	for _, t := range o.transports {
		if t == "centrifugo" && o.centrifugo == "" {
			return errors.New("bench fanout: transport centrifugo needs --centrifugo BINARY")
		}
		if t != "ws" && t != "ws-batch" && t != "sse" && t != "centrifugo" {
			return fmt.Errorf("bench fanout: transport %q: want ws, ws-batch, sse or centrifugo", t)
		}
	}
	switch {
	case o.subs < 1 || o.tables < 1 || o.subs < o.tables || o.subs/o.tables > 100:
		return errors.New("bench fanout: --subscribers and --tables must be >= 1, at most 100 subscribers per table")
	case o.rate < 1 || o.writers < 1 || o.rounds < 1 || o.measure <= 0 || o.warmup < 0:
		return errors.New("bench fanout: --rate, --writers, --rounds and --measure must be > 0")
	case o.idle < 0 || o.idle > 0 && (o.idleTables < 1 || (o.idle+o.idleTables-1)/o.idleTables > 100):
		return errors.New("bench fanout: --idle must be >= 0, at most 100 per table of --idle-tables")
	}
	raiseNofile(2*max(o.idle, o.subs) + 1024)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Printf("bench fanout %s: %s, %d CPUs, %s, load %s\n", time.Now().UTC().Format(time.RFC3339), cpuModel(), runtime.NumCPU(), runtime.Version(), loadAvg())
	var all []fanoutResult
	for round := 1; round <= o.rounds; round++ {
		for _, tr := range o.transports {
			o.round = round
			res, err := runFanoutBench(ctx, o, tr)
			if err != nil {
				return err
			}
			res.Round = round
			all = append(all, *res)
			fmt.Print(res.human())
		}
	}
	return writeReport(o.jsonOut, "bench fanout", all)
}

func (r *fanoutResult) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "round %d %-8s %d subscribers on %d tables at %d changes/s: write→receipt p50 %.2f ms p99 %.2f ms max %.1f ms (%d events, %d missing)\n",
		r.Round, r.Transport, r.Subscribers, r.Tables, r.Rate, r.P50Ms, r.P99Ms, r.MaxMs, r.Events, r.Missing)
	fmt.Fprintf(&b, "round %d %-8s commit→receipt (write's answer back → change received) p50 %.2f ms p99 %.2f ms max %.1f ms; write→answer p50 %.2f ms p99 %.2f ms\n",
		r.Round, r.Transport, r.CommitP50Ms, r.CommitP99Ms, r.CommitMaxMs, r.AnswerP50Ms, r.AnswerP99Ms)
	if len(r.Server) > 0 {
		fmt.Fprintf(&b, "round %d %-8s server p50/p99 per change:", r.Round, r.Transport)
		sep := ""
		for _, d := range serverDelays {
			if v, ok := r.Server[d.name]; ok {
				fmt.Fprintf(&b, "%s %s %.2f/%.2f ms", sep, d.name, v.P50Ms, v.P99Ms)
				sep = ","
			}
		}
		if r.Fsyncs > 0 {
			fmt.Fprintf(&b, "; %.0f fsyncs, %.2f records each", r.Fsyncs, r.RecordsPerFsync)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "round %d %-8s saturation: %.0f delivered/s (%.0f writes/s), server CPU %.0f%% of a core = %.1f%% per 10k deliveries/s\n",
		r.Round, r.Transport, r.DeliveredPerSec, r.WritesPerSec, r.ServerCPUPct, r.CPUPctPer10kPerS)
	if r.IdleSubscribers > 0 {
		fmt.Fprintf(&b, "round %d %-8s %d idle subscribers: %.1f KiB each (server heap + stacks after a GC), RSS %.1f KiB each, %.2f goroutines each\n",
			r.Round, r.Transport, r.IdleSubscribers, r.IdleKiBPerSub, r.IdleRSSKiBPerSub, r.IdleGoroutinesPer)
	}
	return b.String()
}

// raiseNofile raises this process's descriptor limit (the child inherits
// it) towards want, up to the hard limit.
func raiseNofile(want int) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil || rl.Cur >= uint64(want) {
		return
	}
	rl.Cur = min(uint64(want), rl.Max)
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

// serverDelay is one of the server's histograms over a window: quantiles
// interpolated within its buckets (as Prometheus' histogram_quantile).
type serverDelay struct {
	Count float64 `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	AvgMs float64 `json:"avg_ms"`
}

// serverDelays are the histograms read from the server's /metrics, by the
// name the report gives them.
var serverDelays = []struct{ name, series string }{
	{"durable→socket", `routehound_hub_delay_seconds{stage="total"}`},
	{"feed", `routehound_hub_delay_seconds{stage="feed"}`},
	{"queue", `routehound_hub_delay_seconds{stage="queue"}`},
	{"write", `routehound_hub_delay_seconds{stage="write"}`},
	{"tables lane arrival→durable", `routehound_lane_latency_seconds{lane="tables"}`},
}

// fanoutTarget is a running server: its URL, tokens and process id.
type fanoutTarget struct {
	base, dashboard, admin string
	pid                    int
	hc                     *http.Client
	centrifugo             bool // a Centrifugo server: publish through its HTTP API, no tokens
}

func runFanoutBench(ctx context.Context, o fanoutOptions, transport string) (*fanoutResult, error) {
	progress := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(os.Stderr, "bench fanout %s: "+format+"\n", append([]any{transport}, args...)...)
		}
	}
	dir, err := os.MkdirTemp(o.dir, "routehound-fanout-")
	if err != nil {
		return nil, fmt.Errorf("bench fanout: temp dir: %w", err)
	}
	s := &benchServer{dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log")}
	defer s.close()
	if err := os.Mkdir(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench fanout: %w", err)
	}
	if transport == "centrifugo" {
		return runCentrifugo(ctx, o, s, progress)
	}
	tg, cfgPath, err := writeFanoutConfig(dir, max(o.idle, o.subs), max(o.idleTables, o.tables))
	if err != nil {
		return nil, err
	}
	exe, err := filepath.Abs(o.server) // the child runs in its own dir
	if err != nil {
		return nil, fmt.Errorf("bench fanout: --server: %w", err)
	}
	if o.server == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench fanout: this binary: %w", err)
		}
	}
	if err := s.start(ctx, exe, cfgPath); err != nil {
		return nil, fmt.Errorf("bench fanout: %w\nserver log tail:\n%s", err, logTail(s.logPath, 4<<10))
	}
	tg.base, tg.pid = s.base, s.pid()
	tg.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}, Timeout: benchAnswerTimeout}
	defer tg.hc.CloseIdleConnections()
	progress("server %s (pid %d)", tg.base, tg.pid)
	return measureFanout(ctx, o, transport, tg, progress)
}

// runCentrifugo runs the three phases against a Centrifugo server (o.centrifugo)
// started on s's dir: client connections and HTTP API without auth (a
// benchmark on loopback), the memory broker, pprof on for the memory phase.
func runCentrifugo(ctx context.Context, o fanoutOptions, s *benchServer, progress func(string, ...any)) (*fanoutResult, error) {
	exe, err := filepath.Abs(o.centrifugo)
	if err != nil {
		return nil, fmt.Errorf("bench fanout: --centrifugo: %w", err)
	}
	cfgPath := filepath.Join(s.dir, "centrifugo.json")
	argv := func(addr string) ([]string, error) {
		_, port, _ := strings.Cut(addr, ":")
		cfg := fmt.Sprintf(`{"http_server":{"address":"127.0.0.1","port":%s},"log":{"level":"error"},`+
			`"client":{"insecure":true,"allowed_origins":["*"]},"http_api":{"insecure":true},`+
			`"channel":{"without_namespace":{"allow_subscribe_for_client":true}},"debug":{"enabled":true}}`, port)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		return []string{"--config", cfgPath}, nil
	}
	if err := s.startCmd(ctx, exe, argv, "/debug/pprof/"); err != nil {
		return nil, fmt.Errorf("bench fanout: %w\nserver log tail:\n%s", err, logTail(s.logPath, 4<<10))
	}
	tg := &fanoutTarget{base: s.base, pid: s.pid(), centrifugo: true,
		hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}, Timeout: benchAnswerTimeout}}
	defer tg.hc.CloseIdleConnections()
	progress("centrifugo %s (pid %d)", tg.base, tg.pid)
	return measureFanout(ctx, o, "centrifugo", tg, progress)
}

// measureFanout runs the three phases against tg.
func measureFanout(ctx context.Context, o fanoutOptions, transport string, tg *fanoutTarget, progress func(string, ...any)) (*fanoutResult, error) {
	res := &fanoutResult{Transport: transport, Subscribers: o.subs, Tables: o.tables, Rate: o.rate}
	if err := measureIdle(ctx, o, transport, tg, res); err != nil {
		return nil, err
	}
	progress("%d idle subscribers: %.1f KiB each", res.IdleSubscribers, res.IdleKiBPerSub)
	names := make([]string, o.tables)
	for i := range names {
		names[i] = fmt.Sprintf("f%04d", i)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rec := &receipts{}
	var wg sync.WaitGroup
	for i := range o.subs {
		if err := subscribeFanout(sctx, tg, transport, names[i%len(names)], rec, &wg); err != nil {
			return nil, err
		}
	}
	progress("%d subscribers live", o.subs)

	// Latency at a fixed rate.
	writeFanout(ctx, tg, names, o.rate, 0, o.warmup, nil)
	rec.reset(true)
	m0 := serverMetrics(ctx, tg)
	traced := make(chan error, 1)
	if o.trace != "" && !tg.centrifugo {
		path := fmt.Sprintf("%s-%s-r%d.trace", o.trace, transport, o.round)
		go func() { traced <- saveTrace(ctx, tg, path, min(2*time.Second, o.measure)) }()
	} else {
		traced <- nil
	}
	sent := writeFanout(ctx, tg, names, o.rate, 0, o.measure, rec)
	if err := <-traced; err != nil {
		return nil, err
	}
	want := sent * int64(o.subs/o.tables) // every table has subs/tables subscribers
	deadline := time.Now().Add(10 * time.Second)
	for rec.count.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	m1 := serverMetrics(ctx, tg)
	res.Sent, res.Events = sent, rec.count.Load()
	res.Missing = max(0, want-res.Events)
	rec.report(res)
	if m0 != nil && m1 != nil {
		res.Server = map[string]serverDelay{}
		for _, d := range serverDelays {
			if v, ok := histogramDelta(m0, m1, d.series); ok {
				res.Server[d.name] = v
			}
		}
		const fsyncs, records = `routehound_fsyncs_total`, `routehound_lane_records_total{lane="tables"}`
		if n := m1[fsyncs] - m0[fsyncs]; n > 0 {
			res.Fsyncs, res.RecordsPerFsync = n, (m1[records]-m0[records])/n
		}
	}
	progress("latency: p50 %.2f ms p99 %.2f ms over %d events; commit→receipt p50 %.2f p99 %.2f", res.P50Ms, res.P99Ms, res.Events, res.CommitP50Ms, res.CommitP99Ms)

	// Saturation.
	writeFanout(ctx, tg, names, 0, o.writers, o.warmup, nil)
	rec.reset(false)
	t0, c0 := time.Now(), mustTicks(tg.pid)
	writes := writeFanout(ctx, tg, names, 0, o.writers, o.measure, nil)
	el, c1 := time.Since(t0), mustTicks(tg.pid)
	delivered := rec.count.Load()
	res.DeliveredPerSec = float64(delivered) / el.Seconds()
	res.WritesPerSec = float64(writes) / el.Seconds()
	res.ServerCPUPct = 100 * float64(c1-c0) / clkTck / el.Seconds()
	if res.DeliveredPerSec > 0 {
		res.CPUPctPer10kPerS = res.ServerCPUPct / (res.DeliveredPerSec / 10000)
	}
	progress("saturation: %.0f delivered/s, server CPU %.0f%%", res.DeliveredPerSec, res.ServerCPUPct)
	cancel()
	wg.Wait()
	return res, nil
}

// measureIdle opens o.idle subscribers over o.idleTables tables, which
// nothing writes to, and sets the server's memory growth per subscriber.
func measureIdle(ctx context.Context, o fanoutOptions, transport string, tg *fanoutTarget, res *fanoutResult) error {
	if o.idle == 0 {
		return nil
	}
	m0, err := serverMemory(ctx, tg)
	if err != nil {
		return err
	}
	ictx, icancel := context.WithCancel(ctx)
	defer icancel()
	var iwg sync.WaitGroup
	for i := range o.idle {
		if err := subscribeFanout(ictx, tg, transport, fmt.Sprintf("i%04d", i%o.idleTables), nil, &iwg); err != nil {
			return err
		}
	}
	time.Sleep(500 * time.Millisecond)
	m1, err := serverMemory(ctx, tg)
	if err != nil {
		return err
	}
	n := float64(o.idle)
	res.IdleSubscribers = o.idle
	res.IdleKiBPerSub = float64((m1.heap+m1.stack)-(m0.heap+m0.stack)) / 1024 / n
	res.IdleRSSKiBPerSub = float64(m1.rss-m0.rss) / n // KiB already
	res.IdleGoroutinesPer = float64(m1.goroutines-m0.goroutines) / n
	icancel()
	iwg.Wait()
	return nil
}

// receipts counts the changes received and, while timing, when each was
// received and when its write was answered (the value carries the write's
// send time, which names the write).
type receipts struct {
	count  atomic.Int64
	timing atomic.Bool
	since  atomic.Int64 // changes written before (unix ns) are not counted: the previous phase's
	mu     sync.Mutex
	got    []receipt
	answer map[int64]int64 // write's send time → its answer's arrival (unix ns)
}

// receipt is one change received: its write's send time and the arrival.
type receipt struct{ sent, at int64 }

func (r *receipts) reset(timing bool) {
	r.mu.Lock()
	r.got = r.got[:0]
	r.answer = map[int64]int64{}
	r.mu.Unlock()
	r.count.Store(0)
	r.timing.Store(timing)
	r.since.Store(time.Now().UnixNano())
}

// answered records that the write sent at sent was answered at at.
func (r *receipts) answered(sent, at int64) {
	r.mu.Lock()
	r.answer[sent] = at
	r.mu.Unlock()
}

// saw takes one frame or event's data: every "t": in it is a change's
// send time (the benchmark's values hold nothing else named t).
func (r *receipts) saw(data []byte) {
	if r == nil {
		return
	}
	now := time.Now().UnixNano()
	timing, since := r.timing.Load(), r.since.Load()
	var got []receipt
	for {
		i := bytes.Index(data, []byte(`"t":`))
		if i < 0 {
			break
		}
		data = data[i+4:]
		var t int64
		j := 0
		for ; j < len(data) && data[j] >= '0' && data[j] <= '9'; j++ {
			t = t*10 + int64(data[j]-'0')
		}
		data = data[j:]
		if t < since {
			continue
		}
		r.count.Add(1)
		if timing {
			got = append(got, receipt{sent: t, at: now})
		}
	}
	if len(got) > 0 {
		r.mu.Lock()
		r.got = append(r.got, got...)
		r.mu.Unlock()
	}
}

// report sets res's latencies: write → receipt, commit (the write's
// answer) → receipt, write → answer.
func (r *receipts) report(res *fanoutResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var wr, cr, wa []time.Duration
	for _, g := range r.got {
		wr = append(wr, time.Duration(g.at-g.sent))
		if a, ok := r.answer[g.sent]; ok {
			cr = append(cr, time.Duration(g.at-a))
		}
	}
	for sent, a := range r.answer {
		wa = append(wa, time.Duration(a-sent))
	}
	res.P50Ms, res.P99Ms, res.MaxMs = percentilesMs(wr)
	res.CommitP50Ms, res.CommitP99Ms, res.CommitMaxMs = percentilesMs(cr)
	res.AnswerP50Ms, res.AnswerP99Ms, _ = percentilesMs(wa)
}

// percentilesMs are d's p50, p99 and max in ms (the index rule
// ⌊p/100·(n−1)⌋); d is sorted.
func percentilesMs(d []time.Duration) (p50, p99, pmax float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[int(p/100*float64(len(d)-1))]) / 1e6 }
	return at(50), at(99), at(100)
}

// saveTrace saves the server's execution trace of d (the admin's
// /debug/pprof/trace) to path.
func saveTrace(ctx context.Context, tg *fanoutTarget, path string, d time.Duration) error {
	url := fmt.Sprintf("%s/debug/pprof/trace?seconds=%d", tg.base, max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return fmt.Errorf("bench fanout: trace: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tg.admin)
	resp, err := (&http.Client{Transport: tg.hc.Transport}).Do(req)
	if err != nil {
		return fmt.Errorf("bench fanout: trace: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench fanout: trace: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench fanout: trace: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("bench fanout: trace %s: %w", path, err)
	}
	return f.Close()
}

// serverMetrics reads a RouteHound server's /metrics (the admin's); nil
// for a server without them (Centrifugo) or when they cannot be read.
func serverMetrics(ctx context.Context, tg *fanoutTarget) map[string]float64 {
	if tg.centrifugo || tg.admin == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, "GET", tg.base+"/metrics", nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+tg.admin)
	resp, err := tg.hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads Prometheus text: series (name{labels}) → value.
func parseMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// histogramDelta is the histogram series (name{labels}) between two reads
// of /metrics: its count, mean and quantiles, interpolated linearly within
// the bucket that holds each (as histogram_quantile).
func histogramDelta(m0, m1 map[string]float64, series string) (serverDelay, bool) {
	name, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	count := m1[name+"_count{"+labels+"}"] - m0[name+"_count{"+labels+"}"]
	if _, ok := m1[name+"_count{"+labels+"}"]; !ok || count <= 0 {
		return serverDelay{}, false
	}
	type bucket struct{ le, cum float64 }
	var bs []bucket
	prefix := name + "_bucket{" + labels + `,le="`
	for k, v := range m1 {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le = strings.TrimSuffix(le, `"}`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{bound, v - m0[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	q := func(p float64) float64 {
		rank := p * count
		lo, below := 0.0, 0.0
		for _, b := range bs {
			if b.cum >= rank {
				if math.IsInf(b.le, 1) {
					return lo * 1000 // past the last bound: the last bound
				}
				if b.cum == below {
					return b.le * 1000
				}
				return (lo + (b.le-lo)*(rank-below)/(b.cum-below)) * 1000
			}
			lo, below = b.le, b.cum
		}
		return lo * 1000
	}
	sum := m1[name+"_sum{"+labels+"}"] - m0[name+"_sum{"+labels+"}"]
	return serverDelay{Count: count, P50Ms: q(0.5), P99Ms: q(0.99), AvgMs: sum / count * 1000}, true
}

// subscribeFanout opens one subscriber of table and returns once its
// snapshot is in; its reader runs until ctx ends (wg counts it). rec nil:
// an idle subscriber (nothing is written to its table).
func subscribeFanout(ctx context.Context, tg *fanoutTarget, transport, table string, rec *receipts, wg *sync.WaitGroup) error {
	ready := make(chan error, 1)
	wg.Add(1)
	if transport == "centrifugo" {
		go subscribeCentrifugo(ctx, tg, table, rec, wg, ready)
	} else if transport == "sse" {
		req, err := http.NewRequestWithContext(ctx, "GET", tg.base+"/v1/tables/"+table+"/events", nil)
		if err != nil {
			wg.Done()
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tg.dashboard)
		go func() {
			defer wg.Done()
			resp, err := (&http.Client{Transport: tg.hc.Transport}).Do(req) // no timeout: a stream
			if err != nil {
				ready <- fmt.Errorf("bench fanout: SSE subscribe %s: %w", table, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ready <- fmt.Errorf("bench fanout: SSE subscribe %s: %s", table, resp.Status)
				return
			}
			sc := bufio.NewScanner(resp.Body)
			live := false
			for sc.Scan() {
				line := sc.Bytes()
				switch {
				case !live && bytes.Equal(line, []byte("event: snapshot")):
					live = true
					ready <- nil
				case live && bytes.HasPrefix(line, []byte("data: ")):
					rec.saw(line)
				}
			}
			if !live {
				ready <- fmt.Errorf("bench fanout: SSE %s ended before its snapshot", table)
			}
		}()
	} else {
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, strings.Replace(tg.base, "http", "ws", 1)+"/v1/ws",
				&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tg.dashboard}}})
			if err != nil {
				ready <- fmt.Errorf("bench fanout: WebSocket %s: %w", table, err)
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(16 << 20)
			msg := fmt.Sprintf(`{"op":"subscribe","table":%q,"batch":%t}`, table, transport == "ws-batch")
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				ready <- fmt.Errorf("bench fanout: WebSocket %s: %w", table, err)
				return
			}
			live := false
			for {
				_, data, err := c.Read(ctx)
				if err != nil {
					if !live {
						ready <- fmt.Errorf("bench fanout: WebSocket %s ended before its snapshot: %w", table, err)
					}
					return
				}
				switch {
				case bytes.HasPrefix(data, []byte(`{"type":"change`)): // change or changes
					rec.saw(data)
				case !live && bytes.Contains(data, []byte(`"type":"snapshot"`)) && bytes.Contains(data, []byte(`"last":true`)):
					live = true
					ready <- nil
				case bytes.HasPrefix(data, []byte(`{"type":"error"`)):
					if !live {
						ready <- fmt.Errorf("bench fanout: WebSocket %s: %s", table, data)
						return
					}
				}
			}
		}()
	}
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(benchAnswerTimeout):
		return fmt.Errorf("bench fanout: no snapshot of %s within %v", table, benchAnswerTimeout)
	}
}

// subscribeCentrifugo is subscribeFanout's subscriber of a Centrifugo
// channel: its WebSocket with the JSON protocol (connect, subscribe, then
// publications as pushes; several messages a frame, one a line), answering
// the server's pings.
func subscribeCentrifugo(ctx context.Context, tg *fanoutTarget, channel string, rec *receipts, wg *sync.WaitGroup, ready chan<- error) {
	defer wg.Done()
	c, _, err := websocket.Dial(ctx, strings.Replace(tg.base, "http", "ws", 1)+"/connection/websocket", nil)
	if err != nil {
		ready <- fmt.Errorf("bench fanout: Centrifugo WebSocket %s: %w", channel, err)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(16 << 20)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"id":1,"connect":{}}`)); err != nil {
		ready <- fmt.Errorf("bench fanout: Centrifugo connect %s: %w", channel, err)
		return
	}
	live := false
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			if !live {
				ready <- fmt.Errorf("bench fanout: Centrifugo %s ended before its subscription: %w", channel, err)
			}
			return
		}
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			switch {
			case bytes.HasPrefix(line, []byte(`{"push"`)):
				rec.saw(line)
			case bytes.Equal(bytes.TrimSpace(line), []byte(`{}`)): // ping
				if err := c.Write(ctx, websocket.MessageText, []byte(`{}`)); err != nil {
					return
				}
			case bytes.Contains(line, []byte(`"error"`)):
				if !live {
					ready <- fmt.Errorf("bench fanout: Centrifugo %s: %s", channel, line)
					return
				}
			case bytes.HasPrefix(line, []byte(`{"id":1,`)):
				msg := fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, channel)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					ready <- fmt.Errorf("bench fanout: Centrifugo subscribe %s: %w", channel, err)
					return
				}
			case !live && bytes.HasPrefix(line, []byte(`{"id":2,`)):
				live = true
				ready <- nil
			}
		}
	}
}

// writeFanout puts changes round robin over tables for d: at rate per
// second (writers 0), or with writers each as fast as it is answered. It
// returns the writes answered 2xx, and records when each was answered in
// rec (when not nil).
func writeFanout(ctx context.Context, tg *fanoutTarget, tables []string, rate, writers int, d time.Duration, rec *receipts) int64 {
	var ok atomic.Int64
	var n atomic.Int64
	put := func(i int64) {
		sent := time.Now().UnixNano()
		body := fmt.Sprintf(`{"t":%d,"p":"0123456789abcdef0123456789abcdef"}`, sent)
		table := tables[i%int64(len(tables))]
		method, url := "PUT", fmt.Sprintf("%s/v1/tables/%s/keys/k%d", tg.base, table, i%100)
		if tg.centrifugo { // a publication through the HTTP API (nothing durable)
			method, url, body = "POST", tg.base+"/api/publish", fmt.Sprintf(`{"channel":%q,"data":%s}`, table, body)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			return
		}
		if tg.dashboard != "" {
			req.Header.Set("Authorization", "Bearer "+tg.dashboard)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := tg.hc.Do(req)
		if err != nil {
			return
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 && !(tg.centrifugo && bytes.Contains(answer, []byte(`"error"`))) {
			ok.Add(1)
			if rec != nil {
				rec.answered(sent, time.Now().UnixNano())
			}
		}
	}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	if writers > 0 {
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && ctx.Err() == nil {
					put(n.Add(1))
				}
			}()
		}
		wg.Wait()
		return ok.Load()
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	sem := make(chan struct{}, 64) // a write waits for its fsync: several in flight
	for time.Now().Before(end) && ctx.Err() == nil {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			defer func() { <-sem }()
			put(i)
		}(n.Add(1))
	}
	wg.Wait()
	return ok.Load()
}

func mustTicks(pid int) int64 {
	t, _ := procCPUTicks(pid)
	return t
}

type serverMem struct {
	heap, stack, rss int64 // bytes, bytes, KiB
	goroutines       int64
}

// serverMemory reads the server's heap in use and stacks right after a GC
// (the admin's GET /debug/pprof/heap?gc=1&debug=1 runs one and prints the
// runtime's MemStats), its goroutines and its RSS.
func serverMemory(ctx context.Context, tg *fanoutTarget) (serverMem, error) {
	get := func(path string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", tg.base+path, nil)
		if err != nil {
			return "", err
		}
		if tg.admin != "" {
			req.Header.Set("Authorization", "Bearer "+tg.admin)
		}
		resp, err := tg.hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("bench fanout: GET %s: %w", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("bench fanout: GET %s: %s %v", path, resp.Status, err)
		}
		return string(b), nil
	}
	var m serverMem
	heap, err := get("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return m, err
	}
	for line := range strings.SplitSeq(heap, "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.heap, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			inuse, _, _ := strings.Cut(v, " /")
			m.stack, _ = strconv.ParseInt(strings.TrimSpace(inuse), 10, 64)
		}
	}
	gr, err := get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return m, err
	}
	first, _, _ := strings.Cut(gr, "\n")
	m.goroutines, _ = strconv.ParseInt(strings.TrimPrefix(first, "goroutine profile: total "), 10, 64)
	if _, m.rss, err = procMemory(tg.pid); err != nil {
		return m, fmt.Errorf("bench fanout: %w", err)
	}
	if m.heap == 0 || m.stack == 0 || m.goroutines == 0 {
		return m, errors.New("bench fanout: the server's heap profile lacks HeapInuse, Stack or the goroutine count")
	}
	return m, nil
}

// writeFanoutConfig writes the child's config: a dashboard and an admin
// token (and one per other role) and limits that let subs subscribers on
// tables tables in.
func writeFanoutConfig(dir string, subs, tables int) (*fanoutTarget, string, error) {
	tg := &fanoutTarget{}
	var b bytes.Buffer
	for _, r := range config.Roles {
		var rnd [16]byte
		if _, err := crand.Read(rnd[:]); err != nil {
			return nil, "", fmt.Errorf("bench fanout: token: %w", err)
		}
		tok := r + "-" + hex.EncodeToString(rnd[:])
		switch r {
		case "dashboard":
			tg.dashboard = tok
		case "admin":
			tg.admin = tok
		}
		fmt.Fprintf(&b, "[[tokens]]\nrole = %q\ntoken = %q\n\n", r, tok)
	}
	fmt.Fprintf(&b, "[http]\nmax_conns = %d\n\n[hub]\nmax_subscribers = %d\nmax_subscribers_per_table = 100\n\n[tables]\nmax_tables = %d\n",
		2*subs+1024, subs+1024, tables+64)
	path := filepath.Join(dir, "routehound.toml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return nil, "", fmt.Errorf("bench fanout: config: %w", err)
	}
	return tg, path, nil
}
