// Package natstest runs an in-process NATS server with JetStream on
// loopback (a free port, a temporary store dir) for tests: the uplink's and
// the appliance's. It can be stopped and started again on the same port and
// store, as a restarted server. A JetStream cluster runs in-process
// (StartCluster: a node is stopped with a shutdown) or as nats-server
// processes built from the module (StartProcCluster: a node is SIGKILLed).
//
// Only _test.go files may import it (testkit's TestOnlyTestsImport checks).
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is one NATS server with JetStream.
type Server struct {
	t    testing.TB
	dir  string
	port int
	s    *server.Server
}

// Start starts a server; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &Server{t: t, dir: t.TempDir(), port: port}
	n.Restart()
	t.Cleanup(n.Stop)
	return n
}

// Restart starts the server (again) on its port and store.
func (n *Server) Restart() {
	n.t.Helper()
	if n.s != nil {
		n.t.Fatal("natstest: already running")
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.dir,
		NoLog: true, NoSigs: true, JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30})
	if err != nil {
		n.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("natstest: server not ready within 10 s")
	}
	n.s = s
}

// Stop shuts the server down (its store stays for Restart).
func (n *Server) Stop() {
	if n.s != nil {
		n.s.Shutdown()
		n.s.WaitForShutdown()
		n.s = nil
	}
}

// URL is the server's client URL.
func (n *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }
