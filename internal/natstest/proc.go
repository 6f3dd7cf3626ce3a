package natstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ProcCluster is several nats-server processes with JetStream on loopback,
// routed to each other: a JetStream cluster whose nodes can be killed for
// real (SIGKILL: no shutdown, no leader step-down, no last flush) and
// started again on their ports and stores. The binary is built from the
// module's own nats-server (go.mod), so the test needs no network and no
// server installed, only the go command and the module cache.
type ProcCluster struct {
	t     testing.TB
	bin   string
	Nodes []*Proc
}

// Proc is one nats-server process of a ProcCluster.
type Proc struct {
	t                  testing.TB
	Name               string
	bin, dir           string
	port, cport, mport int
	cmd                *exec.Cmd
	exited             chan struct{}
}

// BuildServer builds the nats-server of the module's go.mod into dir and
// answers the binary's path.
func BuildServer(t testing.TB, dir string) string {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			gocmd = filepath.Join(root, "bin", "go")
		} else {
			t.Fatalf("natstest: no go command to build nats-server: %v", err)
		}
	}
	bin := filepath.Join(dir, "nats-server")
	cmd := exec.Command(gocmd, "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("natstest: go build nats-server: %v\n%s", err, out)
	}
	t.Logf("natstest: built nats-server in %v", time.Since(t0).Round(time.Millisecond))
	return bin
}

// StartProcCluster builds nats-server and starts n processes of it (n ≥ 3
// for a quorum to survive one), waiting until every one answers healthy
// (JetStream has a meta leader and each server is current). The test's
// cleanup kills them all.
func StartProcCluster(t testing.TB, n int) *ProcCluster {
	t.Helper()
	c := &ProcCluster{t: t, bin: BuildServer(t, t.TempDir())}
	for i := range n {
		c.Nodes = append(c.Nodes, &Proc{t: t, Name: fmt.Sprintf("p%d", i+1), bin: c.bin, dir: t.TempDir(),
			port: freePort(t), cport: freePort(t), mport: freePort(t)})
	}
	for _, p := range c.Nodes {
		if err := p.writeConfig(c.Nodes); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range c.Nodes {
			p.Kill()
		}
		if t.Failed() {
			for _, p := range c.Nodes {
				p.logTail(40)
			}
		}
	})
	for _, p := range c.Nodes {
		p.start()
	}
	for _, p := range c.Nodes {
		p.waitHealthy("", 30*time.Second)
	}
	return c
}

// writeConfig writes the node's config: its ports, its store, routes to
// the others.
func (p *Proc) writeConfig(all []*Proc) error {
	var routes []string
	for _, o := range all {
		if o != p {
			routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", o.cport)))
		}
	}
	conf := fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
log_file: %q
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 1GB
}
cluster {
  name: "routehound-test"
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, p.Name, p.port, p.mport, filepath.Join(p.dir, "nats.log"), filepath.Join(p.dir, "store"), p.cport, strings.Join(routes, ", "))
	if err := os.WriteFile(filepath.Join(p.dir, "nats.conf"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("natstest: config of %s: %w", p.Name, err)
	}
	return nil
}

// start runs the node's process.
func (p *Proc) start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatalf("natstest: %s already running", p.Name)
	}
	cmd := exec.Command(p.bin, "-c", filepath.Join(p.dir, "nats.conf"))
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("natstest: start %s: %v", p.Name, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.exited)
}

// Kill sends the node's process SIGKILL and waits until it is gone (its
// store stays, as the kill left it, for Restart).
func (p *Proc) Kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill() // SIGKILL on Unix
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("natstest: %s (pid %d) not gone 10 s after SIGKILL", p.Name, p.cmd.Process.Pid)
	}
	p.cmd = nil
}

// Restart starts a killed node again on its ports and store and waits
// until it takes connections with JetStream on (not until its streams are
// current: the caller waits for what it needs).
func (p *Proc) Restart() {
	p.t.Helper()
	p.start()
	p.waitHealthy("?js-enabled-only=true", 30*time.Second)
}

// Running reports whether the node's process runs.
func (p *Proc) Running() bool { return p.cmd != nil }

// URL is the node's client URL.
func (p *Proc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// URL lists every node's client URL, comma-separated.
func (c *ProcCluster) URL() string {
	var out []string
	for _, p := range c.Nodes {
		out = append(out, p.URL())
	}
	return strings.Join(out, ",")
}

// Node is the node of that server name, or nil.
func (c *ProcCluster) Node(name string) *Proc {
	for _, p := range c.Nodes {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// monitor GETs a path of the node's monitoring port.
func (p *Proc) monitor(path string) (int, []byte, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", p.mport, path))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// waitHealthy polls /healthz (with query q) until it answers 200, the
// process exits, or d passes.
func (p *Proc) waitHealthy(q string, d time.Duration) {
	p.t.Helper()
	end := time.Now().Add(d)
	var last string
	for time.Now().Before(end) {
		select {
		case <-p.exited:
			p.logTail(40)
			p.t.Fatalf("natstest: %s exited while starting", p.Name)
		default:
		}
		code, body, err := p.monitor("/healthz" + q)
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		time.Sleep(50 * time.Millisecond)
	}
	p.logTail(40)
	p.t.Fatalf("natstest: %s not healthy within %v (last: %s)", p.Name, d, last)
}

// HasClient reports whether a client connection named name is on the node
// (nats.Name), as its monitoring port's /connz lists them.
func (p *Proc) HasClient(name string) bool {
	if p.cmd == nil {
		return false
	}
	code, body, err := p.monitor("/connz?limit=4096")
	if err != nil || code != http.StatusOK {
		return false
	}
	var cz struct {
		Conns []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if json.Unmarshal(body, &cz) != nil {
		return false
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return true
		}
	}
	return false
}

// logTail logs the last n lines of the node's log.
func (p *Proc) logTail(n int) {
	b, err := os.ReadFile(filepath.Join(p.dir, "nats.log"))
	if err != nil {
		p.t.Logf("natstest: %s: no log: %v", p.Name, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	p.t.Logf("natstest: the last lines of %s's log:\n%s", p.Name, strings.Join(lines, "\n"))
}
