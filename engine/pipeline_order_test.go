package engine

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"routehound/wal"
)

func newHoldEngineCfg(t *testing.T, tweak func(*Config)) (*Engine, holdSyncEnv) {
	t.Helper()
	dir := t.TempDir()
	open := func() (*wal.DB, error) { return wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20}) }
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	h := holdSyncEnv{started: make(chan struct{}, 64), release: make(chan error, 64)}
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.Open = open
	tweak(&cfg)
	e, err := newWithEnv(cfg, db, nil, func(db *wal.DB) commitEnv { h.storeEnv = storeEnv{db}; return h })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 64 {
			select {
			case h.release <- nil:
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Error(err)
		}
		e.store().Close()
	})
	return e, h
}

// Found in review: an item's durable callback (a phone point's count and
// its driver's durable seq) ran in answer() and again in synced(). With
// the driver lane on an ack contract (a valid config) a phone point waits
// behind a held fsync; it is counted once.
func TestDurableCallbackRunsOnce(t *testing.T) {
	e, h := newHoldEngineCfg(t, func(c *Config) {
		l := c.Lanes[LaneDriver]
		l.Contract = Ack
		c.Lanes[LaneDriver] = l
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// hold a first fsync so the phone point is answered by the journal
	if _, err := e.PutKey(ctx, Write{Table: "notes", Key: "a", Value: []byte(`{}`), IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	<-h.started
	phone := make(chan error, 1)
	go func() {
		_, err := e.SubmitPhonePoint(ctx, phonePoint("drv", "dev-00000001", time.Now().UnixMilli(), 1))
		phone <- err
	}()
	for range 4 {
		h.release <- nil
	}
	if err := <-phone; err != nil {
		t.Fatal(err)
	}
	if err := e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.Phone().Points.Load(); n != 1 {
		t.Fatalf("phone points stored: counted %d, one was stored", n)
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Found in review: while stopping, the run loop's select has the closed e.stop as a
// ready case; with an fsync (or a journal write) in flight it spins until
// the flight ends.
func TestStopDoesNotSpinWhileAnFsyncIsInFlight(t *testing.T) {
	e, h := newHoldEngineCfg(t, func(*Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.PutKey(ctx, Write{Table: "notes", Key: "a", Value: []byte(`{}`), IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	<-h.started // the log's fsync is held
	done := make(chan error, 1)
	go func() { done <- e.Close(ctx) }()
	time.Sleep(50 * time.Millisecond)
	c0, w0 := cpuTime(t), time.Now()
	time.Sleep(500 * time.Millisecond)
	used, wall := cpuTime(t)-c0, time.Since(w0)
	h.release <- nil
	h.release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if used > wall/4 {
		t.Fatalf("the committer spun while stopping: %v of CPU in %v of wall time with one fsync in flight", used.Round(time.Millisecond), wall.Round(time.Millisecond))
	}
}

// Found in review: a frame that finds no room in the journal is dropped from the
// journal's queue and waits for the log's fsync; a later frame may still be
// written (once the log covers the other file) and answered first. A retry
// of the first write (same Idempotency-Key) in that later batch is answered
// "stored" (Replayed) while the first write is in neither the journal nor
// the synced log: a power cut then voids its LSN.
func TestNoRoomFrameKeepsItsPlace(t *testing.T) {
	e, h := newHoldEngineCfg(t, func(*Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := []byte(`"` + string(make([]byte, 0)) + strings.Repeat("x", 250<<10) + `"`)
	put := func(key string) {
		t.Helper()
		if _, err := e.PutKey(ctx, Write{Table: "notes", Key: key, Value: big, IfVersion: AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.PutKey(ctx, Write{Table: "notes", Key: "a", Value: []byte(`{}`), IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	<-h.started // S0 held
	for i := range 16 {
		put(fmt.Sprint("w", i)) // journal.0
	}
	h.release <- nil // S0
	<-h.started      // S1 covers w0..w8, held
	for i := 16; i < 32; i++ {
		put(fmt.Sprint("w", i)) // journal.1
	}
	xw := Write{Table: "notes", Key: "x", Value: big, IfVersion: AnyVersion, IdemKey: "idem-x", Fingerprint: []byte("fp")}
	xdone := make(chan error, 1)
	go func() { _, err := e.PutKey(ctx, xw); xdone <- err }()
	select {
	case err := <-xdone:
		t.Fatalf("x answered at once (%v): the journal had room, the test tests nothing", err)
	case <-time.After(300 * time.Millisecond):
	}
	h.release <- nil // S1: the log covers journal.0 now
	<-h.started      // S2, covering x, held
	// x's retry and another write, in one batch
	y := e.keyedItem(LaneTables, xw)
	z := e.keyedItem(LaneTables, Write{Table: "notes", Key: "z", Value: []byte(`{}`), IfVersion: AnyVersion})
	if err := e.enqueue(e.lanes[LaneTables], y, z); err != nil {
		t.Fatal(err)
	}
	// The journal has room again (the log covers journal.0), but x's frame
	// waited first: the retry's frame may not be written before it.
	select {
	case ry := <-y.done:
		t.Fatalf("the retry of x was answered %+v (err %v) while x itself is neither in the journal nor covered by a finished log fsync", ry.write, ry.err)
	case err := <-xdone:
		if err != nil {
			t.Fatal(err)
		}
		// x went to the journal first: then the retry may follow.
	case <-time.After(500 * time.Millisecond):
	}
	h.release <- nil // S2 covers x
	h.release <- nil // S3 covers the retry, which journaled nothing (a replayed answer)
	select {
	case ry := <-y.done:
		if ry.err != nil || !ry.write.Replayed {
			t.Fatalf("the retry of x: %+v %v, want the stored answer", ry.write, ry.err)
		}
	case <-ctx.Done():
		t.Fatal("the retry of x was never answered")
	}
}
