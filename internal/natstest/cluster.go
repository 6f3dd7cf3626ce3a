package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is several NATS servers with JetStream on loopback, routed to
// each other: a JetStream cluster whose streams can have replicas on other
// servers' stores. Each node can be stopped (killed, for the test) and
// started again on its port and store.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	t           testing.TB
	c           *Cluster
	Name        string
	dir         string
	port, cport int
	s           *server.Server
}

// freePort is a loopback TCP port free now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartCluster starts n servers (n ≥ 3 for a quorum to survive one) and
// waits until JetStream has a meta leader; the test's cleanup stops them.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	for i := range n {
		c.Nodes = append(c.Nodes, &Node{t: t, c: c, Name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), port: freePort(t), cport: freePort(t)})
	}
	for _, nd := range c.Nodes {
		nd.start(false)
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.Stop()
		}
	})
	for _, nd := range c.Nodes {
		if !nd.s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("natstest: %s not ready within 10 s", nd.Name)
		}
	}
	c.WaitLeader(30 * time.Second)
	return c
}

// start starts the node's server; wait: until it takes connections.
func (nd *Node) start(wait bool) {
	nd.t.Helper()
	if nd.s != nil {
		nd.t.Fatalf("natstest: %s already running", nd.Name)
	}
	var routes []string
	for _, o := range nd.c.Nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.cport))
		}
	}
	s, err := server.NewServer(&server.Options{ServerName: nd.Name, Host: "127.0.0.1", Port: nd.port, JetStream: true, StoreDir: nd.dir,
		NoLog: true, NoSigs: true, JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
		Cluster: server.ClusterOpts{Name: "routehound-test", Host: "127.0.0.1", Port: nd.cport},
		Routes:  server.RoutesFromStr(strings.Join(routes, ","))})
	if err != nil {
		nd.t.Fatal(err)
	}
	go s.Start()
	nd.s = s
	if wait && !s.ReadyForConnections(10*time.Second) {
		nd.t.Fatalf("natstest: %s not ready within 10 s", nd.Name)
	}
}

// Restart starts a stopped node again on its port and store.
func (nd *Node) Restart() { nd.t.Helper(); nd.start(true) }

// Stop shuts the node's server down (its store stays for Restart): for
// the others, the node is gone at once.
func (nd *Node) Stop() {
	if nd.s != nil {
		nd.s.Shutdown()
		nd.s.WaitForShutdown()
		nd.s = nil
	}
}

// Running reports whether the node's server runs.
func (nd *Node) Running() bool { return nd.s != nil }

// URL is the node's client URL.
func (nd *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.port) }

// URL lists every node's client URL, comma-separated (a client picks one
// and moves to another when it is gone).
func (c *Cluster) URL() string {
	var out []string
	for _, nd := range c.Nodes {
		out = append(out, nd.URL())
	}
	return strings.Join(out, ",")
}

// Node is the node of that server name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	return nil
}

// WaitLeader waits until a running node is JetStream's meta leader and
// every running node is current.
func (c *Cluster) WaitLeader(d time.Duration) {
	c.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		leader, current := false, true
		for _, nd := range c.Nodes {
			if nd.s == nil {
				continue
			}
			leader = leader || nd.s.JetStreamIsLeader()
			current = current && nd.s.JetStreamIsCurrent()
		}
		if leader && current {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("natstest: no JetStream meta leader within %v", d)
}

// HasClient reports whether a client connection named name is on the
// node (nats.Name).
func (nd *Node) HasClient(name string) bool {
	if nd.s == nil {
		return false
	}
	cz, err := nd.s.Connz(&server.ConnzOptions{})
	if err != nil {
		return false
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return true
		}
	}
	return false
}
