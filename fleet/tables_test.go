package fleet

import (
	"errors"
	"testing"
)

// The write authority: each built-in table has exactly one writing actor,
// and no client writes it through the tables' front doors.
func TestWriteAuthority(t *testing.T) {
	want := map[string]Actor{
		"positions":     ActorDriver,
		"assignments":   ActorDispatch,
		"loading":       ActorWarehouse,
		"devices":       ActorAdmin,
		"device_status": ActorDriver,
		"quarantine":    ActorDriver,
		"fences":        ActorDispatch,
		// Derived from the log by the fleet-events consumer (issue 21).
		"fleet_events":   ActorFleetEvents,
		"route_progress": ActorFleetEvents,
		"fleet_consumer": ActorFleetEvents,
	}
	if got := BuiltinTables(); len(got) != len(want) {
		t.Fatalf("built-in tables %v, want the %d of %v", got, len(want), want)
	}
	for _, table := range BuiltinTables() {
		actor, ok := Writer(table)
		if !ok || actor != want[table] || !IsBuiltin(table) {
			t.Errorf("%s: writer %q %v, want %q", table, actor, ok, want[table])
		}
		err := CheckUserTable(table)
		var ro *ReadOnlyError
		if !errors.As(err, &ro) || !errors.Is(err, ErrReadOnly) || ro.Table != table || ro.Writer != want[table] {
			t.Errorf("%s: a client may write it (%v)", table, err)
		}
		if errors.Is(err, ErrBadName) {
			t.Errorf("%s: refused as a bad name", table)
		}
	}
	for _, user := range []string{"u", "Positions", "positions2", "my.table", "device-status"} {
		if _, ok := Writer(user); ok || IsBuiltin(user) {
			t.Errorf("%s: a user table is taken for a built-in one", user)
		}
		if err := CheckUserTable(user); err != nil {
			t.Errorf("%s: %v", user, err)
		}
	}
}

// CheckUserTable checks the name first: a bad name is a NameError, not a
// read-only refusal.
func TestCheckUserTableName(t *testing.T) {
	for _, bad := range []string{"", "a b", "a/b"} {
		err := CheckUserTable(bad)
		if !errors.Is(err, ErrBadName) || errors.Is(err, ErrReadOnly) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// Positions stored before issue 18 carry the device id: non-admin reads
// strip it, keep the member order, and leave every other value untouched
// (the same slice: no copy on the hot path).
func TestStripLegacyDevice(t *testing.T) {
	for in, want := range map[string]string{
		`{"seq":5,"lat":1.5,"lng":2,"device":"phone-7q2x","attrs":{"device":"x"}}`: `{"seq":5,"lat":1.5,"lng":2,"attrs":{"device":"x"}}`,
		`{"device":"phone-7q2x","seq":5}`:                                          `{"seq":5}`,
		`{"seq":5,"device":"phone-7q2x"}`:                                          `{"seq":5}`,
		`{"device":"phone-7q2x"}`:                                                  `{}`,
		`{"seq":5,"device":"phone-7q2x"`:                                           `{}`,
		`["device"]`:                                                               `{}`,
	} {
		if got := string(StripLegacyDevice([]byte(in))); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	v := []byte(`{"seq":5,"lat":1.5,"lng":2,"ts":"2026-11-23T12:00:00.000Z"}`)
	if got := StripLegacyDevice(v); &got[0] != &v[0] {
		t.Error("a value without a device was copied")
	}
	if got := RedactForNonAdmin("notes", []byte(`{"device":"x"}`)); string(got) != `{"device":"x"}` {
		t.Errorf("a user table's value changed: %s", got)
	}
	if n := testing.AllocsPerRun(100, func() { RedactForNonAdmin(TablePositions, v) }); n != 0 {
		t.Errorf("%v allocations for a point without a device", n)
	}
}
