package engine

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"routehound/fleet"
	"routehound/wal"
)

func phonePoint(driver, device string, fixMs int64, lat float64) PhonePoint {
	return PhonePoint{Driver: driver, Device: device, FixMs: fixMs, Lat: lat, Lng: 13.4,
		Value: []byte(`{"lat":1,"lng":2,"device":"` + device + `"}`)}
}

func seqsOf(t *testing.T, e *Engine, table, key string) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range logOf(t, e) {
		if r.Table != table || r.Key != key {
			continue
		}
		var p struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatalf("record %s: %v", r.Value, err)
		}
		out = append(out, p.Seq)
	}
	return out
}

// The seq follows the fix time and stays strictly increasing: a late or
// out-of-order point gets last+1.
func TestPhoneSeqFollowsFixTimeAndIncreases(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	fixes := []int64{1_000_000, 3_000_000, 2_000_000, 3_000_000, 0}
	want := []uint64{1_000_000, 3_000_000, 3_000_001, 3_000_002, 3_000_003}
	for i, fx := range fixes {
		ack, err := e.SubmitPhonePoint(ctx, phonePoint("drv", "dev-00000001", fx, float64(i)))
		if err != nil || ack.Duplicate || ack.Seq != want[i] {
			t.Fatalf("point %d (fix %d): %+v %v, want seq %d", i, fx, ack, err, want[i])
		}
		// Answered only once durable: the driver's durable seq is there.
		if d, _ := e.DriverDurableSeq("drv"); d != want[i] {
			t.Fatalf("durable seq %d after an answer for %d", d, want[i])
		}
	}
	got := seqsOf(t, e, fleet.TablePositions, "drv")
	if len(got) != len(want) {
		t.Fatalf("log seqs %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("log seqs %v want %v", got, want)
		}
	}
	recs := logOf(t, e)
	if v := string(recs[0].Value); !strings.HasPrefix(v, `{"seq":1000000,"lat":1,`) || recs[0].Actor != LaneDriver.String() {
		t.Fatalf("stored value %s by %s", v, recs[0].Actor)
	}
	if e.Lane(LaneDriver).Accepted.Load() != 5 || e.Phone().Points.Load() != 5 {
		t.Fatalf("accepted %d points %d", e.Lane(LaneDriver).Accepted.Load(), e.Phone().Points.Load())
	}
}

func TestPhoneResendStoresNothing(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	p := phonePoint("drv", "dev-00000001", 5_000_000, 1)
	first, err := e.SubmitPhonePoint(ctx, p)
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := e.SubmitPhonePoint(ctx, p)
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("resend: %+v %v", again, err)
	}
	// Another position at the same fix time is another point.
	other := phonePoint("drv", "dev-00000001", 5_000_000, 2)
	if ack, err := e.SubmitPhonePoint(ctx, other); err != nil || ack.Duplicate || ack.Seq != first.Seq+1 {
		t.Fatalf("other position: %+v %v", ack, err)
	}
	if n := len(seqsOf(t, e, fleet.TablePositions, "drv")); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
	if e.Phone().Duplicates.Load() != 1 || e.Lane(LaneDriver).Duplicates.Load() != 1 {
		t.Fatalf("duplicates %d", e.Phone().Duplicates.Load())
	}
}

// Resends racing each other (several in one batch, or in consecutive
// batches) store the point once, and every answer names the same seq.
func TestPhoneConcurrentResends(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	const n = 32
	for round := range 5 {
		p := phonePoint("drv", "dev-00000001", int64(10_000_000+round), 1)
		acks := make([]PhoneAck, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { acks[i], errs[i] = e.SubmitPhonePoint(ctx, p) })
		}
		wg.Wait()
		fresh := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if !acks[i].Duplicate {
				fresh++
			}
			if acks[i].Seq != acks[0].Seq {
				t.Fatalf("round %d: seqs differ: %+v vs %+v", round, acks[i], acks[0])
			}
		}
		if fresh != 1 {
			t.Fatalf("round %d: %d answers stored the point", round, fresh)
		}
	}
	if got := seqsOf(t, e, fleet.TablePositions, "drv"); len(got) != 5 {
		t.Fatalf("log holds %v, want 5 points", got)
	}
}

