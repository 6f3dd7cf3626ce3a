//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"routehound/config"
	"routehound/internal/ceiling"
)

// benchCmd runs `routehound bench BENCHMARK`: ingest (the driver
// firehose) or fanout (table subscribers over WebSocket and SSE).
func benchCmd(args []string) error {
	const usage = "usage: routehound bench ingest|fanout [flags] (routehound bench ingest --help)"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(os.Stderr, usage)
		return flag.ErrHelp // asked for: main exits 0
	}
	switch {
	case len(args) > 0 && args[0] == "ingest":
		return benchIngest(args[1:])
	case len(args) > 0 && args[0] == "fanout":
		return benchFanout(args[1:])
	}
	return errors.New("bench: " + usage)
}

// ingestOptions are the flags of `routehound bench ingest`.
type ingestOptions struct {
	conns, batch, driversPerConn, inflight int
	rate                                   float64 // points/s offered in all (HTTP); 0: as fast as the server answers
	warmup, measure, drain                 time.Duration
	stream                                 bool
	target, tokensFile, cfgPath, dir       string
	pid                                    int
	badgerFor, fsyncFor                    time.Duration
	jsonOut                                string
	quiet                                  bool
}

// Bounds of the child server's life (as the end-to-end tests use).
const (
	benchReadyTimeout  = 30 * time.Second // start until GET /readyz == 200 (includes recovery)
	benchStopTimeout   = 30 * time.Second // SIGTERM until exit (the server's own drain is bounded by shutdown_timeout)
	benchKillTimeout   = 10 * time.Second // SIGKILL until the process is reaped
	maxRetryAfter      = 10 * time.Second // a longer Retry-After is waited this long
	benchAnswerTimeout = 30 * time.Second // a request's or a stream frame's answer
	clkTck             = 100              // USER_HZ: clock ticks of /proc/<pid>/stat on Linux
)

// benchIngest runs `routehound bench ingest`: the driver firehose of issue
// 16, with the client in this process and the server in another, next to
// the storage ceilings measured in the same run.
func benchIngest(args []string) error {
	var o ingestOptions
	fs := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fs.IntVar(&o.conns, "conns", 16, "connections, each posting (or streaming) for its own drivers")
	fs.IntVar(&o.batch, "batch", 100, "points per request (or stream frame)")
	fs.IntVar(&o.driversPerConn, "drivers", 1, "drivers per connection, used in turn (with --stream at least --inflight)")
	fs.IntVar(&o.inflight, "inflight", 1, "--stream: frames a connection sends before it waits for an answer (each for another driver)")
	fs.Float64Var(&o.rate, "rate", 0, "points/s offered in all connections together, paced (HTTP only; 0: as fast as the server answers). At a fixed rate the CPU per point compares builds fairly")
	fs.BoolVar(&o.stream, "stream", false, "send over the WebSocket driver stream /v1/drivers/stream instead of POST /v1/drivers/{driver}/locations")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before the measured window")
	fs.DurationVar(&o.measure, "measure", 10*time.Second, "measured window")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "after the window, how long to wait for every accepted point to become durable")
	fs.StringVar(&o.target, "target", "", "URL of a running RouteHound to drive (default: start `routehound serve` from this binary on a temporary data dir)")
	fs.StringVar(&o.tokensFile, "tokens", "", "with --target: the target's tokens.toml ([[tokens]] role/token)")
	fs.IntVar(&o.pid, "pid", 0, "with --target: the server's process id, to read its CPU time and RSS from /proc")
	fs.StringVar(&o.cfgPath, "config", "", "TOML config of the child server (default: the embedded defaults); listen, data dir and tokens are the benchmark's")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "where the child's temporary data dir and the ceilings' files go (the filesystem measured)")
	fs.DurationVar(&o.badgerFor, "badger-for", 3*time.Second, "length of each bare Badger ceiling run (before and after the load)")
	fs.DurationVar(&o.fsyncFor, "fsync-for", 2*time.Second, "length of each fsync ceiling run (before and after the load)")
	fs.StringVar(&o.jsonOut, "json", "", "write the report as JSON to this file")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench ingest: unexpected arguments %q", fs.Args())
	}
	if err := o.validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := runIngest(ctx, o)
	if err != nil {
		return err
	}
	fmt.Print(rep.human())
	return writeReport(o.jsonOut, "bench ingest", rep)
}

