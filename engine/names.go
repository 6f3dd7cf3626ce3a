package engine

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"routehound/wal"
)

// Record and State are the wal's types, re-exported for readers above the
// engine (hub, api, ui), which do not import the wal.
type (
	Record = wal.Record
	State  = wal.State
	Op     = wal.Op
	// TableInfo and Retention are named here so that readers above the
	// engine (ui) need not import wal (DESIGN.md: ui imports engine and hub).
	TableInfo = wal.TableInfo
	Retention = wal.Retention
)

// Op values of a Record.
const (
	OpPut    = wal.OpPut
	OpDelete = wal.OpDelete
)

// AnyVersion makes a Write unconditional.
const AnyVersion = wal.AnyVersion

// ErrBadName wraps every refusal of a table name or key.
var ErrBadName = errors.New("bad name")

// IsBuiltin reports whether table is written only by its actor's endpoint
// (positions, assignments, loading; devices, device_status and quarantine
// of the phone apps).
func IsBuiltin(table string) bool {
	switch table {
	case TablePositions, TableAssignments, TableLoading, TableDevices, TableDeviceStatus, TableQuarantine:
		return true
	}
	return false
}

// CheckName validates an identifier (driver, route, table name): 1..128
// bytes of letters, digits and . _ - : @ ~. The wal relies on names holding
// no 0x00 (it separates table and key with one).
func CheckName(what, v string) error {
	if v == "" || len(v) > 128 {
		return fmt.Errorf("%w: %s must be 1 to 128 characters", ErrBadName, what)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@~", c) >= 0) {
			return fmt.Errorf("%w: %s %q: only letters, digits and . _ - : @ ~ are allowed", ErrBadName, what, v)
		}
	}
	return nil
}

// CheckKey validates a table key: 1..512 bytes of UTF-8 without control
// characters.
func CheckKey(key string) error {
	if key == "" || len(key) > 512 || !utf8.ValidString(key) {
		return fmt.Errorf("%w: a key is 1 to 512 bytes of UTF-8", ErrBadName)
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: a key may not hold control characters", ErrBadName)
		}
	}
	return nil
}