// After a restart the driver's high-water mark comes back from its
// position, and the idempotency entries from the store.
func TestPhoneSeqAndDedupSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Engine, *wal.DB) {
		db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.MinFreeBytes = 0
		e, err := New(cfg, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e, db
	}
	closeAll := func(e *Engine, db *wal.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	e, db := open()
	p := phonePoint("drv", "dev-00000001", 9_000_000, 1)
	first, err := e.SubmitPhonePoint(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(e, db)

	e, db = open()
	defer closeAll(e, db)
	if ack, err := e.SubmitPhonePoint(ctx, p); err != nil || !ack.Duplicate || ack.Seq != first.Seq {
		t.Fatalf("resend after restart: %+v %v", ack, err)
	}
	late := phonePoint("drv", "dev-00000001", 8_000_000, 1)
	if ack, err := e.SubmitPhonePoint(ctx, late); err != nil || ack.Seq != first.Seq+1 {
		t.Fatalf("late point after restart: %+v %v (want seq %d)", ack, err, first.Seq+1)
	}
}

// A full driver lane refuses the point at once (the listener closes the
// connection), and counts it.
func TestPhoneLaneFull(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		l := c.Lanes[LaneDriver]
		l.QueueBound = 4
		l.FlushWithin = time.Hour // async points hold the lane until Close syncs them
		c.Lanes[LaneDriver] = l
	})
	ctx := context.Background()
	if _, err := e.SubmitPoints(ctx, "other", pts(1, 4)); err != nil {
		t.Fatal(err)
	}
	_, err := e.SubmitPhonePoint(ctx, phonePoint("drv", "dev-00000001", 1_000, 1))
	if !errors.Is(err, ErrLaneFull) || !IsStorageRefusal(err) {
		t.Fatalf("want ErrLaneFull, got %v", err)
	}
	found := false
	for _, r := range e.Lane(LaneDriver).Rejected() {
		found = found || (r.Reason == "lane_full" && r.Count == 1)
	}
	if !found {
		t.Fatalf("rejections %v", e.Lane(LaneDriver).Rejected())
	}
	if err := e.PutPhoneRecord(ctx, fleet.TableQuarantine, "k", []byte(`{}`)); !errors.Is(err, ErrLaneFull) {
		t.Fatalf("phone record on a full lane: %v", err)
	}
}

func TestPhoneRecordAndValueChecks(t *testing.T) {
	e, _ := newEngine(t, nil)
	ctx := context.Background()
	if err := e.PutPhoneRecord(ctx, fleet.TableDeviceStatus, "dev-00000001", []byte(`{"battery":50}`)); err != nil {
		t.Fatal(err)
	}
	s, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	st, ok, err := s.Get(fleet.TableDeviceStatus, "dev-00000001")
	s.Close()
	if err != nil || !ok || string(st.Value) != `{"battery":50}` {
		t.Fatalf("status: %s %v %v", st.Value, ok, err)
	}
	if err := e.PutPhoneRecord(ctx, fleet.TablePositions, "x", []byte(`{}`)); err == nil {
		t.Fatal("a phone record may only go to the phone tables")
	}
	if _, err := e.SubmitPhonePoint(ctx, PhonePoint{Driver: "d", Device: "x", Value: []byte(`[1]`)}); err == nil {
		t.Fatal("a value that is not an object was taken")
	}
	if ack, err := e.SubmitPhonePoint(ctx, PhonePoint{Driver: "d", Device: "x", FixMs: 7, Value: []byte(`{}`)}); err != nil || ack.Seq != 7 {
		t.Fatalf("empty object: %+v %v", ack, err)
	}
	if got := logOf(t, e); string(got[len(got)-1].Value) != `{"seq":7}` {
		t.Fatalf("empty object stored as %s", got[len(got)-1].Value)
	}
	for _, b := range []string{fleet.TableDevices, fleet.TableDeviceStatus, fleet.TableQuarantine, fleet.TablePositions} {
		if !fleet.IsBuiltin(b) {
			t.Fatalf("%s is not built in", b)
		}
	}
}
