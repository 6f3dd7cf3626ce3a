package ui

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"routehound/hub"
)

var liveRe = regexp.MustCompile(`data-live="([^"]+)"`)

func liveOf(t *testing.T, body string) string {
	t.Helper()
	m := liveRe.FindStringSubmatch(body)
	if m == nil || m[1] == "" {
		t.Fatal("page has no live URL")
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

// A change made between the render and the connect is not missed: the live
// connection resumes from the page's LSN.
func TestLiveTableResumesFromThePageLSN(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.put("t1", "a", `1`)
	_, body, _ := f.get(c, "/ui/tables/t1")
	f.put("t1", "b", `"between"`) // after the render, before the connect
	ls := f.live(c, liveOf(t, body))
	fr, m := ls.next(t, 5*time.Second)
	if len(fr.Upsert) != 1 || fr.Upsert[0].ID != rowID("key", "b") || !strings.Contains(fr.Upsert[0].HTML, `data-key="b"`) ||
		!strings.Contains(fr.Upsert[0].HTML, "&#34;between&#34;") || fr.Upsert[0].Parent != "key-rows" {
		t.Fatalf("first frame %+v, want the upsert of b", fr)
	}
	if !strings.Contains(fr.Upsert[0].HTML, `data-action="delete"`) || !strings.Contains(fr.Upsert[0].HTML, `name="csrf"`) {
		t.Error("a live row of a user table lacks its delete control")
	}
	if m.id == "" || m.id != strconv.FormatUint(fr.LSN, 10) {
		t.Errorf("frame id %q, lsn %d: the id must be the LSN (resume point)", m.id, fr.LSN)
	}
	f.put("t1", "a", `2`)
	fr, _ = ls.next(t, 5*time.Second)
	if len(fr.Upsert) != 1 || !strings.Contains(fr.Upsert[0].HTML, `data-field="version">2<`) {
		t.Fatalf("update frame %+v", fr)
	}
	if _, err := f.e.PutKey(t.Context(), writeDelete("t1", "a")); err != nil {
		t.Fatal(err)
	}
	fr, _ = ls.next(t, 5*time.Second)
	if len(fr.Remove) != 1 || fr.Remove[0] != rowID("key", "a") {
		t.Fatalf("delete frame %+v", fr)
	}
}

// 2,000 updates of 10 drivers in a burst reach a browser as a few frames
// of at most one row per driver, each with the latest value.
func TestLiveFleetCoalesces(t *testing.T) {
	f := newFixture(t, Options{FrameInterval: 50 * time.Millisecond})
	c := f.client()
	f.login(c, dashToken)
	drivers := make([]string, 10)
	for i := range drivers {
		drivers[i] = fmt.Sprintf("d%d", i)
	}
	f.points(1, drivers...)
	_, body, _ := f.get(c, "/ui/fleet")
	ls := f.live(c, liveOf(t, body))
	const rounds = 200
	for s := uint64(2); s <= rounds+1; s++ {
		f.pointsAsync(s, drivers...)
	}
	f.points(rounds+2, drivers...)
	frames := 0
	latest := map[string]string{}
	seqRe := regexp.MustCompile(`data-field="seq">(\d+)<`)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("drivers not at seq %d after %d frames: %v", rounds+2, frames, latest)
		}
		fr, _ := ls.next(t, 5*time.Second)
		frames++
		for _, r := range fr.Replace { // a resync: the whole fleet, latest values
			for _, tr := range strings.Split(r.HTML, "<tr ")[1:] {
				id := regexp.MustCompile(`id="(drv-[0-9a-f]+)"`).FindStringSubmatch(tr)[1]
				latest[id] = seqRe.FindStringSubmatch(tr)[1]
			}
		}
		seen := map[string]bool{}
		for _, u := range fr.Upsert {
			if seen[u.ID] {
				t.Fatalf("frame holds %s twice: not coalesced", u.ID)
			}
			seen[u.ID] = true
			latest[u.ID] = seqRe.FindStringSubmatch(u.HTML)[1]
		}
		done := len(latest) == len(drivers)
		for _, v := range latest {
			done = done && v == strconv.Itoa(rounds+2)
		}
		if done {
			break
		}
	}
	// 2,010 changes; at 1 frame/s for the fleet view the burst fits in a
	// handful of frames.
	if frames > 10 {
		t.Errorf("%d frames for one burst: not coalesced", frames)
	}
}

func TestLiveChannelsMoves(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	ls := f.live(c, "/ui/live/channels")
	fr, _ := ls.next(t, 5*time.Second)
	acc := func(fr frame) string {
		for _, u := range fr.Upsert { // the whole card, so that its colour follows its grade
			if u.ID == "lane-tables" {
				return fieldIn(t, u.HTML, "<h2>", "accepted")
			}
		}
		t.Fatalf("frame %+v has no tables card", fr)
		return ""
	}
	if got := acc(fr); got != "0" {
		t.Fatalf("tables accepted %s before any write", got)
	}
	f.put("t1", "a", `1`)
	for deadline := time.Now().Add(5 * time.Second); acc(fr) != "1"; fr, _ = ls.next(t, 5*time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the channels frame never showed the write")
		}
	}
}