func (o *ingestOptions) validate() error {
	switch {
	case o.conns < 1 || o.conns > 4096:
		return fmt.Errorf("bench ingest: --conns %d: want 1..4096", o.conns)
	case o.rate < 0 || o.rate > 0 && o.stream:
		return fmt.Errorf("bench ingest: --rate %v: want >= 0, and HTTP only", o.rate)
	case o.batch < 1 || o.batch > 10000:
		return fmt.Errorf("bench ingest: --batch %d: want 1..10000", o.batch)
	case o.driversPerConn < 1 || o.driversPerConn > 1000:
		return fmt.Errorf("bench ingest: --drivers %d: want 1..1000", o.driversPerConn)
	case o.inflight < 1 || o.inflight > 1000:
		return fmt.Errorf("bench ingest: --inflight %d: want 1..1000", o.inflight)
	case o.inflight > 1 && !o.stream:
		return errors.New("bench ingest: --inflight is for --stream (a HTTP connection has one request in flight)")
	case o.warmup < 0 || o.measure <= 0 || o.drain < 0:
		return errors.New("bench ingest: --warmup and --drain must be >= 0, --measure > 0")
	case o.badgerFor <= 0 || o.fsyncFor <= 0:
		return errors.New("bench ingest: --badger-for and --fsync-for must be > 0")
	case o.target != "" && o.tokensFile == "":
		return errors.New("bench ingest: --target needs --tokens FILE (the target's tokens.toml)")
	case o.target == "" && (o.tokensFile != "" || o.pid != 0):
		return errors.New("bench ingest: --tokens and --pid go with --target")
	case o.target != "" && o.cfgPath != "":
		return errors.New("bench ingest: --config is the child's; a --target runs with its own")
	}
	// A connection keeps one frame in flight per driver: a refused frame is
	// resent, and a later frame of the same driver accepted meanwhile would
	// make its points duplicates (dropped, never stored).
	o.driversPerConn = max(o.driversPerConn, o.inflight)
	return nil
}

// ingestReport is what one run measured; the JSON of --json.
type ingestReport struct {
	Date           string  `json:"date"`
	Mode           string  `json:"mode"` // http or stream
	Target         string  `json:"target"`
	Connections    int     `json:"connections"`
	Batch          int     `json:"batch_points"`
	DriversPerConn int     `json:"drivers_per_connection"`
	Inflight       int     `json:"inflight"`
	Rate           float64 `json:"offered_points_per_second,omitempty"` // --rate; 0: as fast as answered
	WarmupSeconds  float64 `json:"warmup_seconds"`
	WindowSeconds  float64 `json:"window_seconds"`

	DurablePoints  int64    `json:"durable_points"`
	DurablePerSec  float64  `json:"durable_points_per_s"`
	AcceptedPoints int64    `json:"accepted_points"`
	AcceptedPerSec float64  `json:"accepted_points_per_s"`
	Requests       int64    `json:"requests"`        // answered 202 (or acked frames) in the window
	Refusals       int64    `json:"refusals"`        // 429/503 (lane_full on the stream), retried, over the whole run
	Errors         int64    `json:"errors"`          // anything else unexpected, over the whole run
	BackoffSeconds float64  `json:"backoff_seconds"` // connection-seconds spent waiting after refusals, over the whole run
	ErrorSamples   []string `json:"error_samples,omitempty"`
	Drained        bool     `json:"drained"` // every accepted point was durable within --drain after the window

	BadgerBefore float64 `json:"badger_recs_per_s_before"`
	BadgerAfter  float64 `json:"badger_recs_per_s_after"`
	BadgerMean   float64 `json:"badger_recs_per_s"`
	FsyncBefore  float64 `json:"fsyncs_per_s_before"`
	FsyncAfter   float64 `json:"fsyncs_per_s_after"`
	FsyncMean    float64 `json:"fsyncs_per_s"`
	RatioBadger  float64 `json:"ratio_to_badger"` // durable pts/s ÷ Badger records/s
	RatioFsync   float64 `json:"ratio_to_fsyncs"` // durable pts/s ÷ fsyncs/s

	// Server side: absent with --target and no --pid.
	ServerPID        int      `json:"server_pid,omitempty"`
	ServerCPUSeconds *float64 `json:"server_cpu_seconds,omitempty"` // utime+stime over the window
	CPUMicrosPerPt   *float64 `json:"server_cpu_us_per_durable_point,omitempty"`
	Cores            *float64 `json:"server_cores,omitempty"`
	PeakRSSMiB       *float64 `json:"server_peak_rss_mib,omitempty"` // VmHWM: the process's peak since it started
	EndRSSMiB        *float64 `json:"server_rss_mib_end,omitempty"`  // VmRSS at the window's end
	// PeakAnonMiB is the largest RssAnon sampled in the window (every
	// 200 ms): the process's own memory, without the pages of the store's
	// files mapped into it (RssFile: page cache the kernel can reclaim).
	PeakAnonMiB *float64 `json:"server_peak_anon_rss_mib,omitempty"`

	LoadAvg   string `json:"loadavg_at_start"` // /proc/loadavg before the run: the box may be shared
	Nproc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
}

