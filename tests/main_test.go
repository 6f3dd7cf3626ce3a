//go:build linux

// Package tests holds RouteHound's end-to-end tests: they build the real
// binary once, run it as a child process on a loopback port and talk to it
// over HTTP only, as a client would.
package tests

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the routehound binary built by TestMain.
var binPath string

// roles are the token roles of the interface contract; the harness writes
// one token per role.
var roles = []string{"driver", "dispatch", "warehouse", "dashboard", "admin"}

const (
	readyTimeout = 30 * time.Second // start until GET /readyz == 200 (includes recovery)
	stopTimeout  = 30 * time.Second // SIGTERM until exit
	killTimeout  = 10 * time.Second // SIGKILL until the process is reaped
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "routehound-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "temp dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "routehound")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Dir = ".." // the repository root, from the tests directory
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build routehound: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// harness runs one routehound server at a time on one data dir and config,
// restarting it on a fresh loopback port each time. Its methods are called
// from the test goroutine; do may be called concurrently while a server runs.
type harness struct {
	t       *testing.T
	cfgPath string
	dataDir string
	workDir string // the server's cwd, so a stray relative path never lands in the checkout
	logPath string // stdout and stderr of every start, appended
	tokens  map[string]string
	hc      *http.Client

	// notPrimaryReady: /readyz answering 503 not_primary is ready too (a
	// standby; an old primary fenced by a promoted one), and so is 503
	// central_read_only (a central view).
	notPrimaryReady bool

	args []string // more flags of `serve`, after --config, --data and --listen

	base   string // http://127.0.0.1:PORT of the running server
	proc   *proc
	starts int
}

// proc is one server process; done is closed once it has been reaped.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// newHarness writes a config with one random token per role, followed by
// extraTOML, and registers a cleanup that kills a server still running and
// prints the tail of the server log when the test failed.
func newHarness(t *testing.T, extraTOML string) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{
		t:       t,
		cfgPath: filepath.Join(dir, "routehound.toml"),
		dataDir: filepath.Join(dir, "data"),
		workDir: filepath.Join(dir, "cwd"),
		logPath: filepath.Join(dir, "server.log"),
		tokens:  map[string]string{},
		hc: &http.Client{
			Timeout: 15 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns:        256,
				MaxIdleConnsPerHost: 256,
				IdleConnTimeout:     30 * time.Second,
			},
		},
	}
	for _, d := range []string{h.dataDir, h.workDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	for _, r := range roles {
		h.tokens[r] = r + "-" + randHex(16)
		fmt.Fprintf(&b, "[[tokens]]\nrole = %q\ntoken = %q\n\n", r, h.tokens[r])
	}
	b.WriteString(extraTOML)
	if err := os.WriteFile(h.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if h.proc != nil {
			h.signalGroup(syscall.SIGKILL)
			h.wait(killTimeout)
		}
		if t.Failed() {
			t.Logf("server log %s, tail:\n%s", h.logPath, tailFile(h.logPath, 8<<10))
		}
	})
	return h
}

var errPortInUse = errors.New("port already in use")

// start starts `routehound serve` on a free loopback port and waits until
// GET /readyz answers 200. It fails the test when the server does not get
// ready within readyTimeout.
func (h *harness) start() {
	h.t.Helper()
	if h.proc != nil {
		h.t.Fatal("start: a server is already running")
	}
	for attempt := 1; ; attempt++ {
		err := h.tryStart()
		if err == nil {
			return
		}
		// Another process may take the port between freePort and the
		// server's listen; only that failure is retried.
		if errors.Is(err, errPortInUse) && attempt < 3 {
			continue
		}
		h.t.Fatalf("start #%d: %v", h.starts, err)
	}
}

func (h *harness) tryStart() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"serve", "--config", h.cfgPath, "--data", h.dataDir, "--listen", addr}, h.args...)

	h.starts++
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child keeps its own descriptor
	offset, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== start #%d %s: routehound %s\n", h.starts, time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))

	cmd := exec.Command(binPath, args...)
	cmd.Dir = h.workDir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so SIGKILL reaches anything it spawns; Pdeathsig so
	// no server outlives the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	h.proc, h.base = p, "http://"+addr

	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			h.proc = nil
			if strings.Contains(readFrom(h.logPath, offset), "address already in use") {
				return errPortInUse
			}
			return fmt.Errorf("routehound serve exited before ready (%v)", cmd.ProcessState)
		}
		if h.ready() {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	h.signalGroup(syscall.SIGKILL)
	h.wait(killTimeout)
	return fmt.Errorf("GET /readyz did not answer 200 within %v", readyTimeout)
}

func (h *harness) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := h.do(ctx, http.MethodGet, "/readyz", "", "", nil)
	if err == nil && r.status == http.StatusServiceUnavailable && h.notPrimaryReady {
		// A standby, or a fenced primary: up, serving reads.
		var e struct {
			Code string `json:"code"`
		}
		return json.Unmarshal(r.body, &e) == nil && (e.Code == "not_primary" || e.Code == "central_read_only")
	}
	return err == nil && r.status == http.StatusOK
}

