package uplink

import (
	"context"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/natstest"
)

// The first session claims epoch 1 (a marker in the stream, the epoch in
// the state file); a marker the stream lost (deleted here, as a stream's
// limits would) is claimed again: the refused record is sent again and
// nothing is skipped, the box is not fenced.
func TestEpochMarkerLostIsClaimedAgain(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	u := newUplink(t, dir, ns.URL(), nil)
	u.Start(e)
	writeN(t, e, 0, 100)
	waitFor(t, "the uplink to ship 100", func() bool { return u.Acked() == e.DurableLSN() })
	if u.Epoch() != 1 {
		t.Fatalf("epoch %d after the first session, want 1", u.Epoch())
	}
	ctx := context.Background()
	st, err := jsConn(t, ns.URL()).Stream(ctx, "RH")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, EpochSubject("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
		t.Fatal(err)
	}
	writeN(t, e, 100, 50)
	waitFor(t, "the uplink to ship 150", func() bool { return u.Acked() == e.DurableLSN() })
	if s := u.Status(); s.Fenced || s.Epoch != 1 || s.Dropped != 0 {
		t.Fatalf("status after the marker was lost: %+v", s)
	}
	wantContiguous(t, streamLSNs(t, ns.URL()), 1, e.DurableLSN())
	if _, err := st.GetLastMsgForSubject(ctx, EpochSubject("d1")); err != nil {
		t.Fatalf("no marker claimed again: %v", err)
	}
}

// A newer epoch's marker (a standby promoted) fences a running uplink:
// its next record is refused by the stream, it stops, says so (Fenced,
// OnFenced, the state file), and a restart stays fenced without a session.
func TestNewerEpochFences(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	fenced := make(chan string, 1)
	u := newUplink(t, dir, ns.URL(), func(c *Config) { c.OnFenced = func(why string) { fenced <- why } })
	u.Start(e)
	writeN(t, e, 0, 20)
	waitFor(t, "the uplink to ship 20", func() bool { return u.Acked() == e.DurableLSN() })
	ctx := context.Background()
	js := jsConn(t, ns.URL())
	st, err := js.Stream(ctx, "RH")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := lastMarker(ctx, st, "d1")
	if err != nil || mk.epoch != 1 {
		t.Fatalf("marker %+v %v", mk, err)
	}
	if _, err := publishMarker(ctx, js, "d1", 2, 20, EpochSubject("d1"), mk.seq); err != nil {
		t.Fatal(err)
	}
	// A claim expecting the old marker is refused now.
	if _, err := publishMarker(ctx, js, "d1", 2, 20, EpochSubject("d1"), mk.seq); !IsFenceRefusal(err) {
		t.Fatalf("a second claim of epoch 2: %v", err)
	}
	writeN(t, e, 20, 5)
	select {
	case <-fenced:
	case <-time.After(20 * time.Second):
		t.Fatal("OnFenced was not called within 20 s")
	}
	if !u.Fenced() {
		t.Fatal("OnFenced called, Fenced false")
	}
	if u.Acked() != 20 {
		t.Fatalf("acked %d: a record after the newer epoch was taken", u.Acked())
	}
	lsns := streamLSNs(t, ns.URL())
	wantContiguous(t, lsns, 1, 20)
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if ep, by, err := StateEpoch(u.cfg.StateFile); err != nil || ep != 1 || by != 2 {
		t.Fatalf("state file: epoch %d fenced by %d, %v", ep, by, err)
	}
	again := make(chan string, 1)
	u2 := newUplink(t, dir, ns.URL(), func(c *Config) { c.OnFenced = func(why string) { again <- why } })
	if !u2.Fenced() {
		t.Fatal("a restart is not fenced")
	}
	u2.Start(e)
	select {
	case <-again:
	case <-time.After(20 * time.Second):
		t.Fatal("the restarted uplink did not call OnFenced")
	}
	if s := u2.Status(); s.Sessions != 0 || !s.Fenced {
		t.Fatalf("restarted: %+v", s)
	}
}
