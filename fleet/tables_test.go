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
