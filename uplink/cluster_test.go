package uplink

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
)

// The three-node cluster tests: the uplink ships to a stream replicated on
// three NATS servers (R3, a JetStream cluster on loopback, fenced records)
// while writers go on, and a node is taken away with records not yet
// acknowledged: first the stream's leader, then (the first one back and
// current) the node the uplink is connected to. Each time the stream then
// holds every LSN of the log exactly once, in order: nothing JetStream
// acknowledged before, during or after the loss is lost, and nothing
// re-sent is stored twice; the restarted node catches up and answers the
// same stream.

// TestThreeNodeClusterNodeKilledWhileShipping: three nats-server processes
// (built from the module's nats-server), the node SIGKILLed: no shutdown,
// no leader step-down, no last flush of its store.
func TestThreeNodeClusterNodeKilledWhileShipping(t *testing.T) {
	cl := natstest.StartProcCluster(t, 3)
	// Writers at about 500 records/s: a killed leader is replaced only
	// after an election timeout (several seconds, against none for a
	// shutdown's step-down), and the backlog it leaves is shipped in
	// atomic batches (one cluster commit each).
	kc := killCluster{url: cl.URL(), how: "SIGKILL", every: 4 * time.Millisecond, atomic: true}
	for _, p := range cl.Nodes {
		kc.nodes = append(kc.nodes, clusterNode{name: p.Name, url: p.URL(), kill: p.Kill, restart: p.Restart, hasClient: p.HasClient})
	}
	shipWhileKilling(t, kc)
}

// TestThreeNodeClusterNodeShutDownWhileShipping: three in-process servers,
// the node shut down (a clean stop: the leader steps down first).
func TestThreeNodeClusterNodeShutDownWhileShipping(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	kc := killCluster{url: cl.URL(), how: "shutdown", every: 2 * time.Millisecond}
	for _, nd := range cl.Nodes {
		kc.nodes = append(kc.nodes, clusterNode{name: nd.Name, url: nd.URL(), kill: nd.Stop, restart: nd.Restart, hasClient: nd.HasClient})
	}
	shipWhileKilling(t, kc)
}

// killCluster is a three-node cluster whose nodes the test takes away.
type killCluster struct {
	url   string        // every node's client URL
	how   string        // how a node is taken away, for the log
	every time.Duration // each of two writers writes a record every
	// atomic: the stream allows atomic batches, and the uplink ships
	// them (batch.go); without, one record at a time.
	atomic bool
	nodes  []clusterNode
}

// clusterNode is one node of a killCluster.
type clusterNode struct {
	name, url string
	kill      func() // gone at once, store kept
	restart   func() // back on its port and store
	hasClient func(name string) bool
}

func (c killCluster) node(name string) *clusterNode {
	for i := range c.nodes {
		if c.nodes[i].name == name {
			return &c.nodes[i]
		}
	}
	return nil
}

func shipWhileKilling(t *testing.T, cl killCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := natstest.CreateStream(t, cl.url, jetstream.StreamConfig{Name: "RH", Subjects: []string{"routehound.d1.>"}, Replicas: 3,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowAtomicPublish: cl.atomic})

	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, cl.url, nil)
	u.Start(e)

	// ship writes (two writers, each a record every cl.every) until the
	// uplink shipped 500, kills the node kill names with records not yet
	// acknowledged, goes on writing until 500 more are shipped, stops,
	// and checks the stream once the uplink has shipped the whole log.
	ship := func(what string, kill func() *clusterNode) *clusterNode {
		t.Helper()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := range 2 {
			wg.Go(func() {
				tick := time.NewTicker(cl.every)
				defer tick.Stop()
				for i := w; ; i += 2 {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := e.PutKey(context.Background(), engine.Write{Table: fmt.Sprint("t", i%3), Key: fmt.Sprint("k", i%50),
						Value: []byte(fmt.Sprintf(`{"i":%d}`, i)), IfVersion: engine.AnyVersion}); err != nil {
						failed.Store(err)
						return
					}
				}
			})
		}
		stopWriters := func() {
			select {
			case <-stop:
			default:
				close(stop)
			}
			wg.Wait()
			if err, _ := failed.Load().(error); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		defer stopWriters()
		from := u.Acked()
		waitFor(t, "the uplink to ship 500 records", func() bool { return u.Acked() >= from+500 })
		var victim *clusterNode
		waitFor(t, "records not yet acknowledged, and the node to kill", func() bool {
			victim = kill()
			return victim != nil && e.DurableLSN() > u.Acked()
		})
		ackedAtKill, durableAtKill := u.Acked(), e.DurableLSN()
		failuresBefore := u.Status().Failures
		killedAt := time.Now()
		victim.kill()
		waitFor(t, "the uplink to ship 500 records past the kill", func() bool { return u.Acked() >= durableAtKill+500 })
		past := time.Since(killedAt)
		stopWriters()
		if err := e.WaitCommitted(ctx); err != nil { // journaled answers, published by the log's fsync
			t.Fatal(err)
		}
		last := e.DurableLSN()
		waitFor(t, "the uplink to ship the whole log", func() bool { return u.Acked() == last })
		caught := time.Since(killedAt)
		s := u.Status()
		t.Logf("%s: %s of %s at acked lsn %d, durable lsn %d; then shipped up to lsn %d (500 past the kill in %v, all in %v); %d session(s) ended in an error (%d before), last error %q",
			what, cl.how, victim.name, ackedAtKill, durableAtKill, last, past.Round(time.Millisecond), caught.Round(time.Millisecond), s.Failures, failuresBefore, s.LastError)
		if s.Dropped != 0 {
			t.Fatalf("the uplink dropped %d records", s.Dropped)
		}
		wantContiguous(t, clusterStreamLSNs(t, cl.url), 1, last)
		if got := u.Status().AtomicBatches; cl.atomic != (got > 0) {
			t.Fatalf("atomic batches acknowledged: %d, on a stream with allow_atomic %v", got, cl.atomic)
		}
		if w := u.Status().Warning; cl.atomic == (w != "") {
			t.Fatalf("status warning %q on a stream with allow_atomic %v", w, cl.atomic)
		}
		return victim
	}
	restart := func(nd *clusterNode) {
		t.Helper()
		nd.restart()
		waitFor(t, "the restarted node's replica to be current", func() bool {
			info, err := st.Info(ctx)
			if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
				return false
			}
			n := 0
			for _, r := range info.Cluster.Replicas {
				if r.Current && !r.Offline {
					n++
				}
			}
			return n == 2
		})
		wantContiguous(t, clusterStreamLSNs(t, nd.url), 1, e.DurableLSN())
	}

	victim := ship("the stream leader", func() *clusterNode {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			return nil
		}
		return cl.node(info.Cluster.Leader)
	})
	restart(victim)
	victim = ship("the uplink's server", func() *clusterNode {
		for i := range cl.nodes {
			if cl.nodes[i].hasClient("routehound uplink d1") {
				return &cl.nodes[i]
			}
		}
		return nil
	})
	restart(victim)
}

// clusterStreamLSNs is streamLSNs on a cluster just back from a kill: a
// read that meets JetStream still settling (503 temporarily unavailable,
// no responders) is tried again, for at most 30 s.
func clusterStreamLSNs(t *testing.T, url string) []uint64 {
	t.Helper()
	var err error
	for range 60 {
		var out []uint64
		if out, err = readStreamLSNs(url); err == nil {
			return out
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("read the stream: %v", err)
	return nil
}
