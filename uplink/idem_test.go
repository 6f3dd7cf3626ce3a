package uplink

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
	"routehound/internal/natstest"
)

func idemOf(t *testing.T, e *engine.Engine) map[uint64]engine.IdemEntry {
	t.Helper()
	out := map[uint64]engine.IdemEntry{}
	if err := e.IdemEntries(0, e.DurableLSN(), func(ie engine.IdemEntry) error { out[ie.LSN] = ie; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameIdem(a, b engine.IdemEntry) bool {
	return a.LSN == b.LSN && a.Scope == b.Scope && a.Key == b.Key && bytes.Equal(a.Answer, b.Answer) && a.ExpiresAt.Equal(b.ExpiresAt)
}

// wantShippedIdem checks that every record of depot d1 in the stream RH
// carries its own idempotency entry of want (by LSN), and no other.
func wantShippedIdem(t *testing.T, url string, want map[uint64]engine.IdemEntry) {
	t.Helper()
	ctx := context.Background()
	st, err := jsConn(t, url).Stream(ctx, "RH")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		lsn, ok := ParseMsgID("d1", m.Header.Get(jetstream.MsgIDHeader))
		if !ok {
			continue // the epoch marker
		}
		ie, has, err := decodeIdem(m.Header, lsn)
		if err != nil {
			t.Fatalf("lsn %d: %v", lsn, err)
		}
		w, tied := want[lsn]
		if has != tied || has && !sameIdem(ie, w) {
			t.Fatalf("lsn %d shipped with entry %+v (%v), its own is %+v (%v)", lsn, ie, has, w, tied)
		}
		if has {
			seen++
		}
	}
	if seen != len(want) {
		t.Fatalf("%d records shipped with their entry, want %d", seen, len(want))
	}
}

// TestIdemEntriesTravel: a record whose write stored an idempotency entry
// is shipped with it (HeaderIdem), the others without; a follower stores
// the entries with their records; a message without the header (shipped
// by an older version) is applied alone, and so is one whose header does
// not decode.
func TestIdemEntriesTravel(t *testing.T) {
	ns := natstest.Start(t)
	dir := t.TempDir()
	e := openEngine(t, dir, engine.DefaultConfig().Retention)
	// A window of 2: most records wait in held, with their entries.
	u := newUplink(t, dir, ns.URL(), func(c *Config) { c.MaxInFlight = 2 })
	u.Start(e)
	ctx := context.Background()
	for i := range 60 {
		w := engine.Write{Table: "notes", Key: fmt.Sprint("k", i%7), Value: fmt.Appendf(nil, `{"i":%d}`, i), IfVersion: engine.AnyVersion}
		if i%3 == 0 {
			w.IdemKey, w.Fingerprint = fmt.Sprint("key-", i), []byte{byte(i)}
		}
		if _, err := e.PutKey(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.WaitCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	last := e.DurableLSN()
	waitFor(t, "the uplink to catch up", func() bool { return u.Acked() == last })
	want := idemOf(t, e)
	if len(want) != 20 {
		t.Fatalf("the primary holds %d entries tied to records, want 20", len(want))
	}
	wantShippedIdem(t, ns.URL(), want)
	js := jsConn(t, ns.URL())

	// The follower stores them with the records.
	sdir := t.TempDir()
	s := openEngine(t, sdir, engine.DefaultConfig().Retention)
	f, err := OpenFollower(FollowConfig{URL: ns.URL(), Depot: "d1", Stream: "RH", UplinkStateFile: filepath.Join(sdir, "uplink.json")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Start(s)
	defer f.Close()
	waitFor(t, "the follower to catch up", func() bool { return s.DurableLSN() == last })
	got := idemOf(t, s)
	if len(got) != len(want) {
		t.Fatalf("the follower holds %d entries, want %d", len(got), len(want))
	}
	for lsn, w := range want {
		if !sameIdem(got[lsn], w) {
			t.Fatalf("lsn %d: the follower's entry %+v, the primary's %+v", lsn, got[lsn], w)
		}
	}

	// Messages without the header (an older primary's), or with one that
	// does not decode, are applied alone.
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	for i, hdr := range []string{"", `{"scope":"tables"`} {
		lsn := last + 1 + uint64(i)
		m := nats.NewMsg(Subject("d1", "notes"))
		m.Data = fmt.Appendf(nil, `{"lsn":%d,"depot":"d1","table":"notes","key":"old-%d","op":"put","value":{},"version":1,"actor":"tables","committed_at":%q}`,
			lsn, i, time.Now().UTC().Format(time.RFC3339Nano))
		m.Header.Set(jetstream.MsgIDHeader, MsgID("d1", lsn))
		if hdr != "" {
			m.Header.Set(HeaderIdem, hdr)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the follower to apply the messages without an entry", func() bool { return s.DurableLSN() == last+2 })
	if got := idemOf(t, s); len(got) != len(want) {
		t.Fatalf("the follower holds %d entries after the messages without one, want %d", len(got), len(want))
	}
}

func TestDecodeIdem(t *testing.T) {
	exp := time.Unix(1_800_000_000, 0).UTC()
	ie := engine.IdemEntry{LSN: 7, Scope: "dispatch", Key: "k\x00\xff é", Answer: []byte(`{"f":"x"}`), ExpiresAt: exp}
	v, err := idemHeader(&ie)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	if _, ok, err := decodeIdem(h, 7); ok || err != nil {
		t.Fatalf("no header: %v %v", ok, err)
	}
	h.Set(HeaderIdem, v)
	if got, ok, err := decodeIdem(h, 7); !ok || err != nil || !sameIdem(got, ie) {
		t.Fatalf("round trip of %q: %+v %v %v", v, got, ok, err)
	}
	ie.ExpiresAt = time.Time{}
	v, _ = idemHeader(&ie)
	h.Set(HeaderIdem, v)
	if got, ok, err := decodeIdem(h, 7); !ok || err != nil || !got.ExpiresAt.IsZero() {
		t.Fatalf("an entry that never expires, %q: %+v %v %v", v, got, ok, err)
	}
	for _, bad := range []string{`{`, `{"key":"azE="}`, `{"scope":"x"}`, `{"scope":"x","key":"azE=","expires_at":-1}`, `{"scope":"x","key":"not base64!"}`} {
		h.Set(HeaderIdem, bad)
		if _, ok, err := decodeIdem(h, 7); ok || err == nil {
			t.Fatalf("header %q: %v %v, want an error", bad, ok, err)
		}
	}
}
