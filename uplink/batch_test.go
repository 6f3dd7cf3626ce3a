package uplink

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
)

// TestAtomicBatches: a fenced R3 stream with allow_atomic (three
// in-process servers on loopback): the uplink ships atomic batches of
// many records (batch.go), and every batch rule keeps what one record at a
// time kept.
func TestAtomicBatches(t *testing.T) {
	cl := natstest.StartCluster(t, 3)
	js := jsConn(t, cl.URL())
	ctx := context.Background()
	// r3 creates the stream RH over depot d1, R3, allow_atomic, and
	// deletes it when the subtest ends.
	r3 := func(t *testing.T, mut func(*jetstream.StreamConfig)) jetstream.Stream {
		t.Helper()
		cfg := jetstream.StreamConfig{Name: "RH", Subjects: []string{"routehound.d1.>"}, Replicas: 3,
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowAtomicPublish: true}
		if mut != nil {
			mut(&cfg)
		}
		var st jetstream.Stream
		var err error
		waitFor(t, "the R3 stream to be created", func() bool {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			st, err = js.CreateStream(cctx, cfg)
			return err == nil
		})
		t.Cleanup(func() { js.DeleteStream(ctx, "RH") })
		return st
	}

	// Many records a batch; a promoted standby's marker refuses the old
	// writer's next batch whole: fenced, nothing of it in the stream.
	t.Run("fenced", func(t *testing.T) {
		st := r3(t, nil)
		dir := t.TempDir()
		e := openEngine(t, dir, engine.DefaultConfig().Retention)
		writeN(t, e, 0, 3000) // in the log before the uplink starts: full batches
		fenced := make(chan string, 1)
		u := newUplink(t, dir, cl.URL(), func(c *Config) { c.OnFenced = func(why string) { fenced <- why } })
		u.Start(e)
		writeN(t, e, 3000, 500)
		waitFor(t, "the uplink to ship 3500", func() bool { return u.Acked() == e.DurableLSN() })
		last := e.DurableLSN()
		wantContiguous(t, streamLSNs(t, cl.URL()), 1, last)
		if b := u.batches.Load(); b == 0 || b*4 > last {
			t.Fatalf("%d atomic batches for %d records: want several records a batch", b, last)
		}
		mk, err := lastMarker(ctx, st, "d1")
		if err != nil || mk.epoch != 1 {
			t.Fatalf("marker %+v %v", mk, err)
		}
		if _, err := publishMarker(ctx, js, "d1", 2, last, EpochSubject("d1"), mk.seq); err != nil {
			t.Fatal(err)
		}
		writeN(t, e, 3500, 200)
		select {
		case <-fenced:
		case <-time.After(20 * time.Second):
			t.Fatal("OnFenced was not called within 20 s")
		}
		if u.Acked() != last {
			t.Fatalf("acked %d, want %d: a batch after the newer epoch was taken", u.Acked(), last)
		}
		wantContiguous(t, streamLSNs(t, cl.URL()), 1, last)
	})

	// A record larger than the stream's max_msg_size goes alone: its
	// refusal names it, it is skipped after maxRefusals, and the records
	// around it are shipped in batches.
	t.Run("too large goes alone", func(t *testing.T) {
		// 700 bytes: a small record with the batch headers fits, lsn 11
		// does not.
		r3(t, func(c *jetstream.StreamConfig) { c.MaxMsgSize = 700 })
		dir := t.TempDir()
		e := openEngine(t, dir, engine.DefaultConfig().Retention)
		writeWithBig(t, e)
		u := newUplink(t, dir, cl.URL(), nil)
		u.Start(e)
		waitFor(t, "the uplink to skip lsn 11", func() bool { return u.Status().Dropped == 1 })
		waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == 20 })
		if s := u.Status(); !strings.Contains(s.LastError, "publish lsn 11") {
			t.Fatalf("the refusal does not name lsn 11: %+v", s)
		}
		got := streamLSNs(t, cl.URL())
		if want := "[1 2 3 4 5 6 7 8 9 10 12 13 14 15 16 17 18 19 20]"; fmt.Sprint(got) != want {
			t.Fatalf("stream holds %v, want %s", got, want)
		}
		if u.batches.Load() == 0 {
			t.Fatal("no atomic batch acknowledged")
		}
	})

	// The stream holds records past an exact acked (an acknowledgement
	// lost): they go alone, the Nats-Msg-Id drops them, and no batch is
	// refused for a duplicate (no session ends in an error).
	t.Run("stream ahead of acked", func(t *testing.T) {
		r3(t, nil)
		dir := t.TempDir()
		e := openEngine(t, dir, engine.DefaultConfig().Retention)
		writeN(t, e, 0, 400)
		u := newUplink(t, dir, cl.URL(), nil)
		u.Start(e)
		waitFor(t, "the uplink to ship 400", func() bool { return u.Acked() == e.DurableLSN() })
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
		st, _, err := readState(filepath.Join(dir, "uplink.json"))
		if err != nil {
			t.Fatal(err)
		}
		st.AckedLSN, st.Exact = 100, true
		if err := writeState(filepath.Join(dir, "uplink.json"), st); err != nil {
			t.Fatal(err)
		}
		u2 := newUplink(t, dir, cl.URL(), nil)
		u2.Start(e)
		writeN(t, e, 400, 400)
		waitFor(t, "the uplink to ship 800", func() bool { return u2.Acked() == e.DurableLSN() })
		wantContiguous(t, streamLSNs(t, cl.URL()), 1, e.DurableLSN())
		if s := u2.Status(); s.Failures != 0 {
			t.Fatalf("%d session(s) ended in an error (last %q): a batch held a record the stream had", s.Failures, s.LastError)
		}
		if u2.batches.Load() == 0 {
			t.Fatal("no atomic batch after the records the stream held")
		}
	})
}
