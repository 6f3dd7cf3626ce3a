package appliance

import (
	"reflect"
	"strings"
	"testing"

	"routehound/config"
	"routehound/engine"
	"routehound/replica"
)

// TestDefaultsAreTheEngines: the file's defaults for the lanes, the
// committer and the storage are the engine's own.
func TestDefaultsAreTheEngines(t *testing.T) {
	got := EngineConfig(config.Default(), "")
	want := engine.DefaultConfig()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config.Default() gives the engine\n%+v\nits own defaults are\n%+v", got, want)
	}
}

// TestReplicaDefaultsAreTheReplicas: the file's trail depth is the
// replica's own default.
func TestReplicaDefaultsAreTheReplicas(t *testing.T) {
	got := ReplicaConfig(config.Default())
	want := replica.Options{TrailWindow: replica.DefaultTrailWindow, TrailMaxPoints: replica.DefaultTrailMaxPoints}
	if got != want {
		t.Fatalf("config.Default() gives the replica %+v, its own defaults are %+v", got, want)
	}
}

// TestPhoneConfigTLS: without a certificate of its own the phone listener
// takes the server's, so "HTTPS when TLS is configured" holds with one
// setting; its own pair wins when set.
func TestPhoneConfigTLS(t *testing.T) {
	c := config.Default()
	c.HTTP.TLSCert, c.HTTP.TLSKey = "/etc/rh/http.pem", "/etc/rh/http.key"
	got, err := PhoneConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if got.TLSCert != "/etc/rh/http.pem" || got.TLSKey != "/etc/rh/http.key" {
		t.Fatalf("server TLS not used: %q %q", got.TLSCert, got.TLSKey)
	}
	c.Osmand.TLSCert, c.Osmand.TLSKey = "/etc/rh/phone.pem", "/etc/rh/phone.key"
	if got, _ = PhoneConfig(c); got.TLSCert != "/etc/rh/phone.pem" || got.TLSKey != "/etc/rh/phone.key" {
		t.Fatalf("the listener's own pair did not win: %q %q", got.TLSCert, got.TLSKey)
	}
	if got, _ = PhoneConfig(config.Default()); got.TLSCert != "" || got.TLSKey != "" {
		t.Fatalf("TLS without any configured: %q %q", got.TLSCert, got.TLSKey)
	}
}

// TestValidateChecksTheLanes: a lane setting the engine cannot run with is
// refused before anything starts, naming the lane.
func TestValidateChecksTheLanes(t *testing.T) {
	c := config.Default()
	c.Lanes.Warehouse.Contract = "eventually"
	if err := Validate(c); err == nil || !strings.Contains(err.Error(), "warehouse") {
		t.Fatalf("bad contract: %v", err)
	}
	c = config.Default()
	c.Lanes.Driver.MaxWait = 1
	if err := Validate(c); err == nil || !strings.Contains(err.Error(), "driver") {
		t.Fatalf("max_wait on an async lane: %v", err)
	}
	if err := Validate(config.Default()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// An older file's "sla = 0s" still starts: the lane gets its default SLA,
// and ZeroSLAs names it for the warning.
func TestZeroSLAStandsInForTheDefault(t *testing.T) {
	c := config.Default()
	c.Lanes.Tables.SLA = 0
	if err := Validate(c); err != nil {
		t.Fatalf("a zero sla refused: %v", err)
	}
	if got := EngineConfig(c, "").Lanes[engine.LaneTables].SLA; got != engine.DefaultConfig().Lanes[engine.LaneTables].SLA {
		t.Fatalf("tables SLA %v, want the default", got)
	}
	if z := ZeroSLAs(c); len(z) != 1 || z[0] != "lanes.tables.sla" {
		t.Fatalf("ZeroSLAs %v", z)
	}
}