func (r *ingestReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "routehound bench ingest: %s against %s, %s\n", r.Mode, r.Target, r.Date)
	fmt.Fprintf(&b, "  load      %d connections x %d-point batches, %d driver(s) each, %d in flight; warm-up %.0fs, window %.2fs\n",
		r.Connections, r.Batch, r.DriversPerConn, r.Inflight, r.WarmupSeconds, r.WindowSeconds)
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  offered   %.0f points/s, paced (--rate)\n", r.Rate)
	}
	fmt.Fprintf(&b, "  durable   %.0f points/s (%d points)   accepted %.0f points/s (%d points, %d requests)\n",
		r.DurablePerSec, r.DurablePoints, r.AcceptedPerSec, r.AcceptedPoints, r.Requests)
	fmt.Fprintf(&b, "  ceilings  badger %.0f records/s (before %.0f, after %.0f)   fsync %.0f/s (before %.0f, after %.0f)\n",
		r.BadgerMean, r.BadgerBefore, r.BadgerAfter, r.FsyncMean, r.FsyncBefore, r.FsyncAfter)
	fmt.Fprintf(&b, "  ratios    %.3f x badger synced-batch rate   %.1f x fsyncs/s\n", r.RatioBadger, r.RatioFsync)
	if r.CPUMicrosPerPt != nil {
		fmt.Fprintf(&b, "  server    %.2f us CPU per durable point   %.2f cores   peak RSS %.0f MiB (at window end %.0f MiB)",
			*r.CPUMicrosPerPt, *r.Cores, *r.PeakRSSMiB, *r.EndRSSMiB)
		if r.PeakAnonMiB != nil {
			fmt.Fprintf(&b, "   peak anonymous RSS %.0f MiB (the rest: the store's mapped files)", *r.PeakAnonMiB)
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "  server    CPU and RSS n/a (--target without --pid)\n")
	}
	drained := "yes"
	if !r.Drained {
		drained = "NO"
	}
	fmt.Fprintf(&b, "  errors    %d   refusals %d (429/503, lane_full on the stream; retried, %.0f connection-s waited)   every accepted point durable after the window: %s\n",
		r.Errors, r.Refusals, r.BackoffSeconds, drained)
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(&b, "    error: %s\n", s)
	}
	fmt.Fprintf(&b, "  machine   %d CPUs, %s, %s, load average at start %s\n", r.Nproc, r.CPUModel, r.GoVersion, r.LoadAvg)
	return b.String()
}

// runIngest measures the ceilings, runs the load against a child server
// (or the target), measures the ceilings again and reports.
func runIngest(ctx context.Context, o ingestOptions) (*ingestReport, error) {
	rep := &ingestReport{
		Date: time.Now().UTC().Format(time.RFC3339), Mode: "http", Connections: o.conns, Batch: o.batch,
		DriversPerConn: o.driversPerConn, Inflight: o.inflight, Rate: o.rate, WarmupSeconds: o.warmup.Seconds(),
		Nproc: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(), LoadAvg: loadAvg(),
	}
	if o.stream {
		rep.Mode = "stream"
	}
	progress := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(os.Stderr, "bench ingest: "+format+"\n", args...)
		}
	}

	progress("ceilings before the load (badger %s, fsync %s) in %s", o.badgerFor, o.fsyncFor, o.dir)
	var err error
	if rep.BadgerBefore, rep.FsyncBefore, err = ceilings(ctx, o); err != nil {
		return nil, err
	}

	var token, base string
	var pid int
	if o.target != "" {
		tc, err := config.Load(o.tokensFile)
		if err != nil {
			return nil, fmt.Errorf("bench ingest: %w", err)
		}
		for _, t := range tc.Tokens {
			if t.Role == "driver" {
				token = t.Token
				break
			}
		}
		if token == "" {
			return nil, fmt.Errorf("bench ingest: %s has no driver token", o.tokensFile)
		}
		base, pid, rep.Target = strings.TrimRight(o.target, "/"), o.pid, o.target
	} else {
		ch, err := startBenchServer(ctx, o)
		if err != nil {
			return nil, err
		}
		defer ch.close()
		token, base, pid, rep.Target = ch.token, ch.base, ch.pid(), "child routehound serve (pid "+strconv.Itoa(ch.pid())+")"
		progress("server: %s, data dir %s", base, ch.dataDir)
	}
	rep.ServerPID = pid

	if err := drive(ctx, o, base, token, pid, rep, progress); err != nil {
		return nil, err
	}

	progress("ceilings after the load")
	if rep.BadgerAfter, rep.FsyncAfter, err = ceilings(ctx, o); err != nil {
		return nil, err
	}
	rep.BadgerMean = (rep.BadgerBefore + rep.BadgerAfter) / 2
	rep.FsyncMean = (rep.FsyncBefore + rep.FsyncAfter) / 2
	if rep.BadgerMean > 0 {
		rep.RatioBadger = rep.DurablePerSec / rep.BadgerMean
	}
	if rep.FsyncMean > 0 {
		rep.RatioFsync = rep.DurablePerSec / rep.FsyncMean
	}
	return rep, nil
}

