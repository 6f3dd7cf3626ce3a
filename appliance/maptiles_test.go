package appliance

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"routehound/internal/testkit"
)

// [ui] map_tiles: a file that cannot be read fails the start in words that
// name the setting; a good one is served at /ui/tiles/ behind the login and
// the Fleet page draws a map.
func TestMapTilesConfig(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.UI.MapTiles = filepath.Join(t.TempDir(), "missing.mbtiles")
	if a, err := Start(cfg, nil); err == nil {
		a.Shutdown(context.Background())
		t.Fatal("started with a missing map_tiles file")
	} else if !strings.Contains(err.Error(), "map_tiles") {
		t.Fatalf("error %q does not name map_tiles", err)
	}
	if _, err := os.Stat(cfg.UI.MapTiles); err == nil {
		t.Fatal("the failed start created the map_tiles file")
	}

	cfg = loopbackConfig(t)
	cfg.UI.MapTiles = testkit.MBTiles(t, t.TempDir(), "png", 1)
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	base := "http://" + a.Addr.String()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	noRedirect := *c
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, err := noRedirect.Get(base + "/ui/tiles/0/0/0"); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a tile without a session: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	_, body, _ := get("/ui/login")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if csrf == nil {
		t.Fatal("no csrf on the login page")
	}
	var dash string
	for _, tk := range a.Tokens {
		if tk.Role == "dashboard" {
			dash = tk.Token
		}
	}
	resp, err := c.PostForm(base+"/ui/login", url.Values{"csrf": {csrf[1]}, "token": {dash}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st, b, h := get("/ui/tiles/1/1/0"); st != 200 || h.Get("Content-Type") != "image/png" || !strings.HasPrefix(b, "\x89PNG") {
		t.Fatalf("tile: %d %s", st, h.Get("Content-Type"))
	}
	if _, b, _ := get("/ui/fleet"); !strings.Contains(b, `id="map"`) {
		t.Fatal("the Fleet page draws no map with map_tiles")
	}
}
