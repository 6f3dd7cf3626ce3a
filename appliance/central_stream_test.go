package appliance

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/internal/natstest"
	"routehound/uplink"
)

// centralStreams answers the streams a central view's status lists.
func centralStreams(t *testing.T, c *Appliance) []string {
	t.Helper()
	st, b := httpDo(t, "GET", c.URL()+"/v1/uplink", c.Token("admin"), "")
	var s uplink.CentralStatus
	if st != http.StatusOK || json.Unmarshal(b, &s) != nil {
		t.Fatalf("central GET /v1/uplink: %d %s", st, b)
	}
	var out []string
	for _, x := range s.Streams {
		out = append(out, x.Stream)
	}
	return out
}

// TestCentralStreamDeletedAndCreatedAgain: a stream deleted while the view
// reads it, then created again under its name, is read from its start (the
// session ends, the next one sees a new creation time): every record of
// the new stream is applied, none lost to the old stream's sequence. A
// stream deleted for good leaves the view's status.
func TestCentralStreamDeletedAndCreatedAgain(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, n := range []string{"RH_A", "RH_B"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n, Subjects: []string{"routehound." + n + ".>", "routehound.pre" + n + ".>"}}); err != nil {
			t.Fatal(err)
		}
	}
	a := &publishedDepot{t: t, name: "RH_A", js: js, state: map[string]map[string]string{}}
	a.publish("notes", "x", "put", `{}`)
	cfg := loopbackConfig(t)
	cfg.Central.NATSURL = ns.URL()
	c, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	waitUntil(t, 20*time.Second, "RH_A applied", func() bool { return centralPositions(t, c)["RH_A"].LSN == 1 })
	// Five records at stream sequences 1-5 of RH_B: the old stream's
	// consumer would go on at sequence 6 of the new one.
	pre := &publishedDepot{t: t, name: "preRH_B", js: js, state: map[string]map[string]string{}}
	for range 5 {
		pre.publish("notes", "p", "put", `{}`)
	}
	waitUntil(t, 20*time.Second, "preRH_B applied", func() bool { return centralPositions(t, c)["preRH_B"].LSN == 5 })
	if err := js.DeleteStream(ctx, "RH_B"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RH_B", Subjects: []string{"routehound.RH_B.>"}}); err != nil {
		t.Fatal(err)
	}
	b := &publishedDepot{t: t, name: "RH_B", js: js, state: map[string]map[string]string{}}
	for i := range 8 {
		b.publish("notes", "k"+string(rune('a'+i)), "put", `{}`)
	}
	waitUntil(t, 30*time.Second, "RH_B's 8 records applied", func() bool { return centralPositions(t, c)["RH_B"].LSN == 8 })
	if p := centralPositions(t, c)["RH_B"]; p.Records != 8 || p.Missing != 0 || p.StreamSeq != 8 {
		t.Errorf("the recreated stream's depot: %+v, want 8 records, none missing, at stream seq 8", p)
	}
	rows := tablesOf(t, c)["notes"]
	for i := range 8 {
		if k := "RH_B/k" + string(rune('a'+i)); rows[k].Version != 1 {
			t.Errorf("central %s has version %d, want 1", k, rows[k].Version)
		}
	}
	if p := centralPositions(t, c)["preRH_B"]; p.Records != 5 || rows["preRH_B/p"].Version != 5 {
		t.Errorf("preRH_B: %+v, notes row version %d; want 5 records applied once", p, rows["preRH_B/p"].Version)
	}

	// Deleted for good: no reader left failing on it.
	if err := js.DeleteStream(ctx, "RH_A"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "RH_A gone from the status", func() bool { return !slices.Contains(centralStreams(t, c), "RH_A") })
	if s := centralStreams(t, c); !slices.Contains(s, "RH_B") {
		t.Errorf("the status lost RH_B: %q", s)
	}
}

// TestCentralWidenedToEveryDepot: a view that followed depots = ["north"]
// of a stream shared with south, restarted following every depot, reads
// south's records before north's cursor too (the stream's mark, written
// only while every depot is followed, is absent: the stream is read from
// its start, north's LSNs skip what is applied).
func TestCentralWidenedToEveryDepot(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROUTEHOUND", Subjects: []string{"routehound.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	north := &publishedDepot{t: t, name: "north", js: js, state: map[string]map[string]string{}}
	south := &publishedDepot{t: t, name: "south", js: js, state: map[string]map[string]string{}}
	for i := range 5 {
		north.publish("notes", "n", "put", `{"i":1}`)
		south.publish("notes", "s"+string(rune('a'+i)), "put", `{"i":2}`)
	}
	cfg := loopbackConfig(t)
	cfg.Central.NATSURL = ns.URL()
	cfg.Central.Depots = []string{"north"}
	c, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "north applied", func() bool { return centralPositions(t, c)["north"].LSN == north.lsn })
	c.Shutdown(context.Background())

	cfg.Central.Depots = []string{}
	c, err = Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	south.publish("notes", "late", "put", `{"i":3}`)
	north.publish("notes", "n", "put", `{"i":4}`)
	waitUntil(t, 20*time.Second, "south's last record applied", func() bool { return centralPositions(t, c)["south"].LSN == south.lsn })
	waitUntil(t, 20*time.Second, "north's last record applied", func() bool { return centralPositions(t, c)["north"].LSN == north.lsn })
	pos := centralPositions(t, c)
	rows := tablesOf(t, c)["notes"]
	for _, k := range []string{"south/sa", "south/sb", "south/sc", "south/sd", "south/se", "south/late"} {
		if rows[k].Version != 1 {
			t.Errorf("central %s has version %d, want 1 (south: %+v)", k, rows[k].Version, pos["south"])
		}
	}
	if p := pos["south"]; p.Records != 6 || p.Missing != 0 {
		t.Errorf("south: %+v, want 6 records, none missing", p)
	}
	if p := pos["north"]; p.Records != 6 || p.Missing != 0 || rows["north/n"].Version != 6 {
		t.Errorf("north: %+v, notes row version %d; want 6 records applied once", p, rows["north/n"].Version)
	}

	// Restarted again, still every depot: read on from the stream's mark,
	// nothing applied twice.
	c.Shutdown(context.Background())
	c, err = Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	south.publish("notes", "later", "put", `{"i":5}`)
	waitUntil(t, 20*time.Second, "south's later record applied", func() bool { return centralPositions(t, c)["south"].LSN == south.lsn })
	if p := centralPositions(t, c)["south"]; p.Records != 7 || p.Missing != 0 {
		t.Errorf("south after a second restart: %+v, want 7 records", p)
	}
	if v := tablesOf(t, c)["notes"]["north/n"].Version; v != 6 {
		t.Errorf("north/n has version %d after the restart, want 6", v)
	}
}