func ceilings(ctx context.Context, o ingestOptions) (badgerRate, fsyncRate float64, err error) {
	if badgerRate, err = ceiling.Badger(ctx, o.dir, o.badgerFor); err != nil {
		return 0, 0, fmt.Errorf("bench ingest: %w", err)
	}
	if fsyncRate, err = ceiling.Fsync(ctx, o.dir, o.fsyncFor); err != nil {
		return 0, 0, fmt.Errorf("bench ingest: %w", err)
	}
	return badgerRate, fsyncRate, nil
}

// benchServer is the child `routehound serve`; close stops it (SIGTERM,
// then SIGKILL to its process group) and removes its temporary dir.
type benchServer struct {
	dir, dataDir, logPath string
	base, token           string
	cmd                   *exec.Cmd
	done                  chan struct{} // closed once the child is reaped
}

func (s *benchServer) pid() int { return s.cmd.Process.Pid }

func (s *benchServer) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// startBenchServer starts this binary as `routehound serve` on a fresh
// temporary data dir and a free loopback port, with one random token per
// role, and waits until GET /readyz answers 200.
func startBenchServer(ctx context.Context, o ingestOptions) (*benchServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench ingest: this binary: %w", err)
	}
	dir, err := os.MkdirTemp(o.dir, "routehound-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench ingest: temp dir: %w", err)
	}
	s := &benchServer{dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log")}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if err := os.Mkdir(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench ingest: %w", err)
	}
	cfgPath, token, err := writeBenchConfig(dir, o.cfgPath)
	if err != nil {
		return nil, err
	}
	s.token = token
	for attempt := 1; ; attempt++ {
		err := s.start(ctx, exe, cfgPath)
		if err == nil {
			ok = true
			return s, nil
		}
		// Another process may take the port between freeLoopbackPort and
		// the server's listen; only that failure is retried.
		if errors.Is(err, errBenchPortInUse) && attempt < 3 {
			continue
		}
		return nil, fmt.Errorf("bench ingest: %w\nserver log tail:\n%s", err, logTail(s.logPath, 4<<10))
	}
}

var errBenchPortInUse = errors.New("port already in use")

func (s *benchServer) start(ctx context.Context, exe, cfgPath string) error {
	return s.startCmd(ctx, exe, func(addr string) ([]string, error) {
		return []string{"serve", "--config", cfgPath, "--data", s.dataDir, "--listen", addr}, nil
	}, "/readyz")
}

