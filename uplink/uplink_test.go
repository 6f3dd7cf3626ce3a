package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
	"routehound/wal"
)

// openEngine opens an engine over a temporary store with retention given
// and the uplink's hook.
func openEngine(t testing.TB, dir string, ret engine.Retention) *engine.Engine {
	t.Helper()
	cfg := engine.DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.Retention = ret
	e, err := engine.Open(cfg, wal.Options{Dir: filepath.Join(dir, "store"), MemoryBytes: 32 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close(context.Background())
		e.CloseStore()
	})
	return e
}

func put(t *testing.T, e *engine.Engine, table string, i int) uint64 {
	t.Helper()
	res, err := e.PutKey(context.Background(), engine.Write{Table: table, Key: fmt.Sprint("k", i%50), Value: []byte(fmt.Sprintf(`{"i":%d}`, i)), IfVersion: engine.AnyVersion})
	if err != nil {
		t.Fatalf("write %d: %v", i, err)
	}
	return res.LSN
}

// writeN writes n records from 4 writers and answers the highest LSN.
func writeN(t *testing.T, e *engine.Engine, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 4 {
		wg.Go(func() {
			for i := from + w; i < from+n; i += 4 {
				if _, err := e.PutKey(context.Background(), engine.Write{Table: fmt.Sprint("t", i%3), Key: fmt.Sprint("k", i%50),
					Value: []byte(fmt.Sprintf(`{"i":%d}`, i)), IfVersion: engine.AnyVersion}); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func newUplink(t testing.TB, dir, url string, mut func(*Config)) *Uplink {
	t.Helper()
	cfg := Config{URL: url, Depot: "d1", Stream: "RH", MaxInFlight: 64, StateFile: filepath.Join(dir, "uplink.json"),
		AckTimeout: 2 * time.Second, MaxBackoff: 200 * time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	u, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// waitFor polls cond every 10 ms for at most 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 3000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// streamLSNs reads the whole stream and answers the LSN of each message,
// in stream order, checking each message's subject and body against its
// Nats-Msg-Id.
func streamLSNs(t *testing.T, url string) []uint64 {
	t.Helper()
	out, err := readStreamLSNs(url)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readStreamLSNs is streamLSNs answering its error.
func readStreamLSNs(url string) ([]uint64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	st, err := js.Stream(ctx, "RH")
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("stream seq %d: %w", seq, err)
		}
		if m.Subject == EpochSubject("d1") {
			continue // an epoch marker (fence.go), not a record
		}
		lsn, ok := ParseMsgID("d1", m.Header.Get(jetstream.MsgIDHeader))
		if !ok {
			return nil, fmt.Errorf("stream seq %d: Nats-Msg-Id %q", seq, m.Header.Get(jetstream.MsgIDHeader))
		}
		var body Message
		if err := json.Unmarshal(m.Data, &body); err != nil {
			return nil, fmt.Errorf("stream seq %d: %w", seq, err)
		}
		if body.LSN != lsn || m.Subject != Subject("d1", body.Table) || body.Depot != "d1" || body.Op != "put" {
			return nil, fmt.Errorf("stream seq %d: subject %s, id lsn %d, body %s", seq, m.Subject, lsn, m.Data)
		}
		out = append(out, lsn)
	}
	return out, nil
}

// wantContiguous checks that lsns is exactly from..to, in order.
func wantContiguous(t *testing.T, lsns []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(lsns)) != to-from+1 {
		t.Fatalf("stream holds %d records, want %d (lsn %d..%d)", len(lsns), to-from+1, from, to)
	}
	for i, l := range lsns {
		if l != from+uint64(i) {
			t.Fatalf("stream record %d is lsn %d, want %d (a gap, a duplicate or out of order)", i, l, from+uint64(i))
		}
	}
}

// TestShipsInOrder: every durable record reaches the stream once, in LSN
// order, with its subject and id; the acknowledged LSN is stored and a
// restart of the uplink re-sends nothing.
func TestShipsInOrder(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	writeN(t, e, 0, 1500)
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
	if s := u.Status(); s.LagRecords != 0 || !s.Connected || s.Shipped != last {
		t.Fatalf("status after catching up: %+v", s)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if st, ok, err := readState(filepath.Join(dir, "uplink.json")); err != nil || !ok || st != (state{AckedLSN: last, Depot: "d1", Stream: "RH", Exact: true, Epoch: 1}) {
		t.Fatalf("state file: %+v %v %v; want acked %d", st, ok, err, last)
	}
	// A second uplink over the same state ships only what is new.
	u2 := newUplink(t, dir, ns.URL(), nil)
	u2.Start(e)
	writeN(t, e, 1500, 100)
	last = e.DurableLSN()
	waitFor(t, "the second uplink to catch up", func() bool { return u2.Acked() == last })
	if s := u2.Status(); s.Shipped != 100 {
		t.Fatalf("second uplink shipped %d, want 100", s.Shipped)
	}
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
}

// TestStreamTellsWhereToResume: a state file behind the stream (a crash
// between JetStream's ack and the file's write) re-sends nothing: the
// uplink asks the stream for the depot's last record.
func TestStreamTellsWhereToResume(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	writeN(t, e, 0, 300)
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
	u.Close()
	if err := writeState(filepath.Join(dir, "uplink.json"), state{AckedLSN: 10, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	u2 := newUplink(t, dir, ns.URL(), func(c *Config) { c.MaxInFlight = 8 })
	u2.Start(e)
	writeN(t, e, 300, 50)
	last = e.DurableLSN()
	waitFor(t, "the second uplink to catch up", func() bool { return u2.Acked() == last })
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
}

// TestNATSRestartMidStream: NATS goes down while the box writes; writes go
// on, the lag grows; NATS comes back and the uplink catches up with no gap
// and no duplicate in the stream.
func TestNATSRestartMidStream(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), func(c *Config) { c.MaxInFlight = 256 })
	u.Start(e)

	stop := make(chan struct{})
	var written atomic.Int64
	var wg sync.WaitGroup
	var werr atomic.Value
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i += 4 {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.PutKey(context.Background(), engine.Write{Table: "live", Key: fmt.Sprint("k", i%20),
					Value: []byte(fmt.Sprintf(`{"i":%d}`, i)), IfVersion: engine.AnyVersion}); err != nil {
					werr.Store(err)
					return
				}
				written.Add(1)
			}
		})
	}
	waitFor(t, "some records shipped", func() bool { return u.Status().Shipped > 200 })
	ns.Stop() // mid-stream: acks in flight are lost with the server
	waitFor(t, "the uplink to notice", func() bool { return !u.Status().Connected })
	before := written.Load()
	waitFor(t, "writes while NATS is down", func() bool { return written.Load() > before+300 })
	if s := u.Status(); s.LagRecords == 0 || s.LagSeconds <= 0 {
		t.Fatalf("lag while NATS is down: %+v", s)
	}
	ns.Restart()
	waitFor(t, "shipping to resume", func() bool { return u.Status().Sessions >= 2 && u.Status().Shipped > 0 })
	close(stop)
	wg.Wait()
	if err, _ := werr.Load().(error); err != nil {
		t.Fatalf("a write failed while NATS was down: %v", err)
	}
	if err := e.WaitCommitted(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
	if s := u.Status(); s.Failures == 0 || s.LastError == "" || s.Dropped != 0 {
		t.Fatalf("status after the outage: %+v", s)
	}
}

// TestRetentionKeepsUnshipped: with NATS unreachable, retention that would
// trim the whole log keeps every unshipped record; once NATS is there and
// the records are shipped, retention trims them.
func TestRetentionKeepsUnshipped(t *testing.T) {
	ns := natstest.Start(t)
	url := ns.URL()
	ns.Stop() // down from the start
	dir := t.TempDir()
	u := newUplink(t, dir, url, nil)
	e := openEngine(t, dir, engine.Retention{MaxBytes: 1, RetainAfter: u.RetainAfter, RetainMaxBytes: 1 << 30})
	u.Start(e)
	writeN(t, e, 0, 400)
	// Retention runs between batches at least once a second: give it
	// several rounds (more writes make more turns).
	deadline := time.Now().Add(2500 * time.Millisecond)
	for i := 400; time.Now().Before(deadline); i++ {
		put(t, e, "more", i)
		time.Sleep(5 * time.Millisecond)
	}
	if st := e.StoreStats(); st.FirstLSN != 1 || e.Totals().Trimmed.Load() != 0 {
		t.Fatalf("retention trimmed unshipped records: first lsn %d, trimmed %d", st.FirstLSN, e.Totals().Trimmed.Load())
	}
	ns.Restart()
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() >= last })
	// Shipped: now retention may trim them (writes give the committer turns).
	waitFor(t, "retention to trim the shipped records", func() bool {
		put(t, e, "more", 0)
		return e.StoreStats().FirstLSN > last
	})
	wantContiguous(t, streamLSNs(t, url)[:last], 1, last)
}

// TestBudgetDropsOldestLoudly: past the disk budget retention removes the
// oldest unshipped records. While the feed's in-memory tail still holds
// them the uplink ships them anyway; after a restart (an empty tail) the
// uplink counts the records gone from the log, says so, and ships the rest
// in order.
func TestBudgetDropsOldestLoudly(t *testing.T) {
	ns := natstest.Start(t)
	url := ns.URL()
	ns.Stop()
	dir := t.TempDir()
	const budget = 20 << 10
	u := newUplink(t, dir, url, nil)
	e := openEngine(t, dir, engine.Retention{MaxBytes: 1, RetainAfter: u.RetainAfter, RetainMaxBytes: budget})
	u.Start(e)
	writeN(t, e, 0, 1000)
	waitFor(t, "retention to pass the budget", func() bool {
		put(t, e, "more", 0)
		return e.StoreStats().FirstLSN > 1 && e.StoreStats().LogBytes <= budget+1024
	})
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.CloseStore(); err != nil {
		t.Fatal(err)
	}
	// Restarted: the tail is empty, the log starts past the dropped records.
	u = newUplink(t, dir, url, nil)
	e = openEngine(t, dir, engine.Retention{MaxBytes: 1, RetainAfter: u.RetainAfter, RetainMaxBytes: budget})
	first := e.StoreStats().FirstLSN
	u.Start(e)
	ns.Restart()
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() >= last })
	s := u.Status()
	if s.Dropped < first-1 {
		t.Fatalf("dropped %d records, the log started at lsn %d: %+v", s.Dropped, first, s)
	}
	wantContiguous(t, streamLSNs(t, url), s.Dropped+1, last)
}