// A connection whose hub buffer overflows gets the hub's resync snapshot as
// a replacement of the page's rows, not a reload, and ends with every key.
func TestLiveResyncReplacesRows(t *testing.T) {
	f := newFixtureHub(t, Options{FrameInterval: 20 * time.Millisecond}, hub.Config{Buffer: 2, MaxResyncs: 1000})
	c := f.client()
	f.login(c, dashToken)
	_, body, _ := f.get(c, "/ui/tables/burst")
	ls := f.live(c, liveOf(t, body))
	const n = 300
	var wg sync.WaitGroup
	for w := 0; w < 30; w++ {
		wg.Go(func() {
			for i := w; i < n; i += 30 {
				f.put("burst", fmt.Sprintf("k%03d", i), strconv.Itoa(i))
			}
		})
	}
	wg.Wait()
	rows := map[string]bool{}
	replaced := false
	idRe := regexp.MustCompile(`id="(key-[0-9a-f]+)"`)
	for deadline := time.Now().Add(10 * time.Second); len(rows) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows after 10 s (replaced: %v)", len(rows), n, replaced)
		}
		fr, m := ls.next(t, 5*time.Second)
		if m.event != "" {
			t.Fatalf("got event %q: a resync must not reload the page", m.event)
		}
		for _, r := range fr.Replace {
			replaced = true
			clear(rows)
			for _, id := range idRe.FindAllStringSubmatch(r.HTML, -1) {
				rows[id[1]] = true
			}
		}
		for _, u := range fr.Upsert {
			rows[u.ID] = true
		}
	}
	if !replaced {
		t.Error("the buffer of 2 never overflowed: no resync was exercised")
	}
	if f.h.Stats().Resyncs.Load() == 0 {
		t.Error("hub counted no resync")
	}
}

// All Fleet pages share one positions subscriber; a page rendered before
// the feed started gets the gap from the log.
func TestFleetPagesShareOneSubscriber(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.points(1, "old")
	_, old, _ := f.get(c, "/ui/fleet") // rendered now, connected later
	f.points(1, "gap")                 // between the old page's LSN and the feed's start
	_, body, _ := f.get(c, "/ui/fleet")
	a := f.live(c, liveOf(t, body))
	b := f.live(c, liveOf(t, body))
	f.waitFor(func() bool { return f.u.LiveConnections() == 2 }, "two live fleet pages")
	f.points(2, "old")
	for _, ls := range []*liveStream{a, b} {
		fr, _ := ls.next(t, 5*time.Second)
		if len(fr.Upsert) == 0 || fr.Upsert[0].ID != rowID("drv", "old") {
			t.Fatalf("fleet frame %+v, want old's update", fr)
		}
	}
	if top := f.h.TopTables(5); len(top) != 1 || top[0].Table != "positions" || top[0].Subscribers != 1 {
		t.Errorf("hub subscribers %+v, want one on positions for two Fleet pages", top)
	}
	ls := f.live(c, liveOf(t, old))
	fr, _ := ls.next(t, 5*time.Second)
	got := map[string]bool{}
	for _, u := range fr.Upsert {
		got[u.ID] = true
	}
	if !got[rowID("drv", "gap")] || !got[rowID("drv", "old")] {
		t.Errorf("the older page's first frame %v lacks the gap (gap) or the feed's change (old)", got)
	}
}

// The first Fleet page's from is clamped to the durable LSN (issue 18): a
// forged from far ahead, arriving first, does not start the shared feed in
// the future, so the pages after it still get their frames.
func TestFleetFeedClampsFrom(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.points(1, "anna")
	f.live(c, "/ui/live/fleet?from=1000000000000")
	f.waitFor(func() bool { return f.u.LiveConnections() == 1 }, "the forged fleet page")
	f.u.fleetFeed.mu.Lock()
	start := f.u.fleetFeed.start
	f.u.fleetFeed.mu.Unlock()
	if start > f.e.DurableLSN() {
		t.Fatalf("the feed started at %d, past the durable LSN %d", start, f.e.DurableLSN())
	}
	_, body, _ := f.get(c, "/ui/fleet")
	ls := f.live(c, liveOf(t, body))
	f.points(2, "anna")
	fr, m := ls.next(t, 5*time.Second)
	if m.event == "reload" || len(fr.Upsert) == 0 || fr.Upsert[0].ID != rowID("drv", "anna") {
		t.Fatalf("a real page after the forged one: %+v %+v", fr, m)
	}
}