// startCmd starts exe with the arguments argv gives for a free loopback
// address and waits until GET readyPath answers 200 there.
func (s *benchServer) startCmd(ctx context.Context, exe string, argv func(addr string) ([]string, error), readyPath string) error {
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("server log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	offset, _ := logf.Seek(0, io.SeekEnd)
	args, err := argv(addr)
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so that SIGKILL reaches all of it; Pdeathsig, so
	// that no server outlives a benchmark killed without a chance to stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s serve: %w", exe, err)
	}
	s.cmd, s.done, s.base = cmd, make(chan struct{}), "http://"+addr
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(s.done)

	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(benchReadyTimeout)
	for time.Now().Before(deadline) {
		if s.exited() {
			s.cmd = nil
			if strings.Contains(readFromOffset(s.logPath, offset), "address already in use") {
				return errBenchPortInUse
			}
			return fmt.Errorf("%s %s exited before ready (%v)", filepath.Base(exe), args[0], cmd.ProcessState)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if r, err := hc.Get(s.base + readyPath); err == nil {
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("GET %s did not answer 200 within %v", readyPath, benchReadyTimeout)
}

// close stops the child if it runs (SIGTERM, SIGKILL to its group after
// benchStopTimeout) and removes the temporary dir. It reports nothing: it
// runs on every exit path, and a child that will not die is said on stderr.
func (s *benchServer) close() {
	if s.cmd != nil && !s.exited() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(benchStopTimeout):
			fmt.Fprintf(os.Stderr, "bench ingest: server %d did not exit within %v of SIGTERM; killing it\n", s.pid(), benchStopTimeout)
			_ = syscall.Kill(-s.pid(), syscall.SIGKILL)
			select {
			case <-s.done:
			case <-time.After(benchKillTimeout):
				fmt.Fprintf(os.Stderr, "bench ingest: server %d not reaped within %v of SIGKILL\n", s.pid(), benchKillTimeout)
			}
		}
		if s.cmd.ProcessState != nil && !s.cmd.ProcessState.Success() {
			fmt.Fprintf(os.Stderr, "bench ingest: server exit: %v; log tail:\n%s\n", s.cmd.ProcessState, logTail(s.logPath, 4<<10))
		}
	}
	_ = os.RemoveAll(s.dir)
}

// writeBenchConfig writes the child's config: the --config file (or
// nothing: the embedded defaults) with one random token per role added,
// unless that file names tokens, which are then used. It returns the
// config's path and the driver token.
func writeBenchConfig(dir, base string) (path, driverToken string, err error) {
	var b bytes.Buffer
	if base != "" {
		c, err := config.Load(base)
		if err != nil {
			return "", "", fmt.Errorf("bench ingest: %w", err)
		}
		raw, err := os.ReadFile(base)
		if err != nil {
			return "", "", fmt.Errorf("bench ingest: %w", err)
		}
		b.Write(raw)
		b.WriteString("\n")
		for _, t := range c.Tokens {
			if t.Role == "driver" && driverToken == "" {
				driverToken = t.Token
			}
		}
		if len(c.Tokens) > 0 && driverToken == "" {
			return "", "", fmt.Errorf("bench ingest: %s names tokens but none for the driver role", base)
		}
	}
	if driverToken == "" {
		for _, r := range config.Roles {
			var rnd [16]byte
			if _, err := crand.Read(rnd[:]); err != nil {
				return "", "", fmt.Errorf("bench ingest: token: %w", err)
			}
			tok := r + "-" + hex.EncodeToString(rnd[:])
			if r == "driver" {
				driverToken = tok
			}
			fmt.Fprintf(&b, "[[tokens]]\nrole = %q\ntoken = %q\n\n", r, tok)
		}
	}
	path = filepath.Join(dir, "routehound.toml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return "", "", fmt.Errorf("bench ingest: config: %w", err)
	}
	return path, driverToken, nil
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readFromOffset(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

func logTail(path string, n int64) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return readFromOffset(path, max(0, fi.Size()-n))
}

// benchDriver is one driver's client side: the next seq to send (touched
// only by its connection's goroutine) and the highest durable_seq the
// server has told (read by the window's samples).
type benchDriver struct {
	name    string
	next    uint64 // seq of the next point to send; points 1..next-1 were accepted
	sent    atomic.Uint64
	durable atomic.Uint64
	buf     []byte // the driver's own body buffer
	pending []byte // the body being sent, resent as is after a refusal; nil once answered
}

func (d *benchDriver) sawDurable(seq uint64) {
	for {
		cur := d.durable.Load()
		if seq <= cur || d.durable.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// loadStats are the counters the connections share.
type loadStats struct {
	accepted, requests, refusals, errors atomic.Int64
	backoff                              atomic.Int64 // ns connections spent waiting after a refusal

	mu      sync.Mutex
	samples []string
}

func (s *loadStats) fail(format string, args ...any) {
	s.errors.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
}

// appendBatch appends a JSON array of n points with seqs first..first+n-1.
func appendBatch(b []byte, first uint64, n int) []byte {
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	b = append(b, '[')
	for j := range n {
		seq := first + uint64(j)
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"lat":`...)
		b = strconv.AppendFloat(b, 52.5+float64(seq%10000)*1e-5, 'f', 5, 64)
		b = append(b, `,"lng":`...)
		b = strconv.AppendFloat(b, 13.4+float64(seq%7919)*1e-5, 'f', 5, 64)
		b = append(b, `,"ts":"`...)
		b = append(b, ts...)
		b = append(b, `","speed_kmh":31.5,"heading":90}`...)
	}
	return append(b, ']')
}

// drive runs the load: warm-up, the measured window (samples of the
// drivers' durable seqs and of the server's CPU at both ends), then stops
// sending and waits up to --drain for every accepted point to be durable.
func drive(ctx context.Context, o ingestOptions, base, token string, pid int, rep *ingestReport, progress func(string, ...any)) error {
	var rnd [4]byte
	if _, err := crand.Read(rnd[:]); err != nil {
		return fmt.Errorf("bench ingest: run id: %w", err)
	}
	run := hex.EncodeToString(rnd[:]) // fresh driver names: a --target may know older ones
	drivers := make([][]*benchDriver, o.conns)
	for i := range drivers {
		for k := range o.driversPerConn {
			drivers[i] = append(drivers[i], &benchDriver{name: fmt.Sprintf("bench-%s-c%d-d%d", run, i, k), next: 1})
		}
	}
	durableSum := func() int64 {
		var n int64
		for _, ds := range drivers {
			for _, d := range ds {
				n += int64(d.durable.Load())
			}
		}
		return n
	}
	st := &loadStats{}
	stop := make(chan struct{})    // no new batches after this
	release := make(chan struct{}) // streams close after this (after the drain)
	hc := &http.Client{Timeout: benchAnswerTimeout, Transport: &http.Transport{
		MaxIdleConns: o.conns + 8, MaxIdleConnsPerHost: o.conns + 8, IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
	defer hc.CloseIdleConnections()

	var wg sync.WaitGroup
	loadErr := make(chan error, o.conns)
	for i := range o.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if o.stream {
				err = streamConn(ctx, o, base, token, drivers[i], st, stop, release)
			} else {
				httpConn(ctx, o, hc, base, token, drivers[i], st, stop)
			}
			if err != nil {
				loadErr <- err
			}
		}()
	}
	stopOnce := sync.OnceFunc(func() { close(stop) })
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer func() {
		stopOnce()
		releaseOnce()
		wg.Wait()
	}()

	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case err := <-loadErr:
			return err
		}
	}
	progress("warm-up %s with %d %s connections", o.warmup, o.conns, rep.Mode)
	if err := sleep(o.warmup); err != nil {
		return fmt.Errorf("bench ingest: warm-up: %w", err)
	}
	progress("measuring %s", o.measure)
	anonStop := make(chan struct{})
	anonPeak := make(chan int64, 1)
	go func() { anonPeak <- sampleAnon(pid, anonStop) }()
	cpu0, cpuErr := procCPUTicks(pid)
	acc0, req0, dur0, t0 := st.accepted.Load(), st.requests.Load(), durableSum(), time.Now()
	if err := sleep(o.measure); err != nil {
		return fmt.Errorf("bench ingest: window: %w", err)
	}
	acc1, req1, dur1, t1 := st.accepted.Load(), st.requests.Load(), durableSum(), time.Now()
	cpu1, cpuErr1 := procCPUTicks(pid)
	hwm, rss, memErr := procMemory(pid)
	close(anonStop)
	anonKB := <-anonPeak
	stopOnce()

	win := t1.Sub(t0).Seconds()
	rep.WindowSeconds = win
	rep.DurablePoints, rep.AcceptedPoints, rep.Requests = dur1-dur0, acc1-acc0, req1-req0
	rep.DurablePerSec, rep.AcceptedPerSec = float64(rep.DurablePoints)/win, float64(rep.AcceptedPoints)/win
	if pid > 0 {
		if err := errors.Join(cpuErr, cpuErr1, memErr); err != nil {
			return fmt.Errorf("bench ingest: server %d: %w", pid, err)
		}
		secs := float64(cpu1-cpu0) / clkTck
		cores := secs / win
		hwmMiB, rssMiB := float64(hwm)/1024, float64(rss)/1024
		rep.ServerCPUSeconds, rep.Cores, rep.PeakRSSMiB, rep.EndRSSMiB = &secs, &cores, &hwmMiB, &rssMiB
		if anonKB > 0 {
			anonMiB := float64(anonKB) / 1024
			rep.PeakAnonMiB = &anonMiB
		}
		if rep.DurablePoints > 0 {
			us := secs * 1e6 / float64(rep.DurablePoints)
			rep.CPUMicrosPerPt = &us
		}
	}

	// The drain: every connection finishes the batch it is sending; then
	// each driver must be told a durable_seq covering all it had accepted.
	progress("draining (up to %s)", o.drain)
	if !o.stream {
		wg.Wait()
		rep.Drained = drainHTTP(ctx, o, hc, base, token, drivers, st)
	} else {
		rep.Drained = waitDurable(ctx, drivers, o.drain)
		releaseOnce()
		wg.Wait()
	}
	rep.Refusals, rep.Errors = st.refusals.Load(), st.errors.Load()
	rep.BackoffSeconds = time.Duration(st.backoff.Load()).Seconds()
	st.mu.Lock()
	rep.ErrorSamples = append([]string(nil), st.samples...)
	st.mu.Unlock()
	select {
	case err := <-loadErr:
		return fmt.Errorf("bench ingest: %w", err)
	default:
	}
	return ctx.Err()
}

// waitDurable waits until every driver's durable seq covers its last seq
// sent and accepted, up to d; it reports whether they all did.
func waitDurable(ctx context.Context, drivers [][]*benchDriver, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		all := true
		for _, ds := range drivers {
			for _, dr := range ds {
				if dr.durable.Load() < dr.sent.Load() {
					all = false
				}
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// postAnswer is a driver endpoint's 202 answer.
type postAnswer struct {
	Accepted   int64  `json:"accepted"`
	Duplicates int64  `json:"duplicates"`
	DurableSeq uint64 `json:"durable_seq"`
}

// post sends one body for one driver. It returns the answer of a 202, or
// the delay to wait before resending after a 429/503 (refused: true), or
// an error for anything else.
func post(ctx context.Context, hc *http.Client, base, token, driver string, body []byte) (ans postAnswer, refused bool, wait time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/drivers/"+driver+"/locations", bytes.NewReader(body))
	if err != nil {
		return ans, false, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return ans, false, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ans, false, 0, fmt.Errorf("read answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusAccepted:
		if err := json.Unmarshal(raw, &ans); err != nil {
			return ans, false, 0, fmt.Errorf("202 answer %q: %w", clip(raw), err)
		}
		return ans, false, 0, nil
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		wait = time.Second
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			wait = min(time.Duration(secs)*time.Second, maxRetryAfter)
		}
		// The body's retry_after_ms is the measured wait; the header
		// rounds it up to whole seconds.
		var ra struct {
			MS int64 `json:"retry_after_ms"`
		}
		if json.Unmarshal(raw, &ra) == nil && ra.MS > 0 {
			wait = min(time.Duration(ra.MS)*time.Millisecond, maxRetryAfter)
		}
		return ans, true, wait, nil
	}
	return ans, false, 0, fmt.Errorf("answer %d %s", resp.StatusCode, clip(raw))
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// pause waits d, or less when stop or ctx ends first; it reports whether
// the whole pause passed.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
	case <-ctx.Done():
	}
	return false
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// httpConn posts batches for its drivers in turn, one request in flight,
// until stop. A refused (429/503) or failed batch is resent as is after
// the delay: duplicates are dropped by seq, so a resend never doubles.
func httpConn(ctx context.Context, o ingestOptions, hc *http.Client, base, token string, drivers []*benchDriver, st *loadStats, stop <-chan struct{}) {
	var every time.Duration // --rate: this connection's share, one batch per every
	next := time.Now()
	if o.rate > 0 {
		every = time.Duration(float64(time.Second) * float64(o.conns*o.batch) / o.rate)
	}
	for k := 0; !stopped(stop) && ctx.Err() == nil; k++ {
		if every > 0 {
			pause(ctx, stop, time.Until(next))
			next = next.Add(every)
		}
		d := drivers[k%len(drivers)]
		if d.pending == nil {
			d.buf = appendBatch(d.buf[:0], d.next, o.batch)
			d.pending = d.buf
		}
		ans, refused, wait, err := post(ctx, hc, base, token, d.name, d.pending)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			st.fail("POST %s: %v", d.name, err)
			pause(ctx, stop, 100*time.Millisecond)
		case refused:
			st.refusals.Add(1)
			st.backoff.Add(int64(wait))
			pause(ctx, stop, wait)
		default:
			d.pending = nil
			d.next += uint64(o.batch)
			d.sent.Store(d.next - 1)
			d.sawDurable(ans.DurableSeq)
			st.accepted.Add(ans.Accepted)
			st.requests.Add(1)
		}
	}
}

// drainHTTP resends each driver's last point (a duplicate, dropped) until
// its answer's durable_seq covers all the driver sent, up to --drain.
func drainHTTP(ctx context.Context, o ingestOptions, hc *http.Client, base, token string, drivers [][]*benchDriver, st *loadStats) bool {
	deadline := time.Now().Add(o.drain)
	for _, ds := range drivers {
		for _, d := range ds {
			last := d.sent.Load()
			if last == 0 {
				continue
			}
			one := appendBatch(nil, last, 1)
			for d.durable.Load() < last {
				if time.Now().After(deadline) || ctx.Err() != nil {
					return false
				}
				ans, refused, wait, err := post(ctx, hc, base, token, d.name, one)
				switch {
				case err != nil:
					st.fail("drain POST %s: %v", d.name, err)
					time.Sleep(100 * time.Millisecond)
				case refused:
					st.refusals.Add(1)
					time.Sleep(min(wait, time.Until(deadline)))
				default:
					d.sawDurable(ans.DurableSeq)
					if d.durable.Load() < last {
						time.Sleep(5 * time.Millisecond)
					}
				}
			}
		}
	}
	return true
}

// streamMsg is any server frame on /v1/drivers/stream: an answer to a
// frame (accepted set), a durable notice, or an error (type "error").
type streamMsg struct {
	Type       string  `json:"type"`
	Code       string  `json:"code"`
	Message    string  `json:"message"`
	Driver     string  `json:"driver"`
	Accepted   *int64  `json:"accepted"`
	Duplicates int64   `json:"duplicates"`
	DurableSeq *uint64 `json:"durable_seq"`
	RetryAfter int64   `json:"retry_after_ms"`
}

// streamConn sends frames for its drivers over one WebSocket, at most
// --inflight at once and one per driver, until stop; then it keeps the
// stream open (durable notices keep coming) until release. Every frame is
// answered once, in order; a lane_full refusal is resent after its retry_after_ms.
func streamConn(ctx context.Context, o ingestOptions, base, token string, drivers []*benchDriver, st *loadStats, stop, release <-chan struct{}) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/drivers/stream",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	cancel()
	if err != nil {
		return fmt.Errorf("dial the driver stream: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	byName := map[string]*benchDriver{}
	for _, d := range drivers {
		byName[d.name] = d
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	answers := make(chan streamMsg, len(drivers)+1)
	readDone := make(chan error, 1)
	go func() {
		for {
			_, data, err := c.Read(rctx)
			if err != nil {
				readDone <- err
				return
			}
			var m streamMsg
			if err := json.Unmarshal(data, &m); err != nil {
				readDone <- fmt.Errorf("stream frame %q: %w", clip(data), err)
				return
			}
			if d := byName[m.Driver]; d != nil && m.DurableSeq != nil {
				d.sawDurable(*m.DurableSeq)
			}
			if m.Type == "error" || m.Accepted != nil {
				select {
				case answers <- m:
				case <-rctx.Done():
					readDone <- rctx.Err()
					return
				}
			}
		}
	}()

	answerWait := time.NewTimer(benchAnswerTimeout)
	defer answerWait.Stop()
	free := append([]*benchDriver(nil), drivers...) // drivers without a frame in flight
	var flight []*benchDriver                       // frames sent, in order
	for !(stopped(stop) && len(flight) == 0) {
		for len(flight) < o.inflight && len(free) > 0 && !stopped(stop) {
			d := free[0]
			free = free[1:]
			if d.pending == nil {
				frame := append(d.buf[:0], `{"driver":"`...)
				frame = append(frame, d.name...)
				frame = append(frame, `","points":`...)
				frame = appendBatch(frame, d.next, o.batch)
				d.buf = append(frame, '}')
				d.pending = d.buf
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Write(wctx, websocket.MessageText, d.pending)
			wcancel()
			if err != nil {
				return fmt.Errorf("stream write: %w", err)
			}
			flight = append(flight, d)
		}
		if len(flight) == 0 {
			continue // stopped meanwhile: the loop ends
		}
		var m streamMsg
		answerWait.Reset(benchAnswerTimeout)
		select {
		case m = <-answers:
		case err := <-readDone:
			return fmt.Errorf("stream read: %w", err)
		case <-answerWait.C:
			return fmt.Errorf("stream: no answer to the frame for %s within %v", flight[0].name, benchAnswerTimeout)
		case <-ctx.Done():
			return nil
		}
		d := flight[0]
		flight = flight[1:]
		switch {
		case m.Type == "error" && m.Code == "lane_full":
			// A frame has no Retry-After header: the refusal says how
			// long in retry_after_ms (a server without it: a second).
			wait := time.Second
			if m.RetryAfter > 0 {
				wait = min(time.Duration(m.RetryAfter)*time.Millisecond, maxRetryAfter)
			}
			st.refusals.Add(1)
			st.backoff.Add(int64(wait))
			pause(ctx, stop, wait)
		case m.Type == "error":
			st.fail("stream frame for %s: %s: %s", d.name, m.Code, m.Message)
			pause(ctx, stop, 100*time.Millisecond)
		case m.Driver != d.name:
			return fmt.Errorf("stream: answer for %q, want one for %q (answers out of order)", m.Driver, d.name)
		default:
			d.pending = nil
			d.next += uint64(o.batch)
			d.sent.Store(d.next - 1)
			st.accepted.Add(*m.Accepted)
			st.requests.Add(1)
		}
		free = append(free, d)
	}
	select {
	case <-release:
	case <-ctx.Done():
		return nil
	case err := <-readDone:
		return fmt.Errorf("stream read: %w", err)
	}
	rcancel()
	c.Close(websocket.StatusNormalClosure, "benchmark done")
	return nil
}

// procCPUTicks reads utime+stime of pid from /proc/PID/stat, in clock
// ticks; 0 and no error when pid is 0 (not known).
func procCPUTicks(pid int) (int64, error) {
	if pid <= 0 {
		return 0, nil
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start past its closing parenthesis: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, errors.New("cpu time: /proc stat without a command name")
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time: /proc stat has %d fields after the name, want >= 13", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	return ut + stime, nil
}

// sampleAnon reads pid's RssAnon every 200 ms until stop is closed and
// answers the largest (KiB; 0 when it cannot be read).
func sampleAnon(pid int, stop <-chan struct{}) int64 {
	if pid <= 0 {
		return 0
	}
	read := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb
			}
		}
		return 0
	}
	peak := read()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return max(peak, read())
		case <-t.C:
			peak = max(peak, read())
		}
	}
}

// procMemory reads VmHWM and VmRSS (KiB) of pid from /proc/PID/status.
func procMemory(pid int) (hwm, rss int64, err error) {
	if pid <= 0 {
		return 0, 0, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("memory: %s %q: %w", name, val, err)
		}
		if name == "VmHWM" {
			hwm = kb
		} else {
			rss = kb
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	if hwm == 0 || rss == 0 {
		return 0, 0, fmt.Errorf("memory: /proc/%d/status lacks VmHWM or VmRSS", pid)
	}
	return hwm, rss, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if name, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown CPU"
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:min(3, len(f))], " ")
}

// writeReport writes a benchmark's report as indented JSON to path (none
// when path is empty).
func writeReport(path, what string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: report: %w", what, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("%s: report: %w", what, err)
	}
	return nil
}
