package uplink

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
		st := natstest.CreateStream(t, cl.URL(), cfg)
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
		if b := u.Status().AtomicBatches; b == 0 || b*4 > last {
			t.Fatalf("%d atomic batches for %d records: want several records a batch", b, last)
		}
		if w := u.Status().Warning; w != "" {
			t.Fatalf("a warning on a stream that allows atomic batches: %q", w)
		}
		mk, err := lastMarker(ctx, st, "d1")
		if err != nil || mk.epoch != 1 {
			t.Fatalf("marker %+v %v", mk, err)
		}
		if _, err := publishMarker(ctx, js, "d1", 2, last, EpochSubject("d1"), mk.seq); err != nil {
			t.Fatal(err)
		}
		writeN(t, e, 3500, 200)
		// The stream itself refuses a batch of the old epoch (the session
		// above usually learns of the marker first, from its hint): a
		// batch of records the stream does not hold, expecting the old
		// marker, published as the session would, is refused whole.
		old := newUplink(t, t.TempDir(), cl.URL(), nil)
		old.e, old.fence, old.markerSeq = e, true, mk.seq
		old.epoch.Store(1)
		var recs []engine.Record
		if err := e.ReadLog(last, 50, func(r engine.Record) error { recs = append(recs, r); return nil }); err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(cl.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		bjs, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		first, err := old.message(&recs[0], nil)
		if err != nil {
			t.Fatal(err)
		}
		var idem []engine.IdemEntry
		n, fut, err := old.publishBatch(nc, bjs, recs, first, &idem, 1<<20)
		if err != nil || n != len(recs) {
			t.Fatalf("publish a batch of %d: %d, %v", len(recs), n, err)
		}
		select {
		case ack := <-fut.Ok():
			t.Fatalf("a batch of the old epoch was stored: %+v", ack)
		case err := <-fut.Err():
			var api *jetstream.APIError
			if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				t.Fatalf("the old epoch's batch: %v, want wrong last sequence", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer to the old epoch's batch")
		}
		wantContiguous(t, streamLSNs(t, cl.URL()), 1, last)
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

	// Idempotency entries travel inside batches: small batches (70) over
	// chunks the cursor hands out whole, so records wait in held and
	// batches are gathered across chunks; each shipped record carries its
	// own entry, none another's.
	t.Run("idempotency entries", func(t *testing.T) {
		r3(t, nil)
		dir := t.TempDir()
		e := openEngine(t, dir, engine.DefaultConfig().Retention)
		write := func(from, n int) {
			for i := from; i < from+n; i++ {
				w := engine.Write{Table: "notes", Key: fmt.Sprint("k", i%7), Value: fmt.Appendf(nil, `{"i":%d}`, i), IfVersion: engine.AnyVersion}
				if i%3 == 0 {
					w.IdemKey, w.Fingerprint = fmt.Sprint("key-", i), []byte{byte(i)}
				}
				if _, err := e.PutKey(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
		}
		write(0, 300)
		u := newUplink(t, dir, cl.URL(), nil)
		u.batchMax = 70
		u.Start(e)
		write(300, 300)
		if err := e.WaitCommitted(ctx); err != nil {
			t.Fatal(err)
		}
		last := e.DurableLSN()
		waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
		if b := u.Status().AtomicBatches; b < last/70 {
			t.Fatalf("%d atomic batches for %d records of at most 70", b, last)
		}
		want := idemOf(t, e)
		if len(want) != 200 {
			t.Fatalf("the primary holds %d entries tied to records, want 200", len(want))
		}
		wantShippedIdem(t, cl.URL(), want)
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

// TestBatchRefusals: what a refused or unacknowledged unit leaves for the
// next session, and batch ids never repeat in a process.
func TestBatchRefusals(t *testing.T) {
	u := &Uplink{batchMax: maxBatchRecords, batchIDs: newBatchIDs()}
	batch := inflight{first: 5, lsn: 9, n: 5, batch: true}
	err := u.unitRefused(batch, &jetstream.APIError{ErrorCode: jsErrCodeBatchTooLarge})
	var be *batchError
	var pe *publishError
	if !errors.As(err, &be) || errors.As(err, &pe) || u.batchMax != maxBatchRecords/2 || u.aloneUntil != 9 {
		t.Fatalf("a batch too large: %v (%T), batchMax %d, aloneUntil %d", err, err, u.batchMax, u.aloneUntil)
	}
	err = u.unitRefused(inflight{first: 10, lsn: 30, n: 21, batch: true}, errAckTimeout)
	if !errors.Is(err, errAckTimeout) || errors.As(err, &pe) || u.aloneUntil != 30 || u.batchMax != maxBatchRecords/2 {
		t.Fatalf("a batch not acknowledged: %v, batchMax %d, aloneUntil %d", err, u.batchMax, u.aloneUntil)
	}
	err = u.unitRefused(inflight{first: 31, lsn: 31, n: 1}, &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum})
	if !errors.As(err, &pe) || pe.lsn != 31 || !pe.permanent() || u.aloneUntil != 30 {
		t.Fatalf("a record refused alone: %v, aloneUntil %d", err, u.aloneUntil)
	}
	if a, b := u.batchIDs.id(7), u.batchIDs.id(7); a == b || len(a) > 64 {
		t.Fatalf("batch ids %q and %q of the same first LSN", a, b)
	}
}