// kill sends SIGKILL to the server's process group and waits until it is gone.
func (h *harness) kill() {
	h.t.Helper()
	if h.proc == nil {
		h.t.Fatal("kill: no server running")
	}
	h.signalGroup(syscall.SIGKILL)
	if !h.wait(killTimeout) {
		h.t.Fatalf("server did not die within %v of SIGKILL", killTimeout)
	}
}

// stop sends SIGTERM to the server and expects it to exit with status 0.
func (h *harness) stop() {
	h.t.Helper()
	if h.proc == nil {
		h.t.Fatal("stop: no server running")
	}
	p := h.proc
	if p.exited() {
		h.proc = nil
		h.t.Fatalf("server had already exited (%v)", p.cmd.ProcessState)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if !h.wait(stopTimeout) {
		h.signalGroup(syscall.SIGKILL)
		h.wait(killTimeout)
		h.t.Fatalf("server did not exit within %v of SIGTERM", stopTimeout)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		h.t.Errorf("server exit after SIGTERM: %v, want exit status 0", p.cmd.ProcessState)
	}
}

func (h *harness) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-h.proc.cmd.Process.Pid, sig)
}

// wait waits up to d for the running server to be reaped; it reports
// whether it was, and forgets the process if so.
func (h *harness) wait(d time.Duration) bool {
	select {
	case <-h.proc.done:
	case <-time.After(d):
		return false
	}
	h.proc = nil
	h.hc.CloseIdleConnections()
	return true
}

// reply is a complete HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r *reply) String() string {
	b := string(r.body)
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(b))
}

// decode unmarshals the body into v.
func (r *reply) decode(v any) error {
	if err := json.Unmarshal(r.body, v); err != nil {
		return fmt.Errorf("bad JSON answer (%v): %s", err, r)
	}
	return nil
}

// errorBody checks that the answer is a JSON error {"code","message"}.
func (r *reply) errorBody() error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := r.decode(&e); err != nil {
		return err
	}
	if e.Code == "" || e.Message == "" {
		return fmt.Errorf("error answer lacks code or message: %s", r)
	}
	return nil
}

// retryAfter checks that a backpressure answer carries a Retry-After header
// (delay in seconds or an HTTP date).
func (r *reply) retryAfter() error {
	v := r.header.Get("Retry-After")
	if _, err := strconv.Atoi(v); err == nil {
		return nil
	}
	if _, err := http.ParseTime(v); err == nil {
		return nil
	}
	return fmt.Errorf("answer %d has Retry-After %q, want seconds or an HTTP date", r.status, v)
}

// do sends one request to the running server with role's token (none when
// role is ""), an Idempotency-Key when idemKey is not "", and body as JSON
// ([]byte is sent as is). An error is a transport error: the outcome of the
// request is unknown.
func (h *harness) do(ctx context.Context, method, path, role, idemKey string, body any) (*reply, error) {
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return nil, err
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+h.tokens[role])
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// issues reports failures found by concurrent actors through t.Errorf, up to
// a limit, so that a broken server does not flood the output.
type issues struct {
	t   *testing.T
	mu  sync.Mutex
	n   int
	max int // issues shown; 0: maxIssues
}

const maxIssues = 20

func (s *issues) add(format string, args ...any) {
	s.t.Helper()
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	limit := s.max
	if limit == 0 {
		limit = maxIssues
	}
	switch {
	case n <= limit:
		s.t.Errorf(format, args...)
	case n == limit+1:
		s.t.Errorf("(further issues not shown)")
	}
}

func (s *issues) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// pause sleeps for d or until ctx is done.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// readFrom returns the file's content from offset on.
func readFrom(path string, offset int64) string {
	b, _ := os.ReadFile(path)
	if offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

// tailFile returns about the last n bytes of a file, from a line start.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// point is a driver location update as the driver API takes it. ts has whole
// seconds in UTC so that its RFC 3339 form is canonical.
type point struct {
	Seq      int64   `json:"seq"`
	Lat      float64 `json:"lat"`
	Lng      float64 `json:"lng"`
	TS       string  `json:"ts"`
	SpeedKmh float64 `json:"speed_kmh"`
	Heading  float64 `json:"heading"`
}

var pointEpoch = time.Now().UTC().Truncate(time.Second)

func makePoint(seq int64, rng *rand.Rand) point {
	return point{
		Seq:      seq,
		Lat:      math.Round((52.3+rng.Float64()*0.4)*1e6) / 1e6,
		Lng:      math.Round((13.1+rng.Float64()*0.6)*1e6) / 1e6,
		TS:       pointEpoch.Add(time.Duration(seq) * time.Second).Format(time.RFC3339),
		SpeedKmh: math.Round(rng.Float64()*900) / 10,
		Heading:  math.Round(rng.Float64()*3590) / 10,
	}
}
