package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// The example documents every setting with its default: decoding it gives
// Default(), and every setting Default() has appears in it.
func TestExampleMatchesDefaults(t *testing.T) {
	ex, err := Load("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ex, Default()) {
		t.Fatalf("config.example.toml differs from Default():\n%+v\n%+v", ex, Default())
	}
	raw, _ := os.ReadFile("../config.example.toml")
	var m map[string]any
	md, err := toml.Decode(string(raw), &m)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range md.Keys() {
		have[k.String()] = true
	}
	var want strings.Builder
	if err := toml.NewEncoder(&want).Encode(Default()); err != nil {
		t.Fatal(err)
	}
	var dm map[string]any
	dmd, _ := toml.Decode(want.String(), &dm)
	documented := func(k string) bool {
		for h := range have {
			if h == k || strings.HasPrefix(h, k+".") {
				return true
			}
		}
		return false
	}
	for _, k := range dmd.Keys() {
		if !documented(k.String()) {
			t.Errorf("config.example.toml does not document %s", k)
		}
	}
}

func TestLoadOverlaysAndRefusesUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte("[lanes.driver]\nqueue_bound = 2000\n[hub]\nheartbeat = \"3s\"\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Lanes.Driver.QueueBound != 2000 || c.Lanes.Driver.Contract != "async" || c.Hub.Heartbeat != 3*time.Second {
		t.Fatalf("overlay: %+v %+v", c.Lanes.Driver, c.Hub)
	}
	os.WriteFile(p, []byte("[lanes.driver]\nqueue_bund = 2000\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "queue_bund") {
		t.Fatalf("misspelt key: %v", err)
	}
	os.WriteFile(p, []byte("[[tokens]]\nrole = \"king\"\ntoken = \"0123456789abcdef\"\n"), 0o600)
	if _, err := Load(p); err == nil {
		t.Fatal("unknown role accepted")
	}
}

func TestTokensGeneratedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	toks, gen, err := EnsureTokens(Default(), dir)
	if err != nil || !gen || len(toks) != len(Roles) {
		t.Fatalf("first start: %v %v %v", toks, gen, err)
	}
	st, err := os.Stat(filepath.Join(dir, TokensFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tokens.toml: %v %v", st, err)
	}
	again, gen, err := EnsureTokens(Default(), dir)
	if err != nil || gen || !reflect.DeepEqual(again, toks) {
		t.Fatalf("second start: %v %v %v", again, gen, err)
	}
	seen := map[string]bool{}
	for _, tk := range toks {
		if seen[tk.Token] || len(tk.Token) < 16 {
			t.Fatalf("weak or reused token %q", tk.Token)
		}
		seen[tk.Token] = true
	}
	// Tokens in the config win and nothing is written.
	c := Default()
	c.Tokens = []Token{{Role: "admin", Token: "admin-0123456789abcdef"}}
	got, gen, _ := EnsureTokens(c, t.TempDir())
	if gen || len(got) != 1 {
		t.Fatalf("configured tokens: %v %v", got, gen)
	}
}

// The same token under two roles is refused at load, naming the entries
// and not the token (issue 18); before, the last role silently won.
func TestTokenWithTwoRolesRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	const tok = "shared-0123456789abcdef"
	os.WriteFile(p, []byte("[[tokens]]\nrole = \"dashboard\"\ntoken = \""+tok+"\"\n[[tokens]]\nrole = \"admin\"\ntoken = \""+tok+"\"\n"), 0o600)
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "tokens[1] (admin) has the same token as tokens[0] (dashboard)") || strings.Contains(err.Error(), tok) {
		t.Fatalf("a token with two roles: %v", err)
	}
	// The same in tokens.toml.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TokensFile), []byte("[[tokens]]\nrole = \"driver\"\ntoken = \""+tok+"\"\n[[tokens]]\nrole = \"admin\"\ntoken = \""+tok+"\"\n"), 0o600)
	if _, _, err := EnsureTokens(Default(), dir); err == nil || !strings.Contains(err.Error(), "same token") {
		t.Fatalf("tokens.toml with a token of two roles: %v", err)
	}
	// Listed twice for one role is harmless.
	c := Default()
	c.Tokens = []Token{{Role: "admin", Token: tok}, {Role: "admin", Token: tok}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A tokens.toml that group or others may read is reported, with the fix
// (issue 18); a private one, an absent one and tokens from the config are
// not.
func TestTokensFileAccess(t *testing.T) {
	dir := t.TempDir()
	if err := TokensFileAccess(Default(), dir); err != nil {
		t.Fatalf("absent: %v", err)
	}
	if _, _, err := EnsureTokens(Default(), dir); err != nil {
		t.Fatal(err)
	}
	if err := TokensFileAccess(Default(), dir); err != nil {
		t.Fatalf("generated (0600): %v", err)
	}
	path := filepath.Join(dir, TokensFile)
	for _, m := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(path, m)
		err := TokensFileAccess(Default(), dir)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %o: %v", m, err)
		}
	}
	c := Default()
	c.Tokens = []Token{{Role: "admin", Token: "admin-0123456789abcdef"}}
	if err := TokensFileAccess(c, dir); err != nil {
		t.Fatalf("tokens from the config: %v", err)
	}
}

