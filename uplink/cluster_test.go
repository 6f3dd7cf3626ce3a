package uplink

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
)

// TestThreeNodeClusterNodeKilledWhileShipping: the uplink ships to a
// stream replicated on three NATS servers (R3, a JetStream cluster on
// loopback, fenced records) while writers go on, and a node is killed with
// records not yet acknowledged: first the stream's leader, then (the first
// one back and current) the node the uplink is connected to. Each time
// the stream then holds every LSN of the log exactly once, in order:
// nothing JetStream acknowledged before, during or after the kill is lost,
// and nothing re-sent is stored twice; the restarted node catches up and
// answers the same stream.
func TestThreeNodeClusterNodeKilledWhileShipping(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var st jetstream.Stream
	waitFor(t, "the R3 stream to be created", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		st, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "RH", Subjects: []string{"routehound.d1.>"}, Replicas: 3,
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
		return err == nil
	})

	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, cl.URL(), nil)
	u.Start(e)

	// ship writes at about 1,000 records/s (two writers) until the uplink
	// shipped 500, kills the node kill names with records not yet
	// acknowledged, goes on writing until 500 more are shipped, stops,
	// and checks the stream once the uplink has shipped the whole log.
	ship := func(what string, kill func() *natstest.Node) *natstest.Node {
		t.Helper()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := range 2 {
			wg.Go(func() {
				tick := time.NewTicker(2 * time.Millisecond)
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
		var victim *natstest.Node
		waitFor(t, "records not yet acknowledged, and the node to kill", func() bool {
			victim = kill()
			return victim != nil && e.DurableLSN() > u.Acked()
		})
		ackedAtKill, durableAtKill := u.Acked(), e.DurableLSN()
		failuresBefore := u.Status().Failures
		victim.Stop()
		waitFor(t, "the uplink to ship 500 records past the kill", func() bool { return u.Acked() >= durableAtKill+500 })
		stopWriters()
		if err := e.WaitCommitted(ctx); err != nil { // journaled answers, published by the log's fsync
			t.Fatal(err)
		}
		last := e.DurableLSN()
		waitFor(t, "the uplink to ship the whole log", func() bool { return u.Acked() == last })
		s := u.Status()
		t.Logf("%s: killed %s at acked lsn %d, durable lsn %d; then shipped up to lsn %d; %d session(s) ended in an error (%d before), last error %q",
			what, victim.Name, ackedAtKill, durableAtKill, last, s.Failures, failuresBefore, s.LastError)
		if s.Dropped != 0 {
			t.Fatalf("the uplink dropped %d records", s.Dropped)
		}
		wantContiguous(t, streamLSNs(t, cl.URL()), 1, last)
		return victim
	}
	restart := func(nd *natstest.Node) {
		t.Helper()
		nd.Restart()
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
		wantContiguous(t, streamLSNs(t, nd.URL()), 1, e.DurableLSN())
	}

	victim := ship("the stream leader", func() *natstest.Node {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			return nil
		}
		return cl.Node(info.Cluster.Leader)
	})
	restart(victim)
	victim = ship("the uplink's server", func() *natstest.Node {
		for _, nd := range cl.Nodes {
			if nd.HasClient("routehound uplink d1") {
				return nd
			}
		}
		return nil
	})
	restart(victim)
}