// TestRefusesAnotherHistory: a stream that holds the depot beyond this
// store's last LSN (a store restored from an older backup) is not shipped
// to, and the refusal stays when the store has written past the stream's
// last LSN since.
func TestRefusesAnotherHistory(t *testing.T) {
	ns := natstest.Start(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	ea := openEngine(t, dirA, engine.DefaultConfig().Retention)
	ua := newUplink(t, dirA, ns.URL(), nil)
	ua.Start(ea)
	writeN(t, ea, 0, 100)
	last := ea.DurableLSN()
	waitFor(t, "box A to ship", func() bool { return ua.Acked() == last })
	eb := openEngine(t, dirB, engine.DefaultConfig().Retention)
	put(t, eb, "b", 1)
	ub := newUplink(t, dirB, ns.URL(), nil)
	ub.Start(eb)
	waitFor(t, "box B to refuse", func() bool { return ub.Status().Refused })
	if s := ub.Status(); s.Shipped != 0 || s.Connected || !strings.Contains(s.LastError, "refusing to ship") {
		t.Fatalf("box B shipped into A's history: %+v", s)
	}
	// B writes past A's last LSN: still refused (not re-checked by LSN).
	writeN(t, eb, 0, 200)
	time.Sleep(time.Second) // several reconnect backoffs
	if s := ub.Status(); s.Shipped != 0 || !s.Refused || s.Failures != 1 {
		t.Fatalf("box B after writing past A's last lsn: %+v", s)
	}
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
}

// TestRefusesALongerHistory: a second box under the same depot whose log
// is longer than the stream's is refused too: its record at the stream's
// last LSN is not the stream's.
func TestRefusesALongerHistory(t *testing.T) {
	ns := natstest.Start(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	ea := openEngine(t, dirA, engine.DefaultConfig().Retention)
	ua := newUplink(t, dirA, ns.URL(), nil)
	ua.Start(ea)
	writeN(t, ea, 0, 100)
	last := ea.DurableLSN()
	waitFor(t, "box A to ship", func() bool { return ua.Acked() == last })
	eb := openEngine(t, dirB, engine.DefaultConfig().Retention)
	writeN(t, eb, 0, 150)
	ub := newUplink(t, dirB, ns.URL(), nil)
	ub.Start(eb)
	waitFor(t, "box B to refuse", func() bool { return ub.Status().Refused })
	if s := ub.Status(); s.Shipped != 0 || !strings.Contains(s.LastError, fmt.Sprintf("at lsn %d", last)) {
		t.Fatalf("box B: %+v", s)
	}
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
}

func TestCheckDepotAndMsgID(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", string(make([]byte, 65))} {
		if CheckDepot(bad) == nil {
			t.Errorf("depot %q accepted", bad)
		}
	}
	if err := CheckDepot("depot-7_b"); err != nil {
		t.Error(err)
	}
	if l, ok := ParseMsgID("d1", MsgID("d1", 42)); !ok || l != 42 {
		t.Errorf("msg id round trip: %d %v", l, ok)
	}
	if _, ok := ParseMsgID("d1", MsgID("d10", 42)); ok {
		t.Error("another depot's id parsed")
	}
	for _, c := range []struct {
		filter string
		want   bool
	}{{">", true}, {"routehound.>", true}, {"routehound.*.>", true}, {"routehound.d1.>", true}, {"*.d1.>", true},
		{"routehound.d2.>", false}, {"routehound.d1.*", false}, {"routehound.d1", false}, {"routehound.*", false}, {"other.>", false}} {
		if got := covers(c.filter, "routehound.d1.>"); got != c.want {
			t.Errorf("covers(%q, routehound.d1.>) = %v", c.filter, got)
		}
	}
	if got := redact("nats://u:p@h:4222,nats://h2:4222"); got != "nats://***@h:4222,nats://h2:4222" {
		t.Errorf("redact: %s", got)
	}
	if st, ok, err := readState(filepath.Join(t.TempDir(), "none")); err != nil || ok || st.AckedLSN != 0 {
		t.Errorf("missing state: %+v %v %v", st, ok, err)
	}
}

// jsStream connects to the test server's JetStream.
func jsConn(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// createStream creates the stream RH over depot d1's subjects.
func createStream(t *testing.T, url string, mut func(*jetstream.StreamConfig)) jetstream.Stream {
	t.Helper()
	cfg := jetstream.StreamConfig{Name: "RH", Subjects: []string{"routehound.d1.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}
	if mut != nil {
		mut(&cfg)
	}
	st, err := jsConn(t, url).CreateStream(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// writeWithBig writes records 1..20, lsn 11 larger than 400 bytes.
func writeWithBig(t *testing.T, e *engine.Engine) {
	t.Helper()
	for i := 1; i <= 20; i++ {
		v := fmt.Sprintf(`{"i":%d}`, i)
		if i == 11 {
			v = fmt.Sprintf(`{"i":%d,"pad":"%0600d"}`, i, 0)
		}
		res, err := e.PutKey(context.Background(), engine.Write{Table: "t", Key: fmt.Sprint("k", i), Value: []byte(v), IfVersion: engine.AnyVersion})
		if err != nil || res.LSN != uint64(i) {
			t.Fatalf("write %d: lsn %d, %v", i, res.LSN, err)
		}
	}
	waitFor(t, "the writes to be durable", func() bool { return e.DurableLSN() == 20 })
}

func sorted(l []uint64) []uint64 {
	l = append([]uint64(nil), l...)
	slices.Sort(l)
	return l
}

// TestRefusedRecordIsSentAgain: JetStream refuses lsn 11 while 12..20 in
// flight are stored; the next session of the same process re-sends from
// lsn 11, not from the stream's last record, so once the stream accepts it
// lsn 11 is in the stream and nothing was dropped.
func TestRefusedRecordIsSentAgain(t *testing.T) {
	ns := natstest.Start(t)
	st := createStream(t, ns.URL(), func(c *jetstream.StreamConfig) { c.MaxMsgSize = 400 })
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	writeWithBig(t, e)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	waitFor(t, "lsn 11 to be refused", func() bool { return u.Status().Failures >= 1 })
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = -1
	if _, err := jsConn(t, ns.URL()).UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == 20 })
	wantContiguous(t, sorted(streamLSNs(t, ns.URL())), 1, 20)
	if s := u.Status(); s.Dropped != 0 {
		t.Fatalf("status: %+v", s)
	}
}

// TestRecordRefusedForGoodIsCounted: a record the stream always refuses
// (larger than its max_msg_size) is skipped after maxRefusals sessions,
// counted in dropped, and the records after it are shipped.
func TestRecordRefusedForGoodIsCounted(t *testing.T) {
	ns := natstest.Start(t)
	createStream(t, ns.URL(), func(c *jetstream.StreamConfig) { c.MaxMsgSize = 400 })
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	writeWithBig(t, e)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	waitFor(t, "the uplink to skip lsn 11", func() bool { return u.Status().Dropped == 1 })
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == 20 })
	if s := u.Status(); s.Failures < maxRefusals || !strings.Contains(s.LastError, "lsn 11") {
		t.Fatalf("status: %+v", s)
	}
	got := sorted(streamLSNs(t, ns.URL()))
	want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	if !slices.Equal(got, want) {
		t.Fatalf("stream holds %v", got)
	}
	if st, _, _ := readState(filepath.Join(dir, "uplink.json")); st.AckedLSN < 11 {
		t.Fatalf("state file at lsn %d after the skip", st.AckedLSN)
	}
	// A refused last record is skipped once, not sent again and again
	// (the stream's last record, 20, is behind acked, 21, by a skip).
	if _, err := e.PutKey(context.Background(), engine.Write{Table: "t", Key: "big", Value: []byte(fmt.Sprintf(`{"pad":"%0600d"}`, 0)), IfVersion: engine.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the uplink to skip lsn 21", func() bool { return u.Acked() == 21 })
	time.Sleep(1500 * time.Millisecond)
	if s := u.Status(); s.Dropped != 2 || u.Acked() != 21 {
		t.Fatalf("after skipping the last record: acked %d, %+v", u.Acked(), s)
	}
}

// TestStreamDeletedIsShippedAgain: the stream was deleted after the state
// file moved; connect creates it again and the uplink ships the log again
// from its first record, instead of from the state file's LSN.
func TestStreamDeletedIsShippedAgain(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	writeN(t, e, 0, 100)
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
	u.Close()
	if err := jsConn(t, ns.URL()).DeleteStream(context.Background(), "RH"); err != nil {
		t.Fatal(err)
	}
	u2 := newUplink(t, dir, ns.URL(), nil)
	u2.Start(e)
	waitFor(t, "the uplink to ship the log again", func() bool { return u2.Status().Shipped == last })
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, last)
	if s := u2.Status(); s.Dropped != 0 || s.AckedLSN != last {
		t.Fatalf("status: %+v", s)
	}
}

// TestStreamLostItsTail: the state file says lsn 50 was acknowledged but
// the stream ends at lsn 40 (restored from an older snapshot, say): the
// uplink sends 41..50 again.
func TestStreamLostItsTail(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	for i := range 40 {
		put(t, e, "t", i)
	}
	waitFor(t, "the uplink to ship 40", func() bool { return u.Acked() == 40 })
	u.Close()
	for i := range 10 {
		put(t, e, "t", 40+i)
	}
	waitFor(t, "the writes to be durable", func() bool { return e.DurableLSN() == 50 })
	if err := writeState(filepath.Join(dir, "uplink.json"), state{AckedLSN: 50, Depot: "d1", Stream: "RH", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	u2 := newUplink(t, dir, ns.URL(), nil)
	u2.Start(e)
	waitFor(t, "the uplink to send 41..50", func() bool { return u2.Status().Shipped == 10 })
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, 50)
}

// TestStateFileOfAnotherDepot: a state file written for another depot is
// ignored: the uplink ships this log from its first record.
func TestStateFileOfAnotherDepot(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	for i := range 30 {
		put(t, e, "t", i)
	}
	if err := writeState(filepath.Join(dir, "uplink.json"), state{AckedLSN: 30, Depot: "d0", Stream: "RH"}); err != nil {
		t.Fatal(err)
	}
	u := newUplink(t, dir, ns.URL(), nil)
	if u.Acked() != 0 {
		t.Fatalf("acked %d from another depot's state file", u.Acked())
	}
	u.Start(e)
	waitFor(t, "the uplink to ship the log", func() bool { return u.Status().Shipped == 30 })
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, 30)
}

// TestWorkQueueStreamIsNotRewound: a WorkQueue stream removes what was
// consumed: a depot without records there is not a lost stream, nothing is
// sent again.
func TestWorkQueueStreamIsNotRewound(t *testing.T) {
	ns := natstest.Start(t)
	st := createStream(t, ns.URL(), func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy })
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	for i := range 20 {
		put(t, e, "t", i)
	}
	waitFor(t, "the uplink to ship 20", func() bool { return u.Acked() == 20 })
	u.Close()
	if err := st.Purge(context.Background()); err != nil { // consumed
		t.Fatal(err)
	}
	u2 := newUplink(t, dir, ns.URL(), nil)
	u2.Start(e)
	waitFor(t, "a session", func() bool { return u2.Status().Sessions == 1 })
	time.Sleep(300 * time.Millisecond)
	if s := u2.Status(); s.Shipped != 0 || s.AckedLSN != 20 {
		t.Fatalf("status: %+v", s)
	}
}

// TestStreamOfOtherSubjects: an existing stream whose subjects do not cover
// the depot's is reported as such, not as "no responders".
func TestStreamOfOtherSubjects(t *testing.T) {
	ns := natstest.Start(t)
	createStream(t, ns.URL(), func(c *jetstream.StreamConfig) { c.Subjects = []string{"routehound.d0.>"} })
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	put(t, e, "t", 1)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	waitFor(t, "a failure", func() bool { return u.Status().Failures > 0 })
	if s := u.Status(); s.Sessions != 0 || !strings.Contains(s.LastError, "do not cover routehound.d1.>") {
		t.Fatalf("status: %+v", s)
	}
}

// TestRefusedRecordIsSentAgainAfterRestart: JetStream refuses lsn 11 while
// 12..20 are stored, and the uplink is restarted: the state file, written
// when the session ended, is exact, so the next start sends lsn 11 again
// instead of moving to the stream's last record.
func TestRefusedRecordIsSentAgainAfterRestart(t *testing.T) {
	ns := natstest.Start(t)
	st := createStream(t, ns.URL(), func(c *jetstream.StreamConfig) { c.MaxMsgSize = 400 })
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	writeWithBig(t, e)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	waitFor(t, "lsn 11 to be refused", func() bool { return u.Status().Failures >= 1 })
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = -1
	if _, err := jsConn(t, ns.URL()).UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	u2 := newUplink(t, dir, ns.URL(), nil)
	u2.Start(e)
	waitFor(t, "the uplink to catch up", func() bool { return u2.Acked() == 20 })
	wantContiguous(t, sorted(streamLSNs(t, ns.URL())), 1, 20)
	if s := u2.Status(); s.Dropped != 0 {
		t.Fatalf("status: %+v", s)
	}
}
