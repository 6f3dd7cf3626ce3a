package ui

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit"
)

// Tables is live like every other page: the key counts follow (issue 23).
func TestTablesPageIsLive(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client()
	f.login(c, dashToken)
	f.put("t1", "a", `1`)
	_, body, _ := f.get(c, "/ui/tables")
	if !strings.Contains(body, `data-live="/ui/live/tables"`) || strings.Contains(body, ">static<") {
		t.Fatalf("tables page is not live:\n%.1500s", body)
	}
	ls := f.live(c, liveOf(t, body))
	f.put("t1", "b", `2`)
	keysRe := regexp.MustCompile(`data-table="t1"><td><a[^>]*>t1</a></td><td class="num" data-field="keys">(\d+)<`)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("the tables list never showed t1's second key")
		}
		fr, _ := ls.next(t, 5*time.Second)
		var got string
		for _, s := range fr.Set {
			if m := keysRe.FindStringSubmatch(s.HTML); s.ID == "table-list" && m != nil {
				got = m[1]
			}
		}
		if got == "2" {
			break
		}
	}
}

// System shows what the store holds on disk at once: Badger's own sizes
// are refreshed once a minute and leave out the memtable logs, so a fresh
// store with data read 0 B. The card headings are not capitalised word by
// word (that is for the lane names).
func TestSystemShowsStoreOnDisk(t *testing.T) {
	dir := t.TempDir()
	e, _ := testkit.EngineIn(t, testkit.Store{Dir: dir}, nil)
	for i := range 20 {
		if _, err := e.PutKey(context.Background(), engine.Write{Table: "t1", Key: fmt.Sprint("k", i), Value: []byte(`{"v":1}`), IfVersion: engine.AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	d := storeUsage(dir)
	if d.Err != "" || d.Total <= 0 || d.Mem <= 0 || d.Total != d.SST+d.Mem+d.Vlog+d.Other {
		t.Fatalf("store usage %+v", d)
	}
	if bad := storeUsage(filepath.Join(dir, "absent")); bad.Err == "" {
		t.Error("a missing store dir gave no error")
	}
	css, err := os.ReadFile("assets/app.css")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`\.card h2 \{[^}]*capitalize`).Match(css) {
		t.Error(".card h2 capitalises every card heading (Storage And Memory)")
	}
}