func TestOsmandSettings(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte("[osmand]\nenabled = true\nspeed_unit = \"kmh\"\ntime_zone = \"Europe/Berlin\"\npath_secret = \"s3cret-path\"\n[[osmand.devices]]\nid = \"phone-0001-abcd\"\ndriver = \"anna\"\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Osmand.Enabled || c.Osmand.Listen != ":5055" || c.Osmand.SpeedUnit != "kmh" || len(c.Osmand.Devices) != 1 || c.Osmand.Devices[0].Driver != "anna" {
		t.Fatalf("osmand: %+v", c.Osmand)
	}
	if Default().Osmand.Enabled {
		t.Fatal("the phone listener must be off by default")
	}
	for _, bad := range []string{
		"[osmand]\nspeed_unit = \"furlongs\"\n",
		"[osmand]\ntime_zone = \"Mars/Olympus\"\n",
		"[osmand]\ntls_cert = \"a.pem\"\n",
		"[osmand]\npath_secret = \"short\"\n",
		"[osmand]\npath_secret = \"has/slash/inside\"\n",
		"[[osmand.devices]]\nid = \"123456\"\ndriver = \"anna\"\n",
		"[[osmand.devices]]\nid = \"phone-0001-abcd\"\ndriver = \"bad name\"\n",
		"[[osmand.devices]]\nid = \"phone-0001-abcd\"\ndriver = \"a\"\n[[osmand.devices]]\nid = \"phone-0001-abcd\"\ndriver = \"b\"\n",
	} {
		os.WriteFile(p, []byte(bad), 0o600)
		if _, err := Load(p); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// An older file's scheduling settings still load, do nothing, and are
// named in Ignored for the start-up warning.
func TestDeprecatedSchedulingSettingsLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.toml")
	old := "[committer]\nbatch_records = 100\nmax_drivers = 7\n[lanes.driver]\nweight = 2\nbatch_bound = 10\nqueue_bound = 99\n"
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"committer.batch_records", "lanes.driver.weight", "lanes.driver.batch_bound"}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(c.Ignored))
	if !slices.Equal(got, want) {
		t.Fatalf("ignored %v, want %v", got, want)
	}
	if c.Committer.MaxDrivers != 7 || c.Lanes.Driver.QueueBound != 99 {
		t.Fatalf("the settings that stay were not read: %+v %+v", c.Committer, c.Lanes.Driver)
	}
	if d, err := Load(""); err != nil || len(d.Ignored) != 0 {
		t.Fatalf("defaults: ignored %v %v", d.Ignored, err)
	}
}

// TestUplinkValidate: the uplink is off without nats_url; on, it needs a
// depot that is one subject token and a budget of at least retention_mb.
func TestUplinkValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("default (uplink off): %v", err)
	}
	c.Uplink.NATSURL = "nats://127.0.0.1:4222"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "uplink.depot") {
		t.Fatalf("no depot: %v", err)
	}
	c.Uplink.Depot = "berlin-1"
	if err := c.Validate(); err != nil {
		t.Fatalf("a valid uplink: %v", err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.Uplink.Depot = "berlin.1" },
		func(c *Config) { c.Uplink.Stream = "" },
		func(c *Config) { c.Uplink.Stream = "a.b" },
		func(c *Config) { c.Uplink.MaxInFlight = 0 },
		func(c *Config) { c.Uplink.BudgetMB = c.Storage.RetentionMB - 1 },
	} {
		d := c
		bad(&d)
		if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "uplink.") {
			t.Errorf("%+v accepted (%v)", d.Uplink, err)
		}
	}
}

// [replica] sets the trail's depth; a depth of zero is refused.
func TestReplicaSettings(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("[replica]\ntrail_window = \"2h\"\ntrail_max_points = 3600\n"), 0o600)
	c, err := Load(p)
	if err != nil || c.Replica.TrailWindow != 2*time.Hour || c.Replica.TrailMaxPoints != 3600 {
		t.Fatalf("replica: %+v %v", c.Replica, err)
	}
	for _, bad := range []string{"trail_window = \"0s\"", "trail_max_points = 0", "trail_max_points = -5"} {
		os.WriteFile(p, []byte("[replica]\n"+bad+"\n"), 0o600)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "replica.trail") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

// With the fleet-events consumer on, [lanes.events] queue_bound is at
// least MinEventsQueueBound (smaller, its writes would be refused for
// ever); with it off any bound loads.
func TestEventsLaneBoundWithTheConsumer(t *testing.T) {
	c := Default()
	c.Lanes.Events.QueueBound = MinEventsQueueBound
	if err := c.Validate(); err != nil {
		t.Fatalf("queue_bound %d: %v", MinEventsQueueBound, err)
	}
	c.Lanes.Events.QueueBound = MinEventsQueueBound - 1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "lanes.events.queue_bound") {
		t.Fatalf("queue_bound %d accepted (%v)", MinEventsQueueBound-1, err)
	}
	c.Fleet.Events = false
	if err := c.Validate(); err != nil {
		t.Fatalf("queue_bound %d without the consumer: %v", MinEventsQueueBound-1, err)
	}
}
